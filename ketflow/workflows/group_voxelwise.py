"""The voxelwise second level in the group workflow: planning, one node per map kind, sinks.

:func:`plan_voxelwise` runs before the workflow (with the rest of the group level's input
checks) and writes only to the work directory. It finds the participant-level maps
(:mod:`ketflow.io.voxelwise`), turns ``group.voxelwise`` into analyses (one per map kind:
activation contrast, gPPI seed x contrast, FC seed; each with up to four tests: one-sample at
each session, paired change, arm x change), and decides for each test which subjects enter
it and whether it can run. An analysis that cannot run is listed in
``group/voxelwise/analyses.tsv`` with its reason, naming the configuration key or the file:
a map kind, task, contrast or seed the configuration does not have, no maps, maps on
different grids or spaces, too few subjects (per arm). The others still run.

:func:`add_voxelwise` adds one :class:`~ketflow.interfaces.voxelwise.VoxelwiseSecondLevel`
node per runnable map kind (its permutations shared by ``--nprocs`` threads) and the sinks of
its outputs, under ``group/voxelwise/``:

``[ses-<s>_]task-<t>_space-<sp>[_res-<r>][_roi-<seed>]_model-<design>[_contrast-<c>]_stat-<stat>[_desc-<correction>]_statmap.nii.gz``
with ``..._clusters.tsv`` and ``..._nulldistribution.tsv`` per test and
``task-<t>_..._desc-group_mask.nii.gz`` per map kind, every file with a JSON sidecar.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from ..config import VOXELWISE_MAPS, AnalysisConfig
from ..group.clusters import CLUSTER_COLUMNS
from ..interfaces.bids import DerivativesSink
from ..interfaces.voxelwise import VoxelwiseSecondLevel, design_prefix
from ..io.clinical import ClinicalDataError, read_participants
from ..io.names import bids_label, build_name
from ..io.voxelwise import MAP_FAMILIES, find_voxel_maps, session_maps
from ..io.write import write_json, write_tsv

#: Columns of ``group/voxelwise/analyses.tsv`` and their meaning.
ANALYSIS_COLUMNS = {
    "family": "first-level map kind: activation, gppi (seed-to-voxel gPPI) or fc (seed-to-voxel rest FC)",
    "task": "task label", "contrast": "first-level contrast (activation, gPPI)", "seed": "seed ROI (gPPI, FC)",
    "design": "one_sample (one session), paired_change (follow-up minus baseline), arm_by_change "
              "(difference between arms of the change)",
    "session": "session of a one-sample test",
    "status": "'run' or 'skipped'", "n_subjects": "subjects entering the test",
    "n_excluded": "subjects with maps left out of the test (reasons in the sidecar of its maps)",
    "reason": "why a test was skipped (naming the configuration key or the file)",
    "clusters": "the test's cluster table under group/voxelwise/ (its maps are named alike, ending in "
                "_stat-<stat>[_desc-<correction>]_statmap.nii.gz)",
}
#: Design -> model formula of the sidecars.
FORMULAS = {"one_sample": "map ~ 1", "paired_change": "(followup - baseline) ~ 1",
            "arm_by_change": "(followup - baseline) ~ 1 + arm"}
#: Bytes per voxel of one loaded map held during a node's work (maps, smoothed copies, 4-D stacks).
BYTES_PER_MAP_VOXEL = 8 * 4
#: Fewest permutations for which a node uses --nprocs threads (below, one thread and nodes in parallel).
THREADED_PERMUTATIONS = 1000


@dataclass
class VoxelwisePlan:
    """What :func:`plan_voxelwise` decided and wrote.

    analyses : the rows of ``analyses.tsv``; table : its path; runnable : node label ->
    (analysis JSON path, the map kind's output entities, memory estimate in GB, designs).
    """

    analyses: pd.DataFrame
    table: str
    runnable: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _MapKind:
    family: str
    task: str
    contrast: str | None = None  # configured name
    seed: str | None = None      # configured ROI name

    @property
    def label(self) -> str:
        return "_".join(bids_label(p) for p in (self.family, self.task, self.seed, self.contrast) if p)

    def description(self) -> str:
        what = {"activation": f"the activation contrast {self.contrast}",
                "gppi": f"the gPPI of seed {self.seed} for contrast {self.contrast}",
                "fc": f"the resting connectivity of seed {self.seed}"}[self.family]
        return f"{what} (task {self.task})"


def _row(kind: _MapKind | None, design: str = "", session: str = "", status: str = "skipped", n: int = 0,
         n_excluded: int = 0, reason: str = "", clusters: str = "", family: str = "") -> dict:
    return {"family": kind.family if kind else family, "task": kind.task if kind else "",
            "contrast": (kind.contrast or "") if kind else "", "seed": (kind.seed or "") if kind else "",
            "design": design, "session": session, "status": status, "n_subjects": n, "n_excluded": n_excluded,
            "reason": reason, "clusters": clusters}


def _selected_contrasts(config: AnalysisConfig, rows: list) -> dict[str, list[str]]:
    """Task -> its contrasts selected by ``group.voxelwise.contrasts`` (null: all); a task or
    contrast that the configuration does not have becomes a skipped row naming the key."""
    chosen = config.group.voxelwise.contrasts
    tasks = config.task_labels("task")
    if chosen is None:
        return {task: list(config.tasks[task].contrasts) for task in tasks}
    selected = {}
    for task, wanted in chosen.items():
        if task not in tasks:
            rows.append(_row(None, family="activation/gppi", reason=f"group.voxelwise.contrasts: {task!r} is not a "
                             f"configured task with contrasts (tasks: {tasks})"))
            continue
        configured = list(config.tasks[task].contrasts)
        for contrast in wanted:
            if contrast not in configured:
                rows.append(_row(_MapKind("activation/gppi", task, contrast),
                                 reason=f"group.voxelwise.contrasts.{task}: {contrast!r} is not a contrast of task "
                                        f"{task} (tasks.{task}.contrasts: {configured})"))
        selected[task] = [c for c in wanted if c in configured]
    return selected


def _map_kinds(config: AnalysisConfig, rows: list) -> list[_MapKind]:
    """Every map kind the configuration asks for; what it cannot have becomes a skipped row."""
    v = config.group.voxelwise
    for family in v.maps:
        if family not in VOXELWISE_MAPS:
            rows.append(_row(None, family=family, reason=f"group.voxelwise.maps: unknown map kind {family!r}; "
                                                         f"map kinds: {list(VOXELWISE_MAPS)}"))
    known_seeds = set(config.ppi.seeds) | set(config.connectivity.seeds)
    for seed in v.seeds or []:
        if seed not in known_seeds:
            rows.append(_row(None, family="gppi/fc", reason=f"group.voxelwise.seeds: {seed!r} is neither a ppi.seeds "
                             f"nor a connectivity.seeds ROI ({sorted(known_seeds)}); no map of it exists"))
    contrasts = _selected_contrasts(config, rows)

    def seeds(configured: list[str]) -> list[str]:
        return [s for s in configured if v.seeds is None or s in v.seeds]

    kinds = []
    if "activation" in v.maps:
        if config.measures.activation:
            kinds += [_MapKind("activation", t, c) for t, names in contrasts.items() for c in names]
        else:
            rows.append(_row(None, family="activation", reason="measures.activation is false: no activation maps"))
    if "gppi" in v.maps:
        if config.measures.ppi:
            kinds += [_MapKind("gppi", t, c, s) for t in config.ppi.tasks for s in seeds(config.ppi.seeds)
                      for c in contrasts.get(t, [])]
        else:
            rows.append(_row(None, family="gppi", reason="measures.ppi is false: no gPPI maps"))
    if "fc" in v.maps:
        if config.measures.connectivity and config.connectivity.seed_to_voxel:
            kinds += [_MapKind("fc", t, None, s) for t in config.connectivity.tasks
                      for s in seeds(config.connectivity.seeds)]
        else:
            rows.append(_row(None, family="fc", reason="measures.connectivity or connectivity.seed_to_voxel is "
                                                       "false: no seed-to-voxel maps"))
    return kinds


def _maps_of(kind: _MapKind, maps: pd.DataFrame) -> pd.DataFrame:
    sel = (maps["family"] == kind.family) & (maps["task"] == kind.task)
    if kind.contrast:
        sel &= maps["contrast"] == bids_label(kind.contrast)
    if kind.seed:
        sel &= maps["seed"] == bids_label(kind.seed)
    return maps[sel]


def _grid_problem(files: pd.DataFrame) -> str | None:
    """A reason naming a file when the maps are in several spaces or on several grids, else None."""
    spaces = files.drop_duplicates(["space", "res"])
    if len(spaces) > 1:
        listed = "; ".join(f"space-{r.space}" + (f"_res-{r.res}" if r.res else "") + f" ({r.path})"
                           for r in spaces.itertuples())
        return f"maps in more than one space or resolution: {listed}"
    first = None
    for path in files["path"]:
        header = nib.load(path)
        grid = (header.shape[:3], np.round(header.affine, 4))
        if first is None:
            first = (path, grid)
        elif grid[0] != first[1][0] or not np.allclose(grid[1], first[1][1]):
            return (f"{path}: grid {grid[0]} / affine {grid[1].tolist()} differs from {first[0]}'s "
                    f"{first[1][0]} / {first[1][1].tolist()}")
    return None


def _subjects(files: pd.DataFrame, participants: pd.DataFrame | None, config: AnalysisConfig) -> list[dict]:
    clinical = config.clinical
    records = []
    for subject, group in files.groupby("subject", sort=True):
        arm = None
        covariates = {}
        if participants is not None and subject in participants.index:
            value = participants.loc[subject, clinical.arm_column]
            arm = None if pd.isna(value) else str(value).strip()
            covariates = {c: (None if pd.isna(participants.loc[subject, c]) else float(participants.loc[subject, c]))
                          for c in clinical.covariates}
        records.append({"subject": subject, "arm": arm, "covariates": covariates,
                        "maps": {ses: sorted(g["path"]) for ses, g in group.groupby("session")}})
    return records


def _designs(kind: _MapKind, subjects: list[dict], config: AnalysisConfig, rows: list,
             entities: dict) -> list[dict]:
    """The tests of a map kind that can run (others become skipped rows, with reasons)."""
    v, sessions, arms = config.group.voxelwise, config.sessions, config.clinical.arms[:2]
    planned = []
    for design in v.designs:
        for session in ([sessions.baseline, sessions.followup] if design == "one_sample" else [None]):
            needed = [session] if session else [sessions.baseline, sessions.followup]
            included, excluded = [], []
            for s in subjects:
                missing = [ses for ses in needed if ses not in s["maps"]]
                absent_cov = [c for c in config.clinical.covariates if s["covariates"].get(c) is None]
                if missing:
                    reason = f"no map at session(s) {', '.join(missing)}"
                elif design == "arm_by_change" and s["arm"] not in arms:
                    reason = f"missing {config.clinical.arm_column} (treatment arm)"
                elif absent_cov:
                    reason = f"missing covariate(s) {', '.join(absent_cov)}"
                else:
                    included.append(s["subject"])
                    continue
                excluded.append({"subject": s["subject"], "reason": reason})
            entry = {"design": design, "session": session, "subjects": included, "excluded": excluded,
                     "formula": FORMULAS[design] + "".join(f" + {c}" for c in config.clinical.covariates)}
            reason = None
            if len(included) < v.min_subjects:
                reason = (f"group.voxelwise.min_subjects: {len(included)} subject(s) with "
                          f"{'a ses-' + session if session else 'both sessions'}' map; at least {v.min_subjects} "
                          "needed")
            elif design == "arm_by_change":
                by_subject = {s["subject"]: s["arm"] for s in subjects}
                counts = {a: sum(by_subject[s] == a for s in included) for a in arms}
                if len(arms) < 2:
                    reason = "clinical.arms: the arm x change test needs two arms"
                elif min(counts.values()) < v.min_per_arm:
                    reason = (f"group.voxelwise.min_per_arm: subjects with both sessions per arm "
                              f"{counts}; at least {v.min_per_arm} per arm needed")
            name = build_name(dict(entities, ses=session, model=design), "clusters", ".tsv")
            rows.append(_row(kind, design, session or "", "skipped" if reason else "run", len(included),
                             len(excluded), reason or "", name if reason is None else ""))
            if reason is None:
                planned.append(entry)
    return planned


def plan_voxelwise(opts, config: AnalysisConfig, work: Path) -> VoxelwisePlan | None:
    """Decide the voxelwise analyses and write their plans to ``work``; None when disabled.

    Reads the maps of every subject with participant-level outputs (``--participant-label`` applied).
    """
    v = config.group.voxelwise
    if not v.enabled:
        return None
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    try:
        participants = read_participants(opts.bids_dir, config.clinical.arm_column, config.clinical.covariates)
    except ClinicalDataError:
        participants = None  # prepare_inputs reports it; tests needing the arm are then skipped
    labels = [p.removeprefix("sub-") for p in (opts.participant_label or [])]
    maps = session_maps(find_voxel_maps(opts.output_dir, labels or None))
    runnable = {}
    settings = {"smoothing_fwhm": v.smoothing_fwhm, "n_permutations": v.n_permutations, "tfce": v.tfce,
                "cluster_forming_p": v.cluster_forming_p, "two_sided": v.two_sided, "alpha": v.alpha, "seed": v.seed}
    for kind in _map_kinds(config, rows):
        files = _maps_of(kind, maps)
        pattern = MAP_FAMILIES[kind.family][0]
        if files.empty:
            rows.append(_row(kind, reason=f"no participant-level maps of {kind.description()} in "
                                          f"{opts.output_dir} (sub-*/ses-*/func/{pattern})"))
            continue
        problem = _grid_problem(files)
        if problem:
            rows.append(_row(kind, reason=problem))
            continue
        first = files.iloc[0]
        entities = {"task": kind.task, "space": first["space"] or None, "res": first["res"] or None,
                    "roi": kind.seed, "contrast": kind.contrast}
        people = _subjects(files, participants, config)
        designs = _designs(kind, people, config, rows, entities)
        if not designs:
            continue
        plan = {"family": kind.family, "task": kind.task, "contrast_name": kind.contrast, "seed_name": kind.seed,
                "description": kind.description(), "out_dir": str(opts.output_dir),
                "sessions": {"baseline": config.sessions.baseline, "followup": config.sessions.followup},
                "arms": config.clinical.arms[:2], "covariates": list(config.clinical.covariates),
                "subjects": people, "designs": designs, "settings": settings,
                "small_volume": v.small_volume, "circuit": config.circuit.model_dump(mode="json")}
        path = write_json(work / f"voxelwise_{kind.label}.json", plan)
        header = nib.load(files["path"].iloc[0])
        n_maps = sum(len(p) for s in people for p in s["maps"].values())
        memory = 0.5 + n_maps * int(np.prod(header.shape[:3])) * BYTES_PER_MAP_VOXEL / 2**30
        runnable[kind.label] = (str(path), entities, memory, designs)
    table = pd.DataFrame.from_records(rows, columns=list(ANALYSIS_COLUMNS))
    return VoxelwisePlan(analyses=table, table=str(write_tsv(work / "voxelwise_analyses.tsv", table)),
                         runnable=runnable)


def summary_lines(plan: VoxelwisePlan | None) -> list[str]:
    """Lines of the group level's closing summary about the voxelwise tests."""
    if plan is None:
        return []
    table = plan.analyses
    lines = [f"ketflow voxelwise second level: {int((table['status'] == 'run').sum())} test(s) run, "
             f"{int((table['status'] == 'skipped').sum())} skipped (group/voxelwise/analyses.tsv)."]
    skipped = table[table["status"] == "skipped"]
    for reason, group in skipped.groupby("reason", sort=False):
        lines.append(f"  skipped {len(group)} test(s): {reason}")
    return lines


def _item(values, index):
    """The ``index``-th element of a node's list output (for connections)."""
    return values[index]


def _sink_node(workflow, name, group_dir, config_hash, entities, suffix, extension, metadata=None):
    node = pe.Node(DerivativesSink(out_dir=group_dir, entities=entities, suffix=suffix, extension=extension,
                                   datatype="voxelwise", config_hash=config_hash, metadata=metadata or {},
                                   entities_from_filename=True),
                   name=name, run_without_submitting=True)
    workflow.add_nodes([node])
    return node


def add_voxelwise(workflow: pe.Workflow, plan: VoxelwisePlan | None, config: AnalysisConfig, opts) -> None:
    """One second-level node per runnable map kind and the sinks of its outputs (module docstring)."""
    if plan is None:
        return
    group_dir, digest = str(opts.output_dir / "group"), config.digest()
    table = pe.Node(niu.IdentityInterface(fields=["analyses"]), name="voxelwise_table")
    table.inputs.analyses = plan.table
    ds_table = pe.Node(DerivativesSink(out_dir=group_dir, entities={}, suffix="analyses", extension=".tsv",
                                       datatype="voxelwise", config_hash=digest,
                                       metadata={"Description": "every voxelwise second-level test: run or "
                                                                "skipped, with its subjects and reason",
                                                 **ANALYSIS_COLUMNS}),
                       name="ds_voxelwise_analyses", run_without_submitting=True)
    workflow.connect(table, "analyses", ds_table, "in_file")
    # A node's permutations share --nprocs threads when there are enough of them to pay for it;
    # with few (--sloppy), the nodes run side by side instead.
    threads = opts.nprocs if config.group.voxelwise.n_permutations >= THREADED_PERMUTATIONS else 1
    for label, (path, entities, memory, designs) in plan.runnable.items():
        node = pe.Node(VoxelwiseSecondLevel(analysis_json=path, n_jobs=threads), name=f"voxelwise_{label}",
                       n_procs=threads, mem_gb=memory)
        ds_mask = _sink_node(workflow, f"ds_voxelwise_{label}_mask", group_dir, digest, entities, "mask", ".nii.gz",
                             {"Description": "group mask: voxels inside every included subject's first-level map"})
        workflow.connect(node, "mask", ds_mask, "in_file")
        for k, design in enumerate(designs):
            tag = f"{label}_{bids_label(design_prefix(design))}"
            for field_, suffix, extension, meta in (
                    ("maps", "statmap", ".nii.gz", {}),
                    ("clusters", "clusters", ".tsv", CLUSTER_COLUMNS),
                    ("null", "nulldistribution", ".tsv",
                     {"Description": "largest statistic over the mask (and over the small volume: *_svc) in every "
                                     "rearrangement: the null distributions of the FWE-corrected p-values"})):
                ds = _sink_node(workflow, f"ds_voxelwise_{tag}_{field_}", group_dir, digest, entities, suffix,
                                extension, meta)
                workflow.connect([(node, ds, [((field_, _item, k), "in_file"), (("meta", _item, k), "metadata_file")])])
