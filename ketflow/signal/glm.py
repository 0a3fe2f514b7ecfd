"""Batched voxelwise first-level GLM (OLS, AR(1) or bias-corrected AR(p) prewhitening), contrasts, fixed effects.

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

Bias-corrected AR(p) (``noise_model="ar<p>-corrected"``; Worsley et al. 2002, section 3.3, as
fmristat's ``fmrilm``).  nilearn's AR(1) coefficient is the lag-1 autocorrelation of the OLS
residuals, which is biased towards zero (negative) by the residual-forming matrix ``R = I -
X X^+``: with the ~50 confound, spike and cosine columns of a 150-scan task design, noise with
a true lag-1 autocorrelation of 0.3 gives residual estimates near 0.03, the data are hardly
whitened, and the variance of slow (block) contrasts is underestimated (docs/glm_ppi.md,
"Calibration": 0.9-1.1 % of null voxels beyond |z| > 3.09 instead of 0.2 %).  The corrected
model solves ``E[a_j] = sigma^2 sum_k m_jk rho_k`` for the autocorrelations ``rho_0..rho_p``,
where ``a_j = sum_t e_t e_{t-j}`` are each voxel's residual autocovariances and ``m_jk =
tr(R D_j R T_k)`` (``D_j`` the lag-j shift matrix, ``T_0 = I``, ``T_k = D_k + D_k'``; the
noise correlation beyond lag p is taken as zero).  The corrected autocorrelations are then,
optionally, smoothed in space (``smoother``, e.g. :func:`mask_smoother` with FWHM 15 mm,
fmristat's default), tapered (``rho_k * 0.9^(k m)``) where they do not form a positive-definite
sequence, and turned into AR(p) coefficients by Yule-Walker.  Voxels are grouped by their
coefficients rounded to ``1/bins`` and each group is whitened as nilearn's ``ARModel`` does
(``w_t = y_t - sum_i phi_i y_{t-1-i}`` for ``t > i``) and fitted like the AR(1) model.

Why not call nilearn: ``run_glm`` keeps one RegressionResults object per AR level, labels
voxels with strings and refits each level by indexing the full data array, which makes a
whole-brain run slow and memory hungry.  Here the data are read in voxel chunks twice: an
OLS pass gives each voxel's AR(1) coefficient; voxels are then sorted by AR level and a
second pass whitens each chunk and projects it on its level's factorised design.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd
from nilearn.glm.first_level import mean_scaling
from scipy import stats

__all__ = [
    "AUTOCORRELATION_FWHM_MM",
    "GLMFit",
    "mask_smoother",
    "noise_model_description",
    "parse_noise_model",
    "voxel_smoother",
    "ContrastResult",
    "fit_glm",
    "compute_contrast",
    "fixed_effects",
    "t_to_z",
    "roi_contrasts",
    "fixed_effects_table",
    "precision_weights",
    "percent_signal_change",
    "column_space",
]

_TINY_VARIANCE = 1e-50  # nilearn's Contrast floor on variances
_FIXED_TINY_VARIANCE = 1e-16  # nilearn's floor in compute_fixed_effects
#: FWHM (mm) of the spatial smoothing of the corrected autocorrelations: fmristat's default
#: (Worsley et al. 2002, "fwhm_rho").
AUTOCORRELATION_FWHM_MM = 15.0
#: Smallest eigenvalue an autocorrelation sequence's Toeplitz matrix may have before tapering.
_MIN_EIGENVALUE = 0.05


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
        First AR coefficient after quantisation to ``1/bins`` steps (0 for OLS).
    level : ndarray of int, shape (n_voxels,)
        Index into ``cov`` of each voxel's AR level.
    cov : ndarray, shape (n_levels, n_regressors, n_regressors)
        Unscaled parameter covariance ``pinv(Xw) pinv(Xw)'`` of each AR level.
    dof : int
        Residual degrees of freedom, n_scans - rank(X).
    ar : ndarray, shape (n_voxels, order)
        All AR coefficients after quantisation (order 0 for OLS).
    """

    beta: np.ndarray
    dispersion: np.ndarray
    rho: np.ndarray
    level: np.ndarray
    cov: np.ndarray
    dof: int
    ar: np.ndarray | None = None


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


