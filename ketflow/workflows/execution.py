"""Running a Nipype workflow with ketflow's execution settings and collecting failures."""

from __future__ import annotations

import getpass
import logging
import os
import subprocess
import time
from pathlib import Path

LOGGER = logging.getLogger("ketflow")

#: Plugins whose ``run()`` returns once jobs are submitted, before they finish.
ASYNCHRONOUS_PLUGINS = {"SLURMGraph", "SGEGraph", "PBSGraph", "CondorDAGMan"}


def plugin_settings(opts) -> tuple[str, dict]:
    """Nipype plugin name and arguments from the CLI options.

    ``--nprocs``/``--mem-gb`` become MultiProc's ``n_procs``/``memory_gb`` (so the scheduler
    never runs more than fits); a ``--plugin-args`` file overrides or adds arguments.
    """
    args: dict = {}
    if opts.plugin in ("MultiProc", "LegacyMultiProc"):
        args["n_procs"] = opts.nprocs
        if opts.mem_gb:
            args["memory_gb"] = opts.mem_gb
        args["raise_insufficient"] = False
    args.update(opts.plugin_args_dict)
    if opts.plugin.startswith("SLURM"):
        os.environ.setdefault("LOGNAME", getpass.getuser())  # nipype's SLURM plugins read it
    return opts.plugin, args


def run_workflow(workflow, opts, crash_dir: Path) -> list[Path]:
    """Run ``workflow``; return the crash files it left (empty when every node succeeded)."""
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
    started = time.time()
    LOGGER.info("running %s with the %s plugin %s", workflow.name, plugin, plugin_args or "")
    try:
        workflow.run(plugin=plugin, plugin_args=plugin_args)
    except RuntimeError as err:
        LOGGER.error("some nodes failed: %s", err)
    if plugin in ASYNCHRONOUS_PLUGINS:
        _wait_for_cluster_jobs(plugin)
    return sorted(p for p in crash_dir.glob("crash-*") if p.stat().st_mtime >= started - 1)


def _wait_for_cluster_jobs(plugin: str, poll_s: float = 2.0) -> None:
    """Block until this user's jobs have left the queue (graph plugins submit and return)."""
    if not plugin.startswith("SLURM"):
        return
    user = getpass.getuser()
    while True:
        out = subprocess.run(["squeue", "-h", "-u", user], capture_output=True, text=True, check=False)
        if out.returncode != 0 or not out.stdout.strip():
            return
        time.sleep(poll_s)
