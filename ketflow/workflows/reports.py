"""The participant reports' figures as Nipype nodes, and the pages assembled from them.

Each figure of each run (:func:`ketflow.reports.reportlets.figure_jobs`) is one node of
``ketflow_reports_wf``, built from the outputs once the participant workflow has written
them (the same graph serves ``--reports-only``).  A node hashes the files its figure reads,
so a rerun draws again only the figures whose inputs changed, in parallel with the same
plugin settings as the participant workflow, and the progress log names each one.  A node
draws into its own working directory and copies the SVG into ``sub-X/figures/``; after the
graph has run, :func:`collect_figures` puts back any figure missing from the output folder
from the node's copy and gathers the figures that could not be made (shown in the page).

The pages are then assembled one subject after another with a progress line each
(``[3/6] report sub-03``); a page whose figures, fragments, methods and crash files did not
change since it was written is left as it is.
"""

from __future__ import annotations

import json
import logging
import re
import time
from copy import deepcopy
from dataclasses import dataclass
from types import SimpleNamespace
from pathlib import Path

import jinja2
from nipype import config as nipype_config
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from ..config import AnalysisConfig
from ..io.write import copy_file
from ..reports.outputs import RunOutputs, find_runs
from ..reports.participant import build_subject_page, page_inputs_digest, recorded_config
from ..reports.reportlets import FigureJob, ReportletError, figure_jobs, ppi_contrasts_of

LOGGER = logging.getLogger("ketflow")

#: Name of the reports workflow in the work directory.
REPORTS_WF = "ketflow_reports_wf"
#: What each figure node leaves in its working directory besides the SVG.
RECORD = "figure.json"


@dataclass
class FigureNode:
    """A figure to draw: its run, its job and the node drawing it."""

    subject: str
    run: RunOutputs
    job: FigureJob
    node: pe.Node
    folder: str  #: the node's working directory, relative to the work directory


def _draw_report_figure(out_dir, subject, run_entities, figure, in_files, bold_cache_dir, bold_cache_name,
                        ppi_contrasts):
    """Nipype function node: draw figure ``figure`` of a run into the working directory, copy it
    to the output's figures folder, and record the outcome in ``figure.json``.

    The BOLD cache is given as folder and file name: Nipype hashes a string naming a file by
    the file's time stamp, and the figure must not become stale when the cache is remade or
    removed (the BOLD series it comes from is in ``in_files``)."""
    import json
    import os
    from pathlib import Path

    from ketflow.io.write import copy_file, write_json
    from ketflow.reports.outputs import find_runs
    from ketflow.reports.reportlets import draw, figure_jobs

    del in_files  # hashed by Nipype (a changed input draws the figure again); the job reads them
    run = next(r for r in find_runs(Path(out_dir), subject) if r.entities == run_entities)
    run.bold_cache = str(Path(bold_cache_dir) / bold_cache_name) if bold_cache_name else None
    contrasts = None if ppi_contrasts is None else set(ppi_contrasts)
    job = next(j for j in figure_jobs(run, Path(out_dir), contrasts) if j.path.name == figure)
    svg = Path(os.getcwd()) / figure
    error = draw(job, run, svg)
    job.path.unlink(missing_ok=True)
    if error is None:
        copy_file(svg, job.path)
    write_json(Path(os.getcwd()) / "figure.json",
               {"figure": str(job.path), "svg": str(svg) if error is None else None,
                "error": None if error is None else vars(error)})
    return json.dumps(error is None)


def _safe(text: str) -> str:
    """``text`` with every character Nipype does not accept in a name replaced by ``_``."""
    return re.sub(r"\W", "_", text)


def node_name(figure: Path) -> str:
    """A Nipype-safe node name for a figure file (its name without the subject and extension)."""
    return "fig_" + _safe(re.sub(r"^sub-[^_]+_", "", figure.name.removesuffix(".svg")))


def report_figure_nodes(out_dir: Path, subjects: list[str], config: AnalysisConfig,
                        bold_caches: dict[str, str] | None = None) -> list[FigureNode]:
    """One node per figure of every processed run of ``subjects`` found in ``out_dir``.

    ``bold_caches``: resolved BOLD path -> its in-mask cache in the work directory (the carpet
    plot reads it when it is there).  Only the cache's path is hashed: removing or remaking the
    cache does not make the figure stale (the BOLD series, which is hashed, does).
    """
    figures: list[FigureNode] = []
    order = dict(session_order=[config.sessions.baseline, config.sessions.followup], task_order=list(config.tasks))
    for subject in subjects:
        for run in find_runs(out_dir, subject, **order):
            bold = run.sources.get("bold")
            cache = (bold_caches or {}).get(str(bold.resolve())) if bold is not None else None
            contrasts = ppi_contrasts_of(run, config)
            for job in figure_jobs(run, out_dir, contrasts):
                node = pe.Node(niu.Function(function=_draw_report_figure, output_names=["drawn"],
                                            input_names=["out_dir", "subject", "run_entities", "figure", "in_files",
                                                         "bold_cache_dir", "bold_cache_name", "ppi_contrasts"]),
                               name=node_name(job.path))
                node.inputs.trait_set(out_dir=str(out_dir), subject=subject, run_entities=dict(run.entities),
                                      figure=job.path.name, in_files=sorted(str(p) for p in job.inputs),
                                      bold_cache_dir=str(Path(cache).parent) if cache else "",
                                      bold_cache_name=Path(cache).name if cache else "",
                                      ppi_contrasts=None if contrasts is None else sorted(contrasts))
                figures.append(FigureNode(subject, run, job, node, f"{REPORTS_WF}/{_subject_wf(subject)}/{node.name}"))
    return figures


