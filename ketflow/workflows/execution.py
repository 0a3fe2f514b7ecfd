"""Running a Nipype workflow with ketflow's execution settings.

* plugin arguments from the command line (:func:`plugin_settings`);
* threads per process (``--omp-nthreads``): every process the workflow starts (MultiProc
  workers, cluster jobs, nodes run in the main process) has its BLAS/OpenMP thread pools
  limited to that number (:func:`thread_limits`), and multithreaded nodes reserve that many
  processor slots (``node.n_procs``, which MultiProc honours and which becomes
  ``--cpus-per-task`` of their SLURM jobs);
* a progress log naming each node as it starts, finishes or fails (:class:`ProgressLog`),
  also written to ``output_dir/logs/ketflow-<workflow>-<time>.log``;
* graph cluster plugins (``SLURMGraph``), whose ``run()`` returns once the jobs are
  submitted: wait until this workflow's own jobs have left the queue;
* failures: the crash files the run left and the node each one is about (:func:`crash_info`).
"""

from __future__ import annotations

import contextlib
import gc
import getpass
import logging
import os
import re
import subprocess
import time
from pathlib import Path

from nipype.pipeline.plugins import multiproc
from threadpoolctl import threadpool_limits

LOGGER = logging.getLogger("ketflow")

#: Plugins whose ``run()`` returns once jobs are submitted, before they finish.
ASYNCHRONOUS_PLUGINS = {"SLURMGraph", "SGEGraph", "PBSGraph", "CondorDAGMan"}

#: Environment variables read by OpenMP, OpenBLAS, MKL, Accelerate and numexpr at start-up.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                    "NUMEXPR_NUM_THREADS")

#: squeue states of jobs that will never run because a job they depend on failed.
_NEVER_RUNS = "DependencyNeverSatisfied"


def plugin_settings(opts) -> tuple[str, dict]:
    """Nipype plugin name and arguments from the CLI options.

    ``--nprocs``/``--mem-gb`` become MultiProc's ``n_procs``/``memory_gb`` (so the scheduler
    never runs more than fits); ``SLURMGraph`` does not resubmit nodes that finished in an
    earlier run of the same work directory; a ``--plugin-args`` file overrides or adds arguments.
    """
    args: dict = {}
    if opts.plugin in ("MultiProc", "LegacyMultiProc"):
        args["n_procs"] = opts.nprocs
        if opts.mem_gb:
            args["memory_gb"] = opts.mem_gb
        args["raise_insufficient"] = False
    if opts.plugin == "SLURMGraph":
        args["dont_resubmit_completed_jobs"] = True
    args.update(opts.plugin_args_dict)
    if opts.plugin.startswith("SLURM"):
        os.environ.setdefault("LOGNAME", getpass.getuser())  # nipype's SLURM plugins read it
    return opts.plugin, args


@contextlib.contextmanager
def thread_limits(n_threads: int):
    """Limit BLAS/OpenMP threads to ``n_threads`` in this process and every process it starts.

    The environment variables reach processes that import NumPy afresh (spawned workers,
    cluster jobs, which inherit ``sbatch``'s environment); threadpoolctl limits the pools
    already loaded here, which forked MultiProc workers inherit.  Both are restored on exit.
    """
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update({name: str(n_threads) for name in THREAD_VARIABLES})
    try:
        with threadpool_limits(limits=n_threads):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def all_nodes(workflow) -> list:
    """Every node of ``workflow``, nested workflows included."""
    return [workflow.get_node(name) for name in workflow.list_node_names()]


def executed_nodes(workflow) -> list:
    """The nodes that run: all but the stage workflows' ``inputnode``/``outputnode`` (identity
    interfaces, which Nipype removes from the graph it executes)."""
    from nipype.interfaces.utility import IdentityInterface

    return [node for node in all_nodes(workflow) if not isinstance(node.interface, IdentityInterface)]


def reserve_threads(workflow, n_threads: int, threaded: tuple[type, ...]) -> int:
    """Make nodes running one of the ``threaded`` interfaces reserve ``n_threads`` slots.

    MultiProc counts ``node.n_procs`` against ``--nprocs``; :func:`run_workflow` turns it into
    ``--cpus-per-task`` on SLURM.  Returns how many nodes were marked.  Node hashes do not
    depend on it, so changing ``--omp-nthreads`` keeps cached results.
    """
    marked = 0
    for node in all_nodes(workflow):
        if isinstance(node.interface, threaded):
            node.n_procs = n_threads
            marked += 1
    return marked


