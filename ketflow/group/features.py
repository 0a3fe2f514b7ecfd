"""One tidy subject-level feature table for group analyses of clinical change.

Long-format imaging measures (``subject, session, measure, value[, task, source]``),
clinical scores (``subject, session, <score columns>``) and participant information
(``subject, <arm>, <covariates>``) become one row per subject holding every measure and
score at each session, their change scores (follow-up minus baseline, as in Norbury et al.
2021, Neuropsychopharmacology 46:2266, where post − pre imaging changes predicted post − pre
CAPS-5 change), the treatment arm and covariates.

Missing data: every subject seen in any input keeps a row with whatever it has; a missing
value is NaN (``n/a`` in the TSV).  Nothing is dropped here: :attr:`FeatureTable.missing`
names, per subject, session and group of measures (measure family and task, e.g.
``fc_rest``), clinical score, arm or covariate, how many values are missing and why (an
excluded run and its reason, no output at that session, no row in participants.tsv, ...).
Each model then uses the complete cases on exactly the columns it needs
(:mod:`ketflow.group.models`).  An imaging column missing for more than
``max_missing_fraction`` of the subjects is kept in the table but marked
``excluded_from_models`` in the data dictionary (with the counts), so that one
rarely-available measure cannot shrink every model's sample.

Column naming: ``<name>__ses-<label>`` for a value at one session and ``<name>__change``
for follow-up minus baseline, where ``<name>`` is a measure (e.g.
``fc_rest_vmPFC-amygdala_L``) or a clinical score (e.g. ``caps5_total``).  The measure
family is the text before the first ``_`` (``activation``, ``ppi``, ``fc``, ``dcm``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "FeatureTable",
    "build_feature_table",
    "session_column",
    "change_column",
    "columns_with_role",
    "measure_family",
    "MISSING_COLUMNS",
]

#: Units of imaging measures by the measure family (text before the first "_").
MEASURE_UNITS = {
    "activation": "a.u. (GLM contrast estimate, percent signal change if the BOLD was scaled)",
    "ppi": "a.u. (gPPI interaction regression coefficient)",
    "fc": "Fisher z (arctanh of Pearson correlation)",
    "dcm": "Hz (DCM coupling; self-connections are unitless log scaling parameters)",
    "betaseries": "Fisher z (contrast-weighted sum of arctanh of beta-series Pearson correlations)",
}
MEASURE_DESCRIPTIONS = {
    "activation": "task activation contrast estimate in an ROI",
    "ppi": "generalised psychophysiological interaction (seed-to-target coupling change)",
    "fc": "resting-state functional connectivity between two ROIs",
    "dcm": "dynamic causal model posterior mean (effective connectivity)",
    "betaseries": "beta-series connectivity contrast between two ROIs (least-squares-separate single trials)",
}
CLINICAL_UNITS = {
    "caps5": "points (CAPS-5 total severity, 0-80)",
    "madrs": "points (MADRS total, 0-60)",
}
#: Columns of :attr:`FeatureTable.missing`.
MISSING_COLUMNS = ["subject", "session", "item", "n_missing", "reason"]

_SEP = "__"
_BLANK = ("", "n/a", "NA", "NaN", "nan")


def session_column(name: str, session: str) -> str:
    """Feature-table column of ``name`` (measure or score) at ``session``."""
    return f"{name}{_SEP}ses-{session}"


def change_column(name: str) -> str:
    """Feature-table column of the follow-up minus baseline change of ``name``."""
    return f"{name}{_SEP}change"


def measure_family(name: str) -> str:
    """Family of a measure or feature-table column: the text before the first ``_``."""
    return name.split("_", 1)[0]


def columns_with_role(dictionary: Mapping[str, Mapping], role: str, session: str | None = None,
                      *, usable_only: bool = True) -> list[str]:
    """Columns of a data dictionary with ``role`` (and ``session``, if given).

    Roles: ``id``, ``arm``, ``covariate``, ``imaging_session``, ``imaging_change``,
    ``clinical_session``, ``clinical_change``.  Use e.g.
    ``columns_with_role(d, "imaging_session", "pre")`` for baseline predictors.
    usable_only : leave out columns marked ``excluded_from_models`` (too often missing).
    """
    return [col for col, meta in dictionary.items()
            if meta["role"] == role and (session is None or meta.get("session") == session)
            and not (usable_only and meta.get("excluded_from_models"))]


@dataclass(frozen=True)
class FeatureTable:
    """Result of :func:`build_feature_table`.

    table : DataFrame, one row per subject seen in any input (column ``subject`` first);
        NaN where a value is missing.
    dictionary : dict column -> {description, units, source, role, n_subjects, n_missing
        [, session, family, task, levels, excluded_from_models]}.
    missing : DataFrame with :data:`MISSING_COLUMNS`: one row per subject, session and
        item (measure group ``<family>_<task>``, score, arm, covariate or run) with the
        number of missing values and the reason.
    """

    table: pd.DataFrame
    dictionary: dict
    missing: pd.DataFrame


def _strip(labels: pd.Series, prefix: str) -> pd.Series:
    text = labels.astype(str).str.strip()
    return text.where(~text.str.startswith(prefix), text.str[len(prefix):])


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} table lacks column(s) {missing}; it has {list(frame.columns)}")


def _check_unique(frame: pd.DataFrame, keys: list[str], what: str) -> None:
    dup = frame.duplicated(keys, keep=False)
    if dup.any():
        examples = frame.loc[dup, keys].drop_duplicates().head(5).to_dict("records")
        raise ValueError(f"{what} table has duplicate {'/'.join(keys)} entries, e.g. {examples}")


def _is_blank(raw: pd.Series) -> pd.Series:
    return raw.isna() | raw.astype(str).str.strip().isin(_BLANK)


def _numeric(frame: pd.DataFrame, column: str, what: str, id_cols: list[str]) -> pd.Series:
    """Column as float; empty / 'n/a' become NaN, anything else non-numeric is an error."""
    raw = frame[column]
    blank = _is_blank(raw)
    values = pd.to_numeric(raw.where(~blank), errors="coerce")
    bad = values.isna() & ~blank
    if bad.any():
        row = frame.loc[bad].iloc[0]
        where = ", ".join(f"{c} {row[c]}" for c in id_cols)
        raise ValueError(f"{what} column '{column}' has non-numeric value {row[column]!r} "
                         f"for {where} ({int(bad.sum())} such value(s))")
    return values.astype(float)


def _units(name: str, overrides: Mapping[str, str], table: Mapping[str, str]) -> str:
    if name in overrides:
        return overrides[name]
    return table.get(measure_family(name), "unknown (not recorded)")


def _code_covariates(participants: pd.DataFrame, covariates: Sequence[str]) -> dict[str, list[str]]:
    """Covariates to float in place; two-level text covariates coded 0/1 (levels returned)."""
    levels_of: dict[str, list[str]] = {}
    for col in covariates:
        raw = participants[col]
        blank = _is_blank(raw)
        numeric = pd.to_numeric(raw.where(~blank), errors="coerce")
        text_rows = numeric.isna() & ~blank
        if text_rows.any():
            levels = sorted(raw[~blank].astype(str).unique())
            if len(levels) != 2:
                sub = participants.loc[text_rows, "subject"].iloc[0]
                raise ValueError(f"participants covariate '{col}' is not numeric (value "
                                 f"{raw[text_rows].iloc[0]!r} for subject {sub}) and has "
                                 f"{len(levels)} levels; encode it numerically")
            levels_of[col] = levels
            numeric = raw.where(~blank).map({levels[0]: 0.0, levels[1]: 1.0})
        participants[col] = numeric.astype(float)
    return levels_of


def _names_list(names: Sequence[str], limit: int = 5) -> str:
    names = list(names)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _measure_groups(measures: pd.DataFrame) -> dict[str, list[str]]:
    """Measure group (``<family>_<task>``, or the family without a task column) -> measures."""
    if "task" in measures.columns:
        keys = measures["measure"].map(measure_family) + "_" + measures["task"].astype(str)
    else:
        keys = measures["measure"].map(measure_family)
    pairs = pd.DataFrame({"group": keys, "measure": measures["measure"]}).drop_duplicates()
    return {g: sorted(m) for g, m in pairs.groupby("group")["measure"]}


def _imaging_reasons(measures, subjects, sessions, excluded_runs) -> list[dict]:
    """Missing imaging values per subject, session and measure group, with reasons."""
    groups = _measure_groups(measures)
    task_of = {g: g.split("_", 1)[1] if "_" in g else None for g in groups}
    present = measures.dropna(subset=["value"]).groupby(["subject", "session"])["measure"].apply(set)
    runs = {}
    if excluded_runs is not None:
        for row in excluded_runs.itertuples(index=False):
            key = (row.subject, row.session, getattr(row, "task", None))
            if key[2] is not None and str(key[2]).strip() in _BLANK:
                key = key[:2] + (None,)
            runs.setdefault(key, []).append(str(row.reason))
    rows, explained = [], set()
    for sub in subjects:
        for ses in sessions:
            have = present.get((sub, ses), set())
            if not have and not any((sub, ses, t) in runs for t in [*task_of.values(), None]):
                rows.append({"subject": sub, "session": ses, "item": "imaging",
                             "n_missing": sum(map(len, groups.values())),
                             "reason": f"no imaging measures at session {ses} in the participant-level outputs"})
                continue
            for group, names in groups.items():
                lacking = [m for m in names if m not in have]
                if not lacking:
                    continue
                task = task_of[group]
                run_reasons = runs.get((sub, ses, task), []) + (runs.get((sub, ses, None), []) if task else [])
                if run_reasons:
                    explained.update({(sub, ses, task), (sub, ses, None)})
                    reason = "run(s) excluded at the participant level: " + "; ".join(run_reasons)
                elif not have:
                    reason = f"no imaging measures at session {ses}"
                elif len(lacking) == len(names):
                    reason = f"no {group} measures at session {ses} in the participant-level outputs"
                else:
                    reason = f"not estimated at session {ses}: {_names_list(lacking)}"
                rows.append({"subject": sub, "session": ses, "item": group, "n_missing": len(lacking),
                             "reason": reason})
    for (sub, ses, task), reasons in runs.items():
        if (sub, ses, task) not in explained and sub in subjects:
            rows.append({"subject": sub, "session": ses, "item": f"task-{task}" if task else "run",
                         "n_missing": 0, "reason": "run(s) excluded at the participant level, the task's "
                                                   "other runs were used: " + "; ".join(reasons)})
    return rows


def build_feature_table(
    measures: pd.DataFrame,
    clinical: pd.DataFrame,
    participants: pd.DataFrame,
    *,
    baseline: str = "pre",
    followup: str = "post",
    arm: str = "arm",
    covariates: Sequence[str] = (),
    scores: Sequence[str] | None = None,
    sessions: Sequence[str] | None = None,
    excluded_runs: pd.DataFrame | None = None,
    units: Mapping[str, str] | None = None,
    sources: Mapping[str, str] | None = None,
    max_missing_fraction: float = 1.0,
) -> FeatureTable:
    """Build the subject-level feature table, its data dictionary and the missing-data table.

    Parameters
    ----------
    measures : DataFrame, long format
        Columns ``subject, session, measure, value`` and optionally ``task`` (groups the
        missing-data reasons by task and matches excluded runs) and ``source`` (recorded
        in the dictionary).  A NaN value counts as a missing measure.
    clinical : DataFrame
        Columns ``subject, session`` and one column per clinical score.
    participants : DataFrame
        Column ``subject`` (or BIDS ``participant_id``), the ``arm`` column and the
        ``covariates``.  A covariate with two text levels is coded 0/1 in sorted level
        order (recorded in the dictionary); other text is an error.
    baseline, followup : str
        Session labels; change = followup − baseline.  ``ses-`` and ``sub-`` prefixes are
        accepted and stripped everywhere.
    scores : clinical score columns to use (default: all but subject/session).
    sessions : sessions to include (default: every session in ``measures``).
    excluded_runs : DataFrame with ``subject, session, reason`` and optionally ``task``
        Runs rejected by quality control: they explain the missing values they cause.
    units : column-name or measure/score-name -> units, overriding the defaults.
    sources : {'measures'|'clinical'|'participants': label} for the dictionary.
    max_missing_fraction : an imaging column missing for more than this fraction of the
        subjects is marked ``excluded_from_models`` in the dictionary (0..1; 1 keeps all).

    Returns
    -------
    FeatureTable
        One row per subject seen in any input, NaN where missing; every missing value is
        accounted for in ``missing``.
    """
    if not 0 <= max_missing_fraction <= 1:
        raise ValueError(f"max_missing_fraction must lie in [0, 1], got {max_missing_fraction}")
    units = dict(units or {})
    sources = {"measures": "measures", "clinical": "clinical", "participants": "participants",
               **dict(sources or {})}
    baseline, followup = (str(s).removeprefix("ses-") for s in (baseline, followup))
    if baseline == followup:
        raise ValueError(f"baseline and follow-up sessions are both '{baseline}'")

    measures, clinical, participants = measures.copy(), clinical.copy(), participants.copy()
    if "subject" not in participants.columns and "participant_id" in participants.columns:
        participants = participants.rename(columns={"participant_id": "subject"})
    _require_columns(measures, ["subject", "session", "measure", "value"], "measures")
    _require_columns(clinical, ["subject", "session"], "clinical")
    _require_columns(participants, ["subject", arm, *covariates], "participants")

    for frame in (measures, clinical, participants):
        frame["subject"] = _strip(frame["subject"], "sub-")
    for frame in (measures, clinical):
        frame["session"] = _strip(frame["session"], "ses-")
    measures["measure"] = measures["measure"].astype(str).str.strip()
    if excluded_runs is not None:
        _require_columns(excluded_runs, ["subject", "session", "reason"], "excluded_runs")
        excluded_runs = excluded_runs.copy()
        excluded_runs["subject"] = _strip(excluded_runs["subject"], "sub-")
        excluded_runs["session"] = _strip(excluded_runs["session"], "ses-")

    _check_unique(measures, ["subject", "session", "measure"], "measures")
    _check_unique(clinical, ["subject", "session"], "clinical")
    _check_unique(participants, ["subject"], "participants")

    measures["value"] = _numeric(measures, "value", "measures", ["subject", "session", "measure"])
    scores = [c for c in clinical.columns if c not in ("subject", "session")] if scores is None else list(scores)
    if not scores:
        raise ValueError("clinical table has no score columns")
    _require_columns(clinical, scores, "clinical")
    for col in scores:
        clinical[col] = _numeric(clinical, col, "clinical", ["subject", "session"])
    cov_levels = _code_covariates(participants, covariates)
    participants[arm] = participants[arm].where(~_is_blank(participants[arm])).map(
        lambda v: v if pd.isna(v) else str(v).strip())

    if sessions is None:
        sessions = sorted(measures["session"].unique(), key=lambda s: (s != baseline, s != followup, s))
    sessions = [str(s).removeprefix("ses-") for s in sessions]
    for label in (baseline, followup):
        if label not in sessions:
            raise ValueError(f"session '{label}' is not among the sessions {sessions}")
    measures = measures[measures["session"].isin(sessions)]
    clinical = clinical[clinical["session"].isin(sessions)]
    names = sorted(measures["measure"].unique())
    if not names:
        raise ValueError("measures table has no rows at the requested sessions")

    subjects = sorted(set(measures["subject"]) | set(clinical["subject"]) | set(participants["subject"]))
    part = participants.set_index("subject").reindex(subjects)
    reasons = _imaging_reasons(measures, subjects, sessions, excluded_runs)
    scored = clinical.set_index(["subject", "session"])[scores]
    for sub in subjects:
        if sub not in set(participants["subject"]):
            reasons.append({"subject": sub, "session": "n/a", "item": "participants.tsv", "n_missing": 1,
                            "reason": "no row in the participants table (no arm or covariates)"})
        else:
            if pd.isna(part.loc[sub, arm]):
                reasons.append({"subject": sub, "session": "n/a", "item": arm, "n_missing": 1,
                                "reason": f"missing {arm} (treatment arm)"})
            for col in covariates:
                if np.isnan(part.loc[sub, col]):
                    reasons.append({"subject": sub, "session": "n/a", "item": col, "n_missing": 1,
                                    "reason": f"missing covariate {col}"})
        for ses in sessions:
            values = scored.loc[(sub, ses)] if (sub, ses) in scored.index else None
            for col in scores:
                if values is None or np.isnan(values[col]):
                    reasons.append({"subject": sub, "session": ses, "item": col, "n_missing": 1,
                                    "reason": f"no clinical score {col} at session {ses}"})
    missing = pd.DataFrame.from_records(reasons, columns=MISSING_COLUMNS)

    out = pd.DataFrame({"subject": subjects})
    out[arm] = part[arm].to_numpy(dtype=object)
    for col in covariates:
        out[col] = part[col].to_numpy(dtype=float)
    dictionary: dict[str, dict] = {
        "subject": {"description": "participant label (without 'sub-')", "units": "n/a",
                    "source": sources["participants"], "role": "id"},
        arm: {"description": "treatment arm", "units": "n/a", "source": sources["participants"],
              "role": "arm", "levels": sorted(out[arm].dropna().unique())},
    }
    for col in covariates:
        meta = {"description": f"covariate {col}", "units": units.get(col, "as in participants table"),
                "source": sources["participants"], "role": "covariate"}
        if col in cov_levels:
            meta["levels"] = {cov_levels[col][0]: 0, cov_levels[col][1]: 1}
            meta["units"] = "0/1 code"
        dictionary[col] = meta

    wide_m = measures.pivot(index="subject", columns=["measure", "session"], values="value")
    wide_c = clinical.set_index(["subject", "session"])[scores].unstack("session")
    task_of = (measures.drop_duplicates("measure").set_index("measure")["task"].astype(str)
               if "task" in measures.columns else {})
    blocks = {}
    for role, wide, items in (("clinical", wide_c, scores), ("imaging", wide_m, names)):
        for name in items:
            extra = {}
            if role == "clinical":
                unit, desc, src = _units(name, units, CLINICAL_UNITS), f"clinical score {name}", sources["clinical"]
            else:
                family = measure_family(name)
                unit = _units(name, units, MEASURE_UNITS)
                desc = MEASURE_DESCRIPTIONS.get(family, "imaging measure") + f": {name}"
                src = sources["measures"]
                if "source" in measures.columns:
                    src = "; ".join(sorted(measures.loc[measures["measure"] == name, "source"]
                                           .dropna().astype(str).unique())) or src
                extra = {"family": family} | ({"task": task_of[name]} if name in task_of else {})
            for ses in sessions:
                col = session_column(name, ses)
                blocks[col] = (wide[(name, ses)].reindex(subjects).to_numpy(dtype=float)
                               if (name, ses) in wide.columns else np.full(len(subjects), np.nan))
                dictionary[col] = {"description": f"{desc} at session {ses}", "units": unit,
                                   "source": src, "role": f"{role}_session", "session": ses, **extra}
            col = change_column(name)
            blocks[col] = blocks[session_column(name, followup)] - blocks[session_column(name, baseline)]
            dictionary[col] = {"description": f"{desc}, change {followup} minus {baseline}",
                               "units": unit, "source": src, "role": f"{role}_change", **extra}
    out = pd.concat([out, pd.DataFrame(blocks)], axis=1)
    _count_missing(out, dictionary, max_missing_fraction)
    return FeatureTable(table=out, dictionary=dictionary, missing=missing)


def _count_missing(table: pd.DataFrame, dictionary: dict, max_missing_fraction: float) -> None:
    """Add ``n_subjects``/``n_missing`` to every dictionary entry; mark too-often-missing imaging columns."""
    n = len(table)
    for col, meta in dictionary.items():
        n_missing = int(table[col].isna().sum())
        meta["n_subjects"], meta["n_missing"] = n, n_missing
        if meta["role"].startswith("imaging") and n and n_missing / n > max_missing_fraction:
            meta["excluded_from_models"] = (f"missing for {n_missing} of {n} subjects "
                                            f"({100 * n_missing / n:.0f}% > {100 * max_missing_fraction:.0f}%)")
