"""Nuisance regressors and censoring from fMRIPrep confounds (TSV + JSON).

Strategies (Satterthwaite et al. 2013 NeuroImage 64:240-256; Ciric et al. 2017 NeuroImage
154:174-187; Behzadi et al. 2007 NeuroImage 37:90-101):

* ``24P``: 6 rigid-body parameters, their temporal derivatives, and the squares of both;
* ``36P``: 24P plus mean CSF, white-matter and global signals with the same expansions;
* ``aCompCor``: 24P plus anatomical CompCor components from the combined WM+CSF mask;
  ``n_compcor`` an int keeps that many, a float in (0, 1] keeps the fewest components whose
  cumulative explained variance (``CumulativeVarianceExplained`` in the JSON) reaches it
  (fMRIPrep's 50% rule), ``"all"`` keeps every component listed. fMRIPrep computes CompCor
  after high-pass filtering with its ``cosine*`` regressors, so these are included too
  (as nilearn requires ``high_pass`` with ``compcor``).

Censoring (Power et al. 2014 NeuroImage 84:320-341): volumes with framewise displacement
above ``fd_threshold`` mm (and optionally std DVARS above ``std_dvars_threshold``) are
censored, and so are uncensored segments shorter than ``min_segment`` volumes between or
at the ends of censored stretches. Non-steady-state volumes flagged by fMRIPrep's
``non_steady_state_outlier*`` columns are dummy scans and are always censored.

Column selection and segment handling follow nilearn's
:func:`nilearn.interfaces.fmriprep.load_confounds` (whose helpers ``find_compcor`` and
``optimize_scrub`` are reused); ketflow does not call ``load_confounds`` itself because it
locates the TSV from the BOLD file name, while ketflow receives the TSV path explicitly.
Like nilearn, the n/a in the first row of derivative columns is replaced by the second row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from nilearn.interfaces.fmriprep.load_confounds_compcor import find_compcor
from nilearn.interfaces.fmriprep.load_confounds_scrub import optimize_scrub

from ..config import Denoising
from .bids import read_json

MOTION_6 = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
TISSUE_3 = ("csf", "white_matter", "global_signal")
STRATEGIES = ("24P", "36P", "aCompCor")


def expansions(base: tuple[str, ...]) -> list[str]:
    """Base columns + derivative1 + power2 + derivative1_power2 (fMRIPrep column names)."""
    suffixes = ("", "_derivative1", "_power2", "_derivative1_power2")
    return [f"{name}{suffix}" for suffix in suffixes for name in base]


@dataclass(frozen=True)
class ConfoundStrategy:
    """What to regress out and which volumes to censor.

    name : one of ``STRATEGIES``.
    n_compcor : for aCompCor, int count, float cumulative-variance fraction, or "all".
    fd_threshold : mm; None disables FD censoring.
    std_dvars_threshold : standardised DVARS; None disables DVARS censoring.
    min_segment : shortest run of contiguous kept volumes (shorter ones are censored); 0 = off.
    """

    name: str = "36P"
    n_compcor: int | float | str = 0.5
    fd_threshold: float | None = 0.5
    std_dvars_threshold: float | None = None
    min_segment: int = 5

    def __post_init__(self):
        if self.name not in STRATEGIES:
            raise ValueError(f"unknown confound strategy {self.name!r}; choose from {STRATEGIES}")
        if isinstance(self.n_compcor, float) and not 0 < self.n_compcor <= 1:
            raise ValueError(f"n_compcor as a variance fraction must be in (0, 1], got {self.n_compcor}")


def confound_strategy(denoising: Denoising) -> ConfoundStrategy:
    """The configured denoising strategy as :func:`load_confounds` applies it.

    ketflow's configuration sets the strategy, FD censoring and the shortest kept segment;
    the CompCor selection (50% of the variance) and DVARS censoring (off) are fixed.
    """
    return ConfoundStrategy(name=denoising.strategy, fd_threshold=denoising.fd_threshold,
                            min_segment=denoising.min_contiguous)


def denoising_record(denoising: Denoising, band_pass_hz: tuple[float, float] | None) -> dict:
    """The settings a run was denoised with, as its QC JSON records them (``strategy``).

    ``band_pass_hz`` is ``denoising.band_pass_rest`` for rest runs, None for task runs.  The
    fields ketflow's configuration does not set are the fixed values of
    :func:`confound_strategy` and of :func:`ketflow.signal.denoise.denoise` (no standardising).
    """
    strategy = confound_strategy(denoising)
    return {"strategy": strategy.name, "n_compcor": strategy.n_compcor, "fd_threshold": strategy.fd_threshold,
            "std_dvars_threshold": strategy.std_dvars_threshold, "min_contiguous": strategy.min_segment,
            "high_pass_s": denoising.high_pass_s, "band_pass_hz": list(band_pass_hz) if band_pass_hz else None,
            "standardize": False, "min_volumes": denoising.min_volumes, "min_dof": denoising.min_dof,
            "min_time_s": denoising.min_time_s}


@dataclass(frozen=True)
class Confounds:
    """Selected regressors and censoring for one run of T volumes.

    regressors : (T, k) table, first-row n/a filled; not demeaned (the regression adds
        an intercept).
    keep : bool (T,), True for volumes used in the fit and kept in the outputs.
    dummy : bool (T,), non-steady-state volumes.
    motion_censored : bool (T,), censored by FD/DVARS or as a too-short segment.
    framewise_displacement : (T,) mm, 0 for the first volume.
    """

    regressors: pd.DataFrame
    keep: np.ndarray
    dummy: np.ndarray
    motion_censored: np.ndarray
    framewise_displacement: np.ndarray

    @property
    def n_censored(self) -> int:
        """Volumes not used (dummy scans + motion censoring)."""
        return int((~self.keep).sum())


def compcor_columns(metadata: dict, table_columns, n_compcor: int | float | str, source: str = "") -> list[str]:
    """aCompCor (combined WM+CSF mask) columns to use, in component order."""
    _check_compcor_metadata(metadata, n_compcor, source)
    present = set(table_columns)
    if isinstance(n_compcor, float):
        listed = find_compcor(metadata, "anat_combined", "all")
        listed = [c for c in listed if c in present and metadata[c].get("Retained", True)]
        chosen = []
        for column in listed:
            chosen.append(column)
            if float(metadata[column]["CumulativeVarianceExplained"]) >= n_compcor:
                break
    else:
        chosen = [c for c in find_compcor(metadata, "anat_combined", n_compcor) if c in present]
    if not chosen:
        raise ValueError(f"{source}: no combined-mask aCompCor components (a_comp_cor_*) in the confounds")
    return chosen


def _check_compcor_metadata(metadata: dict, n_compcor, source: str) -> None:
    """Each ``a_comp_cor_*`` entry of the confounds JSON must be an object with a ``Mask`` (and a
    numeric ``CumulativeVarianceExplained`` when components are chosen by variance)."""
    for name, entry in metadata.items():
        if "a_comp_cor" not in name:
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("Mask"), str):
            raise ValueError(f"{source}: the confounds JSON entry {name!r} is not an object with a 'Mask'")
        if isinstance(n_compcor, float) and entry.get("Retained", True):
            try:
                float(entry["CumulativeVarianceExplained"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{source}: the confounds JSON entry {name!r} has no numeric "
                                 "'CumulativeVarianceExplained'") from None


def strategy_columns(strategy: ConfoundStrategy, table_columns, metadata: dict | None, source: str = "") -> list[str]:
    """Column names a strategy regresses out."""
    columns = expansions(MOTION_6)
    if strategy.name == "36P":
        columns += expansions(TISSUE_3)
    elif strategy.name == "aCompCor":
        if metadata is None:
            raise ValueError(f"{source}: the aCompCor strategy needs the confounds JSON (component metadata)")
        columns += compcor_columns(metadata, table_columns, strategy.n_compcor, source)
        columns += sorted(c for c in table_columns if c.startswith("cosine"))
    return columns


def censoring(
    framewise_displacement: np.ndarray,
    dummy: np.ndarray,
    fd_threshold: float | None,
    min_segment: int,
    std_dvars: np.ndarray | None = None,
    std_dvars_threshold: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Kept-volume mask and motion-censored mask, both bool (T,).

    framewise_displacement : (T,) mm; dummy : bool (T,).
    """
    n = framewise_displacement.shape[0]
    outlier = np.zeros(n, bool)
    if fd_threshold is not None:
        outlier |= np.nan_to_num(framewise_displacement) > fd_threshold
    if std_dvars_threshold is not None and std_dvars is not None:
        outlier |= np.nan_to_num(std_dvars) > std_dvars_threshold
    index = np.flatnonzero(outlier)
    if min_segment > 0 and index.size:
        index = optimize_scrub(index, n, min_segment)
    motion = np.zeros(n, bool)
    motion[index] = True
    return ~(motion | dummy), motion