def _whiten(a: np.ndarray, coefs, copy: bool = True) -> np.ndarray:
    """AR(p) whitening as nilearn's ``ARModel.whiten``: ``w_t = a_t - sum_i coefs[i] a_{t-1-i}``
    for the ``i < t``; ``coefs`` has shape (p,) or (p, n_columns) (one set per column)."""
    w = a.copy() if copy else a
    coefs = np.asarray(coefs, dtype=np.float64)
    for t in range(w.shape[0] - 1, 0, -1):  # backwards: rows before t are still unwhitened
        for i in range(min(len(coefs), t)):
            w[t] -= coefs[i] * w[t - 1 - i]
    return w


def parse_noise_model(noise_model: str) -> tuple[str, int]:
    """``"ols"`` -> ("ols", 0); ``"ar1"`` -> ("ar1", 1) (nilearn's); ``"ar<p>-corrected"`` ->
    ("corrected", p) for p in 1..9. Anything else raises ``ValueError``."""
    if noise_model in ("ols", "ar1"):
        return noise_model, int(noise_model == "ar1")
    match = re.fullmatch(r"ar([1-9])-corrected", str(noise_model))
    if not match:
        raise ValueError(f"noise_model must be 'ols', 'ar1' or 'ar<p>-corrected' (p = 1..9), got {noise_model!r}")
    return "corrected", int(match.group(1))


def mask_smoother(mask: np.ndarray, affine: np.ndarray, fwhm_mm: float = AUTOCORRELATION_FWHM_MM
                  ) -> Callable[[np.ndarray], np.ndarray]:
    """Gaussian smoothing of a map over the voxels of ``mask``, as a function of their values.

    mask : bool array (3-D); the values are in its C order (``values[k]`` is the voxel of
    ``np.flatnonzero(mask)[k]``, the order of ketflow's BOLD cache). affine : (4, 4) voxel-to-world
    matrix (mm). Only in-mask voxels contribute (normalised convolution: smoothed values divided
    by the smoothed mask), so a constant map stays constant up to the edge.
    Returns ``smooth(values (n_voxels,)) -> (n_voxels,)``.
    """
    from scipy.ndimage import gaussian_filter

    mask = np.asarray(mask, dtype=bool)
    if fwhm_mm <= 0:
        raise ValueError(f"smoothing FWHM must be positive, got {fwhm_mm} mm")
    voxel_mm = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    sigma = fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0))) / voxel_mm
    weight = gaussian_filter(mask.astype(np.float64), sigma, mode="constant")[mask]

    def smooth(values: np.ndarray) -> np.ndarray:
        image = np.zeros(mask.shape)
        image[mask] = values
        return gaussian_filter(image, sigma, mode="constant")[mask] / weight

    return smooth


def voxel_smoother(noise_model: str, mask: np.ndarray, affine: np.ndarray,
                   fwhm_mm: float = AUTOCORRELATION_FWHM_MM) -> Callable[[np.ndarray], np.ndarray] | None:
    """The ``smoother`` :func:`fit_glm` takes for voxelwise fits of ``noise_model`` over the
    voxels of ``mask``: :func:`mask_smoother` for the corrected AR models, None otherwise."""
    return mask_smoother(mask, affine, fwhm_mm) if parse_noise_model(noise_model)[0] == "corrected" else None


def noise_model_description(noise_model: str, fwhm_mm: float | None = AUTOCORRELATION_FWHM_MM) -> str:
    """One sentence describing a noise model (sidecars, methods text); ``fwhm_mm`` None: the
    autocorrelations are not smoothed (ROI-level fits)."""
    kind, order = parse_noise_model(noise_model)
    if kind == "ols":
        return "ordinary least squares"
    if kind == "ar1":
        return ("AR(1) prewhitening: Yule-Walker coefficient of each voxel's OLS residuals, truncated to "
                "steps of 0.01, one whitened refit per level (as nilearn run_glm)")
    smoothing = (f"smoothed in space with a {fwhm_mm:g} mm FWHM Gaussian kernel within the brain mask in "
                 "voxelwise fits (not in fits of ROI mean series)" if fwhm_mm else "not smoothed")
    return (f"AR({order}) prewhitening with bias-corrected autocorrelations (Worsley et al. 2002): the "
            f"autocorrelations of each voxel's OLS residuals corrected for the design's residual-forming "
            f"matrix, {smoothing}, turned into AR({order}) coefficients by Yule-Walker and rounded to steps "
            "of 0.01, one whitened refit per level")


