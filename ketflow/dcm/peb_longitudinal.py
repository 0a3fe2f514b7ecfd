"""Longitudinal PEB: DCMs of two sessions per subject, effects of session, arm and clinical change.

Formulation — the hierarchical "PEB of PEBs" of Friston et al. (2016, NeuroImage 128:413, §"A
hierarchical model of longitudinal data") and Zeidman et al. (2019, NeuroImage 200:12, "A guide
to group effective connectivity analysis, part 2", §"Hierarchical PEB"), as SPM12 runs it
(``spm_dcm_peb`` on each subject's DCMs, then ``spm_dcm_peb`` on the subjects' PEBs):

1. *Within subject*: for each subject, a PEB over its two session DCMs with the design
   Z = [[1, −½], [1, +½]] (columns ``mean`` — the session average — and ``session`` — post
   minus pre). Its posterior over (mean, change) of every DCM parameter, with that PEB's prior
   and free energy, summarises the subject.
2. *Between subjects*: a PEB over those posteriors with the between-subject design
   [mean, arm, clinical, arm × clinical] (:func:`ketflow.dcm.peb.between_subject_design`). Every
   between column acts on both the session mean and the change of each parameter, so its K × 2P
   parameters are the effects ``mean``, ``arm``, ``clinical``, ``arm:clinical`` (on the session
   mean) and ``session``, ``session:arm``, ``session:clinical``, ``session:arm:clinical`` (on the
   change) — the trial's session, arm, session × arm, clinical change and its interaction with
   arm (:mod:`ketflow.dcm.peb_effects`).

Why this and not one PEB over all 2N DCMs with subject terms: PEB has a single random-effects
level, so one PEB would either treat a subject's two sessions as independent subjects (its
between-subject variance would then also carry the subject-specific baseline, inflating the
error of every within-subject effect such as session × arm) or need N subject columns in X,
whose third-level prior (PE for the first column, zero for the others) is wrong for subject
offsets and whose number grows with N. The PEB of PEBs estimates each subject's change against
its own baseline, carries each subject's uncertainty (first-level posterior covariances and the
within-subject prior) to the second level exactly through Bayesian model reduction, and lets
second-level BMR/BMA and family comparison work on the effects the trial asks about.

With two sessions the within-subject PEB is saturated (two DCMs, two coefficients): its
between-session random effect is not identified by the data and only adds its prior variance
(SPM's defaults: PC/16 per session, hE = 0, hC = 1/16) to each subject's change. On simulated
studies SPM's PEB of PEBs with its defaults (this within-subject level and one second-level
component) gives a session × arm effect of 1.6 between-subject SDs a mean z of 0.85 at N = 20
(ketflow's formulation: 3.25; ``benchmarks/peb_longitudinal_power.py``, docs/group.md
"Longitudinal PEB"), and pushing the within-subject variance towards zero with a large hE makes
SPM's regularised scheme fail to converge within 64 iterations. ketflow's default within-subject
level (``within="saturated"``) is therefore that limit computed exactly: each subject's (mean,
change) posterior under the within-subject prior N([PE, 0], Xc ⊗ PC), Xc = diag(1, 4) (SPM's
scaling of Z), from the product of its two sessions' likelihoods (posterior / prior, Friston &
Penny 2011), with its log evidence relative to the session DCMs. Real session-to-session
variability is then part of the between-subject variance of the change, which the second level
estimates. ``within="peb"`` runs SPM's within-subject PEB instead (SPM's PEB of PEBs exactly).

Second-level precision components: SPM's single component takes its shape from the prior,
whose change block is 4 × the mean block's only because of Z's scaling; with hC = 1/16 the one
log-precision cannot correct that ratio, which inflated the change's between-subject variance
about fourfold in the simulations. The default is one component per within-subject column
(``between_components="within"``: session-mean and change variability estimated separately)
with a weakly informative hyperprior ``between_hC = 1`` (a variance scale within about ×0.14 to
×7.4 at two prior SDs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ketflow.dcm.bmr import _range_basis
from ketflow.dcm.peb import PEBResult, _design_scaling, fit_peb
from ketflow.dcm.peb_effects import WITHIN_COLUMNS, EffectGrid

__all__ = ["LongitudinalPEB", "WithinSubject", "within_subject_design", "saturated_within_subject",
           "fit_longitudinal_peb"]


def within_subject_design() -> np.ndarray:
    """Z (2, 2): rows pre, post; columns session mean and post − pre change."""
    return np.array([[1.0, -0.5], [1.0, 0.5]])


@dataclass(frozen=True)
class WithinSubject:
    """A subject's within-subject posterior: Ep (2, P) session mean and change, Cp (2P, 2P), its
    prior bE (2, P), bC (2P, 2P), and F: log evidence including the session DCMs' free energies."""

    Ep: np.ndarray
    Cp: np.ndarray
    bE: np.ndarray
    bC: np.ndarray
    F: float


