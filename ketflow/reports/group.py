"""The group HTML report (``output_dir/group.html``), built from ``output_dir/group/`` only.

Sections: clinical scores per arm; the feature table (per measure family and arm: subjects,
missing values, mean change ± SD; columns too often missing to be used; every missing value
with its reason); the runs and subjects excluded at the participant level; the a-priori model first (standardised β, cross-validated error at the
selected penalty, nested-CV R², ΔR² over the arm); the models (fitted or skipped, subjects
included and left out); one section per fitted model (out-of-sample performance with intervals and permutation
p-values, retained features, figures); PEB over DCM; links to every participant's report.
Also the group-level methods text (``logs/CITATION_group.md``).
"""

from __future__ import annotations

import html
import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..config import SLOPPY_GROUP, AnalysisConfig, packaged_file
from ..io.collect import read_exclusions
from ..io.write import copy_file, write_text
from .boilerplate import REFERENCES
from .group_inference import inference_methods_text, inference_references, inference_section
from .group_peb import PEB_LABELS, PEB_REFERENCES, peb_methods_text, peb_section
from .group_voxelwise import voxelwise_methods, voxelwise_references, voxelwise_section

LOGGER = logging.getLogger("ketflow")

#: The participant report's stylesheet (vendored Bootstrap), copied next to the group page.
STYLESHEET = "reports/bootstrap.min.css"
#: Where the group page finds it, relative to the output directory.
STYLESHEET_HREF = "group/report/bootstrap.min.css"

#: Inline style of the group page, on top of the participant report's stylesheet: a navigation
#: bar that stays at the top (sticky: it takes its own space, so however many lines its links wrap
#: to it never covers the page) and the participant report's section headings; wide tables scroll
#: inside their box.
_STYLE = """
main { max-width: 80rem; }
h1 { font-size: 1.9rem; border-bottom: 2px solid var(--bs-primary); padding-bottom: .3rem; margin-top: 1rem; }
h2 { font-size: 1.35rem; margin-top: 2rem; padding: .35rem .6rem; background: var(--bs-light);
     border-left: 4px solid var(--bs-primary); scroll-margin-top: 8rem; }
h3 { font-size: 1.1rem; margin-top: 1.2rem; color: var(--bs-secondary-color); }
.table-box { max-width: 100%; max-height: 36rem; overflow: auto; margin: .5em 0 1em; }
.table-box table { font-size: .85rem; margin: 0; }
.table-box th { position: sticky; top: 0; background: var(--bs-light); }
td, th { padding: .2rem .5rem; border: 1px solid var(--bs-border-color); white-space: nowrap; }
.figure { margin: 1em 0 2em; } .figure img, .figure object { display: block; max-width: 100%; height: auto; }
.caption { font-size: .9em; color: var(--bs-secondary-color); } .warning { color: #a40; }
details > summary { cursor: pointer; color: var(--bs-primary); }
"""

#: Figures every fitted elastic-net model has (the null and selection figures when requested).
MODEL_FIGURES = ("coefficients", "predictedVsObserved", "permutationNull", "selectionFrequencies")


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=["n/a"], dtype={"subject": str})


def _html_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "<p>None.</p>"
    return table.to_html(index=False, float_format=lambda v: f"{v:.3g}", border=0, na_rep="n/a")


def _table(path: Path, columns: list[str] | None = None, rows: int | None = None) -> str:
    if not path.is_file():
        return f'<p class="warning">Missing: {html.escape(path.name)}</p>'
    table = _read(path)
    if columns:
        table = table[[c for c in columns if c in table.columns]]
    if rows:
        table = table.head(rows)
    return _html_table(table)


def _details(summary: str, body: str) -> str:
    return f"<details><summary>{html.escape(summary)}</summary>{body}</details>"


def _num(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3g}"


def _mean_sd(values) -> str:
    values = pd.Series(values, dtype=float).dropna()
    if values.empty:
        return "n/a"
    sd = values.std(ddof=1) if len(values) > 1 else float("nan")
    return f"{values.mean():.3g} ± {_num(sd)} (n={len(values)})"


def _arms(table: pd.DataFrame, arm: str) -> list[tuple[str, pd.DataFrame]]:
    groups = [("all", table)]
    if arm in table.columns:
        labels = table[arm].fillna("n/a").astype(str)
        groups += [(f"{arm} {lvl}", table[labels == lvl]) for lvl in sorted(labels.unique())]
    return groups


