"""Fast integration of the DCM state equation on the micro-time grid.

Inputs are piecewise constant on the micro-time grid, so between two
*events* (an input change or an output sample) the bilinear system
``dz/dt = (M0 + Σ u_j M1_j) z`` is linear and time-invariant and is solved
exactly by a matrix exponential, ``z(t + L·dt) = expm(J_u dt)^L z(t)``
(Ozaki 1992, Statistica Sinica 2:113; the scheme of SPM12's ``spm_int``).
Only ``expm(J_u dt)`` for each distinct input pattern is needed; longer steps
are its integer powers. Everything is batched over parameter sets (leading
axis), so the finite-difference Jacobian of the prediction with respect to
all parameters costs a single pass through the time loop.

With nonlinear (D) terms the Jacobian depends on the neuronal state; the
update is then the local-linearisation step
``z + (expm(J h) - I) J⁻¹ f(z)`` with the exact Jacobian of the
second-order system, evaluated at every event and at ``nsteps`` extra points
per scan (``nsteps = round(max(TR, 1))``, the event grid of SPM12's
``spm_int_D``; SPM's step itself differs, see docs/dcm.md), batched over
parameter sets like the bilinear path and compiled
(:mod:`ketflow.dcm.nonlinear`).

Sampling follows SPM12: scan k (from 0) of region j is read at micro-time row
``ceil(k·TR/dt) + max(round(delay_j/dt), 1) - 1`` (0-based; the state at the
*start* of that row, i.e. at time ``row·dt`` s). SPM spaces the scans by
``n_rows/n_scans`` rows instead of ``TR/dt``; the two agree when U covers
exactly the acquisition (``n_rows = n_scans·TR/dt``), as SPM requires.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import expm

from .model import HEMO, ParameterLayout, bilinear_operators, bold_output

__all__ = ["Schedule", "make_schedule", "predict_bold"]


@dataclass(frozen=True)
class Schedule:
    """Event grid of one design.

    rows : (n_events,) 0-based micro-time rows where the state is needed.
    steps : (n_events,) number of micro-time bins to the next event (0 for the last).
    pattern : (n_events,) index into ``patterns`` of the input at each event.
    patterns : (n_patterns, m) distinct input vectors.
    sample_index : (n_scans, n_regions) index into ``rows`` of each output sample.
    dt : micro-time step (s).
    """

    rows: np.ndarray
    steps: np.ndarray
    pattern: np.ndarray
    patterns: np.ndarray
    sample_index: np.ndarray
    dt: float


def make_schedule(U, dt, TR, n_scans, delays, nsteps=0) -> Schedule:
    """Build the event grid.

    Parameters
    ----------
    U : array (n_rows, m)
        Inputs on the micro-time grid (row r at r·dt seconds).
    dt, TR : float
        Micro-time step and repetition time (s).
    n_scans : int
    delays : array (n_regions,)
        Sampling delay of each region (s) relative to the scan start.
    nsteps : int
        Extra evaluation points per scan (used for nonlinear models).
    """
    U = np.asarray(U, dtype=float)
    if U.ndim == 1:
        U = U[:, None]
    n_rows = U.shape[0]
    delays = np.asarray(delays, dtype=float).ravel()
    per_scan = TR / dt
    scan_rows = np.ceil(np.arange(n_scans) * per_scan - 1e-9).astype(int)
    lag = np.maximum(np.round(delays / dt).astype(int), 1) - 1
    sample_rows = scan_rows[:, None] + lag[None, :]
    if sample_rows.max() >= n_rows:
        raise ValueError(
            f"U has {n_rows} micro-time rows but scan {n_scans - 1} is sampled at row "
            f"{sample_rows.max()}; provide inputs covering the whole acquisition"
        )
    change = np.flatnonzero(np.any(np.diff(U, axis=0) != 0, axis=1)) + 1
    events = [np.array([0]), change, sample_rows.ravel()]
    if nsteps:
        extra = np.ceil(np.arange((n_scans - 1) * nsteps + 1) * per_scan / nsteps - 1e-9).astype(int) + lag[0]
        events.append(extra[extra < n_rows])
    rows = np.unique(np.concatenate(events))
    rows = rows[rows <= sample_rows.max()]
    steps = np.append(np.diff(rows), 0)
    patterns, pattern = np.unique(U[rows], axis=0, return_inverse=True)
    sample_index = np.searchsorted(rows, sample_rows)
    return Schedule(rows, steps, pattern.ravel(), patterns, sample_index, float(dt))


def _bilinear_states(J, schedule: Schedule) -> np.ndarray:
    """States at every event for input-dependent, state-independent Jacobians.

    J : (nb, n_patterns, ns, ns). Returns (n_events, nb, ns).
    """
    nb, _, ns, _ = J.shape
    E1 = expm(J * schedule.dt)
    lengths = np.unique(schedule.steps[schedule.steps > 0])
    # table[(pattern, length)] = expm(J dt)^length by binary powering
    squares = [E1]
    while 2 ** len(squares) <= lengths.max(initial=1):
        squares.append(squares[-1] @ squares[-1])
    table = np.empty((E1.shape[1], lengths.size, nb, ns, ns))
    for li, L in enumerate(lengths):
        bits = [squares[b] for b in range(len(squares)) if (int(L) >> b) & 1]
        power = bits[0]
        for extra in bits[1:]:
            power = power @ extra
        table[:, li] = np.swapaxes(power, 0, 1)
    length_index = np.searchsorted(lengths, schedule.steps)
    z = np.zeros((nb, ns, 1))
    z[:, 0] = 1.0
    Z = np.empty((schedule.rows.size, nb, ns))
    for i, (p, L) in enumerate(zip(schedule.pattern, schedule.steps)):
        Z[i] = z[:, :, 0]
        if L:
            z = table[p, length_index[i]] @ z
    return Z


def predict_bold(theta, layout: ParameterLayout, schedule: Schedule, TE: float = HEMO["TE"]) -> np.ndarray:
    """Predicted BOLD (% signal change) for a batch of parameter vectors.

    Parameters
    ----------
    theta : array (nb, P) or (P,)
        Parameters in SPM order (see :class:`ketflow.dcm.model.ParameterLayout`).
    layout : ParameterLayout
    schedule : Schedule
        Event grid from :func:`make_schedule`.
    TE : float
        Echo time of the observation equation (s); SPM12 always uses 0.04.

    Returns
    -------
    y : array (nb, n_scans, n_regions) or (n_scans, n_regions)
    """
    theta = np.asarray(theta, dtype=float)
    single = theta.ndim == 1
    theta = np.atleast_2d(theta)
    n = layout.n
    M0, M1, M2 = bilinear_operators(theta, layout)
    J = M0[:, None] + np.einsum("pm,bmij->bpij", schedule.patterns, M1)
    with np.errstate(over="ignore", invalid="ignore"):
        if layout.n_d:
            # compiled (numba), imported here so that bilinear models never load it
            from .nonlinear import local_linear_states

            Z = local_linear_states(J, M2, schedule.pattern, schedule.steps, schedule.dt, n)
        else:
            Z = _bilinear_states(J, schedule)
        # As spm_int, stop following a trajectory once it diverges (|z|_1 > 1e6).
        blown = ~(np.abs(Z).sum(-1) <= 1e6)  # (n_events, nb), NaN counts as blown
        if blown.any():
            first = np.where(blown.any(0), blown.argmax(0), Z.shape[0])
            after = np.arange(Z.shape[0])[:, None] >= first[None, :]
            Z[after] = 0.0
        regions = np.arange(n)[None, :]
        # (n_scans, n_regions, nb): region j's ln v and ln q at its own sample events
        lv = Z[schedule.sample_index, :, 1 + 3 * n + regions]
        lq = Z[schedule.sample_index, :, 1 + 4 * n + regions]
    eps = layout.unpack(theta)["epsilon"]
    y = bold_output(lv, lq, eps[None, None, :], TE)
    y = np.transpose(y, (2, 0, 1))
    return y[0] if single else y
