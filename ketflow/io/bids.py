"""Input discovery over a raw BIDS dataset and its fMRIPrep derivatives (pybids).

For every subject / session / task / run this finds the preprocessed BOLD in the requested
space (the ``res-`` entity is optional: fMRIPrep writes it only when asked), its brain mask
and reference, the confounds TSV and JSON, the raw ``events.tsv`` and the timing
(``RepetitionTime`` and ``StartTime``: slice-timing-corrected series are sampled at
``StartTime + k * TR``, so event onsets must be read against that).

Everything is checked before any processing starts; all problems are gathered and raised
together in one :class:`InputError` whose message names each file and what is wrong (the
policy: ``docs/inputs.md``).  Images are checked beyond their headers: every BOLD file's length
(gzip trailer) and the whole gzip stream (CRC) of the small brain masks and BOLD references
(:mod:`ketflow.io.integrity`).  A configured task absent from the whole dataset, a raw run without
preprocessed BOLD, or a run preprocessed only in another space is an error; a configured task
a subject did not perform in a session is recorded in :attr:`Discovery.skipped`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nb
import numpy as np

from .integrity import check_nifti

LOGGER = logging.getLogger("ketflow.inputs")

#: Relative tolerance between the TR of the sidecar and of the NIfTI header.
TR_TOLERANCE = 1e-3


class InputError(ValueError):
    """The inputs are missing or inconsistent; the message lists every problem found."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(f"  - {p}" for p in self.problems))


@dataclass(frozen=True)
class RunInputs:
    """Everything ketflow reads for one BOLD run (paths are absolute)."""

    subject: str
    session: str | None
    task: str
    run: str | None
    bold: str
    mask: str
    confounds: str
    confounds_json: str | None
    boldref: str | None
    events: str | None
    tr: float
    start_time: float
    n_volumes: int
    extra_entities: dict = field(default_factory=dict)
    gm_probseg: str | None = None

    @property
    def entities(self) -> dict:
        """BIDS entities identifying the run (``sub``, ``ses``, ``task``, ``run``, ...)."""
        return {"sub": self.subject, "ses": self.session, "task": self.task, "run": self.run, **self.extra_entities}

    @property
    def name(self) -> str:
        """A short identifier such as ``sub-01_ses-pre_task-faces``."""
        return "_".join(f"{k}-{v}" for k, v in self.entities.items() if v is not None)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Discovery:
    """Result of input discovery: the runs to process and what was skipped, with reasons."""

    runs: list[RunInputs]
    subjects: list[str]
    skipped: list[dict]


def strip_prefix(label: str, prefix: str) -> str:
    """``sub-01`` -> ``01`` (labels given with or without their prefix are accepted)."""
    return label[len(prefix) + 1:] if label.startswith(prefix + "-") else label


def _layouts(bids_dir: Path, fmriprep_dir: Path, exclude: tuple[Path, ...] = ()):
    from bids import BIDSLayout
    from bids.layout import BIDSLayoutIndexer

    problems = []
    if not (bids_dir / "dataset_description.json").is_file():
        problems.append(f"{bids_dir}: not a BIDS dataset (no dataset_description.json)")
    if not fmriprep_dir.is_dir():
        problems.append(
            f"{fmriprep_dir}: fMRIPrep derivatives not found (run fMRIPrep first, or point to them "
            "with --derivatives fmriprep=PATH)"
        )
    elif not (fmriprep_dir / "dataset_description.json").is_file():
        problems.append(f"{fmriprep_dir}: not a BIDS derivatives dataset (no dataset_description.json)")
    if problems:
        raise InputError(problems)
    # Folders inside the dataset that are not inputs (ketflow's own output dataset, e.g.
    # bids/derivatives/ketflow, is under "derivatives"; it is named too in case it is not).
    inside = [Path(p).resolve() for p in exclude if bids_dir in Path(p).resolve().parents]
    indexer = BIDSLayoutIndexer(validate=False, ignore=["derivatives", "sourcedata", "code", "work", *inside])
    try:
        raw = BIDSLayout(bids_dir, validate=False, indexer=indexer)
        deriv = BIDSLayout(fmriprep_dir, validate=False, is_derivative=True)
    except Exception as err:  # pybids raises several types for unreadable datasets
        raise InputError([f"cannot index the datasets with pybids: {err}"]) from err
    return raw, deriv