def _log_likelihood_terms(qE, qC, pE, pC):
    """The Gaussian log-likelihood ln q(θ)/p(θ) = −½θᵀΛθ + ηᵀθ + c of one DCM (θ: (P,)), within
    the range of its prior (directions it fixes carry no information). Returns (Λ, η, c)."""
    free = _range_basis(pC)[0]
    q_mean, p_mean = free.T @ qE, free.T @ pE
    q_cov, p_cov = free.T @ qC @ free, free.T @ pC @ free
    qP, pP = np.linalg.inv(q_cov), np.linalg.inv(p_cov)
    c = 0.5 * (np.linalg.slogdet(p_cov)[1] - np.linalg.slogdet(q_cov)[1]
               - q_mean @ qP @ q_mean + p_mean @ pP @ p_mean)
    return free @ (qP - pP) @ free.T, free @ (qP @ q_mean - pP @ p_mean), float(c)


def saturated_within_subject(qE, qC, pE, pC, first_level_F=None) -> WithinSubject:
    """A subject's (session mean, change) posterior from its two session DCMs (module docstring).

    qE (2, P), qC (2, P, P): pre and post posteriors; pE (2, P), pC (2, P, P): their priors;
    first_level_F (2,): their free energies. θ_pre = m − Δ/2, θ_post = m + Δ/2 exactly; prior
    (m, Δ) ~ N([PE, 0], diag(1, 4) ⊗ PC) with PE, PC the sessions' mean prior. Exact for Gaussian
    posteriors; the limit of SPM's within-subject PEB as its between-session variance vanishes.
    """
    qE, qC, pE, pC = (np.asarray(a, dtype=float) for a in (qE, qC, pE, pC))
    n_par = qE.shape[1]
    Z = within_subject_design()
    T = np.kron(Z, np.eye(n_par))  # θ (pre, post) = T (m, Δ)
    Lam, eta, c = np.zeros((2 * n_par, 2 * n_par)), np.zeros(2 * n_par), 0.0
    for s in range(2):
        L, e, c_s = _log_likelihood_terms(qE[s], qC[s], pE[s], pC[s])
        block = slice(s * n_par, (s + 1) * n_par)
        Lam[block, block], eta[block], c = L, e, c + c_s
    PE, PC = pE.mean(axis=0), pC.mean(axis=0)
    bE = np.concatenate([PE, np.zeros(n_par)])
    bC = np.kron(_design_scaling(Z), PC)
    bP = np.linalg.inv(bC)
    post_prec = T.T @ Lam @ T + bP
    Cp = np.linalg.inv(post_prec)
    m = Cp @ (T.T @ eta + bP @ bE)
    dF = (c - 0.5 * np.linalg.slogdet(bC)[1] - 0.5 * np.linalg.slogdet(post_prec)[1]
          + 0.5 * m @ post_prec @ m - 0.5 * bE @ bP @ bE)
    F1 = 0.0 if first_level_F is None else float(np.sum(first_level_F))
    return WithinSubject(Ep=m.reshape(2, n_par), Cp=(Cp + Cp.T) / 2, bE=bE.reshape(2, n_par), bC=bC, F=float(dF + F1))


