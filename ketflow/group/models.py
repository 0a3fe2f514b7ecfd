"""A group model's data: its complete cases, who was left out and why, and whether it can run.

The feature table keeps every subject with whatever it has (:mod:`ketflow.group.features`).
Each model uses the complete cases on exactly the columns it reads: outcome, predictors,
arm (when the arm enters the model or selects a per-arm subset) and covariates.  A subject
missing a resting run therefore stays in a model of task measures only.  Every subject
left out gets a reason naming the missing columns (or the arm); a model with too few
complete cases is not fitted, and the reason says why.

Exact linear dependence (:func:`dependent_columns`): a predictor that is a linear combination of
earlier ones (e.g. ``fearful-gt-shapes`` = ``faces-gt-shapes`` + ½ ``fearful-gt-neutral`` of the
same ROI or gPPI pair, io/collect.py) adds nothing but an arbitrary split of one coefficient; it is
dropped before fitting, with a message naming it and the columns it duplicates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .config import ModelConfig, NoPredictorsError, spec_from_config

__all__ = ["ModelData", "select_model_data", "complete_cases", "dependent_columns", "MIN_PER_ARM"]

#: Relative residual norm under which a column counts as an exact combination of others (the
#: feature table keeps 10 significant digits).
DEPENDENCE_TOL = 1e-7

#: Fewest complete cases per arm for a model with arm terms.
MIN_PER_ARM = 2


@dataclass(frozen=True)
class ModelData:
    """The data of one model.

    config : the parsed configuration (None when no predictor could be selected).
    table : the complete cases (one row per included subject, index reset).
    subjects : DataFrame ``subject, included, reason`` for every subject of the feature table.
    skip_reason : why the model cannot be fitted, or None.
    dropped : predictor -> the earlier predictors it is an exact linear combination of (dropped).
    """

    config: ModelConfig | None
    table: pd.DataFrame
    subjects: pd.DataFrame
    skip_reason: str | None
    dropped: dict = field(default_factory=dict)

    @property
    def messages(self) -> list[str]:
        """One line per dropped predictor."""
        return [f"{col} dropped: an exact linear combination of {', '.join(of)}" for col, of in self.dropped.items()]

    @property
    def can_run(self) -> bool:
        return self.skip_reason is None


def _describe_missing(columns: list[str], outcome: str, covariates: tuple, arm: str | None) -> str:
    parts = []
    if outcome in columns:
        parts.append(f"outcome {outcome}")
    if arm is not None and arm in columns:
        parts.append(f"arm ({arm})")
    covs = [c for c in columns if c in covariates]
    if covs:
        parts.append("covariate(s) " + ", ".join(covs))
    preds = [c for c in columns if c != outcome and c != arm and c not in covariates]
    if preds:
        shown = ", ".join(preds[:3]) + (f" and {len(preds) - 3} more" if len(preds) > 3 else "")
        parts.append(f"{len(preds)} predictor(s): {shown}")
    return "missing " + "; ".join(parts)


def complete_cases(table: pd.DataFrame, model: ModelConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(complete cases of ``model``'s columns, ``subject, included, reason`` for every subject).

    A per-arm model first keeps the subjects of its arm.  Raises ValueError when a
    column is absent from the table.
    """
    absent = [c for c in model.columns if c not in table.columns]
    if absent:
        raise ValueError(f"feature table has no column(s) {absent}")
    spec = model.spec
    arm = spec.arm if spec.arm in model.columns else None
    values = table[model.columns].copy()
    for col in model.columns:
        if col != arm:
            values[col] = pd.to_numeric(values[col], errors="coerce")
    isnull = values.isna().to_numpy()
    cols = np.asarray(model.columns)
    records = []
    keep = np.zeros(len(table), bool)
    for i, subject in enumerate(table["subject"].astype(str)):
        label = table[arm].iloc[i] if arm is not None else None
        if model.arm_subset is not None and not pd.isna(label) and str(label) != model.arm_subset:
            reason = f"in arm {label}; this model is fitted within arm {model.arm_subset}"
        elif isnull[i].any():
            reason = _describe_missing(list(cols[isnull[i]]), spec.outcome, spec.covariates, arm)
        elif spec.uses_arm and str(label) not in spec.arm_levels:
            reason = f"arm {label!r} is not one of {list(spec.arm_levels)}"
        else:
            keep[i] = True
            reason = ""
        records.append({"subject": subject, "included": bool(keep[i]), "reason": reason})
    return table.loc[keep].reset_index(drop=True), pd.DataFrame.from_records(
        records, columns=["subject", "included", "reason"])


