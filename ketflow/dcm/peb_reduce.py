"""Second-level Bayesian model reduction, model averaging, model-space comparison and contrasts.

All operate on a fitted PEB (:func:`ketflow.dcm.peb.fit_peb`): its posterior N(Ep, Cp) over the
K·P second-level parameters (design column × DCM parameter) under the prior N(bE, bC). A
*reduced* model switches a set of those parameters off — prior mean 0 and variance 0 — and its
log evidence and posterior follow from the full posterior by Bayesian model reduction (Friston
& Penny 2011, NeuroImage 56:2089; Friston et al. 2016, NeuroImage 128:413), without refitting.

:func:`reduce_peb` is SPM12's ``spm_dcm_peb_bmc(PEB)`` (``spm_dcm_bmr_all``): a greedy search
that, while more than nmax = max(n/4, 8) parameters are free (n: the free parameters at the
start), scores switching each off alone, keeps the nmax least evident as candidates, prunes all
of them if that gains more than nmax nats over pruning none and otherwise scores all 2⁸ subsets
of the first 8 and prunes the best; it repeats while something is pruned. Pp is the posterior
probability that a parameter is present over the last step's models (1 or 0 for the others);
the Bayesian model average (BMA) is the mixture of the reduced posteriors of the last step's
models within Occam's window (log evidence within 8 nats of the best), weighted by their
posterior probability. With a PEB of the ``"spm"`` scheme the numbers are SPM's: the search uses
``spm_log_evidence`` (regularisation exp(−16)) and the BMA ``spm_log_evidence_reduce`` (1e−8);
SPM samples its BMA (1000 draws), here the mixture mean and covariance are computed exactly. With
an ``"exact"`` PEB both use the exact reduction (:func:`ketflow.dcm.bmr.bayesian_model_reduction`).

:func:`compare_peb_models` scores a model space given as on/off masks (families of second-level
models, e.g. with and without every effect on one connection, as SPM's
``spm_dcm_peb_bmc(PEB, models)`` and the family inference of Penny et al. 2010, PLoS Comput
Biol 6:e1000709). :func:`contrast_posterior` gives the posterior of a linear combination of
second-level parameters (e.g. the effect of clinical change within one arm).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import softmax
from scipy.stats import norm

from ketflow.dcm.bmr import SPM_TOL_REDUCE, SPM_TOL_SEARCH, bayesian_model_reduction, spm_reduced_evidence
from ketflow.dcm.peb import PEBResult

__all__ = ["PEBReduction", "reduce_peb", "ModelComparison", "compare_peb_models", "contrast_posterior",
           "OCCAM_WINDOW"]

#: Models within this many nats of the best enter the Bayesian model average (SPM's Occam's window).
OCCAM_WINDOW = 8.0
#: Subsets of at most this many candidates are scored exhaustively in each greedy step (SPM's).
MAX_EXHAUSTIVE = 8


@dataclass(frozen=True)
class PEBReduction:
    """Second-level Bayesian model reduction and averaging.

    Pp : (K, P) posterior probability that each parameter is present.
    Ep, Cp : BMA posterior mean (K, P) and covariance (K·P, K·P).
    best_on : (K, P) bool, parameters kept by the best reduced model.
    models : (M, K·P) bool, the last step's model space (True = parameter on);
    searched : (k,) flattened indices searched in the last step (SPM's ``BMR.k``, 0-based);
    log_evidence : (M,) relative to the full PEB model; posterior : (M,) p(m);
    in_window : (M,) bool, the models averaged; steps : parameters pruned at each step.
    """

    Pp: np.ndarray
    Ep: np.ndarray
    Cp: np.ndarray
    best_on: np.ndarray
    models: np.ndarray
    searched: np.ndarray
    log_evidence: np.ndarray
    posterior: np.ndarray
    in_window: np.ndarray
    steps: tuple

    @property
    def Ep_sd(self) -> np.ndarray:
        """(K, P) BMA posterior standard deviations."""
        return np.sqrt(np.clip(np.diag(self.Cp), 0, None)).reshape(self.Ep.shape)


def _reducer(peb: PEBResult, tol: float):
    """log evidence and reduced posterior of switching off the flattened indices ``off``."""
    qE, qC = peb.Ep.ravel(), peb.Cp
    pE, pC = peb.bE.ravel(), peb.bC

    def reduce(off):
        keep = np.ones(qE.size)
        keep[list(off)] = 0.0
        rE, rC = pE * keep, pC * np.outer(keep, keep)
        if peb.method == "spm":
            return spm_reduced_evidence(qE, qC, pE, pC, rE, rC, tol=tol)
        return bayesian_model_reduction(qE, qC, pE, pC, rE, rC)

    return reduce


def _subset_rows(n: int) -> np.ndarray:
    """All 2ⁿ on/off patterns in SPM's order (row r switches off where r's n-bit binary digit,
    most significant first, is 0: row 0 switches every candidate off, the last row none)."""
    r = np.arange(2 ** n)[:, None]
    bits = (r >> np.arange(n - 1, -1, -1)[None, :]) & 1
    return bits == 0


def reduce_peb(peb: PEBResult, candidates: Sequence[int] | None = None, search: str = "all",
               greedy: str = "spm") -> PEBReduction:
    """SPM's greedy BMR over the second-level parameters, Pp and BMA (module docstring).

    candidates : flattened indices (k·P + p) that may be switched off; the others stay on in
    every model (Pp = 1). Default from ``search``: "all" (every parameter, as SPM), "covariates"
    (every design column but the first: the group mean kept) or "mean" (the group mean only).
    greedy : "spm" (SPM's search, with its shortcut of pruning all nmax candidates at once when
    that gains more than nmax nats) or "subsets" (without the shortcut: every greedy step scores
    the 2⁸ subsets of the 8 least evident candidates). The shortcut can prune a clearly present
    effect together with many absent ones (docs/dcm.md, "Second-level reduction").
    """
    if greedy not in ("spm", "subsets"):
        raise ValueError(f"greedy must be 'spm' or 'subsets', not {greedy!r}")
    d = peb.Ep.size
    n_par = peb.Ep.shape[1]
    if candidates is None:
        ranges = {"covariates": range(n_par, d), "mean": range(n_par), "all": range(d)}
        if search not in ranges:
            raise ValueError(f"search must be one of {sorted(ranges)}, not {search!r}")
        candidates = ranges[search]
    prior_var = np.diag(peb.bC)
    small = prior_var[prior_var < 1024]
    free = np.zeros(d, bool)
    cand = np.array(sorted(set(int(c) for c in candidates)), dtype=int)
    free[cand] = prior_var[cand] > (small.mean() / 1024 if small.size else 0.0)
    search_F = _reducer(peb, SPM_TOL_SEARCH)

    def score(off_extra):
        return search_F(np.flatnonzero(~free).tolist() + [int(j) for j in off_extra])[0]

    n_max = max(int(np.count_nonzero(free) // 4), MAX_EXHAUSTIVE)
    steps = []
    while True:
        k = np.flatnonzero(free)
        if k.size == 0:
            raise ValueError("no second-level parameter is free to be switched off")
        too_many = k.size > n_max
        if too_many:
            alone = np.array([score([j]) for j in k])
            k = k[np.argsort(-alone, kind="stable")[:n_max]]
            if greedy == "spm" and score(k) - score([]) > n_max:
                free[k] = False
                steps.append(k.tolist())
                continue
            k = k[:MAX_EXHAUSTIVE]
        K = _subset_rows(k.size)
        G = np.array([score(k[row]) for row in K])
        best = int(np.argmax(G))
        pruned = k[K[best]]
        free[pruned] = False
        steps.append(pruned.tolist())
        if not (too_many and pruned.size):
            break
    posterior = softmax(G)
    kept = free | ~np.isin(np.arange(d), cand)  # after the search; the last step's k follow K
    models = np.tile(kept, (K.shape[0], 1))
    models[:, k] = ~K
    Pp = kept.astype(float)
    Pp[k] = posterior @ (~K)
    in_window = G > G.max() - OCCAM_WINDOW
    Ep, Cp = _average(peb, models[in_window], G[in_window])
    shape = peb.Ep.shape
    return PEBReduction(Pp=Pp.reshape(shape), Ep=Ep.reshape(shape), Cp=Cp, best_on=models[best].reshape(shape),
                        models=models, searched=k, log_evidence=G, posterior=posterior, in_window=in_window,
                        steps=tuple(steps))


def _average(peb: PEBResult, models: np.ndarray, search_F: np.ndarray):
    """Exact mixture mean and covariance of the reduced posteriors of ``models`` (bool (M, d)),
    weighted by the softmax of their log evidence (SPM's ``spm_log_evidence_reduce`` F for a
    PEB of the "spm" scheme, which is how SPM weights the models it samples)."""
    reduce = _reducer(peb, SPM_TOL_REDUCE)
    results = [reduce(np.flatnonzero(~on)) for on in models]
    F = np.array([r[0] for r in results]) if peb.method == "spm" else search_F
    w = softmax(F)
    Ep = sum(wi * r[1] for wi, r in zip(w, results))
    second = sum(wi * (r[2] + np.outer(r[1], r[1])) for wi, r in zip(w, results))
    Cp = second - np.outer(Ep, Ep)
    return Ep, (Cp + Cp.T) / 2


@dataclass(frozen=True)
class ModelComparison:
    """A model space scored by BMR of one PEB.

    models : names (M,); on : (M, K, P) bool masks; log_evidence : (M,) relative to the full PEB;
    posterior : (M,); families : {factor: {level: posterior probability}}; Ep, Cp : BMA over the
    whole space (K, P), (K·P, K·P).
    """

    models: list
    on: np.ndarray
    log_evidence: np.ndarray
    posterior: np.ndarray
    families: dict
    Ep: np.ndarray
    Cp: np.ndarray


def compare_peb_models(peb: PEBResult, factors: Mapping[str, np.ndarray]) -> ModelComparison:
    """Family comparison over the models that switch off any combination of ``factors``.

    factors : {name: (K, P) bool mask of the second-level parameters the factor switches off}
    (e.g. "top-down": every design column's effect on vmPFC → amygdala). The model space is all
    2^F combinations (factor present or absent); each model's log evidence is the BMR of the
    full PEB (uniform prior over models), and each factor's family probability is the summed
    posterior of the models that keep it ("with") or switch it off ("without").
    """
    names = list(factors)
    if not names:
        raise ValueError("no factors given")
    masks = [np.asarray(factors[n], dtype=bool) for n in names]
    for name, mask in zip(names, masks):
        if mask.shape != peb.Ep.shape:
            raise ValueError(f"factor {name!r}: mask shape {mask.shape} is not the PEB's {peb.Ep.shape}")
        if not mask.any():
            raise ValueError(f"factor {name!r} switches nothing off")
    reduce = _reducer(peb, SPM_TOL_SEARCH)
    combos = list(itertools.product((True, False), repeat=len(names)))
    on = np.ones((len(combos), *peb.Ep.shape), bool)
    labels = []
    for row, present in enumerate(combos):
        for mask, keep in zip(masks, present):
            if not keep:
                on[row] &= ~mask
        labels.append("+".join(f"{'with' if keep else 'without'}-{n}" for n, keep in zip(names, present)))
    F = np.array([reduce(np.flatnonzero(~o.ravel()))[0] for o in on])
    post = softmax(F)
    families = {n: {"with": float(post[[c[j] for c in combos]].sum()),
                    "without": float(post[[not c[j] for c in combos]].sum())} for j, n in enumerate(names)}
    Ep, Cp = _average(peb, on.reshape(len(combos), -1), F)
    return ModelComparison(models=labels, on=on, log_evidence=F, posterior=post, families=families,
                           Ep=Ep.reshape(peb.Ep.shape), Cp=Cp)


def contrast_posterior(Ep: np.ndarray, Cp: np.ndarray, weights: np.ndarray) -> dict:
    """Posterior of c·β for weights c (K, P) over a posterior N(Ep (K, P), Cp (K·P, K·P)).

    Returns mean, sd and the probability that the combination is positive (Gaussian posterior).
    """
    c = np.asarray(weights, dtype=float).ravel()
    mean = float(c @ np.asarray(Ep).ravel())
    var = float(c @ Cp @ c)
    sd = float(np.sqrt(max(var, 0.0)))
    p_pos = float(norm.cdf(mean / sd)) if sd > 0 else float(mean > 0)
    return {"mean": mean, "sd": sd, "p_positive": p_pos}
