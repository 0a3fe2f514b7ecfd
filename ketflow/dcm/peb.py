"""Parametric Empirical Bayes (PEB) over first-level DCM posteriors.

Implements the second-level model of Friston et al. (2016, NeuroImage 128:413,
"Bayesian model reduction and empirical Bayes for group (DCM) studies"), with
the conventions documented for SPM's ``spm_dcm_peb``:

    first level    q(θ_i) = N(qE_i, qC_i) under the prior N(pE, pC)
    second level   θ_i = (X_i ⊗ I_P) β + ε_i,   ε_i ~ N(0, Π(γ)⁻¹)
                   Π(γ) = Σ_j exp(γ_j) Q_j,     Q_j = beta · E_j pC⁻¹ E_j
    third level    β ~ N([pE, 0, …, 0], I_K ⊗ pC/alpha),   γ_j ~ N(hE, hC)

where X (subjects × K, first column ones) is the between-subject design, P the
number of DCM parameters taken to the second level and E_j selects the
parameters of precision component j ('single': one component for all
parameters; 'all': one per parameter; or explicit groups, e.g. one per field).
At γ = 0 the between-subject covariance is pC/beta (default beta = 16).

Each subject enters only through Bayesian model reduction (BMR): the empirical
prior N((X_i ⊗ I)β, Π(γ)⁻¹) replaces the first-level prior, and the change in
log evidence ΔF_i and the subject's empirical-Bayes posterior follow from
:func:`ketflow.dcm.bmr.bayesian_model_reduction`.

Subject-specific first-level priors (Friston et al. 2016 write the first level with each
subject's own prior; SPM reduces each subject under its own ``M.pE, M.pC``): pE, pC may
be given per subject, e.g. when models differ in which parameters are switched on, or
when A's prior was projected onto data-dependent principal modes (more than 8 regions,
:func:`ketflow.dcm.priors.constrain_to_modes`). BMR of subject i then uses its own
prior, and the empirical prior is restricted to the directions that prior leaves free
(R_i = projector onto the range of pC_i: mean pE_i + R_i (X_i β − pE_i), covariance
R_i Π⁻¹ R_i), because a second level cannot free a parameter the first level fixed.
The precision components and the third-level prior use a reference prior: the common
prior when all subjects share one, otherwise the average of the subjects' priors.  Because ΔF_i is exactly
quadratic in the empirical prior mean, the posterior of β given γ is Gaussian
and found in one Newton step (gradient A_iᵀΠ(sE_i − A_iβ), curvature
A_iᵀ(Π − Π sC_i Π)A_i with A_i = X_i ⊗ I); β is integrated out exactly and the
few log-precisions γ are optimised, with a Laplace approximation over γ for the
free energy.  (SPM alternates variational updates of β and γ instead; the
fixed point is the same model, but the free energies can differ slightly.)

Second-level Bayesian model reduction switches parameters off (prior variance
zero, fixed at their prior mean) with a greedy search over the eight least
evident parameters at a time, as described by Friston et al. (2016), giving
posterior probabilities Pp per parameter and a Bayesian model average (BMA)
over the final model space.  By default the search is over the covariate effects
(design columns after the first) with the group mean kept in every model: the model
spaces of Friston et al. (2016) and of SPM's ``spm_dcm_peb_bmc`` factorise into models
of the commonalities (group mean) and of the group differences/covariate effects, with
separate probabilities for each; searching both jointly would let a weak group mean be
switched off (fixed at its prior mean) inside the models that score the covariate
effects.  ``reduce_peb(peb, search="mean")`` scores the group-mean parameters
separately (covariate effects kept), and ``search="all"`` is the joint search.  :func:`peb_leave_one_out` predicts a left-out
subject's between-subject variable from its DCM posterior and a PEB model of
the other subjects (the leave-one-out scheme of Friston et al. 2016, §"Cross
validation", SPM's ``spm_dcm_loo``).

Parameter ordering: β is (K, P) — row k holds the effect of design column k
on each of the P parameters; covariances over β use the flattened order
``k * P + p``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from ketflow.dcm.bmr import bayesian_model_reduction

__all__ = [
    "PEBResult",
    "PEBReduction",
    "PEBLeaveOneOut",
    "between_subject_design",
    "precision_components",
    "peb_conditional",
    "fit_peb",
    "reduce_peb",
    "peb_leave_one_out",
]


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
        z = (cov - cov.mean()) / cov.std()
        columns.append(z)
        names.append(covariate_name)
        if interaction:
            prod = code * z
            columns.append(prod - prod.mean())
            names.append(f"arm:{covariate_name}")
    return np.column_stack(columns), names


def precision_components(pC: np.ndarray, components: str | Sequence[Sequence[int]] = "single",
                         beta: float = 16.0) -> list[np.ndarray]:
    """Between-subject precision components Q_j (each (P, P)).

    components : 'single' (one for all parameters), 'all' (one per parameter)
    or a partition of range(P) into groups (e.g. one group per DCM field).
    Q_j = beta · E_j pC⁻¹ E_j, so Σ_j Q_j = beta · pC⁻¹ for a diagonal pC.
    """
    pC = np.atleast_2d(np.asarray(pC, dtype=float))
    n = pC.shape[0]
    if isinstance(components, str):
        if components == "single":
            groups = [list(range(n))]
        elif components == "all":
            groups = [[i] for i in range(n)]
        else:
            raise ValueError(f"components must be 'single', 'all' or index groups, not {components!r}")
    else:
        groups = [list(g) for g in components]
        flat = sorted(i for g in groups for i in g)
        if flat != list(range(n)):
            raise ValueError(f"component groups must partition the {n} parameters exactly once")
    prec = np.linalg.inv(pC)
    out = []
    for g in groups:
        sel = np.zeros((n, n))
        sel[g, g] = 1.0
        sel = np.diag(np.diag(sel))
        out.append(beta * sel @ prec @ sel)
    return out


def _check_inputs(qE, qC, pE, pC, X):
    """Validated arrays: qE (N, P), qC (N, P, P), per-subject pE (N, P) and pC (N, P, P),
    the reference prior (P,), (P, P) and X (N, K)."""
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
    F : free energy (log evidence) of the PEB model relative to the first-level
        models under their own priors, i.e. add Σ_i F_i for the absolute value.
    between_covariance : (P, P) random-effects covariance Π(Eh)⁻¹.
    subject_means, subject_covariances : (N, P), (N, P, P) empirical-Bayes
        posteriors of each subject's parameters.
    bE, bC : (K, P), (K·P, K·P) third-level prior; pE, pC: first-level (reference) prior;
    X : (N, K) design; components : the Q_j; beta, alpha, hE, hC: settings.
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



def peb_conditional(qE, qC, pE, pC, X, gamma, components, *, alpha: float = 1.0):
    """Posterior of β given log-precisions ``gamma``, exact under BMR.

    qE (N, P), qC (N, P, P): first-level posteriors; pE (P,) or (N, P), pC (P, P) or
    (N, P, P): their prior(s); X (N, K); gamma (m,); components: list of m (P, P) matrices Q_j.
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
    b_prec = np.kron(np.eye(n_cov), np.linalg.inv(ref_C) * alpha)
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


