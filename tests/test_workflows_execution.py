"""Execution settings: threads per process, reserved slots, node names, crash files, cluster jobs."""

from __future__ import annotations

import os
from argparse import Namespace

import pytest
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from nipype.pipeline.engine.utils import load_resultfile

from ketflow.workflows import execution
from ketflow.workflows.execution import (
    THREAD_VARIABLES,
    crash_info,
    describe_node,
    reserve_threads,
    run_workflow,
    thread_limits,
)


def _threads_in_worker(dummy):
    """Runs inside a Nipype worker: the BLAS thread counts and OMP_NUM_THREADS it sees."""
    import os

    import numpy  # noqa: F401 - loads the BLAS library
    from threadpoolctl import threadpool_info

    return [pool["num_threads"] for pool in threadpool_info()], os.environ.get("OMP_NUM_THREADS")


def _opts(tmp_path, **kw) -> Namespace:
    base = dict(work_dir=tmp_path / "work", stop_on_first_crash=False, plugin="MultiProc", plugin_args_dict={},
                nprocs=2, mem_gb=None, omp_nthreads=1)
    return Namespace(**{**base, **kw})


def test_workers_run_with_omp_nthreads_threads(tmp_path, monkeypatch):
    from threadpoolctl import threadpool_info

    monkeypatch.setenv("OMP_NUM_THREADS", "5")  # what a user's shell might say: overridden

    if not threadpool_info():
        pytest.skip("threadpoolctl finds no BLAS/OpenMP library to limit")
    workflow = pe.Workflow(name="threads_wf")
    probe = pe.Node(niu.Function(function=_threads_in_worker, input_names=["dummy"], output_names=["seen"]),
                    name="probe")
    probe.inputs.dummy = 1
    workflow.add_nodes([probe])
    before = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    crash = run_workflow(workflow, _opts(tmp_path, omp_nthreads=1), tmp_path / "logs" / "crash")
    assert crash == []
    result = load_resultfile(next((tmp_path / "work" / "threads_wf" / "probe").glob("result_*.pklz")))
    pools, omp = result.outputs.seen
    assert pools and set(pools) == {1}
    assert omp == "1"
    assert {name: os.environ.get(name) for name in THREAD_VARIABLES} == before  # lifted afterwards


def test_thread_limits_restore_the_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    with thread_limits(2):
        assert all(os.environ[name] == "2" for name in THREAD_VARIABLES)
    assert os.environ["OMP_NUM_THREADS"] == "7" and "MKL_NUM_THREADS" not in os.environ


def test_threaded_nodes_reserve_slots(tiny_bids, tmp_path):
    from ketflow.cli.parser import parse_args
    from ketflow.config import load_config
    from ketflow.workflows.base import THREADED_INTERFACES, init_ketflow_wf
    from ketflow.workflows.participant import discover_inputs, source_links

    from conftest import TINY_CONFIG

    opts = parse_args([str(tiny_bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work"),
                       "--participant-label", "01", "--session-label", "pre", "--config", str(TINY_CONFIG),
                       "--skip-bids-validation", "--nprocs", "3", "--omp-nthreads", "4"])
    config = load_config(opts.config)
    runs = discover_inputs(opts, config).runs
    workflow = init_ketflow_wf(runs, config, opts, source_links(opts))
    nodes = execution.all_nodes(workflow)
    threaded = [n for n in nodes if isinstance(n.interface, THREADED_INTERFACES)]
    assert {n.name for n in threaded} == {"denoise", "activation", "gppi", "connectivity"}
    assert {n.n_procs for n in threaded} == {3}  # --omp-nthreads, never above --nprocs
    assert {n.n_procs for n in nodes if n not in threaded} == {1}
    execution._slurm_cpus_per_task(workflow)
    assert {n.plugin_args["sbatch_args"] for n in threaded} == {" --cpus-per-task=3"}
    assert not any("sbatch_args" in (n.plugin_args or {}) for n in nodes if n not in threaded)


def test_reserve_threads_counts_marked_nodes():
    workflow = pe.Workflow(name="w")
    workflow.add_nodes([pe.Node(niu.IdentityInterface(fields=["a"]), name="ident"),
                        pe.Node(niu.Merge(2), name="merge")])
    assert reserve_threads(workflow, 2, (niu.Merge,)) == 1
    assert workflow.get_node("merge").n_procs == 2 and workflow.get_node("ident").n_procs == 1


@pytest.mark.parametrize("fullname, described", [
    ("ketflow_wf.single_subject_01_wf.ses_pre_task_faces_wf.denoise", "sub-01 ses-pre task-faces: denoise"),
    ("ketflow_wf.single_subject_01_wf.ses_pre_task_faces_wf.task_data_wf.task_data",
     "sub-01 ses-pre task-faces: task_data_wf.task_data"),
    ("ketflow_wf.single_subject_A2_wf.task_rest_run_2_wf.ds_timeseries", "sub-A2 task-rest run-2: ds_timeseries"),
    ("ketflow_group_wf.predict_change", "predict_change"),
])
def test_describe_node(fullname, described):
    assert describe_node(fullname) == described


def test_crash_info_reads_node_and_error(tmp_path):
    crash = tmp_path / "crash-1-root-rois-x.txt"
    crash.write_text("Node: ketflow_wf.single_subject_01_wf.ses_pre_task_rest_wf.rois\nWorking directory: /w\n\n"
                     "Node inputs:\n\nbold_ref = x\n\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
                     "ValueError: amygdala_L (0 voxels) has fewer than 1 voxels in the brain mask\n")
    assert crash_info(crash) == ("ketflow_wf.single_subject_01_wf.ses_pre_task_rest_wf.rois",
                                 "ValueError: amygdala_L (0 voxels) has fewer than 1 voxels in the brain mask")


def test_cluster_jobs_are_only_this_workflows(tmp_path, monkeypatch):
    batch = tmp_path / "work" / "ketflow_wf" / "batch"
    other = tmp_path / "elsewhere" / "batch"
    listing = "\n".join([
        f"11|RUNNING|None|{batch}/batchscript_pyscript_a.sh",
        f"12|PENDING|Dependency|{batch}/batchscript_pyscript_b.sh",
        f"13|RUNNING|None|{other}/batchscript_pyscript_a.sh",
        "14|PENDING|Priority|/home/user/my_job.sh",
    ])

    class Done:
        returncode, stdout, stderr = 0, listing, ""

    monkeypatch.setattr(execution.subprocess, "run", lambda *a, **k: Done())
    assert execution.cluster_jobs(batch) == [("11", "RUNNING", "None"), ("12", "PENDING", "Dependency")]


def test_jobs_waiting_for_a_failed_job_are_cancelled(tmp_path, monkeypatch):
    # SLURM marks only the direct dependents of a failed job; theirs follow once they are cancelled.
    queue = [[("21", "PENDING", "DependencyNeverSatisfied"), ("22", "PENDING", "Dependency"),
              ("23", "RUNNING", "None")],
             [("22", "PENDING", "DependencyNeverSatisfied"), ("23", "RUNNING", "None")],
             [("23", "RUNNING", "None")],
             []]
    calls = []
    monkeypatch.setattr(execution, "cluster_jobs", lambda _: queue.pop(0))
    monkeypatch.setattr(execution.subprocess, "run", lambda argv, **k: calls.append(argv))
    execution._wait_for_cluster_jobs("SLURMGraph", tmp_path / "batch", poll_s=0)
    assert calls == [["scancel", "21"], ["scancel", "22"]]
    assert queue == []  # waited until the running job had finished
