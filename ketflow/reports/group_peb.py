"""The PEB sections of the group report and their methods boilerplate.

One section per PEB analysis (``models.tsv`` labels ``peb`` and ``pebLongitudinal``), built from
``group/model-<label>_*`` only: the subjects and design; the configured contrasts with the
posterior probability of their hypothesised sign; the family comparison; the effects with
Pp > 0.95; a parameters × effects table of posterior means with Pp and the Bayesian model
average; leave-one-out prediction (baseline); the figure; the subjects left out.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from ..config import AnalysisConfig

__all__ = ["PEB_LABELS", "peb_section", "peb_methods_text", "PEB_REFERENCES"]

#: models.tsv labels of the PEB analyses, and their titles.
PEB_LABELS = {"peb": "PEB over DCM: baseline", "pebLongitudinal": "PEB over DCM: both sessions (longitudinal)"}

PEB_REFERENCES = [
    "Friston KJ, Litvak V, Oswal A, et al. (2016). Bayesian model reduction and empirical Bayes for group (DCM) "
    "studies. NeuroImage 128:413-431.",
    "Friston KJ, Penny W (2011). Post hoc Bayesian model selection. NeuroImage 56:2089-2099.",
    "Zeidman P, Jafarian A, Seghier ML, et al. (2019). A guide to group effective connectivity analysis, part 2: "
    "second level analysis with PEB. NeuroImage 200:12-25.",
    "Penny WD, Stephan KE, Daunizeau J, et al. (2010). Comparing families of dynamic causal models. "
    "PLoS Comput Biol 6:e1000709.",
]


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=["n/a"], dtype={"subject": str})


def _table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "<p>None.</p>"
    return frame.to_html(index=False, float_format=lambda v: f"{v:.3g}", border=0, na_rep="n/a", escape=True)


def _effects_grid(parameters: pd.DataFrame) -> pd.DataFrame:
    """Parameters × effects: 'posterior mean (Pp) | BMA mean' per cell, effects in the file's order."""
    effects = list(dict.fromkeys(parameters["effect"]))
    cells = parameters.assign(cell=[f"{m:.3g} ({pp:.2f}) | {b:.3g}" for m, pp, b in
                                    zip(parameters["posterior_mean"], parameters["Pp"], parameters["bma_mean"])])
    grid = cells.pivot(index="parameter", columns="effect", values="cell")[effects]
    order = list(dict.fromkeys(parameters["parameter"]))
    return grid.loc[order].reset_index()


def peb_section(out_dir: Path, row) -> list[str]:
    """HTML parts of one PEB analysis (a row of models.tsv)."""
    group = out_dir / "group"
    label = row.label
    parts = [f"<h2>{html.escape(PEB_LABELS.get(label, label))}</h2>"]
    if row.status == "skipped":
        parts.append(f'<p class="warning">Not fitted: {html.escape(str(row.reason))}</p>')
    files = {s: group / f"model-{label}_{s}.tsv" for s in ("parameters", "contrasts", "families", "familymodels")}
    summary_path = group / f"model-{label}_summary.json"
    if row.status == "run" and not (summary_path.is_file() and all(p.is_file() for p in files.values())):
        parts.append('<p class="warning">This PEB analysis was not fitted (see the crash files in logs/crash/).</p>')
    elif row.status == "run":
        parts += _fitted(out_dir, label, json.loads(summary_path.read_text()), {k: _read(v) for k, v in files.items()})
    subjects = group / f"model-{label}_subjects.tsv"
    if subjects.is_file():
        table = _read(subjects)
        left = table[~table["included"].astype(str).str.lower().isin(["true", "1"])]
        parts.append(f"<p>{len(table) - len(left)} subject(s) included, {len(left)} left out "
                     f"(<a href=\"group/{subjects.name}\">{subjects.name}</a>).</p>")
        if len(left):
            parts.append(f"<details><summary>Subjects left out and why</summary>"
                         f"{_table(left[['subject', 'reason']])}</details>")
    return parts


