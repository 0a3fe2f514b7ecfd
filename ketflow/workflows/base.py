"""Top-level participant workflow: one sub-workflow per subject, one per run inside it.

``init_ketflow_wf`` → ``single_subject_<label>_wf`` → ``<ses>_<task>[_<run>]_wf`` per run
(runs are independent Nipype nodes, so MultiProc runs them in parallel).  Each run workflow
is assembled from the measure workflows of :mod:`ketflow.workflows.bold`.

When a subject has several runs of the same task in a session (same entities apart from
``run``), a ``<ses>_<task>_fixedeffects_wf`` combines their activation contrasts by fixed
effects (inverse-variance weighting, :class:`~ketflow.interfaces.glm.FixedEffects`) and
stores session-level maps and ROI tables under the run-level names without the ``run``
entity, as FitLins names its session-level outputs.  With a single run there is nothing to
combine and the run-level outputs are the session's.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from nipype.interfaces.utility import Merge
from nipype.pipeline import engine as pe

from ..config import AnalysisConfig
from ..interfaces.connectivity import Connectivity
from ..interfaces.denoise import Denoise
from ..interfaces.glm import FirstLevelGLM, FixedEffects
from ..interfaces.ppi import GPPI
from ..io.bids import RunInputs
from ..io.write import write_json
from .bold import _Sinks, init_run_wf, run_wf_name
from .execution import reserve_threads
from .screening import roi_definition, screen_runs

__all__ = ["init_ketflow_wf", "screen_runs", "write_run_specs"]

#: Interfaces whose voxel-wise linear algebra (regression, projections, correlations over
#: every brain voxel) runs in multithreaded BLAS: their nodes reserve ``--omp-nthreads`` slots.
THREADED_INTERFACES = (Denoise, FirstLevelGLM, GPPI, Connectivity)


def write_run_specs(config: AnalysisConfig, spec_dir: Path) -> dict[str, str]:
    """Write the JSON specifications nodes read (ROI definition, denoising per run kind).

    They live in the work directory and are rewritten identically on a rerun, so Nipype's
    hashes (and the cached results) stay valid.
    """
    rois = roi_definition(config)
    den = config.denoising
    task_denoise = {"strategy": den.strategy, "fd_threshold": den.fd_threshold, "min_contiguous": den.min_contiguous,
                    "high_pass_s": den.high_pass_s, "min_volumes": den.min_volumes, "min_dof": den.min_dof}
    rest_denoise = dict(task_denoise, band_pass_hz=list(den.band_pass_rest) if den.band_pass_rest else None)
    specs = {"rois": rois, "denoise_task": task_denoise, "denoise_rest": rest_denoise}
    paths = {}
    for name, content in specs.items():
        path = spec_dir / f"{name}.json"
        if not path.exists() or json.loads(path.read_text()) != json.loads(json.dumps(content)):
            write_json(path, content)
        paths[name] = str(path)
    return paths


def init_ketflow_wf(runs: list[RunInputs], config: AnalysisConfig, opts, source_links: dict) -> pe.Workflow:
    """The whole participant-level workflow for ``runs`` (already screened)."""
    workflow = pe.Workflow(name="ketflow_wf")
    specs = write_run_specs(config, Path(opts.work_dir) / "ketflow_specs")
    context = {
        "config": config,
        "out_dir": str(opts.output_dir),
        "space": opts.space,
        "specs": specs,
        "source_links": {k: str(v) for k, v in source_links.items()},
        "config_hash": config.digest(),
        "omp_nthreads": opts.omp_nthreads,
    }
    for subject in sorted({r.subject for r in runs}):
        subject_wf = pe.Workflow(name=f"single_subject_{subject}_wf")
        run_wfs = []
        for run in (r for r in runs if r.subject == subject):
            run_wfs.append((run, init_run_wf(run, context)))
            subject_wf.add_nodes([run_wfs[-1][1]])
        for members in session_groups(run_wfs, config):
            _add_fixed_effects(subject_wf, members, context)
        workflow.add_nodes([subject_wf])
    # Each process is limited to --omp-nthreads threads (execution.thread_limits); the nodes
    # that use them reserve as many MultiProc slots, never more than --nprocs.
    reserve_threads(workflow, min(opts.omp_nthreads, opts.nprocs), THREADED_INTERFACES)
    return workflow


def session_groups(run_wfs: list, config: AnalysisConfig) -> list[list]:
    """(run, workflow) pairs of activation runs sharing every entity but ``run``, in groups of two or more."""
    if not config.measures.activation:
        return []
    groups: dict[tuple, list] = {}
    for run, wf in run_wfs:
        if config.tasks[run.task].type == "task":
            key = tuple((k, v) for k, v in run.entities.items() if k != "run")
            groups.setdefault(key, []).append((run, wf))
    return [members for members in groups.values() if len(members) > 1]


def _add_fixed_effects(subject_wf: pe.Workflow, members: list, ctx: dict) -> None:
    """Session-level fixed-effects combination of the activation contrasts of ``members``' runs."""
    runs = [run for run, _ in members]
    first = runs[0]
    session = replace(first, run=None)
    workflow = pe.Workflow(name=run_wf_name(session).removesuffix("_wf") + "_fixedeffects_wf")
    n = len(members)
    merges = {
        field: pe.Node(Merge(n, no_flatten=field != "dof"), name=f"merge_{field}", run_without_submitting=True)
        for field in ("effect_maps", "variance_maps", "contrast_names", "dof", "roi_tsv", "mask")
    }
    fixed = pe.Node(FixedEffects(), name="fixed_effects", mem_gb=0.5)
    subject_wf.add_nodes([workflow])
    workflow.connect([
        (merges["effect_maps"], fixed, [("out", "effect_maps")]),
        (merges["variance_maps"], fixed, [("out", "variance_maps")]),
        (merges["contrast_names"], fixed, [("out", "contrast_names")]),
        (merges["dof"], fixed, [("out", "dofs")]),
        (merges["roi_tsv"], fixed, [("out", "roi_tables")]),
        (merges["mask"], fixed, [("out", "brain_masks")]),
    ])
    for k, (run, run_wf) in enumerate(members, start=1):
        for field in ("effect_maps", "variance_maps", "contrast_names", "dof", "roi_tsv"):
            subject_wf.connect(run_wf, f"activation.{field}", workflow, f"merge_{field}.in{k}")
        setattr(merges["mask"].inputs, f"in{k}", run.mask)
    sinks = _Sinks(workflow, session, ctx)
    sinks.sources = sorted({p for run in runs for p in (run.bold, run.mask, run.confounds, run.events) if p})
    config: AnalysisConfig = ctx["config"]
    meta = {"Level": "session", "Runs": [run.name for run in runs],
            "TaskConfig": config.tasks[first.task].model_dump(mode="json")}
    for stat in ("effect", "variance", "z"):
        sinks.add(f"fixed_{stat}_maps", fixed, f"{stat}_maps", "statmap", ".nii.gz", from_filename=True,
                  metadata=meta, meta_from=(fixed, "meta_json"))
    sinks.add("fixed_roi_contrasts", fixed, "roi_tsv", "contrasts", ".tsv",
              entities={"atlas": config.circuit.name, "stat": "effect"}, metadata=meta,
              meta_from=(fixed, "meta_json"))
