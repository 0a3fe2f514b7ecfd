"""Crash and resume: a participant run killed part-way (SIGKILL to its whole process group)
and rerun with the same command reuses the finished work and gives the outputs of an
uninterrupted run; the kill leaves no sidecar beside foreign data, and the rerun no temporary
files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import TINY_CONFIG, run_cli
from outputs import tree_differences

SELECTION = ("--participant-label", "01", "--session-label", "pre", "--task", "faces", "rest")
RUN_WF = Path("ketflow_wf") / "single_subject_01_wf"


def command(bids: Path, root: Path) -> list[str]:
    return [sys.executable, "-m", "ketflow", str(bids), str(root / "out"), "participant", "-w", str(root / "work"),
            "--skip-bids-validation", "--config", str(TINY_CONFIG), "--nprocs", "2", *SELECTION]


def node_results(work: Path) -> dict[Path, int]:
    """Nipype result file of every finished node -> its modification time (ns)."""
    return {p: p.stat().st_mtime_ns for p in (work / RUN_WF).rglob("result_*.pklz")}


def kill_part_way(cmd: list[str], work: Path, log: Path, timeout: float = 600) -> None:
    """Start ``cmd`` in its own process group; SIGKILL the group once the first outputs of the
    faces run were sunk (the ROI label image), while its models are still to be fitted."""
    trigger = work / RUN_WF / "ses_pre_task_faces_wf" / "derivatives_wf" / "ds_dseg" / "result_ds_dseg.pklz"
    env = dict(os.environ, NIPYPE_NO_ET="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    with open(log, "w") as handle:
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not trigger.exists():
            assert proc.poll() is None, f"the run ended before it could be killed:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "the run did not reach the trigger node"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_killed_run_resumes_from_the_work_directory(tiny_bids, tmp_path):
    reference = tmp_path / "reference"
    proc = run_cli(*command(tiny_bids, reference)[3:])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    done = node_results(reference / "work")

    killed = tmp_path / "killed"
    kill_part_way(command(tiny_bids, killed), killed / "work", tmp_path / "killed.log")
    finished = node_results(killed / "work")
    assert finished and len(finished) < len(done), "the kill should come after some nodes and before others"

    out = killed / "out"
    for sidecar in out.rglob("sub-01_*.json"):  # a provenance sidecar is never left beside other data
        if "GeneratedBy" in json.loads(sidecar.read_text()):
            stem = sidecar.name[: -len(".json")]
            assert [p for p in sidecar.parent.glob(stem + ".*") if p != sidecar], f"{sidecar} without its data"

    again = run_cli(*command(tiny_bids, killed)[3:])
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    after = node_results(killed / "work")
    assert {p: after.get(p) for p in finished} == finished  # finished nodes were reused, not rerun
    assert len(after) == len(done)
    assert [p for p in out.rglob("*") if p.name.endswith(".part")] == []
    assert tree_differences(reference / "out", out) == []