def _lag_traces(basis: np.ndarray, order: int) -> np.ndarray:
    """Worsley et al. (2002)'s ``m_jk = tr(R D_j R T_k)`` for j = 0..order and every lag
    k = 0..n-1, shape (order + 1, n). basis : (n, rank) orthonormal basis of the design;
    ``R = I - basis basis'``, ``D_j`` the lag-j shift matrix, ``T_0 = I``, ``T_k = D_k + D_k'``.
    """
    n = basis.shape[0]
    r = np.eye(n) - basis @ basis.T
    rows, cols = np.indices((n, n))
    offset = np.abs(cols - rows).ravel()
    m = np.empty((order + 1, n))
    for j in range(order + 1):
        rdr = r[:, j:] @ r[: n - j, :] if j else r  # R D_j R, (D_j)[t, t - j] = 1 (R is idempotent)
        m[j] = np.bincount(offset, weights=rdr.ravel(), minlength=n)  # sum of both k-th diagonals
    return m


def _beyond_order(rho: np.ndarray, coefs: np.ndarray, tail: np.ndarray) -> np.ndarray:
    """``sum_{k>p} tail[:, k-p-1] rho_k`` (shape (p+1, v)): the autocorrelations beyond lag p of
    the AR(p) processes with coefficients ``coefs`` (v, p) and lag 1..p autocorrelations ``rho``
    (p, v), generated by the AR recursion ``rho_k = sum_i coefs_i rho_{k-i}`` and weighted by
    ``tail`` (p+1, n_lags) without storing them (memory of p lags per voxel)."""
    order = rho.shape[0]
    recent = [np.ones(rho.shape[1]), *rho]  # lags 0..p
    total = np.zeros((tail.shape[0], rho.shape[1]))
    for k in range(tail.shape[1]):
        nxt = sum(coefs[:, i] * recent[-1 - i] for i in range(order))
        total += tail[:, k : k + 1] * nxt
        recent = recent[1:] + [nxt]
    return total


def _toeplitz_stack(rho: np.ndarray) -> np.ndarray:
    """Toeplitz matrices (v, p+1, p+1) of the sequences ``1, rho_1..rho_p`` (rho: (p, v))."""
    full = np.vstack([np.ones(rho.shape[1]), rho])
    lags = np.abs(np.subtract.outer(np.arange(rho.shape[0] + 1), np.arange(rho.shape[0] + 1)))
    return np.moveaxis(full[lags], -1, 0)


def _taper(rho: np.ndarray) -> np.ndarray:
    """Autocorrelations (p, v) shrunk (``rho_k * 0.9^(k m)``, smallest m) until the Toeplitz
    matrix of ``1, rho_1..rho_p`` has eigenvalues above ``_MIN_EIGENVALUE`` (a valid, stationary
    AR(p)); voxels already valid are unchanged."""
    rho = rho.copy()
    lags = np.arange(1, rho.shape[0] + 1)[:, None]
    todo = np.flatnonzero(np.linalg.eigvalsh(_toeplitz_stack(rho)).min(axis=1) <= _MIN_EIGENVALUE)
    while todo.size:
        rho[:, todo] *= 0.9**lags
        todo = todo[np.linalg.eigvalsh(_toeplitz_stack(rho[:, todo])).min(axis=1) <= _MIN_EIGENVALUE]
    return rho


def _yule_walker(rho: np.ndarray) -> np.ndarray:
    """AR(p) coefficients (v, p) from autocorrelations ``rho`` (p, v) at lags 1..p."""
    return np.linalg.solve(_toeplitz_stack(rho)[:, :-1, :-1], rho.T[..., None])[..., 0]