def fit_peb(qE, qC, pE, pC, X, *, components: str | Sequence[Sequence[int]] = "single",
            beta: float = 16.0, alpha: float = 1.0, hE: float = 0.0, hC: float = 1 / 16) -> PEBResult:
    """Invert the PEB model (see module docstring).

    qE : (N, P) first-level posterior means; qC : (N, P, P) covariances;
    pE, pC : first-level prior (P,), (P, P), or one per subject (N, P), (N, P, P);
    X : (N, K) design, first column ones (centre the other columns so that β[0] is the
    group mean).
    components, beta, alpha, hE, hC : SPM's between-subject precision
    components, within:between precision ratio, third-level prior shrinkage,
    and log-precision prior mean and variance.
    """
    qE, qC, pE, pC, ref_E, ref_C, X = _check_inputs(qE, qC, pE, pC, X)
    Qs = precision_components(ref_C, components, beta)
    m = len(Qs)

    def objective(g):
        F = peb_conditional(qE, qC, pE, pC, X, g, Qs, alpha=alpha)[2]
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
    Ep, Cp, F_g, sEs, sCs = peb_conditional(qE, qC, pE, pC, X, g_hat, Qs, alpha=alpha)
    _, logdet = np.linalg.slogdet(Ch / hC)
    F = F_g - 0.5 * np.sum((g_hat - hE) ** 2) / hC + 0.5 * logdet
    bE = np.zeros_like(Ep)
    bE[0] = ref_E
    prec = sum(np.exp(g) * Q for g, Q in zip(g_hat, Qs))
    return PEBResult(Ep=Ep, Cp=Cp, Eh=g_hat, Ch=(Ch + Ch.T) / 2, F=float(F),
                     between_covariance=np.linalg.inv(prec), subject_means=sEs,
                     subject_covariances=sCs, bE=bE, bC=np.kron(np.eye(X.shape[1]), ref_C / alpha),
                     pE=ref_E, pC=ref_C, X=X, components=tuple(Qs), hE=hE, hC=hC)


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


