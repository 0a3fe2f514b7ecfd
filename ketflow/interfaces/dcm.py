"""Nipype interfaces of the DCM path: VOI time series, then the DCM fit.

:class:`ExtractVOI` prepares the regional series as SPM users prepare them
(:func:`ketflow.dcm.voi.volumes_of_interest`): it reads the DCM regions' voxels and the
per-volume means from the run's in-mask BOLD cache (:func:`ketflow.io.rois.read_roi_voxels`;
made from a 4-D NIfTI ``bold_file`` when no ``bold_cache`` is given), builds the confounds X0
(:func:`ketflow.dcm.voi.voi_confounds`: cosine high-pass, nuisance regressors, one indicator
per censored volume), scales the run to a grand mean of 100, adjusts every voxel for X0 and
takes each region's first eigenvariate.  It writes

* ``desc-voi_timeseries.tsv``: one column per region, one row per acquired volume
  (per cent of the grand mean);
* ``desc-X0_regressors.tsv``: the confound matrix X0 without its constant, for the DCM's
  observation model;
* ``desc-voi_qc.json``: grand mean, scaling, censored volumes, voxels and variance
  explained per region.

:class:`FitDCM` reads the regions' time series, the run's BIDS events and X0, assembles the
model of the configuration's ``dcm`` section (:meth:`ketflow.config.DCM.model_layout`,
:func:`ketflow.dcm.spec.build_spec`: inputs on the TR/16 micro-time grid), fits it
(:func:`ketflow.dcm.fit_dcm`) and writes into the working directory:

* ``dcm.json``: posterior means, SDs, posterior probabilities, F, iterations,
  noise variances and the parameter table;
* ``dcm_params.tsv``: the parameter table;
* ``dcm.svg``: connectivity diagram and parameter bars;
* ``dcm_model_space.tsv`` when the configuration lists nested models (``dcm.model_space``):
  each scored by Bayesian model reduction of the fitted model (F, dF vs the full model,
  posterior probability).

Because event onsets are shifted by ``start_time`` (time 0 = the first scan's acquisition
reference), each region's sampling delay defaults to 0 s.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, Str, TraitedSpec, traits

from ..config import DCM
from ..dcm import fit_dcm
from ..dcm.compare import score_model_space
from ..dcm.plot import plot_dcm
from ..dcm.spec import build_spec
from ..dcm.voi import voi_confounds, volumes_of_interest
from ..io.boldcache import read_mask
from ..io.rois import read_roi_voxels
from ..io.svg import write_svg
from ..io.tables import read_events, read_numeric_tsv
from ..io.write import write_json, write_tsv
from .bold import cache_of, source_name


class _ExtractVOIInputSpec(BaseInterfaceInputSpec):
    bold_cache = File(exists=True, mandatory=True, xor=["bold_file"],
                      desc="in-mask BOLD cache from CacheBOLD (every acquired volume)")
    bold_file = File(exists=True, mandatory=True, xor=["bold_cache"], desc="or the preprocessed 4-D BOLD")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the BOLD grid")
    labels_file = File(exists=True, mandatory=True, desc="label image from BuildROIs")
    labels_tsv = File(exists=True, mandatory=True, desc="labels TSV from BuildROIs (index, name)")
    regions = traits.List(Str, minlen=1, mandatory=True, desc="DCM regions (label names), in model order")
    repetition_time = traits.Float(mandatory=True, desc="TR (s)")
    high_pass_s = traits.Either(None, traits.Float, mandatory=True,
                                desc="cosine high-pass cut-off period (s) in X0 (glm.high_pass_s); None: none")
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
        inputs = self.inputs
        mask = read_mask(inputs.brain_mask)
        with cache_of(inputs, mask) as cache:
            means, voxels = read_roi_voxels(cache, mask, inputs.labels_file, inputs.labels_tsv, list(inputs.regions))
        nuisance = read_numeric_tsv(inputs.confounds) if inputs.confounds else None
        x0 = voi_confounds(means.size, inputs.repetition_time, inputs.high_pass_s, nuisance,
                           os.path.basename(inputs.confounds or ""))
        try:
            vois = volumes_of_interest(means, voxels, x0)
        except ValueError as err:
            raise ValueError(f"{source_name(inputs)} with {os.path.basename(inputs.confounds or '')}: "
                             f"{err}") from err
        cwd = os.getcwd()
        out_ts = write_tsv(os.path.join(cwd, "desc-voi_timeseries.tsv"),
                           pd.DataFrame(vois.voi.Y, columns=list(inputs.regions)))
        out_x0 = write_tsv(os.path.join(cwd, "desc-X0_regressors.tsv"), x0)
        qc = {
            "GrandMean": 100.0 / vois.scale,
            "GrandMeanScaling": vois.scale,
            "CensoredVolumes": np.flatnonzero(vois.censored).tolist(),
            "ConfoundColumns": int(x0.shape[1]) + 1,
            "Regions": {r: {"n_voxels": int(nv), "variance_explained": float(ve)}
                        for r, nv, ve in zip(inputs.regions, vois.voi.n_voxels, vois.voi.variance_explained)},
        }
        out_qc = write_json(os.path.join(cwd, "desc-voi_qc.json"), qc)
        self._results.update(timeseries=str(out_ts), confounds_out=str(out_x0), qc_json=str(out_qc))
        return runtime


class _FitDCMInputSpec(BaseInterfaceInputSpec):
    timeseries = File(exists=True, mandatory=True, desc="ROI time series TSV (columns = regions, rows = scans)")
    events = File(exists=True, mandatory=True, desc="BIDS events TSV (onset, duration, trial_type)")
    repetition_time = traits.Float(mandatory=True, desc="TR (s)")
    start_time = traits.Float(mandatory=True, desc="acquisition reference time of the first scan (s)")
    dcm = traits.Instance(DCM, mandatory=True, desc="the configuration's dcm section (regions, inputs, masks)")
    confounds = File(exists=True, desc="optional confounds TSV (rows = scans); a constant is added")


class _FitDCMOutputSpec(TraitedSpec):
    out_json = File(desc="dcm.json")
    out_params = File(desc="dcm_params.tsv")
    out_figure = File(desc="dcm.svg")
    out_model_space = File(desc="dcm_model_space.tsv (only when the model has a model_space)")
    free_energy = traits.Float(desc="free energy F (nats)")


class FitDCM(SimpleInterface):
    """Fit a deterministic one-state DCM (SPM12 conventions) to ROI time series."""

    input_spec = _FitDCMInputSpec
    output_spec = _FitDCMOutputSpec

    def _run_interface(self, runtime):
        inputs = self.inputs
        model = inputs.dcm.model_layout()
        confounds = read_numeric_tsv(inputs.confounds) if inputs.confounds else None
        spec = build_spec(read_numeric_tsv(inputs.timeseries), read_events(inputs.events), inputs.repetition_time,
                          inputs.start_time, model, confounds)
        result = fit_dcm(spec)
        cwd = os.getcwd()
        out_json, out_params, out_figure = (os.path.join(cwd, name) for name in ("dcm.json", "dcm_params.tsv",
                                                                                   "dcm.svg"))
        write_json(out_json, result.to_dict())
        write_tsv(out_params, result.parameter_table())
        write_svg(out_figure, plot_dcm(result))
        self._results.update(out_json=out_json, out_params=out_params, out_figure=out_figure,
                             free_energy=float(result.F))
        if model.get("model_space"):
            masks = {name: {k: np.asarray(v, dtype=float) for k, v in m.items()}
                     for name, m in model["model_space"].items()}
            out_space = os.path.join(cwd, "dcm_model_space.tsv")
            write_tsv(out_space, score_model_space(result, masks))
            self._results["out_model_space"] = out_space
        return runtime
