"""Bayesian parameter averaging (BPA) of DCM posteriors.

When several data sets (e.g. the runs of one session) are modelled by the same DCM with
the *same* parameters, and the data sets are conditionally independent, the posterior
given all of them is (Neumann & Lohmann 2003, NeuroImage 20:1346; Kasess et al. 2010,
NeuroImage 49:3065; SPM's ``spm_dcm_bpa``)

    p(θ | y_1..y_N) ∝ p(θ) Π_i p(y_i | θ) ∝ p(θ) Π_i q_i(θ) / p_i(θ),

i.e. each data set contributes its likelihood q_i / p_i. Under the Laplace (Gaussian)
approximation this is a precision-weighted combination:

    P = P0 + Σ_i (Q_i − P_i),        μ = P⁻¹ (P0 m0 + Σ_i (Q_i q_i − P_i m_i)),

with Q_i = qC_i⁻¹ the posterior and P_i = pC_i⁻¹ the prior precision of data set i, and
P0, m0 the prior of the average (the common prior; when data sets were fitted under
different priors, e.g. data-dependent principal-mode priors, the mean of their
covariances and means). With identical priors this is SPM's
``P = Σ Q_i − (N − 1) P0``.

Parameters with zero prior variance in a data set are fixed there and carry no
information: each data set's likelihood is computed within the range of its own prior
covariance. A data set's likelihood precision ``Q_i − P_i`` is positive semi-definite for
an exact posterior; the Laplace approximation can break this slightly (posterior
variance above the prior variance), so negative eigenvalues are set to zero (the data
set then carries no information in that direction rather than negative information).
"""

from __future__ import annotations

import numpy as np

__all__ = ["bayesian_parameter_average"]

_REL_TOL = 1e-12


def _range_basis(cov: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((cov + cov.T) / 2)
    scale = max(float(np.max(np.abs(vals), initial=0.0)), np.finfo(float).tiny)
    return vecs[:, vals > _REL_TOL * scale]


def _per_dataset(value, n: int, p: int, ndim: int) -> np.ndarray:
    value = np.asarray(value, dtype=float)
    if value.ndim == ndim:
        return np.broadcast_to(value, (n, *value.shape))
    if value.shape[0] != n:
        raise ValueError(f"per-data-set priors must have {n} rows, got {value.shape[0]}")
    return value


def bayesian_parameter_average(qE, qC, pE, pC):
    """Posterior of parameters shared by several data sets, from their separate posteriors.

    Parameters
    ----------
    qE : array (N, P)
        Posterior means of the N data sets.
    qC : array (N, P, P)
        Posterior covariances.
    pE : array (P,) or (N, P)
        Prior mean(s) the data sets were fitted under.
    pC : array (P, P) or (N, P, P)
        Prior covariance(s).

    Returns
    -------
    E : array (P,)
        Mean of the averaged posterior.
    C : array (P, P)
        Its covariance. Parameters fixed in every data set keep their prior mean and zero
        variance.
    """
    qE = np.atleast_2d(np.asarray(qE, dtype=float))
    n, p = qE.shape
    qC = np.asarray(qC, dtype=float).reshape(n, p, p)
    pEs = _per_dataset(pE, n, p, 1)
    pCs = _per_dataset(pC, n, p, 2)
    if n == 1:
        return qE[0].copy(), (qC[0] + qC[0].T) / 2
    m0, C0 = pEs.mean(axis=0), pCs.mean(axis=0)
    free = _range_basis(C0)
    if free.shape[1] == 0:
        return m0.copy(), np.zeros((p, p))
    # everything in the coordinates z = freeᵀ (θ − m0) of the parameters free in some data set
    P0 = np.linalg.inv(free.T @ C0 @ free)
    precision = P0.copy()
    information = np.zeros(free.shape[1])  # P0 · 0 (the prior mean is the origin)
    for i in range(n):
        basis = free.T @ _range_basis(pCs[i])  # data set i's free directions, in z coordinates
        if basis.shape[1] == 0:
            continue
        qz = basis.T @ free.T @ (qE[i] - m0)
        pz = basis.T @ free.T @ (pEs[i] - m0)
        Q = np.linalg.inv(basis.T @ free.T @ qC[i] @ free @ basis)
        Pi = np.linalg.inv(basis.T @ free.T @ pCs[i] @ free @ basis)
        L = Q - Pi
        w, V = np.linalg.eigh((L + L.T) / 2)
        L = (V * np.clip(w, 0, None)) @ V.T
        # likelihood N(z; l, L⁻¹) with L l = Q qz − Pi pz (projected onto L's range)
        rhs = Q @ qz - Pi @ pz
        rhs = V[:, w > 0] @ (V[:, w > 0].T @ rhs)
        precision += basis @ L @ basis.T
        information += basis @ rhs
    Cz = np.linalg.inv(precision)
    E = m0 + free @ (Cz @ information)
    C = free @ Cz @ free.T
    return E, (C + C.T) / 2