def clinical_summary(table: pd.DataFrame, dictionary: dict, arm: str) -> pd.DataFrame:
    """Per clinical score, session/change and arm: mean ± SD (n)."""
    rows = []
    for col, meta in dictionary.items():
        if not meta["role"].startswith("clinical"):
            continue
        row = {"column": col}
        for label, part in _arms(table, arm):
            row[label] = _mean_sd(part[col])
        rows.append(row)
    return pd.DataFrame(rows)


def family_summary(table: pd.DataFrame, dictionary: dict, arm: str) -> pd.DataFrame:
    """Per imaging measure family and arm: measures, subjects complete on the family's change
    columns, missing change values, and mean ± SD over subjects of each subject's mean change
    over the family's measures."""
    families: dict[str, list[str]] = {}
    for col, meta in dictionary.items():
        if meta["role"] == "imaging_change":
            families.setdefault(meta.get("family", col.split("_", 1)[0]), []).append(col)
    rows = []
    for family, cols in sorted(families.items()):
        unusable = sum(bool(dictionary[c].get("excluded_from_models")) for c in cols)
        for label, part in _arms(table, arm):
            values = part[cols].astype(float)
            n_cells = values.size
            rows.append({"family": family, "measures": len(cols), "not used (too often missing)": unusable,
                         "group": label, "subjects": len(part),
                         "subjects complete": int(values.notna().all(axis=1).sum()),
                         "missing values": f"{int(values.isna().sum().sum())} of {n_cells}"
                                           f" ({100 * values.isna().sum().sum() / max(n_cells, 1):.0f}%)",
                         "mean change ± SD": _mean_sd(values.mean(axis=1, skipna=True))})
    return pd.DataFrame(rows)


def measure_summary(table: pd.DataFrame, dictionary: dict, arm: str) -> pd.DataFrame:
    """Per imaging change column: missing count, use in models and mean ± SD per arm."""
    rows = []
    for col, meta in dictionary.items():
        if meta["role"] != "imaging_change":
            continue
        row = {"column": col, "missing": meta.get("n_missing", int(table[col].isna().sum())),
               "used": "no: " + meta["excluded_from_models"] if meta.get("excluded_from_models") else "yes"}
        for label, part in _arms(table, arm):
            row[label] = _mean_sd(part[col])
        rows.append(row)
    return pd.DataFrame(rows)


def _feature_section(group: Path, config: AnalysisConfig) -> list[str]:
    features, dictionary_path = group / "features.tsv", group / "features.json"
    if not features.is_file() or not dictionary_path.is_file():
        return ['<p class="warning">The feature table (group/features.tsv, features.json) is missing.</p>']
    table = _read(features)
    dictionary = json.loads(dictionary_path.read_text())
    arm = config.clinical.arm_column
    counts = table[arm].fillna("n/a").astype(str).value_counts().to_dict() if arm in table.columns else {}
    missing = _read(group / "missing.tsv") if (group / "missing.tsv").is_file() else pd.DataFrame()
    unusable = [c for c, m in dictionary.items() if m.get("excluded_from_models")]
    parts = [
        "<h2>Clinical scores</h2>", _html_table(clinical_summary(table, dictionary, arm)),
        "<h2>Feature table</h2>",
        f"<p>{len(table)} subjects ({html.escape(', '.join(f'{k}: {v}' for k, v in counts.items()))}), "
        f"{table.shape[1]} columns (<a href=\"group/features.tsv\">features.tsv</a>, data dictionary "
        "<a href=\"group/features.json\">features.json</a>). Every subject keeps a row with what it has; "
        "each model uses the subjects complete on its own columns. "
        f"{len(unusable)} imaging column(s) are missing in more than "
        f"{100 * config.group.max_missing_fraction:.0f}% of subjects and are not used as predictors.</p>",
        "<h3>Imaging change per measure family</h3>",
        "<p>Mean change ± SD: over subjects, of each subject's mean change over the family's measures "
        f"({html.escape(config.sessions.followup)} minus {html.escape(config.sessions.baseline)}).</p>",
        _html_table(family_summary(table, dictionary, arm)),
        _details("Every imaging change column", _html_table(measure_summary(table, dictionary, arm))),
        "<h3>Missing data</h3>",
        f"<p>{len(missing)} entries (<a href=\"group/missing.tsv\">missing.tsv</a>), one per subject, session "
        "and item, with the reason.</p>",
        _details("Missing values and their reasons", _html_table(missing)) if len(missing) else "",
    ]
    return parts


