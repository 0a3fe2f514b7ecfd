"""Priors of deterministic one-state DCM for fMRI, as defined by SPM12 (r7771).

Friston et al. 2003 (NeuroImage 19:1273) for the neuronal priors; Stephan et
al. 2007 (NeuroImage 38:387) for the hemodynamic ones. All priors are
independent Gaussians (diagonal covariance). Values (units in brackets):

=====================  =============================  ======================
parameter              prior mean                     prior variance
=====================  =============================  ======================
A_ij, i ≠ j, a_ij = 1   1/128 [Hz]                     1/64 [Hz²]
A_ij, i ≠ j, a_ij = 0   0 (fixed)                      0
A_ii (log self-inh.)    0 [log; rate -exp(0)/2 Hz]     1/64 (always free)
B_kij                   0 [Hz per unit input]          b_kij (1 when on)
C_ik                    0 [Hz per unit input, ×1/16]   c_ik (1 when on)
D_kij                   0 [Hz per unit activity]       d_kij (1 when on)
transit_i               0 [log; τ = 2 s]               1/256
decay                   0 [log; κ = 0.64 Hz]           1/256
epsilon                 0 [log; ε = 1]                 1/256
=====================  =============================  ======================

Hyperpriors on the log precision of each region's noise: mean hE = 6,
variance hC = 1/128 (set in :class:`ketflow.dcm.spec.DCMOptions`).

Large models (more than ``maxnodes`` = 8 regions): as SPM12, the prior
covariance of A is restricted to the subspace spanned by the ``maxnodes``
principal modes of the (confound-removed) data, ``C_A ← K C_A Kᵀ`` with
``K = P ⊗ P`` and ``P = V Vᵀ`` the projector onto the leading left singular
vectors of the data (Seghier & Friston 2013, NeuroImage 68:181).
"""

from __future__ import annotations

import numpy as np

from .model import ParameterLayout

__all__ = ["constrain_to_modes", "dcm_fmri_priors", "mode_projection"]

A_OFFDIAG_MEAN = 1.0 / 128
A_VAR = 1.0 / 64
HEMO_VAR = 1.0 / 256


def dcm_fmri_priors(a, b, c, d=None):
    """Prior means and variances of the DCM parameter vector (SPM order).

    Parameters
    ----------
    a : array (n, n)
        Endogenous connection mask [to, from]; the diagonal is ignored
        (self-connections are always estimated).
    b : array (m, n, n)
        Modulatory mask [input, to, from]; entries are used as prior variances.
    c : array (n, m)
        Driving-input mask [to, input]; entries are used as prior variances.
    d : array (n_d, n, n), optional
        Nonlinear mask [modulating region, to, from].

    Returns
    -------
    pE : array (P,)
        Prior means.
    pV : array (P,)
        Prior variances (the prior covariance is ``diag(pV)``).
    layout : ParameterLayout
    """
    a = np.atleast_2d(np.asarray(a, dtype=float))
    n = a.shape[0]
    c = np.asarray(c, dtype=float).reshape(n, -1)
    m = c.shape[1]
    b = np.zeros((m, n, n)) if b is None else np.asarray(b, dtype=float).reshape(m, n, n)
    d = np.zeros((0, n, n)) if d is None or np.size(d) == 0 else np.asarray(d, dtype=float).reshape(-1, n, n)
    layout = ParameterLayout(n, m, d.shape[0])

    off = (a != 0) & ~np.eye(n, dtype=bool)
    pE = layout.pack(off * A_OFFDIAG_MEAN, np.zeros_like(b), np.zeros_like(c), np.zeros(n), 0.0, 0.0, np.zeros_like(d))
    pV = layout.pack(
        off * A_VAR + np.eye(n) * A_VAR, b, c, np.full(n, HEMO_VAR), HEMO_VAR, HEMO_VAR, d
    )
    return pE, pV, layout


def mode_projection(Y, X0, maxnodes):
    """Projector (n, n) onto the ``maxnodes`` principal modes of Y after removing X0.

    Y : array (n_scans, n) preprocessed data; X0 : array (n_scans, k) confounds.
    """
    resid = Y - X0 @ np.linalg.lstsq(X0, Y, rcond=None)[0]
    U = np.linalg.svd(resid.T, full_matrices=False)[0][:, :maxnodes]
    return U @ U.T


def constrain_to_modes(pC, projection, layout):
    """Apply the principal-mode constraint to the A block of a prior covariance.

    pC : array (P, P); projection : array (n, n) from :func:`mode_projection`.
    Returns the constrained (P, P) covariance (A is vectorised column-major,
    so ``vec(P A Pᵀ) = (P ⊗ P) vec(A)``).
    """
    K = np.kron(projection, projection)
    out = np.array(pC, dtype=float, copy=True)
    j = layout.sl_A
    out[j, j] = K @ out[j, j] @ K.T
    return out
