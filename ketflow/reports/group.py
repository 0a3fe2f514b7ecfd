"""The group HTML report (``output_dir/group.html``), built from ``output_dir/group/``.

Sections: the feature table (subjects included and excluded, with reasons), one section per
prediction model (out-of-sample performance with intervals and permutation p-values,
retained features, figures), PEB over DCM, and links to every participant's report.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path

import pandas as pd

from .. import __version__
from ..config import AnalysisConfig
from ..io.write import write_text
from .participant import _STYLE

LOGGER = logging.getLogger("ketflow")


def _table(path: Path, columns: list[str] | None = None, rows: int | None = None) -> str:
    if not path.is_file():
        return f'<p class="warning">Missing: {html.escape(path.name)}</p>'
    table = pd.read_csv(path, sep="\t", keep_default_na=False, na_values=["n/a"])
    if columns:
        table = table[[c for c in columns if c in table.columns]]
    if rows:
        table = table.head(rows)
    if table.empty:
        return "<p>None.</p>"
    return table.to_html(index=False, float_format=lambda v: f"{v:.3g}", border=0, na_rep="n/a")


def _figures(out_dir: Path, pattern: str) -> str:
    parts = []
    for figure in sorted((out_dir / "group" / "figures").glob(pattern)):
        rel = figure.relative_to(out_dir).as_posix()
        parts.append(f'<div class="figure"><object type="image/svg+xml" data="{rel}"></object>'
                     f'<div class="caption">{html.escape(figure.name)}</div></div>')
    return "\n".join(parts)


def _performance(path: Path) -> str:
    if not path.is_file():
        return '<p class="warning">This model was not fitted (see the crash files in logs/crash/).</p>'
    perf = json.loads(path.read_text())
    rows = []
    for key, label in (("r2", "out-of-sample R²"), ("r", "prediction-observation r")):
        item = perf["out_of_sample"][key]
        low, high = item["interval"]
        p = item.get("p_permutation")
        rows.append(f"<tr><td>{label}</td><td>{_num(item['estimate'])}</td><td>[{_num(low)}, {_num(high)}]</td>"
                    f"<td>{_num(p)}</td></tr>")
    refit = perf["refit"]
    settings = perf["settings"]
    return (f"<p>Outcome <code>{html.escape(perf['outcome'])}</code>; {settings['n_subjects']} subjects; outer "
            f"CV {html.escape(settings['outer_cv'])}, inner CV {html.escape(settings['inner_cv'])}; "
            f"{settings['n_permutations']} permutations. Refit on all subjects: alpha {_num(refit['alpha'])}, "
            f"l1_ratio {_num(refit['l1_ratio'])}; retained: "
            f"{html.escape(', '.join(refit['retained']) or 'none')}.</p>"
            "<table><tr><th>score</th><th>estimate</th><th>95% interval</th><th>permutation p</th></tr>"
            + "".join(rows) + "</table>")


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def group_report(out_dir: Path, config: AnalysisConfig) -> str:
    """HTML text of the group report."""
    group = out_dir / "group"
    parts = [f"<h1>ketflow group report: {html.escape(config.name)}</h1>",
             f"<p>ketflow {__version__}; configuration SHA-256 {config.digest()[:12]}. Change scores are "
             f"{html.escape(config.sessions.followup)} minus {html.escape(config.sessions.baseline)}; the outcome is "
             f"the change in <code>{html.escape(config.clinical.outcome)}</code>.</p>"]
    features = group / "features.tsv"
    if features.is_file():
        table = pd.read_csv(features, sep="\t")
        arm = config.clinical.arm_column
        counts = table[arm].value_counts().to_dict() if arm in table.columns else {}
        parts.append(f"<h2>Feature table</h2><p>{len(table)} subjects included "
                     f"({html.escape(', '.join(f'{k}: {v}' for k, v in counts.items()))}), "
                     f"{table.shape[1]} columns (<a href=\"group/features.tsv\">features.tsv</a>, data dictionary "
                     "<a href=\"group/features.json\">features.json</a>).</p>")
    parts += ["<h3>Excluded subjects</h3>", _table(group / "exclusions.tsv")]
    for model in sorted(p.name.split("_")[0][len("model-"):] for p in group.glob("model-*_performance.json")):
        parts += [f"<h2>Model: {html.escape(model)}</h2>", _performance(group / f"model-{model}_performance.json"),
                  "<h3>Coefficients (standardised)</h3>",
                  _table(group / f"model-{model}_coefficients.tsv", rows=40),
                  _figures(out_dir, f"model-{model}_*.svg")]
    peb = group / "model-peb_parameters.tsv"
    if peb.is_file():
        summary = json.loads((group / "model-peb_summary.json").read_text())
        loo = summary["leave_one_out"]
        strong = pd.read_csv(peb, sep="\t")
        strong = strong[strong["Pp"] > 0.95]
        parts += ["<h2>Parametric Empirical Bayes over DCM</h2>",
                  f"<p>{len(summary['subjects'])} subjects' ses-{html.escape(summary['session'])} DCMs; design "
                  f"{html.escape(', '.join(summary['design_columns']))}; free energy {_num(summary['F'])}. "
                  f"Leave-one-out prediction of {html.escape(loo['variable'])}: r = {_num(loo['r'])} "
                  f"(p = {_num(loo['p'])}).</p>",
                  "<h3>Effects with posterior probability &gt; 0.95</h3>",
                  strong.to_html(index=False, float_format=lambda v: f"{v:.3g}", border=0) if len(strong)
                  else "<p>None.</p>",
                  _figures(out_dir, "model-peb_*.svg")]
    reports = sorted(out_dir.glob("sub-*.html"))
    links = "".join(f'<li><a href="{p.name}">{html.escape(p.stem)}</a></li>' for p in reports)
    parts += ["<h2>Participant reports</h2>", f"<ul>{links}</ul>" if links else "<p>None found.</p>"]
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>ketflow group report</title>"
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def build_group_report(out_dir: Path, config: AnalysisConfig) -> int:
    """Write ``group.html``; returns 1 if it failed (the error is logged), else 0."""
    try:
        write_text(Path(out_dir) / "group.html", group_report(Path(out_dir), config))
    except (OSError, ValueError, KeyError, pd.errors.ParserError) as err:
        LOGGER.error("the group report failed: %s", err)
        return 1
    return 0
