"""One tidy subject-level feature table for group analyses of clinical change.

Long-format imaging measures (``subject, session, measure, value``), clinical
scores (``subject, session, <score columns>``) and participant information
(``subject, <arm>, <covariates>``) become one row per subject holding every
measure and score at each session, their change scores (follow-up minus
baseline, as in Norbury et al. 2021, Neuropsychopharmacology 46:2266, where
post − pre imaging changes predicted post − pre CAPS-5 change), the treatment
arm and covariates.  Alongside the table come a JSON-ready data dictionary
(description, units, source, role of every column) and an exclusions table
naming every subject left out and why: nothing is dropped silently.

Column naming: ``<name>__ses-<label>`` for a value at one session and
``<name>__change`` for follow-up minus baseline, where ``<name>`` is a measure
(e.g. ``fc_rest_vmPFC-amygdala_L``) or a clinical score (e.g. ``caps5_total``).
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "FeatureTable",
    "build_feature_table",
    "session_column",
    "change_column",
    "columns_with_role",
]

#: Units of imaging measures by the measure-name prefix (text before the first "_").
MEASURE_UNITS = {
    "activation": "a.u. (GLM contrast estimate, percent signal change if the BOLD was scaled)",
    "ppi": "a.u. (gPPI interaction regression coefficient)",
    "fc": "Fisher z (arctanh of Pearson correlation)",
    "dcm": "Hz (DCM coupling; self-connections are unitless log scaling parameters)",
}
MEASURE_DESCRIPTIONS = {
    "activation": "task activation contrast estimate in an ROI",
    "ppi": "generalised psychophysiological interaction (seed-to-target coupling change)",
    "fc": "resting-state functional connectivity between two ROIs",
    "dcm": "dynamic causal model posterior mean (effective connectivity)",
}
CLINICAL_UNITS = {
    "caps5": "points (CAPS-5 total severity, 0-80)",
    "madrs": "points (MADRS total, 0-60)",
}

_SEP = "__"


def session_column(name: str, session: str) -> str:
    """Feature-table column of ``name`` (measure or score) at ``session``."""
    return f"{name}{_SEP}ses-{session}"


def change_column(name: str) -> str:
    """Feature-table column of the follow-up minus baseline change of ``name``."""
    return f"{name}{_SEP}change"


def columns_with_role(dictionary: Mapping[str, Mapping], role: str,
                      session: str | None = None) -> list[str]:
    """Columns of a data dictionary with ``role`` (and ``session``, if given).

    Roles: ``id``, ``arm``, ``covariate``, ``imaging_session``, ``imaging_change``,
    ``clinical_session``, ``clinical_change``.  Use e.g.
    ``columns_with_role(d, "imaging_session", "pre")`` for baseline predictors.
    """
    return [col for col, meta in dictionary.items()
            if meta["role"] == role and (session is None or meta.get("session") == session)]


@dataclass(frozen=True)
class FeatureTable:
    """Result of :func:`build_feature_table`.

    table : DataFrame, one row per included subject (column ``subject`` first).
    dictionary : dict column -> {description, units, source, role[, session, levels]}.
    exclusions : DataFrame with columns ``subject, reason`` (one row per reason).
    """

    table: pd.DataFrame
    dictionary: dict
    exclusions: pd.DataFrame


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


def _numeric(frame: pd.DataFrame, column: str, what: str, id_cols: list[str]) -> pd.Series:
    """Column as float; empty / 'n/a' become NaN, anything else non-numeric is an error."""
    raw = frame[column]
    text = raw.astype(str).str.strip()
    blank = raw.isna() | text.isin(["", "n/a", "NA", "NaN", "nan"])
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
    prefix = name.split("_", 1)[0]
    return table.get(prefix, "unknown (not recorded)")


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
) -> FeatureTable:
    """Build the subject-level feature table, its data dictionary and exclusions.

    Parameters
    ----------
    measures : DataFrame, long format
        Columns ``subject, session, measure, value`` and optionally ``source``
        (e.g. the file a row came from, recorded in the dictionary).  A NaN value
        counts as a missing measure.
    clinical : DataFrame
        Columns ``subject, session`` and one column per clinical score.
    participants : DataFrame
        Column ``subject`` (or BIDS ``participant_id``), the ``arm`` column and
        the ``covariates``.  A covariate with two text levels is coded 0/1 in
        sorted level order (recorded in the dictionary); other text is an error.
    baseline, followup : str
        Session labels; change = followup − baseline.  ``ses-`` and ``sub-``
        prefixes are accepted and stripped everywhere.
    scores : clinical score columns to use (default: all but subject/session).
    sessions : sessions to include (default: every session in ``measures``);
        each included subject must have every measure at every one of them.
    excluded_runs : DataFrame with ``subject, session, reason``, optional
        Runs rejected by quality control; such subjects are excluded.
    units : column-name or measure/score-name -> units, overriding the defaults.
    sources : {'measures'|'clinical'|'participants': label} for the dictionary.

    Returns
    -------
    FeatureTable
        Included subjects are those with every measure and score at every
        session, an arm, every covariate, and no excluded run; every other
        subject seen in any input is listed in ``exclusions`` with each reason.
    """
    units = dict(units or {})
    sources = {"measures": "measures", "clinical": "clinical", "participants": "participants",
               **dict(sources or {})}
    baseline, followup = (str(s).removeprefix("ses-") for s in (baseline, followup))
    if baseline == followup:
        raise ValueError(f"baseline and follow-up sessions are both '{baseline}'")

    measures = measures.copy()
    clinical = clinical.copy()
    participants = participants.copy()
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

    _check_unique(measures, ["subject", "session", "measure"], "measures")
    _check_unique(clinical, ["subject", "session"], "clinical")
    _check_unique(participants, ["subject"], "participants")

    measures["value"] = _numeric(measures, "value", "measures", ["subject", "session", "measure"])
    if scores is None:
        scores = [c for c in clinical.columns if c not in ("subject", "session")]
    scores = list(scores)
    if not scores:
        raise ValueError("clinical table has no score columns")
    _require_columns(clinical, scores, "clinical")
    for col in scores:
        clinical[col] = _numeric(clinical, col, "clinical", ["subject", "session"])

    cov_levels: dict[str, list[str]] = {}
    for col in covariates:
        raw = participants[col]
        numeric = pd.to_numeric(raw, errors="coerce")
        text_rows = numeric.isna() & raw.notna() & ~raw.astype(str).isin(["", "n/a"])
        if text_rows.any():
            levels = sorted(raw[raw.notna() & ~raw.astype(str).isin(["", "n/a"])].astype(str).unique())
            if len(levels) != 2:
                sub = participants.loc[text_rows, "subject"].iloc[0]
                raise ValueError(f"participants covariate '{col}' is not numeric (value "
                                 f"{raw[text_rows].iloc[0]!r} for subject {sub}) and has "
                                 f"{len(levels)} levels; encode it numerically")
            cov_levels[col] = levels
            numeric = raw.astype(str).map({levels[0]: 0.0, levels[1]: 1.0})
        participants[col] = numeric.astype(float)

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

    # --- exclusions -------------------------------------------------------------------
    subjects = sorted(set(measures["subject"]) | set(clinical["subject"]) | set(participants["subject"]))
    reasons: list[tuple[str, str]] = []
    present = measures.dropna(subset=["value"]).groupby(["subject", "session"])["measure"].apply(set)
    scored = clinical.set_index(["subject", "session"])
    part = participants.set_index("subject")
    for sub in subjects:
        for ses in sessions:
            have = present.get((sub, ses), set())
            if not have:
                reasons.append((sub, f"no imaging measures at session {ses}"))
            elif len(have) < len(names):
                lacking = sorted(set(names) - have)
                reasons.append((sub, f"missing {len(lacking)} measure(s) at session {ses}: "
                                     + ", ".join(lacking[:5]) + (" ..." if len(lacking) > 5 else "")))
            if (sub, ses) not in scored.index:
                reasons.append((sub, f"no clinical scores at session {ses}"))
            else:
                for col in scores:
                    if np.isnan(scored.loc[(sub, ses), col]):
                        reasons.append((sub, f"missing clinical score {col} at session {ses}"))
        if sub not in part.index:
            reasons.append((sub, "not in participants table"))
        else:
            if pd.isna(part.loc[sub, arm]) or str(part.loc[sub, arm]).strip() in ("", "n/a"):
                reasons.append((sub, f"missing {arm}"))
            for col in covariates:
                if np.isnan(part.loc[sub, col]):
                    reasons.append((sub, f"missing covariate {col}"))
    if excluded_runs is not None:
        _require_columns(excluded_runs, ["subject", "session", "reason"], "excluded_runs")
        for row in excluded_runs.itertuples(index=False):
            ses = str(row.session).removeprefix("ses-")
            reasons.append((str(row.subject).removeprefix("sub-"),
                            f"excluded run at session {ses}: {row.reason}"))
    exclusions = pd.DataFrame(reasons, columns=["subject", "reason"]).drop_duplicates()
    excluded = set(exclusions["subject"])
    included = [s for s in subjects if s not in excluded]
    if not included:
        raise ValueError(f"every one of the {len(subjects)} subjects is excluded; "
                         f"first reasons: {reasons[:5]}")

    # --- table ------------------------------------------------------------------------
    wide_m = measures[measures["subject"].isin(included)].pivot(
        index="subject", columns=["measure", "session"], values="value")
    wide_c = clinical[clinical["subject"].isin(included)].set_index(["subject", "session"])[scores].unstack("session")
    wide_c.columns = wide_c.columns.rename(["measure", "session"])

    out = pd.DataFrame({"subject": included})
    out[arm] = part.loc[included, arm].astype(str).to_numpy()
    for col in covariates:
        out[col] = part.loc[included, col].to_numpy()
    dictionary: dict[str, dict] = {
        "subject": {"description": "participant label (without 'sub-')", "units": "n/a",
                    "source": sources["participants"], "role": "id"},
        arm: {"description": "treatment arm", "units": "n/a", "source": sources["participants"],
              "role": "arm", "levels": sorted(out[arm].unique())},
    }
    for col in covariates:
        meta = {"description": f"covariate {col}", "units": units.get(col, "as in participants table"),
                "source": sources["participants"], "role": "covariate"}
        if col in cov_levels:
            meta["levels"] = {cov_levels[col][0]: 0, cov_levels[col][1]: 1}
            meta["units"] = "0/1 code"
        dictionary[col] = meta

    blocks = {}
    for role, wide, items in (("clinical", wide_c, scores), ("imaging", wide_m, names)):
        for name in items:
            if role == "clinical":
                unit = _units(name, units, CLINICAL_UNITS)
                desc = f"clinical score {name}"
                src = sources["clinical"]
            else:
                unit = _units(name, units, MEASURE_UNITS)
                desc = MEASURE_DESCRIPTIONS.get(name.split("_", 1)[0], "imaging measure") + f": {name}"
                src = sources["measures"]
                if "source" in measures.columns:
                    src = "; ".join(sorted(measures.loc[measures["measure"] == name, "source"]
                                           .dropna().astype(str).unique())) or src
            for ses in sessions:
                col = session_column(name, ses)
                blocks[col] = wide[(name, ses)].reindex(included).to_numpy()
                dictionary[col] = {"description": f"{desc} at session {ses}", "units": unit,
                                   "source": src, "role": f"{role}_session", "session": ses}
            col = change_column(name)
            blocks[col] = blocks[session_column(name, followup)] - blocks[session_column(name, baseline)]
            dictionary[col] = {"description": f"{desc}, change {followup} minus {baseline}",
                               "units": unit, "source": src, "role": f"{role}_change"}
    out = pd.concat([out, pd.DataFrame(blocks)], axis=1)
    return FeatureTable(table=out, dictionary=dictionary, exclusions=exclusions.reset_index(drop=True))