def fully_excluded_subjects(out_dir: Path, exclusions: pd.DataFrame) -> list[str]:
    """Subjects with exclusion records and no participant-level output besides them (every run
    excluded by quality control, so nothing was processed)."""
    def has_outputs(subject: str) -> bool:
        folder = out_dir / f"sub-{subject}"
        return any(p.is_file() and p.name != f"sub-{subject}_exclusions.tsv" and "figures" not in p.parts
                   for p in folder.rglob("*"))

    return [s for s in sorted(exclusions["subject"].unique()) if not has_outputs(s)]


def exclusion_section(out_dir: Path) -> list[str]:
    """Runs and subjects excluded at the participant level (``sub-*/sub-*_exclusions.tsv``):
    whole subjects first, then every excluded or absent run with its reason."""
    table = read_exclusions(out_dir)
    parts = ['<h2 id="exclusions">Exclusions</h2>']
    if table.empty:
        return parts + ["<p>No run was excluded at the participant level.</p>"]
    whole = fully_excluded_subjects(out_dir, table)
    if whole:
        links = ", ".join(f'<a href="sub-{s}/sub-{s}_exclusions.tsv">sub-{html.escape(s)}</a>' for s in whole)
        parts.append(f"<p><strong>{len(whole)} subject(s) excluded</strong> (every run excluded by a "
                     f"quality-control rule, nothing processed): {links}.</p>")
    parts.append(f"<p>{len(table)} run(s) excluded or absent, of {table['subject'].nunique()} subject(s):</p>")
    shown = table.assign(subject="sub-" + table["subject"])
    parts.append(_html_table(shown))
    return parts


def _figures(out_dir: Path, label: str) -> str:
    """HTML embedding every figure of model ``label``."""
    parts = []
    for figure in sorted((out_dir / "group" / "figures").glob(f"model-{label}_*.svg")):
        rel = figure.relative_to(out_dir).as_posix()
        parts.append(f'<div class="figure"><object type="image/svg+xml" data="{rel}"></object>'
                     f'<div class="caption"><a href="{rel}">{html.escape(figure.name)}</a></div></div>')
    return "\n".join(parts)


def _expected_figures(perf: dict) -> list[str]:
    settings = perf["settings"]
    return [f for f, wanted in zip(MODEL_FIGURES, (True, True, settings["n_permutations"] > 0,
                                                   settings["n_selection_bootstrap"] > 0)) if wanted]


def _performance(perf: dict) -> str:
    rows = []
    for key, label in (("r2", "out-of-sample R²"), ("r", "prediction-observation r")):
        item = perf["out_of_sample"][key]
        low, high = item["interval"]
        rows.append(f"<tr><td>{label}</td><td>{_num(item['estimate'])}</td><td>[{_num(low)}, {_num(high)}]</td>"
                    f"<td>{_num(item.get('p_permutation'))}</td></tr>")
    refit, settings = perf["refit"], perf["settings"]
    level = int(round(100 * settings.get("interval_level", 0.95)))
    return (f"<p>Outcome <code>{html.escape(perf['outcome'])}</code>; {settings['n_subjects']} subjects"
            + (f" of arm {html.escape(str(perf['arm_subset']))}" if perf.get("arm_subset") else "")
            + f". Reported model: penalty by {html.escape(settings.get('refit_inner_cv', settings['inner_cv']))} "
            f"CV, alpha {_num(refit['alpha'])}, l1_ratio {_num(refit['l1_ratio'])}; retained: "
            f"{html.escape(', '.join(refit['retained'][:40]) or 'none')}"
            + (f" and {len(refit['retained']) - 40} more" if len(refit["retained"]) > 40 else "")
            + f". Nested CV: outer {html.escape(settings['outer_cv'])}, inner {html.escape(settings['inner_cv'])}; "
            f"{settings['n_permutations']} permutations ({html.escape(settings['permutation_scheme'])}); "
            f"{settings['n_selection_bootstrap']} selection bootstraps.</p>"
            f"<table><tr><th>score</th><th>estimate</th><th>{level}% interval</th><th>permutation p</th></tr>"
            + "".join(rows) + "</table>" + _paper_statistics(perf))


