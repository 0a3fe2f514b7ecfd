"""The trial-inference section of the group report and its methods text.

Built from ``output_dir/group/`` only: ``inference.tsv`` (the analyses, run or skipped),
``model-<model>_desc-<family>_inference.tsv`` with their sidecars, and the ROI-to-ROI matrix
figures ``figures/model-<model>_desc-<edge set>_figure.svg``.  Each analysis shows its model,
counts and corrections, then its results with the significant ones first (family-wise, then
FDR, then by p), the other a-priori results with the smallest p-values, and the measures not
tested with the reason.
"""

from __future__ import annotations

import html
import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import SLOPPY_INFERENCE_PERMUTATIONS, AnalysisConfig
from ..group.inference import FAMILY_NAMES, model_formula

__all__ = ["inference_section", "inference_methods_text", "inference_references", "REFERENCES"]

MODEL_NAMES = {"ancova": "ANCOVA", "lmm": "linear mixed model"}
#: Columns shown in the report's result tables.
SHOWN = ["measure", "effect", "arm", "estimate", "ci_low", "ci_high", "effect_size", "t", "df", "p", "q_fdr",
         "p_fwe", "n_active", "n_control", "note"]
#: Non-significant a-priori results shown per analysis (smallest p first); the TSV has them all.
MORE_ROWS = 10

REFERENCES = {
    "vickers": "Vickers AJ, Altman DG (2001). Analysing controlled trials with baseline and follow up "
               "measurements. BMJ 323:1123-1124.",
    "laird": "Laird NM, Ware JH (1982). Random-effects models for longitudinal data. Biometrics 38:963-974.",
    "schluchter": "Schluchter MD, Elashoff JD (1990). Small-sample adjustments to tests with unbalanced repeated "
                  "measures assuming several covariance structures. J Stat Comput Simul 37:69-87.",
    "morris": "Morris SB (2008). Estimating effect sizes from pretest-posttest-control group designs. "
              "Organ Res Methods 11:364-386.",
    "benjamini": "Benjamini Y, Hochberg Y (1995). Controlling the false discovery rate: a practical and powerful "
                 "approach to multiple testing. J R Stat Soc B 57:289-300.",
    "nichols": "Nichols TE, Holmes AP (2002). Nonparametric permutation tests for functional neuroimaging: a "
               "primer with examples. Hum Brain Mapp 15:1-25.",
    "winkler": "Winkler AM, Ridgway GR, Webster MA, Smith SM, Nichols TE (2014). Permutation inference for the "
               "general linear model. NeuroImage 92:381-397.",
    "seabold": "Seabold S, Perktold J (2010). statsmodels: econometric and statistical modeling with Python. "
               "Proc 9th Python in Science Conference: 92-96.",
}


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=["n/a"])


