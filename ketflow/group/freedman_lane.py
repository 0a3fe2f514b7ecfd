"""Vectorised Freedman–Lane permutation and sign-flipping of linear-model contrasts.

The max-statistic permutation test (Nichols & Holmes 2002, Hum Brain Mapp 15:1; Westfall &
Young 1993) needs the same small regression refitted for every measure of a family and every
one of thousands of rearrangements of the subjects.  statsmodels fits one model at a time
(milliseconds each, so 5,000 permutations × 100 measures would take many minutes); here the
fits are closed-form least squares over all measures × rearrangements at once (NumPy
``einsum``), which is why this module exists.  The statistics of the identity rearrangement
are those of the ordinary fits (tests/test_inference.py checks them against statsmodels'
``OLS`` and ``MixedLM``).

Model form
----------
A model is one or two *strata*: independent least-squares problems over the same ``n``
subjects, ``y_j = D_j θ_j + e_j`` with ``var(e_j) = v_j I``.  An effect is a contrast
``ψ = Σ_j c_jᵀ θ_j``; its estimate is the sum of the strata's OLS contrasts and its variance
``Σ_j v_j c_jᵀ (D_jᵀD_j)⁻¹ c_j``.

* ``ols``: one stratum, ``v = RSS / (n − k)``: ordinary regression (ANCOVA).
* ``random_intercept``: two strata, the within-subject difference ``d = y_post − y_pre``
  (variance ``2σ²_e``) and the between-subject sum ``s = y_pre + y_post`` (variance
  ``4σ²_u + 2σ²_e``).  For two sessions per subject, a random subject intercept and
  session-invariant covariates this orthogonal split is exact, and REML gives
  ``v_d = RSS_d / df_d``, ``v_s = RSS_s / df_s`` unless that makes ``σ²_u < 0``, in which
  case ``σ²_u = 0`` and both equal ``(RSS_d + RSS_s) / (df_d + df_s)`` (the balanced
  one-way random-effects REML solution; Searle, Casella & McCulloch 1992, ch. 3–4).

Freedman–Lane (Freedman & Lane 1983, J Bus Econ Stat 1:292; Winkler et al. 2014,
NeuroImage 92:381, Table 2): the model is refitted under the null ``ψ = 0`` (restricted least
squares; with two strata weighted by the observed variances), its residuals ``e_j`` are
rearranged between subjects (the same rearrangement for every stratum, measure and effect
of a family), added back to the restricted fit and the full model refitted.  Between-arm
effects permute subjects (exchangeable under randomisation); within-arm changes flip the
signs of subjects' residuals (symmetric errors).  Without nuisance regressors this is
permuting the arm labels, or flipping the signs of the change scores.

Measures with missing subjects are handled by *induced* rearrangements: one permutation of
all ``N`` subjects is drawn, and a measure observed on a subset uses the permutation of that
subset obtained by ranking (which is again uniform over the subset's permutations); sign
flips are simply restricted.  So every measure's null is exact and the dependence between
measures is kept where they share subjects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["Stratum", "ContrastModel", "null_fit", "rearrangements", "induced", "contrast_t", "t_to_z",
           "max_statistic_p", "family_max"]

#: Rearrangements processed at once (bounds the (measures, batch, subjects) work arrays).
BATCH = 500


@dataclass(frozen=True)
class Stratum:
    """One least-squares stratum for ``m`` measures observed on the same ``n`` subjects.

    y : (m, n) responses.
    design : (m, n, k) full-rank designs, or (n, k) shared by every measure.
    contrast : (k,) weights of the stratum's coefficients in the effect (zeros: the stratum
        only enters through its residual variance).
    """

    y: np.ndarray
    design: np.ndarray
    contrast: np.ndarray

    @property
    def df(self) -> int:
        return self.y.shape[1] - self.design.shape[-1]


@dataclass(frozen=True)
class ContrastModel:
    """An effect of a model, for ``m`` measures on the same subjects.

    strata : one (``ols``) or two (``random_intercept``: within, then between) strata.
    variance : ``"ols"`` or ``"random_intercept"`` (see the module docstring).
    df : (m,) degrees of freedom of the effect's t statistic (for the t -> z conversion and
        the p-values).
    """

    strata: tuple[Stratum, ...]
    variance: str
    df: np.ndarray

    def __post_init__(self):
        expected = {"ols": 1, "random_intercept": 2}
        if self.variance not in expected:
            raise ValueError(f"variance must be one of {sorted(expected)}, got {self.variance!r}")
        if len(self.strata) != expected[self.variance]:
            raise ValueError(f"a {self.variance} model has {expected[self.variance]} strata, got {len(self.strata)}")


def _variances(rss: list[np.ndarray], dfs: list[int], rule: str) -> list[np.ndarray]:
    """Residual variances of the strata from their residual sums of squares (any shape)."""
    if rule == "ols":
        return [rss[0] / dfs[0]]
    v_within, v_between = rss[0] / dfs[0], rss[1] / dfs[1]
    pooled = (rss[0] + rss[1]) / (dfs[0] + dfs[1])
    boundary = v_between < v_within  # the REML subject variance would be negative: it is 0
    return [np.where(boundary, pooled, v_within), np.where(boundary, pooled, v_between)]


@dataclass(frozen=True)
class _Fit:
    """Per stratum: designs D (m, n, k), unrestricted and restricted (ψ = 0) coefficients
    (m, k), g = (DᵀD)⁻¹c (m, k) and h = cᵀ(DᵀD)⁻¹c (m,)."""

    designs: list
    theta: list
    theta_null: list
    g: list
    h: list


def _fit(model: ContrastModel) -> _Fit:
    designs, thetas, gs, hs, rss = [], [], [], [], []
    for s in model.strata:
        y, c = np.asarray(s.y, dtype=float), np.asarray(s.contrast, dtype=float)
        d = np.broadcast_to(np.asarray(s.design, dtype=float), (y.shape[0], *np.shape(s.design)[-2:]))
        gram_inv = np.linalg.inv(np.einsum("mnk,mnl->mkl", d, d))
        theta = np.einsum("mkl,mnl,mn->mk", gram_inv, d, y)
        designs.append(d)
        thetas.append(theta)
        gs.append(gram_inv @ c)
        hs.append(gs[-1] @ c)
        rss.append(((y - np.einsum("mnk,mk->mn", d, theta)) ** 2).sum(axis=1))
    v = _variances(rss, [s.df for s in model.strata], model.variance)
    estimate = sum(th @ np.asarray(s.contrast, dtype=float) for th, s in zip(thetas, model.strata))
    # restricted least squares, the strata weighted by their variances (which cancel for one stratum):
    # theta_j - v_j g_j * estimate / sum_j v_j h_j
    lam = estimate / sum(vj * hj for vj, hj in zip(v, hs))
    null = [th - (vj * lam)[:, None] * g for th, vj, g in zip(thetas, v, gs)]
    return _Fit(designs, thetas, null, gs, hs)


def null_fit(model: ContrastModel) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fitted values, residuals), each (m, n), of every stratum under the null ``ψ = 0``:
    the Freedman–Lane reduced model, whose residuals are rearranged."""
    fit = _fit(model)
    out = []
    for s, d, theta in zip(model.strata, fit.designs, fit.theta_null):
        fitted = np.einsum("mnk,mk->mn", d, theta)
        out.append((fitted, np.asarray(s.y, dtype=float) - fitted))
    return out