def _slurm_cpus_per_task(workflow) -> None:
    """Ask SLURM for ``n_procs`` CPUs for every node that reserves more than one."""
    for node in all_nodes(workflow):
        if node.n_procs > 1:
            # Nipype appends a node's sbatch_args to the global ones (SLURMGraph without a space).
            node.plugin_args = dict(node.plugin_args or {}, sbatch_args=f" --cpus-per-task={node.n_procs}")


def describe_node(fullname: str) -> str:
    """A readable name for a node: ``sub-01 ses-pre task-faces: denoise_wf.denoise``.

    Decodes ketflow's subject and run workflow names (``single_subject_<label>_wf``, then
    ``ses_<s>_task_<t>_wf``); the stage workflows below them are kept, joined to the node by
    dots; other names are kept as they are.
    """
    parts = fullname.split(".")[1:] or fullname.split(".")
    words, path = [], []
    for k, part in enumerate(parts[:-1]):
        subject = re.fullmatch(r"single_subject_(.+)_wf", part)
        tokens = part[: -len("_wf")].split("_") if part.endswith("_wf") else []
        if subject:
            words.append(f"sub-{subject.group(1)}")
        elif k == 1 and words and tokens and len(tokens) % 2 == 0:  # the run workflow below the subject's
            words += [f"{key}-{value}" for key, value in zip(tokens[::2], tokens[1::2])]
        elif words:
            path.append(part)
        else:
            words.append(part)
    return (" ".join(words) + ": " if words else "") + ".".join(path + parts[-1:])


class ProgressLog:
    """Nipype ``status_callback`` logging every node that starts, finishes, is cached or fails.

    Output sinks (``ds_*``) are logged at DEBUG level only, to keep the log readable.
    """

    def __init__(self, n_nodes: int):
        self.n_nodes, self.n_done, self.started = n_nodes, 0, {}

    def __call__(self, node, status: str) -> None:
        name = node.fullname
        level = logging.DEBUG if node.name.startswith("ds_") else logging.INFO
        if status == "start":
            self.started[name] = time.monotonic()
            LOGGER.log(level, "[%d/%d] start  %s", self.n_done, self.n_nodes, describe_node(name))
            return
        self.n_done += 1
        began = self.started.pop(name, None)
        if status == "end":
            took = "cached" if began is None else f"{time.monotonic() - began:.1f} s"
            LOGGER.log(level, "[%d/%d] done   %s (%s)", self.n_done, self.n_nodes, describe_node(name), took)
        else:
            LOGGER.error("[%d/%d] FAILED %s (its crash file is in logs/crash/)", self.n_done, self.n_nodes,
                         describe_node(name))


