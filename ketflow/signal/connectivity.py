"""Resting-state (and task-residual) connectivity and its quality control.

ROI-to-ROI measures on (time, n_rois) series:

* Pearson correlation and its Fisher z = artanh(r) (Fisher 1915, Biometrika 10:507-521);
  the z diagonal (artanh 1 = inf) is set to NaN;
* partial correlation from the precision matrix P: -P_ij / sqrt(P_ii P_jj)
  (Marrelec et al. 2006 NeuroImage 32:228-237; Smith et al. 2011 NeuroImage 54:875-891);
* Ledoit-Wolf shrinkage covariance (Ledoit & Wolf 2004, J Multivar Anal 88:365-411) of
  the z-scored series via :class:`sklearn.covariance.LedoitWolf`, and the correlation and
  partial correlation derived from it (better conditioned when volumes are few).

Seed-to-voxel maps are Fisher z of the seed's correlation with every voxel.

QC follows the metrics XCP-D reports (Mehta et al. 2024 Imaging Neurosci 2:1-26;
Ciric et al. 2017 NeuroImage 154:174-187): mean/max framewise displacement, DVARS (root
mean square over voxels of the volume-to-volume difference; Power et al. 2012 NeuroImage
59:2142-2154) before and after denoising, FD-DVARS correlation before and after, censored
and retained volume counts. After censoring, "after" values use consecutive retained
volumes, paired with the FD of the later volume of each pair.

Task-residual connectivity (Cole et al. 2019 NeuroImage 189:1-18): task-evoked
activity inflates task-state connectivity, so condition-wise finite impulse response
(FIR) regressors are regressed out of the ROI series first; FIR makes no assumption
about the response shape.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.covariance import LedoitWolf

from ketflow.signal.denoise import residualise


def _zscore(ts: np.ndarray) -> np.ndarray:
    ts = np.asarray(ts, dtype=np.float64)
    sd = ts.std(axis=0, ddof=1)
    if np.any(sd == 0):
        raise ValueError(f"time series {np.flatnonzero(sd == 0).tolist()} are constant; correlation undefined")
    return (ts - ts.mean(axis=0)) / sd


def cov_to_corr(cov: np.ndarray) -> np.ndarray:
    """Correlation matrix of a covariance matrix, exact unit diagonal."""
    d = np.sqrt(np.diag(cov))
    corr = cov / np.outer(d, d)
    np.fill_diagonal(corr, 1.0)
    return corr


def prec_to_partial(precision: np.ndarray) -> np.ndarray:
    """Partial correlation matrix of a precision matrix, unit diagonal."""
    partial = -cov_to_corr(precision)
    np.fill_diagonal(partial, 1.0)
    return partial


def pearson(ts: np.ndarray) -> np.ndarray:
    """Pearson correlation between the columns of ``ts`` (T, R); (R, R) symmetric, unit diagonal."""
    z = _zscore(ts)
    corr = z.T @ z / (z.shape[0] - 1)
    corr = (corr + corr.T) / 2
    np.fill_diagonal(corr, 1.0)
    return corr


def fisher_z(r: np.ndarray) -> np.ndarray:
    """artanh(r); entries with |r| = 1 (the diagonal) become NaN."""
    r = np.asarray(r, dtype=np.float64)
    with np.errstate(divide="ignore"):
        z = np.arctanh(r)
    z[~np.isfinite(z)] = np.nan
    return z


def partial_correlation(ts: np.ndarray) -> np.ndarray:
    """Partial correlation from the inverse of the sample covariance, (R, R)."""
    return prec_to_partial(np.linalg.inv(np.cov(_zscore(ts), rowvar=False)))


def ledoit_wolf_covariance(ts: np.ndarray) -> np.ndarray:
    """Ledoit-Wolf shrinkage covariance of the z-scored series, (R, R)."""
    return LedoitWolf(store_precision=False).fit(_zscore(ts)).covariance_


#: XCP-D-style ``stat-`` names written for each measure name of the configuration.
MEASURE_STATS = {
    "pearson": ("pearsoncorrelation",),
    "fisher_z": ("fisherz",),
    "partial": ("partialcorrelation",),
    "ledoit_wolf": ("ledoitwolfcovariance", "ledoitwolfcorrelation", "ledoitwolfpartialcorrelation"),
}


def connectivity_matrices(ts: np.ndarray, measures=tuple(MEASURE_STATS)) -> dict[str, np.ndarray]:
    """ROI-to-ROI matrices (R, R) of ``measures`` (keys of :data:`MEASURE_STATS`) of ``ts`` (T, R),
    keyed by XCP-D-style ``stat-`` names."""
    unknown = sorted(set(measures) - set(MEASURE_STATS))
    if unknown:
        raise ValueError(f"unknown connectivity measure(s) {unknown}; known: {sorted(MEASURE_STATS)}")
    out = {}
    if {"pearson", "fisher_z"} & set(measures):
        r = pearson(ts)
        if "pearson" in measures:
            out["pearsoncorrelation"] = r
        if "fisher_z" in measures:
            out["fisherz"] = fisher_z(r)
    if "partial" in measures:
        out["partialcorrelation"] = partial_correlation(ts)
    if "ledoit_wolf" in measures:
        lw = ledoit_wolf_covariance(ts)
        out.update(ledoitwolfcovariance=lw, ledoitwolfcorrelation=cov_to_corr(lw),
                   ledoitwolfpartialcorrelation=prec_to_partial(np.linalg.inv(lw)))
    return out


def seed_to_voxel_z(seed: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Fisher z of corr(seed (T,), each voxel of ``data`` (T, V)); (V,), NaN for constant voxels.

    Works in ``data``'s precision without a centred copy (the z-scored seed sums to 0,
    so seed @ data equals seed @ (data - mean)).
    """
    s = _zscore(np.asarray(seed, dtype=np.float64)[:, None])[:, 0]
    data = np.asarray(data)
    sd = data.std(axis=0, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (s.astype(data.dtype) @ data) / (data.shape[0] - 1) / sd
    return fisher_z(np.clip(r.astype(np.float64), -1.0, 1.0))


def dvars(data: np.ndarray) -> np.ndarray:
    """RMS over voxels of the volume-to-volume difference of (T, V) ``data``; shape (T-1,)."""
    data = np.asarray(data)
    out = np.empty(data.shape[0] - 1)
    for t in range(1, data.shape[0]):  # one volume at a time: no (T, V) temporary
        diff = data[t].astype(np.float64) - data[t - 1]
        out[t - 1] = np.sqrt(np.mean(diff * diff))
    return out


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def qc_metrics(
    framewise_displacement: np.ndarray,
    keep: np.ndarray,
    dvars_before: np.ndarray,
    dvars_after: np.ndarray,
) -> dict[str, float | int]:
    """XCP-D-style QC of one run.

    framewise_displacement : (T,) mm; keep : bool (T,);
    dvars_before : (T-1,) DVARS of the input data; dvars_after : (n_kept-1,) DVARS of the
    denoised, censored data (consecutive retained volumes).
    """
    fd = np.asarray(framewise_displacement, dtype=np.float64)
    keep = np.asarray(keep, bool)
    fd_kept = fd[keep]
    return {
        "mean_fd": float(fd.mean()),
        "max_fd": float(fd.max()),
        "mean_fd_retained": float(fd_kept.mean()),
        "mean_dvars_initial": float(np.mean(dvars_before)),
        "mean_dvars_final": float(np.mean(dvars_after)),
        "fd_dvars_correlation_initial": _corr(fd[1:], dvars_before),
        "fd_dvars_correlation_final": _corr(fd_kept[1:], dvars_after),
        "num_censored_volumes": int((~keep).sum()),
        "num_retained_volumes": int(keep.sum()),
    }


def fir_task_regressors(events: pd.DataFrame, n_volumes: int, tr: float, n_delays: int) -> np.ndarray:
    """FIR regressors (T, n_conditions * n_delays) for ``events`` (onset, duration, trial_type; s).

    Built with nilearn's first-level design matrix (``hrf_model="fir"``); delay d shifts
    each condition's boxcar by d volumes.
    """
    from nilearn.glm.first_level import make_first_level_design_matrix

    design = make_first_level_design_matrix(
        np.arange(n_volumes) * tr,
        events[["onset", "duration", "trial_type"]],
        hrf_model="fir",
        fir_delays=list(range(n_delays)),
        drift_model=None,
    )
    return design.drop(columns="constant").to_numpy()


#: FIR delays (volumes) per condition of task-residual connectivity.
N_FIR_DELAYS = 10


def task_residuals(data: np.ndarray, events: pd.DataFrame, tr: float, n_delays: int = N_FIR_DELAYS,
                   keep: np.ndarray | None = None) -> np.ndarray:
    """``data`` (n_kept, V) of the retained volumes with condition-wise FIR task responses (and
    the mean) regressed out, in ``data``'s precision (Cole et al. 2019, NeuroImage 189:1).

    keep : bool (T,) maps the rows to acquisition times (default: all T = n_kept retained).
    Returns (n_kept, V).
    """
    keep = np.ones(data.shape[0], bool) if keep is None else np.asarray(keep, bool)
    fir = fir_task_regressors(events, keep.size, tr, n_delays)[keep]
    residuals, _ = residualise(data, np.column_stack([np.ones(int(keep.sum())), fir]))
    return residuals


def task_residual_timeseries(
    ts: np.ndarray,
    events: pd.DataFrame,
    tr: float,
    n_delays: int = N_FIR_DELAYS,
    keep: np.ndarray | None = None,
) -> np.ndarray:
    """ROI series (n_kept, R) with condition-wise FIR task responses (and the mean) regressed
    out, in float64 (:func:`task_residuals`)."""
    return task_residuals(np.asarray(ts, dtype=np.float64), events, tr, n_delays, keep)
