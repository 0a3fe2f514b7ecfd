"""Batched voxelwise first-level GLM (OLS or AR(1) prewhitening), contrasts, fixed effects.

Reproduces nilearn's ``FirstLevelModel`` / ``run_glm`` estimator (Abraham et al. 2014,
Front Neuroinform 8:14, nilearn): OLS fit; per-voxel AR(1) coefficient from the OLS
residuals by Yule-Walker (residuals centred on their mean over all voxels and scans);
coefficient truncated to ``bins`` levels (``trunc(rho * bins) / bins``); one prewhitened
refit per level (Worsley et al. 2002, NeuroImage 15:1, "A general statistical analysis
for fMRI data"), with whitening ``w_0 = y_0, w_t = y_t - rho y_{t-1}``; residual variance
``RSS / (n - n_columns)``; t statistics on ``n - rank(X)`` degrees of freedom and z scores
from their p values.  Fixed effects across runs weight effects by inverse variance, as
nilearn's ``compute_fixed_effects(precision_weighted=True)``.

Why not call nilearn: ``run_glm`` keeps one RegressionResults object per AR level, labels
voxels with strings and refits each level by indexing the full data array, which makes a
whole-brain run slow and memory hungry.  Here the data are reduced in one pass (in voxel
chunks) to the sufficient statistics of every AR(1) refit -- ``X'Y``, the lag-1
cross-products ``sum_t (x_{t-1} + x_{t+1}) y_t``, ``sum y^2``, ``sum y_t y_{t-1}``, the
first and last samples -- from which the OLS residual autocorrelation and each level's
whitened normal equations follow exactly; each level needs one pseudo-inverse of its
whitened design.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "GLMFit",
    "ContrastResult",
    "fit_glm",
    "compute_contrast",
    "fixed_effects",
    "t_to_z",
    "roi_contrasts",
]

_TINY_VARIANCE = 1e-50  # nilearn's Contrast floor on variances
_FIXED_TINY_VARIANCE = 1e-16  # nilearn's floor in compute_fixed_effects


@dataclass
class GLMFit:
    """Fitted first-level GLM.

    Attributes
    ----------
    beta : ndarray, shape (n_regressors, n_voxels)
        Parameter estimates (prewhitened fit for AR(1)).
    dispersion : ndarray, shape (n_voxels,)
        Residual variance, whitened RSS / (n_scans - n_regressors).
    rho : ndarray, shape (n_voxels,)
        AR(1) coefficient after truncation to ``1/bins`` steps (0 for OLS).
    level : ndarray of int, shape (n_voxels,)
        Index into ``cov`` of each voxel's AR level.
    cov : ndarray, shape (n_levels, n_regressors, n_regressors)
        Unscaled parameter covariance ``pinv(Xw) pinv(Xw)'`` of each AR level.
    dof : int
        Residual degrees of freedom, n_scans - rank(X).
    """

    beta: np.ndarray
    dispersion: np.ndarray
    rho: np.ndarray
    level: np.ndarray
    cov: np.ndarray
    dof: int


@dataclass
class ContrastResult:
    """t contrast maps, each of shape (n_voxels,); ``dof`` the degrees of freedom."""

    effect: np.ndarray
    variance: np.ndarray
    t: np.ndarray
    z: np.ndarray
    dof: float


def _lag_design(x: np.ndarray) -> np.ndarray:
    """Rows ``x_{t-1} + x_{t+1}`` (missing neighbours are zero)."""
    lag = np.zeros_like(x)
    lag[1:] += x[:-1]
    lag[:-1] += x[1:]
    return lag


def _sufficient_statistics(y: np.ndarray, x: np.ndarray, chunk_size: int) -> dict:
    """Reduce data (n_scans, n_voxels) to the statistics of every AR(1) fit."""
    n_vox = y.shape[1]
    stacked = np.hstack([x, _lag_design(x)]).T  # (2p, n)
    p = x.shape[1]
    out = {
        "xy": np.empty((p, n_vox)),
        "xly": np.empty((p, n_vox)),
        "yy": np.empty(n_vox),
        "yl": np.empty(n_vox),
        "ysum": np.empty(n_vox),
        "yfirst": np.empty(n_vox),
        "ylast": np.empty(n_vox),
    }
    for start in range(0, n_vox, chunk_size):
        sl = slice(start, min(start + chunk_size, n_vox))
        yc = np.asarray(y[:, sl], dtype=np.float64)
        prod = stacked @ yc
        out["xy"][:, sl] = prod[:p]
        out["xly"][:, sl] = prod[p:]
        out["yy"][sl] = np.einsum("ij,ij->j", yc, yc)
        out["yl"][sl] = np.einsum("ij,ij->j", yc[1:], yc[:-1])
        out["ysum"][sl] = yc.sum(axis=0)
        out["yfirst"][sl] = yc[0]
        out["ylast"][sl] = yc[-1]
    return out


def _whitened_design(x: np.ndarray, rho: float) -> np.ndarray:
    xw = x.copy()
    xw[1:] -= rho * x[:-1]
    return xw


def _ar1_coefficients(x: np.ndarray, s: dict) -> np.ndarray:
    """Yule-Walker AR(1) coefficient of the OLS residuals of every voxel (nilearn convention)."""
    n = x.shape[0]
    pinv_x = np.linalg.pinv(x)
    beta = pinv_x @ pinv_x.T @ s["xy"]  # OLS estimate pinv(X) y
    # sums of residuals r = y - X beta and of their products, from the statistics
    rss = s["yy"] - np.einsum("ij,ij->j", beta, s["xy"])
    lag_gram = x[1:].T @ x[:-1]
    lag_gram = 0.5 * (lag_gram + lag_gram.T)
    cross = s["yl"] - np.einsum("ij,ij->j", beta, s["xly"]) + np.einsum(
        "ij,ik,kj->j", beta, lag_gram, beta
    )
    rsum = s["ysum"] - x.sum(axis=0) @ beta
    rfirst = s["yfirst"] - x[0] @ beta
    rlast = s["ylast"] - x[-1] @ beta
    mean = rsum.sum() / (n * rsum.size)  # nilearn centres on the grand mean
    r0 = rss - 2 * mean * rsum + n * mean**2
    r1 = cross - mean * (2 * rsum - rfirst - rlast) + (n - 1) * mean**2
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = (r1 / (n - 1)) / (r0 / n)
    return np.nan_to_num(rho)


def fit_glm(
    y: np.ndarray,
    x: np.ndarray,
    noise_model: str = "ar1",
    bins: int = 100,
    chunk_size: int = 16384,
) -> GLMFit:
    """Fit a GLM to every column of ``y``.

    Parameters
    ----------
    y : ndarray, shape (n_scans, n_voxels)
        Data (any float dtype; processed in float64 by voxel chunks).
    x : ndarray, shape (n_scans, n_regressors)
        Design matrix.
    noise_model : {"ar1", "ols"}
        Serial-correlation model.
    bins : int
        Number of AR(1) levels per unit of rho (nilearn's ``bins``).
    chunk_size : int
        Voxels per chunk in the data pass.

    Returns
    -------
    GLMFit
    """
    if noise_model not in ("ar1", "ols"):
        raise ValueError(f"noise_model must be 'ar1' or 'ols', got {noise_model!r}")
    x = np.asarray(x, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must be (n_scans={x.shape[0]}, n_voxels); got {y.shape}")
    n, p = x.shape
    s = _sufficient_statistics(y, x, chunk_size)
    if noise_model == "ols":
        rho = np.zeros(y.shape[1])
    else:
        rho = np.trunc(_ar1_coefficients(x, s) * bins) / bins
    levels, level = np.unique(rho, return_inverse=True)
    beta = np.empty((p, y.shape[1]))
    rss = np.empty(y.shape[1])
    cov = np.empty((levels.size, p, p))
    order = np.argsort(level, kind="stable")
    bounds = np.searchsorted(level[order], np.arange(levels.size + 1))
    for k, r in enumerate(levels):
        idx = order[bounds[k] : bounds[k + 1]]
        pinv_w = np.linalg.pinv(_whitened_design(x, r))
        cov[k] = pinv_w @ pinv_w.T
        xy = s["xy"][:, idx]
        # whitened X'y and y'y of this level from the lag statistics
        xwyw = xy - r * s["xly"][:, idx] + r**2 * (xy - np.outer(x[-1], s["ylast"][idx]))
        ywyw = s["yy"][idx] - 2 * r * s["yl"][idx] + r**2 * (s["yy"][idx] - s["ylast"][idx] ** 2)
        b = cov[k] @ xwyw
        beta[:, idx] = b
        rss[idx] = ywyw - np.einsum("ij,ij->j", b, xwyw)
    rank = np.linalg.matrix_rank(x, tol=np.abs(x).sum() * np.finfo(np.float64).eps)
    return GLMFit(
        beta=beta,
        dispersion=np.maximum(rss, 0.0) / (n - p),
        rho=rho,
        level=level,
        cov=cov,
        dof=int(n - rank),
    )


def t_to_z(t: np.ndarray, dof: float) -> np.ndarray:
    """z score with the same upper-tail p value as ``t`` on ``dof`` degrees of freedom.

    Uses the survival function for positive and the CDF for negative statistics (clipped
    to [1e-300, 1 - 1e-16], as nilearn) so both tails keep their precision.
    """
    t = np.asarray(t, dtype=float)
    p = np.clip(stats.t.sf(t, dof), 1e-300, 1 - 1e-16)
    q = np.clip(stats.t.cdf(t, dof), 1e-300, 1 - 1e-16)
    z = stats.norm.isf(p)
    neg = z < 0
    z[neg] = stats.norm.ppf(q[neg])
    return z


def compute_contrast(fit: GLMFit, contrast: np.ndarray) -> ContrastResult:
    """t contrast of a fitted GLM.

    Parameters
    ----------
    fit : GLMFit
    contrast : ndarray, shape (n_regressors,)

    Returns
    -------
    ContrastResult
        effect ``c' beta``, its variance ``c' cov c * dispersion``, t and z.
    """
    c = np.asarray(contrast, dtype=float).ravel()
    if c.size != fit.beta.shape[0]:
        raise ValueError(f"contrast has {c.size} weights; the design has {fit.beta.shape[0]} columns")
    effect = c @ fit.beta
    variance = np.einsum("i,kij,j->k", c, fit.cov, c)[fit.level] * fit.dispersion
    t = effect / np.sqrt(np.maximum(variance, _TINY_VARIANCE))
    return ContrastResult(effect, variance, t, t_to_z(t, fit.dof), float(fit.dof))


def fixed_effects(
    effects: np.ndarray, variances: np.ndarray, dofs, precision_weighted: bool = True
) -> ContrastResult:
    """Combine contrast estimates of several runs.

    Parameters
    ----------
    effects, variances : ndarray, shape (n_runs, n_voxels)
    dofs : sequence of float, length n_runs
        Degrees of freedom of each run (summed for the combined test).
    precision_weighted : bool
        Inverse-variance weighting (True) or plain averaging (False), as nilearn.

    Returns
    -------
    ContrastResult
    """
    effects = np.atleast_2d(np.asarray(effects, dtype=float))
    variances = np.maximum(np.atleast_2d(np.asarray(variances, dtype=float)), _FIXED_TINY_VARIANCE)
    if effects.shape != variances.shape or len(dofs) != effects.shape[0]:
        raise ValueError("effects, variances and dofs must describe the same runs")
    if precision_weighted:
        weights = 1.0 / variances
        variance = 1.0 / weights.sum(axis=0)
        effect = (effects * weights).sum(axis=0) * variance
    else:
        variance = variances.mean(axis=0) / effects.shape[0]
        effect = effects.mean(axis=0)
    dof = float(np.sum(dofs))
    t = effect / np.sqrt(np.maximum(variance, _TINY_VARIANCE))
    return ContrastResult(effect, variance, t, t_to_z(t, dof), dof)


def roi_contrasts(
    roi_signals: pd.DataFrame,
    design: pd.DataFrame,
    contrasts: Mapping[str, np.ndarray],
    noise_model: str = "ar1",
) -> pd.DataFrame:
    """Contrast estimates of a GLM fitted to ROI mean time series.

    Parameters
    ----------
    roi_signals : DataFrame, shape (n_scans, n_rois)
        One column per ROI.
    design : DataFrame, shape (n_scans, n_regressors)
    contrasts : mapping
        Contrast name -> weights over ``design.columns``.
    noise_model : {"ar1", "ols"}

    Returns
    -------
    DataFrame
        Long table with columns roi, contrast, effect, variance, t, z, dof.
    """
    fit = fit_glm(roi_signals.to_numpy(dtype=float), design.to_numpy(dtype=float), noise_model)
    rows = []
    for name, vec in contrasts.items():
        res = compute_contrast(fit, vec)
        for k, roi in enumerate(roi_signals.columns):
            rows.append(
                {
                    "roi": roi,
                    "contrast": name,
                    "effect": res.effect[k],
                    "variance": res.variance[k],
                    "t": res.t[k],
                    "z": res.z[k],
                    "dof": res.dof,
                }
            )
    return pd.DataFrame(rows, columns=["roi", "contrast", "effect", "variance", "t", "z", "dof"])