@contextlib.contextmanager
def _log_file(path: Path):
    """Copy ketflow's log records (not Nipype's) to ``path`` while the block runs."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    handler.setLevel(logging.DEBUG)
    LOGGER.addHandler(handler)
    try:
        yield
    finally:
        LOGGER.removeHandler(handler)
        handler.close()


class MultiProcPlugin(multiproc.MultiProcPlugin):
    """Nipype's MultiProc, with the objects that exist when it starts frozen for the garbage
    collector (``gc.freeze``) while it runs.

    MultiProc calls ``gc.collect()`` before every round of submissions and after every node run
    in the main process (the output sinks); scanning the main process's ~300,000 objects (BIDS
    layout, workflow graphs, libraries), none of them garbage, took 0.2-0.4 s per call, over
    30 s per subject, during which no job was sent to the idle workers (docs/performance.md).
    """

    def run(self, graph, config, updatehash=False):
        gc.freeze()
        try:
            return super().run(graph, config, updatehash=updatehash)
        finally:
            gc.unfreeze()


def run_workflow(workflow, opts, crash_dir: Path) -> list[Path]:
    """Run ``workflow``; return the crash files it left (empty when every node succeeded).

    Blocks until every node has run, also with graph cluster plugins.  The log of the run
    goes to ``crash_dir/../ketflow-<workflow>-<time>.log`` as well.
    """
    crash_dir.mkdir(parents=True, exist_ok=True)
    workflow.base_dir = str(opts.work_dir)
    workflow.config["execution"].update(
        {
            "crashdump_dir": str(crash_dir),
            "crashfile_format": "txt",
            "stop_on_first_crash": opts.stop_on_first_crash,
            "remove_unnecessary_outputs": False,
            "poll_sleep_duration": 0.2,
        }
    )
    workflow.config["monitoring"] = {"enabled": False}
    plugin, plugin_args = plugin_settings(opts)
    n_nodes = len(executed_nodes(workflow))
    if plugin.startswith("SLURM"):
        _slurm_cpus_per_task(workflow)
    if plugin not in ASYNCHRONOUS_PLUGINS:  # graph plugins do not call it
        plugin_args = dict(plugin_args, status_callback=ProgressLog(n_nodes))
    log_path = crash_dir.parent / f"ketflow-{workflow.name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    started = time.time()
    with _log_file(log_path), thread_limits(opts.omp_nthreads):
        LOGGER.info("running %s (%d nodes) with the %s plugin %s, at most %d thread(s) per process; log: %s",
                    workflow.name, n_nodes, plugin,
                    {k: v for k, v in plugin_args.items() if k != "status_callback"} or "", opts.omp_nthreads,
                    log_path)
        failure = None
        try:
            runner = MultiProcPlugin(plugin_args=plugin_args) if plugin == "MultiProc" else plugin
            workflow.run(plugin=runner, plugin_args=plugin_args)
        except Exception as err:  # a failed node (the Linear plugin re-raises its own exception)
            failure = err
        if plugin in ASYNCHRONOUS_PLUGINS:
            _wait_for_cluster_jobs(plugin, Path(opts.work_dir) / workflow.name / "batch")
        crash_files = sorted(p for p in crash_dir.glob("crash-*") if p.stat().st_mtime >= started - 1)
        if failure is not None and not crash_files:
            raise failure  # not a node failure: a problem of the workflow itself
        for path in crash_files:
            node, error = crash_info(path)
            LOGGER.error("FAILED %s: %s (crash file %s)", describe_node(node), error, path)
    return crash_files


def crash_info(path: Path) -> tuple[str, str]:
    """(node full name, last line of the error) of a Nipype text crash file."""
    lines = Path(path).read_text(errors="replace").splitlines()
    node = next((ln[len("Node: "):].strip() for ln in lines if ln.startswith("Node: ")), Path(path).name)
    errors = [ln.strip() for ln in lines if re.match(r"^\w[\w.]*(Error|Exception)\b", ln.strip())]
    return node, errors[-1] if errors else "see the crash file"


def cluster_jobs(batch_dir: Path) -> list[tuple[str, str, str]]:
    """(job id, state, reason) of this user's queued jobs whose batch script is in ``batch_dir``.

    Graph plugins write one batch script per node into the workflow's ``batch`` folder, so
    this picks out the jobs of this workflow and no other (``squeue %o`` is the script).
    Raises ``RuntimeError`` when ``squeue`` fails.
    """
    out = subprocess.run(["squeue", "-h", "-u", getpass.getuser(), "-o", "%i|%T|%r|%o"],
                         capture_output=True, text=True, check=False, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip() or f"squeue exited with status {out.returncode}")
    prefix = str(batch_dir.resolve()) + os.sep
    jobs = []
    for line in out.stdout.splitlines():
        job_id, state, reason, command = (line.split("|", 3) + ["", "", ""])[:4]
        if command.startswith(prefix):
            jobs.append((job_id, state, reason))
    return jobs


def _wait_for_cluster_jobs(plugin: str, batch_dir: Path, poll_s: float = 2.0, report_s: float = 60.0) -> None:
    """Block until this workflow's jobs have left the queue (graph plugins submit and return).

    Jobs that SLURM marks as waiting for a job that failed (``DependencyNeverSatisfied``) can
    never run: they are cancelled, which in turn makes their own dependents never-satisfied,
    and so on down the graph.  The failed node left a crash file.
    """
    if not plugin.startswith("SLURM"):
        LOGGER.warning("%s: cannot follow the jobs of this plugin; outputs appear as they finish", plugin)
        return
    failures, last_report = 0, 0.0
    while True:
        try:
            jobs = cluster_jobs(batch_dir)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
            failures += 1
            if failures >= 5:
                LOGGER.warning("cannot query the SLURM queue (%s); not waiting for the jobs any longer", err)
                return
            time.sleep(poll_s)
            continue
        failures = 0
        if not jobs:
            return
        never = [job for job, _, reason in jobs if reason == _NEVER_RUNS]
        if never:
            LOGGER.warning("cancelling %d SLURM job(s) that wait for a failed job: %s", len(never), " ".join(never))
            subprocess.run(["scancel", *never], capture_output=True, check=False, timeout=120)
        if time.monotonic() - last_report >= report_s:
            running = sum(state == "RUNNING" for _, state, _ in jobs)
            LOGGER.info("waiting for %d SLURM job(s) of this workflow (%d running)", len(jobs), running)
            last_report = time.monotonic()
        time.sleep(poll_s)
