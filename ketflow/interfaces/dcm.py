"""Nipype interfaces of the DCM path: VOI time series, then the DCM fit.

:class:`ExtractVOI` prepares the regional series as SPM users prepare them
(:mod:`ketflow.dcm.voi`): it reads the run's in-mask BOLD cache (:mod:`ketflow.io.boldcache`;
made from a 4-D NIfTI ``bold_file`` when no ``bold_cache`` is given), scales the run to a
grand mean of 100, adjusts every voxel of each DCM region for the confounds X0 (constant,
cosine high-pass, the nuisance regressors and one indicator per censored volume, as SPM's
adjustment for an effects-of-interest F-contrast does) and takes the first eigenvariate. It
writes

* ``desc-voi_timeseries.tsv``: one column per region, one row per acquired volume
  (per cent of the grand mean);
* ``desc-X0_regressors.tsv``: the confound matrix X0 without its constant, for the DCM's
  observation model;
* ``desc-voi_qc.json``: grand mean, scaling, censored volumes, voxels and variance
  explained per region.

:class:`FitDCM` reads the regions' time series (TSV, one column per region,
one row per scan), the run's BIDS events, builds the
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
     "d": [],                               # optional [modulating region][to][from]
     "delays": [0, 0],                      # optional, s after the reference
     "options": {"centre": false, "hE": 6, "hC": 0.0078125, "maxit": 128},
     "model_space": {"no_modulation": {"b": [[[0, 0], [0, 0]], [[0, 0], [0, 0]]]}}}

``inputs`` may also be a list of trial types (one input each). Because event
onsets are shifted by ``start_time`` (time 0 = the first scan's acquisition
reference), each region's sampling delay defaults to 0 s. Masks missing from a
``model_space`` entry are the full model's.
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
from ..dcm.voi import grand_mean_scale, spike_volumes, voi_eigenvariates
from ..io.boldcache import read_mask, volume_means, voxel_columns
from ..io.write import write_json, write_text, write_tsv
from ..reports.svg import figure_to_svg
from ..signal.denoise import cosine_regressors, design_basis
from .bold import cache_of, source_name


def confound_matrix(confounds: pd.DataFrame, n_scans: int, source: str = "confounds") -> pd.DataFrame:
    """Confound columns usable in a regression: n/a -> 0, constant columns dropped.

    fMRIPrep's derivative columns start with n/a; a constant column duplicates the
    intercept the models add themselves.
    """
    if len(confounds) != n_scans:
        raise ValueError(f"{source}: {len(confounds)} rows, but the run has {n_scans} volumes")
    table = confounds.apply(pd.to_numeric, errors="coerce").astype(float)
    table = table.where(np.isfinite(table), 0.0)
    return table.loc[:, table.std(axis=0) > 0]


def read_voi_voxels(cache: str, brain_mask: np.ndarray, labels: np.ndarray, indices: list[int]):
    """Per-volume in-mask mean intensity (T,) and each label's voxels [(T, n_voxels)], float64,
    from a BOLD cache; ``labels`` is the label image (3-D), whose ROIs lie in ``brain_mask``."""
    if labels.shape != brain_mask.shape:
        raise ValueError(f"label image {labels.shape} and brain mask {brain_mask.shape} differ in shape")
    outside = sorted({int(i) for i in indices if np.any((labels == i) & ~brain_mask)})
    if outside:
        raise ValueError(f"labels {outside} have voxels outside the brain mask")
    in_mask = labels[brain_mask]
    regions = [voxel_columns(cache, np.flatnonzero(in_mask == i)).astype(np.float64) for i in indices]
    return volume_means(cache), regions


class _ExtractVOIInputSpec(BaseInterfaceInputSpec):
    bold_cache = File(exists=True, mandatory=True, xor=["bold_file"],
                      desc="in-mask BOLD cache from CacheBOLD (every acquired volume)")
    bold_file = File(exists=True, mandatory=True, xor=["bold_cache"], desc="or the preprocessed 4-D BOLD")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the BOLD grid")
    labels_file = File(exists=True, mandatory=True, desc="label image from BuildROIs")
    labels_tsv = File(exists=True, mandatory=True, desc="labels TSV from BuildROIs (index, name)")
    regions = traits.List(Str, minlen=1, mandatory=True, desc="DCM regions (label names), in model order")
    repetition_time = traits.Float(mandatory=True, desc="TR (s)")
    high_pass_s = traits.Either(None, traits.Float, default=128.0, usedefault=True,
                                desc="cosine high-pass cut-off period (s) in X0; None: none")
    confounds = File(exists=True, desc="nuisance regressors TSV with one indicator column per censored volume")


class _ExtractVOIOutputSpec(TraitedSpec):
    timeseries = File(exists=True, desc="desc-voi_timeseries.tsv (columns = regions)")
    confounds_out = File(exists=True, desc="desc-X0_regressors.tsv (X0 without the constant)")
    qc_json = File(exists=True, desc="desc-voi_qc.json")


class ExtractVOI(SimpleInterface):
    """SPM-style VOI series (grand-mean scaled, confound-adjusted first eigenvariates) for DCM."""

    input_spec = _ExtractVOIInputSpec
    output_spec = _ExtractVOIOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nib

        inputs = self.inputs
        mask = read_mask(inputs.brain_mask)
        labels = np.asanyarray(nib.load(inputs.labels_file).dataobj).astype(np.int64)
        table = pd.read_csv(inputs.labels_tsv, sep="\t")
        index = dict(zip(table["name"].astype(str), table["index"].astype(int)))
        missing = [r for r in inputs.regions if r not in index]
        if missing:
            raise ValueError(f"{os.path.basename(inputs.labels_tsv)}: DCM regions {missing} are not among the "
                             f"ROIs {sorted(index)}")
        with cache_of(inputs, mask) as cache:
            means, voxels = read_voi_voxels(cache, mask, labels, [index[r] for r in inputs.regions])
        n_scans = means.size
        TR = inputs.repetition_time
        columns = {}
        if inputs.high_pass_s is not None:
            cosines = cosine_regressors(n_scans, TR, inputs.high_pass_s)
            columns.update({f"cosine{j + 1:02d}": cosines[:, j] for j in range(cosines.shape[1])})
        X0 = pd.DataFrame(columns)
        if inputs.confounds:
            nuisance = confound_matrix(pd.read_csv(inputs.confounds, sep="\t", na_values="n/a"), n_scans,
                                       os.path.basename(inputs.confounds))
            X0 = pd.concat([X0, nuisance.reset_index(drop=True)], axis=1)
        X0 = X0.reindex(range(n_scans)) if X0.empty else X0
        censored = spike_volumes(X0.to_numpy()) if X0.shape[1] else np.zeros(n_scans, bool)
        try:
            scale = grand_mean_scale(means, ~censored)
            voi = voi_eigenvariates(voxels, X0.to_numpy(dtype=float).reshape(n_scans, -1), scale)
        except ValueError as err:
            raise ValueError(f"{source_name(inputs)} with {os.path.basename(inputs.confounds or '')}: "
                             f"{err}") from err

        cwd = os.getcwd()
        out_ts = write_tsv(os.path.join(cwd, "desc-voi_timeseries.tsv"),
                           pd.DataFrame(voi.Y, columns=list(inputs.regions)))
        out_x0 = write_tsv(os.path.join(cwd, "desc-X0_regressors.tsv"), X0)
        qc = {
            "GrandMean": 100.0 / scale,
            "GrandMeanScaling": scale,
            "CensoredVolumes": np.flatnonzero(censored).tolist(),
            "ConfoundColumns": int(X0.shape[1]) + 1,
            "Regions": {r: {"n_voxels": int(nv), "variance_explained": float(ve)}
                        for r, nv, ve in zip(inputs.regions, voi.n_voxels, voi.variance_explained)},
        }
        out_qc = write_json(os.path.join(cwd, "desc-voi_qc.json"), qc)
        self._results.update(timeseries=str(out_ts), confounds_out=str(out_x0), qc_json=str(out_qc))
        return runtime


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
        # An orthonormal basis of [constant, confounds]: the same observation model (the confound
        # coefficients have flat priors), but badly scaled columns (raw tissue means ~1000, squared
        # motion ~1e-6) no longer distort the Gauss-Newton step sizes of the inversion.
        X0 = design_basis(np.column_stack([X0, confound_matrix(confounds, n_scans).to_numpy()]))
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
        write_text(out_figure, figure_to_svg(plot_dcm(result)))
        self._results.update(out_json=out_json, out_params=out_params, out_figure=out_figure,
                             free_energy=float(result.F))
        if model.get("model_space"):
            masks = {name: {k: np.asarray(v, dtype=float) for k, v in m.items()}
                     for name, m in model["model_space"].items()}
            out_space = os.path.join(cwd, "dcm_model_space.tsv")
            write_tsv(out_space, score_model_space(result, masks))
            self._results["out_model_space"] = out_space
        return runtime
