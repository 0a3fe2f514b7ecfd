"""Resource limits: ``--nprocs`` and ``--mem-gb`` reach Nipype's MultiProc scheduler, which then
never runs more work at once than they allow, and every node of the participant workflow
carries a memory estimate that scales with its run's data.

(Peak memory of a full-size participant run is measured by a benchmark, not here.)
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest
from nipype.pipeline import engine as pe
from nipype.pipeline.plugins import MultiProcPlugin

from ketflow.cli.parser import parse_args
from ketflow.config import load_config
from ketflow.io.bids import discover
from ketflow.workflows.base import init_ketflow_wf
from ketflow.workflows.bold import bold_memory_gb
from ketflow.workflows.execution import plugin_settings, run_workflow
from ketflow.workflows.participant import selected_tasks, source_links

from conftest import TINY_CONFIG

GIB = 2**30 / 1e9  # Nipype's mem_gb are GB


def options(bids: Path, tmp: Path, *extra: str):
    return parse_args([str(bids), str(tmp / "out"), "participant", "-w", str(tmp / "work"), *extra])


def test_nprocs_and_mem_gb_reach_the_multiproc_plugin(tiny_bids, tmp_path):
    plugin, args = plugin_settings(options(tiny_bids, tmp_path, "--nprocs", "3", "--mem-gb", "5.5"))
    scheduler = MultiProcPlugin(plugin_args=args)
    assert plugin == "MultiProc"
    assert (scheduler.processors, scheduler.memory_gb) == (3, 5.5)

    extra = tmp_path / "plugin.json"
    extra.write_text(json.dumps({"n_procs": 1, "maxtasksperchild": 1}))
    plugin, args = plugin_settings(options(tiny_bids, tmp_path, "--nprocs", "3", "--plugin-args", str(extra)))
    assert args["n_procs"] == 1 and args["maxtasksperchild"] == 1  # the file has the last word
    assert "memory_gb" not in args  # no --mem-gb: Nipype's default (90% of the machine's memory)


def _hold(tag: str, log_dir: str) -> str:
    """A node's work: record when it ran (start and end, ns) in ``log_dir``."""
    import time
    from pathlib import Path

    start = time.monotonic_ns()
    time.sleep(0.3)
    Path(log_dir, tag).write_text(f"{start} {time.monotonic_ns()}")
    return tag


def _most_at_once(log_dir: Path) -> int:
    """Largest number of recorded intervals that overlap."""
    edges = []
    for path in log_dir.iterdir():
        start, end = map(int, path.read_text().split())
        edges += [(start, 1), (end, -1)]
    running = most = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):  # an end before a start at the same instant
        running += step
        most = max(most, running)
    return most


@pytest.mark.parametrize("limits, allowed", [(("--nprocs", "3", "--mem-gb", "2.5"), 2),  # memory binds
                                             (("--nprocs", "1", "--mem-gb", "8"), 1)])  # processors bind
def test_the_scheduler_honours_nprocs_and_mem_gb(limits, allowed, tiny_bids, tmp_path):
    opts = options(tiny_bids, tmp_path, *limits)
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    workflow = pe.Workflow(name="limits_wf")
    for i in range(5):
        node = pe.Node(_function_interface(), name=f"job{i}", mem_gb=1.0)
        node.inputs.tag, node.inputs.log_dir = f"job{i}", str(log_dir)
        workflow.add_nodes([node])
    assert run_workflow(workflow, opts, tmp_path / "crash") == []
    assert len(list(log_dir.iterdir())) == 5
    assert _most_at_once(log_dir) <= allowed


def _function_interface():
    from nipype.interfaces.utility import Function

    return Function(input_names=["tag", "log_dir"], output_names=["tag"], function=_hold)


def _header_only_bold(path: Path, shape: tuple) -> Path:
    """A NIfTI file holding only a header of ``shape`` (enough for estimates read from it)."""
    header = nb.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    path.write_bytes(header.binaryblock + b"\0" * 4)
    return path


def test_nodes_carry_memory_estimates_that_scale_with_the_data(tiny_bids, tmp_path):
    config = load_config(TINY_CONFIG)
    opts = options(tiny_bids, tmp_path, "--participant-label", "01", "--session-label", "pre")
    found = discover(opts.bids_dir, opts.derivatives["fmriprep"], selected_tasks(opts, config), opts.space,
                     participant_labels=["01"], session_labels=["pre"])
    workflow = init_ketflow_wf(found.runs, config, opts, source_links(opts))
    nodes = {node.fullname: node for node in workflow._get_all_nodes()}
    faces = next(r for r in found.runs if r.task == "faces")
    bold = nb.load(faces.bold)
    in_mask = int((np.asanyarray(nb.load(faces.mask).dataobj) > 0).sum())
    held_gb = 4 * bold.shape[3] * in_mask / 1e9  # the (time, voxels) float32 matrix a BOLD node holds
    heavy = [n for name, n in nodes.items() if "task_faces" in name
             and name.rsplit(".", 1)[-1] in ("denoise", "activation", "gppi", "signals")]
    assert len(heavy) == 4
    for node in heavy:
        assert node.mem_gb >= held_gb
        assert node.mem_gb > 0.2  # more than Nipype's default guess
    assert all(0 < n.mem_gb < 1 for n in nodes.values())  # 6 mm, 80 volumes: small

    # A full-size run (2 mm MNI grid, 200 volumes): estimates grow with the data, and every
    # node still fits the 4 GiB target of a participant run, so --mem-gb 4 can schedule it.
    full = _header_only_bold(tmp_path / "bold.nii", (97, 115, 97, 200))
    run = faces.__class__(**{**faces.to_dict(), "bold": str(full), "n_volumes": 200})
    held_full = 4 * 200 * int(0.22 * 97 * 115 * 97) / 1e9  # an MNI brain mask fills ~22% of the grid
    for copies in (1.5, 2, 4):
        grown = bold_memory_gb(run, copies) - bold_memory_gb(faces, copies)
        assert grown >= held_full - held_gb
        assert bold_memory_gb(run, copies) <= 4 * GIB
