"""Cross-validated elastic-net prediction of clinical change from imaging features.

Reference model (Norbury et al. 2021, Neuropsychopharmacology 46:2266; elastic
net: Zou & Hastie 2005, J R Stat Soc B 67:301): symptom change is regressed on
imaging change scores with ``Pipeline(StandardScaler, ElasticNetCV)``; the
penalty (alpha) and mixing parameter (l1_ratio, from a grid) are those of
minimum leave-one-out mean squared error, and the model is refitted on all
subjects.  Coefficients are reported in outcome units per predictor unit
(``coef``) and per predictor standard deviation (``coef_std``).

Variants (all chosen through :class:`ModelSpec`): any predictor columns (e.g.
baseline measures), the arm as a predictor, arm × feature interactions, forced
covariates, per-arm models (:func:`evaluate_per_arm`).

Honest performance (:func:`evaluate`): nested cross-validation (outer
leave-one-out or repeated K-fold; the whole pipeline, scaler and penalty search
included, is refitted inside every outer training set; the penalty search
inside the resampling may be K-fold rather than leave-one-out to make it
affordable, while the reported model keeps the leave-one-out search) gives out-of-sample R²
and the prediction–observation correlation, with percentile bootstrap intervals
over subjects; a seeded permutation test repeats the whole nested CV on
permuted outcomes (Ojala & Garriga 2010, JMLR 11:1833; with forced covariates
the residuals of the outcome on the covariates are permuted, Freedman & Lane
1983, J Bus Econ Stat 1:292), optionally stopping early once the observed score
is clearly unremarkable (sequential Monte Carlo p-value, Besag & Clifford 1991,
Biometrika 78:301); bootstrap selection frequencies refit the model
on resampled subjects (Bach 2008; Meinshausen & Bühlmann 2010, J R Stat Soc B
72:417).

Arm coding: with ``arm_coding="effect"`` the control arm is −0.5 and the active
arm +0.5, so a feature's main effect is its slope averaged over arms and the
interaction is the active-minus-control slope difference; with ``"dummy"``
(0/1) the main effect is the slope in the control arm.  Interaction columns are
arm × (feature − training-set mean), formed inside each fold.

Forced covariates: scikit-learn's ElasticNet has no per-feature penalty factor
(glmnet's ``penalty.factor``).  With ``penalise_covariates=False`` covariates
are left unpenalised exactly: inside each fit the outcome and the penalised
predictors are residualised on [1, covariates] by least squares and the elastic
net is fitted to the residuals; by the Frisch–Waugh–Lovell argument this gives
the same penalised coefficients as minimising the elastic-net loss with the
covariate coefficients unpenalised, whose values are then the least-squares fit
of the remaining outcome.  (The penalised columns are standardised after
residualisation, and within ElasticNetCV's inner folds the residualisation and
the scaler come from the whole training set: no outcome information crosses
an outer fold.)  With ``penalise_covariates=True`` they are ordinary penalised
predictors.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import ElasticNetCV
from sklearn.model_selection import (
    GroupKFold,
    KFold,
    LeaveOneGroupOut,
    LeaveOneOut,
    RepeatedKFold,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

__all__ = [
    "ModelSpec",
    "Design",
    "FittedModel",
    "PredictionReport",
    "ArmInteractions",
    "PartiallyPenalisedElasticNet",
    "design_matrix",
    "make_estimator",
    "fit_model",
    "nested_cv_predictions",
    "prediction_scores",
    "bootstrap_score_intervals",
    "permutation_null",
    "sequential_p_value",
    "inner_splitter",
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
    include_arm : add the arm main effect as a (penalised) predictor; implied by
        ``arm_interactions``.
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
    features multiplied by the arm, ``unpenalised_indices`` the forced covariates.
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
    interactions = tuple(range(len(spec.features))) if spec.arm_interactions else ()
    subjects = tuple(table["subject"].astype(str)) if "subject" in table else tuple(map(str, range(len(table))))
    return Design(X=np.column_stack(blocks), y=_numeric_column(table, spec.outcome),
                  columns=tuple(columns), subjects=subjects, arm_index=arm_index,
                  interaction_indices=interactions, unpenalised_indices=unpenalised)


class ArmInteractions(TransformerMixin, BaseEstimator):
    """Append arm × (feature − training mean) columns to X.

    arm_index : column of X holding the arm code; feature_indices : columns to
    multiply.  The feature means are learned in ``fit`` (training fold only).
    """

    def __init__(self, arm_index: int = 0, feature_indices: tuple[int, ...] = ()):
        self.arm_index = arm_index
        self.feature_indices = feature_indices

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=float)
        self.means_ = X[:, list(self.feature_indices)].mean(axis=0)
        return self

    def transform(self, X):
        X = np.asarray(X, dtype=float)
        prod = X[:, [self.arm_index]] * (X[:, list(self.feature_indices)] - self.means_)
        return np.hstack([X, prod])


def _enet_cv(spec: ModelSpec, cv, n_jobs=None) -> ElasticNetCV:
    return ElasticNetCV(l1_ratio=list(spec.l1_ratios), alphas=spec.n_alphas, cv=cv,
                        max_iter=spec.max_iter, n_jobs=n_jobs)


def _scaled_enet(spec: ModelSpec, cv, n_jobs=None) -> Pipeline:
    return Pipeline([("scale", StandardScaler()), ("enet", _enet_cv(spec, cv, n_jobs))])


class PartiallyPenalisedElasticNet(RegressorMixin, BaseEstimator):
    """Elastic net with some columns unpenalised (exact, by residualisation).

    unpenalised : columns of X left unpenalised; the other columns are
    standardised (after residualisation) and penalised by ``enet``, an
    unfitted ``Pipeline(StandardScaler, ElasticNetCV)``.
    Fitted: ``coef_`` (n_columns,) in X's units, ``intercept_``, ``residual_scale_``
    (SD of each residualised penalised column), ``enet_`` (the fitted pipeline).
    """

    def __init__(self, enet=None, unpenalised: tuple[int, ...] = ()):
        self.enet = enet
        self.unpenalised = unpenalised

    def fit(self, X, y):
        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=float)
        free = [j for j in range(X.shape[1]) if j not in set(self.unpenalised)]
        Z = np.column_stack([np.ones(len(y)), X[:, list(self.unpenalised)]])
        proj, *_ = np.linalg.lstsq(Z, np.column_stack([y, X[:, free]]), rcond=None)
        resid = np.column_stack([y, X[:, free]]) - Z @ proj
        self.enet_ = clone(self.enet).fit(resid[:, 1:], resid[:, 0])
        scaler = self.enet_.named_steps["scale"]
        beta = self.enet_.named_steps["enet"].coef_ / scaler.scale_
        gamma, *_ = np.linalg.lstsq(Z, y - X[:, free] @ beta, rcond=None)
        self.coef_ = np.zeros(X.shape[1])
        self.coef_[free] = beta
        self.coef_[list(self.unpenalised)] = gamma[1:]
        self.intercept_ = float(gamma[0])
        self.residual_scale_ = scaler.scale_
        return self

    def predict(self, X):
        return np.asarray(X, dtype=float) @ self.coef_ + self.intercept_


def inner_splitter(spec: ModelSpec, n_train: int, seed: int = 0):
    """Penalty-search CV for ``n_train`` subjects: leave-one-out (``inner_folds=None``, or
    ``inner_folds >= n_train``) or seeded shuffled K-fold."""
    if spec.inner_folds is None or spec.inner_folds >= n_train:
        return LeaveOneOut()
    return KFold(spec.inner_folds, shuffle=True, random_state=seed)


def make_estimator(spec: ModelSpec, design: Design, cv=None, n_jobs=None, seed: int = 0,
                   n_train: int | None = None):
    """Unfitted estimator for ``spec``.

    cv : splitter or list of (train, test) splits for the penalty search; default
    :func:`inner_splitter` for ``n_train`` subjects (default: all of ``design``).
    """
    if cv is None:
        cv = inner_splitter(spec, len(design.y) if n_train is None else n_train, seed)
    steps = []
    if design.interaction_indices:
        steps.append(("interactions", ArmInteractions(design.arm_index, design.interaction_indices)))
    if design.unpenalised_indices:
        steps.append(("model", PartiallyPenalisedElasticNet(_scaled_enet(spec, cv, n_jobs),
                                                           design.unpenalised_indices)))
        return Pipeline(steps)
    if not steps:
        return _scaled_enet(spec, cv, n_jobs)
    return Pipeline(steps + list(_scaled_enet(spec, cv, n_jobs).steps))


@dataclass(frozen=True)
class FittedModel:
    """Elastic net refitted on all subjects.

    coefficients : DataFrame indexed by predictor with ``coef`` (outcome units per
    predictor unit), ``coef_std`` (per predictor SD; for forced covariates per
    covariate SD), ``penalised`` and ``retained`` (non-zero or forced).
    """

    coefficients: pd.DataFrame
    alpha: float
    l1_ratio: float
    intercept: float
    estimator: object
    design: Design


def _fitted_parts(est, design: Design):
    """(coef, coef_std, intercept, alpha, l1_ratio, penalised mask) of a fitted estimator."""
    final = est.steps[-1][1] if isinstance(est, Pipeline) else est
    names = design.output_columns
    if isinstance(final, PartiallyPenalisedElasticNet):
        enet = final.enet_.named_steps["enet"]
        n_cols = len(names)
        penalised = np.ones(n_cols, bool)
        penalised[list(design.unpenalised_indices)] = False
        X_full = est[:-1].transform(design.X) if len(est.steps) > 1 else design.X
        coef = final.coef_
        coef_std = coef * X_full.std(axis=0)
        coef_std[penalised] = enet.coef_
        return coef, coef_std, final.intercept_, enet.alpha_, enet.l1_ratio_, penalised
    scaler = est.named_steps["scale"]
    enet = est.named_steps["enet"]
    coef = enet.coef_ / scaler.scale_
    intercept = enet.intercept_ - float(coef @ scaler.mean_)
    return coef, enet.coef_.copy(), intercept, enet.alpha_, enet.l1_ratio_, np.ones(len(names), bool)


def _quiet_fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


def fit_model(table: pd.DataFrame, spec: ModelSpec, *, seed: int = 0, n_jobs=None) -> FittedModel:
    """Fit ``spec`` on every subject of ``table`` (penalty by the inner CV)."""
    design = design_matrix(table, spec)
    est = _quiet_fit(make_estimator(spec, design, n_jobs=n_jobs, seed=seed), design.X, design.y)
    coef, coef_std, intercept, alpha, l1, penalised = _fitted_parts(est, design)
    coefs = pd.DataFrame({"coef": coef, "coef_std": coef_std, "penalised": penalised,
                          "retained": (coef != 0) | ~penalised},
                         index=pd.Index(design.output_columns, name="predictor"))
    return FittedModel(coefficients=coefs, alpha=float(alpha), l1_ratio=float(l1),
                       intercept=float(intercept), estimator=est, design=design)


def _outer_splits(n: int, outer_folds: int | None, outer_repeats: int, seed: int):
    """List of (repeat, train, test); K >= n folds is leave-one-out (one repeat)."""
    if outer_folds is None or outer_folds >= n:
        return [(0, tr, te) for tr, te in LeaveOneOut().split(np.zeros(n))]
    rkf = RepeatedKFold(n_splits=outer_folds, n_repeats=outer_repeats, random_state=seed)
    return [(k // outer_folds, tr, te) for k, (tr, te) in enumerate(rkf.split(np.zeros(n)))]


def _fit_predict(spec, design, X, y, train, test, seed):
    est = _quiet_fit(make_estimator(spec, design, seed=seed, n_train=len(train)), X[train], y[train])
    return est.predict(X[test])


def nested_cv_predictions(design: Design, spec: ModelSpec, *, y: np.ndarray | None = None,
                          outer_folds: int | None = None, outer_repeats: int = 1,
                          seed: int = 0, n_jobs: int = 1) -> np.ndarray:
    """Out-of-sample predictions, shape (n_repeats, n_subjects).

    Each outer training set gets its own scaler, interactions, residualisation
    and inner penalty search.  outer_folds None (or >= n) = leave-one-out (one repeat).
    ``y`` replaces ``design.y`` (used by the permutation test).
    """
    y = design.y if y is None else np.asarray(y, dtype=float)
    splits = _outer_splits(len(y), outer_folds, outer_repeats, seed)
    n_rep = 1 + max(rep for rep, _, _ in splits)
    preds = Parallel(n_jobs=n_jobs, max_nbytes=None)(
        delayed(_fit_predict)(spec, design, design.X, y, tr, te, seed) for _, tr, te in splits)
    out = np.full((n_rep, len(y)), np.nan)
    for (rep, _, te), p in zip(splits, preds):
        out[rep, te] = p
    return out


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


def _permuted_outcomes(design: Design, n_permutations: int, seed: int) -> np.ndarray:
    """(n_permutations, n) permuted outcomes; Freedman–Lane with forced covariates."""
    rng = np.random.default_rng(seed)
    y = design.y
    if design.unpenalised_indices:
        Z = np.column_stack([np.ones(len(y)), design.X[:, list(design.unpenalised_indices)]])
        fitted = Z @ np.linalg.lstsq(Z, y, rcond=None)[0]
    else:
        fitted = np.full(len(y), y.mean())
    resid = y - fitted
    return np.stack([fitted + resid[rng.permutation(len(y))] for _ in range(n_permutations)])


def _null_scores(design, spec, y_perm, outer_folds, outer_repeats, seed):
    pred = nested_cv_predictions(design, spec, y=y_perm, outer_folds=outer_folds,
                                 outer_repeats=outer_repeats, seed=seed, n_jobs=1)
    return prediction_scores(y_perm, pred)


#: Permutations evaluated between two checks of the sequential stopping rule.
PERMUTATION_BATCH = 20


def permutation_null(design: Design, spec: ModelSpec, *, n_permutations: int = 1000,
                     outer_folds: int | None = None, outer_repeats: int = 1, seed: int = 0,
                     n_jobs: int = 1, observed: dict | None = None,
                     early_stop: int | None = None) -> pd.DataFrame:
    """Nested-CV scores (columns r2, r) of permuted outcomes, in permutation order.

    Without ``early_stop`` every one of the ``n_permutations`` is evaluated.  With
    ``early_stop=h`` and the ``observed`` scores, permutations are evaluated in batches
    of :data:`PERMUTATION_BATCH` until both scores have been reached or exceeded ``h``
    times (Besag & Clifford 1991, Biometrika 78:301), at most ``n_permutations``; see
    :func:`sequential_p_value`.  The permuted outcomes are drawn up front, so the result
    depends on ``seed`` only (not on ``n_jobs``).
    """
    ys = _permuted_outcomes(design, n_permutations, seed)
    batch = n_permutations if early_stop is None else PERMUTATION_BATCH
    rows: list[dict] = []
    for start in range(0, n_permutations, batch):
        rows += Parallel(n_jobs=n_jobs, max_nbytes=None)(
            delayed(_null_scores)(design, spec, yp, outer_folds, outer_repeats, seed)
            for yp in ys[start:start + batch])
        if early_stop is not None and all(
                sum(row[k] >= observed[k] for row in rows) >= early_stop for k in ("r2", "r")):
            break
    return pd.DataFrame(rows, columns=["r2", "r"])


def sequential_p_value(null: np.ndarray, observed: float, n_permutations: int,
                       early_stop: int | None = None) -> float:
    """Monte Carlo permutation p-value, sequential when ``early_stop`` is given.

    Plain: (1 + #{null >= observed}) / (1 + n).  Sequential (Besag & Clifford 1991): if the
    ``early_stop``-th null score >= observed occurs at permutation L, p = early_stop / L;
    otherwise p = (1 + #{null >= observed}) / (1 + n_permutations) over all of them.
    Both are valid p-values; the sequential one stops early only when p is large.
    """
    hits = np.asarray(null, dtype=float) >= observed
    if early_stop is not None and hits.sum() >= early_stop:
        stop = int(np.flatnonzero(hits)[early_stop - 1]) + 1
        return float(early_stop / stop)
    return float((1 + hits.sum()) / (1 + n_permutations))


def _bootstrap_fit(spec, design, idx, seed):
    groups = idx
    if spec.inner_folds is None or spec.inner_folds >= len(np.unique(idx)):
        cv = list(LeaveOneGroupOut().split(idx, groups=groups))
    else:
        cv = list(GroupKFold(spec.inner_folds, shuffle=True, random_state=seed).split(idx, groups=groups))
    est = _quiet_fit(make_estimator(spec, design, cv=cv), design.X[idx], design.y[idx])
    return _fitted_parts(est, design)[0]


def selection_frequencies(design: Design, spec: ModelSpec, *, n_bootstrap: int = 500,
                          seed: int = 0, n_jobs: int = 1) -> pd.DataFrame:
    """Bootstrap selection frequency of each predictor.

    Subjects are resampled with replacement and the whole model (penalty search
    included) refitted; the inner CV keeps copies of a subject in one fold
    (leave-one-subject-out or GroupKFold).  Columns: ``frequency`` (fraction of
    fits with a non-zero coefficient; 1 for forced covariates), ``positive``
    (fraction of those non-zero fits with a positive sign).
    """
    rng = np.random.default_rng(seed)
    n = len(design.y)
    draws = [np.sort(rng.integers(0, n, n)) for _ in range(n_bootstrap)]
    coefs = np.array(Parallel(n_jobs=n_jobs, max_nbytes=None)(
        delayed(_bootstrap_fit)(spec, design, idx, seed + b) for b, idx in enumerate(draws)))
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

    def summary(self) -> dict:
        """JSON-ready performance summary (no NaN: undefined values are None)."""
        coefs = self.fit.coefficients
        return {
            "outcome": self.settings["spec"]["outcome"],
            "out_of_sample": {k: {"estimate": self.scores[k],
                                  "interval": list(self.intervals[k]),
                                  "p_permutation": self.p_values.get(k)} for k in ("r2", "r")},
            "refit": {"alpha": self.fit.alpha, "l1_ratio": self.fit.l1_ratio,
                      "intercept": self.fit.intercept,
                      "retained": [str(c) for c in coefs.index[coefs["retained"]]]},
            "settings": self.settings,
        }


def evaluate(table: pd.DataFrame, spec: ModelSpec, *, inner_folds: int | None | str = "refit",
             outer_folds: int | None = None, outer_repeats: int = 1, n_permutations: int = 1000,
             permutation_early_stop: int | None = None, n_bootstrap: int = 2000,
             n_selection_bootstrap: int = 500, level: float = 0.95, seed: int = 0,
             n_jobs: int = 1) -> PredictionReport:
    """Fit, nested-CV performance, permutation p-values and selection frequencies.

    The reported model is refitted on all subjects with ``spec`` (its ``inner_folds``:
    None = leave-one-out penalty search, the reference method).  ``inner_folds`` sets the
    penalty search used inside the resampling (every nested-CV outer fold, every
    permutation, every selection bootstrap): "refit" = the same as the reported model, or
    K-fold / None (leave-one-out).  The permutation null always repeats exactly the
    procedure whose observed score it is compared with.

    Deterministic given ``seed`` (whatever ``n_jobs``).  Cost ≈ 1 refit + (outer fits) ×
    (1 + permutations evaluated) + n_selection_bootstrap penalty searches; measured
    timings are in docs/group.md.
    """
    design = design_matrix(table, spec)
    fitted = fit_model(table, spec, seed=seed, n_jobs=n_jobs)
    resampled = spec if inner_folds == "refit" else dataclasses.replace(spec, inner_folds=inner_folds)
    preds = nested_cv_predictions(design, resampled, outer_folds=outer_folds, outer_repeats=outer_repeats,
                                  seed=seed, n_jobs=n_jobs)
    scores = prediction_scores(design.y, preds)
    intervals = bootstrap_score_intervals(design.y, preds, n_bootstrap=n_bootstrap, level=level,
                                          seed=seed)
    if n_permutations:
        null = permutation_null(design, resampled, n_permutations=n_permutations, outer_folds=outer_folds,
                                outer_repeats=outer_repeats, seed=seed, n_jobs=n_jobs, observed=scores,
                                early_stop=permutation_early_stop)
        p_values = {k: sequential_p_value(null[k].to_numpy(), scores[k], n_permutations,
                                          permutation_early_stop) for k in ("r2", "r")}
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
                "n_permutations_run": int(len(null)),
                "permutation_early_stop": permutation_early_stop,
                "n_bootstrap": int(n_bootstrap), "n_selection_bootstrap": int(n_selection_bootstrap),
                "interval_level": level, "seed": int(seed),
                "permutation_scheme": "Freedman-Lane (covariate residuals)" if design.unpenalised_indices
                else "outcome permutation",
                "spec": dataclasses.asdict(spec)}
    return PredictionReport(fit=fitted, predictions=preds, observed=design.y, scores=scores,
                            intervals=intervals, null=null, p_values=p_values, selection=selection,
                            settings=settings)


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
