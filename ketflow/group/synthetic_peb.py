"""Synthetic two-session DCM posteriors with known group effects, for the longitudinal PEB.

Each subject i has a session mean m_i and a post − pre change Δ_i of its P DCM parameters:

    m_i = Σ_k X_ik β_mean,k + u_i,   Δ_i = Σ_k X_ik β_change,k + v_i,
    u_i ~ N(0, mean_scale · pC),     v_i ~ N(0, change_scale · pC),
    θ_i,pre = m_i − Δ_i / 2 + e_i,pre,   θ_i,post = m_i + Δ_i / 2 + e_i,post,   e ~ N(0, session_scale · pC),

(the model of :mod:`ketflow.dcm.peb_longitudinal`, plus optional session-to-session noise e).
Each session is seen through a Gaussian likelihood chosen so that its exact posterior under the
prior N(pE, pC) has a given covariance — drawn from ``covariance_pool``, e.g. the posterior
covariances SPM12 estimated for the simulated subjects of ``tests/data/spm/spm_peb`` — so that
the first-level posteriors are exact (linear-Gaussian) and as precise as real DCM posteriors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LongitudinalFirstLevel", "synthetic_longitudinal_posteriors"]


@dataclass(frozen=True)
class LongitudinalFirstLevel:
    """qE (N, 2, P), qC (N, 2, P, P): exact posteriors of the pre and post DCMs; theta (N, 2, P):
    the true parameters."""

    qE: np.ndarray
    qC: np.ndarray
    theta: np.ndarray


def synthetic_longitudinal_posteriors(beta_mean: np.ndarray, beta_change: np.ndarray, X: np.ndarray,
                                      pE: np.ndarray, pC: np.ndarray, covariance_pool: np.ndarray, *,
                                      mean_scale: float = 1 / 16, change_scale: float = 1 / 16,
                                      session_scale: float = 0.0, posterior_scale: float = 1.0,
                                      seed: int = 0) -> LongitudinalFirstLevel:
    """Simulate a study (module docstring).

    beta_mean, beta_change : (K, P) effects of the design columns on the session mean and on
    the change; X : (N, K) design; pE (P,), pC (P, P): the first-level prior; covariance_pool :
    (M, P, P) posterior covariances, one drawn per subject and session and multiplied by
    ``posterior_scale`` (capped so that the posterior stays inside the prior).
    """
    rng = np.random.default_rng(seed)
    n, n_par = X.shape[0], pC.shape[0]
    zeros = np.zeros(n_par)
    m = X @ beta_mean + rng.multivariate_normal(zeros, mean_scale * pC, size=n)
    d = X @ beta_change + (rng.multivariate_normal(zeros, change_scale * pC, size=n) if change_scale else 0.0)
    theta = np.stack([m - d / 2, m + d / 2], axis=1)
    if session_scale:
        theta = theta + rng.multivariate_normal(zeros, session_scale * pC, size=(n, 2))
    prior_prec = np.linalg.inv(pC)
    qE, qC = np.zeros((n, 2, n_par)), np.zeros((n, 2, n_par, n_par))
    for i in range(n):
        for s in range(2):
            post = covariance_pool[rng.integers(len(covariance_pool))] * posterior_scale
            lam = np.linalg.inv(post) - prior_prec
            w, V = np.linalg.eigh((lam + lam.T) / 2)
            lam = (V * np.clip(w, 1e-6 * w.max(), None)) @ V.T
            y = rng.multivariate_normal(theta[i, s], np.linalg.inv(lam))
            qC[i, s] = np.linalg.inv(prior_prec + lam)
            qE[i, s] = qC[i, s] @ (prior_prec @ pE + lam @ y)
    return LongitudinalFirstLevel(qE=qE, qC=(qC + np.swapaxes(qC, -1, -2)) / 2, theta=theta)
