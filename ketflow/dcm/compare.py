"""Bayesian model comparison of DCMs.

* Fixed-effects Bayesian model selection (Penny et al. 2004, NeuroImage
  22:1157): with equal prior model probabilities, the posterior probability
  of model k is ``softmax_k(Σ_s F_sk)``, the free energies summed over
  subjects (the group log evidence under the assumption that all subjects use
  the same model).
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
from scipy.special import logsumexp

from .bmr import bayesian_model_reduction
from .fit import DCMResult, _posterior_probability
from .priors import constrain_to_modes, dcm_fmri_priors

__all__ = [
    "ReducedModel",
    "compare_models",
    "model_masks",
    "model_posterior",
    "reduce_model",
    "score_model_space",
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
