"""Up-front checks of every run's confounds, events and ROIs, and exclusion of unusable runs.

Run before any processing (the policy is in ``docs/inputs.md``):

* malformed inputs stop the run with one :class:`~ketflow.io.bids.InputError` naming every
  file and problem, before anything is written: confounds the strategy cannot use, events
  that cannot be read or validated, configured conditions / derived conditions / contrast
  members / DCM input trial types that do not occur in a run's events, extra atlases
  (``atlases``) whose label table does not match their image or that lie in another space or
  on another grid than a run (:mod:`ketflow.io.atlases`);
* runs unusable for analysis are excluded with a recorded reason and the others go on: too few
  volumes (or residual degrees of freedom) left after censoring, and too few voxels of a
  circuit ROI inside the run's brain mask (e.g. signal dropout) -- unless that ROI fails in
  every run screened, which points at the ROI definition and is an error.
"""

from __future__ import annotations

import nibabel as nb
import numpy as np

from ..config import AnalysisConfig
from ..io.atlases import atlas_grid_problems, resolve_atlases
from ..io.bids import InputError, RunInputs
from ..io.confounds import confound_strategy, load_confounds
from ..io.names import parse_name
from ..io.rois import circuit_roiset
from ..io.tables import read_events
from ..signal.denoise import TooFewVolumesError, filter_cutoffs, kept_design
from ..signal.design import contrast_vector, make_task_design
from ..signal.rois import mask_labels


def screen_runs(runs: list[RunInputs], config: AnalysisConfig) -> tuple[list[RunInputs], list[dict]]:
    """Check confounds, events and ROIs of every run; split into runs to process and exclusions.

    Returns
    -------
    kept : the runs to process, in input order.
    excluded : one record per excluded run (``subject``, ``session``, ``task``, ``run``, ``reason``).

    Raises
    ------
    InputError
        Listing every malformed confounds or events file (missing columns, n/a outside the
        first row, negative durations, onsets past the run, conditions absent from the events,
        ...) and every ROI too small in all the runs' brain masks.
    """
    strategy = confound_strategy(config.denoising)
    task_strategy = confound_strategy(config.denoising.for_task_models())
    rois = _ROICoverage(config)
    problems: list[str] = []
    try:  # atlases measured beside the circuit: their files, then their space or grid for each run
        atlases = resolve_atlases(config.atlases)
    except (ValueError, OSError) as err:
        raise InputError([str(err)]) from err
    for run in runs:
        for atlas in atlases:
            problems += atlas_grid_problems(atlas, parse_name(run.bold)[0].get("space"), run.mask)
    screened: list[tuple[RunInputs, list[str], dict[str, str]]] = []  # run, exclusion reasons, short ROIs
    for run in runs:
        try:
            confounds = load_confounds(run.confounds, run.confounds_json, strategy, run.n_volumes)
            if config.tasks[run.task].type == "task" and task_strategy != strategy:  # the task models' confounds
                load_confounds(run.confounds, run.confounds_json, task_strategy, run.n_volumes)
        except (ValueError, KeyError, OSError) as err:
            problems.append(f"{run.confounds}: {_strip_source(err, run.confounds)}")
            continue
        if run.events:
            found = event_problems(run, config)
            if found:
                problems += found
                continue
        try:
            short_rois = rois.shortfall(run)
        except (ValueError, OSError) as err:
            problems.append(f"{run.mask}: cannot place the circuit ROIs on this run's grid ({err})")
            continue
        reasons = []
        band = config.denoising.band_pass_rest if config.tasks[run.task].type == "rest" else None
        high_pass_s, low_pass_hz = filter_cutoffs(config.denoising.high_pass_s, band)
        try:
            kept_design(confounds.regressors.to_numpy(), run.tr, confounds.keep, high_pass_s, low_pass_hz,
                        min_volumes=config.denoising.required_volumes(run.tr), min_dof=config.denoising.min_dof)
        except TooFewVolumesError as err:
            rule = "denoising.min_dof" if "degrees of freedom" in str(err) else "denoising.min_volumes"
            reasons.append(
                f"{err} ({int(confounds.dummy.sum())} dummy scan(s), "
                f"{int(confounds.motion_censored.sum())} volume(s) censored at FD > "
                f"{config.denoising.fd_threshold} mm, strategy {config.denoising.strategy}; "
                f"quality-control rule {rule})")
        if short_rois:
            reasons.append(f"{run.mask}: ROI(s) {', '.join(short_rois.values())} have fewer than "
                           f"circuit.min_voxels = {config.circuit.min_voxels} voxels inside this brain mask")
        screened.append((run, reasons, short_rois))
    # An ROI too small in every run's mask points at the ROI definition, not at the runs: an error.
    everywhere = set.intersection(*(set(short) for _, _, short in screened)) if screened else set()
    for run, _, short in screened:
        if everywhere:
            problems.append(f"{run.mask}: ROI(s) {', '.join(short[n] for n in sorted(everywhere))} have fewer than "
                            f"circuit.min_voxels = {config.circuit.min_voxels} voxels inside this brain mask of "
                            f"run {run.name} (and in every other run's mask: check the ROI definition)")
    if problems:
        raise InputError(problems)
    kept = [run for run, reasons, _ in screened if not reasons]
    excluded = [_exclusion(run, "; ".join(reasons)) for run, reasons, _ in screened if reasons]
    return kept, excluded