def _corrected_ar(s: dict, ols: _Factorised, order: int, smoother, n_iter: int = 3) -> np.ndarray:
    """Bias-corrected (optionally smoothed, tapered) AR(order) coefficients (v, order).

    Worsley et al. (2002) solve ``E[a_j] = sum_{k<=p} m_jk c_k`` for ``c_k = sigma^2 rho_k``,
    taking the noise autocorrelation beyond lag p as zero. Here that solution starts a
    fixed-point iteration that adds the lags beyond p implied by the current AR(p) estimate,
    ``a_j - c_0 sum_{k>p} m_jk rho_k``, so that AR(p) noise is unbiased in expectation too
    (the truncated correction leaves a lag-1 autocorrelation of 0.4 at about 0.3 under 40 smooth
    nuisance columns; tests/test_signal_glm_corrected.py).
    """
    m = _lag_traces(ols.basis, order)
    head, tail = m[:, : order + 1], m[:, order + 1 :]
    autocov = np.vstack([s["rss"][None], s["autocov"]])  # lags 0..order, (order+1, v)
    target = autocov
    for iteration in range(n_iter + 1):
        scaled = np.linalg.solve(head, target)
        with np.errstate(divide="ignore", invalid="ignore"):
            rho = np.nan_to_num(np.where(scaled[0] > 0, scaled[1:] / scaled[0], 0.0))
        if smoother is not None:
            rho = np.vstack([smoother(lag) for lag in rho])
        rho = _taper(rho)
        coefs = _yule_walker(rho)
        if iteration == n_iter or not tail.shape[1]:
            return coefs
        target = autocov - np.maximum(scaled[0], 0.0) * _beyond_order(rho, coefs, tail)


