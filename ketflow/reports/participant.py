"""Participant HTML reports (``out/sub-<label>.html``) in the style of fMRIPrep/XCP-D.

The page is assembled by niworkflows' :class:`~niworkflows.reports.core.Report` from
ketflow's reports specification (``ketflow/data/reports/participant.yml``): sections per
subject (inputs summary, exclusions) and per session/task/run, each reportlet a pybids query
on ``out/sub-<label>/figures/``.  Two things are ketflow's own:

* the page template (``participant.tpl``): niworkflows' template pulls jQuery and Bootstrap
  from CDNs and would render unstyled offline, so ketflow's uses a vendored Bootstrap
  stylesheet copied next to the report and no JavaScript;
* :meth:`ParticipantReport.generate_report`: niworkflows reads one global
  ``logs/CITATION.*`` and crash files under ``sub-X/log/<uuid>/``; ketflow renders the
  methods of this participant's own workflow (the ``__desc__`` paragraphs of the stages its
  runs went through, :mod:`ketflow.reports.boilerplate`) with a sentence on the runs found in
  its outputs, the figures that could not be made and this subject's crash files from
  ``logs/crash/``.

Figures and HTML fragments come from the outputs (:mod:`ketflow.reports.reportlets`), so the
same code serves ``--reports-only``.  The figures are drawn by Nipype nodes, cached in the work
directory (:mod:`ketflow.workflows.reports`, which also assembles the pages with
:func:`build_subject_page`); the carpet plots read each run's BOLD cache in the work directory
when it is there instead of decompressing the BOLD series again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from pathlib import Path

import jinja2

from .. import __version__
from ..config import AnalysisConfig, ConfigError, load_config, packaged_file
from ..io.write import copy_file, write_text
from .boilerplate import data_sentence, methods_from_desc
from .outputs import find_runs
from .reportlets import ReportletError, write_if_changed, write_subject_fragments
from .summary import key_numbers_html

LOGGER = logging.getLogger("ketflow")

SPEC = "reports/participant.yml"
TEMPLATE = "reports/participant.tpl"
STYLESHEET = "reports/bootstrap.min.css"


def figures_layout_config() -> dict:
    """pybids configuration of report figures: niworkflows' plus ketflow's output entities."""
    from niworkflows import data

    config = json.loads(data.load("nipreps.json").read_text())
    config["name"] = "ketflow_figures"
    config["entities"] += [{"name": name, "pattern": rf"[_/\\]+{name}-([a-zA-Z0-9+]+)"}
                           for name in ("seg", "contrast", "stat")]
    return config


def _report_class():
    """:class:`ParticipantReport`, defined on first use (niworkflows takes seconds to import)."""
    from bids.layout import BIDSLayout, BIDSLayoutIndexer
    from niworkflows.reports.core import Report

    class ParticipantReport(Report):
        """niworkflows' Report with ketflow's layout configuration, session order and page context."""

        def __init__(self, out_dir: Path, subject: str, context: dict, session_order: list[str]):
            self.context = context
            self.session_order = list(session_order)
            super().__init__(out_dir, "ketflow", config=packaged_file(SPEC), subject_id=subject)

        def init_layout(self):
            # Only the figures folder is indexed (outputs under ses-*/func/ are not reportlets).
            ignore = [re.compile(r"/ses-[^/]+(/|$)"), re.compile(r"/(func|anat)(/|$)")]
            self.layout = BIDSLayout(self.root, config=[figures_layout_config()], validate=False,
                                     indexer=BIDSLayoutIndexer(validate=False, index_metadata=False, ignore=ignore))

        def _process_orderings(self, orderings, layout):
            entities, combos = Report._process_orderings(orderings, layout)
            if "session" in entities:  # configured sessions (baseline, follow-up) first, then the rest
                i = entities.index("session")
                rank = {s: k for k, s in enumerate(self.session_order)}
                combos.sort(key=lambda c: rank.get(c[i], len(rank)))
            return entities, combos

        def generate_report(self) -> int:
            env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(self.template_path.parent)),
                                     trim_blocks=True, lstrip_blocks=True,
                                     autoescape=False)  # noqa: S701 - reportlets are HTML; text is escaped in the template
            page = env.get_template(self.template_path.name).render(sections=self.sections, **self.context)
            write_text(self.out_dir / self.out_filename, page)
            return self.context["n_errors"]

    return ParticipantReport


def recorded_config(out_dir: Path, config: AnalysisConfig) -> AnalysisConfig:
    """The configuration that produced the outputs (``logs/config.json``), else ``config``.

    A report describes the analysis that was run; with ``--reports-only`` and another
    ``--config`` the recorded one is used, with a warning.
    """
    path = Path(out_dir) / "logs" / "config.json"
    if not path.is_file():
        return config
    try:
        recorded = load_config(path)
    except ConfigError as err:
        LOGGER.warning("cannot read the recorded configuration (%s); the report describes the given one", err)
        return config
    if recorded.digest() != config.digest():
        LOGGER.warning("the outputs in %s were made with configuration '%s' (%s), not the one given (%s); "
                       "the reports describe the recorded one", out_dir, recorded.name, recorded.digest()[:12],
                       config.digest()[:12])
    return recorded


def subject_crashes(out_dir: Path, subject: str) -> list[dict]:
    """Nipype crash files of ``sub-<subject>``'s nodes in ``logs/crash/`` (node, time, traceback)."""
    from niworkflows.utils.misc import read_crashfile

    crashes = []
    for path in sorted((Path(out_dir) / "logs" / "crash").glob("crash-*")):
        try:
            info = read_crashfile(str(path))
        except (OSError, RuntimeError, ValueError, IndexError) as err:
            info = {"node": "unknown", "traceback": f"crash file could not be read: {err}"}
        node = info.get("node") or ""
        if f"single_subject_{subject}_wf" not in node and f"sub-{subject}" not in info.get("traceback", ""):
            continue
        crashes.append({"file": str(path.relative_to(out_dir)), "node": node,
                        "when": time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime)),
                        "traceback": info.get("traceback", "")})
    return crashes


