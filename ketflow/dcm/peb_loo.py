"""Leave-one-out prediction of a between-subject variable from DCM posteriors (PEB).

Friston et al. (2016, NeuroImage 128:413, §"Cross validation"); SPM12's ``spm_dcm_loo`` and
``spm_dcm_ppd``. For each subject i, a PEB model of the other subjects is fitted with their
rows of the design (not re-centred). The left-out subject's value x of the predicted column is
then estimated from its own DCM posterior:

* ``method="spm"`` (SPM's scheme, the default): the subject's design row b is treated as the
  unknown parameters of a one-subject PEB whose design maps b onto the DCM parameters,
  θ_i = Ep_trainᵀ b + ε, ε ~ N(0, Ce_train) (``M.W = PEB.Ep``, ``M.pC = PEB.Ce``; with one
  subject SPM estimates no between-subject precision, Ce_train is used as it is), with the
  prior b ~ N(x_i with the predicted entry set to 0, diag(v + 1)), v = 4·var(training column) in
  that entry and 0 elsewhere. The inversion is repeated four times, each time centring the
  prior of the predicted entry on its current estimate and tightening the others' prior
  variance to exp(−j) (j = 1, 2, 3); the posterior of the predicted entry after the fourth is
  the prediction. For a discrete column (at most 8 distinct values), the probability of each
  value follows by BMR of that posterior onto a point mass at the value (``spm_log_evidence``).
  Reproduces SPM's qE, qC, probabilities and statistics to rounding error on
  ``tests/data/spm/spm_peb``.
* ``method="exact"``: the training PEB of the ``"exact"`` scheme; the left-out subject's
  ΔF(x) from BMR is exactly quadratic in x, so with the other design entries known and x ~
  N(training mean, training variance) the predictive posterior of x is Gaussian (precision
  bᵀ(Π − Π sC Π)b + 1/v0, mean from the gradient bᵀΠ(sE − rE), b the column's effects).

Both report the out-of-sample correlation of the predicted means with the observed values and
its one-sided test (the t-test of the slope of the predictions on the observed values, as SPM
displays it, which equals the test of Pearson's r).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats
from scipy.special import softmax

from ketflow.dcm.bmr import SPM_TOL_SEARCH, bayesian_model_reduction, spm_inv, spm_reduced_evidence
from ketflow.dcm.peb import _check_inputs, _empirical_prior, fit_peb, peb_variational

__all__ = ["PEBLeaveOneOut", "peb_leave_one_out", "MAX_LEVELS"]

#: A predicted column with at most this many distinct values is treated as discrete (probabilities
#: of each value are reported).
MAX_LEVELS = 8


@dataclass(frozen=True)
class PEBLeaveOneOut:
    """Leave-one-out prediction of a between-subject variable.

    predicted_mean, predicted_sd, observed : (N,); r : out-of-sample Pearson correlation of
    predicted means with observed values; T, df : t statistic and degrees of freedom of the slope
    of the predictions on the observed values; p : its one-sided p-value (r > 0).
    levels : (L,) distinct values of a discrete column (else empty); level_probabilities : (N, L)
    posterior probability of each.
    """

    predicted_mean: np.ndarray
    predicted_sd: np.ndarray
    observed: np.ndarray
    r: float
    p: float
    T: float = float("nan")
    df: int = 0
    levels: np.ndarray = field(default_factory=lambda: np.zeros(0))
    level_probabilities: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))


def peb_leave_one_out(qE, qC, pE, pC, X, column: int = 1, *, method: str = "spm", first_level_F=None,
                      n_refinements: int = 4, **peb_kwargs) -> PEBLeaveOneOut:
    """Predict each subject's X[:, column] from a PEB model of the other subjects.

    qE (N, P), qC (N, P, P), pE, pC (shared or per subject), X (N, K) as for
    :func:`ketflow.dcm.peb.fit_peb`; column : the design column predicted (not the constant);
    method : "spm" or "exact" (module docstring); first_level_F : (N,) free energies (only
    shift F); n_refinements : inversions of the one-subject model ("spm"; SPM uses 4);
    peb_kwargs : passed to the training PEB (``method`` is set by this function).
    """
    qE_, qC_, pEs, pCs, _, _, X = _check_inputs(qE, qC, pE, pC, X)
    if not 1 <= column < X.shape[1]:
        raise ValueError("column must index a between-subject variable (not the constant)")
    if method not in ("spm", "exact"):
        raise ValueError(f"method must be 'spm' or 'exact', not {method!r}")
    n_sub = qE_.shape[0]
    F1 = np.zeros(n_sub) if first_level_F is None else np.asarray(first_level_F, dtype=float)
    observed = X[:, column].copy()
    levels = np.unique(observed)
    discrete = levels.size <= MAX_LEVELS
    means, sds = np.zeros(n_sub), np.zeros(n_sub)
    probs = np.zeros((n_sub, levels.size if discrete else 0))
    per_subject = np.ndim(pE) == 2 or np.ndim(pC) == 3
    for i in range(n_sub):
        train = np.arange(n_sub) != i
        priors = (pEs[train], pCs[train]) if per_subject else (pEs[0], pCs[0])
        if method == "spm":
            peb = fit_peb(qE_[train], qC_[train], *priors, X[train], method="spm", first_level_F=F1[train],
                          **peb_kwargs)
            means[i], sds[i], post = _predict_spm(peb, qE_[i], qC_[i], pEs[i], pCs[i], F1[i], X, train, i,
                                                  column, n_refinements)
            if discrete:
                probs[i] = _level_probabilities(post, column, levels)
        else:
            means[i], sds[i] = _predict_exact(qE_, qC_, pEs, pCs, X, train, i, column, per_subject, peb_kwargs)
    r = float(np.corrcoef(means, observed)[0, 1])
    df = n_sub - 2
    T = r * np.sqrt(df / (1 - r ** 2)) if abs(r) < 1 else np.sign(r) * np.inf
    return PEBLeaveOneOut(predicted_mean=means, predicted_sd=sds, observed=observed, r=r,
                          p=float(stats.t.sf(T, df)), T=float(T), df=df,
                          levels=levels if discrete else np.zeros(0), level_probabilities=probs)


def _predict_spm(peb, qE, qC, pE, pC, F1, X, train, i, column, n_refinements):
    """SPM's ``spm_dcm_ppd`` for one left-out subject: (mean, sd, final (bE, bC, b, Cb))."""
    n_cov = X.shape[1]
    spread = np.zeros(n_cov)
    spread[column] = 4 * np.var(X[train, column], ddof=1)
    bE = X[i].copy()
    bE[column] = 0.0
    bC = np.diag(spread + 1.0)
    Q0 = spm_inv(peb.between_covariance)
    for j in range(1, n_refinements + 1):
        # SPM's one-subject PEB: no random-effect precision to estimate, the training PEB's Ce is used
        fit = peb_variational(qE[None], qC[None], pE[None], pC[None], np.ones((1, 1)), W=peb.Ep.T, bE=bE,
                              bC=bC, components=[], base_precision=Q0, base_weight=1.0, hE=np.zeros(0),
                              hC=np.zeros((0, 0)), first_level_F=[F1])
        used = (bE.copy(), bC.copy())
        bE[column] = fit["b"][column]
        bC = np.diag(spread + np.exp(-j))
    b, Cb = fit["b"], fit["Cb"]
    return b[column], np.sqrt(Cb[column, column]), (*used, b, Cb)


