"""Volume-of-interest (VOI) time series for DCM, prepared as SPM users prepare them.

A DCM for fMRI models BOLD in per cent signal change (its observation equation,
Stephan et al. 2007, NeuroImage 38:387, has V0 = 4 %), with drifts and other
confounds in X0. The regional series given to it are therefore, following the
documented SPM practice (SPM12 manual, "Volume of interest" and "DCM for fMRI";
Friston et al. 2003, NeuroImage 19:1273, section 3):

1. **Grand-mean scaling** of the run: every voxel is multiplied by
   ``100 / g``, with ``g`` the mean over the retained volumes of the in-mask mean
   intensity (SPM's session-specific grand mean scaling, Friston et al. 1995, Human
   Brain Mapping 2:189). A response of 1 % of a voxel whose baseline is near the
   grand mean becomes ~1 unit. Censored and non-steady-state volumes do not enter g.
2. **Adjustment for confounds**: each voxel of the region is residualised on X0, a
   constant, the discrete cosine high-pass set, the nuisance regressors and one
   indicator column per censored volume (non-steady-state "dummy" scans and
   high-motion volumes; Lemieux et al. 2007, Magn Reson Imaging 25:894). This is what
   SPM's "adjust data for" an F-contrast of the effects of interest amounts to: SPM
   takes the contrast's design space orthogonal to X0, so the fitted null-space part
   it subtracts is the projection of the data onto X0, whatever the task regressors.
   The adjusted data are mean-centred, and orthogonal to X0.
3. **First eigenvariate** of the region's adjusted (time, voxels) data, scaled as
   SPM's VOI (``u1 s1 / sqrt(n_voxels)``, sign so that the voxel weights sum to a
   positive number; :func:`ketflow.signal.extract.first_eigenvariate`), so a region
   whose voxels share one signal returns that signal in its own units.

Differences from SPM, on purpose: the data are not pre-whitened (DCM's observation
model assumes i.i.d. noise around an unwhitened prediction, and whitening the data but
not the prediction would distort the modelled dynamics), and the grand mean is taken
within the brain mask rather than above an intensity threshold.

The same X0 (plus the constant) is the confound matrix of the DCM's observation model
(SPM's ``DCM.Y.X0``), so a censored volume is modelled by its own indicator column and
does not inform the DCM parameters, while the hidden states are still integrated from
the start of the acquisition (time 0), keeping the event timing intact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ketflow.signal.denoise import cosine_regressors, design_basis
from ketflow.signal.extract import first_eigenvariate

__all__ = ["VOIResult", "VOIs", "confound_matrix", "grand_mean_scale", "spike_volumes", "voi_confounds",
           "voi_eigenvariates", "volumes_of_interest"]


@dataclass
class VOIResult:
    """Regional series for a DCM.

    Y : (n_scans, n_regions) first eigenvariates of the adjusted, grand-mean scaled
        data (per cent of the grand mean).
    variance_explained : (n_regions,) fraction of the adjusted data's variance in the
        first eigenvariate.
    n_voxels : (n_regions,) voxels per region.
    """

    Y: np.ndarray
    variance_explained: np.ndarray
    n_voxels: np.ndarray


def spike_volumes(confounds: np.ndarray) -> np.ndarray:
    """Volumes (bool, (T,)) flagged by indicator columns of a confound matrix (T, k).

    An indicator column is non-zero at exactly one volume (a censoring "spike"
    regressor); such volumes are censored.
    """
    confounds = np.asarray(confounds, dtype=float).reshape(len(confounds), -1)
    nonzero = confounds != 0
    spikes = nonzero[:, nonzero.sum(axis=0) == 1]
    return spikes.any(axis=1)


def grand_mean_scale(volume_means: np.ndarray, keep: np.ndarray | None = None) -> float:
    """Factor ``100 / g`` that scales a run's grand mean to 100.

    volume_means : (T,) mean in-mask intensity of each volume; keep : bool (T,) volumes
    entering the grand mean (default all).
    """
    volume_means = np.asarray(volume_means, dtype=float)
    keep = np.ones(volume_means.shape, bool) if keep is None else np.asarray(keep, bool)
    if not keep.any():
        raise ValueError("no retained volume to compute the grand mean from")
    g = float(volume_means[keep].mean())
    if not np.isfinite(g) or g <= 0:
        raise ValueError(f"the grand mean intensity is {g}; grand-mean scaling needs positive image intensities")
    return 100.0 / g


def voi_eigenvariates(regions, confounds, scale: float = 1.0) -> VOIResult:
    """Confound-adjusted first eigenvariates of several regions (see module docstring).

    Parameters
    ----------
    regions : sequence of arrays (T, n_voxels_r)
        Each region's voxel time series (raw intensities).
    confounds : array (T, k)
        X0 without its constant (which is added here): cosines, nuisance regressors,
        censoring indicators.
    scale : float
        Grand-mean scaling factor (:func:`grand_mean_scale`).

    Returns
    -------
    VOIResult
    """
    confounds = np.asarray(confounds, dtype=float)
    n_scans = confounds.shape[0]
    basis = design_basis(np.column_stack([np.ones(n_scans), confounds.reshape(n_scans, -1)]))
    if basis.shape[1] >= n_scans - 1:
        raise ValueError(f"the confounds have rank {basis.shape[1]} for {n_scans} scans: no degrees of freedom "
                         "are left for the regional signals")
    series, explained, counts = [], [], []
    for data in regions:
        data = np.asarray(data, dtype=float).reshape(n_scans, -1) * scale
        if data.shape[1] == 0:
            raise ValueError("a region has no voxels")
        adjusted = data - basis @ (basis.T @ data)
        series.append(first_eigenvariate(adjusted))
        s = np.linalg.svd(adjusted, compute_uv=False)
        total = float((s**2).sum())
        explained.append(float(s[0] ** 2 / total) if total > 0 else np.nan)
        counts.append(data.shape[1])
    return VOIResult(Y=np.column_stack(series), variance_explained=np.array(explained),
                     n_voxels=np.array(counts))


def confound_matrix(confounds: pd.DataFrame, n_scans: int, source: str = "confounds") -> pd.DataFrame:
    """Confound columns usable in a regression: n/a -> 0, constant columns dropped.

    fMRIPrep's derivative columns start with n/a; a constant column duplicates the
    intercept the models add themselves.  ``source`` names the table in errors.
    """
    if len(confounds) != n_scans:
        raise ValueError(f"{source}: {len(confounds)} rows, but the run has {n_scans} volumes")
    table = confounds.apply(pd.to_numeric, errors="coerce").astype(float)
    table = table.where(np.isfinite(table), 0.0)
    return table.loc[:, table.std(axis=0) > 0]


def voi_confounds(n_scans: int, tr: float, high_pass_s: float | None, nuisance: pd.DataFrame | None = None,
                  source: str = "confounds") -> pd.DataFrame:
    """X0 without its constant (n_scans, k): the discrete cosine high-pass set (``cosineNN``;
    none when ``high_pass_s`` is None) and the nuisance regressors (:func:`confound_matrix`,
    censoring indicators included)."""
    columns = {}
    if high_pass_s is not None:
        cosines = cosine_regressors(n_scans, tr, high_pass_s)
        columns.update({f"cosine{j + 1:02d}": cosines[:, j] for j in range(cosines.shape[1])})
    x0 = pd.DataFrame(columns)
    if nuisance is not None:
        x0 = pd.concat([x0, confound_matrix(nuisance, n_scans, source).reset_index(drop=True)], axis=1)
    return x0.reindex(range(n_scans)) if x0.empty else x0


@dataclass
class VOIs:
    """The DCM regions' series of one run and how they were made.

    voi : the :class:`VOIResult`.
    scale : grand-mean scaling factor (100 / grand mean).
    censored : bool (T,), volumes flagged by indicator columns of X0.
    """

    voi: VOIResult
    scale: float
    censored: np.ndarray


def volumes_of_interest(volume_means: np.ndarray, regions, x0: pd.DataFrame) -> VOIs:
    """SPM-style VOIs (module docstring): grand-mean scaling over the volumes not censored by
    X0's indicator columns, adjustment for X0 (:func:`voi_confounds`) and first eigenvariates.

    volume_means : (T,) in-mask mean intensity per volume; regions : each region's (T, n_voxels)
    raw intensities.
    """
    n_scans = len(volume_means)
    censored = spike_volumes(x0.to_numpy()) if x0.shape[1] else np.zeros(n_scans, bool)
    scale = grand_mean_scale(volume_means, ~censored)
    voi = voi_eigenvariates(regions, x0.to_numpy(dtype=float).reshape(n_scans, -1), scale)
    return VOIs(voi=voi, scale=scale, censored=censored)