def build_subject_page(out_dir: Path, subject: str, config: AnalysisConfig, methods: str,
                       figure_errors: list[ReportletError]) -> Path:
    """HTML fragments and ``sub-<subject>.html`` of one subject whose figures are drawn; returns
    the page's path.

    ``methods``: the subject's methods text from its workflow (``__desc__`` paragraphs);
    ``figure_errors``: the figures that could not be made (listed in the page).
    """
    out_dir = Path(out_dir)
    runs = find_runs(out_dir, subject, session_order=[config.sessions.baseline, config.sessions.followup],
                     task_order=list(config.tasks))
    write_subject_fragments(out_dir, subject, runs, config, figure_errors)
    write_if_changed(out_dir / f"sub-{subject}" / "figures" / f"sub-{subject}_desc-keynumbers_bold.html",
                     key_numbers_html(out_dir, subject, config))
    css = out_dir / f"sub-{subject}" / "figures" / Path(STYLESHEET).name
    if not css.is_file() or css.read_bytes() != packaged_file(STYLESHEET).read_bytes():
        copy_file(packaged_file(STYLESHEET), css)
    contributed = [(r.entities.get("ses"), r.entities["task"], r.entities.get("run")) for r in runs]
    described = methods_from_desc(methods, data=data_sentence(contributed) if contributed else None, group=False)
    crashes = subject_crashes(out_dir, subject)
    context = {
        "subject": subject, "version": __version__, "config_name": config.name, "config_hash": config.digest(),
        "css_href": css.relative_to(out_dir).as_posix(),
        "methods_html": described.html(), "methods_markdown": described.markdown(),
        "figure_errors": figure_errors, "crashes": crashes, "n_errors": len(figure_errors) + len(crashes),
    }
    session_order = [config.sessions.baseline, config.sessions.followup]
    _report_class()(out_dir, subject, context, session_order).generate_report()
    return out_dir / f"sub-{subject}.html"


def page_inputs_digest(out_dir: Path, subject: str, config: AnalysisConfig, methods: str,
                       figure_errors: list[ReportletError]) -> str:
    """SHA-256 over everything ``sub-<subject>.html`` is made from: the subject's output files and
    figures (not the HTML fragments and stylesheet made from them; files under 1 MB by their
    content, as some are rewritten unchanged on every run, larger ones by size and modification
    time), the crash files, the methods text, the failed figures, the configuration, the
    ketflow version and the report's specification and template.  Equal digests: the page would come out the same."""
    out_dir = Path(out_dir)
    entries = []
    for path in sorted((out_dir / f"sub-{subject}").rglob("*")):
        if path.is_file() and not (path.parent.name == "figures" and path.suffix in (".html", ".css")):
            info = path.stat()
            stamp = (hashlib.sha256(path.read_bytes()).hexdigest() if info.st_size < 2**20
                     else f"{info.st_size}:{info.st_mtime_ns}")
            entries.append(f"{path.relative_to(out_dir)}:{stamp}")
    entries += [f"{p.name}:{p.stat().st_mtime_ns}" for p in sorted((out_dir / "logs" / "crash").glob("crash-*"))]
    entries += [__version__, config.digest(), methods, json.dumps([vars(e) for e in figure_errors], sort_keys=True)]
    entries += [hashlib.sha256(packaged_file(name).read_bytes()).hexdigest() for name in (SPEC, TEMPLATE)]
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()