def discover(
    bids_dir: Path | str,
    fmriprep_dir: Path | str,
    tasks: dict[str, str],
    space: str = "MNI152NLin2009cAsym",
    participant_labels: list[str] | None = None,
    session_labels: list[str] | None = None,
    bids_filters: dict | None = None,
    exclude: tuple[Path, ...] = (),
) -> Discovery:
    """Find and check every run to process.

    Parameters
    ----------
    tasks
        Task label -> ``"task"`` or ``"rest"``; only these tasks are looked for. Task runs
        need an ``events.tsv``.
    participant_labels, session_labels
        Optional filters (with or without ``sub-``/``ses-``). A participant label that
        matches no subject is an error.
    bids_filters
        fMRIPrep-style filters: ``{"bold": {entity: value}}`` applied to the BOLD query.
    exclude
        Folders inside ``bids_dir`` that are not inputs (ketflow's output dataset when it is
        ``bids_dir/derivatives/ketflow``): never indexed.

    Raises
    ------
    InputError
        Listing every missing or inconsistent input.
    """
    bids_dir, fmriprep_dir = Path(bids_dir).resolve(), Path(fmriprep_dir).resolve()
    raw, deriv = _layouts(bids_dir, fmriprep_dir, exclude)
    problems: list[str] = []
    skipped: list[dict] = []

    subjects = sorted(raw.get_subjects())
    if participant_labels:
        wanted = [strip_prefix(p, "sub") for p in participant_labels]
        unknown = [p for p in wanted if p not in subjects]
        if unknown:
            raise InputError([f"{bids_dir}: no subject(s) {', '.join('sub-' + u for u in unknown)} in the dataset"])
        subjects = wanted
    if not subjects:
        raise InputError([f"{bids_dir}: the dataset has no subjects"])
    sessions = [strip_prefix(s, "ses") for s in session_labels] if session_labels else None
    bold_filters = dict((bids_filters or {}).get("bold", {}))
    _check_tasks_exist(raw, deriv, tasks, bids_dir)

    runs: list[RunInputs] = []
    for subject in subjects:
        found = _subject_bolds(deriv, subject, list(tasks), space, sessions, bold_filters, fmriprep_dir, problems)
        if found:
            _check_raw_runs_preprocessed(raw, deriv, subject, list(tasks), sessions, bold_filters, fmriprep_dir,
                                         problems)
        if not found and not any(subject in p for p in problems):
            problems.append(
                f"{fmriprep_dir}: no preprocessed BOLD (desc-preproc, space-{space}) for sub-{subject}"
                + (f" in session(s) {sessions}" if sessions else "")
                + f" and task(s) {sorted(tasks)}"
            )
        for bold in found:
            run = _check_run(bold, raw, deriv, tasks, problems)
            if run is not None:
                runs.append(run)
        skipped += _absent_tasks(raw, subject, sessions, tasks, found, bold_filters)
    if problems:
        raise InputError(problems)
    runs.sort(key=lambda r: (r.subject, r.session or "", r.task, r.run or ""))
    return Discovery(runs=runs, subjects=subjects, skipped=skipped)


def _check_tasks_exist(raw, deriv, tasks: dict, bids_dir: Path) -> None:
    """A configured task with no BOLD in the raw dataset nor the derivatives is an error (a typo)."""
    known = set(raw.get_tasks()) | set(deriv.get_tasks())
    unknown = sorted(set(tasks) - known)
    if unknown:
        raise InputError([
            f"{bids_dir}: configured task(s) {unknown} have no BOLD run in the dataset or its fMRIPrep "
            f"derivatives (tasks there: {sorted(known)}); correct the task labels in the configuration, "
            "or choose the tasks to process with --task"
        ])


#: Entities that identify one acquisition across the raw dataset and the derivatives (fMRIPrep
#: combines echoes, so ``echo`` is left out).
RUN_ENTITIES = ("session", "task", "acquisition", "run")


def _run_key(entities: dict) -> tuple:
    return tuple(None if entities.get(k) is None else str(entities[k]) for k in RUN_ENTITIES)


def _preproc_query(subject, tasks, sessions, filters) -> dict:
    query = dict(subject=subject, task=tasks, desc="preproc", suffix="bold", extension=[".nii.gz", ".nii"])
    query.update(filters)
    if sessions:
        query["session"] = sessions
    return query


