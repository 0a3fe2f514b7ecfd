"""Cross-validated elastic-net prediction of clinical change from imaging features.

Reference model (Norbury et al. 2021, Neuropsychopharmacology 46:2266; elastic
net: Zou & Hastie 2005, J R Stat Soc B 67:301): symptom change is regressed on
standardised imaging change scores (scikit-learn's ``Pipeline(StandardScaler,
ElasticNetCV)``); the penalty (alpha) and mixing parameter (l1_ratio, from a grid)
are those of minimum leave-one-out mean squared error, and the model is refitted
on all subjects.  Coefficients are reported in outcome units per predictor unit
(``coef``) and per predictor standard deviation (``coef_std``).  The fits are
computed by :mod:`ketflow.group.elasticnet`, which equals ``ElasticNetCV`` on the
same grid and folds and shares each training fold's Gram matrix across every
outcome vector (observed and permuted).

Variants (all chosen through :class:`ModelSpec`): any predictor columns (e.g.
baseline measures), the arm as a predictor, arm × feature interactions, forced
covariates, per-arm models (:func:`evaluate_per_arm`).

Honest performance (:func:`evaluate`): nested cross-validation (outer
leave-one-out or repeated K-fold; the whole pipeline, interaction centring,
residualisation, scaler and penalty search included, is refitted inside every
outer training set) gives out-of-sample R² and the prediction–observation
correlation, with percentile bootstrap intervals over subjects; a seeded
permutation test repeats the whole nested CV on permuted outcomes (Ojala &
Garriga 2010, JMLR 11:1833; with unpenalised columns the residuals of the outcome
on them are permuted, Freedman & Lane 1983, J Bus Econ Stat 1:292); bootstrap
selection frequencies refit the model on resampled subjects (Bach 2008;
Meinshausen & Bühlmann 2010, J R Stat Soc B 72:417).

Arm coding: with ``arm_coding="effect"`` the control arm is −0.5 and the active
arm +0.5, so a feature's main effect is its slope averaged over arms and the
interaction is the active-minus-control slope difference; with ``"dummy"``
(0/1) the main effect is the slope in the control arm.  Interaction columns are
arm × (feature − training-set mean), formed inside each fold.

Unpenalised columns: with ``penalise_covariates=False`` covariates are left
unpenalised exactly: inside each training set the outcome and the penalised
predictors are residualised on [1, covariates] by least squares and the elastic
net is fitted to the residuals; by the Frisch–Waugh–Lovell argument this gives
the same penalised coefficients as minimising the elastic-net loss with the
covariate coefficients unpenalised (glmnet's penalty factor 0), whose values are
then the least-squares fit of the remaining outcome.  (The penalised columns are
standardised after residualisation, and within the penalty search's folds the
residualisation and the scaler come from the whole training set: no outcome
information crosses an outer fold.)  With ``penalise_covariates=True`` they are
ordinary penalised predictors.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import (
    GroupKFold,
    KFold,
    LeaveOneGroupOut,
    LeaveOneOut,
    RepeatedKFold,
)

from .elasticnet import SearchResult, fit_at, penalty_search

__all__ = [
    "ModelSpec",
    "Design",
    "FittedModel",
    "PredictionReport",
    "design_matrix",
    "fit_model",
    "nested_cv_predictions",
    "prediction_scores",
    "bootstrap_score_intervals",
    "permutation_null",
    "permutation_p_value",
    "reference_predictions",
    "selection_frequencies",
    "evaluate",
    "evaluate_per_arm",
]

DEFAULT_L1_RATIOS = (0.1, 0.5, 0.7, 0.9, 0.95, 0.99, 1.0)


@dataclass(frozen=True)
class ModelSpec:
    """What to predict from what, and the penalty search.

    outcome : column of the feature table to predict (e.g. ``caps5_total__change``).
    features : penalised predictor columns (imaging change or baseline columns).
    arm : column holding the treatment arm labels, or None.
    arm_levels : (control, active) labels; required when the arm is used.
    arm_coding : ``"effect"`` (−0.5/+0.5) or ``"dummy"`` (0/1).
    include_arm : add the arm main effect as an unpenalised predictor (exact, as forced
        covariates); implied by ``arm_interactions``.
    arm_interactions : add arm × feature columns for every feature.
    covariates : covariate columns forced into the model.
    penalise_covariates : False = unpenalised (exact, by residualisation);
        True = ordinary penalised predictors.
    l1_ratios : grid of the mixing parameter (1 = lasso).
    n_alphas : number of penalties on ElasticNetCV's log grid per l1_ratio.
    inner_folds : None = leave-one-out penalty selection (the reference), or K
        for shuffled K-fold (seeded), much cheaper inside nested CV and permutations.
    max_iter : coordinate-descent iterations.
    """

    outcome: str
    features: tuple[str, ...]
    arm: str | None = None
    arm_levels: tuple[str, str] | None = None
    arm_coding: str = "effect"
    include_arm: bool = False
    arm_interactions: bool = False
    covariates: tuple[str, ...] = ()
    penalise_covariates: bool = False
    l1_ratios: tuple[float, ...] = DEFAULT_L1_RATIOS
    n_alphas: int = 100
    inner_folds: int | None = None
    max_iter: int = 10000

    def __post_init__(self):
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "covariates", tuple(self.covariates))
        object.__setattr__(self, "l1_ratios", tuple(float(v) for v in self.l1_ratios))
        if not self.features:
            raise ValueError("ModelSpec needs at least one feature")
        if self.arm_coding not in ("effect", "dummy"):
            raise ValueError(f"arm_coding must be 'effect' or 'dummy', not {self.arm_coding!r}")
        if (self.include_arm or self.arm_interactions) and (self.arm is None or self.arm_levels is None):
            raise ValueError("using the arm needs both `arm` and `arm_levels=(control, active)`")
        if self.arm_levels is not None and len(self.arm_levels) != 2:
            raise ValueError("arm_levels must be (control, active)")
        if self.inner_folds is not None and self.inner_folds < 2:
            raise ValueError("inner_folds must be None (leave-one-out) or >= 2")

    @property
    def uses_arm(self) -> bool:
        return self.include_arm or self.arm_interactions


@dataclass(frozen=True)
class Design:
    """Numeric design: X (n_subjects, n_columns), y (n_subjects,), column names.

    ``arm_index`` is the arm column (or None), ``interaction_indices`` the
    features multiplied by the arm, ``unpenalised_indices`` the arm and the forced covariates.
    """

    X: np.ndarray
    y: np.ndarray
    columns: tuple[str, ...]
    subjects: tuple[str, ...]
    arm_index: int | None
    interaction_indices: tuple[int, ...]
    unpenalised_indices: tuple[int, ...]

    @property
    def output_columns(self) -> tuple[str, ...]:
        """Names of the model's coefficients (interactions appended last)."""
        arm = self.columns[self.arm_index] if self.arm_index is not None else ""
        return self.columns + tuple(f"{arm}:{self.columns[i]}" for i in self.interaction_indices)


