"""Parametric Empirical Bayes (PEB) over first-level DCM posteriors.

The second-level model of Friston et al. (2016, NeuroImage 128:413, "Bayesian model reduction
and empirical Bayes for group (DCM) studies"):

    first level    q(θ_i) = N(qE_i, qC_i) under the prior N(pE_i, pC_i)
    second level   θ_i = (X_i ⊗ I_P) β + ε_i,   ε_i ~ N(0, Π(γ)⁻¹),   Π(γ) = e⁻⁸ Q_0 + Σ_j exp(γ_j) Q_j
    third level    β ~ N([PE, 0, …, 0], Xc ⊗ PC/alpha),   γ ~ N(hE, hC)

X (subjects × K, first column ones) is the between-subject design, P the number of DCM
parameters taken to the second level, PE/PC the mean of the subjects' first-level priors of
those parameters, Q_0 = (PC/beta)⁻¹ and Q_j its components ("single": Q_1 = Q_0; "all": one per
parameter; or groups of parameters, e.g. one per DCM field). At γ = 0 the between-subject covariance is PC/16.
Each subject enters only through Bayesian model reduction (Friston & Penny 2011): the empirical
prior N((X_i ⊗ I)β, Π⁻¹) replaces its first-level prior, giving the change in its log evidence
ΔF_i and its empirical-Bayes posterior.

Two inversion schemes (``fit_peb(method=...)``):

* ``"spm"`` (default) reproduces SPM12's ``spm_dcm_peb`` (r7771) to rounding error (checked
  against SPM's outputs in ``tests/data/spm/spm_peb``: Ep, Cp, Eh, Ch and F to ~1e-15 relative,
  the same number of iterations). Its conventions: with more than one subject each first-level
  posterior covariance (restricted to the second-level parameters) is first shrunk to
  ``inv(inv(qC_i) + inv(pC_i)/16)`` ("to accommodate inefficient inversions"); the design's
  prior covariance is scaled per column, ``Xc = diag(N / Σ_i X_ik²)``; everything is computed in
  the basis U of PC's singular vectors (sorted by singular value); β and γ are updated jointly by
  regularised Fisher scoring (SPM's ``spm_dx``: ``dp = (expm(τH) − I) H⁻¹ ∂F/∂p`` with
  ``τ = exp(t − ln|H|/n)``; t starts at −4, rises by 1/4 after each accepted step to at most 2,
  and after a step that lowered F the previous expansion point (β, γ only: the next step uses the
  rejected point's gradients and curvatures, as SPM's) is restored and t falls by 1, to no less
  than −4);
  γ moves by tanh of its step; when the joint step's 1-norm reaches 8 it is recomputed without
  the β–γ cross-curvature; iterations stop after the 5th once t ≤ −4 or the last accepted gain
  in F is below 1e-4 (at most 64). Gradients and curvatures are exact for the Gaussian
  reduced evidence, including the γ–γ term dEᵀΠ sC Π dE. Subject reductions use SPM's
  regularised BMR (``spm_log_evidence_reduce``, :func:`ketflow.dcm.bmr.spm_reduced_evidence`).
  F = Σ_i (ΔF_i + F_i) − Fc with Fc = bᵀ bP b/2 + γᵀ gP γ/2 − ln|diag(bP, gP) · Cp|/2 (SPM
  takes b, not b − bE, in the first term; Cp here is the joint posterior covariance *with* the
  β–γ cross-curvature, while the reported Cp and Ch are the inverses of the β and γ blocks
  alone). F, Cp, Ch and the between-subject covariance are those of the last expansion point;
  Ep and Eh are returned after one more update.

* ``"exact"`` integrates β out exactly (ΔF_i is exactly quadratic in the empirical prior mean, so
  the posterior of β given γ is Gaussian and found in one Newton step) and optimises the few
  log-precisions γ (L-BFGS-B within ±8 prior SDs), with a Laplace approximation over γ for the
  free energy. By default it uses neither SPM's shrinkage of the first-level covariances nor its
  per-column prior scaling (``shrink_first_level``, ``scale_prior_by_design`` switch either on):
  this is ketflow's scheme before SPM's reference outputs existed. On the SPM reference data it
  differs from SPM by up to 0.60 posterior SD in the group effects and by 0.17 in γ; the
  decomposition of that difference into the three conventions, and where each scheme is
  better calibrated, are measured in docs/dcm.md ("PEB: SPM12's scheme and the exact scheme").

Subject-specific first-level priors (SPM reduces each subject under its own ``M.pE, M.pC``): pE,
pC may be given per subject, e.g. when models differ in which parameters are switched on, or
when A's prior was projected onto data-dependent principal modes (more than 8 regions,
:func:`ketflow.dcm.priors.constrain_to_modes`). BMR of subject i then uses its own prior. With
``"exact"`` the empirical prior is also restricted to the directions that prior leaves free
(R_i = projector onto the range of pC_i: mean pE_i + R_i (X_i β − pE_i), covariance R_i Π⁻¹ R_i),
because a second level cannot free a parameter the first level fixed; SPM's regularised BMR
removes the directions a subject's prior fixes before reducing. The precision components
and the third-level prior use the mean of the subjects' priors, as SPM does.

Second-level Bayesian model reduction and averaging, model-space (family) comparison and
contrasts are in :mod:`ketflow.dcm.peb_reduce`, leave-one-out prediction in
:mod:`ketflow.dcm.peb_loo`, and the longitudinal (PEB-of-PEBs) analysis in
:mod:`ketflow.dcm.peb_longitudinal`.

Parameter ordering: β is (K, P) — row k holds the effect of design column k on each of the P
parameters; covariances over β use the flattened order ``k * P + p`` (SPM's ``Ep(:)`` of its
P × K matrix).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from ketflow.dcm.bmr import bayesian_model_reduction, spm_inv, spm_reduced_evidence
from ketflow.dcm.vl import _logdet_abs, _regularised_step  # SPM's spm_dx and its ln|H| convention

__all__ = [
    "PEBResult",
    "SPM_PEB",
    "select_parameters",
    "between_subject_design",
    "check_design",
    "precision_components",
    "peb_conditional",
    "peb_variational",
    "fit_peb",
    "empirical_bayes_posteriors",
]

#: SPM12's second-level settings (``spm_dcm_peb``): within:between precision ratio, third-level
#: prior shrinkage, log-precision prior mean and variance, iterations, shrinkage of first-level
#: covariances (inverse fraction of the prior precision added).
SPM_PEB = {"beta": 16.0, "alpha": 1.0, "hE": 0.0, "hC": 1.0 / 16, "maxit": 64, "shrink": 16.0}


def select_parameters(names: Sequence[str], prior_variance: np.ndarray, fields: Sequence[str]) -> list[int]:
    """Indices of the parameters taken to the second level (SPM's ``spm_find_pC``).

    names : (n,) parameter labels starting with their field (``A_…``, ``B_…``, ``C_…``);
    prior_variance : (n,) or (N, n) first-level prior variances (per subject: a parameter is
    taken when it is free in some subject); fields : e.g. ("A", "B").
    A parameter is kept when its field is listed and its prior variance exceeds
    mean(q[q < 1024]) / 1024 over all parameters' variances q. Returns ascending indices.
    """
    var = np.atleast_2d(np.asarray(prior_variance, dtype=float)).max(axis=0)
    if var.size != len(names):
        raise ValueError(f"{len(names)} parameter names but {var.size} prior variances")
    small = var[var < 1024]
    threshold = small.mean() / 1024 if small.size else 0.0
    prefixes = tuple(f"{f}_" for f in fields)
    return [i for i, name in enumerate(names) if name.startswith(prefixes) and var[i] > threshold]


def between_subject_design(arm: Sequence[str], arm_levels: tuple[str, str],
                           covariate: Sequence[float] | None = None, *,
                           covariate_name: str = "covariate",
                           interaction: bool = True) -> tuple[np.ndarray, list[str]]:
    """Second-level design [mean, arm, covariate, arm × covariate] and its column names.

    arm : (N,) arm labels; arm_levels : (control, active), coded −0.5/+0.5;
    covariate : (N,) between-subject variable (e.g. CAPS-5 change), z-scored so
    its effects are per SD.  Every column after the constant is mean-centred, so
    β[0] is the group mean (as SPM's PEB recommends); the interaction is the
    product of the centred arm code and the z-scored covariate, centred again.
    """
    labels = np.asarray(arm).astype(str)
    unknown = sorted(set(labels) - set(arm_levels))
    if unknown:
        raise ValueError(f"arm labels {unknown} are not among arm_levels {arm_levels}")
    code = np.where(labels == arm_levels[1], 0.5, -0.5)
    code = code - code.mean()
    columns, names = [np.ones(labels.size), code], ["mean", "arm"]
    if covariate is not None:
        cov = np.asarray(covariate, dtype=float)
        if cov.shape != labels.shape or np.isnan(cov).any():
            raise ValueError("covariate must be (N,) without missing values")
        if cov.std() == 0:
            raise ValueError(f"the covariate {covariate_name} has the same value for every subject")
        z = (cov - cov.mean()) / cov.std()
        columns.append(z)
        names.append(covariate_name)
        if interaction:
            prod = code * z
            columns.append(prod - prod.mean())
            names.append(f"arm:{covariate_name}")
    return np.column_stack(columns), names


def check_design(X: np.ndarray, names: Sequence[str] | None = None) -> np.ndarray:
    """The design as a float (N, K) array, or a ValueError naming the problem.

    The first column must be ones (the group mean); the design must have full column rank
    (a rank-deficient design leaves some effects unidentified, and SPM's per-column prior
    scaling N / Σx² is undefined for an all-zero column).
    """
    X = np.asarray(X, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    names = list(names) if names is not None else [f"column {k}" for k in range(X.shape[1])]
    if not np.all(np.isfinite(X)):
        raise ValueError("the design has missing or infinite values")
    if not np.allclose(X[:, 0], 1.0):
        raise ValueError("the first design column must be ones (the group mean)")
    rank = np.linalg.matrix_rank(X)
    if rank < X.shape[1]:
        raise ValueError(f"the design ({X.shape[0]} subjects x {X.shape[1]} columns {', '.join(names)}) is "
                         f"rank-deficient (rank {rank}): some effects cannot be told apart")
    return X


def precision_components(pC: np.ndarray, components: str | Sequence[Sequence[int]] = "single",
                         beta: float = 16.0) -> list[np.ndarray]:
    """Between-subject precision components Q_j (each (P, P)).

    components : 'single' (one for all parameters), 'all' (one per parameter)
    or a partition of range(P) into groups (e.g. one group per DCM field).
    Q_j = beta · E_j pC⁻¹ E_j, so Σ_j Q_j = beta · pC⁻¹ for a diagonal pC.
    """
    pC = np.atleast_2d(np.asarray(pC, dtype=float))
    groups = _component_groups(components, pC.shape[0])
    prec = np.linalg.inv(pC)
    out = []
    for g in groups:
        sel = np.zeros(pC.shape[0])
        sel[g] = 1.0
        out.append(beta * (sel[:, None] * prec * sel[None, :]))
    return out


def _component_groups(components, n: int) -> list[list[int]]:
    if isinstance(components, str):
        if components == "single":
            return [list(range(n))]
        if components == "all":
            return [[i] for i in range(n)]
        raise ValueError(f"components must be 'single', 'all' or index groups, not {components!r}")
    groups = [list(g) for g in components]
    if sorted(i for g in groups for i in g) != list(range(n)):
        raise ValueError(f"component groups must partition the {n} parameters exactly once")
    return groups


def _check_inputs(qE, qC, pE, pC, X):
    """Validated arrays: qE (N, P), qC (N, P, P), per-subject pE (N, P) and pC (N, P, P),
    the reference prior (P,), (P, P) (the subjects' mean) and X (N, K)."""
    qE = np.atleast_2d(np.asarray(qE, dtype=float))
    n_sub, n_par = qE.shape
    qC = np.asarray(qC, dtype=float).reshape(n_sub, n_par, n_par)
    pE = np.asarray(pE, dtype=float)
    pC = np.asarray(pC, dtype=float)
    pEs = np.broadcast_to(pE.ravel(), (n_sub, n_par)) if pE.ndim <= 1 else pE
    pCs = np.broadcast_to(np.atleast_2d(pC), (n_sub, n_par, n_par)) if pC.ndim <= 2 else pC
    X = np.asarray(X, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    if pEs.shape != (n_sub, n_par) or pCs.shape != (n_sub, n_par, n_par):
        raise ValueError(f"pE, pC must be ({n_par},), ({n_par}, {n_par}) or per subject ({n_sub}, {n_par}), "
                         f"({n_sub}, {n_par}, {n_par}) to match qE {qE.shape}")
    if X.shape[0] != n_sub:
        raise ValueError(f"design has {X.shape[0]} rows for {n_sub} subjects")
    if not np.allclose(X[:, 0], 1.0):
        raise ValueError("the first design column must be ones (the group mean)")
    shared = pE.ndim <= 1 and pC.ndim <= 2
    ref_E = pEs[0] if shared else pEs.mean(axis=0)
    ref_C = pCs[0] if shared else pCs.mean(axis=0)
    if np.min(np.linalg.eigvalsh(ref_C)) <= 0:
        raise ValueError("pC must be positive definite: take only parameters with prior variance "
                         "to the second level")
    return qE, qC, np.ascontiguousarray(pEs), np.ascontiguousarray(pCs), ref_E, ref_C, X


def _design_scaling(X: np.ndarray) -> np.ndarray:
    """SPM's per-column scaling of the third-level prior, diag(N / Σ_i X_ik²) (K, K)."""
    ss = np.sum(X ** 2, axis=0)
    if np.any(ss == 0):
        raise ValueError("a design column is all zeros")
    return np.diag(X.shape[0] / ss)


def _empirical_prior(pE_i, pC_i, rE, cov_r, prec):
    """The empirical prior of a subject within its first-level free subspace.

    Returns (rE_i, rC_i, Π_i): mean, covariance and (pseudo-inverse) precision. With a
    full-rank first-level prior these are rE, cov_r and prec themselves.
    """
    vals, vecs = np.linalg.eigh((pC_i + pC_i.T) / 2)
    free = vecs[:, vals > 1e-12 * max(vals.max(), np.finfo(float).tiny)]
    if free.shape[1] == pC_i.shape[0]:
        return rE, cov_r, prec
    R = free @ free.T
    rC_i = R @ cov_r @ R
    Pi = free @ np.linalg.inv(free.T @ cov_r @ free) @ free.T
    return pE_i + R @ (rE - pE_i), (rC_i + rC_i.T) / 2, (Pi + Pi.T) / 2


@dataclass(frozen=True)
class PEBResult:
    """Second-level posterior.

    Ep : (K, P) posterior means of β; Cp : (K·P, K·P) covariance (order k·P + p).
    Eh, Ch : log-precision posterior mean (m,) and covariance (m, m).
    F : free energy (log evidence) of the PEB model; relative to the first-level models under
        their own priors unless their free energies were given (``first_level_F``: then
        absolute, as SPM's).
    between_covariance : (P, P) random-effects covariance Π(Eh)⁻¹ (SPM's ``Ce``).
    subject_means, subject_covariances : (N, P), (N, P, P) empirical-Bayes posteriors of each
        subject's second-level parameters (its first-level posterior reduced under
        N(X_i Ep, between_covariance)).
    bE, bC : (K, P), (K·P, K·P) third-level prior; pE, pC: first-level (mean) prior;
    X : (N, K) design; components : the Q_j; hE, hC: settings.
    method : "spm" or "exact"; n_iterations, converged : of the scheme;
    complexity : SPM's Fc at the last expansion point (used by the empirical-Bayes first-level
        free energies, :func:`empirical_bayes_posteriors`); settings : everything else used.
    """

    Ep: np.ndarray
    Cp: np.ndarray
    Eh: np.ndarray
    Ch: np.ndarray
    F: float
    between_covariance: np.ndarray
    subject_means: np.ndarray
    subject_covariances: np.ndarray
    bE: np.ndarray
    bC: np.ndarray
    pE: np.ndarray
    pC: np.ndarray
    X: np.ndarray
    components: tuple
    hE: float
    hC: float
    method: str = "exact"
    n_iterations: int = 0
    converged: bool = True
    complexity: float = 0.0
    settings: dict | None = None

    @property
    def Ep_sd(self) -> np.ndarray:
        """(K, P) posterior standard deviations."""
        return np.sqrt(np.clip(np.diag(self.Cp), 0, None)).reshape(self.Ep.shape)


def peb_conditional(qE, qC, pE, pC, X, gamma, components, *, alpha: float = 1.0, bC=None):
    """Posterior of β given log-precisions ``gamma``, exact under BMR (the ``"exact"`` scheme).

    qE (N, P), qC (N, P, P): first-level posteriors; pE (P,) or (N, P), pC (P, P) or
    (N, P, P): their prior(s); X (N, K); gamma (m,); components: list of m (P, P) matrices Q_j;
    bC: third-level prior covariance (K·P, K·P), default I_K ⊗ pC/alpha.
    Returns (Ep (K, P), Cp (K·P, K·P), F_gamma, subject means (N, P),
    subject covariances (N, P, P)), where F_gamma = log p(data | γ) relative to
    the first-level models (β integrated out exactly).
    """
    qE, qC, pEs, pCs, ref_E, ref_C, X = _check_inputs(qE, qC, pE, pC, X)
    n_sub, n_par = qE.shape
    n_cov = X.shape[1]
    prec = sum(np.exp(g) * Q for g, Q in zip(np.atleast_1d(gamma), components))
    cov_r = np.linalg.inv(prec)
    bE = np.zeros((n_cov, n_par))
    bE[0] = ref_E
    b_prec = np.linalg.inv(bC) if bC is not None else np.kron(np.eye(n_cov), np.linalg.inv(ref_C) * alpha)
    beta0 = bE.ravel()
    grad = np.zeros(n_cov * n_par)
    curv = np.zeros((n_cov * n_par, n_cov * n_par))
    dF0 = 0.0
    sEs = np.zeros((n_sub, n_par))
    sCs = np.zeros((n_sub, n_par, n_par))
    precs = []
    for i in range(n_sub):
        A = np.kron(X[i][None, :], np.eye(n_par))
        rE_i, rC_i, prec_i = _empirical_prior(pEs[i], pCs[i], A @ beta0, cov_r, prec)
        dF, sE, sC = bayesian_model_reduction(qE[i], qC[i], pEs[i], pCs[i], rE_i, rC_i)
        dF0 += dF
        grad += A.T @ prec_i @ (sE - rE_i)
        curv += A.T @ (prec_i - prec_i @ sC @ prec_i) @ A
        sEs[i], sCs[i] = sE, sC
        precs.append(prec_i)
    post_prec = curv + b_prec
    post_cov = np.linalg.inv(post_prec)
    step = post_cov @ grad  # beta0 is the prior mean, so the prior gradient vanishes there
    beta = beta0 + step
    sum_dF = dF0 + grad @ step - 0.5 * step @ curv @ step
    _, logdet = np.linalg.slogdet(post_prec @ np.linalg.inv(b_prec))
    F = sum_dF - 0.5 * step @ b_prec @ step - 0.5 * logdet
    # subject posteriors under the empirical prior at the posterior mean of β
    for i in range(n_sub):
        A = np.kron(X[i][None, :], np.eye(n_par))
        sEs[i] = sEs[i] + sCs[i] @ precs[i] @ A @ step
    return beta.reshape(n_cov, n_par), (post_cov + post_cov.T) / 2, float(F), sEs, sCs


def peb_variational(qE, qC, pE, pC, X, *, bE, bC, components, base_precision, hE, hC, W=None,
                    first_level_F=None, maxit: int = 64, trace: list | None = None,
                    base_weight: float = float(np.exp(-8))) -> dict:
    """SPM12's variational Laplace inversion of the PEB model (module docstring, ``"spm"``).

    Everything in one parameter basis: qE (N, P), qC (N, P, P), pE (N, P), pC (N, P, P) the
    subjects' (already shrunk) posteriors and priors; X (N, K); W (P, Q) maps the Q second-level
    parameters per design column onto the P first-level ones (default I: θ_i = (X_i ⊗ W) b);
    bE (K·Q,), bC (K·Q, K·Q) the prior of b; components: list of m (P, P) precision components;
    base_precision (P, P): Q_0, added with weight ``base_weight`` (SPM: e⁻⁸; with no components,
    as in SPM's one-subject predictive PEB, 1: a fixed between-subject precision Q_0);
    hE (m,), hC (m, m): prior of γ;
    first_level_F (N,): added to F (default 0); trace: if a list, (iteration, F, last accepted gain
    dF, t) is appended at each iteration (what SPM prints).

    Returns a dict: b (K·Q,), g (m,) after one more update than the last expansion point;
    Cb (K·Q, K·Q), Cg (m, m), F, Fc, between_covariance (P, P) of the last expansion point;
    n_iterations; converged.
    """
    n_sub, n_par = qE.shape
    W = np.eye(n_par) if W is None else np.atleast_2d(W)
    F1 = np.zeros(n_sub) if first_level_F is None else np.asarray(first_level_F, dtype=float)
    design = [np.kron(X[i][None, :], W) for i in range(n_sub)]
    n_b, n_g = bE.size, len(components)
    hE = np.broadcast_to(np.asarray(hE, dtype=float).ravel(), (n_g,)).copy()
    bP = spm_inv(bC)
    gP = spm_inv(np.atleast_2d(hC))
    prior_precision = np.zeros((n_b + n_g, n_b + n_g))
    prior_precision[:n_b, :n_b], prior_precision[n_b:, n_b:] = bP, gP
    b, g = bE.astype(float).copy(), hE.copy()
    t, F0, dF, saved, converged = -4.0, -np.inf, 0.0, None, False
    for n in range(1, maxit + 1):
        rP = base_precision * base_weight + sum(np.exp(g_j) * Q_j for g_j, Q_j in zip(g, components))
        rC = spm_inv(rP)
        F = 0.0
        dFdb, dFdbb = -bP @ (b - bE), -bP.copy()
        dFdg, dFdgg = -gP @ (g - hE), -gP.copy()
        dFdbg = np.zeros((n_b, n_g))
        for i in range(n_sub):
            A = design[i]
            rE = A @ b
            Fi, sE, sC = spm_reduced_evidence(qE[i], qC[i], pE[i], pC[i], rE, rC)
            F += Fi + F1[i]
            dE = sE - rE
            dFdb += A.T @ rP @ dE
            dFdbb += A.T @ (rP @ sC @ rP - rP) @ A
            scaled = [np.exp(g_j) * Q_j for g_j, Q_j in zip(g, components)]
            for j, Qj in enumerate(scaled):
                grad_j = (np.trace((rC - sC) @ Qj) - dE @ Qj @ dE) / 2
                dFdg[j] += grad_j
                dFdgg[j, j] += grad_j
                dFdbg[:, j] += A.T @ (Qj - rP @ sC @ Qj) @ dE
                for k, Qk in enumerate(scaled):
                    dFdgg[j, k] -= np.trace((rC @ Qj @ rC - sC @ Qj @ sC) @ Qk) / 2 - dE @ Qj @ sC @ Qk @ dE
        joint = np.block([[dFdbb, dFdbg], [dFdbg.T, dFdgg]])
        Cp_joint = spm_inv(-joint)
        Cb, Cg = spm_inv(-dFdbb), spm_inv(-dFdgg)
        Fc = b @ bP @ b / 2 + g @ gP @ g / 2 - _logdet_abs(prior_precision @ Cp_joint) / 2
        F -= Fc
        between = rC
        if F >= F0:
            dF, F0 = F - F0 if np.isfinite(F0) else 0.0, F
            saved = (b.copy(), g.copy())
            t = min(t + 0.25, 2.0)
        else:  # SPM restores the expansion point only: the next step uses this point's gradients
            b, g = saved[0].copy(), saved[1].copy()
            t = max(t - 1.0, -4.0)
        grad = np.concatenate([dFdb, dFdg])
        dp = _regularised_step(np.block([[dFdbb, dFdbg], [dFdbg.T, dFdgg]]), grad, t)
        if np.abs(dp).sum() >= 8:
            no_cross = np.block([[dFdbb, np.zeros_like(dFdbg)], [np.zeros_like(dFdbg.T), dFdgg]])
            dp = _regularised_step(no_cross, grad, t)
        b = b + dp[:n_b]
        g = g + np.tanh(dp[n_b:])
        if trace is not None:
            trace.append((n, float(F), float(dF), t))
        if n > 4 and (t <= -4 or dF < 1e-4):
            converged = True
            break
    return {"b": b, "g": g, "Cb": (Cb + Cb.T) / 2, "Cg": (Cg + Cg.T) / 2, "F": float(F), "Fc": float(Fc),
            "between_covariance": (between + between.T) / 2, "n_iterations": n, "converged": converged}


def _spm_basis(PC: np.ndarray) -> np.ndarray:
    """SPM's basis of PC (``spm_svd``): singular vectors sorted by decreasing singular value.
    A diagonal PC gives a permutation (ties kept in parameter order), as in SPM."""
    diag = np.diag(PC)
    if np.count_nonzero(PC - np.diag(diag)) == 0:
        order = np.argsort(-diag, kind="stable")
        return np.eye(PC.shape[0])[:, order]
    vals, vecs = np.linalg.eigh((PC + PC.T) / 2)
    return vecs[:, np.argsort(-vals, kind="stable")]


def _spm_components(PC: np.ndarray, U: np.ndarray, components, beta: float):
    """(Q_0, [Q_j]) in the basis U: Q_0 = (Uᵀ PC/beta U)⁻¹ (SPM's ``pQ``); 'single' uses Q_0
    itself, 'all' its diagonal elements (one per basis direction: per parameter for a diagonal
    PC), index groups (in the original parameter order) the corresponding blocks."""
    Q0 = spm_inv(U.T @ (PC / beta) @ U)
    if isinstance(components, str) and components == "single":
        return Q0, [Q0]
    if isinstance(components, str) and components == "all":
        return Q0, [np.diag(np.where(np.arange(Q0.shape[0]) == i, np.diag(Q0), 0.0)) for i in range(Q0.shape[0])]
    groups = _component_groups(components, PC.shape[0])
    prec = spm_inv(PC / beta)
    out = []
    for grp in groups:
        sel = np.zeros(PC.shape[0])
        sel[grp] = 1.0
        out.append(U.T @ (sel[:, None] * prec * sel[None, :]) @ U)
    return Q0, out


def fit_peb(qE, qC, pE, pC, X, *, method: str = "spm", components: str | Sequence[Sequence[int]] = "single",
            beta: float = 16.0, alpha: float = 1.0, hE: float = 0.0, hC: float = 1 / 16,
            first_level_F=None, shrink_first_level: bool | None = None,
            scale_prior_by_design: bool | None = None, maxit: int = 64) -> PEBResult:
    """Invert the PEB model (see module docstring).

    qE : (N, P) first-level posterior means; qC : (N, P, P) covariances;
    pE, pC : first-level prior (P,), (P, P), or one per subject (N, P), (N, P, P);
    X : (N, K) design, first column ones (centre the other columns so that β[0] is the
    group mean; SPM neither centres nor scales it).
    method : "spm" (SPM12's ``spm_dcm_peb``) or "exact" (β integrated out exactly).
    components, beta, alpha, hE, hC : between-subject precision components ('single', 'all' or
    index groups), within:between precision ratio, third-level prior shrinkage, and
    log-precision prior mean and variance (SPM's defaults).
    first_level_F : (N,) first-level free energies, added to F as SPM does (default: F relative
    to the first-level models).
    shrink_first_level, scale_prior_by_design : SPM's conventions (default: on for "spm", off
    for "exact").
    maxit : iterations of the "spm" scheme.
    """
    if method not in ("spm", "exact"):
        raise ValueError(f"method must be 'spm' or 'exact', not {method!r}")
    shrink = (method == "spm") if shrink_first_level is None else bool(shrink_first_level)
    scale = (method == "spm") if scale_prior_by_design is None else bool(scale_prior_by_design)
    qE, qC, pEs, pCs, _, _, X = _check_inputs(qE, qC, pE, pC, X)
    X = check_design(X)
    n_sub = qE.shape[0]
    F1 = np.zeros(n_sub) if first_level_F is None else np.asarray(first_level_F, dtype=float).ravel()
    if F1.shape != (n_sub,):
        raise ValueError(f"first_level_F must have one value per subject ({n_sub})")
    PE, PC = pEs.mean(axis=0), pCs.mean(axis=0)
    qC_used = np.array([spm_inv(spm_inv(qC[i]) + spm_inv(pCs[i]) / SPM_PEB["shrink"]) for i in range(n_sub)]) \
        if shrink and n_sub > 1 else qC
    Xc = _design_scaling(X) if scale else np.eye(X.shape[1])
    settings = {"method": method, "components": components if isinstance(components, str) else
                [list(map(int, g)) for g in components], "beta": beta, "alpha": alpha, "hE": hE, "hC": hC,
                "shrink_first_level": shrink, "scale_prior_by_design": scale, "maxit": maxit}
    if method == "exact":
        return _fit_exact(qE, qC_used, pEs, pCs, PE, PC, X, Xc, F1, components, beta, alpha, hE, hC, settings,
                          shared=np.ndim(pE) <= 1 and np.ndim(pC) <= 2)
    return _fit_spm(qE, qC, qC_used, pEs, pCs, PE, PC, X, Xc, F1, components, beta, alpha, hE, hC, maxit, settings)


def _fit_spm(qE, qC_raw, qC, pEs, pCs, PE, PC, X, Xc, F1, components, beta, alpha, hE, hC, maxit, settings):
    n_sub, n_par = qE.shape
    n_cov = X.shape[1]
    U = _spm_basis(PC)
    Q0, Qs = _spm_components(PC, U, components, beta)
    n_g = len(Qs)
    bE = np.zeros(n_cov * n_par)
    bE[:n_par] = U.T @ PE
    bC = np.kron(Xc, U.T @ (PC / alpha) @ U)
    fit = peb_variational(qE @ U, np.einsum("ji,njk,kl->nil", U, qC, U), pEs @ U,
                          np.einsum("ji,njk,kl->nil", U, pCs, U), X, bE=bE, bC=bC, components=Qs,
                          base_precision=Q0, hE=np.full(n_g, hE), hC=np.eye(n_g) * hC, first_level_F=F1,
                          maxit=maxit)
    rotate = np.kron(np.eye(n_cov), U)
    Ep = (rotate @ fit["b"]).reshape(n_cov, n_par)
    Cp = rotate @ fit["Cb"] @ rotate.T
    between = U @ fit["between_covariance"] @ U.T
    sEs, sCs = _subject_posteriors(qE, qC_raw, pEs, pCs, X @ Ep, between)
    bE_out = np.zeros((n_cov, n_par))
    bE_out[0] = PE
    return PEBResult(Ep=Ep, Cp=(Cp + Cp.T) / 2, Eh=fit["g"], Ch=fit["Cg"], F=fit["F"],
                     between_covariance=(between + between.T) / 2, subject_means=sEs, subject_covariances=sCs,
                     bE=bE_out, bC=np.kron(Xc, PC / alpha), pE=PE, pC=PC, X=X,
                     components=tuple(U @ Q @ U.T for Q in Qs), hE=hE, hC=hC, method="spm",
                     n_iterations=fit["n_iterations"], converged=fit["converged"], complexity=fit["Fc"],
                     settings=settings)


def _subject_posteriors(qE, qC, pEs, pCs, means, between):
    """Each subject's posterior reduced under N(means_i, between) (SPM's regularised BMR)."""
    sEs, sCs = np.zeros_like(qE), np.zeros_like(qC)
    for i in range(qE.shape[0]):
        _, sEs[i], sCs[i] = spm_reduced_evidence(qE[i], qC[i], pEs[i], pCs[i], means[i], between)
    return sEs, sCs


def _fit_exact(qE, qC, pEs, pCs, PE, PC, X, Xc, F1, components, beta, alpha, hE, hC, settings, shared):
    # the reference prior: the common one, or the subjects' mean (as SPM)
    pE_arg, pC_arg = (pEs[0], pCs[0]) if shared else (pEs, pCs)
    Qs = precision_components(PC, components, beta)
    m = len(Qs)
    bC = np.kron(Xc, PC / alpha)

    def objective(g):
        F = peb_conditional(qE, qC, pE_arg, pC_arg, X, g, Qs, alpha=alpha, bC=bC)[2]
        return -(F - 0.5 * np.sum((g - hE) ** 2) / hC)

    # Log-precisions are searched within ±8 prior SDs: beyond that the hyperprior
    # makes them implausible, and far below it the empirical prior could become broader
    # than the first-level prior, where the reduced evidence is undefined.
    width = 8.0 * np.sqrt(hC)
    sol = optimize.minimize(objective, np.full(m, hE), method="L-BFGS-B",
                            bounds=[(hE - width, hE + width)] * m,
                            options={"ftol": 1e-12, "gtol": 1e-7, "maxiter": 500})
    g_hat = sol.x
    hess = _numerical_hessian(objective, g_hat)
    Ch = np.linalg.inv(hess)
    Ep, Cp, F_g, sEs, sCs = peb_conditional(qE, qC, pE_arg, pC_arg, X, g_hat, Qs, alpha=alpha, bC=bC)
    _, logdet = np.linalg.slogdet(Ch / hC)
    F = F_g - 0.5 * np.sum((g_hat - hE) ** 2) / hC + 0.5 * logdet + F1.sum()
    bE = np.zeros_like(Ep)
    bE[0] = PE
    prec = sum(np.exp(g) * Q for g, Q in zip(g_hat, Qs))
    return PEBResult(Ep=Ep, Cp=Cp, Eh=g_hat, Ch=(Ch + Ch.T) / 2, F=float(F),
                     between_covariance=np.linalg.inv(prec), subject_means=sEs,
                     subject_covariances=sCs, bE=bE, bC=bC, pE=PE, pC=PC, X=X, components=tuple(Qs),
                     hE=hE, hC=hC, method="exact", n_iterations=int(sol.nit), converged=bool(sol.success),
                     settings=settings)


def _numerical_hessian(fun, x, step=1e-3):
    """Central-difference Hessian of a scalar function (x: (m,))."""
    m = x.size
    H = np.zeros((m, m))
    f0 = fun(x)
    for a in range(m):
        ea = np.zeros(m)
        ea[a] = step
        H[a, a] = (fun(x + ea) - 2 * f0 + fun(x - ea)) / step**2
        for b in range(a):
            eb = np.zeros(m)
            eb[b] = step
            H[a, b] = H[b, a] = (fun(x + ea + eb) - fun(x + ea - eb) - fun(x - ea + eb)
                                 + fun(x - ea - eb)) / (4 * step**2)
    return H


def empirical_bayes_posteriors(peb: PEBResult, index: Sequence[int], qE, qC, pE, pC, first_level_F=None):
    """Each subject's whole first-level posterior under the PEB's empirical prior.

    index : (P,) positions of the second-level parameters in the first-level vector;
    qE (N, n), qC (N, n, n), pE (n,) or (N, n), pC (n, n) or (N, n, n): the subjects' full
    first-level posteriors and priors; first_level_F (N,) their free energies.
    The prior of the second-level parameters is replaced by N(X_i Ep, between covariance), the
    others keep theirs, and the posterior follows by BMR (SPM's regularised form). Returns
    (Ep (N, n), Cp (N, n, n), F (N,)) with F = ΔF_i + F_i − Fc/N (SPM's bookkeeping: the
    subjects' F sum to about the PEB's F). SPM's second output of ``spm_dcm_peb`` agrees to
    about 0.02 posterior SD in the means and 0.2% in the variances (docs/dcm.md).
    """
    qE = np.atleast_2d(np.asarray(qE, dtype=float))
    n_sub, n = qE.shape
    qC = np.asarray(qC, dtype=float).reshape(n_sub, n, n)
    pEs = np.broadcast_to(np.asarray(pE, dtype=float).reshape(-1, n), (n_sub, n))
    pCs = np.broadcast_to(np.asarray(pC, dtype=float).reshape(-1, n, n), (n_sub, n, n))
    F1 = np.zeros(n_sub) if first_level_F is None else np.asarray(first_level_F, dtype=float)
    idx = np.asarray(index, dtype=int)
    block = np.ix_(idx, idx)
    means = peb.X @ peb.Ep
    Ep, Cp, F = np.zeros_like(qE), np.zeros_like(qC), np.zeros(n_sub)
    for i in range(n_sub):
        rE, rC = pEs[i].copy(), pCs[i].copy()
        rE[idx] = means[i]
        rC[idx, :] = 0.0
        rC[:, idx] = 0.0
        rC[block] = peb.between_covariance
        dF, Ep[i], Cp[i] = spm_reduced_evidence(qE[i], qC[i], pEs[i], pCs[i], rE, rC)
        F[i] = dF + F1[i] - peb.complexity / n_sub
    return Ep, Cp, F