def select_confounds(
    table: pd.DataFrame,
    metadata: dict | None,
    strategy: ConfoundStrategy,
    n_volumes: int | None = None,
    source: str = "confounds",
) -> Confounds:
    """Apply a strategy to a confounds table (rows = volumes); see module docstring."""
    if n_volumes is not None and len(table) != n_volumes:
        raise ValueError(f"{source}: {len(table)} rows but the BOLD run has {n_volumes} volumes")
    if len(table) < 2:
        raise ValueError(f"{source}: {len(table)} row(s); a confounds table needs one row per volume (2 or more)")
    columns = strategy_columns(strategy, table.columns, metadata, source)
    needed = columns + (["framewise_displacement"] if strategy.fd_threshold is not None else [])
    if strategy.std_dvars_threshold is not None:
        needed.append("std_dvars")
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"{source}: strategy {strategy.name} needs columns that are missing: {missing}")
    numeric = {}
    for column in dict.fromkeys(needed):
        values = pd.to_numeric(table[column], errors="coerce")
        text = np.flatnonzero((values.isna() & table[column].notna()).to_numpy())
        if text.size:
            raise ValueError(f"{source}: column {column} has non-numeric values {_lines(text)}")
        infinite = np.flatnonzero(np.isinf(values.to_numpy(float)))
        if infinite.size:
            raise ValueError(f"{source}: column {column} has infinite values {_lines(infinite)}")
        bad = np.flatnonzero(values.iloc[1:].isna().to_numpy()) + 1
        if bad.size:
            raise ValueError(f"{source}: column {column} has n/a {_lines(bad)} (only the first row may be n/a)")
        numeric[column] = values
    table = table.assign(**numeric)
    regressors = table[columns].astype(float).copy()
    first_nan = regressors.iloc[0].isna().to_numpy()
    regressors.iloc[0, first_nan] = regressors.iloc[1, first_nan].to_numpy()
    dummy = dummy_scans(table)
    fd = (
        pd.to_numeric(table["framewise_displacement"], errors="coerce").fillna(0.0).to_numpy(float)
        if "framewise_displacement" in table.columns
        else np.zeros(len(table))
    )
    std_dvars = (pd.to_numeric(table["std_dvars"], errors="coerce").to_numpy(float)
                 if "std_dvars" in table.columns else None)
    keep, motion = censoring(
        fd, dummy, strategy.fd_threshold, strategy.min_segment, std_dvars, strategy.std_dvars_threshold
    )
    return Confounds(regressors, keep, dummy, motion, fd)