def _rearranged(e: np.ndarray, kind: str, batch: np.ndarray) -> np.ndarray:
    """(m, B, n) rearranged residuals: ``batch`` holds (B, n) indices or signs."""
    if kind == "permute":
        return e[:, batch]
    return e[:, None, :] * batch[None, :, :]


def contrast_t(model: ContrastModel, kind: str, transforms: np.ndarray) -> np.ndarray:
    """t statistics (m, B) of the effect after each rearrangement of the Freedman–Lane residuals.

    kind : ``"permute"`` (``transforms``: (B, n) permutations of ``range(n)``) or ``"flip"``
        (``transforms``: (B, n) signs ±1).  Row 0 of ``transforms`` being the identity gives the
        ordinary statistics in column 0.

    For rearranged residuals ``ẽ`` of a stratum the refitted contrast is
    ``cᵀθ_null + wᵀẽ`` with ``w = D (DᵀD)⁻¹ c``, and the residual sum of squares
    ``‖ẽ‖² − ‖Qᵀẽ‖²`` (``Q`` an orthonormal basis of ``D``; ``‖ẽ‖ = ‖e‖``).
    """
    fit = _fit(model)
    strata = []
    for s, d, theta, g in zip(model.strata, fit.designs, fit.theta_null, fit.g):
        e = np.asarray(s.y, dtype=float) - np.einsum("mnk,mk->mn", d, theta)
        strata.append((e, (e ** 2).sum(axis=1), theta @ np.asarray(s.contrast, dtype=float),
                       np.einsum("mnk,mk->mn", d, g), np.linalg.qr(d)[0]))
    dfs = [s.df for s in model.strata]
    out = []
    for start in range(0, len(transforms), BATCH):
        batch = transforms[start:start + BATCH]
        estimate, rss = 0.0, []
        for e, ee, base, w, q in strata:
            moved = _rearranged(e, kind, batch)
            estimate = estimate + base[:, None] + np.einsum("mbn,mn->mb", moved, w)
            projected = np.einsum("mbn,mnk->mbk", moved, q)
            rss.append(np.maximum(ee[:, None] - (projected ** 2).sum(axis=2), 0.0))
        v = _variances(rss, dfs, model.variance)
        variance = sum(vj * hj[:, None] for vj, hj in zip(v, fit.h))
        with np.errstate(divide="ignore", invalid="ignore"):
            out.append(estimate / np.sqrt(variance))
    return np.concatenate(out, axis=1)


