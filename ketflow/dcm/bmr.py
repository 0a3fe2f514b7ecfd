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

:func:`spm_reduced_evidence` is the same formula evaluated as SPM12 evaluates it
(``spm_log_evidence`` / ``spm_log_evidence_reduce``): every covariance and precision is
inverted after adding ``tol·I`` (SPM's ``spm_inv``), so a switched-off direction gets the
finite prior precision ``1/tol`` instead of being conditioned on exactly. PEB uses it to
reproduce SPM's numbers (``ketflow.dcm.peb``); the differences from the exact limit are
documented there (up to about 2 nats for the removal of a strongly present parameter with
``tol = 1e-8``, well below 1e-3 nats for weak ones).
"""

from __future__ import annotations

import numpy as np

__all__ = ["bayesian_model_reduction", "spm_inv", "spm_reduced_evidence", "SPM_TOL_REDUCE", "SPM_TOL_SEARCH"]

#: ``spm_inv`` tolerance of SPM's ``spm_log_evidence_reduce`` (reduced posteriors; PEB's
#: subject reductions and the BMA).
SPM_TOL_REDUCE = 1e-8
#: ``spm_inv`` tolerance of SPM's ``spm_log_evidence`` (the greedy model search).
SPM_TOL_SEARCH = float(np.exp(-16))

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


def spm_inv(A: np.ndarray, tol: float | None = None) -> np.ndarray:
    """Inverse of ``A + tol·I`` (SPM's ``spm_inv``; A: (n, n)).

    The default ``tol`` is SPM's, ``max(eps(‖A‖∞)·n, exp(-32))``: a zero-variance direction of a
    covariance becomes a very large but finite precision, and vice versa.
    """
    A = np.atleast_2d(np.asarray(A, dtype=float))
    n = A.shape[0]
    if tol is None:
        tol = max(float(np.spacing(np.linalg.norm(A, np.inf))) * n, float(np.exp(-32)))
    return np.linalg.inv(A + tol * np.eye(n))


def _logdet(mat: np.ndarray) -> float:
    return float(np.linalg.slogdet(mat)[1])


def _spm_free_basis(pC: np.ndarray) -> np.ndarray:
    """Basis of the directions the prior leaves free: the parameters with prior variance when pC
    is diagonal (SPM's case, kept as a selection so that no rounding is added), else the range."""
    diag = np.diag(pC)
    if np.count_nonzero(pC - np.diag(diag)) == 0:
        return np.eye(pC.shape[0])[:, diag > 0]
    return _range_basis(pC)[0]


def spm_reduced_evidence(qE, qC, pE, pC, rE, rC, tol: float = SPM_TOL_REDUCE):
    """Reduced log evidence and posterior as SPM12 computes them (shapes as
    :func:`bayesian_model_reduction`).

    Directions without prior variance are removed first; then, with ``P(C) = (C + tol·I)⁻¹``,
    ``sP = P(qC) + P(rC) − P(pC)``, ``sC = (sP + tol·I)⁻¹``, ``v = P(qC) qE + P(rC) rE − P(pC) pE``,
    ``sE = sC v`` and ``dF = ½ [ln|P(rC)| + ln|P(qC)| + ln|sC| + ln|(P(pC) + tol·I)⁻¹|
    − (qEᵀP(qC)qE + rEᵀP(rC)rE − pEᵀP(pC)pE − vᵀ sC v)]``. ``tol``: :data:`SPM_TOL_REDUCE`
    (``spm_log_evidence_reduce``: reduced posteriors) or :data:`SPM_TOL_SEARCH`
    (``spm_log_evidence``: the greedy search of ``spm_dcm_bmr_all``).

    SPM takes the log-determinant of the product of the four matrices, which is ill-conditioned
    (condition number up to 1e15 when parameters are switched off) and makes its F noisy at about
    1e-3 nats; the sum of the four log-determinants used here is the same quantity without that
    noise. Fixed directions keep the reduced prior's mean and zero variance in (sE, sC).
    """
    qE, pE, rE = (np.asarray(v, dtype=float).ravel() for v in (qE, pE, rE))
    qC, pC, rC = (np.atleast_2d(np.asarray(m, dtype=float)) for m in (qC, pC, rC))
    V = _spm_free_basis(pC)
    q_mean, p_mean, r_mean = V.T @ qE, V.T @ pE, V.T @ rE
    q_cov, p_cov, r_cov = (V.T @ m @ V for m in (qC, pC, rC))
    qP, pP, rP = spm_inv(q_cov, tol), spm_inv(p_cov, tol), spm_inv(r_cov, tol)
    sC = spm_inv(qP + rP - pP, tol)
    v = qP @ q_mean + rP @ r_mean - pP @ p_mean
    s_mean = sC @ v
    logdet = _logdet(rP) + _logdet(qP) + _logdet(sC) - _logdet(pP + tol * np.eye(pP.shape[0]))
    dF = 0.5 * (logdet - (q_mean @ qP @ q_mean + r_mean @ rP @ r_mean - p_mean @ pP @ p_mean - v @ sC @ v))
    sE = rE - V @ (V.T @ rE) + V @ s_mean
    sC_full = V @ sC @ V.T
    return float(dF), sE, (sC_full + sC_full.T) / 2
