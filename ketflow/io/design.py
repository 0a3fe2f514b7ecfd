"""A run's task design: built from its files, and passed between nodes.

:func:`task_design_from_files` reads the run's events (:func:`ketflow.io.tables.read_events`)
and confound regressors and builds the first-level design of the configured task
(:func:`ketflow.signal.design.make_task_design`).  The per-run task-model node builds it once
and writes it with :func:`save_task_design`; the GLM and gPPI nodes read it with
:func:`load_task_design`.  The file is a pickle of the :class:`~ketflow.signal.design.TaskDesign`
(its arrays must reach the fits bit for bit, which a text table would not guarantee); it lives
in the work directory, written and read by the same ketflow version, like Nipype's own result
files.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from ..config import GLM, Task
from ..signal.design import TaskDesign, make_task_design
from .tables import read_events, read_numeric_tsv
from .write import atomic_path


def task_design_from_files(events_file: str | os.PathLike, tr: float, n_scans: int, start_time: float,
                           confounds_file: str | os.PathLike | None, task: Task, glm: GLM) -> TaskDesign:
    """Design of one run of ``task`` (conditions, derived conditions) with ``glm``'s HRF and
    high-pass and the confound regressors of ``confounds_file`` (one row per volume); errors
    name the offending file."""
    confounds = read_numeric_tsv(confounds_file, n_rows=n_scans) if confounds_file else None
    events = read_events(events_file)
    try:
        return make_task_design(
            events,
            tr,
            n_scans,
            task.conditions,
            [d.model_dump() for d in task.derived_conditions],
            start_time=start_time,
            derivative=glm.hrf == "spm+derivative",
            high_pass=glm.high_pass_s,
            confounds=confounds,
        )
    except ValueError as err:
        raise ValueError(f"{Path(events_file).name}: {err}") from err


def save_task_design(design: TaskDesign, path: str | os.PathLike) -> Path:
    """Write ``design`` for :func:`load_task_design` (atomically)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        pickle.dump(design, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return Path(path)


def load_task_design(path: str | os.PathLike) -> TaskDesign:
    """The design :func:`save_task_design` wrote."""
    with open(path, "rb") as handle:
        design = pickle.load(handle)  # noqa: S301 - a file this ketflow version wrote in its work directory
    if not isinstance(design, TaskDesign):
        raise ValueError(f"{Path(path).name}: not a task design written by ketflow")
    return design