def _paper_statistics(perf: dict) -> str:
    """The reference study's statistic (cross-validated error at the selected penalty), dropped
    predictors, and the reference model of the unpenalised columns with ΔR²."""
    refit, settings = perf["refit"], perf["settings"]
    text = (f"<p>Cross-validated mean squared error of the reported model at the selected penalty "
            f"({html.escape(settings.get('refit_inner_cv', 'leave-one-out'))}; the reference study's \"model with "
            f"minimum predictive error\"): {_num(refit.get('cv_mse'))}. It selected the penalty, so it is optimistic; "
            "the nested-CV R² above is the honest estimate.</p>")
    ref = perf.get("reference_model")
    if ref:
        text += (f"<p>Reference model: least squares on {html.escape(', '.join(ref['columns']))} alone, nested-CV "
                 f"R² {_num(ref['r2'])}; imaging adds ΔR² = {_num(ref['delta_r2'])} (Freedman–Lane permutation "
                 f"p = {_num(ref.get('p_delta_r2'))}).</p>")
    dropped = perf.get("dropped_predictors") or {}
    if dropped:
        text += _details(f"{len(dropped)} predictor(s) dropped as exact linear combinations of others",
                         _html_table(pd.DataFrame({"dropped": list(dropped),
                                                   "combination of": [", ".join(v) or "(constant)"
                                                                      for v in dropped.values()]})))
    return text


def _headline_section(out_dir: Path, models: pd.DataFrame) -> list[str]:
    """The first fitted model with a named predictor set (the a-priori model): standardised β,
    cross-validated error, nested-CV R², and ΔR² over the arm from the same set's arm model."""
    group = out_dir / "group"
    perfs = {}
    for row in models.itertuples(index=False):
        path = group / f"model-{row.label}_performance.json"
        if row.label != "peb" and row.status == "run" and path.is_file():
            perfs[row.label] = (row.model, json.loads(path.read_text()))
    lead = next(((label, name, perf) for label, (name, perf) in perfs.items() if perf.get("predictor_set")), None)
    if lead is None:
        return []
    label, name, perf = lead
    r2 = perf["out_of_sample"]["r2"]
    parts = [f"<h2>A-priori model: {html.escape(name)}</h2>",
             f"<p>Predictor set <code>{html.escape(perf['predictor_set'])}</code> (group.predictor_sets); "
             f"{perf['settings']['n_subjects']} subjects. Nested-CV R² {_num(r2['estimate'])} "
             f"[{_num(r2['interval'][0])}, {_num(r2['interval'][1])}], permutation p {_num(r2.get('p_permutation'))}; "
             f"cross-validated MSE at the selected penalty {_num(perf['refit'].get('cv_mse'))}.</p>"]
    def has_arm(p):
        spec = p["settings"]["spec"]
        return bool(p.get("reference_model")) and (spec.get("include_arm") or spec.get("arm_interactions"))

    with_arm = next((p for _, p in perfs.values() if p.get("predictor_set") == perf["predictor_set"] and has_arm(p)),
                    None)
    if with_arm is not None:
        ref = with_arm["reference_model"]
        parts.append(f"<p>Over the arm ({html.escape(', '.join(ref['columns']))} alone: R² {_num(ref['r2'])}), "
                     f"the same measures add ΔR² = {_num(ref['delta_r2'])} (Freedman–Lane p = "
                     f"{_num(ref.get('p_delta_r2'))}).</p>")
    coefs_path = group / f"model-{label}_coefficients.tsv"
    if coefs_path.is_file():
        coefs = _read(coefs_path)
        columns = [c for c in ("predictor", "beta_std", "coef", "retained") if c in coefs.columns]
        parts += ["<h3>Standardised β (predictor and outcome in SD units)</h3>", _html_table(coefs[columns])]
    return parts


