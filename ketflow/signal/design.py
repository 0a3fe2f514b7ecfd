"""First-level task design matrices on SPM's micro-time grid.

Condition regressors are boxcars on a micro-time grid (``dt = TR / microtime_resolution``)
convolved with the SPM canonical HRF (and optionally its temporal derivative) and read at
the scan times, as in SPM (Friston et al. 1998, NeuroImage 7:30; Henson & Friston,
"Convolution models for fMRI", in Statistical Parametric Mapping, 2007).  Drifts are the
discrete cosine set of the high-pass filter (identical to SPM's ``spm_dctmtx`` columns and
nilearn's ``create_cosine_drift``, which is used).

Regressors are built here rather than with nilearn's ``compute_regressor`` because the
generalized PPI (``ketflow.signal.gppi``) needs the very same micro-time psychological
variables for its interaction terms: building task and interaction regressors from one
grid keeps their timing identical, so task activation cannot leak into the PPI terms
through a timing mismatch (Di, Reynolds & Biswal 2017, Hum Brain Mapp 38:1723).

Timing: event onsets are in seconds from the start of the first scan; micro-time bin ``j``
covers ``[j dt, (j+1) dt)``.  Scan ``i`` is sampled at ``start_time + i * TR`` (slice-timing
reference), i.e. at micro-time bin ``i * microtime_resolution + round(start_time / dt)``.
Events of zero duration are sticks of unit area (height ``1/dt`` in one bin), as in SPM;
other events are boxcars of height ``modulation`` (1 when absent).

Derived conditions (Etkin et al. 2006, Neuron 51:871, emotional-conflict adaptation):
``{"name": "iI", "trial_type": "incongruent", "previous": "incongruent"}`` selects trials of
a type whose immediately preceding event (by onset, any trial type) is of another given
type; a derived condition without ``previous`` merges trial types.  Every event is modelled
by exactly one design column: the first derived condition it matches, else its own trial
type (column ``<type>_other`` when some of its trials were moved to derived conditions).
Contrast weights on a condition are spread over the columns holding its trials in
proportion to their trial counts, so ``incongruent`` still means the mean incongruent
response after it was split into ``iI``, ``cI`` and the remainder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from nilearn.glm import expression_to_contrast_vector
from nilearn.signal import create_cosine_drift

from ketflow.signal.hrf import convolve_microtime, spm_hrf_basis

__all__ = [
    "TaskDesign",
    "validate_events",
    "assign_columns",
    "microtime_regressors",
    "make_task_design",
    "contrast_weights",
    "contrast_vector",
    "spike_regressors",
]

REQUIRED_EVENT_COLUMNS = ("onset", "duration", "trial_type")
#: Name prefix of the design's high-pass cosine columns.
DRIFT_PREFIX = "drift_cosine"


@dataclass
class TaskDesign:
    """A first-level design and what is needed to build contrasts and PPI terms.

    Attributes
    ----------
    matrix : DataFrame, shape (n_scans, n_regressors)
        Condition regressors (and ``<name>_derivative``), confounds, cosine drifts
        (``drift_cosine01``..., named apart from fMRIPrep's ``cosineNN`` confounds) and
        ``constant``; index = frame times in seconds.
    columns : list of str
        Names of the condition columns (one per modelled event set), in design order.
    microtime : ndarray, shape (n_scans * microtime_resolution, n_columns)
        Unconvolved micro-time stimulus functions of ``columns``.
    members : dict
        Condition name (trial type, derived condition or column) -> {column: weight}, the
        weights summing to 1 (trial-count proportions).
    unestimable : dict
        Configured condition -> reason it has no contrast weights in this run (no
        events, or its trials were merged with other trial types).
    tr, start_time : float
        Repetition time and sampling time of the first scan (s).
    microtime_resolution, microtime_onset : int
        Micro-time bins per scan and 1-based bin at which scans are read.
    derivative : bool
        Whether each condition has a temporal-derivative column.
    """

    matrix: pd.DataFrame
    columns: list[str]
    microtime: np.ndarray
    members: dict[str, dict[str, float]]
    tr: float
    start_time: float
    microtime_resolution: int
    microtime_onset: int
    derivative: bool
    unestimable: dict[str, str] = field(default_factory=dict)
    n_events: dict[str, int] = field(default_factory=dict)

    @property
    def conditions(self) -> list[str]:
        """Every name a contrast may use (estimable or not in this run)."""
        return list(self.members) + [c for c in self.unestimable if c not in self.members]


def validate_events(events: pd.DataFrame, n_scans: int, tr: float) -> pd.DataFrame:
    """Check a BIDS events table and return it sorted by onset.

    Parameters
    ----------
    events : DataFrame
        Columns ``onset``, ``duration`` (s, from the start of the first scan) and
        ``trial_type``; optional ``modulation``.
    n_scans : int
        Number of scans of the run.
    tr : float
        Repetition time in seconds.

    Returns
    -------
    DataFrame
        Numeric onset/duration/modulation, string trial_type, sorted by onset.

    Raises
    ------
    ValueError
        Missing columns, non-numeric or missing values, negative durations, onsets
        before 0 s or at/after the end of the run (``n_scans * tr``).
    """
    missing = [c for c in REQUIRED_EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise ValueError(
            f"events table lacks required column(s) {missing}; found {list(events.columns)}"
        )
    out = events.copy()
    for col in ("onset", "duration") + (("modulation",) if "modulation" in out else ()):
        values = pd.to_numeric(out[col], errors="coerce")
        bad = values.isna() | np.isinf(values.astype(float))
        if bad.any():
            raise ValueError(f"events column {col!r} has missing, non-numeric or infinite values {_lines(bad)}")
        out[col] = values.astype(float)
    if out["trial_type"].isna().any():
        raise ValueError(f"events column 'trial_type' has missing values {_lines(out['trial_type'].isna())}")
    out["trial_type"] = out["trial_type"].astype(str)
    if "modulation" not in out:
        out["modulation"] = 1.0
    negative = out["duration"] < 0
    if negative.any():
        raise ValueError(f"events have negative durations {_lines(negative)}")
    run_end = n_scans * tr
    early = out["onset"] < 0
    late = out["onset"] >= run_end
    if early.any():
        raise ValueError(f"events have negative onsets {_lines(early)}")
    if late.any():
        raise ValueError(
            f"events have onsets at or after the end of the run ({run_end:g} s = "
            f"{n_scans} scans x TR {tr:g} s) {_lines(late)}"
        )
    return out.sort_values("onset", kind="stable").reset_index(drop=True)


def _lines(flags: pd.Series) -> str:
    """``"on line(s) 3, 7 of the TSV"``: file lines (header = line 1) of the flagged rows (first 5)."""
    lines = [int(i) + 2 for i in np.flatnonzero(flags.to_numpy())]
    more = f" (and {len(lines) - 5} more)" if len(lines) > 5 else ""
    return f"on line(s) {', '.join(map(str, lines[:5]))}{more} of the TSV"


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def assign_columns(
    events: pd.DataFrame,
    conditions: Sequence[str],
    derived_conditions: Sequence[Mapping] = (),
) -> pd.DataFrame:
    """Assign every modelled event to one design column.

    Parameters
    ----------
    events : DataFrame
        Output of :func:`validate_events` (sorted by onset).
    conditions : sequence of str
        Trial types to model; events of other types are left in the implicit baseline
        (they still count as "previous" events).
    derived_conditions : sequence of mapping
        Each ``{"name": str, "trial_type": str | list, "previous": str | list | None}``.

    Returns
    -------
    DataFrame
        The modelled events with an added ``column`` field.
    """
    events = events.copy()
    previous = events["trial_type"].shift(1)
    column = pd.Series(np.where(events["trial_type"].isin(conditions), events["trial_type"], None),
                       index=events.index, dtype=object)
    claimed = pd.Series(False, index=events.index)
    names = set(conditions)
    for spec in derived_conditions:
        name = str(spec["name"])
        if name in names:
            raise ValueError(f"derived condition name {name!r} duplicates another condition")
        names.add(name)
        types = _as_list(spec.get("trial_type"))
        if not types:
            raise ValueError(f"derived condition {name!r} needs a trial_type")
        unknown = sorted(set(types + _as_list(spec.get("previous"))) - set(conditions))
        if unknown:
            raise ValueError(f"derived condition {name!r} uses trial types {unknown} not in conditions")
        match = events["trial_type"].isin(types) & ~claimed
        if spec.get("previous") is not None:
            match &= previous.isin(_as_list(spec["previous"]))
        column[match] = name
        claimed |= match
    split_types = set(events.loc[claimed, "trial_type"])
    rest = ~claimed & column.notna() & events["trial_type"].isin(split_types)
    column[rest] = column[rest] + "_other"
    clash = sorted(set(column[rest]) & names)
    if clash:
        raise ValueError(f"remainder columns {clash} clash with condition names")
    events["column"] = column
    return events[column.notna()].reset_index(drop=True)


def microtime_regressors(
    events: pd.DataFrame,
    columns: Sequence[str],
    n_scans: int,
    tr: float,
    microtime_resolution: int = 16,
) -> np.ndarray:
    """Stimulus functions on the micro-time grid.

    Parameters
    ----------
    events : DataFrame
        Output of :func:`assign_columns` (``onset``, ``duration``, ``modulation``, ``column``).
    columns : sequence of str
        Column order of the output.
    n_scans : int
    tr : float
        Repetition time (s).
    microtime_resolution : int
        Bins per scan.

    Returns
    -------
    ndarray, shape (n_scans * microtime_resolution, len(columns))
        Boxcars of height ``modulation`` over ``[onset, onset + duration)``; zero-duration
        events are one-bin sticks of height ``modulation / dt`` (unit area).
    """
    n_bins = n_scans * microtime_resolution
    dt = tr / microtime_resolution
    out = np.zeros((n_bins + 1, len(columns)))
    index = {c: k for k, c in enumerate(columns)}
    for onset, duration, amp, col in events[["onset", "duration", "modulation", "column"]].itertuples(
        index=False
    ):
        k = index[col]
        start = min(int(round(onset / dt)), n_bins - 1)
        if duration == 0:
            out[start, k] += amp / dt
            out[start + 1, k] -= amp / dt
        else:
            stop = min(max(int(round((onset + duration) / dt)), start + 1), n_bins)
            out[start, k] += amp
            out[stop, k] -= amp
    return np.cumsum(out, axis=0)[:n_bins]


def make_task_design(
    events: pd.DataFrame,
    tr: float,
    n_scans: int,
    conditions: Sequence[str],
    derived_conditions: Sequence[Mapping] = (),
    start_time: float = 0.0,
    derivative: bool = False,
    high_pass: float | None = 128.0,
    confounds: pd.DataFrame | None = None,
    microtime_resolution: int = 16,
) -> TaskDesign:
    """Build a first-level design matrix from a BIDS events table.

    Parameters
    ----------
    events : DataFrame
        BIDS events (``onset``, ``duration``, ``trial_type``; optional ``modulation``).
    tr : float
        Repetition time (s).
    n_scans : int
        Number of scans.
    conditions : sequence of str
        Trial types to model.
    derived_conditions : sequence of mapping
        History-defined or merged conditions, see :func:`assign_columns`.
    start_time : float
        Time (s) of the first sample, in ``[0, tr)`` (slice-timing reference); frame
        times are ``start_time + tr * arange(n_scans)``.
    derivative : bool
        Add each condition's temporal derivative.
    high_pass : float or None
        High-pass cutoff period (s) of the cosine drift set; None for no drifts.
    confounds : DataFrame, shape (n_scans, k), optional
        Nuisance regressors appended as they are (no missing values allowed).
    microtime_resolution : int
        Micro-time bins per scan.

    Returns
    -------
    TaskDesign
    """
    if not 0 <= start_time < tr:
        raise ValueError(f"start_time must be in [0, TR={tr:g}) s, got {start_time:g}")
    events = assign_columns(validate_events(events, n_scans, tr), conditions, derived_conditions)
    dt = tr / microtime_resolution
    onset_bin = min(int(round(start_time / dt)), microtime_resolution - 1) + 1
    counts = events["column"].value_counts()
    columns = [c for c in _column_order(conditions, derived_conditions) if c in counts.index]
    if not columns:
        raise ValueError(f"no events of the modelled conditions {list(conditions)}")
    micro = microtime_regressors(events, columns, n_scans, tr, microtime_resolution)
    basis = spm_hrf_basis(dt, derivative)
    frame_times = start_time + tr * np.arange(n_scans)
    blocks = {}
    for k, col in enumerate(columns):
        conv = convolve_microtime(micro[:, k], basis[:, 0], n_scans, microtime_resolution, onset_bin)
        blocks[col] = conv
        if derivative:
            blocks[f"{col}_derivative"] = convolve_microtime(
                micro[:, k], basis[:, 1], n_scans, microtime_resolution, onset_bin
            )
    matrix = pd.DataFrame(blocks, index=pd.Index(frame_times, name="frame_time"))
    if confounds is not None:
        matrix = _append_confounds(matrix, confounds)
    if high_pass is not None:
        drift = create_cosine_drift(1.0 / high_pass, frame_times)[:, :-1]
        for j in range(drift.shape[1]):
            matrix[f"{DRIFT_PREFIX}{j + 1:02d}"] = drift[:, j]
    matrix["constant"] = 1.0
    members, unestimable = _members(events, columns, conditions, derived_conditions)
    return TaskDesign(
        matrix=matrix,
        columns=columns,
        microtime=micro,
        members=members,
        unestimable=unestimable,
        tr=float(tr),
        start_time=float(start_time),
        microtime_resolution=int(microtime_resolution),
        microtime_onset=onset_bin,
        derivative=bool(derivative),
        n_events={c: int(counts[c]) for c in columns},
    )


def _column_order(conditions, derived_conditions) -> list[str]:
    order = []
    for c in conditions:
        order += [c, f"{c}_other"]
    return order + [str(d["name"]) for d in derived_conditions]


def _append_confounds(matrix: pd.DataFrame, confounds: pd.DataFrame) -> pd.DataFrame:
    confounds = pd.DataFrame(confounds)
    if len(confounds) != len(matrix):
        raise ValueError(f"confounds have {len(confounds)} rows; the run has {len(matrix)} scans")
    if confounds.isna().any().any():
        bad = list(confounds.columns[confounds.isna().any()])
        raise ValueError(f"confounds have missing values in columns {bad}")
    clash = sorted(set(map(str, confounds.columns)) & set(matrix.columns))
    if clash:
        raise ValueError(f"confound names clash with condition regressors: {clash}")
    reserved = sorted(str(c) for c in confounds.columns if str(c) == "constant" or str(c).startswith(DRIFT_PREFIX))
    if reserved:
        raise ValueError(f"confound names {reserved} are reserved for the design's constant and drift columns")
    values = confounds.to_numpy(dtype=float)
    for j, name in enumerate(confounds.columns):
        matrix[str(name)] = values[:, j]
    return matrix


def _members(events, columns, conditions, derived_conditions):
    """Condition -> {column: share of its trials}, and condition -> why not estimable."""
    members: dict[str, dict[str, float]] = {name: {name: 1.0} for name in columns}
    unestimable: dict[str, str] = {}
    table = pd.crosstab(events["trial_type"], events["column"])
    for cond in conditions:
        if cond not in table.index:
            unestimable[cond] = "no events of this trial type in the run"
            continue
        cols = list(table.columns[table.loc[cond] > 0])
        shared = [c for c in cols if table[c].sum() != table.loc[cond, c]]
        if shared:
            unestimable[cond] = f"its trials are merged with other trial types in {shared}"
            continue
        n = table.loc[cond, cols].sum()
        members[cond] = {c: float(table.loc[cond, c] / n) for c in cols}
    for spec in derived_conditions:
        name = str(spec["name"])
        if name not in members:
            unestimable[name] = "no events match this derived condition in the run"
    return members, unestimable


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def contrast_weights(contrast: Mapping[str, float] | str, conditions: Sequence[str]) -> dict[str, float]:
    """Parse a contrast into condition weights.

    Parameters
    ----------
    contrast : dict or str
        ``{condition: weight}`` or an expression such as ``"fearful + neutral - 2*shapes"``.
    conditions : sequence of str
        Known condition names.

    Returns
    -------
    dict
        Non-zero weights by condition.

    Raises
    ------
    ValueError
        Unknown conditions (named in the message), an empty or malformed contrast.
    """
    known = list(conditions)
    if isinstance(contrast, str):
        unknown = sorted(set(_IDENTIFIER.findall(contrast)) - set(known))
        if unknown:
            raise ValueError(f"contrast {contrast!r} names unknown conditions {unknown}; known: {known}")
        vector = expression_to_contrast_vector(contrast, known)
        weights = {c: float(w) for c, w in zip(known, vector) if w != 0}
    else:
        unknown = sorted(set(contrast) - set(known))
        if unknown:
            raise ValueError(f"contrast names unknown conditions {unknown}; known: {known}")
        weights = {str(c): float(w) for c, w in contrast.items() if w != 0}
    if not weights:
        raise ValueError(f"contrast {contrast!r} has no non-zero weight")
    return weights


def contrast_vector(
    contrast: Mapping[str, float] | str,
    design: TaskDesign,
    column_names: Sequence[str] | None = None,
    prefix: str = "",
) -> np.ndarray:
    """Contrast vector over design-matrix columns.

    Parameters
    ----------
    contrast : dict or str
        See :func:`contrast_weights`; condition names are those of ``design.members``.
    design : TaskDesign
    column_names : sequence of str, optional
        Columns of the matrix the vector is for (default ``design.matrix.columns``).
    prefix : str
        Prefix of the regressors the weights go to (``"PPI_"`` for gPPI interaction
        terms); derivative regressors always get 0.

    Returns
    -------
    ndarray, shape (len(column_names),)
    """
    names = list(design.matrix.columns if column_names is None else column_names)
    weights = contrast_weights(contrast, design.conditions)
    missing = {c: design.unestimable[c] for c in weights if c not in design.members}
    if missing:
        raise ValueError(f"contrast {contrast!r} is not estimable in this run: {missing}")
    vec = np.zeros(len(names))
    for cond, w in weights.items():
        for col, share in design.members[cond].items():
            vec[names.index(prefix + col)] += w * share
    return vec


#: Name prefix of the censoring spike columns of a task model's confounds (:func:`spike_regressors`).
SPIKE_PREFIX = "censored_"


def spike_regressors(keep: np.ndarray) -> pd.DataFrame:
    """One indicator column per censored volume (``censored_<volume index>``); ``keep`` is bool (T,).

    Task models keep every volume (deconvolution and event timing need an evenly sampled
    series), so censoring enters them as spike regressors, which remove the censored volumes'
    influence on the estimates exactly as dropping them would (Lemieux et al. 2007, Magn Reson
    Imaging 25:894; Power et al. 2014, NeuroImage 84:320).
    """
    censored = np.flatnonzero(~keep)
    spikes = np.zeros((keep.size, censored.size))
    spikes[censored, np.arange(censored.size)] = 1.0
    return pd.DataFrame(spikes, columns=[f"{SPIKE_PREFIX}{i:04d}" for i in censored])
