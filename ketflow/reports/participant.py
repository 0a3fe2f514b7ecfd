"""Participant HTML reports built from what is in the output directory.

Each ``sub-<label>.html`` shows the runs processed and excluded, every figure under
``sub-<label>/figures/`` grouped by session and task, and the methods boilerplate. Because
it reads only the output directory, the same code serves ``--reports-only``.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

import pandas as pd

from .. import __version__
from ..config import AnalysisConfig
from ..io.write import write_text
from .boilerplate import methods_text

LOGGER = logging.getLogger("ketflow")

_STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #345; padding-bottom: .3em; } h2 { color: #345; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; } td, th { border: 1px solid #ccc; padding: .25em .6em; }
th { background: #eef; } .figure { margin: 1em 0 2em; } .figure img, .figure object { max-width: 100%; }
.caption { font-size: .9em; color: #555; } .methods { background: #f7f7f7; padding: 1em; border-radius: 4px; }
.warning { color: #a40; }
"""


def build_reports(out_dir: Path, subjects: list[str], config: AnalysisConfig) -> int:
    """Write ``sub-<label>.html`` for every subject; returns the number of failed reports."""
    failures = 0
    for subject in subjects:
        try:
            write_text(Path(out_dir) / f"sub-{subject}.html", subject_report(Path(out_dir), subject, config))
        except (OSError, ValueError, pd.errors.ParserError) as err:
            LOGGER.error("report of sub-%s failed: %s", subject, err)
            failures += 1
    return failures


def subject_report(out_dir: Path, subject: str, config: AnalysisConfig) -> str:
    """The HTML text of one subject's report (figure links are relative to ``out_dir``)."""
    sub_dir = out_dir / f"sub-{subject}"
    outputs = sorted(p.relative_to(out_dir) for p in sub_dir.rglob("*") if p.is_file() and "figures" not in p.parts)
    parts = [f"<h1>ketflow report: sub-{html.escape(subject)}</h1>",
             f"<p>ketflow {__version__}; configuration '{html.escape(config.name)}' "
             f"(SHA-256 {config.digest()[:12]}).</p>",
             "<h2>Summary</h2>", _summary(outputs), "<h2>Exclusions</h2>", _exclusions(sub_dir, subject)]
    parts += _figures(out_dir, sub_dir)
    parts += ["<h2>Methods</h2>", f'<div class="methods"><pre>{html.escape(methods_text(config))}</pre></div>']
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>sub-{html.escape(subject)} - ketflow</title><style>{_STYLE}</style></head>"
            f"<body>\n{body}\n</body></html>\n")


def _summary(outputs: list[Path]) -> str:
    if not outputs:
        return '<p class="warning">No outputs were written for this subject.</p>'
    rows = "".join(f"<tr><td>{html.escape(str(p))}</td></tr>" for p in outputs if p.suffix != ".json")
    return f"<table><tr><th>Output files</th></tr>{rows}</table>"


def _exclusions(sub_dir: Path, subject: str) -> str:
    path = sub_dir / f"sub-{subject}_exclusions.tsv"
    if not path.is_file():
        return "<p>No exclusion record was found.</p>"
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if table.empty:
        return "<p>No run was excluded.</p>"
    return table.to_html(index=False, escape=True, border=0)


def _figures(out_dir: Path, sub_dir: Path) -> list[str]:
    figures = sorted((sub_dir / "figures").glob("*")) if (sub_dir / "figures").is_dir() else []
    figures = [f for f in figures if f.suffix in (".svg", ".png")]
    if not figures:
        return []
    parts = ["<h2>Figures</h2>"]
    for figure in figures:
        rel = figure.relative_to(out_dir).as_posix()
        tag = (f'<object type="image/svg+xml" data="{rel}"></object>' if figure.suffix == ".svg"
               else f'<img src="{rel}" alt="{html.escape(figure.stem)}">')
        parts.append(f'<div class="figure">{tag}<div class="caption">{html.escape(figure.name)}</div></div>')
    return parts