def dummy_scans(table: pd.DataFrame) -> np.ndarray:
    """Volumes (bool, one per row) fMRIPrep flags as non-steady-state (``non_steady_state_outlier*``)."""
    dummy_cols = [c for c in table.columns if c.startswith("non_steady_state_outlier")]
    return (table[dummy_cols].apply(pd.to_numeric, errors="coerce").fillna(0).to_numpy().sum(axis=1) > 0
            if dummy_cols else np.zeros(len(table), bool))


def _lines(rows: np.ndarray) -> str:
    """``"on line(s) 9, 12 of the TSV (volume(s) 7, 10)"`` for 0-based rows (first 5)."""
    rows = [int(r) for r in rows]
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    return (f"on line(s) {', '.join(str(r + 2) for r in rows[:5])}{more} of the TSV "
            f"(volume(s) {', '.join(map(str, rows[:5]))}, counting from 0)")


def read_confounds_table(tsv_path: str | Path) -> pd.DataFrame:
    """fMRIPrep's confounds table (``n/a`` read as NaN); ValueError naming the file if unreadable."""
    try:
        return pd.read_csv(tsv_path, sep="\t", na_values=["n/a"])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{Path(tsv_path).name}: cannot read the confounds TSV ({err})") from err


def load_confounds(
    tsv_path: str | Path,
    json_path: str | Path | None,
    strategy: ConfoundStrategy,
    n_volumes: int | None = None,
) -> Confounds:
    """Read an fMRIPrep ``desc-confounds_timeseries.tsv`` (+ JSON) and apply ``strategy``."""
    tsv_path = Path(tsv_path)
    table = read_confounds_table(tsv_path)
    metadata = None
    if json_path:
        try:
            metadata = read_json(json_path)
        except ValueError as err:
            raise ValueError(f"{tsv_path.name}: its JSON sidecar {err}") from err
    return select_confounds(table, metadata, strategy, n_volumes, source=tsv_path.name)