def _numeric_column(table: pd.DataFrame, col: str) -> np.ndarray:
    if col not in table.columns:
        raise ValueError(f"feature table has no column '{col}'")
    values = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=float)
    if np.isnan(values).any():
        sub = table["subject"].iloc[int(np.flatnonzero(np.isnan(values))[0])] if "subject" in table else "?"
        raise ValueError(f"column '{col}' has missing or non-numeric values (e.g. subject {sub})")
    return values


def design_matrix(table: pd.DataFrame, spec: ModelSpec) -> Design:
    """Numeric design of ``spec`` from a feature table (one row per subject)."""
    columns = list(spec.features)
    blocks = [_numeric_column(table, c) for c in spec.features]
    arm_index = None
    if spec.uses_arm:
        if spec.arm not in table.columns:
            raise ValueError(f"feature table has no arm column '{spec.arm}'")
        labels = table[spec.arm].astype(str).to_numpy()
        unknown = sorted(set(labels) - set(spec.arm_levels))
        if unknown:
            raise ValueError(f"arm labels {unknown} are not among arm_levels {spec.arm_levels}")
        codes = (-0.5, 0.5) if spec.arm_coding == "effect" else (0.0, 1.0)
        arm_index = len(columns)
        columns.append(spec.arm)
        blocks.append(np.where(labels == spec.arm_levels[1], codes[1], codes[0]))
    cov_start = len(columns)
    columns += list(spec.covariates)
    blocks += [_numeric_column(table, c) for c in spec.covariates]
    unpenalised = () if spec.penalise_covariates else tuple(range(cov_start, len(columns)))
    if arm_index is not None:  # the arm is never penalised
        unpenalised = (arm_index, *unpenalised)
    interactions = tuple(range(len(spec.features))) if spec.arm_interactions else ()
    subjects = tuple(table["subject"].astype(str)) if "subject" in table else tuple(map(str, range(len(table))))
    return Design(X=np.column_stack(blocks), y=_numeric_column(table, spec.outcome),
                  columns=tuple(columns), subjects=subjects, arm_index=arm_index,
                  interaction_indices=interactions, unpenalised_indices=unpenalised)