@dataclass(frozen=True)
class LongitudinalPEB:
    """within : the subjects' within-subject posteriors (N :class:`WithinSubject`); between : the
    second-level PEB, Ep (K, 2P); grid : the names of its effects and parameters; settings."""

    within: tuple
    between: PEBResult
    grid: EffectGrid
    settings: dict


def fit_longitudinal_peb(qE, qC, pE, pC, X, *, between_columns: Sequence[str], parameters: Sequence[str],
                         first_level_F=None, method: str = "spm", within: str = "saturated",
                         within_hE: float = 0.0, within_hC: float = 1 / 16, between_components="within",
                         between_hC: float = 1.0, **peb_kwargs) -> LongitudinalPEB:
    """Fit the PEB of PEBs (module docstring).

    qE : (N, 2, P) posterior means of each subject's pre and post DCM; qC : (N, 2, P, P);
    pE, pC : their priors, shared ((P,), (P, P)) or per subject and session ((N, 2, P),
    (N, 2, P, P)); X : (N, K) between-subject design (first column ones);
    between_columns, parameters : names of X's columns and of the P parameters;
    first_level_F : (N, 2) the DCMs' free energies; method : "spm" or "exact" (the PEBs);
    within : "saturated" (default) or "peb" (SPM's within-subject PEB, with log-precision prior
    within_hE, within_hC); between_components : "within" (one precision component per
    within-subject column), or any ``components`` of :func:`ketflow.dcm.peb.fit_peb`;
    between_hC : the second level's log-precision prior variance; peb_kwargs : further
    settings of the second-level PEB.
    """
    qE = np.asarray(qE, dtype=float)
    if qE.ndim != 3 or qE.shape[1] != 2:
        raise ValueError(f"qE must be (subjects, 2 sessions, parameters), got {qE.shape}")
    if within not in ("saturated", "peb"):
        raise ValueError(f"within must be 'saturated' or 'peb', not {within!r}")
    n_sub, _, n_par = qE.shape
    qC = np.asarray(qC, dtype=float).reshape(n_sub, 2, n_par, n_par)
    pE = np.broadcast_to(np.asarray(pE, dtype=float), (n_sub, 2, n_par))
    pC = np.broadcast_to(np.asarray(pC, dtype=float), (n_sub, 2, n_par, n_par))
    F = np.zeros((n_sub, 2)) if first_level_F is None else np.asarray(first_level_F, dtype=float)
    if len(parameters) != n_par or len(between_columns) != np.shape(X)[1]:
        raise ValueError("parameters / between_columns do not match the posteriors / the design")
    if within == "saturated":
        subjects = tuple(saturated_within_subject(qE[i], qC[i], pE[i], pC[i], F[i]) for i in range(n_sub))
    else:
        fits = [fit_peb(qE[i], qC[i], pE[i], pC[i], within_subject_design(), method=method, first_level_F=F[i],
                        hE=within_hE, hC=within_hC) for i in range(n_sub)]
        subjects = tuple(WithinSubject(Ep=w.Ep, Cp=w.Cp, bE=w.bE, bC=w.bC, F=w.F) for w in fits)
    components = [list(range(n_par)), list(range(n_par, 2 * n_par))] if between_components == "within" \
        else between_components
    between = fit_peb(np.array([w.Ep.ravel() for w in subjects]), np.array([w.Cp for w in subjects]),
                      np.array([w.bE.ravel() for w in subjects]), np.array([w.bC for w in subjects]), X,
                      method=method, first_level_F=np.array([w.F for w in subjects]), components=components,
                      hC=between_hC, **peb_kwargs)
    grid = EffectGrid(between=tuple(between_columns), within=WITHIN_COLUMNS, parameters=tuple(parameters))
    settings = {"within": within, "within_hE": within_hE, "within_hC": within_hC,
                "between_components": between_components, "between_hC": between_hC, "method": method}
    return LongitudinalPEB(within=subjects, between=between, grid=grid, settings=settings)