def _model_section(out_dir: Path, row) -> list[str]:
    group = out_dir / "group"
    label = row.label
    parts = [f"<h2>Model: {html.escape(row.model)}</h2>"]
    subjects = group / f"model-{label}_subjects.tsv"
    excluded = _read(subjects) if subjects.is_file() else None
    if excluded is not None:
        excluded = excluded[~excluded["included"].astype(str).str.lower().isin(["true", "1"])]
    if row.status == "skipped":
        parts.append(f'<p class="warning">Not fitted: {html.escape(str(row.reason))}</p>')
    perf_path = group / f"model-{label}_performance.json"
    if row.status == "run" and not perf_path.is_file():
        parts.append('<p class="warning">This model was not fitted (see the crash files in logs/crash/).</p>')
    perf = json.loads(perf_path.read_text()) if row.status == "run" and perf_path.is_file() else None
    if perf is not None:
        parts.append(_performance(perf))
    if excluded is not None:
        parts.append(f"<p>{row.n_included} subject(s) included, {len(excluded)} left out "
                     f"(<a href=\"group/{subjects.name}\">{subjects.name}</a>).</p>")
        if len(excluded):
            parts.append(_details("Subjects left out and why", _html_table(excluded[["subject", "reason"]])))
    if perf is not None:
        coefs = _read(group / f"model-{label}_coefficients.tsv")
        kept = coefs[coefs["retained"].astype(str).str.lower().isin(["true", "1"])]
        kept = kept.reindex(kept["coef_std"].abs().sort_values(ascending=False).index).head(40)
        parts += ["<h3>Retained predictors (standardised coefficients, largest 40)</h3>", _html_table(kept)]
        absent = [f for f in _expected_figures(perf)
                  if not (group / "figures" / f"model-{label}_desc-{f}_figure.svg").is_file()]
        if absent:
            parts.append(f'<p class="warning">Missing figure(s): {html.escape(", ".join(absent))}</p>')
        parts.append(_figures(out_dir, label))
    return parts


def _model_comparison_section(out_dir: Path, config: AnalysisConfig) -> list[str]:
    """Fixed- and random-effects comparison of the DCM model space (``group/model-dcm_bms.tsv``)."""
    if not (config.measures.dcm and config.dcm.model_space):
        return []
    path = out_dir / "group" / "model-dcm_bms.tsv"
    parts = ["<h2>DCM model comparison</h2>"]
    if not path.is_file():
        return parts + ['<p class="warning">group/model-dcm_bms.tsv is missing (see the crash files in '
                        'logs/crash/).</p>']
    return parts + [f"<p>Model space of task {html.escape(config.dcm.task)} compared over subjects at each "
                    "session: summed free energies (fixed effects) and random-effects BMS with protected "
                    f"exceedance probabilities (<a href=\"group/{path.name}\">{path.name}</a>).</p>",
                    _html_table(_read(path))]


def _resampling_used(group: Path, config: AnalysisConfig) -> dict[str, int]:
    """Permutations, selection bootstraps and penalties per mixing value of the fitted models.

    Read from the first model's ``performance.json`` (what was run), so that ``--reports-only``
    describes the outputs even when its own command line differs (e.g. without ``--sloppy``);
    the configuration's counts when no model was fitted.
    """
    for path in sorted(group.glob("model-*_performance.json")):
        settings = json.loads(path.read_text()).get("settings", {})
        if "n_permutations" in settings:
            return {"n_permutations": settings["n_permutations"],
                    "n_bootstrap": settings.get("n_selection_bootstrap", config.group.n_bootstrap),
                    "n_alphas": settings.get("spec", {}).get("n_alphas", config.group.n_alphas)}
    return {key: getattr(config.group, key) for key in SLOPPY_GROUP}


def _resampling_paragraph(group: Path, config: AnalysisConfig) -> str:
    used = _resampling_used(group, config)
    sloppy = all(used[key] <= cap for key, cap in SLOPPY_GROUP.items())
    return (f"<p>Resampling: {used['n_permutations']} permutations, {used['n_bootstrap']} bootstraps, "
            f"{used['n_alphas']} penalties per mixing value"
            + (" (<strong>as low as --sloppy sets them: for testing only, do not report these p-values and selection "
               "frequencies</strong>)" if sloppy else "") + ".</p>")


