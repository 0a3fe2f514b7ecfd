"""ketflow on a real single-node SLURM cluster (slurmctld + slurmd + munge on localhost).

The participant level of one run of the tiny simulated dataset (sub-01, ses-pre, the resting
run: ROIs, denoising, ROI signals, connectivity and seed maps) goes through Nipype's
``SLURMGraph`` and ``SLURM`` plugins with the shipped ``scripts/slurm_plugin_args.yml``, and
through the shipped job-array scripts (``scripts/slurm_submit.sh``); every output must equal
that of a MultiProc run: TSV and JSON byte for byte, NIfTI data and affines exactly.
Skipped, with the reason, where the SLURM and munge daemons cannot be started (see
``tests/slurm_cluster.py``; ``scripts/test.sh`` installs them when it can).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from conftest import TINY_CONFIG, run_cli
from slurm_cluster import local_slurm, unavailable_reason

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))

REPO = Path(__file__).resolve().parents[1]
#: One run keeps the test short: every node is a job, and each job starts a Python process.
SELECTION = ["--participant-label", "01", "--session-label", "pre", "--task", "rest", "--config", TINY_CONFIG,
             "--skip-bids-validation"]


@pytest.fixture(scope="module")
def cluster():
    with local_slurm() as running:
        yield running


@pytest.fixture(scope="module")
def reference(tiny_bids, tmp_path_factory):
    """The MultiProc outputs of the selection."""
    root = tmp_path_factory.mktemp("slurm_reference")
    proc = run_cli(tiny_bids, root / "out", "participant", "-w", root / "work", "--nprocs", "2", *SELECTION)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root / "out"


def output_files(out: Path) -> set[Path]:
    """Relative paths of every output except logs (run logs, crash files)."""
    return {p.relative_to(out) for p in out.rglob("*") if p.is_file() and p.relative_to(out).parts[0] != "logs"}


def assert_same_outputs(expected: Path, actual: Path) -> None:
    files = output_files(expected)
    assert files == output_files(actual)
    assert any(f.name.endswith(".nii.gz") for f in files) and any(f.name.endswith(".tsv") for f in files)
    for rel in sorted(files):
        if rel.name.endswith((".tsv", ".json")):
            assert (expected / rel).read_bytes() == (actual / rel).read_bytes(), rel
        elif rel.name.endswith(".nii.gz"):
            a, b = nb.load(expected / rel), nb.load(actual / rel)
            assert np.array_equal(a.affine, b.affine), rel
            assert np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj)), rel


def wait_for_queue(cluster, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while cluster.run("squeue", "-h").stdout.strip():
        assert time.monotonic() < deadline, cluster.run("squeue").stdout
        time.sleep(1)


@pytest.mark.parametrize("plugin", ["SLURMGraph", "SLURM"])
def test_nipype_slurm_plugins_give_the_multiproc_outputs(plugin, cluster, reference, tiny_bids, tmp_path,
                                                         monkeypatch):
    for name, value in cluster.env.items():
        monkeypatch.setenv(name, value)
    out, work = tmp_path / "out", tmp_path / "work"
    proc = run_cli(tiny_bids, out, "participant", "-w", work, "--plugin", plugin,
                   "--plugin-args", REPO / "scripts" / "slurm_plugin_args.yml", *SELECTION)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + cluster.logs()
    # ketflow returned only after its jobs had left the queue, having run them on SLURM.
    assert cluster.run("squeue", "-h").stdout.strip() == ""
    assert len(list((work / "ketflow_wf" / "batch").glob("batchscript_*.sh"))) >= 4  # one per submitted node
    assert "sub-01 ses-pre task-rest: processed" in proc.stdout
    assert_same_outputs(reference, out)


def _job_times(cluster, job_id: str) -> list[tuple[str, str]]:
    """(StartTime, EndTime) of a finished job or of every task of an array job."""
    text = cluster.run("scontrol", "show", "job", job_id, "-o").stdout
    times = []
    for line in text.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        times.append((fields["StartTime"], fields["EndTime"]))
    return times


def test_job_array_and_dependent_group_job(cluster, reference, tiny_bids, tmp_path):
    """scripts/slurm_submit.sh: participant array (one task per subject), then the group job."""
    subjects = tmp_path / "subjects.txt"
    subjects.write_text("01\n")
    out = tmp_path / "out"
    env = dict(cluster.env, KETFLOW=f"{sys.executable} -m ketflow", KETFLOW_WORK_ROOT=str(tmp_path / "work"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               KETFLOW_SBATCH_ARGS="--mem=1G --cpus-per-task=2")
    submit = subprocess.run(["bash", str(REPO / "scripts" / "slurm_submit.sh"), str(tiny_bids), str(out),
                             str(subjects), *map(str, SELECTION[2:])],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False)
    assert submit.returncode == 0, submit.stdout + submit.stderr
    words = submit.stdout.split()
    array_id, group_id = words[words.index("job") + 1], words[words.index("job", words.index("job") + 1) + 1]
    wait_for_queue(cluster)

    task_log = (tmp_path / f"ketflow-{array_id}_1.out").read_text()
    assert "sub-01 ses-pre task-rest: processed" in task_log, task_log[-3000:]
    assert_same_outputs(reference, out)
    # The group job started only after the array task had ended, and ran ketflow's group level
    # on those outputs: one subject with one session is too few for the group models, a clear
    # input error (had it started first, it would have found no participant outputs at all).
    (_, array_end), = _job_times(cluster, array_id)
    (group_start, _), = _job_times(cluster, group_id)
    assert group_start >= array_end
    group_log = (tmp_path / f"ketflow-group-{group_id}.out").read_text()
    assert "ketflow: error: invalid inputs" in group_log, group_log[-3000:]
    assert "no participant-level outputs" not in group_log


def test_slurmgraph_failed_node_is_reported_and_its_dependents_cancelled(cluster, tiny_bids_copy, tmp_path,
                                                                         monkeypatch):
    from test_cli import corrupt_bold_crc

    corrupt_bold_crc(tiny_bids_copy, "rest")  # the resting run's BOLD cache node fails on the CRC
    for name, value in cluster.env.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "out"
    proc = run_cli(tiny_bids_copy, out, "participant", "-w", tmp_path / "work", "--plugin", "SLURMGraph",
                   "--plugin-args", REPO / "scripts" / "slurm_plugin_args.yml", *SELECTION)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    crash_files = sorted((out / "logs" / "crash").glob("crash-*.txt"))
    assert len(crash_files) == 1 and ".ses_pre_task_rest_wf.bold_cache" in crash_files[0].read_text()
    assert "sub-01 ses-pre task-rest: FAILED" in proc.stdout and f"crash file: {crash_files[0]}" in proc.stdout
    assert "that wait for a failed job" in proc.stdout  # the cache node's dependents could never run
    assert cluster.run("squeue", "-h").stdout.strip() == ""
