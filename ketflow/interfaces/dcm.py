"""Nipype interface: fit a deterministic DCM for fMRI to ROI time series.

:class:`FitDCM` reads the regions' time series (TSV, one column per region,
one row per scan, e.g. first eigenvariates), the run's BIDS events, builds the
inputs on the TR/16 micro-time grid (:func:`ketflow.dcm.inputs.inputs_from_events`),
fits the model (:func:`ketflow.dcm.fit_dcm`) and writes into the working
directory:

* ``dcm.json``: posterior means, SDs, posterior probabilities, F, iterations,
  noise variances and the parameter table;
* ``dcm_params.tsv``: the parameter table;
* ``dcm.svg``: connectivity diagram and parameter bars;
* ``dcm_model_space.tsv`` when the model lists nested models under
  ``model_space``: each scored by Bayesian model reduction of the fitted model
  (F, dF vs the full model, posterior probability).

The model is a JSON object::

    {"regions": ["vmPFC", "amygdala"],
     "inputs": {"faces": ["fear", "neutral"], "fear": ["fear"]},
     "a": [[1, 1], [1, 1]],                 # [to][from]
     "b": [[[0, 0], [0, 0]], [[0, 1], [0, 0]]],   # [input][to][from]
     "c": [[0, 0], [1, 0]],                 # [to][input]
     "delays": [0, 0],                      # optional, s after the reference
     "options": {"centre": false, "hE": 6, "hC": 0.0078125, "maxit": 128},
     "model_space": {"no_modulation": {"b": [[[0, 0], [0, 0]], [[0, 0], [0, 0]]]}}}

``inputs`` may also be a list of trial types (one input each). Because event
onsets are shifted by ``start_time`` (time 0 = the first scan's acquisition
reference), each region's sampling delay defaults to 0 s.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    Str,
    TraitedSpec,
    traits,
)

from ..dcm import DCMSpec, fit_dcm
from ..dcm.compare import score_model_space
from ..dcm.inputs import inputs_from_events
from ..dcm.plot import plot_dcm
from ..io.write import write_json, write_tsv


class _FitDCMInputSpec(BaseInterfaceInputSpec):
    timeseries = File(exists=True, mandatory=True, desc="ROI time series TSV (columns = regions, rows = scans)")
    events = File(exists=True, mandatory=True, desc="BIDS events TSV (onset, duration, trial_type)")
    repetition_time = traits.Float(mandatory=True, desc="TR (s)")
    start_time = traits.Float(0.0, usedefault=True, desc="acquisition reference time of the first scan (s)")
    model = Str(mandatory=True, desc="JSON model: regions, inputs, a, b, c (see module docstring)")
    confounds = File(exists=True, desc="optional confounds TSV (rows = scans); a constant is added")


class _FitDCMOutputSpec(TraitedSpec):
    out_json = File(desc="dcm.json")
    out_params = File(desc="dcm_params.tsv")
    out_figure = File(desc="dcm.svg")
    out_model_space = File(desc="dcm_model_space.tsv (only when the model has a model_space)")
    free_energy = traits.Float(desc="free energy F (nats)")


def build_spec(timeseries: pd.DataFrame, events: pd.DataFrame, TR: float, start_time: float, model: dict,
               confounds: pd.DataFrame | None = None) -> DCMSpec:
    """Assemble a :class:`DCMSpec` from loaded tables and a model dictionary."""
    regions = list(model["regions"])
    missing = sorted(set(regions) - set(timeseries.columns))
    if missing:
        raise ValueError(f"regions {missing} are not columns of the time-series table")
    inputs = model["inputs"]
    if not isinstance(inputs, dict):
        inputs = {name: [name] for name in inputs}
    Y = timeseries[regions].to_numpy(dtype=float)
    if not np.all(np.isfinite(Y)):
        raise ValueError("ROI time series contain missing values; DCM needs every scan")
    n_scans = Y.shape[0]
    U, dt = inputs_from_events(events, inputs, TR, n_scans, start_time=start_time)
    X0 = np.ones((n_scans, 1))
    if confounds is not None:
        if len(confounds) != n_scans:
            raise ValueError(f"confounds have {len(confounds)} rows, time series {n_scans}")
        C = confounds.to_numpy(dtype=float)
        C = np.where(np.isfinite(C), C, 0.0)  # fMRIPrep derivatives start with n/a
        C = C[:, C.std(axis=0) > 0]
        X0 = np.column_stack([X0, C])
    n = len(regions)
    return DCMSpec(
        Y=Y,
        U=U,
        U_dt=dt,
        TR=TR,
        a=np.asarray(model["a"], dtype=float),
        b=np.asarray(model.get("b", np.zeros((len(inputs), n, n))), dtype=float),
        c=np.asarray(model["c"], dtype=float),
        d=np.asarray(model["d"], dtype=float) if model.get("d") else None,
        delays=np.asarray(model.get("delays", np.zeros(n)), dtype=float),
        X0=X0,
        region_names=regions,
        input_names=list(inputs),
        options=model.get("options", {}),
    )


class FitDCM(SimpleInterface):
    """Fit a deterministic one-state DCM (SPM12 conventions) to ROI time series."""

    input_spec = _FitDCMInputSpec
    output_spec = _FitDCMOutputSpec

    def _run_interface(self, runtime):
        inputs = self.inputs
        timeseries = pd.read_csv(inputs.timeseries, sep="\t", na_values="n/a")
        events = pd.read_csv(inputs.events, sep="\t", na_values="n/a")
        confounds = pd.read_csv(inputs.confounds, sep="\t", na_values="n/a") if inputs.confounds else None
        model = json.loads(inputs.model)
        spec = build_spec(timeseries, events, inputs.repetition_time, inputs.start_time, model, confounds)
        result = fit_dcm(spec)

        cwd = os.getcwd()
        out_json = os.path.join(cwd, "dcm.json")
        out_params = os.path.join(cwd, "dcm_params.tsv")
        out_figure = os.path.join(cwd, "dcm.svg")
        write_json(out_json, result.to_dict())
        write_tsv(out_params, result.parameter_table())
        plot_dcm(result).savefig(out_figure, format="svg", metadata={"Date": None})
        self._results.update(out_json=out_json, out_params=out_params, out_figure=out_figure,
                             free_energy=float(result.F))
        if model.get("model_space"):
            masks = {name: {k: np.asarray(v, dtype=float) for k, v in m.items()}
                     for name, m in model["model_space"].items()}
            out_space = os.path.join(cwd, "dcm_model_space.tsv")
            write_tsv(out_space, score_model_space(result, masks))
            self._results["out_model_space"] = out_space
        return runtime