def _skip_reason(data: pd.DataFrame, model: ModelConfig) -> str | None:
    n = len(data)
    if n < model.min_subjects:
        return f"only {n} subject(s) with complete data; the model needs at least {model.min_subjects}"
    spec = model.spec
    if np.ptp(data[spec.outcome].astype(float).to_numpy()) == 0:
        return f"the outcome {spec.outcome} is the same for every included subject"
    if spec.uses_arm:
        counts = data[spec.arm].astype(str).value_counts()
        few = [f"{lvl}: {int(counts.get(lvl, 0))}" for lvl in spec.arm_levels if counts.get(lvl, 0) < MIN_PER_ARM]
        if few:
            return (f"arm terms need at least {MIN_PER_ARM} complete subjects per arm; "
                    f"have {', '.join(few)}")
    return None


def _dependence_groups(columns: list[str], n: int) -> list[list[str]]:
    """Sets of columns within which exact dependence can be checked on ``n`` subjects.

    All columns at once when there are fewer than n − 1; otherwise (the sample cannot tell a
    structural dependence from rank deficiency) within each group of contrast-based columns that
    differ only in the contrast (``<family>_<task>_<contrast>_<target>``: activation and gPPI).
    """
    if len(columns) < n - 1:
        return [columns]
    groups: dict[tuple, list[str]] = {}
    for col in columns:
        parts = col.split("_", 3)
        if parts[0] in ("activation", "ppi") and len(parts) == 4:
            groups.setdefault((parts[0], parts[1], parts[3]), []).append(col)
    return [g for g in groups.values() if 1 < len(g) < n - 1]


def dependent_columns(table: pd.DataFrame, columns: list[str]) -> dict[str, list[str]]:
    """Columns that are exact linear combinations (with an intercept) of earlier columns.

    Returns {dropped column: [the kept columns with non-zero weight in the combination]}, in the
    order of ``columns``; a constant column maps to [] (the intercept).
    """
    dropped: dict[str, list[str]] = {}
    for group in _dependence_groups(list(columns), len(table)):
        values = table[group].to_numpy(dtype=float)
        values = values - values.mean(axis=0)
        kept: list[int] = []
        for j, col in enumerate(group):
            x = values[:, j]
            norm = np.linalg.norm(x)
            if norm == 0:
                dropped[col] = []
                continue
            if kept:
                basis = values[:, kept]
                weights, *_ = np.linalg.lstsq(basis, x, rcond=None)
                if np.linalg.norm(x - basis @ weights) <= DEPENDENCE_TOL * norm:
                    big = np.abs(weights) * np.linalg.norm(basis, axis=0) > DEPENDENCE_TOL * norm
                    dropped[col] = [group[k] for k, b in zip(kept, big) if b]
                    continue
            kept.append(j)
    return dropped


def select_model_data(config: Mapping, table: pd.DataFrame, dictionary: Mapping[str, Mapping]) -> ModelData:
    """Parse ``config``, select the complete cases of its columns, drop exactly dependent
    predictors and decide whether it can run.

    Configuration errors (unknown keys or columns) raise ValueError; a model that selects
    no predictor (a named set's measure missing, or nothing left after the dependence check) or
    has too few complete cases is returned with a ``skip_reason``.
    """
    try:
        model = spec_from_config(config, dictionary)
    except NoPredictorsError as err:
        subjects = pd.DataFrame({"subject": table["subject"].astype(str), "included": False,
                                 "reason": "model not fitted: no predictor"})
        return ModelData(config=None, table=table.iloc[:0], subjects=subjects, skip_reason=str(err))
    data, subjects = complete_cases(table, model)
    dropped = dependent_columns(data, list(model.spec.features)) if len(data) else {}
    features = tuple(c for c in model.spec.features if c not in dropped)
    if dropped and not features:
        key = f"group.predictor_sets.{model.predictor_set}" if model.predictor_set else "the model's predictors"
        return ModelData(config=model, table=data, subjects=subjects, dropped=dropped,
                         skip_reason=f"{key}: no predictor left after dropping exact linear combinations "
                                     f"({', '.join(dropped)})")
    if dropped:
        model = dataclasses.replace(model, spec=dataclasses.replace(model.spec, features=features))
    return ModelData(config=model, table=data, subjects=subjects, skip_reason=_skip_reason(data, model),
                     dropped=dropped)
