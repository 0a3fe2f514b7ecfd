"""Participant-level clinical data: treatment arm, covariates and per-session scores.

Scores are looked for, per subject and session, in (first found wins):

1. ``sub-<label>/sub-<label>_sessions.tsv`` (column ``session_id`` + score columns);
2. ``phenotype/*.tsv`` with ``participant_id``, ``session_id`` and score columns;
3. ``participants.tsv`` in wide form, one column per score and session (``caps5_total_pre``).

Every problem raises :class:`ClinicalDataError` naming the file, the column and the row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .bids import strip_prefix


class ClinicalDataError(ValueError):
    """Clinical tables are missing, duplicated or not numeric where they must be."""


def read_bids_tsv(path: Path | str) -> pd.DataFrame:
    """Read a BIDS TSV (``n/a`` as missing, every column as text)."""
    try:
        return pd.read_csv(path, sep="\t", dtype=str, na_values=["n/a", ""], keep_default_na=False)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ClinicalDataError(f"{path}: cannot read the TSV ({err})") from err


def read_participants(bids_dir: Path | str, arm_column: str, covariates: list[str]) -> pd.DataFrame:
    """``participants.tsv`` as a table indexed by subject label with the arm and covariates.

    Raises on a missing file, a missing or duplicated ``participant_id``, a missing arm
    column, and non-numeric covariates.
    """
    path = Path(bids_dir) / "participants.tsv"
    if not path.is_file():
        raise ClinicalDataError(f"{path}: participants.tsv is missing (needed for the treatment arm)")
    table = read_bids_tsv(path)
    if "participant_id" not in table.columns:
        raise ClinicalDataError(f"{path}: no 'participant_id' column")
    ids = table["participant_id"]
    if ids.isna().any():
        rows = [int(i) + 2 for i in np.flatnonzero(ids.isna())]
        raise ClinicalDataError(f"{path}: missing participant_id on line(s) {rows}")
    duplicated = sorted(set(ids[ids.duplicated()]))
    if duplicated:
        raise ClinicalDataError(f"{path}: duplicated participant_id {duplicated}")
    missing = [c for c in [arm_column, *covariates] if c not in table.columns]
    if missing:
        raise ClinicalDataError(f"{path}: missing column(s) {missing} named in the configuration")
    table.index = [strip_prefix(p, "sub") for p in ids]
    table.index.name = "subject"
    for column in covariates:
        table[column] = _numeric(table[column], path, column)
    return table


def check_arms(participants: pd.DataFrame, arm_column: str, arms: list[str], path: Path | str) -> None:
    """Every non-missing arm label of ``participants`` (indexed by subject) is one of ``arms``.

    A missing (``n/a``) arm is allowed: that subject only leaves the models that use the arm.
    """
    labels = participants[arm_column]
    bad = labels.notna() & ~labels.astype(str).str.strip().isin(arms)
    if bad.any():
        listed = ", ".join(f"sub-{s} ({labels[s]!r})" for s in labels.index[bad][:10])
        raise ClinicalDataError(f"{path}: column '{arm_column}' has value(s) not among clinical.arms {arms} of "
                                f"the configuration: {listed}")


def read_scores(bids_dir: Path | str, subjects: list[str], sessions: list[str], scores: list[str]) -> pd.DataFrame:
    """Long table (subject, session, *scores) of clinical scores; NaN where a score is absent."""
    bids_dir = Path(bids_dir)
    rows = {(s, ses): {} for s in subjects for ses in sessions}
    _from_sessions_files(bids_dir, subjects, sessions, scores, rows)
    _from_phenotype(bids_dir, subjects, sessions, scores, rows)
    _from_participants_wide(bids_dir, subjects, sessions, scores, rows)
    records = [{"subject": s, "session": ses, **{c: values.get(c, np.nan) for c in scores}}
               for (s, ses), values in rows.items()]
    return pd.DataFrame.from_records(records, columns=["subject", "session", *scores])


def _numeric(column: pd.Series, path: Path, name: str) -> pd.Series:
    values = pd.to_numeric(column, errors="coerce")
    bad = column.notna() & values.isna()
    if bad.any():
        first = bad.idxmax()
        raise ClinicalDataError(
            f"{path}: column '{name}' has non-numeric value {column[first]!r} (row {first}); "
            "clinical scores must be numbers or n/a"
        )
    return values


def _fill(rows, subject, session, scores, record):
    slot = rows.get((subject, session))
    if slot is None:
        return
    for score in scores:
        if score in record and score not in slot and pd.notna(record[score]):
            slot[score] = record[score]


def _from_sessions_files(bids_dir, subjects, sessions, scores, rows):
    for subject in subjects:
        path = bids_dir / f"sub-{subject}" / f"sub-{subject}_sessions.tsv"
        if not path.is_file():
            continue
        table = read_bids_tsv(path)
        if "session_id" not in table.columns:
            raise ClinicalDataError(f"{path}: no 'session_id' column")
        duplicated = sorted(set(table["session_id"][table["session_id"].duplicated()].dropna()))
        if duplicated:
            raise ClinicalDataError(f"{path}: duplicated session_id {duplicated}")
        for score in scores:
            if score in table.columns:
                table[score] = _numeric(table[score], path, score)
        for record in table.to_dict("records"):
            if pd.isna(record["session_id"]):
                continue
            _fill(rows, subject, strip_prefix(record["session_id"], "ses"), scores, record)


def _from_phenotype(bids_dir, subjects, sessions, scores, rows):
    folder = bids_dir / "phenotype"
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.tsv")):
        table = read_bids_tsv(path)
        if not {"participant_id", "session_id"} <= set(table.columns):
            continue
        present = [s for s in scores if s in table.columns]
        for score in present:
            table[score] = _numeric(table[score], path, score)
        keys = table[["participant_id", "session_id"]].dropna()
        if keys.duplicated().any():
            raise ClinicalDataError(f"{path}: duplicated (participant_id, session_id) rows")
        for record in table.to_dict("records"):
            if pd.isna(record["participant_id"]) or pd.isna(record["session_id"]):
                continue
            _fill(rows, strip_prefix(record["participant_id"], "sub"), strip_prefix(record["session_id"], "ses"),
                  scores, record)


def _from_participants_wide(bids_dir, subjects, sessions, scores, rows):
    path = bids_dir / "participants.tsv"
    if not path.is_file():
        return
    table = read_bids_tsv(path)
    if "participant_id" not in table.columns:
        return
    for score in scores:
        for session in sessions:
            column = f"{score}_{session}"
            if column not in table.columns:
                continue
            values = _numeric(table[column], path, column)
            for pid, value in zip(table["participant_id"], values):
                if pd.notna(pid):
                    _fill(rows, strip_prefix(pid, "sub"), session, [score], {score: value})