def _check_raw_runs_preprocessed(raw, deriv, subject, tasks, sessions, filters, fmriprep_dir, problems) -> None:
    """Every raw BOLD run of the selected tasks needs preprocessed BOLD (in some space)."""
    preprocessed = {_run_key(f.entities) for f in deriv.get(**_preproc_query(subject, tasks, sessions, filters))}
    query = {k: v for k, v in _preproc_query(subject, tasks, sessions, filters).items() if k != "desc"}
    for bold in raw.get(invalid_filters="drop", **query):
        if _run_key(bold.entities) not in preprocessed:
            problems.append(
                f"{bold.path}: no preprocessed BOLD (desc-preproc) of this run in {fmriprep_dir} (fMRIPrep did "
                "not finish it?); rerun fMRIPrep, or leave the run out with --bids-filter-file or --task"
            )


def _filter_values(filters: dict, entity: str) -> set[str] | None:
    """Values a ``--bids-filter-file`` BOLD filter allows for ``entity`` (None: no restriction)."""
    if entity not in filters or filters[entity] is None:
        return None
    value = filters[entity]
    return {str(v) for v in value} if isinstance(value, (list, tuple)) else {str(value)}


def _absent_tasks(raw, subject, sessions, tasks, found, filters) -> list[dict]:
    """Configured tasks with no preprocessed BOLD in a session the raw dataset has (within
    the sessions and tasks that ``--session-label`` and the BOLD filters select)."""
    present = {(f.entities.get("session"), f.entities["task"]) for f in found}
    subject_sessions = raw.get_sessions(subject=subject) or [None]
    filter_sessions, filter_tasks = _filter_values(filters, "session"), _filter_values(filters, "task")
    absent = []
    for session in sorted(subject_sessions, key=str):
        if sessions and session not in sessions:
            continue
        if filter_sessions is not None and session not in filter_sessions:
            continue
        for task in sorted(tasks):
            if filter_tasks is not None and task not in filter_tasks:
                continue
            if (session, task) not in present:
                absent.append({"subject": subject, "session": session, "task": task,
                               "reason": "no BOLD run of this task in this session"})
    return absent


def _subject_bolds(deriv, subject, tasks, space, sessions, filters, fmriprep_dir, problems):
    every = deriv.get(**_preproc_query(subject, tasks, sessions, filters))
    in_space = [f for f in every if f.entities.get("space") == space]
    if not in_space:
        others = sorted({f.entities.get("space", "(native)") for f in every})
        if others:
            problems.append(
                f"{fmriprep_dir}: sub-{subject} has preprocessed BOLD only in space(s) {others}, "
                f"not in the requested space {space} (use --space, or rerun fMRIPrep with "
                f"--output-spaces {space})"
            )
        return []
    have = {_run_key(f.entities) for f in in_space}
    elsewhere: dict[tuple, list] = {}
    for f in every:
        if _run_key(f.entities) not in have:
            elsewhere.setdefault(_run_key(f.entities), []).append(f)
    for files in (elsewhere[key] for key in sorted(elsewhere, key=str)):
        spaces = sorted({f.entities.get("space", "(native)") for f in files})
        problems.append(
            f"{files[0].path}: this run is preprocessed only in space(s) {spaces}, not in the requested space "
            f"{space}, unlike the subject's other runs (rerun fMRIPrep with --output-spaces {space})"
        )
    # Several resolutions of the same run are ambiguous unless a filter picks one.
    by_run: dict[tuple, list] = {}
    for f in in_space:
        key = tuple(f.entities.get(k) for k in ("session", "task", "acquisition", "run", "echo"))
        by_run.setdefault(key, []).append(f)
    chosen = []
    for key, files in sorted(by_run.items(), key=lambda kv: str(kv[0])):
        if len(files) > 1:
            problems.append(
                f"several preprocessed BOLD files match one run ({', '.join(Path(f.path).name for f in files)}); "
                "choose one with --bids-filter-file (e.g. {\"bold\": {\"res\": \"2\"}})"
            )
            continue
        chosen.append(files[0])
    return chosen


