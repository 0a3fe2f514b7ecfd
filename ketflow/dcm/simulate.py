"""Noiseless BOLD from a deterministic DCM (forward model only).

Implements the generative model of :mod:`ketflow.dcm.model` (Friston et al.
2003, NeuroImage 19:1273; Stephan et al. 2007, NeuroImage 38:387) with the
integration scheme of :mod:`ketflow.dcm.integrate`, i.e. what SPM12's
``spm_dcm_generate`` produces before noise is added.
"""

from __future__ import annotations

import numpy as np

from .integrate import make_schedule, predict_bold
from .model import ParameterLayout

__all__ = ["simulate_bold"]


def simulate_bold(
    A,
    B,
    C,
    U,
    dt,
    TR,
    n_scans,
    transit=None,
    decay=0.0,
    epsilon=0.0,
    delays=None,
    D=None,
    TE=0.04,
):
    """Simulate noiseless BOLD for a one-state bilinear (or nonlinear) DCM.

    Parameters
    ----------
    A : array (n, n)
        Endogenous connections [to, from] in Hz; the diagonal holds SPM's
        log self-inhibition (rate ``-exp(A_ii)/2`` Hz; 0 means -0.5 Hz).
    B : array (m, n, n)
        Modulatory effects [input, to, from] (Hz per unit input).
    C : array (n, m)
        Driving effects [to, input]; the neuronal equation uses ``C/16`` (SPM12).
    U : array (n_rows, m)
        Inputs on the micro-time grid, row r at ``r·dt`` s after the first
        scan's reference time.
    dt : float
        Micro-time step (s), usually ``TR/16``.
    TR : float
        Repetition time (s).
    n_scans : int
    transit : array (n,), optional
        Log-deviations of the transit times from 2 s (default 0).
    decay : float
        Log-deviation of the signal decay from 0.64 Hz.
    epsilon : float
        Log ratio of intra- to extravascular signal (default 0, i.e. ε = 1).
    delays : array (n,), optional
        Per-region sampling delays (s); default ``TR/2`` for every region.
        Scan k of region j is read at micro-time row
        ``ceil(k·TR/dt) + max(round(delay_j/dt), 1) - 1`` (0-based), as SPM12.
    D : array (n_d, n, n), optional
        Nonlinear modulations [modulating region, to, from] (Hz per unit activity).
    TE : float
        Echo time of the BOLD equation (s); SPM12 uses 0.04 regardless of the
        acquisition.

    Returns
    -------
    y : array (n_scans, n)
        BOLD signal change (per cent, SPM units).
    """
    A = np.atleast_2d(np.asarray(A, dtype=float))
    n = A.shape[0]
    U = np.asarray(U, dtype=float)
    if U.ndim == 1:
        U = U[:, None]
    m = U.shape[1]
    B = np.zeros((m, n, n)) if B is None else np.asarray(B, dtype=float).reshape(m, n, n)
    C = np.asarray(C, dtype=float).reshape(n, m)
    D = None if D is None or np.size(D) == 0 else np.asarray(D, dtype=float).reshape(-1, n, n)
    n_d = 0 if D is None else D.shape[0]
    transit = np.zeros(n) if transit is None else transit
    delays = np.full(n, TR / 2.0) if delays is None else np.broadcast_to(np.asarray(delays, float), (n,))
    layout = ParameterLayout(n, m, n_d)
    theta = layout.pack(A, B, C, transit, decay, epsilon, D)
    nsteps = round(max(TR, 1)) if n_d else 0
    schedule = make_schedule(U, dt, TR, int(n_scans), delays, nsteps=nsteps)
    return predict_bold(theta, layout, schedule, TE=TE)