def _ols_pass(y: np.ndarray, ols: _Factorised, chunk_size: int, keep_fit: bool, n_lags: int = 0) -> dict:
    """Per voxel: the OLS fit (``beta``, ``rss``) when ``keep_fit``; else the residual
    statistics of nilearn's AR(1) estimate (``rss``, ``rsum``, lag-1 ``rlag``, ``rfirst``,
    ``rlast``) and, with ``n_lags`` > 0, the residual autocovariance sums ``autocov`` (lags
    1..n_lags, shape (n_lags, n_voxels)) of the corrected AR model."""
    n_vox = y.shape[1]
    keys = ("rss",) if keep_fit else ("rss", "rsum", "rlag", "rfirst", "rlast")
    out = {key: np.empty(n_vox) for key in keys}
    if keep_fit:
        out["beta"] = np.empty((ols.solve.shape[0], n_vox))
    if n_lags:
        out["autocov"] = np.empty((n_lags, n_vox))
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
        for lag in range(1, n_lags + 1):
            out["autocov"][lag - 1, sl] = np.einsum("ij,ij->j", res[lag:], res[:-lag])
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
    smoother: Callable[[np.ndarray], np.ndarray] | None = None,
) -> GLMFit:
    """Fit a GLM to every column of ``y``.

    Parameters
    ----------
    y : ndarray, shape (n_scans, n_voxels)
        Data (any float dtype; processed in float64 by voxel chunks).
    x : ndarray, shape (n_scans, n_regressors)
        Design matrix, columns in any units (see module docstring).
    noise_model : {"ar1", "ols", "ar<p>-corrected"}
        Serial-correlation model: nilearn's AR(1) (equal to ``FirstLevelModel(noise_model="ar1")``),
        OLS, or the bias-corrected AR(p) of Worsley et al. (2002) (module docstring).
    bins : int
        Number of AR levels per unit of each coefficient (nilearn's ``bins``; truncation for
        "ar1", as nilearn, rounding for the corrected models).
    chunk_size : int
        Voxels per chunk in the data passes.
    smoother : callable, optional
        ``smoother(values (n_voxels,)) -> (n_voxels,)`` applied to each corrected
        autocorrelation lag before the AR coefficients are formed (e.g. :func:`mask_smoother`);
        corrected models only.

    Returns
    -------
    GLMFit
    """
    kind, ar_order = parse_noise_model(noise_model)
    if smoother is not None and kind != "corrected":
        raise ValueError(f"a smoother applies to the corrected AR models only, not to {noise_model!r}")
    x = np.asarray(x, dtype=np.float64)
    if y.ndim != 2 or x.ndim != 2 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must be (n_scans={x.shape[0]}, n_voxels); got {y.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("the design matrix has non-finite values")
    n, p = x.shape
    ols = _Factorised(x)
    stats_ = _ols_pass(y, ols, chunk_size, keep_fit=kind == "ols", n_lags=ar_order if kind == "corrected" else 0)
    if kind == "ols":
        return GLMFit(
            beta=stats_["beta"],
            dispersion=stats_["rss"] / (n - p),
            rho=np.zeros(y.shape[1]),
            level=np.zeros(y.shape[1], dtype=np.intp),
            cov=ols.cov[None],
            dof=int(n - ols.rank),
            ar=np.zeros((y.shape[1], 0)),
        )
    if kind == "ar1":
        ar = (np.trunc(_ar1_coefficients(stats_, n) * bins) / bins)[:, None]
    else:
        if n - ols.rank <= ar_order:
            raise ValueError(f"{n - ols.rank} residual degrees of freedom cannot estimate an AR({ar_order}) model")
        ar = np.rint(_corrected_ar(stats_, ols, ar_order, smoother) * bins) / bins
    levels, level = np.unique(ar, axis=0, return_inverse=True)
    level = level.ravel()
    models = [_Factorised(_whiten(x, coefs), ols.rank) for coefs in levels]
    beta = np.empty((p, y.shape[1]))
    rss = np.empty(y.shape[1])
    for start in range(0, y.shape[1], chunk_size):
        sl = slice(start, min(start + chunk_size, y.shape[1]))
        order = np.argsort(level[sl], kind="stable")  # voxels of the chunk grouped by AR level
        lev = level[sl][order]
        yw = _whiten(np.array(y[:, sl], dtype=np.float64), ar[sl].T, copy=False)[:, order]
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
        rho=ar[:, 0].copy(),
        level=level,
        cov=np.array([m.cov for m in models]),
        dof=int(n - ols.rank),
        ar=ar,
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


def precision_weights(variances) -> np.ndarray:
    """Inverse-variance weights (unnormalised) of run estimates, ``1 / max(variance, 1e-16)``
    (nilearn's floor in ``compute_fixed_effects``); any shape."""
    return 1.0 / np.maximum(np.asarray(variances, dtype=float), _FIXED_TINY_VARIANCE)


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
        weights = precision_weights(variances)
        variance = 1.0 / weights.sum(axis=0)
        effect = (effects * weights).sum(axis=0) * variance
    else:
        variance = variances.mean(axis=0) / effects.shape[0]
        effect = effects.mean(axis=0)
    dof = float(np.sum(dofs))
    t = effect / np.sqrt(np.maximum(variance, _TINY_VARIANCE))
    return ContrastResult(effect, variance, t, t_to_z(t, dof), dof)


def fixed_effects_table(tables: list[pd.DataFrame], dofs, names: list[str] | None = None,
                        precision_weighted: bool = True) -> pd.DataFrame:
    """Fixed-effects combination of per-run ROI contrast tables (columns roi, contrast, effect,
    variance, ...), as :func:`fixed_effects`; ``names`` (e.g. the tables' files) label errors.

    Every run must hold the same contrasts; an ROI that a run lacks (excluded from it by the
    coverage rule) is combined over the runs that hold it, on their summed degrees of freedom,
    and ``n_runs`` says how many.

    Returns a table with columns roi, contrast, effect, variance, t, z, dof, n_runs.
    """
    names = names or [f"table {k + 1}" for k in range(len(tables))]
    if len(tables) != len(dofs):
        raise ValueError(f"{len(tables)} ROI tables for {len(dofs)} runs")
    for name, table in zip(names[1:], tables[1:]):
        if set(table["contrast"]) != set(tables[0]["contrast"]):
            raise ValueError(f"{name}: contrasts differ from {names[0]}")
    tables = [t.set_index(["roi", "contrast"]) for t in tables]
    keys = tables[0].index.append([t.index for t in tables[1:]]).unique()
    rows = []
    for held in sorted({tuple(k for k, t in enumerate(tables) if key in t.index) for key in keys}):
        group = keys[[tuple(k for k, t in enumerate(tables) if key in t.index) == held for key in keys]]
        res = fixed_effects(np.array([tables[k].loc[group, "effect"].to_numpy() for k in held]),
                            np.array([tables[k].loc[group, "variance"].to_numpy() for k in held]),
                            [dofs[k] for k in held], precision_weighted)
        rows.append(pd.DataFrame({"roi": group.get_level_values(0), "contrast": group.get_level_values(1),
                                  "effect": res.effect, "variance": res.variance, "t": res.t, "z": res.z,
                                  "dof": res.dof, "n_runs": len(held)}, index=group))
    return pd.concat(rows).loc[keys].reset_index(drop=True)


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
    noise_model : {"ar1", "ols", "ar<p>-corrected"}
        See :func:`fit_glm` (ROI series are not smoothed in space).

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
