"""Up-front checks of every run's confounds and events, and exclusion of unusable runs.

Run before any processing, so that malformed inputs stop the run with a message naming the
file (nothing written), and runs left with too few volumes after censoring are excluded
with a recorded reason instead of failing half-way through the workflow.
"""

from __future__ import annotations

import pandas as pd

from ..config import AnalysisConfig
from ..io.bids import InputError, RunInputs
from ..io.confounds import ConfoundStrategy, load_confounds
from ..signal.denoise import TooFewVolumesError, kept_design
from ..signal.design import validate_events


def filter_settings(config: AnalysisConfig, kind: str) -> tuple[float | None, float | None]:
    """(high-pass period in s, low-pass frequency in Hz) of denoising for a 'task' or 'rest' run.

    Rest runs with ``band_pass_rest`` are band-passed: the high-pass period becomes 1/low.
    """
    den = config.denoising
    if kind == "rest" and den.band_pass_rest:
        low, high = den.band_pass_rest
        return 1.0 / low, high
    return den.high_pass_s, None


def confound_strategy(config: AnalysisConfig) -> ConfoundStrategy:
    """The configured denoising strategy as the confounds reader expects it."""
    den = config.denoising
    return ConfoundStrategy(name=den.strategy, fd_threshold=den.fd_threshold, min_segment=den.min_contiguous)


def read_events(path: str) -> pd.DataFrame:
    """Read a BIDS events TSV; a ValueError names the file if it cannot be parsed."""
    try:
        return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read the events TSV ({err})") from err


def screen_runs(runs: list[RunInputs], config: AnalysisConfig) -> tuple[list[RunInputs], list[dict]]:
    """Check confounds and events of every run; split into runs to process and exclusions.

    Raises
    ------
    InputError
        Listing every malformed confounds or events file (missing columns, n/a outside the
        first row, negative durations, onsets past the run, ...).
    """
    strategy = confound_strategy(config)
    problems, kept, excluded = [], [], []
    for run in runs:
        try:
            confounds = load_confounds(run.confounds, run.confounds_json, strategy, run.n_volumes)
        except (ValueError, KeyError, OSError) as err:
            problems.append(f"{run.confounds}: {_strip_source(err, run.confounds)}")
            continue
        if run.events:
            try:
                validate_events(read_events(run.events), run.n_volumes, run.tr)
            except ValueError as err:
                problems.append(f"{run.events}: {_strip_source(err, run.events)}")
                continue
        high_pass_s, low_pass_hz = filter_settings(config, config.tasks[run.task].type)
        try:
            kept_design(confounds.regressors.to_numpy(), run.tr, confounds.keep, high_pass_s, low_pass_hz,
                        min_volumes=config.denoising.min_volumes, min_dof=config.denoising.min_dof)
        except TooFewVolumesError as err:
            excluded.append({
                "subject": run.subject, "session": run.session, "task": run.task, "run": run.run,
                "reason": (f"{err} ({int(confounds.dummy.sum())} dummy scan(s), "
                           f"{int(confounds.motion_censored.sum())} volume(s) censored at FD > "
                           f"{config.denoising.fd_threshold} mm, strategy {config.denoising.strategy})"),
            })
            continue
        kept.append(run)
    if problems:
        raise InputError(problems)
    return kept, excluded


def _strip_source(err: Exception, path: str) -> str:
    """The error text without a leading copy of the file name (it is added by the caller)."""
    text = str(err)
    for prefix in (f"{path}: ", f"{path.rsplit('/', 1)[-1]}: "):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text