@dataclass(frozen=True)
class _TrainingSet:
    """The elastic net's view of one training set (the whole pipeline, learned on its rows only).

    Arm × feature interactions are arm × (feature − training mean); the penalised columns and the
    outcome are residualised on Z = [1, unpenalised columns] (Frisch–Waugh–Lovell) and the
    penalised columns standardised (population SD, as ``StandardScaler``).

    feature_means (n_interactions,); Xs (n, n_penalised) standardised penalised columns;
    Z (n, 1 + n_unpenalised); Z_pinv (1 + n_unpenalised, n); Z_coef_X (1 + n_unpenalised,
    n_penalised) = Z⁺ X_penalised; scale (n_penalised,); penalised, unpenalised: column indices
    of the full design (interactions appended, :attr:`Design.output_columns`).
    """

    feature_means: np.ndarray
    Xs: np.ndarray
    Z: np.ndarray
    Z_pinv: np.ndarray
    Z_coef_X: np.ndarray
    scale: np.ndarray
    penalised: np.ndarray
    unpenalised: np.ndarray


def _with_interactions(design: Design, X: np.ndarray, feature_means: np.ndarray) -> np.ndarray:
    """X (rows, n_columns) with the arm × (feature − feature_means) columns appended."""
    if not design.interaction_indices:
        return X
    feats = list(design.interaction_indices)
    return np.hstack([X, X[:, [design.arm_index]] * (X[:, feats] - feature_means)])


def _standard_scale(X: np.ndarray) -> np.ndarray:
    """``StandardScaler``'s scale of X (n, q): population SD, 1 for constant columns (same rule)."""
    n, eps = len(X), np.finfo(np.float64).eps
    mean, var = X.mean(axis=0), X.var(axis=0)
    scale = np.sqrt(var)
    constant = (var <= n * eps * var + (n * mean * eps) ** 2) | (scale < 10 * eps)
    return np.where(constant, 1.0, scale)


def _training_set(design: Design, rows: np.ndarray) -> _TrainingSet:
    X = design.X[rows]
    means = X[:, list(design.interaction_indices)].mean(axis=0)
    full = _with_interactions(design, X, means)
    unpen = np.asarray(design.unpenalised_indices, dtype=int)
    pen = np.setdiff1d(np.arange(full.shape[1]), unpen)
    Z = np.column_stack([np.ones(len(rows)), full[:, unpen]])
    Z_pinv = np.linalg.pinv(Z)
    Z_coef_X = Z_pinv @ full[:, pen]
    resid = full[:, pen] - Z @ Z_coef_X
    scale = _standard_scale(resid)
    return _TrainingSet(feature_means=means, Xs=(resid - resid.mean(axis=0)) / scale, Z=Z, Z_pinv=Z_pinv,
                        Z_coef_X=Z_coef_X, scale=scale, penalised=pen, unpenalised=unpen)