def _subject_wf(subject: str) -> str:
    return f"sub_{_safe(subject)}_wf"


def up_to_date(item: FigureNode, work_dir: Path) -> bool:
    """True when the node drew this figure from these very inputs before (Nipype's own check,
    made here so that a rerun with nothing to draw starts no workflow at all)."""
    node = item.node
    node.base_dir = str((Path(work_dir) / item.folder).parent)
    node.config = deepcopy(nipype_config._sections)  # what a workflow gives its nodes when it runs
    try:
        cached, updated = node.is_cached()
    finally:
        node.base_dir, node._output_dir, node.config = None, None, None
    return cached and updated


def init_report_figures_wf(figures: list[FigureNode]) -> pe.Workflow:
    """``ketflow_reports_wf``: the figure nodes given, grouped by subject."""
    workflow = pe.Workflow(name=REPORTS_WF)
    by_subject: dict[str, pe.Workflow] = {}
    for item in figures:
        if item.subject not in by_subject:
            by_subject[item.subject] = pe.Workflow(name=_subject_wf(item.subject))
        by_subject[item.subject].add_nodes([item.node])
    workflow.add_nodes(list(by_subject.values()))
    return workflow


def collect_figures(work_dir: Path, figures: list[FigureNode]) -> dict[str, list[ReportletError]]:
    """After the reports workflow ran: subject -> figures that could not be made.

    A figure missing from the output folder (removed since its node last ran) is copied back
    from the node's working directory; a node that left no record (it did not run) counts as
    a figure that could not be made.
    """
    errors: dict[str, list[ReportletError]] = {}
    for item in figures:
        node_dir = Path(work_dir) / item.folder
        record_path = node_dir / RECORD
        record = json.loads(record_path.read_text()) if record_path.is_file() else None
        if record is None:
            error = ReportletError(item.run.label, item.job.what, item.job.path.name,
                                   "its node did not run (see the crash files)")
        elif record["error"] is not None:
            error = ReportletError(**record["error"])
        else:
            error = None
            if not item.job.path.is_file() and Path(record["svg"]).is_file():
                copy_file(Path(record["svg"]), item.job.path)
        if error is not None:
            errors.setdefault(item.subject, []).append(error)
    return errors


def assemble_reports(out_dir: Path, subjects: list[str], config: AnalysisConfig, *, methods: dict[str, str],
                     figure_errors: dict[str, list[ReportletError]], stamp_dir: Path) -> int:
    """Write ``sub-<label>.html`` of every subject (progress line each); returns the number that failed.

    A page whose inputs (:func:`~ketflow.reports.participant.page_inputs_digest`) are those it
    was last written from (the digest kept in ``stamp_dir``) is not written again.
    """
    failures = 0
    stamp_dir.mkdir(parents=True, exist_ok=True)
    for k, subject in enumerate(subjects, 1):
        started = time.monotonic()
        errors = figure_errors.get(subject, [])
        page = Path(out_dir) / f"sub-{subject}.html"
        stamp = stamp_dir / f"sub-{subject}.sha256"
        try:
            digest = page_inputs_digest(out_dir, subject, config, methods[subject], errors)
            if page.is_file() and stamp.is_file() and stamp.read_text() == digest:
                LOGGER.info("[%d/%d] report sub-%s: unchanged, kept %s", k, len(subjects), subject, page)
                continue
            LOGGER.info("[%d/%d] report sub-%s ...", k, len(subjects), subject)
            build_subject_page(out_dir, subject, config, methods[subject], errors)
            stamp.write_text(page_inputs_digest(out_dir, subject, config, methods[subject], errors))
            LOGGER.info("[%d/%d] report sub-%s written in %.1f s: %s", k, len(subjects), subject,
                        time.monotonic() - started, page)
        except (OSError, ValueError, KeyError, jinja2.TemplateError) as err:
            LOGGER.error("report of sub-%s failed: %s", subject, err)
            stamp.unlink(missing_ok=True)
            failures += 1
    return failures


def figure_options(opts):
    """The execution options of the figure nodes: the participant workflow's, except that
    cluster plugins become MultiProc (figures take seconds each: not worth a job each)."""
    if opts.plugin in ("Linear", "MultiProc", "LegacyMultiProc"):
        return opts
    return SimpleNamespace(**{**vars(opts), "plugin": "MultiProc", "plugin_args_dict": {}})


def run_reports(out_dir: Path, subjects: list[str], config: AnalysisConfig, opts, *, methods: dict[str, str],
                bold_caches: dict[str, str] | None = None) -> int:
    """Draw the figures (Nipype, cached in the work directory) and assemble every subject's page;
    returns the number of subjects whose report failed."""
    from .execution import run_workflow

    out_dir = Path(out_dir)
    if not (out_dir / "dataset_description.json").is_file():
        LOGGER.error("%s holds no ketflow outputs (no dataset_description.json): run the participant level "
                     "before building reports", out_dir)
        return len(subjects)
    config = recorded_config(out_dir, config)
    figures = report_figure_nodes(out_dir, subjects, config, bold_caches)
    stale = [item for item in figures if not up_to_date(item, Path(opts.work_dir))]
    LOGGER.info("report figures of %d subject(s): %d to draw, %d up to date", len(subjects), len(stale),
                len(figures) - len(stale))
    if stale:
        run_workflow(init_report_figures_wf(stale), figure_options(opts), out_dir / "logs" / "crash")
    errors = collect_figures(Path(opts.work_dir), figures)
    return assemble_reports(out_dir, subjects, config, methods=methods, figure_errors=errors,
                            stamp_dir=Path(opts.work_dir) / REPORTS_WF / "pages")

