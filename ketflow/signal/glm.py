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

Numerics.  First-level designs mix columns of very different scales (fMRIPrep confounds in
raw units: ``global_signal_power2`` ~ 1e6-1e7, a raw seed ~ 1e3, spikes and cosines ~ 1),
so ``X'X`` can have a condition number beyond 1e20 and anything built on the normal
equations loses all precision.  Here every design (OLS and each AR level's whitened
design) is first scaled to unit column norms -- which leaves fitted values, residuals and
every estimable contrast unchanged -- and factorised by a thin SVD ``Xs = U S V'``
(Golub & Van Loan, Matrix Computations, 4th ed., sections 5.5 and 2.4.8 on column
equilibration); coefficients are ``D V S^-1 U'y`` with ``D`` the column scaling, residuals
are formed directly as ``y - U U'y`` (never as a difference of sums of squares), and the
rank is that of the equilibrated design (singular values below ``max(n, p) * eps *
s_max`` are dropped, numpy's default).  For a rank-deficient design the coefficients are
the minimum-norm solution of the *equilibrated* design (nilearn: of the raw design):
estimable contrasts are identical, non-estimable ones arbitrary in both.

Why not call nilearn: ``run_glm`` keeps one RegressionResults object per AR level, labels
voxels with strings and refits each level by indexing the full data array, which makes a
whole-brain run slow and memory hungry.  Here the data are read in voxel chunks twice: an
OLS pass gives each voxel's AR(1) coefficient; voxels are then sorted by AR level and a
second pass whitens each chunk and projects it on its level's factorised design.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd
from nilearn.glm.first_level import mean_scaling
from scipy import stats

__all__ = [
    "GLMFit",
    "ContrastResult",
    "fit_glm",
    "compute_contrast",
    "fixed_effects",
    "t_to_z",
    "roi_contrasts",
    "fixed_effects_table",
    "percent_signal_change",
    "column_space",
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

    @property
    def p(self) -> np.ndarray:
        """One-sided (upper-tail) p value of ``t`` on ``dof`` degrees of freedom, as nilearn's
        ``Contrast.p_value`` and the ``stat-p`` maps of fitlins; the p value ``z`` keeps."""
        return stats.t.sf(np.asarray(self.t, dtype=float), self.dof)


class _Factorised:
    """Thin SVD of a column-equilibrated design ``x = U S V' D^-1`` truncated to ``rank``.

    ``basis`` (n, rank) = U spans the fitted values; ``solve`` (p, rank) = D V S^-1 maps
    ``U'y`` to the coefficients; ``cov`` = solve solve' = pinv(x) pinv(x)'.
    """

    def __init__(self, x: np.ndarray, rank: int | None = None):
        norms = np.sqrt(np.einsum("ij,ij->j", x, x))
        norms[norms == 0] = 1.0
        u, s, vt = np.linalg.svd(x / norms, full_matrices=False)
        if rank is None:
            rank = int(np.sum(s > s[0] * max(x.shape) * np.finfo(np.float64).eps)) if s.size and s[0] > 0 else 0
        self.rank = rank
        self.basis = u[:, :rank]
        self.solve = (vt[:rank].T / s[:rank]) / norms[:, None]
        self.cov = self.solve @ self.solve.T

    def project(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients (p, v) and residuals (n, v) of ``y`` (n, v)."""
        coef = self.basis.T @ y
        return self.solve @ coef, y - self.basis @ coef


def column_space(x: np.ndarray) -> np.ndarray:
    """Orthonormal basis (n, rank) of the column space of ``x`` (n, p), any column units.

    From the thin SVD of the column-equilibrated matrix (module docstring), so columns of
    very different scales (raw fMRIPrep confounds) keep their full numerical rank.
    """
    return _Factorised(np.asarray(x, dtype=np.float64)).basis


def _whiten(a: np.ndarray, rho, copy: bool = True) -> np.ndarray:
    """AR(1) whitening ``w_0 = a_0, w_t = a_t - rho a_{t-1}`` (rho scalar or per column)."""
    w = a.copy() if copy else a
    for t in range(w.shape[0] - 1, 0, -1):
        w[t] -= rho * w[t - 1]
    return w


def _ols_pass(y: np.ndarray, ols: _Factorised, chunk_size: int, keep_fit: bool) -> dict:
    """Per voxel: the OLS fit (``beta``, ``rss``) when ``keep_fit``, else the residual
    statistics of the AR(1) estimate (``rss``, ``rsum``, lag-1 ``rlag``, ``rfirst``, ``rlast``)."""
    n_vox = y.shape[1]
    keys = ("rss",) if keep_fit else ("rss", "rsum", "rlag", "rfirst", "rlast")
    out = {key: np.empty(n_vox) for key in keys}
    if keep_fit:
        out["beta"] = np.empty((ols.solve.shape[0], n_vox))
    for start in range(0, n_vox, chunk_size):
        sl = slice(start, min(start + chunk_size, n_vox))
        beta, res = ols.project(np.asarray(y[:, sl], dtype=np.float64))
        out["rss"][sl] = np.einsum("ij,ij->j", res, res)
        if keep_fit:
            out["beta"][:, sl] = beta
        else:
            out["rsum"][sl] = res.sum(axis=0)
            out["rlag"][sl] = np.einsum("ij,ij->j", res[1:], res[:-1])
            out["rfirst"][sl] = res[0]
            out["rlast"][sl] = res[-1]
    return out


def _ar1_coefficients(s: dict, n: int) -> np.ndarray:
    """Yule-Walker AR(1) coefficient of the OLS residuals (nilearn centres on the grand mean)."""
    mean = s["rsum"].sum() / (n * s["rsum"].size)
    r0 = s["rss"] - 2 * mean * s["rsum"] + n * mean**2
    r1 = s["rlag"] - mean * (2 * s["rsum"] - s["rfirst"] - s["rlast"]) + (n - 1) * mean**2
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = (r1 / (n - 1)) / (r0 / n)
    return np.nan_to_num(rho)


def fit_glm(
    y: np.ndarray,
    x: np.ndarray,
    noise_model: str = "ar1",
    bins: int = 100,
    chunk_size: int = 8192,
) -> GLMFit:
    """Fit a GLM to every column of ``y``.

    Parameters
    ----------
    y : ndarray, shape (n_scans, n_voxels)
        Data (any float dtype; processed in float64 by voxel chunks).
    x : ndarray, shape (n_scans, n_regressors)
        Design matrix, columns in any units (see module docstring).
    noise_model : {"ar1", "ols"}
        Serial-correlation model.
    bins : int
        Number of AR(1) levels per unit of rho (nilearn's ``bins``).
    chunk_size : int
        Voxels per chunk in the data passes.

    Returns
    -------
    GLMFit
    """
    if noise_model not in ("ar1", "ols"):
        raise ValueError(f"noise_model must be 'ar1' or 'ols', got {noise_model!r}")
    x = np.asarray(x, dtype=np.float64)
    if y.ndim != 2 or x.ndim != 2 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must be (n_scans={x.shape[0]}, n_voxels); got {y.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("the design matrix has non-finite values")
    n, p = x.shape
    ols = _Factorised(x)
    stats_ = _ols_pass(y, ols, chunk_size, keep_fit=noise_model == "ols")
    if noise_model == "ols":
        return GLMFit(
            beta=stats_["beta"],
            dispersion=stats_["rss"] / (n - p),
            rho=np.zeros(y.shape[1]),
            level=np.zeros(y.shape[1], dtype=np.intp),
            cov=ols.cov[None],
            dof=int(n - ols.rank),
        )
    rho = np.trunc(_ar1_coefficients(stats_, n) * bins) / bins
    levels, level = np.unique(rho, return_inverse=True)
    models = [_Factorised(_whiten(x, r), ols.rank) for r in levels]
    beta = np.empty((p, y.shape[1]))
    rss = np.empty(y.shape[1])
    for start in range(0, y.shape[1], chunk_size):
        sl = slice(start, min(start + chunk_size, y.shape[1]))
        order = np.argsort(level[sl], kind="stable")  # voxels of the chunk grouped by AR level
        lev = level[sl][order]
        yw = _whiten(np.array(y[:, sl], dtype=np.float64), rho[sl], copy=False)[:, order]
        b_chunk, rss_chunk = np.empty((p, order.size)), np.empty(order.size)
        for part in np.split(np.arange(order.size), np.flatnonzero(np.diff(lev)) + 1):
            b, res = models[lev[part[0]]].project(yw[:, part[0] : part[-1] + 1])
            b_chunk[:, part[0] : part[-1] + 1] = b
            rss_chunk[part[0] : part[-1] + 1] = np.einsum("ij,ij->j", res, res)
        beta[:, start + order] = b_chunk
        rss[start + order] = rss_chunk
    return GLMFit(
        beta=beta,
        dispersion=rss / (n - p),
        rho=rho,
        level=level,
        cov=np.array([m.cov for m in models]),
        dof=int(n - ols.rank),
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


def fixed_effects_table(tables: list[pd.DataFrame], dofs, names: list[str] | None = None) -> pd.DataFrame:
    """Fixed-effects combination of per-run ROI contrast tables (columns roi, contrast, effect,
    variance, ...), as :func:`fixed_effects`; ``names`` (e.g. the tables' files) label errors.

    Returns a table with columns roi, contrast, effect, variance, t, z, dof.
    """
    names = names or [f"table {k + 1}" for k in range(len(tables))]
    if len(tables) != len(dofs):
        raise ValueError(f"{len(tables)} ROI tables for {len(dofs)} runs")
    tables = [t.set_index(["roi", "contrast"]) for t in tables]
    keys = tables[0].index
    for name, table in zip(names[1:], tables[1:]):
        if not table.index.equals(keys):
            raise ValueError(f"{name}: ROIs or contrasts differ from {names[0]}")
    res = fixed_effects(np.array([t["effect"].to_numpy() for t in tables]),
                        np.array([t["variance"].to_numpy() for t in tables]), dofs)
    return pd.DataFrame({"roi": keys.get_level_values(0), "contrast": keys.get_level_values(1),
                         "effect": res.effect, "variance": res.variance, "t": res.t, "z": res.z, "dof": res.dof})


def percent_signal_change(data: np.ndarray) -> np.ndarray:
    """Each voxel (column of ``data``, (time, voxels)) in percent of its temporal mean,
    ``100 * (y / mean - 1)``: nilearn's ``mean_scaling``, which ``FirstLevelModel`` applies."""
    return mean_scaling(data)[0]


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
