"""Compiled local-linearisation integration of nonlinear (D) DCMs.

With nonlinear terms the neuronal Jacobian depends on the state, so the
matrix exponential of the bilinear path cannot be tabulated once per input
pattern: every step of the integration needs a matrix function of a new
matrix. The step is the local-linearisation update (Ozaki 1992, Statistica
Sinica 2:113-135)

    z ← z + φ1(h J(z)) h f(z),    φ1(X) = (e^X - I) X⁻¹,

i.e. the exact solution at time h of ``dy/dt = J y + f, y(0) = 0`` (J and f
frozen at the step's start), where ``f(z) = F(z) z`` is the flow of the
second-order system ``F(z) = M0 + Σ_j u_j M1_j + Σ_k x_k M2_k`` (M2 on the
neuronal block only) and ``J(z)`` its exact Jacobian, see
:mod:`ketflow.dcm.integrate`. ``φ1(hJ) h f`` is the first column (below the
top) of ``exp([[0, 0], [h f, h J]])``; it is computed as the *action* of that
exponential on a vector by a truncated Taylor series over
``s = ceil(‖A‖₁ / 4)`` substeps with the stopping rule of Al-Mohy & Higham (2011), "Computing the
action of the matrix exponential, with an application to exponential
integrators", SIAM J. Sci. Comput. 33:488-511, and
by scaling and squaring of the full matrix in the rare very stiff steps.
The result equals ``scipy.linalg.expm`` of the augmented matrix to rounding
error (tests/test_dcm_nonlinear.py).

Why compiled: the integration is sequential in time (one step per event, a few
hundred per scan series), and the previous NumPy version spent ~90 µs per event
in ``scipy.linalg.expm`` (a Python loop over the batch of parameter sets) and
NumPy call overhead, ~45 ms per batched prediction of a 2-region model. The
loop over events is therefore compiled with numba, and each step uses the
structure of the Jacobian (z = [1; x; s; ln f; ln v; ln q]):

* neuronal rows depend on the neuronal states (and the constant) only: a
  dense n × n block, rebuilt at every step from x;
* haemodynamic rows do not depend on the inputs or on the D terms: one sparse
  matrix per parameter set (each region's balloon model couples only its own
  five states), stored in compressed-row form.

Matrix-vector products then cost O(n² + 9n) instead of O((5n)²), and no
matrix-matrix products are formed in the usual steps.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["local_linear_states"]

#: Bound on ‖A/s‖₁ for each Taylor substep: terms stay below 4^k/k! ≤ 10.7 times the vector, so
#: rounding stays at ~1e-15 relative; a 1-s step of a 2-region model (‖A‖₁ ≈ 2.6) is one substep.
#: (θ = 1, 2, 3, 4 gave the same states to 1e-16 and 7.9, 6.0, 4.6, 4.2 ms per prediction.)
TAYLOR_THETA = 4.0
#: Beyond this many substeps a step is computed by scaling and squaring of the full matrix.
MAX_SUBSTEPS = 64
#: Safety cap on Taylor terms per substep (with ‖A/s‖₁ ≤ 4 at most ~35 are needed).
MAX_TERMS = 64
#: A trajectory is abandoned once |z|₁ exceeds this (as SPM's spm_int; :func:`predict_bold` zeroes it).
BLOWN = 1e6
UNIT_ROUNDOFF = 2.0**-53


def _compiled(function):
    """numba-compile ``function``, cached on disk (~3 s of compilation once) where numba finds a
    writable cache directory (next to this file, or the user's cache); otherwise per process."""
    try:
        return njit(cache=True)(function)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return njit(function)


@_compiled
def _apply_jacobian(jx, indptr, indices, values, v, out):
    """out = J v for the non-constant states (x rows dense, haemodynamic rows CSR)."""
    n = jx.shape[0]
    for i in range(n):
        acc = 0.0
        for j in range(n):
            acc += jx[i, j] * v[j]
        out[i] = acc
    for r in range(indptr.size - 1):
        acc = 0.0
        for k in range(indptr[r], indptr[r + 1]):
            acc += values[k] * v[indices[k]]
        out[n + r] = acc


@_compiled
def _matmul(P, Q, out):
    """out = P Q for square matrices."""
    N = P.shape[0]
    for i in range(N):
        for j in range(N):
            acc = 0.0
            for k in range(N):
                acc += P[i, k] * Q[k, j]
            out[i, j] = acc


@_compiled
def _phi1_dense(jx, indptr, indices, values, f, h, norm, y):
    """y = φ1(hJ) h f by scaling and squaring of exp(A), A = [[0, 0], [h f, h J]] (very stiff steps).

    exp(A) = T(A / 2^q)^(2^q) with T the Taylor series, summed until its terms are below
    rounding, and q such that ‖A / 2^q‖₁ ≤ TAYLOR_THETA.
    """
    K = f.size
    n = jx.shape[0]
    N = K + 1
    squarings = max(0, int(np.ceil(np.log2(norm / TAYLOR_THETA))))
    scale = h / 2.0**squarings
    A = np.zeros((N, N))
    for r in range(K):
        A[1 + r, 0] = scale * f[r]
    for i in range(n):
        for j in range(n):
            A[1 + i, 1 + j] = scale * jx[i, j]
    for r in range(indptr.size - 1):
        for k in range(indptr[r], indptr[r + 1]):
            A[1 + n + r, 1 + indices[k]] = scale * values[k]
    E = np.zeros((N, N))
    term = np.zeros((N, N))
    for i in range(N):
        E[i, i] = 1.0
        term[i, i] = 1.0
    work = np.empty((N, N))
    for k in range(1, MAX_TERMS + 1):
        _matmul(term, A, work)
        largest = 0.0
        size = 0.0
        for i in range(N):
            for j in range(N):
                term[i, j] = work[i, j] / k
                E[i, j] += term[i, j]
                largest = max(largest, abs(term[i, j]))
                size = max(size, abs(E[i, j]))
        if largest <= UNIT_ROUNDOFF * size:
            break
    for _ in range(squarings):
        _matmul(E, E, work)
        E, work = work, E
    for r in range(K):
        y[r] = E[1 + r, 0]


@_compiled
def _phi1_action(jx, indptr, indices, values, colsum, f, h, y, acc, term, tmp):
    """y = φ1(hJ) h f, the exact solution at time h of dy/dt = J y + f, y(0) = 0.

    Taylor series of exp(A/s) applied s times to [1; y], A = [[0, 0], [h f, h J]]
    (Al-Mohy & Higham 2011); colsum (K,) holds the column sums of |J| over the
    haemodynamic rows.
    """
    K = f.size
    n = jx.shape[0]
    norm = 0.0
    for r in range(K):
        norm += abs(f[r])
    norm *= h
    for j in range(K):
        col = colsum[j]
        if j < n:
            for i in range(n):
                col += abs(jx[i, j])
        norm = max(norm, h * col)
    if not np.isfinite(norm):
        for r in range(K):
            y[r] = np.nan
        return
    substeps = max(1, int(np.ceil(norm / TAYLOR_THETA)))
    if substeps > MAX_SUBSTEPS:
        _phi1_dense(jx, indptr, indices, values, f, h, norm, y)
        return
    g = h / substeps
    for r in range(K):
        y[r] = 0.0
    for _ in range(substeps):
        # first term: (A/s) [1; y] = [0; g (f + J y)]
        _apply_jacobian(jx, indptr, indices, values, y, tmp)
        previous = 0.0
        for r in range(K):
            term[r] = g * (f[r] + tmp[r])
            acc[r] = y[r] + term[r]
            previous = max(previous, abs(term[r]))
        for k in range(2, MAX_TERMS + 1):
            _apply_jacobian(jx, indptr, indices, values, term, tmp)
            current = 0.0
            size = 0.0
            for r in range(K):
                term[r] = tmp[r] * (g / k)
                acc[r] += term[r]
                current = max(current, abs(term[r]))
                size = max(size, abs(acc[r]))
            if previous + current <= UNIT_ROUNDOFF * size:
                break
            previous = current
        for r in range(K):
            y[r] = acc[r]


@_compiled
def _integrate(x_const, x_block, M2, indptr, indices, h_values, h_const, h_colsum, pattern, steps, dt, Z):
    """Fill Z (n_events, nb, ns) with the states at every event; see :func:`local_linear_states`."""
    n_events, nb, ns = Z.shape
    n = x_block.shape[2]
    K = ns - 1
    z = np.empty(ns)
    f = np.empty(K)
    jx = np.empty((n, n))
    Fx = np.empty((n, n))
    y = np.empty(K)
    acc = np.empty(K)
    term = np.empty(K)
    tmp = np.empty(K)
    for b in range(nb):
        for c in range(ns):
            z[c] = 0.0
        z[0] = 1.0
        for i in range(n_events):
            total = 0.0
            for c in range(ns):
                Z[i, b, c] = z[c]
                total += abs(z[c])
            if not total <= BLOWN:  # diverged (or NaN): predict_bold zeroes it from here on
                for later in range(i + 1, n_events):
                    for c in range(ns):
                        Z[later, b, c] = np.nan
                break
            L = steps[i]
            if L == 0:
                continue
            p = pattern[i]
            h = L * dt
            # neuronal block of F = M0 + Σ u M1 + Σ_k x_k M2_k, and the flow f_x = F_x [1; x]
            for r in range(n):
                for j in range(n):
                    gated = 0.0
                    for k in range(n):
                        gated += z[1 + k] * M2[b, k, r, j]
                    Fx[r, j] = x_block[b, p, r, j] + gated
            for r in range(n):
                flow = x_const[b, p, r]
                for j in range(n):
                    flow += Fx[r, j] * z[1 + j]
                f[r] = flow
                # exact Jacobian: d/dx_j of (Σ_k x_k M2_k) x adds the column M2_j x
                for j in range(n):
                    column = 0.0
                    for m in range(n):
                        column += M2[b, j, r, m] * z[1 + m]
                    jx[r, j] = Fx[r, j] + column
            # haemodynamic rows: constant, linear in z
            for r in range(indptr.size - 1):
                flow = h_const[b, r]
                for k in range(indptr[r], indptr[r + 1]):
                    flow += h_values[b, k] * z[1 + indices[k]]
                f[n + r] = flow
            _phi1_action(jx, indptr, indices, h_values[b], h_colsum[b], f, h, y, acc, term, tmp)
            for c in range(K):
                z[1 + c] += y[c]


def local_linear_states(J: np.ndarray, M2: np.ndarray, pattern, steps, dt: float, n: int) -> np.ndarray:
    """States at every event of the nonlinear (D) DCM, batched over parameter sets.

    Parameters
    ----------
    J : array (nb, n_patterns, ns, ns)
        Bilinear Jacobian ``M0 + Σ_j u_j M1_j`` of the augmented state
        z = [1; x; s; ln f; ln v; ln q] (ns = 1 + 5n) for each distinct input
        vector (1/s).
    M2 : array (nb, n, n, n)
        Neuronal second-order operators [modulating region, to, from] (1/s per
        unit activity), see :func:`ketflow.dcm.model.bilinear_operators`.
    pattern : array (n_events,)
        Index into the patterns of the input at each event.
    steps : array (n_events,)
        Micro-time bins to the next event (0 for the last).
    dt : float
        Micro-time step (s).
    n : int
        Number of regions.

    Returns
    -------
    Z : array (n_events, nb, ns)
        z at every event; once a trajectory diverges (|z|₁ > 1e6 or not finite)
        its later events are NaN.
    """
    nb, _, ns, _ = J.shape
    if M2.shape[1] != n:
        raise ValueError(f"nonlinear DCM needs one D slice per region ({n}), got {M2.shape[1]}")
    xs, hs = slice(1, 1 + n), slice(1 + n, ns)
    # The model's structure (tests/test_dcm_nonlinear.py): haemodynamic rows are the same for
    # every input pattern and neuronal rows do not involve haemodynamic states.
    haemo = J[:, 0, hs, :]
    finite = np.isfinite(J).all(axis=(1, 2, 3)) & np.isfinite(M2).all(axis=(1, 2, 3))
    rows, cols = np.nonzero(np.any(haemo[:, :, 1:] != 0, axis=0))
    indptr = np.searchsorted(rows, np.arange(ns - n)).astype(np.int64)
    x_block = np.ascontiguousarray(J[:, :, xs, xs])
    x_block[~finite] = np.nan  # a non-finite operator makes the whole trajectory NaN, as expm would
    Z = np.empty((len(steps), nb, ns))
    _integrate(
        np.ascontiguousarray(J[:, :, xs, 0]),
        x_block,
        np.ascontiguousarray(M2),
        indptr,
        cols.astype(np.int64),
        np.ascontiguousarray(haemo[:, :, 1:][:, rows, cols]),
        np.ascontiguousarray(haemo[:, :, 0]),
        np.abs(haemo[:, :, 1:]).sum(axis=1),
        np.asarray(pattern, dtype=np.int64),
        np.asarray(steps, dtype=np.int64),
        float(dt),
        Z,
    )
    return Z
