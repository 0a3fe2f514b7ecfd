"""Sidecar descriptions of first-level models: what the design holds and how it was fitted.

:func:`design_description` describes an activation GLM (:mod:`ketflow.signal.design`,
:mod:`ketflow.signal.glm`), :func:`gppi_description` a generalized PPI model
(:mod:`ketflow.signal.gppi`; McLaren et al. 2012, NeuroImage 61:1277).  The dictionaries become
the JSON sidecars of the maps and tables, so that each output states its columns, confounds,
HRF, filter, noise model, units and contrasts.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .design import DRIFT_PREFIX, SPIKE_PREFIX, TaskDesign
from .glm import AUTOCORRELATION_FWHM_MM, noise_model_description
from .gppi import gppi_contrasts

#: Units of percent-scaled data (nilearn's ``mean_scaling``).
PERCENT_UNITS = "percent signal change (100 * (y / temporal mean of the voxel - 1))"

#: How each ROI signal of the gPPI is formed (``circuit.signal``).
SIGNAL_DESCRIPTION = {
    "mean": "mean over the ROI's voxels of the voxels' percent signal change",
    "eigenvariate": "first eigenvariate (SPM convention: u1 s1 / sqrt(n_voxels), sign of the summed voxel "
                    "weights) of the ROI's voxels in percent signal change after projecting out the design's "
                    "confounds, drifts and constant",
}

def design_description(design: TaskDesign, *, high_pass_s: float | None, noise_model: str, dof: float,
                        vectors: Mapping[str, np.ndarray], signal_scaling: bool = True,
                        autocorrelation_fwhm_mm: float = AUTOCORRELATION_FWHM_MM) -> dict:
    """Sidecar fields of a first-level model: columns, confounds, HRF, filter, noise model.

    ``vectors`` maps contrast names to weight vectors over ``design.matrix.columns``;
    ``signal_scaling``: the data were in percent signal change (:data:`PERCENT_UNITS`);
    ``autocorrelation_fwhm_mm``: smoothing of the corrected AR models' autocorrelations in
    voxelwise fits (:func:`ketflow.signal.glm.noise_model_description`).
    """
    columns = list(design.matrix.columns)
    task = set(design.columns) | {f"{c}_derivative" for c in design.columns}
    nuisance = [c for c in columns if c not in task]
    drifts = [c for c in nuisance if c.startswith(DRIFT_PREFIX)]
    confounds = [c for c in nuisance if c not in drifts and c != "constant"]
    spikes = [c for c in confounds if c.startswith(SPIKE_PREFIX)]
    scaling = PERCENT_UNITS if signal_scaling else "none (units of the preprocessed BOLD)"
    return {
        "DesignColumns": columns,
        "ConditionColumns": list(design.columns),
        "ConditionMembers": design.members,
        "UnestimableConditions": design.unestimable,
        "NumberOfEvents": design.n_events,
        "ConfoundColumns": [c for c in confounds if c not in spikes],
        "SpikeRegressors": {"Count": len(spikes),
                            "Description": "one indicator column per censored volume (dummy scans and "
                                           "framewise-displacement censoring), named censored_<volume index>"},
        "HRF": {"Model": "SPM canonical HRF (double gamma: peak 6 s, undershoot 16 s, ratio 1/6, 32 s)"
                + (" and its temporal derivative" if design.derivative else ""),
                "MicrotimeResolution": design.microtime_resolution,
                "MicrotimeOnset": design.microtime_onset,
                "StartTime": design.start_time},
        "HighPass": {"CutoffSeconds": high_pass_s, "Model": "discrete cosine set", "Columns": drifts},
        "NoiseModel": noise_model_description(noise_model, autocorrelation_fwhm_mm),
        "SignalScaling": scaling,
        "EffectUnits": "percent signal change per unit regressor (condition regressors: HRF-convolved "
                       "unit-height boxcars, unit-sum HRF)" if signal_scaling else "data units",
        "Contrasts": {name: {c: float(w) for c, w in zip(columns, vec) if w != 0} for name, vec in vectors.items()},
        "DegreesOfFreedom": int(dof),
    }


def gppi_description(design: TaskDesign, gppi: pd.DataFrame, contrasts: Mapping, *, seeds: Sequence[str] | None,
                     voxel_seeds: Sequence[str], deconvolve: bool, symmetrize: bool, signal: str,
                     high_pass_s: float | None, noise_model: str, dof: float, signal_scaling: bool = True,
                     autocorrelation_fwhm_mm: float = AUTOCORRELATION_FWHM_MM) -> dict:
    """Sidecar fields of a gPPI model: the task model's (:func:`design_description`) with the
    gPPI design's columns, its contrasts over the interaction terms and the PPI method.

    ``gppi`` is one seed's gPPI design (:func:`ketflow.signal.gppi.gppi_design`); ``seeds`` None
    means every ROI was a seed.
    """
    meta = design_description(design, high_pass_s=high_pass_s, noise_model=noise_model, dof=dof, vectors={},
                              signal_scaling=signal_scaling, autocorrelation_fwhm_mm=autocorrelation_fwhm_mm)
    del meta["Contrasts"]
    vectors = gppi_contrasts(design, gppi.columns, contrasts)
    meta["DesignColumns"] = [c if c != "seed" else "seed (the seed ROI's signal)" for c in gppi.columns]
    meta["PPI"] = {
        "Method": "generalized PPI (McLaren et al. 2012): all task regressors, the seed, one interaction "
                  "term per condition column and the nuisance regressors in one model",
        "Seeds": list(seeds) if seeds else "every ROI",
        "VoxelSeeds": list(voxel_seeds),
        "Deconvolution": ("parametric empirical Bayes deconvolution of the (not prewhitened) seed on the "
                          "micro-time grid (Gitelman et al. 2003; ketflow.ppi.peb_deconvolve), nuisance "
                          "regressors as confounds" if deconvolve else
                          "none: interaction = confound-cleaned, centred seed BOLD x centred convolved "
                          "condition regressor"),
        "PsychologicalVariables": "micro-time stimulus function of each condition column, mean-centred",
        "ROISignal": SIGNAL_DESCRIPTION[signal],
        "Symmetrized": bool(symmetrize),
        "Contrasts": {name: {c: float(w) for c, w in zip(gppi.columns, vec) if w != 0}
                      for name, vec in vectors.items()},
    }
    unit = "percent signal change" if signal_scaling else "data unit"
    meta["EffectUnits"] = (f"target {unit} per unit of (seed {unit}, deconvolved to the neuronal level) x "
                           "psychological variable" if deconvolve else
                           f"target {unit} per unit of seed {unit} x convolved psychological regressor")
    return meta