def rearrangements(kind: str, n_subjects: int, n: int, seed: int) -> np.ndarray:
    """(n + 1, n_subjects) rearrangements, the identity first, then ``n`` random ones.

    kind : ``"permute"`` (permutations of ``range(n_subjects)``) or ``"flip"`` (signs ±1).
    Random draws (with replacement over the set of rearrangements), seeded.
    """
    rng = np.random.default_rng(seed)
    if kind == "permute":
        identity = np.arange(n_subjects)
        draws = rng.permuted(np.tile(identity, (n, 1)), axis=1)
    elif kind == "flip":
        identity = np.ones(n_subjects)
        draws = rng.choice([-1.0, 1.0], size=(n, n_subjects))
    else:
        raise ValueError(f"kind must be 'permute' or 'flip', got {kind!r}")
    return np.vstack([identity[None], draws])


def induced(kind: str, transforms: np.ndarray, subset: np.ndarray) -> np.ndarray:
    """The rearrangements of the subjects ``subset`` (sorted indices) induced by ``transforms``.

    Permutations: the ranks of each permutation's values on the subset (a uniform permutation
    of the subset when the full one is uniform; the identity stays the identity); signs: the
    subset's signs.
    """
    restricted = transforms[:, subset]
    if kind == "flip":
        return restricted
    return np.argsort(np.argsort(restricted, axis=1, kind="stable"), axis=1, kind="stable")


def t_to_z(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    """Signed z with the same two-sided p-value as ``t`` on ``df`` degrees of freedom (broadcast).

    Makes the maximum over measures fair when their degrees of freedom differ (missing data),
    as Winkler et al. (2014) convert statistics before the max-statistic test.
    """
    t = np.asarray(t, dtype=float)
    df = np.broadcast_to(np.asarray(df, dtype=float), t.shape)
    z = stats.norm.isf(stats.t.sf(np.abs(t), df))
    return np.sign(t) * z


def max_statistic_p(observed: np.ndarray, null_max: np.ndarray) -> np.ndarray:
    """Family-wise corrected p-values: ``(1 + #{null max >= |observed|}) / (1 + B)``.

    observed : (m,) statistics (|z|); null_max : (B,) maximum |z| over the family's measures
    under each random rearrangement (the identity excluded).
    """
    observed = np.abs(np.asarray(observed, dtype=float))
    null_max = np.sort(np.asarray(null_max, dtype=float))
    tolerance = 1e-10 * np.maximum(1.0, observed)
    exceed = len(null_max) - np.searchsorted(null_max, observed - tolerance, side="left")
    return (1.0 + exceed) / (1.0 + len(null_max))


def family_max(z_blocks: Sequence[np.ndarray]) -> np.ndarray:
    """(B,) maximum |z| over every measure of the family, from (m_i, B) blocks."""
    stacked = np.vstack([np.abs(z) for z in z_blocks if len(z)])
    return np.nan_to_num(stacked, nan=0.0).max(axis=0)