def _inner_folds(spec: ModelSpec, n_train: int, seed: int, groups: np.ndarray | None = None):
    """Penalty-search folds of a training set: leave-one-out (``inner_folds`` None or >= the number of
    subjects) or seeded shuffled K-fold; with ``groups`` (bootstrap copies of a subject) the
    folds keep each group together (leave-one-group-out, GroupKFold)."""
    index = np.zeros(n_train)
    if groups is None:
        if spec.inner_folds is None or spec.inner_folds >= n_train:
            return list(LeaveOneOut().split(index))
        return list(KFold(spec.inner_folds, shuffle=True, random_state=seed).split(index))
    if spec.inner_folds is None or spec.inner_folds >= len(np.unique(groups)):
        return list(LeaveOneGroupOut().split(index, groups=groups))
    return list(GroupKFold(spec.inner_folds, shuffle=True, random_state=seed).split(index, groups=groups))


@dataclass(frozen=True)
class _Fit:
    """Elastic nets of B outcomes on one training set.

    coef (B, n_output_columns) in predictor units; intercept (B,); coef_std (B, n_penalised) per SD
    of the (residualised) penalised column; search: the penalty search; training: the transform.
    """

    coef: np.ndarray
    intercept: np.ndarray
    coef_std: np.ndarray
    search: SearchResult
    training: _TrainingSet

    def predict(self, design: Design, X: np.ndarray) -> np.ndarray:
        """Predictions (B, rows) of raw design rows X (rows, n_columns)."""
        full = _with_interactions(design, X, self.training.feature_means)
        return self.coef @ full.T + self.intercept[:, None]


def _fit(design: Design, spec: ModelSpec, rows: np.ndarray, Y: np.ndarray, folds) -> _Fit:
    """Penalty search over ``folds`` and refit on ``rows`` for every column of Y (len(rows), B)."""
    ts = _training_set(design, rows)
    Y_coef = ts.Z_pinv @ Y
    Yr = Y - ts.Z @ Y_coef
    search = penalty_search(ts.Xs, Yr, folds, spec.l1_ratios, spec.n_alphas)
    W, _, failures = fit_at(ts.Xs, Yr, search, spec.l1_ratios)
    if search.failures or failures:
        warnings.warn(f"elastic net: {search.failures + failures} penalty fit(s) stopped at the sweep limit "
                      "before converging", ConvergenceWarning, stacklevel=3)
    beta = W / ts.scale
    gamma = Y_coef - ts.Z_coef_X @ beta.T
    coef = np.zeros((Y.shape[1], len(ts.penalised) + len(ts.unpenalised)))
    coef[:, ts.penalised] = beta
    coef[:, ts.unpenalised] = gamma[1:].T
    return _Fit(coef=coef, intercept=gamma[0], coef_std=W, search=search, training=ts)


