"""Bayesian model reduction (BMR) for Gaussian priors and posteriors.

Given the posterior ``q(θ) = N(qE, qC)`` of a *full* model with prior
``p(θ) = N(pE, pC)``, the evidence and posterior of a *reduced* model that
differs only in its prior ``r(θ) = N(rE, rC)`` follow analytically
(Friston & Penny 2011, NeuroImage 56:2089; Friston et al. 2016,
NeuroImage 128:413):

    p(y|r) / p(y|full) = ∫ q(θ) r(θ) / p(θ) dθ,

which for Gaussians gives, with precisions ``P = C⁻¹``,

    sP = qP + rP - pP,          sE = sP⁻¹ (qP qE + rP rE - pP pE),
    dF = ½ ln|qP| + ½ ln|rP| - ½ ln|pP| - ½ ln|sP|
         - ½ (qEᵀqP qE + rEᵀrP rE - pEᵀpP pE - sEᵀsP sE).

The result is exact when the full posterior is exact (linear-Gaussian models)
and a Laplace approximation otherwise.

Two kinds of zero variance are handled exactly rather than with a large
finite precision:

* parameters fixed in the full prior (zero prior variance, e.g. absent
  connections) are removed by restricting everything to the range of ``pC``;
* directions that the reduced prior switches off (zero reduced variance,
  value fixed at ``rE``) are handled by conditioning:
  ``∫ q r / p = q_off(c) / p_off(c) · ∫ q(θ_on|c) r_on(θ_on) / p(θ_on|c)``,
  where ``c`` is the fixed value and ``q_off``, ``p_off`` are marginal densities.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bayesian_model_reduction"]

_REL_TOL = 1e-12


def _range_basis(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal bases of the range and the null space of a PSD matrix."""
    vals, vecs = np.linalg.eigh((cov + cov.T) / 2)
    scale = max(float(np.max(np.abs(vals), initial=0.0)), np.finfo(float).tiny)
    keep = vals > _REL_TOL * scale
    return vecs[:, keep], vecs[:, ~keep]


def _logdet_pd(mat: np.ndarray) -> float:
    sign, logdet = np.linalg.slogdet(mat)
    if sign <= 0:
        raise np.linalg.LinAlgError("matrix is not positive definite")
    return float(logdet)