def _companion(deriv, bold, problems, what: str, required: bool = True, **overrides):
    entities = {k: v for k, v in bold.get_entities().items() if k not in ("desc", "suffix", "extension", "datatype")}
    entities.update(overrides)
    matches = deriv.get(**entities, return_type="filename", invalid_filters="drop")
    if len(matches) > 1:
        problems.append(f"{bold.path}: several {what} files match: {[Path(m).name for m in matches]}")
        return None
    if not matches:
        if required:
            problems.append(f"{bold.path}: no {what} found next to it in the fMRIPrep derivatives")
        return None
    return matches[0]


def _check_run(bold, raw, deriv, tasks, problems) -> RunInputs | None:
    ent = bold.get_entities()
    n_before = len(problems)
    mask = _companion(deriv, bold, problems, "brain mask (desc-brain_mask)", desc="brain", suffix="mask",
                      extension=[".nii.gz", ".nii"])
    boldref = _companion(deriv, bold, problems, "BOLD reference (boldref)", required=False, desc=None,
                         suffix="boldref", extension=[".nii.gz", ".nii"])
    confounds = _companion(deriv, bold, problems, "confounds TSV (desc-confounds_timeseries.tsv)",
                           space=None, res=None, den=None, cohort=None, desc="confounds",
                           suffix=["timeseries", "regressors"], extension=".tsv")
    confounds_json = None
    if confounds:
        candidate = Path(confounds[: -len(".tsv")] + ".json")
        confounds_json = str(candidate) if candidate.is_file() else None

    events = None
    if tasks[ent["task"]] == "task":
        query = {k: ent[k] for k in ("subject", "session", "task", "acquisition", "run") if k in ent}
        found = raw.get(suffix="events", extension=".tsv", return_type="filename", **query)
        if not found:
            problems.append(f"{bold.path}: task '{ent['task']}' needs an events.tsv in the raw dataset; none found "
                            f"for {_describe(query)}")
        else:
            events = found[0]

    image_info = _check_bold_image(bold.path, problems)
    tr = _sidecar_tr(bold, raw, problems, image_info)
    start_time = _start_time(bold, tr, problems)
    if mask and image_info:
        _check_same_grid(bold.path, mask, image_info, problems, "brain mask")
    if boldref and image_info:
        _check_same_grid(bold.path, boldref, image_info, problems, "BOLD reference")
    if confounds and image_info:
        _check_confounds_rows(confounds, image_info["n_volumes"], problems)
    if len(problems) > n_before or image_info is None or tr is None or start_time is None:
        return None
    extra = {k: ent[k] for k in ("acquisition",) if k in ent}
    gm_probseg = _grey_matter_probseg(deriv, ent)
    return RunInputs(
        subject=ent["subject"],
        session=ent.get("session"),
        task=ent["task"],
        run=str(ent["run"]) if ent.get("run") is not None else None,
        bold=str(Path(bold.path)),
        mask=str(mask),
        confounds=str(confounds),
        confounds_json=confounds_json,
        boldref=boldref,
        events=events,
        tr=tr,
        start_time=start_time,
        n_volumes=image_info["n_volumes"],
        extra_entities={"acq": extra["acquisition"]} if extra else {},
        gm_probseg=gm_probseg,
    )


def _grey_matter_probseg(deriv, ent: dict) -> str | None:
    """fMRIPrep's ``label-GM_probseg`` of the run's subject in the run's output space (the run's
    session's when there are several, else the subject-level one; the run's ``res-`` preferred),
    or None. Any grid of the space will do: it is interpolated onto the BOLD grid."""
    if not ent.get("space"):
        return None
    found = deriv.get(subject=ent["subject"], space=ent["space"], label="GM", suffix="probseg",
                      extension=[".nii.gz", ".nii"], return_type="object", invalid_filters="drop")
    if not found:
        return None

    def rank(image):
        image_ent = image.get_entities()
        return (image_ent.get("session") not in (ent.get("session"), None),
                image_ent.get("session") != ent.get("session"),
                image_ent.get("res") != ent.get("res"), image.path)
    return str(min(found, key=rank).path)


def _describe(query: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in query.items())