@dataclass(frozen=True)
class FittedModel:
    """Elastic net refitted on all subjects.

    coefficients : DataFrame indexed by predictor with ``coef`` (outcome units per
    predictor unit), ``coef_std`` (per predictor SD; for forced covariates per
    covariate SD), ``beta_std`` (standardised β: predictor and outcome in SD units, the
    reference study's units), ``penalised`` and ``retained`` (non-zero or forced).
    alpha, l1_ratio : the chosen penalty; cv_mse : its cross-validated mean squared error
    (leave-one-out by default: the reference study's "minimum predictive error").
    """

    coefficients: pd.DataFrame
    alpha: float
    l1_ratio: float
    intercept: float
    cv_mse: float
    design: Design

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions (rows,) of raw design rows X (rows, n_columns of :attr:`design`)."""
        X = np.asarray(X, dtype=float)
        means = self.design.X[:, list(self.design.interaction_indices)].mean(axis=0)
        return _with_interactions(self.design, X, means) @ self.coefficients["coef"].to_numpy() + self.intercept


def fit_model(table: pd.DataFrame, spec: ModelSpec, *, seed: int = 0) -> FittedModel:
    """Fit ``spec`` on every subject of ``table`` (penalty by the inner CV of ``spec``)."""
    design = design_matrix(table, spec)
    n = len(design.y)
    fit = _fit(design, spec, np.arange(n), design.y[:, None], _inner_folds(spec, n, seed))
    full = _with_interactions(design, design.X, fit.training.feature_means)
    penalised = np.zeros(full.shape[1], bool)
    penalised[fit.training.penalised] = True
    coef = fit.coef[0]
    coef_std = coef * full.std(axis=0)
    coef_std[penalised] = fit.coef_std[0]
    coefs = pd.DataFrame({"coef": coef, "coef_std": coef_std, "beta_std": coef * full.std(axis=0) / design.y.std(),
                          "penalised": penalised, "retained": (coef != 0) | ~penalised},
                         index=pd.Index(design.output_columns, name="predictor"))
    return FittedModel(coefficients=coefs, alpha=float(fit.search.alpha[0]),
                       l1_ratio=float(fit.search.l1_ratio[0]), intercept=float(fit.intercept[0]),
                       cv_mse=float(fit.search.min_mse[0]), design=design)


def _outer_splits(n: int, outer_folds: int | None, outer_repeats: int, seed: int):
    """List of (repeat, train, test); K >= n folds is leave-one-out (one repeat)."""
    if outer_folds is None or outer_folds >= n:
        return [(0, tr, te) for tr, te in LeaveOneOut().split(np.zeros(n))]
    rkf = RepeatedKFold(n_splits=outer_folds, n_repeats=outer_repeats, random_state=seed)
    return [(k // outer_folds, tr, te) for k, (tr, te) in enumerate(rkf.split(np.zeros(n)))]


def _map(function, items, n_jobs: int):
    """``[function(item) for item in items]``, in ``n_jobs`` threads (the kernels release the GIL)."""
    items = list(items)
    if n_jobs is None or n_jobs <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        return list(pool.map(function, items))


def nested_cv_predictions(design: Design, spec: ModelSpec, *, y: np.ndarray | None = None,
                          outer_folds: int | None = None, outer_repeats: int = 1,
                          seed: int = 0, n_jobs: int = 1) -> np.ndarray:
    """Out-of-sample predictions, shape (n_repeats, n_subjects), or (B, n_repeats, n_subjects)
    when ``y`` is (n_subjects, B).

    Each outer training set gets its own interaction centring, residualisation, scaler and inner
    penalty search; every column of ``y`` (default ``design.y``; the permutation test passes the
    observed and all permuted outcomes at once) shares the predictors' Gram matrices.
    outer_folds None (or >= n) = leave-one-out (one repeat).
    """
    single = y is None or np.ndim(y) == 1
    Y = (design.y if y is None else np.asarray(y, dtype=float)).reshape(len(design.y), -1)
    splits = _outer_splits(len(Y), outer_folds, outer_repeats, seed)
    n_rep = 1 + max(rep for rep, _, _ in splits)

    def one(split):
        _, train, test = split
        fit = _fit(design, spec, train, Y[train], _inner_folds(spec, len(train), seed))
        return fit.predict(design, design.X[test])

    out = np.full((Y.shape[1], n_rep, len(Y)), np.nan)
    for (rep, _, test), pred in zip(splits, _map(one, splits, n_jobs)):
        out[:, rep, test] = pred
    return out[0] if single else out


def prediction_scores(y: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """Out-of-sample R² (1 − SSres/SStot about the mean of y) and Pearson r.

    predictions : (n_repeats, n) or (n,); scores are averaged over repeats.
    """
    y = np.asarray(y, dtype=float)
    pred = np.atleast_2d(predictions)
    ss_tot = np.sum((y - y.mean()) ** 2)
    r2 = [1.0 - np.sum((y - p) ** 2) / ss_tot for p in pred]
    r = [np.corrcoef(y, p)[0, 1] if np.std(p) > 0 else 0.0 for p in pred]
    return {"r2": float(np.mean(r2)), "r": float(np.mean(r))}


def bootstrap_score_intervals(y, predictions, *, n_bootstrap: int = 2000, level: float = 0.95,
                              seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals (subjects resampled) of R² and r."""
    y = np.asarray(y, dtype=float)
    pred = np.atleast_2d(predictions)
    rng = np.random.default_rng(seed)
    samples = {"r2": [], "r": []}
    for _ in range(n_bootstrap):
        idx = rng.integers(0, len(y), len(y))
        if np.ptp(y[idx]) == 0:
            continue
        s = prediction_scores(y[idx], pred[:, idx])
        for k in samples:
            samples[k].append(s[k])
    tail = 100 * (1 - level) / 2
    return {k: (float(np.nanpercentile(v, tail)), float(np.nanpercentile(v, 100 - tail)))
            for k, v in samples.items()}


