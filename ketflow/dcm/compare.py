"""Bayesian model comparison of DCMs.

* Fixed-effects Bayesian model selection (Penny et al. 2004, NeuroImage
  22:1157): with equal prior model probabilities, the posterior probability
  of model k is ``softmax_k(Σ_s F_sk)``, the free energies summed over
  subjects (the group log evidence under the assumption that all subjects use
  the same model).
* Random-effects Bayesian model selection (Stephan et al. 2009, NeuroImage
  46:1004): each subject's model is drawn from a multinomial with frequencies
  r ~ Dir(α0 = 1); variational Bayes gives the posterior Dir(α), the expected
  frequencies α/Σα and the exceedance probabilities P(r_k > r_j for all j ≠ k).
  Rigoux et al. (2014, NeuroImage 84:971) add the Bayesian omnibus risk (BOR, the
  posterior probability that all frequencies are equal, against the RFX model) and
  the protected exceedance probabilities ``pxp = (1 − BOR) xp + BOR / K``.
  Exceedance probabilities are computed by one-dimensional quadrature over the gamma
  representation of the Dirichlet (deterministic, exact to ~1e-8) rather than by
  sampling.
* Bayesian model reduction (Friston & Penny 2011, NeuroImage 56:2089;
  Friston et al. 2016, NeuroImage 128:413): nested models, obtained by
  switching off connections of a fitted full model, are scored from its
  posterior without refitting (:mod:`ketflow.dcm.bmr`). The reduced model
  has SPM's priors for its own masks (so a switched-off connection has prior
  mean 0 and variance 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import integrate, stats
from scipy.special import digamma, gammaln, logsumexp

from .bmr import bayesian_model_reduction
from .fit import DCMResult, _posterior_probability
from .priors import constrain_to_modes, dcm_fmri_priors

__all__ = [
    "ReducedModel",
    "compare_models",
    "group_model_comparison",
    "model_masks",
    "model_posterior",
    "random_effects_bms",
    "reduce_model",
    "score_model_space",
    "RandomEffectsBMS",
]


def model_posterior(F) -> np.ndarray:
    """Posterior model probabilities from free energies (uniform model prior).

    F : array (n_models,) or (n_subjects, n_models); with several subjects
    the free energies are summed (fixed effects). Returns (n_models,).
    """
    F = np.asarray(F, dtype=float)
    total = F.sum(axis=0) if F.ndim == 2 else F
    return np.exp(total - logsumexp(total))


def compare_models(models, names=None):
    """Fixed-effects comparison of a list of models.

    Parameters
    ----------
    models : sequence
        Per model a :class:`DCMResult` or a free energy, or per model a
        sequence over subjects of these (fixed effects sums over subjects).
        A 2-D array (n_subjects, n_models) of free energies is also accepted.
    names : list of str, optional

    Returns
    -------
    pandas.DataFrame with columns model, F (summed over subjects), dF (F minus
    the best model's F) and posterior_probability, in input order.
    """
    import pandas as pd

    def as_F(item):
        return item.F if isinstance(item, DCMResult) else float(item)

    if isinstance(models, np.ndarray) and models.ndim == 2:
        F = models.sum(axis=0)
    else:
        F = np.array(
            [sum(as_F(s) for s in m) if isinstance(m, (list, tuple, np.ndarray)) else as_F(m) for m in models]
        )
    names = list(names) if names is not None else [f"model{k + 1}" for k in range(F.size)]
    return pd.DataFrame(
        {"model": names, "F": F, "dF": F - F.max(), "posterior_probability": model_posterior(F)}
    )


def model_masks(result: DCMResult) -> dict:
    """Masks a (n, n), b (m, n, n), c (n, m), d (n_d, n, n) or None of a fitted model."""
    return {k: None if v is None else np.array(v, dtype=float) for k, v in result.masks.items()}


@dataclass
class ReducedModel:
    """A nested model scored by Bayesian model reduction.

    dF : log evidence relative to the full model (nats); F : full F + dF.
    Ep_vector, Vp_vector, Pp_vector (P,), Cp (P, P): reduced posterior.
    prior_mean, prior_var (P,): priors of the reduced model.
    """

    dF: float
    F: float
    Ep_vector: np.ndarray
    Vp_vector: np.ndarray
    Pp_vector: np.ndarray
    Cp: np.ndarray
    prior_mean: np.ndarray
    prior_var: np.ndarray


def reduce_model(result: DCMResult, a=None, b=None, c=None, d=None) -> ReducedModel:
    """Score a nested model of a fitted DCM without refitting.

    Masks not given are those of the full model. The nested model may only
    switch connections off (self-connections and hemodynamics stay free). If
    the full model's A prior was constrained to principal modes, the same
    constraint is applied to the reduced prior.
    """
    full = model_masks(result)
    a = full["a"] if a is None else np.asarray(a, dtype=float)
    b = full["b"] if b is None else np.asarray(b, dtype=float)
    c = full["c"] if c is None else np.asarray(c, dtype=float)
    d = full["d"] if d is None else np.asarray(d, dtype=float)
    rE, rV, layout = dcm_fmri_priors(a, b, c, d)
    if layout != result.layout:
        raise ValueError("reduced masks do not match the full model's dimensions")
    full_on = dcm_fmri_priors(**model_masks(result))[1] > 0
    if np.any((rV > 0) & ~full_on):
        raise ValueError("the reduced model switches on a parameter that the full model fixes")
    rC = np.diag(rV)
    if result.mode_projection is not None:
        rC = constrain_to_modes(rC, result.mode_projection, layout)
    dF, sE, sC = bayesian_model_reduction(result.Ep_vector, result.Cp, result.prior_mean, result.prior_cov, rE, rC)
    sV = np.clip(np.diag(sC), 0, None)
    return ReducedModel(
        dF=dF,
        F=result.F + dF,
        Ep_vector=sE,
        Vp_vector=sV,
        Pp_vector=_posterior_probability(sE, sV, rE),
        Cp=sC,
        prior_mean=rE,
        prior_var=np.diag(rC).copy(),
    )


def score_model_space(result: DCMResult, models: dict):
    """Score a space of nested models of one fitted full model by BMR.

    Parameters
    ----------
    result : DCMResult
        The fitted full model.
    models : dict
        name -> dict of masks (any of a, b, c, d; missing masks are the full model's).

    Returns
    -------
    pandas.DataFrame with columns model, F, dF (relative to the full model) and
    posterior_probability, the full model first (named "full").
    """
    import pandas as pd

    names = ["full"] + list(models)
    dF = [0.0] + [reduce_model(result, **masks).dF for masks in models.values()]
    F = result.F + np.array(dF)
    return pd.DataFrame({"model": names, "F": F, "dF": dF, "posterior_probability": model_posterior(F)})


@dataclass
class RandomEffectsBMS:
    """Random-effects Bayesian model selection over subjects (Stephan et al. 2009; Rigoux et al. 2014).

    alpha : (K,) posterior Dirichlet parameters; expected_frequency : (K,) α/Σα;
    exceedance_probability : (K,) xp; protected_exceedance_probability : (K,) pxp;
    bor : Bayesian omnibus risk; F1, F0 : log evidence (lower bound) of the RFX model and
    of the null model with equal frequencies; assignment : (N, K) posterior probability
    of each subject's model; n_iterations : VB iterations.
    """

    alpha: np.ndarray
    expected_frequency: np.ndarray
    exceedance_probability: np.ndarray
    protected_exceedance_probability: np.ndarray
    bor: float
    F1: float
    F0: float
    assignment: np.ndarray
    n_iterations: int


def _exceedance(alpha: np.ndarray) -> np.ndarray:
    """P(r_k = max_j r_j) for r ~ Dir(alpha): with r = g / Σg, g_j ~ Gamma(alpha_j, 1),
    xp_k = ∫ f_k(x) Π_{j≠k} F_j(x) dx (one-dimensional quadrature)."""
    K = alpha.size
    if K == 1:
        return np.ones(1)
    upper = stats.gamma.ppf(1 - 1e-12, alpha.max()) + 10.0
    xp = np.empty(K)
    for k in range(K):
        others = np.delete(alpha, k)

        def integrand(x, k=k, others=others):
            return np.exp(stats.gamma.logpdf(x, alpha[k]) + stats.gamma.logcdf(x, others).sum())

        breaks = stats.gamma.ppf([0.01, 0.5, 0.99], alpha[k])
        xp[k] = integrate.quad(integrand, 0.0, upper, points=breaks, limit=200, epsabs=1e-12, epsrel=1e-10)[0]
    return xp / xp.sum()


def random_effects_bms(F, alpha0: float = 1.0, tol: float = 1e-8, max_iter: int = 1000) -> RandomEffectsBMS:
    """Random-effects BMS from log evidences.

    Parameters
    ----------
    F : array (N, K)
        Log evidence (free energy, nats) of each of K models for each of N subjects.
    alpha0 : float
        Dirichlet prior (1: uniform over model frequencies).
    tol, max_iter : convergence of the variational updates (change in α).

    Returns
    -------
    RandomEffectsBMS
    """
    F = np.atleast_2d(np.asarray(F, dtype=float))
    if F.ndim != 2 or not np.all(np.isfinite(F)):
        raise ValueError("F must be a finite (subjects, models) array")
    n, K = F.shape
    a0 = np.full(K, float(alpha0))
    alpha = a0.copy()
    for it in range(1, max_iter + 1):
        log_u = F + digamma(alpha) - digamma(alpha.sum())
        g = np.exp(log_u - logsumexp(log_u, axis=1, keepdims=True))
        new = a0 + g.sum(axis=0)
        done = np.max(np.abs(new - alpha)) < tol
        alpha = new
        if done:
            break
    log_u = F + digamma(alpha) - digamma(alpha.sum())
    g = np.exp(log_u - logsumexp(log_u, axis=1, keepdims=True))
    elog_r = digamma(alpha) - digamma(alpha.sum())
    kl = (gammaln(alpha.sum()) - gammaln(alpha).sum() - gammaln(a0.sum()) + gammaln(a0).sum()
          + ((alpha - a0) * elog_r).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(g > 0, g * np.log(g), 0.0).sum()
    F1 = float((g * (F + elog_r)).sum() + entropy - kl)
    F0 = float(logsumexp(F - np.log(K), axis=1).sum())
    bor = float(1.0 / (1.0 + np.exp(np.clip(F1 - F0, -700, 700))))
    xp = _exceedance(alpha)
    return RandomEffectsBMS(alpha=alpha, expected_frequency=alpha / alpha.sum(), exceedance_probability=xp,
                            protected_exceedance_probability=(1 - bor) * xp + bor / K, bor=bor, F1=F1, F0=F0,
                            assignment=g, n_iterations=it)


def group_model_comparison(F, models, subjects=None):
    """Fixed- and random-effects comparison of a model space over subjects, as one table.

    F : array (N, K) log evidences; models : K names; subjects : N labels (unused in the
    table, checked for length). Returns a pandas DataFrame, one row per model: model,
    n_subjects, F_sum (group log evidence under fixed effects), dF_sum (relative to the
    best), ffx_posterior, rfx_alpha, rfx_expected_frequency, rfx_exceedance,
    rfx_protected_exceedance, rfx_bor (the same for every row), n_best (subjects whose
    own F is highest for the model).
    """
    import pandas as pd

    F = np.atleast_2d(np.asarray(F, dtype=float))
    models = list(models)
    if F.shape[1] != len(models) or (subjects is not None and len(subjects) != F.shape[0]):
        raise ValueError(f"F has shape {F.shape} for {len(models)} models")
    ffx = compare_models(F, models)
    rfx = random_effects_bms(F)
    best = np.bincount(np.argmax(F, axis=1), minlength=len(models))
    return pd.DataFrame({
        "model": models,
        "n_subjects": F.shape[0],
        "F_sum": ffx["F"].to_numpy(),
        "dF_sum": ffx["dF"].to_numpy(),
        "ffx_posterior": ffx["posterior_probability"].to_numpy(),
        "rfx_alpha": rfx.alpha,
        "rfx_expected_frequency": rfx.expected_frequency,
        "rfx_exceedance": rfx.exceedance_probability,
        "rfx_protected_exceedance": rfx.protected_exceedance_probability,
        "rfx_bor": rfx.bor,
        "n_best": best,
    })