def _check_bold_image(path: str, problems: list[str]) -> dict | None:
    """Cheap checks: readable header, 4D, the file as long as the header implies; header TR."""
    try:
        img = nb.load(path)
    except Exception as err:  # nibabel raises many types for corrupt files
        problems.append(f"{path}: cannot read the NIfTI image ({err})")
        return None
    if len(img.shape) != 4 or img.shape[3] < 2:
        problems.append(f"{path}: expected a 4D BOLD series, got an image of shape {img.shape}")
        return None
    # Length only: the full CRC check would cost a whole decompression of every run (docs/inputs.md).
    damage = check_nifti(path, img, full=False)
    if damage:
        problems.append(f"{path}: corrupt BOLD image: {damage}")
        return None
    zooms = img.header.get_zooms()
    tr_header = float(zooms[3])
    units = img.header.get_xyzt_units()[1] if hasattr(img.header, "get_xyzt_units") else "sec"
    if units == "msec":
        tr_header /= 1000.0
    elif units == "usec":
        tr_header /= 1e6
    return {"shape": img.shape, "affine": img.affine, "n_volumes": int(img.shape[3]), "tr_header": tr_header}


def _sidecar_tr(bold, raw, problems, image_info) -> float | None:
    metadata = bold.get_metadata()
    tr = metadata.get("RepetitionTime")
    source = "its JSON sidecar"
    if tr is None:
        raw_files = raw.get(return_type="object", suffix="bold", extension=[".nii.gz", ".nii"],
                            **{k: v for k, v in bold.get_entities().items()
                               if k in ("subject", "session", "task", "acquisition", "run")})
        if raw_files:
            tr = raw_files[0].get_metadata().get("RepetitionTime")
            source = f"the raw sidecar of {Path(raw_files[0].path).name}"
    if tr is None:
        problems.append(f"{bold.path}: RepetitionTime is missing from its JSON sidecar and from the raw dataset")
        return None
    try:
        tr = float(tr)
    except (TypeError, ValueError):
        problems.append(f"{bold.path}: RepetitionTime {tr!r} in {source} is not a number")
        return None
    if tr <= 0:
        problems.append(f"{bold.path}: RepetitionTime {tr} in {source} must be positive")
        return None
    if image_info is not None:
        header_tr = image_info["tr_header"]
        if header_tr > 0 and abs(header_tr - tr) > TR_TOLERANCE * tr:
            problems.append(
                f"{bold.path}: RepetitionTime {tr} s in {source} disagrees with the NIfTI header "
                f"({header_tr:g} s)"
            )
            return None
    return tr


def _start_time(bold, tr: float | None, problems: list[str]) -> float | None:
    """``StartTime`` of the preprocessed series (s, default 0): a number in [0, TR)."""
    value = bold.get_metadata().get("StartTime", 0.0)
    try:
        start = float(value)
    except (TypeError, ValueError):
        problems.append(f"{bold.path}: StartTime {value!r} in its JSON sidecar is not a number")
        return None
    if tr is not None and not 0 <= start < tr:
        problems.append(f"{bold.path}: StartTime {start:g} s in its JSON sidecar is outside [0, TR = {tr:g} s)")
        return None
    return start


def _check_same_grid(bold_path, other_path, image_info, problems, what):
    """A (small, 3D) companion image: intact (whole gzip stream checked) and on the BOLD grid."""
    try:
        other = nb.load(other_path)
    except Exception as err:
        problems.append(f"{other_path}: cannot read the {what} ({err})")
        return
    damage = check_nifti(other_path, other, full=True)
    if damage:
        problems.append(f"{other_path}: corrupt {what}: {damage}")
        return
    if len(other.shape) != 3:
        problems.append(f"{other_path}: expected a 3D {what}, got an image of shape {other.shape}")
        return
    if other.shape[:3] != image_info["shape"][:3] or not np.allclose(other.affine, image_info["affine"], atol=1e-3):
        problems.append(
            f"{other_path}: the {what} is not on the BOLD grid of {Path(bold_path).name} "
            f"(shape {other.shape[:3]} vs {image_info['shape'][:3]}, or a different affine)"
        )


def _check_confounds_rows(path: str, n_volumes: int, problems: list[str]) -> None:
    with open(path, "rb") as handle:
        n_rows = sum(1 for line in handle if line.strip()) - 1
    if n_rows != n_volumes:
        problems.append(f"{path}: the confounds TSV has {n_rows} rows but the BOLD series has {n_volumes} volumes")


def read_json(path: Path | str) -> dict:
    """Read a JSON object (a BIDS sidecar); a ValueError names the file when it is malformed or
    not an object (UTF-8/16/32 text, as :func:`json.loads` detects it)."""
    try:
        data = json.loads(Path(path).read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise ValueError(f"{path}: malformed JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got a JSON {type(data).__name__}")
    return data