def _scores(y: np.ndarray, predictions: np.ndarray) -> pd.DataFrame:
    """:func:`prediction_scores` of many outcomes at once: y (B, n), predictions (B, n_repeats, n)
    -> DataFrame (B rows) with columns r2, r."""
    y = np.asarray(y, dtype=float)[:, None, :]
    yc = y - y.mean(axis=2, keepdims=True)
    r2 = 1.0 - np.sum((y - predictions) ** 2, axis=2) / np.sum(yc ** 2, axis=2)
    pc = predictions - predictions.mean(axis=2, keepdims=True)
    norm = np.sqrt(np.sum(pc ** 2, axis=2) * np.sum(yc ** 2, axis=2))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(np.std(predictions, axis=2) > 0, np.sum(pc * yc, axis=2) / norm, 0.0)
    return pd.DataFrame({"r2": r2.mean(axis=1), "r": r.mean(axis=1)})


def _permuted_outcomes(design: Design, n_permutations: int, seed: int) -> np.ndarray:
    """(n, n_permutations) permuted outcomes; Freedman–Lane with unpenalised columns: the residuals
    of y on [1, unpenalised columns] are permuted and added back to the fitted values."""
    rng = np.random.default_rng(seed)
    y = design.y
    if design.unpenalised_indices:
        Z = np.column_stack([np.ones(len(y)), design.X[:, list(design.unpenalised_indices)]])
        fitted = Z @ np.linalg.lstsq(Z, y, rcond=None)[0]
    else:
        fitted = np.full(len(y), y.mean())
    resid = y - fitted
    out = np.empty((len(y), n_permutations))
    for k in range(n_permutations):
        out[:, k] = fitted + resid[rng.permutation(len(y))]
    return out


def permutation_null(design: Design, spec: ModelSpec, *, n_permutations: int = 1000,
                     outer_folds: int | None = None, outer_repeats: int = 1, seed: int = 0,
                     n_jobs: int = 1) -> pd.DataFrame:
    """Nested-CV scores (columns r2, r) of ``n_permutations`` permuted outcomes, in permutation order.

    All permutations go through the nested CV together (one Gram matrix per fold); the permuted
    outcomes depend on ``seed`` only.
    """
    Y = _permuted_outcomes(design, n_permutations, seed)
    preds = nested_cv_predictions(design, spec, y=Y, outer_folds=outer_folds, outer_repeats=outer_repeats,
                                  seed=seed, n_jobs=n_jobs)
    return _scores(Y.T, preds)


def reference_predictions(design: Design, Y: np.ndarray, *, outer_folds: int | None = None,
                          outer_repeats: int = 1, seed: int = 0) -> np.ndarray:
    """Nested-CV predictions (B, n_repeats, n) of the reference model: least squares of each column
    of Y (n, B) on [1, unpenalised columns] (the arm and forced covariates), on the same outer folds
    as :func:`nested_cv_predictions`."""
    Y = np.asarray(Y, dtype=float).reshape(len(design.y), -1)
    Z = np.column_stack([np.ones(len(Y)), design.X[:, list(design.unpenalised_indices)]])
    splits = _outer_splits(len(Y), outer_folds, outer_repeats, seed)
    out = np.full((Y.shape[1], 1 + max(rep for rep, _, _ in splits), len(Y)), np.nan)
    for rep, train, test in splits:
        coef, *_ = np.linalg.lstsq(Z[train], Y[train], rcond=None)
        out[:, rep, test] = (Z[test] @ coef).T
    return out


def permutation_p_value(null: np.ndarray, observed: float) -> float:
    """Monte Carlo permutation p-value (1 + #{null >= observed}) / (1 + n)."""
    null = np.asarray(null, dtype=float)
    return float((1 + np.sum(null >= observed)) / (1 + len(null)))


def _bootstrap_draws(n: int, n_bootstrap: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.sort(rng.integers(0, n, n)) for _ in range(n_bootstrap)]


