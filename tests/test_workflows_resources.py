"""Resource limits: ``--nprocs`` and ``--mem-gb`` reach Nipype's MultiProc scheduler, which then
never runs more work at once than they allow, and every node of the participant workflow
carries a memory estimate that scales with its run's in-mask data.

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
from ketflow.workflows.bold import MEMORY_COPIES, bold_memory_gb
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


def _mask_filling(path: Path, shape: tuple, fraction: float) -> int:
    """A brain mask of ``shape`` with the first ``fraction`` of its voxels set; their number."""
    data = np.zeros(int(np.prod(shape)), np.uint8)
    data[: int(fraction * data.size)] = 1
    nb.Nifti1Image(data.reshape(shape), np.eye(4)).to_filename(path)
    return int(data.sum())


#: Copies of the run's (time, in-mask voxels) float32 matrix a node holds by construction: the
#: denoised output; the percent-scaled data (GLM, gPPI); the denoised data (connectivity).
HOLDS_THE_RUN = {"denoise": 1, "activation": 1, "gppi": 1, "connectivity": 1}


def test_nodes_carry_memory_estimates_that_scale_with_the_data(tiny_bids, tmp_path):
    config = load_config(TINY_CONFIG)
    opts = options(tiny_bids, tmp_path, "--participant-label", "01", "--session-label", "pre")
    found = discover(opts.bids_dir, opts.derivatives["fmriprep"], selected_tasks(opts, config), opts.space,
                     participant_labels=["01"], session_labels=["pre"])
    workflow = init_ketflow_wf(found.runs, config, opts, source_links(opts))
    nodes = {node.fullname: node for node in workflow._get_all_nodes()}
    faces = next(r for r in found.runs if r.task == "faces")
    in_mask = int((np.asanyarray(nb.load(faces.mask).dataobj) > 0).sum())
    held_gb = 4 * nb.load(faces.bold).shape[3] * in_mask / 1e9  # the run's (time, in-mask voxels) float32 matrix
    for name, copies in HOLDS_THE_RUN.items():
        found_nodes = [n for full, n in nodes.items() if full.rsplit(".", 1)[-1] == name]
        assert found_nodes, name
        for node in found_nodes:
            assert node.mem_gb >= 0.25 + copies * held_gb  # the Python process and what the node holds
    assert set(MEMORY_COPIES) <= {full.rsplit(".", 1)[-1] for full in nodes}
    assert all(0 < n.mem_gb < 1 for n in nodes.values())  # 6 mm, 80 volumes: small

    # A full-size run (2 mm MNI grid, 200 volumes, a brain mask filling 22% of the grid): the
    # estimates count its in-mask voxels, cover what each node holds, and the two largest fit
    # in 2 GB beside the main process (0.3 GB), so --mem-gb 2 runs two runs' nodes at once.
    shape = (97, 115, 97)
    full_bold = _header_only_bold(tmp_path / "bold.nii", shape + (200,))
    n_full = _mask_filling(tmp_path / "mask.nii.gz", shape, 0.22)
    run = faces.__class__(**{**faces.to_dict(), "bold": str(full_bold), "mask": str(tmp_path / "mask.nii.gz"),
                             "n_volumes": 200})
    held_full = 4 * 200 * n_full / 1e9
    estimates = {name: bold_memory_gb(run, copies) for name, copies in MEMORY_COPIES.items()}
    for name, estimate in estimates.items():
        assert estimate == pytest.approx(0.25 + MEMORY_COPIES[name] * held_full, abs=0.01)
        assert estimate >= 0.25 + HOLDS_THE_RUN.get(name, 0) * held_full
    assert sum(sorted(estimates.values())[-2:]) + 0.3 <= 2.0