def _fitted(out_dir: Path, label: str, summary: dict, tables: dict) -> list[str]:
    arms = ", ".join(f"{k}: {v}" for k, v in summary.get("subjects_per_arm", {}).items())
    parts = [f"<p>{len(summary['subjects'])} subjects ({html.escape(arms)}); DCMs of task "
             f"{html.escape(summary['task'])} at session(s) {html.escape(', '.join(summary['sessions']))}; design "
             f"{html.escape(', '.join(summary['design_columns']))}"
             + ("; effects on the session mean and on the post &minus; pre change (PEB of PEBs)"
                if summary["analysis"] == "longitudinal" else "")
             + f"; scheme {html.escape(str(summary['settings'].get('method')))}, second-level reduction "
             f"{html.escape(str(summary['settings'].get('greedy')))}; free energy {summary['F']:.6g}.</p>"]
    contrasts = tables["contrasts"]
    parts += ["<h3>Contrasts (peb.contrasts)</h3>",
              "<p>Posterior of each configured combination of effects and the posterior probability of its "
              "hypothesised sign, under the full PEB and under the Bayesian model average.</p>",
              _table(contrasts[[c for c in ("name", "expect", "mean", "sd", "ci90_low", "ci90_high", "p_expected",
                                            "bma_mean", "bma_p_expected") if c in contrasts.columns]])]
    parts += ["<h3>Family comparison (peb.families)</h3>",
              "<p>Posterior probability of the second-level models with and without every listed effect of each "
              "family's parameters (Bayesian model reduction of the PEB, uniform prior over models).</p>",
              _table(tables["families"]),
              f"<details><summary>The model space</summary>{_table(tables['familymodels'])}</details>"]
    parameters = tables["parameters"]
    strong = parameters[parameters["Pp"] > 0.95].sort_values("Pp", ascending=False)
    parts += ["<h3>Effects with posterior probability &gt; 0.95</h3>",
              _table(strong[["effect", "parameter", "posterior_mean", "ci90_low", "ci90_high", "Pp", "bma_mean"]]),
              "<h3>Every parameter × effect</h3>",
              "<p>Cells: PEB posterior mean (Pp, second-level BMR) | Bayesian model average mean "
              f"(<a href=\"group/model-{label}_parameters.tsv\">model-{label}_parameters.tsv</a>).</p>",
              _table(_effects_grid(parameters))]
    loo = summary.get("leave_one_out")
    if loo:
        parts.append(f"<p>Leave-one-out prediction of {html.escape(loo['variable'])} from the baseline DCM "
                     f"(design {html.escape(', '.join(loo['design_columns']))}): r = {loo['r']:.3g}, "
                     f"T({loo['df']}) = {loo['T']:.3g}, one-sided p = {loo['p']:.3g} "
                     f"(<a href=\"group/model-{label}_predictions.tsv\">predictions</a>).</p>")
    figures = sorted((out_dir / "group" / "figures").glob(f"model-{label}_*.svg"))
    if not figures:
        parts.append('<p class="warning">Missing figure: PEB parameters</p>')
    parts += [f'<div class="figure"><object type="image/svg+xml" data="{f.relative_to(out_dir).as_posix()}">'
              f'</object><div class="caption">{html.escape(f.name)}: Bayesian model average, 90% intervals, '
              'coloured where Pp &gt; 0.95</div></div>' for f in figures]
    return parts


def peb_methods_text(config: AnalysisConfig) -> str:
    """Methods paragraphs of the configured PEB analyses (Markdown)."""
    peb, c = config.peb, config.clinical
    scheme = ("SPM12's variational scheme (spm_dcm_peb; ketflow reproduces its estimates to rounding error)"
              if peb.method == "spm" else "a scheme integrating the group effects out exactly (ketflow's "
              "'exact' option)")
    reduction = ("SPM12's greedy search (spm_dcm_peb_bmc)" if peb.greedy == "spm" else
                 "a greedy search scoring every subset of the eight least evident parameters at each step")
    text = (f"\n\nConnectivity parameters of the DCMs (fields {', '.join(peb.fields)}, those with prior variance) "
            "were analysed with Parametric Empirical Bayes (PEB; Friston et al. 2016) using "
            f"{scheme}. The between-subject design comprised the group mean, arm ({c.arms[0]} +0.5, "
            f"{c.arms[-1]} −0.5), the change in {c.outcome} (z-scored) and their interaction, all but the mean "
            "centred; each subject's runs were first combined by Bayesian parameter averaging. Second-level "
            f"Bayesian model reduction used {reduction}; posterior probabilities (Pp) are those of the models "
            "with versus without each effect, and effects were summarised by the Bayesian model average (BMA) "
            "over the final model space.")
    if peb.baseline:
        text += (f" The baseline analysis used the {config.sessions.baseline} DCMs"
                 + (", with leave-one-out prediction of the clinical change from the DCM parameters "
                    "(spm_dcm_loo)" if peb.leave_one_out else "") + ".")
    if peb.longitudinal:
        within = ("the exact limit of a within-subject PEB without between-session random effects (each subject's "
                  "session mean and post − pre change from the product of the two sessions' likelihoods)"
                  if peb.within == "saturated" else "a within-subject PEB over the two sessions (SPM defaults)")
        text += (f" The longitudinal analysis was a hierarchical PEB of PEBs (Zeidman et al. 2019): {within}, "
                 "then a between-subject PEB over those, with separate between-subject variances for the session "
                 "mean and the change; its effects are arm, clinical change and their interaction on the session "
                 "mean and, on the change, session, session × arm, session × clinical change and session × arm × "
                 "clinical change.")
    if peb.contrasts:
        names = "; ".join(f"*{x.name}* ({x.analysis}: " + ", ".join(f"{w:+g}·{e} on {p}" for e, ps in x.weights.items()
                                                                   for p, w in ps.items()) + f", expected {x.expect})"
                          for x in peb.contrasts)
        text += f" Contrasts of interest, reported with the posterior probability of the expected sign: {names}."
    if peb.families:
        fams = "; ".join(f"*{f.name}* ({', '.join(f.parameters)})" for f in peb.families)
        text += (" Families of second-level models with and without the effects of " + fams
                 + " were compared by Bayesian model reduction (Penny et al. 2010).")
    return text