def selection_frequencies(design: Design, spec: ModelSpec, *, n_bootstrap: int = 500,
                          seed: int = 0, n_jobs: int = 1) -> pd.DataFrame:
    """Bootstrap selection frequency of each predictor.

    Subjects are resampled with replacement and the whole model (penalty search
    included) refitted; the inner CV keeps copies of a subject in one fold
    (leave-one-subject-out or GroupKFold).  Columns: ``frequency`` (fraction of
    fits with a non-zero coefficient; 1 for forced covariates), ``positive``
    (fraction of those non-zero fits with a positive sign).
    """
    draws = _bootstrap_draws(len(design.y), n_bootstrap, seed)

    def one(item):
        b, idx = item
        return _fit(design, spec, idx, design.y[idx][:, None],
                    _inner_folds(spec, len(idx), seed + b, groups=idx)).coef[0]

    coefs = np.array(_map(one, enumerate(draws), n_jobs))
    nonzero = coefs != 0
    with np.errstate(invalid="ignore", divide="ignore"):
        positive = (coefs > 0).sum(axis=0) / nonzero.sum(axis=0)
    return pd.DataFrame({"frequency": nonzero.mean(axis=0), "positive": positive},
                        index=pd.Index(design.output_columns, name="predictor"))


@dataclass(frozen=True)
class PredictionReport:
    """Everything :func:`evaluate` measured.

    fit : the model refitted on all subjects.
    predictions : (n_repeats, n) nested-CV out-of-sample predictions; observed : (n,).
    scores : {'r2', 'r'}; intervals : {'r2': (lo, hi), 'r': (lo, hi)}.
    null : DataFrame of permuted nested-CV scores; p_values : {'r2', 'r'}, see
        :func:`sequential_p_value`.
    selection : bootstrap selection frequencies (empty if not requested).
    settings : the resampling settings used (JSON-ready).
    reference : with unpenalised columns (arm, covariates): {columns, r2 (nested-CV R² of least
        squares on them alone), delta_r2 (the model's R² minus that), p_delta_r2 (its
        Freedman–Lane permutation p: the null keeps the arm and covariate effects)}; else None.
    """

    fit: FittedModel
    predictions: np.ndarray
    observed: np.ndarray
    scores: dict
    intervals: dict
    null: pd.DataFrame
    p_values: dict
    selection: pd.DataFrame
    settings: dict = field(default_factory=dict)
    reference: dict | None = None

    def summary(self) -> dict:
        """JSON-ready performance summary (no NaN: undefined values are None)."""
        coefs = self.fit.coefficients
        return {
            "outcome": self.settings["spec"]["outcome"],
            "out_of_sample": {k: {"estimate": self.scores[k],
                                  "interval": list(self.intervals[k]),
                                  "p_permutation": self.p_values.get(k)} for k in ("r2", "r")},
            "reference_model": self.reference,
            "refit": {"alpha": self.fit.alpha, "l1_ratio": self.fit.l1_ratio,
                      "intercept": self.fit.intercept, "cv_mse": self.fit.cv_mse,
                      "retained": [str(c) for c in coefs.index[coefs["retained"]]]},
            "settings": self.settings,
        }