def group_report(out_dir: Path, config: AnalysisConfig) -> str:
    """HTML text of the group report."""
    group = out_dir / "group"
    parts = [f"<h1>ketflow group report: {html.escape(config.name)}</h1>",
             f"<p>ketflow {__version__}; configuration SHA-256 {config.digest()[:12]}. Change scores are "
             f"{html.escape(config.sessions.followup)} minus {html.escape(config.sessions.baseline)}; the outcome is "
             f"the change in <code>{html.escape(config.clinical.outcome)}</code>. Methods: "
             "<a href=\"logs/CITATION_group.md\">logs/CITATION_group.md</a>.</p>",
             _resampling_paragraph(group, config)]
    parts += _feature_section(group, config)
    parts += exclusion_section(out_dir)
    models = _read(group / "models.tsv") if (group / "models.tsv").is_file() else None
    if models is None:
        parts.append('<p class="warning">group/models.tsv is missing: no model outputs to report.</p>')
    else:
        parts += _headline_section(out_dir, models)
        parts += ["<h2>Models</h2>", "<p><a href=\"group/models.tsv\">models.tsv</a></p>", _html_table(models)]
        for row in models.itertuples(index=False):
            parts += peb_section(out_dir, row) if row.label in PEB_LABELS else _model_section(out_dir, row)
    parts += _model_comparison_section(out_dir, config)
    parts += inference_section(out_dir, config)
    parts += voxelwise_section(out_dir, config)
    reports = sorted(out_dir.glob("sub-*.html"))
    links = "".join(f'<li><a href="{p.name}">{html.escape(p.stem)}</a></li>' for p in reports)
    parts += ["<h2>Participant reports</h2>", f"<ul>{links}</ul>" if links else "<p>None found.</p>"]
    return page(parts)


def page(parts: list[str]) -> str:
    """The group page: the participant report's stylesheet and fixed navigation bar (one link per
    section, ``<h2>``), every table in a box that scrolls when it is wider or taller than the page."""
    body = _TABLE.sub(lambda m: f'<div class="table-box">{m.group(0)}</div>', "\n".join(parts))
    sections: list[tuple[str, str]] = []

    def anchor(match: re.Match) -> str:
        attributes, title = match.group(1), match.group(2)
        found = re.search(r'id="([^"]+)"', attributes)
        ident = found.group(1) if found else f"section-{len(sections) + 1}"
        sections.append((ident, re.sub(r"<[^>]+>", "", title)))
        return f"<h2{attributes}>{title}</h2>" if found else f'<h2 id="{ident}"{attributes}>{title}</h2>'

    body = re.sub(r"<h2([^>]*)>(.*?)</h2>", anchor, body, flags=re.S)
    links = "".join(f'<li class="nav-item"><a class="nav-link py-1" href="#{ident}">{_short(title)}</a></li>'
                    for ident, title in sections)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>ketflow group report</title><link rel=\"stylesheet\" href=\"{STYLESHEET_HREF}\">"
            f"<style>{_STYLE}</style></head><body>\n"
            f'<nav class="navbar navbar-expand navbar-dark bg-dark sticky-top"><div class="container-fluid">'
            f'<span class="navbar-brand">ketflow &middot; group</span>'
            f'<ul class="navbar-nav me-auto flex-wrap small">{links}</ul></div></nav>\n'
            f'<main class="container-fluid px-4">\n' + body + "\n</main></body></html>\n")


_TABLE = re.compile(r"<table\b.*?</table>", flags=re.S)


def _short(title: str, most: int = 28) -> str:
    """A section title short enough for the navigation bar."""
    return title if len(title) <= most else title[: most - 1].rstrip() + "…"


def build_group_report(out_dir: Path, config: AnalysisConfig) -> int:
    """Write ``group.html``; returns 1 if it failed (the error is logged), else 0."""
    try:
        css = Path(out_dir) / STYLESHEET_HREF
        if not css.is_file() or css.read_bytes() != packaged_file(STYLESHEET).read_bytes():
            copy_file(packaged_file(STYLESHEET), css)
        write_text(Path(out_dir) / "group.html", group_report(Path(out_dir), config))
    except (OSError, ValueError, KeyError, pd.errors.ParserError) as err:
        LOGGER.error("the group report failed: %s", err)
        return 1
    return 0


