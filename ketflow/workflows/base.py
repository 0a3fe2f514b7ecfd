"""Top-level participant workflow: one sub-workflow per subject, one per run inside it.

``init_ketflow_wf`` → ``single_subject_<label>_wf`` → ``<ses>_<task>[_<run>]_wf`` per run
(runs are independent Nipype nodes, so MultiProc runs them in parallel).  Each run workflow
is assembled from the measure workflows of :mod:`ketflow.workflows.bold`.
"""

from __future__ import annotations

import json
from pathlib import Path

from nipype.pipeline import engine as pe

from ..config import AnalysisConfig
from ..io.bids import RunInputs
from ..io.write import write_json
from .bold import init_run_wf
from .screening import roi_definition, screen_runs

__all__ = ["init_ketflow_wf", "screen_runs", "write_run_specs"]


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
        for run in (r for r in runs if r.subject == subject):
            subject_wf.add_nodes([init_run_wf(run, context)])
        workflow.add_nodes([subject_wf])
    return workflow