def _level_probabilities(post, column, levels):
    """Posterior probability of each value of the predicted entry (BMR onto a point mass)."""
    bE, bC, b, Cb = post
    F = []
    for level in levels:
        rE, rC = bE.copy(), bC.copy()
        rE[column] = level
        rC[column, :] = 0.0
        rC[:, column] = 0.0
        F.append(spm_reduced_evidence(b, Cb, bE, bC, rE, rC, tol=SPM_TOL_SEARCH)[0])
    return softmax(np.array(F))


def _predict_exact(qE, qC, pEs, pCs, X, train, i, column, per_subject, peb_kwargs):
    Xt = X[train].copy()
    centre = Xt[:, column].mean()
    prior_var = Xt[:, column].var(ddof=1)
    Xt[:, column] -= centre
    priors = (pEs[train], pCs[train]) if per_subject else (pEs[0], pCs[0])
    peb = fit_peb(qE[train], qC[train], *priors, Xt, method="exact", **peb_kwargs)
    prec = np.linalg.inv(peb.between_covariance)
    x_known = X[i].copy()
    x_known[column] = 0.0
    b = peb.Ep[column]
    c, rC, prec_i = _empirical_prior(pEs[i], pCs[i], x_known @ peb.Ep, peb.between_covariance, prec)
    _, sE, sC = bayesian_model_reduction(qE[i], qC[i], pEs[i], pCs[i], c, rC)
    grad = b @ prec_i @ (sE - c)
    curv = b @ (prec_i - prec_i @ sC @ prec_i) @ b
    post_prec = curv + 1.0 / prior_var
    return centre + grad / post_prec, np.sqrt(1.0 / post_prec)