def group_methods_text(config: AnalysisConfig) -> str:
    """Markdown methods boilerplate of the group level, from the configuration."""
    g, c = config.group, config.clinical

    def cv(folds):
        return "leave-one-out" if folds is None else f"{folds}-fold"

    models = "; ".join(
        f"*{m.name}*: {m.predictors} measures"
        + (f" of the predictor set '{m.predictor_set}'" if m.predictor_set else " of the whole circuit")
        + (f" of families {', '.join(m.measures)}" if m.measures else "")
        + (f" matching `{m.predictor_pattern}`" if m.predictor_pattern else "")
        + (", with the arm (unpenalised) and arm × imaging interaction terms" if m.interaction else "")
        + (", fitted within each arm" if m.per_arm else "")
        + (f", covariates {', '.join(m.covariates)}" if m.covariates else "")
        for m in g.models)
    used = list(dict.fromkeys(m.predictor_set for m in g.models if m.predictor_set))
    if used:
        models += ". " + "; ".join(f"Predictor set '{k}': {', '.join(g.predictor_sets[k])}" for k in used)
    outer = cv(g.outer_folds) + (f" repeated {g.outer_repeats} times" if g.outer_repeats > 1 else "")
    text = f"""# Group-level methods

Generated by ketflow {__version__} from the analysis configuration (SHA-256 {config.digest()[:12]}).

Imaging measures and clinical scores were assembled into one table per subject; change scores
were {config.sessions.followup} minus {config.sessions.baseline}. Missing values were kept as
missing, with the reason recorded for each subject, session and measure group; imaging columns
missing in more than {100 * g.max_missing_fraction:.0f}% of subjects were not used as predictors,
and each model was fitted on the subjects with complete data on exactly its outcome, predictors,
arm and covariates (models with fewer than {g.min_subjects} such subjects were not fitted).

Change in {c.outcome} was predicted with elastic-net regression (Zou & Hastie 2005) of
standardised imaging predictors, standardisation learned within each training set. As in
Norbury et al. (2021), the penalty (alpha, {g.n_alphas} values per mixing parameter, mixing
parameter from {g.l1_ratios}) was chosen at the minimum {cv(g.refit_inner_folds)} cross-validated
error and the model refitted on all subjects; that cross-validated error and the standardised
coefficients (β) of the refitted model are reported. Models: {models}. Predictors that were exact
linear combinations of other predictors of the same model were dropped. The arm and covariates
were left unpenalised (the outcome and the penalised predictors residualised on them within each
training set). Arm terms used effect coding ({c.arms[0]} +0.5, {c.arms[-1]} −0.5).
Computations used ketflow's batched elastic-net engine, which equals scikit-learn's ElasticNetCV
on the same penalty grid and folds.

Out-of-sample performance (R² and prediction–observation correlation) was estimated by nested
cross-validation ({outer} outer folds; penalty search by {cv(g.inner_folds)} cross-validation
within each training set), with {int(100 * 0.95)}% percentile bootstrap intervals over subjects
(Varoquaux 2018). Its significance was assessed by a permutation test repeating the whole
nested cross-validation on {g.n_permutations} permutations of the outcome (Freedman–Lane
residual permutation with the arm or covariates; seed {g.seed}). For models with the arm or
covariates, the gain in nested-CV R² over a least-squares model of those columns alone (ΔR²) was
tested with the same permutations"""
    text += f""". Feature stability was summarised by selection frequencies over {g.n_bootstrap}
bootstrap refits (Meinshausen & Bühlmann 2010)."""
    if config.measures.dcm:
        text += peb_methods_text(config)
        if config.dcm.model_space:
            text += f"""

The full DCM and its reduced variants ({', '.join(m.name for m in config.dcm.model_space)}) were
compared over subjects at each session by fixed-effects (summed log evidence) and random-effects Bayesian model
selection (Stephan et al. 2009) with protected exceedance probabilities (Rigoux et al. 2014)."""
    text += inference_methods_text(config)
    text += voxelwise_methods(config)
    text += """

## References

- Freedman D, Lane D (1983). A nonstochastic interpretation of reported significance levels. J Bus Econ Stat 1:292-298.
- Meinshausen N, Bühlmann P (2010). Stability selection. J R Stat Soc B 72:417-473.
"""
    if config.measures.dcm:
        text += "".join(f"- {ref}\n" for ref in PEB_REFERENCES[1:])
    return text + "".join(f"- {REFERENCES[key]}\n" for key in ("friston_peb", "norbury", "varoquaux", "zou")
                                                     + (("stephan_bms", "rigoux")
                                                        if config.measures.dcm and config.dcm.model_space else ())) \
        + inference_references(config) + voxelwise_references(config)
