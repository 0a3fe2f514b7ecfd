"""Beta-series connectivity: least-squares-separate single-trial estimates and their correlations.

Rissman, Gazzaley & D'Esposito (2004), "Measuring functional connectivity during distinct
stages of a cognitive task", NeuroImage 23:752-763: the trial-to-trial variability of each
region's response is estimated trial by trial, and two regions are coupled in a condition when
their single-trial responses to that condition's trials covary.  Single-trial estimates by
least squares - separate (LSS; Mumford, Turner, Ashby & Poldrack 2012, NeuroImage 59:2636-2643,
"Deconvolving BOLD activation in event-related designs for multivoxel pattern classification
analyses"; Turner et al. 2012, Front Neurosci 6:63): one model per trial, holding the trial's
own regressor, one regressor per design column for the column's *other* trials, and the run's
nuisance regressors (confounds, spike regressors, cosine drifts, constant).  This is the
"LSS-N" form of nilearn's beta-series example and of NiBetaSeries (Kent et al.): the other
trials of the trial's own condition are modelled apart from those of the other conditions.

Regressors are those of the run's design (:mod:`ketflow.signal.design`): every trial's
stimulus function on the design's micro-time grid, convolved with the canonical HRF and read
at the scan times, so that the trials of a column sum to the column's regressor.  Temporal
derivatives are not modelled per trial (Mumford et al. 2012 use the canonical HRF only).

Fast solution (why not a loop of ``FirstLevelModel`` fits).  All trial models share the
nuisance regressors ``N`` and, up to a reparametrisation, the condition columns.  With ``M``
the residual-forming projector of ``N`` (Frisch-Waugh-Lovell), the trial-``i`` coefficient of
the LSS model ``[t_i, D with column c(i) replaced by D_c - t_i, N]`` equals ``a_i + d_c(i)``
where ``(a_i, d)`` are the coefficients of ``M y`` on ``[M t_i, M D]``: both designs span the
same space and ``t_i b + (D_c - t_i) d_c = t_i (b - d_c) + D_c d_c``.  So the data and the
regressors are projected once, the Gram blocks ``D'D``, ``T'D``, ``T'y`` and ``D'y`` are formed
once from the projected trial regressors ``T`` (``D = T W`` with ``W`` the trial-to-column
membership), and every trial's model is a (1 + K) x (1 + K) system (K design columns) solved
in one batched call - O(n (q + m + R)) for the projections plus O(m K^3 + m K R) for the
solves, against m full least-squares fits of an n x (1 + K + q) design for the loop.  A trial
that is the only one of its column leaves that column empty in its model: the column is left
out of its system (its coefficient is then ``a_i``).

Estimates are ordinary least squares, as in Mumford et al. (2012): a single-trial estimate
is only used through its covariance with other regions' estimates, OLS point estimates are
unbiased under serial correlation, and an AR(1) model would make each trial's whitening (and
so its estimate) depend on the other trials' regressors.

Censored trials.  Censored volumes enter the task models as spike regressors, which remove
them from every fit; a trial whose response falls mostly on censored volumes keeps almost
nothing of its regressor and gets an estimate of huge variance that, being shared by every
ROI's model, makes the condition's correlations +-1 (on simulated runs with motion bursts,
Fisher z up to 7.7).  :func:`retained_fraction` measures, per trial, the share of its
(centred) regressor's sum of squares that survives the projection on the nuisance regressors
(with 36P and the cosines about half of a 1-s event's, on simulated 150-volume runs; a
censored stretch over its peak nearly all of it).  Since the variance of a trial's estimate
scales with the inverse of what is retained, trials keeping less than ``1 / k`` of the run's
median trial -- an estimate more than ``k`` times as variable as the typical trial's
(``beta_series.max_variance_inflation``) -- are left out of the correlations.

Correlations (Rissman et al. 2004): per condition, the Pearson correlation over that
condition's trials between every pair of ROI beta series; a contrast over conditions is the
weighted sum of the conditions' Fisher z (``arctanh r``) matrices with the contrast's weights
(e.g. ``z(incongruent) - z(congruent)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .design import TaskDesign, assign_columns, microtime_regressors, validate_events
from .glm import column_space
from .hrf import convolve_microtime, spm_hrf_basis

__all__ = [
    "trial_table",
    "trial_regressors",
    "lss_betas",
    "retained_fraction",
    "usable_trials",
    "condition_trials",
    "beta_series_correlations",
    "contrast_fisher_z",
    "BetaSeries",
    "beta_series",
]


def trial_table(events: pd.DataFrame, design: TaskDesign, conditions: Sequence[str],
                derived_conditions: Sequence[Mapping] = ()) -> pd.DataFrame:
    """The modelled trials of a run, in onset order, with the design column each belongs to.

    Parameters
    ----------
    events : DataFrame
        BIDS events of the run (``onset``, ``duration``, ``trial_type``; optional ``modulation``).
    design : TaskDesign
        The run's design, built from the same events, ``conditions`` and ``derived_conditions``.
    conditions, derived_conditions
        As for :func:`ketflow.signal.design.make_task_design`.

    Returns
    -------
    DataFrame, one row per modelled trial
        ``trial`` (``trial-001``...), ``onset``, ``duration``, ``modulation``, ``trial_type`` and
        ``column`` (the design column of the trial).
    """
    n_scans = len(design.matrix)
    trials = assign_columns(validate_events(events, n_scans, design.tr), conditions, derived_conditions)
    unknown = sorted(set(trials["column"]) - set(design.columns))
    if unknown:
        raise ValueError(f"events of columns {unknown} are not in the design's columns {design.columns}")
    trials.insert(0, "trial", [f"trial-{k + 1:03d}" for k in range(len(trials))])
    return trials[["trial", "onset", "duration", "modulation", "trial_type", "column"]]


def trial_regressors(trials: pd.DataFrame, design: TaskDesign) -> np.ndarray:
    """One canonical-HRF regressor per trial, on the design's micro-time grid.

    Parameters
    ----------
    trials : DataFrame
        Output of :func:`trial_table`.
    design : TaskDesign

    Returns
    -------
    ndarray, shape (n_scans, n_trials)
        The trials of a design column sum to that column's regressor.
    """
    n_scans, resolution = len(design.matrix), design.microtime_resolution
    micro = microtime_regressors(trials.assign(column=trials["trial"]), list(trials["trial"]), n_scans,
                                 design.tr, resolution)
    hrf = spm_hrf_basis(design.tr / resolution, False)[:, 0]
    return convolve_microtime(micro, hrf, n_scans, resolution, design.microtime_onset).reshape(n_scans, -1)


def lss_betas(data: np.ndarray, regressors: np.ndarray, columns: Sequence[str], nuisance: np.ndarray) -> np.ndarray:
    """Least-squares-separate single-trial estimates (module docstring).

    Parameters
    ----------
    data : ndarray, shape (n_scans, n_signals)
        ROI signals (or voxels), e.g. in percent signal change.
    regressors : ndarray, shape (n_scans, n_trials)
        Trial regressors (:func:`trial_regressors`).
    columns : sequence of str, length n_trials
        The design column (condition) of every trial.
    nuisance : ndarray, shape (n_scans, q)
        Regressors every trial model shares (confounds, spikes, drifts, constant).

    Returns
    -------
    ndarray, shape (n_trials, n_signals)
        Each trial's coefficient in its own LSS model, in the units of ``data`` per unit of
        the trial regressor.
    """
    data = np.asarray(data, dtype=np.float64)
    regressors = np.asarray(regressors, dtype=np.float64)
    n_trials = regressors.shape[1]
    if data.ndim != 2 or data.shape[0] != regressors.shape[0] or len(nuisance) != data.shape[0]:
        raise ValueError(f"data {data.shape}, trial regressors {regressors.shape} and nuisance "
                         f"{np.shape(nuisance)} must have the same number of scans")
    if len(columns) != n_trials:
        raise ValueError(f"{len(columns)} trial columns for {n_trials} trial regressors")
    names = list(dict.fromkeys(columns))
    column_of = np.array([names.index(c) for c in columns])
    membership = np.zeros((n_trials, len(names)))
    membership[np.arange(n_trials), column_of] = 1.0
    q = column_space(nuisance)
    t = regressors - q @ (q.T @ regressors)          # projected trial regressors (n, m)
    y = data - q @ (q.T @ data)                      # projected data (n, R)
    tt = np.einsum("ij,ij->j", t, t)                 # (m,)
    ty = t.T @ y                                     # (m, R)
    td = (t.T @ t) @ membership                      # (m, K): t_i' D, with D = T W
    dd = membership.T @ td                           # (K, K)
    dy = membership.T @ ty                           # (K, R)
    k = len(names)
    gram = np.empty((n_trials, k + 1, k + 1))
    gram[:, 0, 0] = tt
    gram[:, 0, 1:] = td
    gram[:, 1:, 0] = td
    gram[:, 1:, 1:] = dd
    rhs = np.empty((n_trials, k + 1, y.shape[1]))
    rhs[:, 0] = ty
    rhs[:, 1:] = dy
    # a trial alone in its column: D_c = t_i, so the column drops out of that trial's model
    alone = membership.sum(axis=0)[column_of] == 1
    idx = np.flatnonzero(alone)
    gram[idx, 1 + column_of[idx], :] = 0.0
    gram[idx, :, 1 + column_of[idx]] = 0.0
    gram[idx, 1 + column_of[idx], 1 + column_of[idx]] = 1.0
    rhs[idx, 1 + column_of[idx]] = 0.0
    coef = np.linalg.solve(gram, rhs)                # (m, 1 + K, R)
    own = coef[np.arange(n_trials), 1 + column_of]   # d_c(i), 0 for trials alone in their column
    return coef[:, 0] + own


def retained_fraction(regressors: np.ndarray, nuisance: np.ndarray) -> np.ndarray:
    """Share (n_trials,) of each trial regressor's centred sum of squares left after projecting
    out the nuisance regressors (n_scans, q): 1 = untouched, 0 = entirely censored."""
    regressors = np.asarray(regressors, dtype=np.float64)
    q = column_space(nuisance)
    projected = regressors - q @ (q.T @ regressors)
    centred = regressors - regressors.mean(axis=0)
    total = np.einsum("ij,ij->j", centred, centred)
    return np.einsum("ij,ij->j", projected, projected) / np.where(total > 0, total, 1.0)


def usable_trials(retained: np.ndarray, max_variance_inflation: float) -> np.ndarray:
    """Trials (bool, n_trials) retaining at least ``1 / max_variance_inflation`` of the run's median
    trial's share (:func:`retained_fraction`): those whose estimate is not far more variable."""
    retained = np.asarray(retained, dtype=float)
    return retained >= np.median(retained) / max_variance_inflation


