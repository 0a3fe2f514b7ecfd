"""The trial's effects on one measure: ANCOVA on the change and a linear mixed model.

For a measure seen before (``pre``) and after (``post``) treatment in two arms (``active`` = 1
for the first arm of ``clinical.arms``, 0 for the other) with subject covariates ``Z``:

**ANCOVA** (analysis of covariance of the follow-up adjusted for baseline; Vickers & Altman
2001, BMJ 323:1123), ``post ~ pre + arm + covariates`` over the subjects with both sessions,
fitted with statsmodels ``OLS`` as ``post − pre ~ 1 + arm + (pre − mean pre) + (Z − mean Z)``
(the same model: only the intercept and the baseline slope, by 1, change):

* arm × session: the ``arm`` coefficient, the adjusted difference in change between arms;
* within-arm change: ``intercept + arm`` (active) and ``intercept`` (control) of the change
  score model ``post − pre ~ 1 + arm + (Z − mean Z)`` on the same subjects, each arm's mean
  change.  Not the baseline-adjusted model's "least-squares mean change at the mean
  baseline": that tests the change expected at the *sample's* mean baseline, which under no
  change is not zero when the baseline carries measurement error (regression to the mean);
  on simulated null studies with unreliable measures it rejected at 10% instead of 5%;
* baseline difference: the ``arm`` coefficient of ``pre ~ 1 + arm + covariates`` on the same
  subjects.

**Linear mixed model** (Laird & Ware 1982, Biometrics 38:963), ``value ~ session * arm +
covariates + (1 | subject)`` by REML with statsmodels ``MixedLM`` over every observation
(a subject seen at one session only contributes that session), session 0 = baseline, 1 =
follow-up:

* arm × session: ``session:arm``; within-arm change: ``session + session:arm`` (active) and
  ``session`` (control); baseline difference: ``arm``.

statsmodels' MixedLM gives Wald z tests; with trial-sized samples ketflow uses t tests with
the between-within degrees of freedom (Schluchter & Elashoff 1990, J Stat Comput Simul 37:69;
SAS ``DDFM=BETWITHIN``): ``n_observations − n_subjects − 2`` for the within-subject effects
(arm × session, within-arm change; with complete data ``n − 2``, exact) and ``n_subjects − 2 −
n_covariates`` for the baseline difference.  ANCOVA uses its residual degrees of freedom.
Confidence intervals are ``estimate ± t_{0.975, df} · SE``.

**Effect size** (every effect, both models): the estimate divided by the baseline standard
deviation pooled within arms (over the model's subjects with a baseline value), times Morris's
small-sample factor ``1 − 3 / (4 (n − 2) − 1)``: Morris (2008, Organ Res Methods 11:364)
``d_ppc2`` for the arm × session effect, on the same scale for the others.  Its interval is the
estimate's interval scaled the same way (the SD's own uncertainty is not propagated).

:func:`ancova_contrasts` and :func:`lmm_contrasts` express the same effects as closed-form
least squares (:mod:`ketflow.group.freedman_lane`) for the permutation tests; on the subjects
with both sessions they reproduce the statsmodels fits (for the LMM: exact when REML's
subject variance is positive, and the closed form takes REML's boundary solution when it is
not).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import statsmodels.api as sm
from statsmodels.regression.mixed_linear_model import MixedLMParams
from scipy import stats

from .freedman_lane import ContrastModel, Stratum

__all__ = ["Effect", "EFFECTS", "Estimate", "fit_ancova", "fit_lmm", "ancova_contrasts", "lmm_contrasts",
           "pooled_baseline_sd", "morris_factor"]


@dataclass(frozen=True)
class Effect:
    """One effect of the trial: ``name`` (the output's ``effect`` column), the arm it concerns
    (``"active"``/``"control"`` for a within-arm change, None for a between-arm effect) and the
    rearrangement of its permutation test (``"permute"`` subjects or ``"flip"`` signs)."""

    name: str
    arm: str | None
    kind: str

    @property
    def key(self) -> str:
        return self.name if self.arm is None else f"{self.name}_{self.arm}"


EFFECTS = (
    Effect("arm_by_session", None, "permute"),
    Effect("within_arm_change", "active", "flip"),
    Effect("within_arm_change", "control", "flip"),
    Effect("baseline_difference", None, "permute"),
)

# Contrast weights on the ANCOVA's models (zeros appended): the baseline-adjusted change model
# [1, arm, pre, covariates...], the change score model and the baseline model [1, arm, covariates...].
_ANCOVA_ADJUSTED = {"arm_by_session": (0.0, 1.0)}
_CHANGE_SCORE = {"within_arm_change_active": (1.0, 1.0), "within_arm_change_control": (1.0, 0.0)}
_BASELINE = {"baseline_difference": (0.0, 1.0)}
# Contrast weights on the LMM fixed effects [1, session, arm, session:arm, covariates...].
_LMM_FIXED = {"arm_by_session": (0, 0, 0, 1), "within_arm_change_active": (0, 1, 0, 1),
              "within_arm_change_control": (0, 1, 0, 0), "baseline_difference": (0, 0, 1, 0)}
# The same effects on the LMM's within (difference) and between (sum) strata, see lmm_contrasts.
_LMM_WITHIN = {"arm_by_session": (0.0, 1.0), "within_arm_change_active": (1.0, 1.0),
               "within_arm_change_control": (1.0, 0.0), "baseline_difference": (0.0, -0.5)}
_LMM_BETWEEN = {"baseline_difference": (0.0, 0.5)}


@dataclass(frozen=True)
class Estimate:
    """A contrast's estimate, standard error, t, degrees of freedom, two-sided p and 95% CI."""

    estimate: float
    se: float
    t: float
    df: float
    p: float
    ci_low: float
    ci_high: float

    @classmethod
    def from_t(cls, estimate: float, se: float, df: float, level: float = 0.95) -> Estimate:
        t = estimate / se if se > 0 else np.nan
        half = stats.t.ppf(0.5 + level / 2, df) * se
        return cls(float(estimate), float(se), float(t), float(df), float(2 * stats.t.sf(abs(t), df)),
                   float(estimate - half), float(estimate + half))


def _centred(values: np.ndarray) -> np.ndarray:
    return values - values.mean(axis=0)


def _weights(table: dict, key: str, size: int) -> np.ndarray:
    base = np.asarray(table.get(key, ()), dtype=float)
    return np.concatenate([base, np.zeros(size - len(base))]) if len(base) else np.zeros(size)


def fit_ancova(pre: np.ndarray, post: np.ndarray, active: np.ndarray, covariates: np.ndarray) -> dict[str, Estimate]:
    """ANCOVA estimates of every effect (keys :attr:`Effect.key`) for subjects with both sessions.

    pre, post, active : (n,); covariates : (n, q).  Raises ``numpy.linalg.LinAlgError`` if a
    design is singular.
    """
    pre, post, active = (np.asarray(a, dtype=float) for a in (pre, post, active))
    z = _centred(np.asarray(covariates, dtype=float).reshape(len(pre), -1))
    adjusted_design = np.column_stack([np.ones_like(pre), active, pre - pre.mean(), z])
    arm_design = np.column_stack([np.ones_like(pre), active, z])
    out = {}
    models = ((post - pre, adjusted_design, _ANCOVA_ADJUSTED), (post - pre, arm_design, _CHANGE_SCORE),
              (pre, arm_design, _BASELINE))
    for y, design, contrasts in models:
        fit = _ols(y, design)
        out |= {key: _ols_contrast(fit, _weights(contrasts, key, design.shape[1])) for key in contrasts}
    return out


def _ols(y: np.ndarray, design: np.ndarray):
    _require_full_rank(design)
    return sm.OLS(y, design).fit()


def _ols_contrast(fit, weights: np.ndarray) -> Estimate:
    test = fit.t_test(weights)
    return Estimate.from_t(float(np.squeeze(test.effect)), float(np.squeeze(test.sd)), float(fit.df_resid))


def _require_full_rank(design: np.ndarray) -> None:
    if np.linalg.matrix_rank(design) < design.shape[1]:
        raise np.linalg.LinAlgError("the design matrix is rank-deficient")


@dataclass(frozen=True)
class LMMFit:
    """statsmodels MixedLM results of one measure: estimates by effect key, whether the optimiser
    converged, the REML subject-intercept variance and the residual variance."""

    estimates: dict
    converged: bool
    subject_variance: float
    residual_variance: float


def fit_lmm(subject: np.ndarray, session: np.ndarray, value: np.ndarray, active: np.ndarray,
            covariates: np.ndarray) -> LMMFit:
    """REML random-intercept model of long-format observations (one row per subject and session).

    subject : (n_obs,) labels; session : (n_obs,) 0 baseline / 1 follow-up; value, active :
    (n_obs,); covariates : (n_obs, q) (constant within subject).
    """
    session, value, active = (np.asarray(a, dtype=float) for a in (session, value, active))
    z = np.asarray(covariates, dtype=float).reshape(len(value), -1)
    exog = np.column_stack([np.ones_like(value), session, active, session * active, z])
    _require_full_rank(exog)
    fit, converged = _reml_fit(sm.MixedLM(value, exog, groups=np.asarray(subject)))
    k = exog.shape[1]
    beta = np.asarray(fit.fe_params, dtype=float)
    cov = np.asarray(fit.cov_params(), dtype=float)[:k, :k]
    n_subjects = len(np.unique(subject))
    within_df = len(value) - n_subjects - 2
    between_df = n_subjects - 2 - z.shape[1]
    estimates = {}
    for key in _LMM_FIXED:
        weights = _weights(_LMM_FIXED, key, k)
        df = between_df if key == "baseline_difference" else within_df
        estimates[key] = Estimate.from_t(float(weights @ beta), float(np.sqrt(weights @ cov @ weights)), df)
    return LMMFit(estimates, converged, float(np.asarray(fit.cov_re)[0, 0] * fit.scale), float(fit.scale))


#: Optimisers tried in turn by :func:`_reml_fit`.  statsmodels' default (L-BFGS, then BFGS on
#: failure) can stop short of, or fail on, a REML optimum on the boundary (subject variance 0,
#: common for noisy connectivity measures): L-BFGS was seen to report convergence at a subject
#: variance of 0.26 x the residual's while the boundary had a 1.6 nats higher restricted
#: likelihood.  Powell and Nelder-Mead reach the boundary.
REML_OPTIMISERS = ("lbfgs", "powell", "nm")
#: Subject-intercept variance (relative to the residual variance) standing for the boundary 0,
#: where statsmodels' likelihood is not evaluated.
_BOUNDARY = 1e-8


def _reml_fit(model: sm.MixedLM):
    """(fit with the highest REML log-likelihood, whether its optimiser converged).

    Accepts the first optimiser's fit if it converged and no fit on the boundary (subject
    variance 0) has a higher restricted likelihood; otherwise tries the others and keeps the
    best converged fit (or, if none converged, the best fit).  Raises the last error if every
    optimiser failed.
    """
    fits, error, boundary = [], None, None
    for method in REML_OPTIMISERS:
        with warnings.catch_warnings():  # convergence is judged below, boundary fits warn by design
            warnings.simplefilter("ignore")
            try:
                fit = model.fit(reml=True, method=method)
            except (np.linalg.LinAlgError, ValueError) as err:
                error = err
                continue
        fits.append(fit)
        if boundary is None:  # the restricted likelihood on the boundary (evaluable once a fit set REML up)
            boundary = model.loglike(MixedLMParams.from_components(cov_re=np.array([[_BOUNDARY]])),
                                     profile_fe=True)
        if fit.converged and fit.llf >= boundary - 1e-8:
            return fit, True
    if not fits:
        raise error
    converged = [f for f in fits if f.converged]
    best = max(converged or fits, key=lambda f: f.llf)
    return best, bool(best.converged)


def pooled_baseline_sd(pre: np.ndarray, active: np.ndarray) -> float:
    """Baseline SD pooled within the two arms (NaN baselines ignored)."""
    pre, active = np.asarray(pre, dtype=float), np.asarray(active, dtype=float)
    keep = np.isfinite(pre)
    pre, active = pre[keep], active[keep]
    ss = sum(((pre[active == a] - pre[active == a].mean()) ** 2).sum() for a in (0.0, 1.0) if (active == a).any())
    return float(np.sqrt(ss / (len(pre) - 2))) if len(pre) > 2 else np.nan


def morris_factor(n: int) -> float:
    """Morris's (2008) small-sample bias correction ``1 − 3 / (4 (n − 2) − 1)`` for ``n`` subjects."""
    return 1.0 - 3.0 / (4.0 * (n - 2) - 1.0)


def _shared(values: np.ndarray, m: int) -> np.ndarray:
    return np.broadcast_to(values, (m, *values.shape))


def ancova_contrasts(pre: np.ndarray, post: np.ndarray, active: np.ndarray,
                     covariates: np.ndarray) -> dict[str, ContrastModel]:
    """Closed-form ANCOVA effects (keys :attr:`Effect.key`) for ``m`` measures on the same subjects.

    pre, post : (m, n) with no missing value; active : (n,); covariates : (n, q).
    """
    pre, post = np.atleast_2d(pre).astype(float), np.atleast_2d(post).astype(float)
    m, n = pre.shape
    z = _centred(np.asarray(covariates, dtype=float).reshape(n, -1))
    ones, arm = np.ones(n), np.asarray(active, dtype=float)
    adjusted_design = np.concatenate([_shared(np.column_stack([ones, arm]), m),
                                      (pre - pre.mean(axis=1, keepdims=True))[:, :, None], _shared(z, m)], axis=2)
    arm_design = np.column_stack([ones, arm, z])

    def model(y, design, contrasts, key):
        k = design.shape[-1]
        return ContrastModel((Stratum(y, design, _weights(contrasts, key, k)),), "ols", np.full(m, n - k, dtype=float))

    out = {"arm_by_session": model(post - pre, adjusted_design, _ANCOVA_ADJUSTED, "arm_by_session")}
    out |= {key: model(post - pre, arm_design, _CHANGE_SCORE, key) for key in _CHANGE_SCORE}
    out["baseline_difference"] = model(pre, arm_design, _BASELINE, "baseline_difference")
    return out


def lmm_contrasts(pre: np.ndarray, post: np.ndarray, active: np.ndarray,
                  covariates: np.ndarray) -> dict[str, ContrastModel]:
    """Closed-form REML random-intercept effects for ``m`` measures on subjects with both sessions.

    With two sessions per subject the model splits into the within-subject difference
    ``post − pre ~ 1 + arm`` (coefficients: session, session:arm) and the between-subject sum
    ``pre + post ~ 1 + arm + covariates`` (2·intercept + session, 2·arm + session:arm,
    2·covariates); so the baseline difference ``arm`` is half the sum's arm coefficient minus
    half the difference's.  pre, post : (m, n); active : (n,); covariates : (n, q).
    """
    pre, post = np.atleast_2d(pre).astype(float), np.atleast_2d(post).astype(float)
    m, n = pre.shape
    z = np.asarray(covariates, dtype=float).reshape(n, -1)
    arm = np.asarray(active, dtype=float)
    within_design = np.column_stack([np.ones(n), arm])
    between_design = np.column_stack([np.ones(n), arm, z])
    out = {}
    for key, weights in _LMM_WITHIN.items():
        within = Stratum(post - pre, within_design, np.asarray(weights))
        between = Stratum(post + pre, between_design, _weights(_LMM_BETWEEN, key, between_design.shape[1]))
        df = n - between_design.shape[1] if key == "baseline_difference" else n - 2
        out[key] = ContrastModel((within, between), "random_intercept", np.full(m, df, dtype=float))
    return out
