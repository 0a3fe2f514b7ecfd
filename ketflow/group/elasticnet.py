"""Batched elastic-net regularisation paths: many outcome vectors, one Gram matrix per training set.

The group level fits the same small elastic net (N ≤ a few hundred subjects, p ≤ a few hundred
predictors) thousands of times: every fold of a penalty search, inside every fold of a nested
cross-validation, for the observed outcome and every permuted one, and again for every bootstrap
resample.  scikit-learn's ``ElasticNetCV`` does each of those fits from scratch.  This module
computes the same estimates with the work shared:

* the centred Gram matrix G = Xcᵀ Xc / n of a training fold depends on the predictors only, so it
  is computed once per fold (by down-dating the training set's cross-products, O(n_test p²)) and
  reused for every outcome vector (observed and permuted); only Xcᵀ y / n changes (one matrix
  product for all outcomes);
* for each outcome the whole path (``n_alphas`` penalties per ``l1_ratio``, largest first) is
  followed with warm starts, and only the held-out squared errors are kept.

Solver, an exact method: at each penalty, warm-started from the previous one, an active-set
(feature-sign) search (Lee et al. 2007, NIPS 19): on the current support and signs the
elastic-net objective is quadratic, so one linear solve gives its minimiser, and the
Karush–Kuhn–Tucker conditions say which coordinates enter or leave.  Along a fine path the support
changes little between neighbouring penalties, so a penalty costs one or two small solves
(Cholesky of G_AA + λ2 I, or, when the support is larger than the fold's number of subjects, the
same system in the n-dimensional row space by the Woodbury identity) and the answer is exact to
rounding.  Why not plain coordinate descent (glmnet's covariance updates; Friedman, Hastie &
Tibshirani 2010, J Stat Softw 33(1)) alone: it was implemented first and kept as the fallback,
but with p ≥ n and a small ridge (l1_ratio 0.1 at the small-alpha end) it needs thousands of
sweeps to reach 1e-6 agreement; replacing it by the active-set solves cut the CPU time of a
nested CV with 50 permutations and 50 bootstraps at N = 21 from 146 s to 11.5 s with 207
predictors, and of the 1000/1000 analysis with 13 predictors from 40 s to 24 s.  Exact homotopy (LARS-EN) is piecewise linear only for a fixed ridge
penalty, whereas scikit-learn's grid scales both penalties together.  The coordinate-descent
fallback takes over where a support system is singular (a lasso with as many non-zero
coefficients as a bootstrap fold has distinct subjects).  The kernels are compiled with Numba
(``nogil``, so folds run in parallel threads); see ``benchmarks/group_speed.py`` for the
comparison with a NumPy-vectorised implementation.

What the kernels skip without changing a bit of the result (docs/performance.md, "Group level"):
a Cholesky factor is kept from one solve to the next and only the rows that differ are computed
(along the lasso path, λ2 = 0, an unchanged support has the same system at every penalty; within
a penalty, entering coordinates are appended to the support, so the leading block stays); in the
Woodbury form F_A F_Aᵀ is extended likewise; the active-set search evaluates the gradient only at
the zero coordinates it tests (the rest is filled in, by the same operations, before a
coordinate-descent fallback); the scratch state is packed into a few arrays because at p ≈ 10
the cost of passing many arrays between compiled functions weighs as much as the arithmetic.
Every kept quantity is one that recomputing would produce by the same operations in the same
order, so all results are bit-for-bit those of computing everything afresh
(``tests/test_elasticnet.py``).

Definitions are scikit-learn's (``ElasticNet``, ``ElasticNetCV``, ``_alpha_grid``):
objective (1/2n)‖y − Xw − b‖² + α·l1·‖w‖₁ + ½·α·(1 − l1)·‖w‖², intercept b free; the alpha
grid of an ``l1_ratio`` runs geometrically from α_max = max_j |x̃_jᵀ ỹ| / (n·l1) (centred data of
the whole training set) down to ``eps``·α_max; the cross-validated error of a penalty is the mean
over folds of each fold's mean squared error, centring within each fold's training part; the
chosen penalty is the first minimum over alphas (largest alpha on ties) and the first
``l1_ratio`` that is strictly better than the ones before.  Equality with scikit-learn on the
same grid and folds (coefficients, chosen alpha and l1_ratio, predictions) is tested to 1e-6
(``tests/test_elasticnet.py``); our solutions are converged far more tightly than
scikit-learn's default ``tol=1e-4``, so the comparison uses a tight ``tol`` there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

__all__ = ["DEFAULT_TOL", "DEFAULT_MAX_SWEEPS", "alpha_grid", "fold_problems", "penalty_search",
           "SearchResult", "fit_at"]

#: Convergence: stop when no coordinate moved the fit by more than DEFAULT_TOL × SD(y)
#: (maxⱼ Gⱼⱼ Δwⱼ² < tol² · mean(ỹ²)) in a full sweep.
DEFAULT_TOL = 1e-9
#: Most coordinate sweeps for one penalty before giving up (counted, reported as non-converged).
DEFAULT_MAX_SWEEPS = 100_000
#: A centred column with Gⱼⱼ below this is constant in the fold: its coefficient stays 0 (as in
#: scikit-learn's coordinate descent, which skips columns of zero norm).
_ZERO_COLUMN = 1e-12
#: Sweeps after which the duality gap is also checked, and its tolerance relative to mean(ỹ²).
_GAP_AFTER = 200
_GAP_TOL = 1e-15
_GAP_TOL_MAX = 1e-4


# Scratch state of one kernel call (:func:`_work`), kept in four arrays so that the compiled
# functions pass few array arguments (each one costs reference counting on every call, which at
# p ≈ 10 weighs as much as the arithmetic): M (p, p) the current system's Cholesky factor, S (p, p)
# F_A F_Aᵀ of the Woodbury form, vecs (_N_VECS, p) and idx (_N_IDX, p) rows named below.  The factor
# and S are kept between solves only where recomputing them would repeat the very same operations
# in the same order, so the solutions do not depend on what was reused.
_X, _CROSSING, _U, _THETA, _FLOAT_STATE = range(5)
_N_VECS = 5
_SUPPORT, _ACTIVE, _IN_ACTIVE, _FACTOR_SUPPORT, _S_SUPPORT, _GRAD_SUPPORT, _ZEROS, _INT_STATE = range(8)
_N_IDX = 8
#: Entries of the state rows: the length of the support whose factor is in M (−1: none), its kind,
#: the length of the support whose F_A F_Aᵀ is in S (−1: none), the length of the support of the
#: last gradient whose entries on that support were skipped (−1: the gradient is complete); the λ2
#: of the factor.
_FACTOR_M, _FACTOR_KIND, _S_M, _GRAD_M = range(4)
_FACTOR_LAM2 = 0
#: Kinds of factor: of G_AA + λ2 I (_DIRECT) or of λ2 I + F_A F_Aᵀ (_WOODBURY).
_DIRECT, _WOODBURY = 0, 1


@njit(cache=True, nogil=True)
def _cholesky_extend(M, start, m):
    """Cholesky factor of M[:m, :m] in its lower triangle, given that of M[:start, :start] (rows
    ``start`` … m−1 hold the matrix's lower triangle); False if M is not positive definite.

    Every entry is computed by the same operations, in the same order, as in a factorisation from
    scratch (``start`` = 0), so the factor does not depend on ``start``.
    """
    for i in range(start, m):
        for j in range(min(i, start)):
            s = M[i, j]
            for k in range(j):
                s -= M[i, k] * M[j, k]
            M[i, j] = s / M[j, j]
    for j in range(start, m):
        s = M[j, j]
        for k in range(j):
            s -= M[j, k] * M[j, k]
        if s <= 0.0:
            return False
        d = np.sqrt(s)
        M[j, j] = d
        for i in range(j + 1, m):
            s = M[i, j]
            for k in range(j):
                s -= M[i, k] * M[j, k]
            M[i, j] = s / d
    return True


@njit(cache=True, nogil=True)
def _cholesky_substitute(M, vecs, row, m):
    """Solve L Lᵀ z = vecs[row, :m] in place, L the lower triangle of M[:m, :m]."""
    for i in range(m):
        s = vecs[row, i]
        for k in range(i):
            s -= M[i, k] * vecs[row, k]
        vecs[row, i] = s / M[i, i]
    for i in range(m - 1, -1, -1):
        s = vecs[row, i]
        for k in range(i + 1, m):
            s -= M[k, i] * vecs[row, k]
        vecs[row, i] = s / M[i, i]


@njit(cache=True, nogil=True)
def _keep_support(idx, row, n_kept, m):
    """Length of the common beginning of idx[row, :n_kept] and the support idx[_SUPPORT, :m] (0 if
    n_kept < 0); then idx[row, :m] = the support."""
    q = 0
    top = min(n_kept, m)
    while q < top and idx[row, q] == idx[_SUPPORT, q]:
        q += 1
    for a in range(m):
        idx[row, a] = idx[_SUPPORT, a]
    return q


@njit(cache=True, nogil=True)
def _factor_rows_kept(m, kind, lam2, vecs, idx):
    """How many leading rows of the factor in M hold for the support idx[_SUPPORT, :m], ``kind``
    and ``lam2``, and record them as the factor's key.  The factor's leading q × q block depends
    only on the matrix's leading q × q block (the first q support entries, the kind and λ2)."""
    old_m = idx[_INT_STATE, _FACTOR_M]
    if idx[_INT_STATE, _FACTOR_KIND] != kind or vecs[_FLOAT_STATE, _FACTOR_LAM2] != lam2:
        old_m = -1
    q = _keep_support(idx, _FACTOR_SUPPORT, old_m, m)
    idx[_INT_STATE, _FACTOR_M] = m
    idx[_INT_STATE, _FACTOR_KIND] = kind
    vecs[_FLOAT_STATE, _FACTOR_LAM2] = lam2
    if kind == _WOODBURY and old_m != m:
        return 0  # λ2 I + F_A F_Aᵀ depends on the whole support
    return q


@njit(cache=True, nogil=True)
def _support_solve(G, F, c, m, lam1, lam2, M, S, vecs, idx):
    """x_A = (G_AA + λ2 I)⁻¹ (c_A − λ1 θ_A) into vecs[_X, :m] (A = idx[_SUPPORT, :m], θ =
    vecs[_THETA, :m]); False if the system is singular.

    F (r, p) with G = Fᵀ F (centred rows / √n), or r = 0 when p ≤ n: when the support is larger than
    r > 0 (and λ2 > 0) the system is solved in the r-dimensional row space (Woodbury:
    (F_Aᵀ F_A + λ2 I)⁻¹ v = (v − F_Aᵀ (λ2 I + F_A F_Aᵀ)⁻¹ F_A v) / λ2), O(r² m) instead of O(m³).
    What stays the same is kept from the previous solve: along the lasso path (λ2 = 0) the system
    of an unchanged support is the same at every penalty, and coordinates that enter within one
    penalty are appended to the support, so only their rows are factorised (and added to F_A F_Aᵀ).
    """
    r = F.shape[0]
    for a in range(m):
        vecs[_X, a] = c[idx[_SUPPORT, a]] - lam1 * vecs[_THETA, a]
    if lam2 > 0.0 and 0 < r < m:
        s_m = idx[_INT_STATE, _S_M]
        start = s_m if _keep_support(idx, _S_SUPPORT, s_m, m) == s_m else 0
        idx[_INT_STATE, _S_M] = m
        for i in range(r):  # S = F_A F_Aᵀ, summed over the support in order
            for k in range(i + 1):
                acc = S[i, k] if start > 0 else 0.0
                for a in range(start, m):
                    ja = idx[_SUPPORT, a]
                    acc += F[i, ja] * F[k, ja]
                S[i, k] = acc
        for i in range(r):  # u = F_A v
            acc = 0.0
            for a in range(m):
                acc += F[i, idx[_SUPPORT, a]] * vecs[_X, a]
            vecs[_U, i] = acc
        if _factor_rows_kept(m, _WOODBURY, lam2, vecs, idx) < m:
            for i in range(r):  # K = λ2 I + F_A F_Aᵀ
                for k in range(i + 1):
                    M[i, k] = S[i, k]
                M[i, i] += lam2
            if not _cholesky_extend(M, 0, r):
                idx[_INT_STATE, _FACTOR_M] = -1
                return False
        _cholesky_substitute(M, vecs, _U, r)
        for a in range(m):
            ja = idx[_SUPPORT, a]
            acc = vecs[_X, a]
            for i in range(r):
                acc -= F[i, ja] * vecs[_U, i]
            vecs[_X, a] = acc / lam2
        return True
    start = _factor_rows_kept(m, _DIRECT, lam2, vecs, idx)
    for a in range(start, m):  # G_AA + λ2 I, rows not kept
        ja = idx[_SUPPORT, a]
        for b in range(a + 1):
            M[a, b] = G[ja, idx[_SUPPORT, b]]
        M[a, a] += lam2
    if not _cholesky_extend(M, start, m):
        idx[_INT_STATE, _FACTOR_M] = -1
        return False
    _cholesky_substitute(M, vecs, _X, m)
    return True


@njit(cache=True, nogil=True)
def _gradient(G, F, c, w, m, grad, vecs, idx):
    """grad = c − G w for w supported on idx[_SUPPORT, :m] (through F when that is cheaper)."""
    p = w.shape[0]
    r = F.shape[0]
    if 0 < r < m:
        for i in range(r):
            acc = 0.0
            for a in range(m):
                ja = idx[_SUPPORT, a]
                acc += F[i, ja] * w[ja]
            vecs[_U, i] = acc
        for j in range(p):
            acc = c[j]
            for i in range(r):
                acc -= F[i, j] * vecs[_U, i]
            grad[j] = acc
    else:
        for j in range(p):
            acc = c[j]
            for a in range(m):
                ja = idx[_SUPPORT, a]
                acc -= G[j, ja] * w[ja]
            grad[j] = acc


@njit(cache=True, nogil=True)
def _zeros_gradient(G, F, c, w, m, grad, vecs, idx):
    """:func:`_gradient` at the coordinates where w is 0 only (all that the active-set search reads);
    the support is recorded for :func:`_complete_gradient`.  The entries computed are the very
    numbers :func:`_gradient` gives."""
    p = w.shape[0]
    r = F.shape[0]
    n_zero = 0
    for j in range(p):  # branch-free list of the zero coordinates
        idx[_ZEROS, n_zero] = j
        n_zero += w[j] == 0.0
    if 0 < r < m:
        for i in range(r):
            acc = 0.0
            for a in range(m):
                ja = idx[_SUPPORT, a]
                acc += F[i, ja] * w[ja]
            vecs[_U, i] = acc
        for z in range(n_zero):
            j = idx[_ZEROS, z]
            acc = c[j]
            for i in range(r):
                acc -= F[i, j] * vecs[_U, i]
            grad[j] = acc
    else:
        for z in range(n_zero):
            j = idx[_ZEROS, z]
            acc = c[j]
            for a in range(m):
                ja = idx[_SUPPORT, a]
                acc -= G[j, ja] * w[ja]
            grad[j] = acc
    for a in range(m):
        idx[_GRAD_SUPPORT, a] = idx[_SUPPORT, a]
    idx[_INT_STATE, _GRAD_M] = m


@njit(cache=True, nogil=True)
def _complete_gradient(G, F, c, w, grad, vecs, idx):
    """After :func:`_zeros_gradient` (w unchanged since), the rest of grad = c − G w: the numbers
    :func:`_gradient` on the same support would have given (coordinate descent needs them all)."""
    m = idx[_INT_STATE, _GRAD_M]
    if m >= 0:
        for a in range(m):
            idx[_SUPPORT, a] = idx[_GRAD_SUPPORT, a]
        _gradient(G, F, c, w, m, grad, vecs, idx)
        idx[_INT_STATE, _GRAD_M] = -1


@njit(cache=True, nogil=True)
def _feature_sign(G, F, c, w, grad, lam1, lam2, M, S, vecs, idx, max_steps):
    """Exact solution by an active-set (feature-sign) search from the warm start ``w``; False if it
    stalls or meets a singular system (``w``, ``grad`` are then still a valid, improved iterate).

    Lee, Battle, Raina & Ng (2007), "Efficient sparse coding algorithms" (NIPS 19): on the current
    support A with signs θ the objective is quadratic and its minimiser x_A is one linear solve; move
    from w towards x until the first coefficient reaches zero (it leaves A) or to x; at x, add the
    inactive coordinates that violate |c_j − G_jA x_A| ≤ λ1 (Karush–Kuhn–Tucker) with the signs
    of their gradients (all at once; one at a time, most violating first, if an entering one came
    out with the wrong sign), or stop: x is then the exact solution.  Each step lowers the
    objective.  The support is idx[_SUPPORT, :m], its signs vecs[_THETA, :m].
    """
    p = w.shape[0]
    bound = lam1 * (1.0 + 1e-9) + 1e-300
    m = 0
    for j in range(p):
        if w[j] != 0.0:
            idx[_SUPPORT, m] = j
            vecs[_THETA, m] = 1.0 if w[j] > 0.0 else -1.0
            m += 1
    at_minimum = False
    single = False  # add one violator at a time (after adding all of them at once failed)
    for _ in range(max_steps):
        start = m
        if at_minimum:
            best, worst = -1, bound
            for j in range(p):
                if w[j] == 0.0 and G[j, j] >= _ZERO_COLUMN and abs(grad[j]) > bound:
                    if single:
                        if abs(grad[j]) > worst:
                            best, worst = j, abs(grad[j])
                    else:
                        idx[_SUPPORT, m] = j
                        vecs[_THETA, m] = 1.0 if grad[j] > 0.0 else -1.0
                        m += 1
            if single and best >= 0:
                idx[_SUPPORT, m] = best
                vecs[_THETA, m] = 1.0 if grad[best] > 0.0 else -1.0
                m += 1
            if m == start:
                return True
        if not _support_solve(G, F, c, m, lam1, lam2, M, S, vecs, idx):
            return False
        # entering coordinates whose solution has the wrong sign leave again (w does not move)
        kept = 0
        for a in range(m):
            if w[idx[_SUPPORT, a]] == 0.0 and vecs[_X, a] * vecs[_THETA, a] <= 0.0:
                continue
            idx[_SUPPORT, kept] = idx[_SUPPORT, a]
            vecs[_THETA, kept] = vecs[_THETA, a]
            vecs[_X, kept] = vecs[_X, a]
            kept += 1
        if kept < m:
            if single:
                return False
            single = at_minimum and kept == start
            m = kept
            at_minimum = False
            continue
        step = 1.0
        for a in range(m):
            vecs[_CROSSING, a] = 2.0
            xa = vecs[_X, a]
            if xa * vecs[_THETA, a] <= 0.0:
                wa = w[idx[_SUPPORT, a]]
                vecs[_CROSSING, a] = wa / (wa - xa) if wa != 0.0 else 0.0
                if vecs[_CROSSING, a] < step:
                    step = vecs[_CROSSING, a]
        if step <= 0.0:
            return False
        kept = 0
        for a in range(m):
            ja = idx[_SUPPORT, a]
            xa = vecs[_X, a]
            value = xa if step == 1.0 else w[ja] + step * (xa - w[ja])
            if step < 1.0 and (vecs[_CROSSING, a] <= step or value * vecs[_THETA, a] <= 0.0):
                value = 0.0
            w[ja] = value
            if value != 0.0:
                idx[_SUPPORT, kept] = ja
                vecs[_THETA, kept] = vecs[_THETA, a]
                kept += 1
        m = kept
        _zeros_gradient(G, F, c, w, m, grad, vecs, idx)
        at_minimum = step == 1.0
    return False


@njit(cache=True, nogil=True)
def _duality_gap(c, w, grad, yy, lam1, lam2):
    """Primal − dual objective of the elastic net at ``w`` (≥ 0; scikit-learn's Gram-form gap / n).

    yy = ỹᵀỹ / n; grad = c − G w.
    """
    cw = 0.0
    wg = 0.0
    l1norm = 0.0
    l2norm = 0.0
    dual_norm = 0.0
    for j in range(w.shape[0]):
        cw += c[j] * w[j]
        wg += w[j] * grad[j]
        l1norm += abs(w[j])
        l2norm += w[j] * w[j]
        v = abs(grad[j] - lam2 * w[j])
        if v > dual_norm:
            dual_norm = v
    r2 = yy - cw - wg
    if dual_norm > lam1:
        const = lam1 / dual_norm
        gap = 0.5 * r2 * (1.0 + const * const)
    else:
        const = 1.0
        gap = r2
    return gap + lam1 * l1norm - const * (yy - cw) + 0.5 * lam2 * l2norm * (1.0 + const * const)


@njit(cache=True, nogil=True)
def _sweep(G, w, grad, coords, n_coords, lam1, lam2):
    """One cyclic pass over ``coords[:n_coords]``; returns max Gⱼⱼ Δwⱼ².  grad (p,) = c − G w is
    kept up to date."""
    p = w.shape[0]
    biggest = 0.0
    for a in range(n_coords):
        j = coords[a]
        gjj = G[j, j]
        if gjj < _ZERO_COLUMN:
            continue
        old = w[j]
        z = grad[j] + gjj * old
        if z > lam1:
            new = (z - lam1) / (gjj + lam2)
        elif z < -lam1:
            new = (z + lam1) / (gjj + lam2)
        else:
            new = 0.0
        if new != old:
            d = new - old
            w[j] = new
            for k in range(p):
                grad[k] -= d * G[k, j]
            change = gjj * d * d
            if change > biggest:
                biggest = change
    return biggest


@njit(cache=True, nogil=True)
def _solve(G, F, c, w, grad, n_active, lam1, lam2, tol2, yy, max_sweeps, M, S, vecs, idx):
    """Elastic net at one penalty from the warm start ``w`` (in place); returns (n_active, converged).

    The exact active-set search (:func:`_feature_sign`) first: from the previous penalty's solution
    it usually needs one or two linear solves.  Where it stalls (a singular support system: a
    lasso with as many non-zero coefficients as the fold has distinct subjects, as in bootstrap
    resamples), coordinate descent takes over: full sweeps, then sweeps over the active set until
    it settles, until no coordinate moves by more than ``tol2`` (maxⱼ Gⱼⱼ Δwⱼ² ≤ tol2) or, after
    :data:`_GAP_AFTER` sweeps, the duality gap is small (1e-15 · yy, loosened tenfold every
    :data:`_GAP_AFTER` sweeps up to scikit-learn's default 1e-4 · yy: such problems end no worse
    than scikit-learn does).  idx[_ACTIVE]: coordinates ever non-zero, the first ``n_active`` used
    (held-out predictions loop over them); F (r, p) with G = Fᵀ F.
    """
    p = w.shape[0]
    done = _feature_sign(G, F, c, w, grad, lam1, lam2, M, S, vecs, idx, 4 * p + 10)
    if not done:
        _complete_gradient(G, F, c, w, grad, vecs, idx)
        everyone = np.arange(p)
        active = idx[_ACTIVE]
    sweeps = 0
    while not done:
        biggest = _sweep(G, w, grad, everyone, p, lam1, lam2)
        sweeps += 1
        n_active = _note_active(w, n_active, idx)
        if biggest <= tol2:
            break
        if sweeps >= max_sweeps:
            return n_active, False
        if sweeps >= _GAP_AFTER:
            relax = min(10.0 ** ((sweeps - _GAP_AFTER) / _GAP_AFTER), _GAP_TOL_MAX / _GAP_TOL)
            if _duality_gap(c, w, grad, yy, lam1, lam2) <= _GAP_TOL * relax * yy:
                break
        for _ in range(10):
            biggest = _sweep(G, w, grad, active, n_active, lam1, lam2)
            sweeps += 1
            if biggest <= tol2:
                break
    return _note_active(w, n_active, idx), True


@njit(cache=True, nogil=True)
def _note_active(w, n_active, idx):
    """Append the non-zero coordinates of ``w`` missing from idx[_ACTIVE, :n_active] (membership
    flags in idx[_IN_ACTIVE]); the new count."""
    for j in range(w.shape[0]):
        if w[j] != 0.0 and idx[_IN_ACTIVE, j] == 0:
            idx[_IN_ACTIVE, j] = 1
            idx[_ACTIVE, n_active] = j
            n_active += 1
    return n_active


@njit(cache=True, nogil=True)
def _work(p):
    """Scratch arrays (M, S, vecs, idx), see _X … _INT_STATE; nothing kept yet."""
    idx = np.zeros((_N_IDX, max(p, 4)), dtype=np.int64)
    idx[_INT_STATE, _FACTOR_M] = -1
    idx[_INT_STATE, _S_M] = -1
    idx[_INT_STATE, _GRAD_M] = -1
    return np.zeros((p, p)), np.zeros((p, p)), np.zeros((_N_VECS, max(p, 1))), idx


@njit(cache=True, nogil=True)
def _restart_path(idx):
    """A path starts at w = 0 (the gradient is then complete: c) with no active coordinates."""
    idx[_IN_ACTIVE, :] = 0
    idx[_INT_STATE, _GRAD_M] = -1


@njit(cache=True, nogil=True)
def _path_errors(G, F, C, Xte, Yte, alphas, l1_ratios, tol2, yy, max_sweeps, sq_err):
    """Add each penalty's mean squared held-out error to ``sq_err`` (B, L, A); returns failures.

    G (p, p), C (p, B) = Xcᵀ Yc / n of the fold's training part; Xte (t, p), Yte (t, B) held-out
    rows centred on the training part's means; alphas (B, L, A) decreasing; tol2, yy (B,): squared
    tolerance and mean squared centred outcome of the whole training set.
    """
    p, n_out = C.shape
    n_test = Xte.shape[0]
    w = np.zeros(p)
    grad = np.zeros(p)
    M, S, vecs, idx = _work(p)
    failures = 0
    for b in range(n_out):
        c = C[:, b].copy()
        for li in range(l1_ratios.shape[0]):
            l1 = l1_ratios[li]
            w[:] = 0.0
            grad[:] = C[:, b]
            _restart_path(idx)
            n_active = 0
            for ai in range(alphas.shape[2]):
                alpha = alphas[b, li, ai]
                n_active, ok = _solve(G, F, c, w, grad, n_active, alpha * l1, alpha * (1.0 - l1), tol2[b],
                                      yy[b], max_sweeps, M, S, vecs, idx)
                if not ok:
                    failures += 1
                total = 0.0
                for t in range(n_test):
                    pred = 0.0
                    for a in range(n_active):
                        j = idx[_ACTIVE, a]
                        pred += Xte[t, j] * w[j]
                    err = pred - Yte[t, b]
                    total += err * err
                sq_err[b, li, ai] += total / n_test
    return failures


@njit(cache=True, nogil=True)
def _path_coefficients(G, F, C, alphas, l1_ratios, l1_index, alpha_index, tol2, yy, max_sweeps, W):
    """Coefficients W (B, p) at penalty (l1_index[b], alpha_index[b]) of each outcome, following
    the path of that l1_ratio from its largest alpha (warm starts); returns failures."""
    p, n_out = C.shape
    grad = np.zeros(p)
    M, S, vecs, idx = _work(p)
    failures = 0
    for b in range(n_out):
        c = C[:, b].copy()
        li = l1_index[b]
        l1 = l1_ratios[li]
        w = W[b]
        w[:] = 0.0
        grad[:] = C[:, b]
        _restart_path(idx)
        n_active = 0
        for ai in range(alpha_index[b] + 1):
            alpha = alphas[b, li, ai]
            n_active, ok = _solve(G, F, c, w, grad, n_active, alpha * l1, alpha * (1.0 - l1), tol2[b], yy[b],
                                  max_sweeps, M, S, vecs, idx)
            if not ok:
                failures += 1
    return failures


def alpha_grid(X: np.ndarray, Y: np.ndarray, l1_ratios: Sequence[float], n_alphas: int,
               eps: float = 1e-3) -> np.ndarray:
    """scikit-learn's alpha grid (``_alpha_grid``) for every outcome: shape (B, L, n_alphas), decreasing.

    X (n, p) and Y (n, B): the data the penalty search is given (centred here).
    """
    n = X.shape[0]
    xty = X.T @ (Y - Y.mean(axis=0))
    top = np.sqrt(np.max(xty ** 2, axis=0))[:, None] / (n * np.asarray(l1_ratios, dtype=float))[None, :]
    tiny = np.finfo(np.float64).resolution
    top = np.where(top <= tiny, tiny, top)
    bottom = np.where(top <= tiny, tiny, top * eps)
    return np.geomspace(top, bottom, n_alphas, axis=-1)


@dataclass(frozen=True)
class FoldProblem:
    """One fold's shared quantities: G (p, p), C (p, B), centred held-out Xte (t, p), Yte (t, B), and
    F (n_train, p) = centred training rows / √n_train when p > n_train (else (0, p)), G = Fᵀ F."""

    G: np.ndarray
    F: np.ndarray
    C: np.ndarray
    Xte: np.ndarray
    Yte: np.ndarray


def fold_problems(X: np.ndarray, Y: np.ndarray, folds: Sequence[tuple[np.ndarray, np.ndarray]]):
    """The :class:`FoldProblem` of every (train, test) fold, G down-dated from Xᵀ X."""
    XtX, XtY = X.T @ X, X.T @ Y
    sx, sy = X.sum(axis=0), Y.sum(axis=0)
    for train, test in folds:
        Xt, Yt = X[test], Y[test]
        n = len(train)
        if len(test) <= len(train):
            mx, my = (sx - Xt.sum(axis=0)) / n, (sy - Yt.sum(axis=0)) / n
            G = (XtX - Xt.T @ Xt) / n - np.outer(mx, mx)
            C = (XtY - Xt.T @ Yt) / n - np.outer(mx, my)
        else:
            Xr, Yr = X[train], Y[train]
            mx, my = Xr.mean(axis=0), Yr.mean(axis=0)
            Xc = Xr - mx
            G, C = Xc.T @ Xc / n, Xc.T @ (Yr - my) / n
        F = _row_factor(X[train], mx)
        yield FoldProblem(np.ascontiguousarray(G), F, np.ascontiguousarray(C), Xt - mx, Yt - my)


def _row_factor(X: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """(X − mean) / √n when there are more columns than rows (used by :func:`_support_solve`), else (0, p)."""
    n, p = X.shape
    if p <= n:
        return np.zeros((0, p))
    return np.ascontiguousarray((X - mean) / np.sqrt(n))


def _outcome_scale(Y: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """(squared tolerance, mean squared centred outcome) of each column of Y, floored for constant ones."""
    yy = np.mean((Y - Y.mean(axis=0)) ** 2, axis=0)
    yy = np.where(yy > 0, yy, 1.0)
    return tol ** 2 * yy, yy


@dataclass(frozen=True)
class SearchResult:
    """Cross-validated penalty search of B outcomes.

    alphas (B, L, A) grids; cv_mse (B, L, A) mean over folds of the held-out MSE; l1_index,
    alpha_index (B,) chosen penalty; alpha, l1_ratio, min_mse (B,) its values; failures: solves
    that hit the sweep limit.
    """

    alphas: np.ndarray
    cv_mse: np.ndarray
    l1_index: np.ndarray
    alpha_index: np.ndarray
    alpha: np.ndarray
    l1_ratio: np.ndarray
    min_mse: np.ndarray
    failures: int


def penalty_search(X: np.ndarray, Y: np.ndarray, folds, l1_ratios: Sequence[float], n_alphas: int, *,
                   eps: float = 1e-3, tol: float = DEFAULT_TOL,
                   max_sweeps: int = DEFAULT_MAX_SWEEPS) -> SearchResult:
    """``ElasticNetCV``'s penalty choice for every column of Y.

    X (n, p): standardised predictors of the training set; Y (n, B) outcomes; folds: (train,
    test) index arrays into the n rows; l1_ratios (L,) in (0, 1].
    """
    X = np.asarray(X, dtype=float)
    Y = np.asarray(Y, dtype=float)
    ratios = np.asarray(l1_ratios, dtype=float)
    alphas = alpha_grid(X, Y, ratios, n_alphas, eps)
    sq_err = np.zeros_like(alphas)
    tol2, yy = _outcome_scale(Y, tol)
    folds = list(folds)
    failures = 0
    for prob in fold_problems(X, Y, folds):
        failures += _path_errors(prob.G, prob.F, prob.C, prob.Xte, prob.Yte, alphas, ratios, tol2, yy, max_sweeps, sq_err)
    cv_mse = sq_err / len(folds)
    best_alpha = np.argmin(cv_mse, axis=2)                       # first minimum per l1_ratio
    best_per_l1 = np.take_along_axis(cv_mse, best_alpha[:, :, None], axis=2)[:, :, 0]
    l1_index = np.argmin(best_per_l1, axis=1)                      # first strictly better l1_ratio
    rows = np.arange(Y.shape[1])
    alpha_index = best_alpha[rows, l1_index]
    return SearchResult(alphas=alphas, cv_mse=cv_mse, l1_index=l1_index, alpha_index=alpha_index,
                        alpha=alphas[rows, l1_index, alpha_index], l1_ratio=ratios[l1_index],
                        min_mse=best_per_l1[rows, l1_index], failures=failures)


def fit_at(X: np.ndarray, Y: np.ndarray, search: SearchResult, l1_ratios: Sequence[float], *,
           tol: float = DEFAULT_TOL, max_sweeps: int = DEFAULT_MAX_SWEEPS):
    """Refit on all n rows at each outcome's chosen penalty: (W (B, p), intercept (B,), failures).

    W is in the units of X (standardised), the intercept that of Y.
    """
    X = np.asarray(X, dtype=float)
    Y = np.asarray(Y, dtype=float)
    n = X.shape[0]
    mx, my = X.mean(axis=0), Y.mean(axis=0)
    Xc = X - mx
    G = np.ascontiguousarray(Xc.T @ Xc / n)
    C = np.ascontiguousarray(Xc.T @ (Y - my) / n)
    W = np.zeros((Y.shape[1], X.shape[1]))
    failures = _path_coefficients(G, _row_factor(X, mx), C, search.alphas, np.asarray(l1_ratios, dtype=float),
                                  search.l1_index.astype(np.int64), search.alpha_index.astype(np.int64),
                                  *_outcome_scale(Y, tol), max_sweeps, W)
    return W, my - W @ mx, failures