def evaluate(table: pd.DataFrame, spec: ModelSpec, *, inner_folds: int | None | str = "refit",
             outer_folds: int | None = None, outer_repeats: int = 1, n_permutations: int = 1000,
             n_bootstrap: int = 2000, n_selection_bootstrap: int = 1000, level: float = 0.95, seed: int = 0,
             n_jobs: int = 1) -> PredictionReport:
    """Fit, nested-CV performance, permutation p-values and selection frequencies.

    The reported model is refitted on all subjects with ``spec`` (its ``inner_folds``:
    None = leave-one-out penalty search, the reference method).  ``inner_folds`` sets the
    penalty search used inside the resampling (every nested-CV outer fold, every
    permutation, every selection bootstrap): "refit" = the same as the reported model, or
    K-fold / None (leave-one-out).  The permutation null repeats exactly the procedure whose
    observed score it is compared with: the observed and the permuted outcomes go through the
    same nested CV together.

    Deterministic given ``seed`` (whatever ``n_jobs``).  Measured timings: docs/performance.md.
    """
    design = design_matrix(table, spec)
    fitted = fit_model(table, spec, seed=seed)
    resampled = spec if inner_folds == "refit" else dataclasses.replace(spec, inner_folds=inner_folds)
    Y = np.column_stack([design.y[:, None], _permuted_outcomes(design, n_permutations, seed)])
    all_preds = nested_cv_predictions(design, resampled, y=Y, outer_folds=outer_folds,
                                      outer_repeats=outer_repeats, seed=seed, n_jobs=n_jobs)
    preds = all_preds[0]
    scores = prediction_scores(design.y, preds)
    reference = None
    if design.unpenalised_indices:
        ref_scores = _scores(Y.T, reference_predictions(design, Y, outer_folds=outer_folds,
                                                        outer_repeats=outer_repeats, seed=seed))
        full_scores = _scores(Y.T, all_preds)
        delta = (full_scores["r2"] - ref_scores["r2"]).to_numpy()
        reference = {"columns": [design.columns[j] for j in design.unpenalised_indices],
                     "r2": float(ref_scores["r2"].iloc[0]), "delta_r2": float(delta[0]),
                     "p_delta_r2": permutation_p_value(delta[1:], delta[0]) if n_permutations else None}
    intervals = bootstrap_score_intervals(design.y, preds, n_bootstrap=n_bootstrap, level=level,
                                          seed=seed)
    if n_permutations:
        null = _scores(Y[:, 1:].T, all_preds[1:])
        if reference is not None:
            null["delta_r2"] = delta[1:]
        p_values = {k: permutation_p_value(null[k].to_numpy(), scores[k]) for k in ("r2", "r")}
    else:
        null, p_values = pd.DataFrame(columns=["r2", "r"]), {}
    selection = (selection_frequencies(design, resampled, n_bootstrap=n_selection_bootstrap, seed=seed,
                                       n_jobs=n_jobs)
                 if n_selection_bootstrap else pd.DataFrame(columns=["frequency", "positive"]))
    n = len(design.y)
    loo_outer = outer_folds is None or outer_folds >= n

    settings = {"outer_cv": "leave-one-out" if loo_outer else f"{outer_repeats} x repeated {outer_folds}-fold",
                "inner_cv": "leave-one-out" if resampled.inner_folds is None
                else f"{resampled.inner_folds}-fold (leave-one-out in training sets of <= {resampled.inner_folds})",
                "refit_inner_cv": "leave-one-out" if spec.inner_folds is None or spec.inner_folds >= n
                else f"{spec.inner_folds}-fold",
                "n_subjects": int(n), "n_permutations": int(n_permutations),
                "n_bootstrap": int(n_bootstrap), "n_selection_bootstrap": int(n_selection_bootstrap),
                "interval_level": level, "seed": int(seed),
                "permutation_scheme": "Freedman-Lane (residuals of the outcome on "
                + ", ".join(design.columns[j] for j in design.unpenalised_indices) + ")"
                if design.unpenalised_indices else "outcome permutation",
                "spec": dataclasses.asdict(spec)}
    return PredictionReport(fit=fitted, predictions=preds, observed=design.y, scores=scores,
                            intervals=intervals, null=null, p_values=p_values, selection=selection,
                            settings=settings, reference=reference)


def evaluate_per_arm(table: pd.DataFrame, spec: ModelSpec, *, arm: str | None = None,
                     levels: Sequence[str] | None = None, **kwargs) -> dict[str, PredictionReport]:
    """:func:`evaluate` separately within each arm (arm terms dropped from ``spec``).

    arm : arm column (default ``spec.arm``); levels : arms to model (default all).
    """
    arm = arm or spec.arm
    if arm is None or arm not in table.columns:
        raise ValueError("per-arm models need the arm column")
    levels = list(levels) if levels is not None else sorted(table[arm].astype(str).unique())
    inner = dataclasses.replace(spec, include_arm=False, arm_interactions=False)
    return {lvl: evaluate(table[table[arm].astype(str) == lvl].reset_index(drop=True), inner, **kwargs)
            for lvl in levels}