def condition_trials(trials: pd.DataFrame, design: TaskDesign) -> dict[str, np.ndarray]:
    """Condition name -> boolean mask (n_trials,) of its trials.

    Every estimable condition of the design (``design.members``: trial types, derived
    conditions and design columns) selects the trials of the columns it is made of.
    """
    return {name: trials["column"].isin(list(members)).to_numpy() for name, members in design.members.items()}


def beta_series_correlations(betas: np.ndarray, masks: Mapping[str, np.ndarray], min_trials: int = 3
                             ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Pearson correlation matrices of the beta series of every condition.

    Parameters
    ----------
    betas : ndarray, shape (n_trials, n_rois)
    masks : mapping
        Condition -> boolean mask (n_trials,) of its trials (:func:`condition_trials`).
    min_trials : int
        Conditions with fewer trials are left out (a correlation over 2 trials is +-1).

    Returns
    -------
    matrices : dict
        Condition -> (n_rois, n_rois) Pearson correlations (diagonal 1; NaN for a ROI whose
        beta series is constant).
    n_trials : dict
        Condition -> the number of trials of its beta series (all conditions, kept or not).
    """
    matrices, counts = {}, {}
    for name, mask in masks.items():
        counts[name] = int(np.sum(mask))
        if counts[name] < min_trials:
            continue
        series = betas[np.asarray(mask, bool)]
        centred = series - series.mean(axis=0)
        norms = np.sqrt(np.einsum("ij,ij->j", centred, centred))
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (centred.T @ centred) / np.outer(norms, norms)
        np.fill_diagonal(r, np.where(norms > 0, 1.0, np.nan))
        matrices[name] = np.clip(r, -1.0, 1.0)
    return matrices, counts


def contrast_fisher_z(matrices: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray | None:
    """Weighted sum of the conditions' Fisher z (``arctanh r``) matrices; diagonal NaN.

    Returns None when a weighted condition has no matrix (too few trials or not in the run).
    """
    if any(name not in matrices for name, w in weights.items() if w):
        return None
    n = next(iter(matrices.values())).shape[0]
    out = np.zeros((n, n))
    for name, w in weights.items():
        if w:
            r = matrices[name].copy()
            np.fill_diagonal(r, 0.0)
            with np.errstate(divide="ignore"):
                out += w * np.arctanh(r)
    np.fill_diagonal(out, np.nan)
    return out


@dataclass(frozen=True)
class BetaSeries:
    """One run's beta series and their correlations (:func:`beta_series`).

    betas : (n_trials, n_rois) LSS estimates; retained : (n_trials,) :func:`retained_fraction`;
    usable : (n_trials,) bool, :func:`usable_trials`; matrices : condition -> (n_rois, n_rois)
    Pearson r over its usable trials (conditions with at least ``min_trials``); counts :
    condition -> its number of usable trials.
    """

    betas: np.ndarray
    retained: np.ndarray
    usable: np.ndarray
    matrices: dict[str, np.ndarray]
    counts: dict[str, int]


def beta_series(rois: np.ndarray, trials: pd.DataFrame, design: TaskDesign, nuisance: np.ndarray, *,
                min_trials: int, max_variance_inflation: float) -> BetaSeries:
    """LSS beta series of ``rois`` (n_scans, n_rois) for the ``trials`` of :func:`trial_table`,
    the trials whose estimate is too variable left out (:func:`usable_trials`), and the Pearson
    correlation matrix of every condition of ``design`` (:func:`beta_series_correlations`).

    nuisance : (n_scans, k) the design's nuisance columns (confounds, cosines, censoring spikes).
    """
    regressors = trial_regressors(trials, design)
    betas = lss_betas(rois, regressors, list(trials["column"]), nuisance)
    retained = retained_fraction(regressors, nuisance)
    usable = usable_trials(retained, max_variance_inflation)
    masks = {name: of_condition & usable for name, of_condition in condition_trials(trials, design).items()}
    matrices, counts = beta_series_correlations(betas, masks, min_trials)
    return BetaSeries(betas, retained, usable, matrices, counts)
