"""The participant level: validate and discover inputs, build and run the workflow, summarise.

Nothing is written to the output directory until every input has been checked, so a bad
invocation leaves no half-written outputs behind.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from ..config import AnalysisConfig
from ..io.bids import Discovery, InputError, discover, strip_prefix
from ..io.derivatives import BIDSIGNORE, dataset_description
from ..io.bids import RunInputs
from ..io.write import remove_partial_files, write_json, write_text, write_tsv
from ..reports.boilerplate import methods_from_desc
from .base import group_desc, init_ketflow_wf, intro_desc, screen_runs, subject_boilerplate
from .bold import bold_cache_file, run_wf_name
from .execution import crash_info, run_workflow

LOGGER = logging.getLogger("ketflow")


def selected_tasks(opts, config: AnalysisConfig) -> dict[str, str]:
    """Task label -> kind ('task'/'rest') of the configured tasks, filtered by ``--task``."""
    labels = opts.task or list(config.tasks)
    return {label: config.tasks[label].type for label in labels}


def source_links(opts) -> dict[str, Path]:
    """Dataset names used in BIDS URIs: ``raw`` and each derivatives dataset."""
    return {"raw": opts.bids_dir, **{name: Path(path) for name, path in opts.derivatives.items()}}


def validate_bids(bids_dir: Path) -> None:
    """Run the BIDS validator on the raw dataset (errors only), as fMRIPrep does."""
    # Installed with ketflow, the validator sits next to the interpreter even when that
    # environment's bin/ folder is not on PATH.
    validator = shutil.which("bids-validator-deno") or shutil.which(
        "bids-validator-deno", path=str(Path(sys.executable).parent))
    if validator is None:
        LOGGER.warning("bids-validator-deno is not installed: skipping BIDS validation "
                       "(pip install bids-validator-deno, or pass --skip-bids-validation)")
        return
    LOGGER.info("validating %s with the BIDS validator", bids_dir)
    try:
        result = subprocess.run([validator, "--ignoreWarnings", "--datasetTypes", "raw", str(bids_dir)],
                                capture_output=True, text=True, timeout=600, check=False)
    except subprocess.TimeoutExpired:
        LOGGER.warning("the BIDS validator did not finish within 10 minutes: skipping validation")
        return
    if result.returncode != 0:
        raise InputError([f"{bids_dir}: the BIDS validator reports errors (use --skip-bids-validation to "
                          f"proceed anyway):\n{result.stdout.strip()[-4000:]}"])


def discover_inputs(opts, config: AnalysisConfig) -> Discovery:
    """Validate (unless skipped) and discover every run to process; raises InputError."""
    if not opts.skip_bids_validation:
        validate_bids(opts.bids_dir)
    return discover(
        opts.bids_dir,
        opts.derivatives["fmriprep"],
        tasks=selected_tasks(opts, config),
        space=opts.space,
        participant_labels=opts.participant_label,
        session_labels=opts.session_label,
        bids_filters=opts.bids_filter_file_dict,
        exclude=(opts.output_dir, opts.work_dir),
    )


def init_output_dataset(out_dir: Path, opts, config: AnalysisConfig, citation: str) -> None:
    """``dataset_description.json``, ``.bidsignore``, resolved config and methods boilerplate."""
    write_json(out_dir / "dataset_description.json", dataset_description(source_links(opts), out_dir))
    write_text(out_dir / ".bidsignore", BIDSIGNORE)
    write_text(out_dir / "logs" / "config.json", config.to_json())  # the bytes config.digest() hashes
    write_text(out_dir / "logs" / "CITATION.md", citation)


def citation_text(workflow, config: AnalysisConfig) -> str:
    """``logs/CITATION.md``: the methods gathered from the workflow that runs (fMRIPrep's way)."""
    desc = workflow.visit_desc() if workflow is not None else intro_desc(config) + group_desc(config)
    return methods_from_desc(desc).markdown()


def report_inputs(workflow, runs: list[RunInputs], subjects: list[str], config: AnalysisConfig,
                  work_dir) -> tuple[dict, dict]:
    """What the reports take from the workflow: each subject's methods text (its stages'
    descriptions) and each run's BOLD cache in the work directory (the carpet plots read it)."""
    processed = {run.subject for run in runs}
    methods = {s: subject_boilerplate(workflow, s) if s in processed else intro_desc(config) for s in subjects}
    caches = {str(Path(run.bold).resolve()): str(bold_cache_file(work_dir, run)) for run in runs}
    return methods, caches


def run_participant_level(opts, config: AnalysisConfig) -> int:
    """Run the participant level; returns the exit status (0 success, 1 any failure)."""
    from .reports import run_reports

    discovery = discover_inputs(opts, config)
    tasks = list(selected_tasks(opts, config))
    runs, exclusions = screen_runs(discovery.runs, config)
    LOGGER.info("found %d run(s) of %d subject(s); %d excluded before processing",
                len(discovery.runs), len(discovery.subjects), len(exclusions))
    out_dir = opts.output_dir
    workflow = init_ketflow_wf(runs, config, opts, source_links(opts)) if runs else None
    if opts.boilerplate_only:
        write_text(out_dir / "logs" / "CITATION.md", citation_text(workflow, config))
        print(f"Methods boilerplate written to {out_dir / 'logs' / 'CITATION.md'}")
        return 0
    methods, caches = report_inputs(workflow, runs, discovery.subjects, config, opts.work_dir)
    if opts.reports_only:
        return 1 if run_reports(out_dir, discovery.subjects, config, opts, methods=methods, bold_caches=caches) else 0

    for path in remove_partial_files(out_dir, discovery.subjects):
        LOGGER.info("removed %s, left by an interrupted run", path)
    init_output_dataset(out_dir, opts, config, citation_text(workflow, config))
    _write_exclusions(out_dir, discovery, exclusions, opts.session_label, tasks)
    crash_files: list[Path] = []
    if workflow is not None:
        crash_files = run_workflow(workflow, opts, out_dir / "logs" / "crash")
    else:
        LOGGER.warning("no run left to process after exclusions")

    report_status = run_reports(out_dir, discovery.subjects, config, opts, methods=methods, bold_caches=caches)
    # Exclusion is not failure (docs/inputs.md): a subject every run of which a quality-control
    # rule excluded is reported as excluded and the status stays 0, so that one high-motion
    # participant does not fail a SLURM array task and hold back the group job (afterok).
    unprocessed = sorted(set(discovery.subjects) - {r.subject for r in runs})
    _print_summary(out_dir, runs, exclusions + discovery.skipped, crash_files, unprocessed,
                   stopped=bool(crash_files) and opts.stop_on_first_crash)
    return 1 if crash_files or report_status else 0


EXCLUSION_COLUMNS = ["subject", "session", "task", "run", "reason"]


def _write_exclusions(out_dir: Path, discovery: Discovery, exclusions: list[dict], session_labels, tasks) -> None:
    """Per-subject ``sub-X_exclusions.tsv`` (always written, possibly empty) listing skipped inputs.

    Records of sessions or tasks outside this invocation's selection (``--session-label``,
    ``--task``) that an earlier run wrote are kept; those inside it are replaced.
    """
    records = exclusions + discovery.skipped
    table = pd.DataFrame.from_records(records, columns=EXCLUSION_COLUMNS).astype(object)
    sessions = {strip_prefix(s, "ses") for s in session_labels} if session_labels else None
    for subject in discovery.subjects:
        path = out_dir / f"sub-{subject}" / f"sub-{subject}_exclusions.tsv"
        rows = table[table["subject"] == subject].drop(columns="subject")
        if path.is_file():
            earlier = pd.read_csv(path, sep="\t", dtype=str, na_values=["n/a"], keep_default_na=False)
            outside = ~earlier["task"].isin(tasks)
            if sessions is not None:
                outside |= ~earlier["session"].isin(sessions)
            rows = pd.concat([earlier[outside], rows.astype(str).where(rows.notna())], ignore_index=True)
        rows = rows.sort_values(["session", "task", "run"], na_position="first", kind="stable")
        write_tsv(path, rows[EXCLUSION_COLUMNS[1:]])
    for record in records:
        LOGGER.warning("excluded sub-%s ses-%s task-%s: %s", record["subject"], record.get("session"),
                       record.get("task"), record["reason"])


def _print_summary(out_dir: Path, runs, exclusions, crash_files, unprocessed, stopped: bool = False) -> None:
    """Print one line per run: processed, FAILED (node, error, crash file) or excluded.

    ``unprocessed``: subjects every run of which was excluded (not a failure); ``stopped``: the run stopped at
    its first crash, so other runs may be unfinished.
    """
    crashes = [(path, *crash_info(path)) for path in crash_files]
    body, n_failed, claimed = [], 0, set()
    for run in runs:
        inside = f".single_subject_{run.subject}_wf.{run_wf_name(run)}."
        failed = [(path, node, error) for path, node, error in crashes if inside in node]
        label = run.name.replace("_", " ")
        ok = "unfinished (stopped at the first crash)" if stopped else "processed"
        body.append(f"  {label}: " + ("FAILED" if failed else ok))
        n_failed += bool(failed)
        for path, node, error in failed:
            body.append(f"      node {node.rsplit('.', 1)[-1]}: {error}\n      crash file: {path}")
            claimed.add(path)
    body += [f"  FAILED {node}: {error}\n      crash file: {path}" for path, node, error in crashes
             if path not in claimed]
    for record in exclusions:
        label = " ".join(f"{key}-{record[k]}" for key, k in (("sub", "subject"), ("ses", "session"),
                                                             ("task", "task"), ("run", "run")) if record.get(k))
        body.append(f"  {label}: excluded ({record['reason']})")
    lines = [f"ketflow participant level: {len(runs) - n_failed} run(s) {'unfinished' if stopped else 'processed'}, "
             f"{n_failed} failed, "
             f"{len(exclusions)} excluded or absent.", *body]
    if crash_files:
        lines.append(f"{len(crash_files)} node(s) FAILED; crash files in {out_dir / 'logs' / 'crash'}")
    for subject in unprocessed:
        lines.append(f"sub-{subject}: EXCLUDED, every run was excluded by a quality-control rule (docs/inputs.md) "
                     f"and nothing was processed; reasons in "
                     f"{out_dir / f'sub-{subject}' / f'sub-{subject}_exclusions.tsv'} (an exclusion, not a failure)")
    lines.append(f"Outputs: {out_dir}; logs: {out_dir / 'logs'}")
    print("\n".join(lines))