def _number(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "n/a" if np.isnan(value) else f"{value:.3g}"
    return str(value)


def _html(table: pd.DataFrame) -> str:
    if table.empty:
        return "<p>None.</p>"
    return table.to_html(index=False, border=0, na_rep="n/a", formatters={c: _number for c in table.columns})


def _is_true(column: pd.Series) -> pd.Series:
    return column.astype(str).str.lower().isin(["true", "1"])


def ranked_results(table: pd.DataFrame, more: int = MORE_ROWS) -> tuple[pd.DataFrame, int]:
    """(the tested rows, significant first (FWE, then FDR, then by p) plus the ``more`` a-priori
    rows of smallest p among the rest; the number of significant rows)."""
    tested = table[table["p"].notna()].copy()
    tested["_fwe"], tested["_fdr"] = _is_true(tested["significant_fwe"]), _is_true(tested["significant_fdr"])
    tested = tested.sort_values(["_fwe", "_fdr", "p"], ascending=[False, False, True], kind="stable")
    significant = tested["_fwe"] | tested["_fdr"]
    rest = tested[~significant & _is_true(tested["apriori"])].head(more)
    shown = pd.concat([tested[significant], rest])
    return shown.drop(columns=["_fwe", "_fdr"]), int(significant.sum())


def _analysis(out_dir: Path, row) -> list[str]:
    group = out_dir / "group"
    stem = f"model-{row.model}_desc-{row.family}_inference"
    title = f"{FAMILY_NAMES.get(row.family, row.family)}: {MODEL_NAMES.get(row.model, row.model)}"
    parts = [f"<h3>{html.escape(title)}</h3>"]
    if row.status != "run":
        return parts + [f'<p class="warning">Not run: {html.escape(str(row.reason))}</p>']
    path, sidecar = group / f"{stem}.tsv", group / f"{stem}.json"
    if not path.is_file() or not sidecar.is_file():
        return parts + [f'<p class="warning">{html.escape(stem)}.tsv is missing (see the crash files in '
                        "logs/crash/).</p>"]
    table, meta = _read(path), json.loads(sidecar.read_text())
    counts = meta["Counts"]
    sessions = "; ".join(f"{arm}: " + ", ".join(f"{n} at {ses}" for ses, n in by.items())
                         for arm, by in counts["SubjectsPerArmAndSession"].items())
    shown, n_significant = ranked_results(table)
    fwe = meta["MultipleComparisons"]["FWE"]
    parts.append(f"<p><code>{html.escape(meta['Formula'])}</code>. Subjects with the measures: "
                 f"{html.escape(sessions)}; {counts['Tested']} of {counts['APriori']} a-priori measures tested "
                 f"({counts['Measures']} in the family), {fwe['NPermutations']} permutations. "
                 f"{n_significant} significant result(s) (FDR q &le; {meta['MultipleComparisons']['FDR']['Level']} "
                 f"or FWE p &le; {fwe['Level']}) first, then the {MORE_ROWS} other a-priori results with the "
                 f"smallest p (<a href=\"group/{path.name}\">{path.name}</a> has every measure and effect).</p>")
    parts.append(_html(shown[[c for c in SHOWN if c in shown.columns]]))
    for figure in sorted((group / "figures").glob(f"model-{row.model}_desc-{row.family}*_figure.svg")):
        rel = figure.relative_to(out_dir).as_posix()
        parts.append(f'<div class="figure"><img src="{rel}" alt="{html.escape(figure.name)}">'
                     f'<div class="caption"><a href="{rel}">{html.escape(figure.name)}</a>: t of each edge '
                     "per effect; o FDR-significant, * FWE-significant.</div></div>")
    if counts["NotTested"]:
        not_tested = pd.DataFrame(list(counts["NotTested"].items()), columns=["measure", "reason"])
        parts.append(f"<details><summary>{len(not_tested)} measure(s) not tested</summary>{_html(not_tested)}"
                     "</details>")
    return parts


def inference_section(out_dir: Path, config: AnalysisConfig) -> list[str]:
    """HTML of the trial-inference section (empty when ``group.inference`` is disabled)."""
    inference = config.group.inference
    if not inference.enabled:
        return []
    out_dir = Path(out_dir)
    plan_path = out_dir / "group" / "inference.tsv"
    parts = ["<h2>Trial inference on the circuit measures</h2>"]
    if not plan_path.is_file():
        return parts + ['<p class="warning">group/inference.tsv is missing: no trial-inference outputs.</p>']
    plan = _read(plan_path)
    parts.append("<p>" + html.escape(_summary(config)) + ' Analyses: <a href="group/inference.tsv">inference.tsv</a>.'
                 + (" <strong>Permutations as low as --sloppy sets them: for testing only, do not report these "
                    "FWE p-values.</strong>" if inference.n_permutations <= SLOPPY_INFERENCE_PERMUTATIONS else "")
                 + "</p>")
    parts.append(_html(plan))
    for row in plan.itertuples(index=False):
        parts += _analysis(out_dir, row)
    parts += ["<details><summary>Methods</summary>",
              "".join(f"<p>{html.escape(p)}</p>" for p in inference_methods_text(config).split("\n\n") if p.strip()),
              "</details>"]
    return parts


def _covariates(config: AnalysisConfig) -> list[str]:
    """The covariates of the trial inference (``group.inference.covariates``, null: the clinical ones)."""
    chosen = config.group.inference.covariates
    return list(config.clinical.covariates if chosen is None else chosen)


def _summary(config: AnalysisConfig) -> str:
    sessions, arms = config.sessions, config.clinical.arms
    return (f"For every measure, the arm x session effect (change {sessions.followup} - {sessions.baseline} in "
            f"{arms[0]} minus that in {arms[-1]}), the change within each arm and the baseline difference, by "
            + " and ".join(f"{MODEL_NAMES[m]} ({model_formula(m, _covariates(config))})"
                           for m in config.group.inference.models)
            + "; corrected over each family's a-priori measures by FDR and by a max-statistic permutation FWE.")


def inference_methods_text(config: AnalysisConfig) -> str:
    """Markdown paragraphs of the group methods text (empty when disabled); starts with a blank line."""
    inference = config.group.inference
    if not inference.enabled:
        return ""
    baseline, followup = config.sessions.baseline, config.sessions.followup
    active, control = config.clinical.arms[0], config.clinical.arms[-1]
    families = ", ".join(FAMILY_NAMES[f] for f in inference.families)
    covariates = f" and {', '.join(_covariates(config))}" if _covariates(config) else ""
    apriori = (" (" + "; ".join(f"{FAMILY_NAMES[f]}: {', '.join(names)}" for f, names in inference.apriori.items())
               + "; all measures of the other families)" if inference.apriori else " (all measures of each family)")
    first = [f"The trial's effects on every circuit measure ({families}) were estimated, for each measure, as the arm "
             f"x session effect (the {followup} minus {baseline} change under {active} minus that under {control}), "
             "the change within each arm and the baseline difference between arms."]
    if "ancova" in inference.models:
        first.append(f"By analysis of covariance (Vickers & Altman 2001), the {followup} value was regressed on the "
                     f"{baseline} value, the arm{covariates} (statsmodels OLS; Seabold & Perktold 2010) in the "
                     "subjects with both sessions; the arm coefficient is the arm x session effect. The within-arm "
                     f"change is each arm's mean change (change regressed on arm{covariates}; a baseline-adjusted mean "
                     "change would be biased by regression to the mean) and the baseline difference the arm "
                     f"coefficient of the baseline value regressed on arm{covariates}.")
    if "lmm" in inference.models:
        first.append(f"A linear mixed model (Laird & Ware 1982), value ~ session x arm"
                     f"{covariates.replace(' and ', ' + ')} with a random subject intercept, was fitted by REML "
                     "(statsmodels MixedLM) to every available observation, with t tests on between-within degrees "
                     "of freedom (Schluchter & Elashoff 1990).")
    first.append(f"Effect sizes are the estimates divided by the {baseline} standard deviation pooled within arms, "
                 "with Morris's (2008) small-sample correction; intervals are 95% confidence intervals. Measures with "
                 f"fewer than {inference.min_per_arm} subjects with both sessions in an arm were not tested.")
    second = (f"Within each measure family and separately for each effect, p-values were corrected over the a-priori "
              f"measures{apriori} by the Benjamini-Hochberg false discovery rate (Benjamini & Hochberg 1995; "
              f"significant at q <= {inference.fdr_level}) and by a max-statistic permutation test of the family-wise "
              f"error (Nichols & Holmes 2002; {inference.n_permutations} permutations, seed {inference.seed}; t "
              "statistics converted to z before the maximum; Freedman-Lane permutation of subjects' reduced-model "
              "residuals for the between-arm effects and sign flipping for the within-arm changes, Winkler et al. "
              f"2014; significant at p <= {inference.fwe_level}). Resting-state and gPPI results are shown as "
              "ROI-to-ROI matrices (gPPI directed from seed to target).")
    return "".join("\n\n" + textwrap.fill(paragraph, width=95) for paragraph in (" ".join(first), second))


def inference_references(config: AnalysisConfig) -> str:
    """Markdown reference list entries of :func:`inference_methods_text` (empty when disabled)."""
    if not config.group.inference.enabled:
        return ""
    keys = ["benjamini", "laird", "morris", "nichols", "schluchter", "seabold", "vickers", "winkler"]
    if "lmm" not in config.group.inference.models:
        keys = [k for k in keys if k not in ("laird", "schluchter")]
    if "ancova" not in config.group.inference.models:
        keys.remove("vickers")
    return "".join(f"- {REFERENCES[key]}\n" for key in keys)