def _log_gauss(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> float:
    """Log density of N(mean, cov) at x (x, mean: (k,), cov: (k, k))."""
    k = x.size
    if k == 0:
        return 0.0
    chol = np.linalg.cholesky(cov)
    z = np.linalg.solve(chol, x - mean)
    return float(-0.5 * z @ z - np.log(np.diag(chol)).sum() - 0.5 * k * np.log(2 * np.pi))


def _condition(mean, cov, n_on, value):
    """Condition N(mean, cov) on its last coordinates equal to ``value``.

    Returns (log marginal density of the last coordinates at value,
    conditional mean and covariance of the first ``n_on`` coordinates).
    """
    m_on, m_off = mean[:n_on], mean[n_on:]
    c_oo = cov[n_on:, n_on:]
    c_no = cov[:n_on, n_on:]
    log_marg = _log_gauss(value, m_off, c_oo)
    if value.size == 0:
        return log_marg, m_on, cov[:n_on, :n_on]
    gain = np.linalg.solve(c_oo, c_no.T).T
    cond_mean = m_on + gain @ (value - m_off)
    cond_cov = cov[:n_on, :n_on] - gain @ c_no.T
    return log_marg, cond_mean, (cond_cov + cond_cov.T) / 2


def bayesian_model_reduction(qE, qC, pE, pC, rE, rC):
    """Reduced log evidence and posterior from a full Gaussian posterior.

    Parameters
    ----------
    qE, qC : array (n,), array (n, n)
        Posterior mean and covariance of the full model.
    pE, pC : array (n,), array (n, n)
        Prior mean and covariance of the full model. Parameters (directions)
        with zero prior variance are fixed at ``pE`` and excluded.
    rE, rC : array (n,), array (n, n)
        Prior mean and covariance of the reduced model. Zero variance in a
        direction switches it off (fixes it at ``rE``). The reduced prior must
        not free a direction that the full prior fixes.

    Returns
    -------
    dF : float
        Log evidence of the reduced model minus that of the full model (nats).
    sE : array (n,)
        Posterior mean under the reduced prior.
    sC : array (n, n)
        Posterior covariance under the reduced prior.
    """
    qE, pE, rE = (np.asarray(v, dtype=float).ravel() for v in (qE, pE, rE))
    qC, pC, rC = (np.atleast_2d(np.asarray(m, dtype=float)) for m in (qC, pC, rC))
    n = pE.size
    for name, mat in (("qC", qC), ("pC", pC), ("rC", rC)):
        if mat.shape != (n, n):
            raise ValueError(f"{name} must have shape ({n}, {n}), got {mat.shape}")

    # Restrict to the free subspace of the full prior.
    free, fixed = _range_basis(pC)
    if fixed.shape[1]:
        leak = fixed.T @ rC @ fixed
        if np.max(np.abs(leak)) > _REL_TOL * max(np.max(np.abs(rC)), 1.0):
            raise ValueError("reduced prior frees a parameter that the full prior fixes")
    q_mean, r_mean, p_mean = free.T @ qE, free.T @ rE, free.T @ pE
    q_cov, p_cov, r_cov = (free.T @ m @ free for m in (qC, pC, rC))

    # Split the free subspace into directions kept ('on') and switched off by rC.
    on, off = _range_basis(r_cov) if r_cov.size else (np.zeros((0, 0)), np.zeros((0, 0)))
    rot = np.hstack([on, off])
    n_on = on.shape[1]
    q_mean, r_mean, p_mean = rot.T @ q_mean, rot.T @ r_mean, rot.T @ p_mean
    q_cov, p_cov = rot.T @ q_cov @ rot, rot.T @ p_cov @ rot
    r_cov_on = rot[:, :n_on].T @ r_cov @ rot[:, :n_on]
    value = r_mean[n_on:]

    log_q_off, q_m, q_c = _condition(q_mean, q_cov, n_on, value)
    log_p_off, p_m, p_c = _condition(p_mean, p_cov, n_on, value)
    r_m = r_mean[:n_on]

    if n_on:
        q_p, p_p, r_p = (np.linalg.inv(m) for m in (q_c, p_c, r_cov_on))
        s_p = q_p + r_p - p_p
        s_p = (s_p + s_p.T) / 2
        s_c = np.linalg.inv(s_p)
        s_m = s_c @ (q_p @ q_m + r_p @ r_m - p_p @ p_m)
        try:
            log_s = _logdet_pd(s_p)
        except np.linalg.LinAlgError as err:
            raise ValueError("reduced prior is broader than the full prior: "
                             "the reduced evidence is not defined") from err
        dF_on = 0.5 * (_logdet_pd(q_p) + _logdet_pd(r_p) - _logdet_pd(p_p) - log_s) - 0.5 * (
            q_m @ q_p @ q_m + r_m @ r_p @ r_m - p_m @ p_p @ p_m - s_m @ s_p @ s_m
        )
    else:
        s_m, s_c, dF_on = np.zeros(0), np.zeros((0, 0)), 0.0

    dF = float(log_q_off - log_p_off + dF_on)

    # Back to the original coordinates.
    basis = free @ rot
    s_mean_rot = np.concatenate([s_m, value])
    s_cov_rot = np.zeros((basis.shape[1], basis.shape[1]))
    s_cov_rot[:n_on, :n_on] = s_c
    sE = pE - free @ (free.T @ pE) + basis @ s_mean_rot
    sC = basis @ s_cov_rot @ basis.T
    return dF, sE, (sC + sC.T) / 2