def _exclusion(run: RunInputs, reason: str) -> dict:
    return {"subject": run.subject, "session": run.session, "task": run.task, "run": run.run, "reason": reason}


def event_problems(run: RunInputs, config: AnalysisConfig) -> list[str]:
    """Problems of a task run's events: unreadable or invalid, or not matching the configuration.

    Every configured condition must occur in ``trial_type``, every derived condition must match
    at least one event, every contrast must be estimable, and the DCM inputs' trial types must
    occur (for the DCM task), since the GLM, gPPI and DCM nodes need them.
    """
    path = run.events
    try:
        events = read_events(path)
        task = config.tasks[run.task]
        derived = [d.model_dump() for d in task.derived_conditions]
        design = make_task_design(events, run.tr, run.n_volumes, task.conditions, derived,
                                  start_time=run.start_time, high_pass=None)
    except ValueError as err:
        return [f"{path}: {_strip_source(err, path)}"]
    present = sorted(set(events["trial_type"].astype(str)))
    problems = []
    absent = [c for c in task.conditions if c not in present]
    if absent:
        problems.append(f"{path}: condition(s) {absent} of task '{run.task}' in the configuration do not occur "
                        f"in column trial_type (trial types found: {present})")
    for spec in task.derived_conditions:
        if spec.name in design.unestimable and set(spec.trial_types()) <= set(present):
            after = f" right after {spec.previous}" if spec.previous is not None else ""
            problems.append(f"{path}: no event matches derived condition '{spec.name}' of the configuration "
                            f"(trial_type {spec.trial_type}{after})")
    reported = set(absent) | {d.name for d in task.derived_conditions}
    for name, weights in task.contrasts.items():
        if set(weights) & reported and not set(weights) - reported:
            continue
        try:
            contrast_vector({c: w for c, w in weights.items() if c not in reported}, design)
        except ValueError as err:
            problems.append(f"{path}: contrast '{name}' cannot be estimated in this run ({err})")
    if config.measures.dcm and run.task == config.dcm.task:
        for name, trial_types in config.dcm.inputs.items():
            missing = sorted(set(trial_types) - set(present))
            if missing and not set(missing) <= set(absent):
                problems.append(f"{path}: DCM input '{name}' needs trial type(s) {missing}, which do not occur "
                                f"in this run (trial types found: {present})")
    return problems


class _ROICoverage:
    """Voxel counts of the circuit ROIs inside each run's brain mask (labels cached per grid)."""

    def __init__(self, config: AnalysisConfig):
        self.circuit = config.circuit
        self.min_voxels = config.circuit.min_voxels
        self._unmasked: dict[tuple, object] = {}

    def shortfall(self, run: RunInputs) -> dict[str, str]:
        """ROIs with fewer than ``min_voxels`` voxels in the run's mask: name -> description."""
        image = nb.load(run.mask)
        mask = np.asanyarray(image.dataobj) > 0
        key = (image.shape, np.round(image.affine, 4).tobytes())
        if key not in self._unmasked:  # ROI labels on the grid, before masking
            self._unmasked[key] = circuit_roiset(self.circuit, image, np.ones(image.shape, bool), min_voxels=0)
        full = self._unmasked[key]
        counted = mask_labels(full.labels, full.names, mask, min_voxels=0)
        return {
            name: f"{name} ({count} voxel(s)" + (", outside the image" if total == 0 else f" of {total}") + ")"
            for name, count, total in zip(counted.names, counted.n_voxels, counted.n_voxels_unmasked, strict=True)
            if count < self.min_voxels
        }


def _strip_source(err: Exception, path: str) -> str:
    """The error text without a leading copy of the file name (it is added by the caller)."""
    text = str(err)
    for prefix in (f"{path}: ", f"{path.rsplit('/', 1)[-1]}: "):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text