@dataclass(frozen=True)
class PEBReduction:
    """Second-level Bayesian model reduction and averaging.

    Pp : (K, P) posterior probability that each parameter is present.
    Ep, Cp : BMA posterior mean (K, P) and covariance (K·P, K·P).
    best_on : (K, P) bool, parameters kept by the best reduced model.
    models : (M, K·P) bool, the final model space (True = parameter on);
    log_evidence : (M,) relative to the full PEB model; posterior : (M,) p(m).
    """

    Pp: np.ndarray
    Ep: np.ndarray
    Cp: np.ndarray
    best_on: np.ndarray
    models: np.ndarray
    log_evidence: np.ndarray
    posterior: np.ndarray


def reduce_peb(peb: PEBResult, candidates: Sequence[int] | None = None,
               max_search: int = 8, search: str = "covariates") -> PEBReduction:
    """Greedy BMR over the second-level parameters, Pp and BMA.

    candidates : flattened indices (k·P + p) that may be switched off; the others stay
    on in every model (Pp = 1).  Default from ``search``: "covariates" (every design
    column but the first: the group mean is kept, see the module docstring), "mean"
    (the group-mean parameters only) or "all".  Each pass ranks the
    candidates still on by the evidence for removing each alone, evaluates all
    2^k on/off combinations of the k = min(max_search, remaining) least evident
    ones, and switches off those the best combination removes; it stops when
    the best combination removes nothing or all remaining candidates were in
    the search.  Pp and the BMA come from the last pass's 2^k models (with
    earlier removals fixed off, Pp = 0).
    """
    qE, qC = peb.Ep.ravel(), peb.Cp
    pE, pC = peb.bE.ravel(), peb.bC
    d = qE.size
    n_par = peb.Ep.shape[1]
    if candidates is None:
        ranges = {"covariates": range(n_par, d), "mean": range(n_par), "all": range(d)}
        if search not in ranges:
            raise ValueError(f"search must be one of {sorted(ranges)}, not {search!r}")
        candidates = ranges[search]
    cand = sorted(set(int(c) for c in candidates))

    def evidence(off: Sequence[int]):
        rC = pC.copy()
        idx = list(off)
        rC[idx, :] = 0.0
        rC[:, idx] = 0.0
        return bayesian_model_reduction(qE, qC, pE, pC, pE, rC)

    off: set[int] = set()
    while True:
        free = [j for j in cand if j not in off]
        single = {j: evidence(sorted(off | {j}))[0] for j in free}
        search = sorted(free, key=lambda j: -single[j])[:max_search]
        combos = [c for k in range(len(search) + 1) for c in itertools.combinations(search, k)]
        results = [evidence(sorted(off | set(c))) for c in combos]
        dF = np.array([r[0] for r in results])
        best = int(np.argmax(dF))
        exhaustive = len(search) == len(free)
        if not combos[best] or exhaustive:
            break
        off |= set(combos[best])
    post = np.exp(dF - dF.max())
    post /= post.sum()
    models = np.ones((len(combos), d), bool)
    for row, c in enumerate(combos):
        models[row, sorted(off | set(c))] = False
    Pp = post @ models
    Ep = sum(p * r[1] for p, r in zip(post, results))
    second = sum(p * (r[2] + np.outer(r[1], r[1])) for p, r in zip(post, results))
    Cp = second - np.outer(Ep, Ep)
    shape = peb.Ep.shape
    return PEBReduction(Pp=Pp.reshape(shape), Ep=Ep.reshape(shape), Cp=(Cp + Cp.T) / 2,
                        best_on=models[best].reshape(shape), models=models,
                        log_evidence=dF, posterior=post)


