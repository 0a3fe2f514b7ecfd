"""The group level's PEB analyses: who enters, what can run, and the workflow nodes.

Two analyses (``peb`` section of the configuration): ``peb`` — PEB of the baseline DCMs with
leave-one-out prediction (:class:`ketflow.interfaces.peb.FitPEB`) — and ``peb-longitudinal`` —
the PEB of PEBs over both sessions (:class:`ketflow.interfaces.peb.FitLongitudinalPEB`). Before
the workflow runs, :func:`prepare_peb` decides for each analysis which subjects enter (an arm of
``clinical.arms``, the clinical change and the DCMs of the sessions it needs) and whether it can
run; an analysis that cannot is listed in ``models.tsv`` as skipped with a reason naming the
configuration key — too few subjects (``group.min_subjects``) or too few per arm
(``peb.min_subjects_per_arm``), a rank-deficient design, or a contrast or family that names an
effect or parameter the model does not have (``peb.contrasts[<name>]``,
``peb.families[<name>]``) — while the other analyses run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from nipype.pipeline import engine as pe

from ..config import AnalysisConfig
from ..group.features import change_column
from ..interfaces.peb import FitLongitudinalPEB, FitPEB, check_peb_specification, find_dcm, peb_design
from ..io.write import write_json, write_tsv

__all__ = ["PEB_ANALYSES", "PEBAnalysis", "prepare_peb", "add_peb_nodes"]


@dataclass(frozen=True)
class PEBAnalysis:
    """model : name in models.tsv; label : its BIDS label; sessions : "baseline" or both; interface."""

    model: str
    label: str
    sessions: tuple
    interface: type
    description: str


PEB_ANALYSES = {
    "baseline": PEBAnalysis("peb", "peb", ("baseline",), FitPEB, "PEB over DCM (baseline)"),
    "longitudinal": PEBAnalysis("peb-longitudinal", "pebLongitudinal", ("baseline", "followup"),
                                FitLongitudinalPEB, "PEB over DCM (both sessions: PEB of PEBs)"),
}


def _sessions(config: AnalysisConfig, analysis: PEBAnalysis) -> list[str]:
    return [getattr(config.sessions, s) for s in analysis.sessions]


def _subject_table(opts, config: AnalysisConfig, table: pd.DataFrame, sessions: list[str]) -> pd.DataFrame:
    """Every subject: included in the analysis or the reason it is left out."""
    arm, outcome = config.clinical.arm_column, change_column(config.clinical.outcome)
    arms = config.clinical.arms[:2]
    records = []
    for values in table.to_dict("records"):
        subject = str(values["subject"])
        if pd.isna(values[arm]) or str(values[arm]) not in arms:
            reason = f"missing {arm} (treatment arm)"
        elif pd.isna(values[outcome]):
            reason = f"missing outcome {outcome}"
        else:
            absent = [s for s in sessions if not find_dcm(opts.output_dir, subject, s, config.dcm.task)]
            reason = f"no task-{config.dcm.task} DCM at session(s) {', '.join(absent)}" if absent else ""
        records.append({"subject": subject, "included": not reason, "reason": reason})
    return pd.DataFrame.from_records(records, columns=["subject", "included", "reason"])


def _skip_reason(opts, config: AnalysisConfig, key: str, analysis: PEBAnalysis, included: pd.DataFrame,
                 sessions: list[str]) -> str | None:
    """Why the analysis cannot run (naming the configuration key), or None."""
    arm, arms = config.clinical.arm_column, config.clinical.arms[:2]
    if len(arms) < 2:
        return "PEB's design needs two arms in clinical.arms"
    if len(included) < config.group.min_subjects:
        return (f"only {len(included)} subject(s) with the DCMs of session(s) {', '.join(sessions)}, an arm and "
                f"the outcome; PEB needs at least group.min_subjects = {config.group.min_subjects}")
    counts = included[arm].astype(str).value_counts()
    few = [f"{a}: {int(counts.get(a, 0))}" for a in arms if counts.get(a, 0) < config.peb.min_subjects_per_arm]
    if few:
        return (f"too few subjects per arm ({', '.join(few)}); peb.min_subjects_per_arm is "
                f"{config.peb.min_subjects_per_arm}")
    try:
        _, columns = peb_design(included, arm, (arms[0], arms[1]), change_column(config.clinical.outcome))
    except ValueError as err:
        return f"peb.{key}: {err} (clinical.outcome {config.clinical.outcome!r}, clinical.arms {arms})"
    first = find_dcm(opts.output_dir, str(included["subject"].iloc[0]), sessions[0], config.dcm.task)[0]
    contrasts = [c.model_dump() for c in config.peb.contrasts if c.analysis == key]
    families = [f.model_dump() for f in config.peb.families]
    try:
        check_peb_specification(first, tuple(config.peb.fields), columns, key == "longitudinal", contrasts, families)
    except (ValueError, KeyError) as err:
        return str(err) if str(err).startswith("peb.") else f"peb.fields {config.peb.fields}: {err}"
    return None


def prepare_peb(opts, config: AnalysisConfig, table: pd.DataFrame, work: Path):
    """Decide which PEB analyses run; writes their inputs to ``work`` only.

    Returns (rows for models.tsv, {model: subjects TSV}, {analysis key: inputs dict of the runnable
    analyses: features TSV, settings JSON, sessions}).
    """
    rows, subject_files, runnable = [], {}, {}
    settings = config.peb.model_dump(mode="json")
    for key, analysis in PEB_ANALYSES.items():
        if not getattr(config.peb, key):
            continue
        sessions = _sessions(config, analysis)
        subjects = _subject_table(opts, config, table, sessions)
        included = table[subjects["included"].to_numpy()]
        reason = _skip_reason(opts, config, key, analysis, included, sessions)
        n_in = int(subjects["included"].sum())
        rows.append({"model": analysis.model, "label": analysis.label, "method": analysis.description,
                     "status": "skipped" if reason else "run", "n_included": n_in,
                     "n_excluded": len(subjects) - n_in, "n_predictors": None, "reason": reason or ""})
        subject_files[analysis.model] = str(write_tsv(work / f"model-{analysis.label}_subjects.tsv", subjects))
        if reason is None:
            columns = ["subject", config.clinical.arm_column, change_column(config.clinical.outcome)]
            runnable[key] = {
                "features": str(write_tsv(work / f"{analysis.label}_features.tsv", included[columns])),
                "settings": str(write_json(work / f"{analysis.label}_settings.json", settings)),
                "sessions": sessions}
    return rows, subject_files, runnable


_COLUMNS = {
    "parameters": {"Description": "every effect of the design on every second-level DCM parameter",
                   "effect": "design column (mean, arm, clinical, arm:clinical) or, for the longitudinal PEB, "
                             "its effect on the post - pre change (session, session:arm, ...)",
                   "parameter": "DCM parameter (A_<from>-to-<to>, B_<from>-to-<to>_<input>, C_<input>-to-<region>)",
                   "posterior_mean": "PEB posterior mean", "posterior_sd": "PEB posterior SD",
                   "ci90_low": "90% credible interval", "ci90_high": "90% credible interval",
                   "p_positive": "posterior probability that the effect is positive",
                   "Pp": "posterior probability that the effect is present (second-level BMR)",
                   "bma_mean": "Bayesian model average mean", "bma_sd": "Bayesian model average SD"},
    "contrasts": {"Description": "the configured contrasts (peb.contrasts): sums of weighted effects",
                  "expect": "hypothesised sign", "p_expected": "posterior probability of the hypothesised sign",
                  "bma_p_expected": "the same under the Bayesian model average"},
    "families": {"Description": "family comparison (peb.families): posterior probability of the models with "
                                "and without every listed effect of the family's parameters",
                 "p_with": "posterior probability of the family with the effects",
                 "p_without": "posterior probability of the family without them"},
    "familymodels": {"Description": "the model space of the family comparison",
                     "log_evidence": "log evidence relative to the full PEB (nats)", "posterior": "p(model)"},
    "predictions": {"Description": "leave-one-out prediction of the clinical change from the baseline DCM "
                                   "(spm_dcm_loo)", "observed": "z-scored clinical change",
                    "predicted_mean": "predictive posterior mean", "predicted_sd": "predictive posterior SD"},
}


def add_peb_nodes(workflow, sink, runnable: dict, config: AnalysisConfig, opts) -> None:
    """One node per runnable PEB analysis and the sinks of its outputs (BIDS names, sidecars)."""
    for key, spec in runnable.items():
        analysis = PEB_ANALYSES[key]
        node = pe.Node(analysis.interface(out_dir=str(opts.output_dir), task=config.dcm.task,
                                          sessions=spec["sessions"], arm_column=config.clinical.arm_column,
                                          arms=config.clinical.arms[:2],
                                          outcome=change_column(config.clinical.outcome),
                                          features_tsv=spec["features"], settings_json=spec["settings"]),
                       name=f"peb_{key}")
        entities = {"model": analysis.model}
        outputs = [("parameters_tsv", "parameters"), ("contrasts_tsv", "contrasts"), ("families_tsv", "families"),
                   ("models_tsv", "familymodels")]
        if key == "baseline" and config.peb.leave_one_out:
            outputs.append(("predictions_tsv", "predictions"))
        for field, suffix in outputs:
            ds = sink(f"{analysis.label}_{suffix}", node, field, suffix, ".tsv", entities=entities,
                      metadata=_COLUMNS[suffix])
            workflow.connect(node, "sidecar_json", ds, "metadata_file")
        sink(f"{analysis.label}_summary", node, "summary_json", "summary", ".json", entities=entities, sidecar=False)
        sink(f"{analysis.label}_figure", node, "figure", "figure", ".svg", entities=dict(entities, desc="parameters"),
             sidecar=False, datatype="figures")