@dataclass(frozen=True)
class PEBLeaveOneOut:
    """Leave-one-out prediction of a between-subject variable.

    predicted_mean, predicted_sd, observed : (N,); r : out-of-sample Pearson
    correlation of predicted means with observed values; p : one-sided p-value
    of r > 0.
    """

    predicted_mean: np.ndarray
    predicted_sd: np.ndarray
    observed: np.ndarray
    r: float
    p: float


def peb_leave_one_out(qE, qC, pE, pC, X, column: int = 1, **peb_kwargs) -> PEBLeaveOneOut:
    """Predict each subject's X[:, column] from a PEB model of the other subjects.

    For subject i, PEB is fitted to the others with the column centred on their
    mean; the left-out subject's parameters are then modelled as
    θ_i ~ N(Σ_k X_ik β_k, Π⁻¹) with its value x of the column unknown, prior
    N(training mean, training variance), and known other columns (which must
    not depend on x, e.g. no interaction with it).  ΔF_i(x) from BMR is exactly
    quadratic in x, so the predictive posterior of x is Gaussian: precision
    bᵀ(Π − Π sC Π)b + 1/v0 and mean from the gradient bᵀΠ(sE − rE), with b the
    column's effects (posterior mean of β plugged in).
    """
    per_subject = np.ndim(pE) == 2 or np.ndim(pC) == 3
    qE, qC, pE, pC, ref_E, ref_C, X = _check_inputs(qE, qC, pE, pC, X)
    if not 1 <= column < X.shape[1]:
        raise ValueError("column must index a between-subject variable (not the constant)")
    n_sub, n_par = qE.shape
    means, sds = np.zeros(n_sub), np.zeros(n_sub)
    for i in range(n_sub):
        train = np.arange(n_sub) != i
        Xt = X[train].copy()
        centre = Xt[:, column].mean()
        prior_var = Xt[:, column].var(ddof=1)
        Xt[:, column] -= centre
        priors = (pE[train], pC[train]) if per_subject else (ref_E, ref_C)
        peb = fit_peb(qE[train], qC[train], *priors, Xt, **peb_kwargs)
        prec = np.linalg.inv(peb.between_covariance)
        x_known = X[i].copy()
        x_known[column] = 0.0
        b = peb.Ep[column]
        c, rC, prec_i = _empirical_prior(pE[i], pC[i], x_known @ peb.Ep, peb.between_covariance, prec)
        _, sE, sC = bayesian_model_reduction(qE[i], qC[i], pE[i], pC[i], c, rC)
        grad = b @ prec_i @ (sE - c)
        curv = b @ (prec_i - prec_i @ sC @ prec_i) @ b
        post_prec = curv + 1.0 / prior_var
        means[i] = centre + grad / post_prec
        sds[i] = np.sqrt(1.0 / post_prec)
    observed = X[:, column].copy()
    r, p = stats.pearsonr(means, observed, alternative="greater")
    return PEBLeaveOneOut(predicted_mean=means, predicted_sd=sds, observed=observed,
                          r=float(r), p=float(p))
