"""Group-level wiring of the trial inference on circuit measures (``group.inference``).

:func:`add_inference` is called by :func:`ketflow.workflows.group.init_group_wf` once the
feature table is in the work directory.  It plans every configured family × model analysis
(:func:`plan_inference`): an analysis that cannot run — a family without measures, an a-priori
name that is not a measure, a rank-deficient arm/covariate design, no measure with
``min_per_arm`` subjects with both sessions per arm — is skipped with a reason naming the
configuration key, logged and listed in ``group/inference.tsv``, while the others run.  Each
runnable analysis is one :class:`ketflow.interfaces.inference.TrialInference` node whose
outputs are stored as

* ``group/model-<ancova|lmm>_desc-<family>_inference.tsv`` (+ ``.json``: formula, corrections,
  permutations, counts, columns),
* ``group/figures/model-<ancova|lmm>_desc-<edge set>_figure.svg`` for resting FC and gPPI
  (e.g. ``desc-fcRest``, ``desc-ppiFacesFearfulGtShapes``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from ..config import AnalysisConfig, roi_names
from ..group.inference import InferenceError, InferenceSettings, prepare_analysis
from ..group.roi_matrices import parse_edge
from ..interfaces.inference import TrialInference
from ..io.clinical import read_bids_tsv
from ..io.write import write_json, write_tsv

LOGGER = logging.getLogger("ketflow")

#: Configuration key of each :class:`InferenceError` setting (``{family}`` filled in).
CONFIG_KEYS = {
    "apriori": "group.inference.apriori.{family}",
    "families": "group.inference.families",
    "arms": "clinical.arms",
    "covariates": "group.inference.covariates",
    "min_per_arm": "group.inference.min_per_arm",
}

#: Columns of ``group/inference.tsv`` and their descriptions.
PLAN_COLUMNS = {
    "family": "measure family (activation, ppi = gPPI, fc = resting-state FC, dcm)",
    "model": "ancova (post ~ pre + arm + covariates) or lmm (value ~ session * arm + covariates + (1 | subject))",
    "status": "'run' (see model-<model>_desc-<family>_inference.tsv) or 'skipped'",
    "n_measures": "measures of the family in the feature table",
    "n_apriori": "a-priori measures (the corrections' family)",
    "n_not_tested": "measures listed but not tested (too few subjects per arm, rank-deficient design)",
    "n_subjects": "subjects with an arm and every covariate",
    "reason": "why an analysis was skipped (names the configuration key)",
}


def inference_settings(config: AnalysisConfig) -> InferenceSettings:
    """The :class:`InferenceSettings` of a configuration."""
    inference = config.group.inference
    covariates = config.clinical.covariates if inference.covariates is None else inference.covariates
    return InferenceSettings(arm_column=config.clinical.arm_column, arms=tuple(config.clinical.arms),
                             baseline=config.sessions.baseline, followup=config.sessions.followup,
                             covariates=tuple(covariates), min_per_arm=inference.min_per_arm,
                             n_permutations=inference.n_permutations, fdr_level=inference.fdr_level,
                             fwe_level=inference.fwe_level, seed=inference.seed)


def plan_inference(features_tsv: str, dictionary_json: str, config: AnalysisConfig,
                   work: Path) -> tuple[pd.DataFrame, dict[tuple[str, str], dict]]:
    """(the rows of ``inference.tsv``, {(family, model): analysis JSON path and whether it has figures}).

    Writes the analysis specifications to ``work``; nothing is written to the output directory.
    """
    table = read_bids_tsv(features_tsv)
    dictionary = json.loads(Path(dictionary_json).read_text())
    inference, settings = config.group.inference, inference_settings(config)
    rois = roi_names(config)
    rows, runnable = [], {}
    for family in inference.families:
        apriori = inference.apriori.get(family)
        for model in inference.models:
            row = {"family": family, "model": model, "status": "skipped", "n_measures": 0, "n_apriori": 0,
                   "n_not_tested": 0, "n_subjects": 0, "reason": ""}
            try:
                data = prepare_analysis(table, dictionary, family, model, settings, apriori)
            except InferenceError as err:
                row["reason"] = f"{CONFIG_KEYS[err.setting].format(family=family)}: {err}"
                LOGGER.warning("trial inference %s/%s skipped: %s", family, model, row["reason"])
                rows.append(row)
                continue
            row.update(status="run", n_measures=len(data.measures), n_apriori=int(data.apriori.sum()),
                       n_not_tested=len(data.untestable), n_subjects=len(data.subjects))
            rows.append(row)
            spec = {"family": family, "model": model, "settings": asdict(settings), "apriori": apriori,
                    "rois": rois}
            has_figures = any(parse_edge(m, str(t), rois) for m, t in zip(data.measures, data.tasks))
            runnable[(family, model)] = {"analysis_json": str(write_json(work / f"inference_{family}_{model}.json",
                                                                         spec)),
                                         "figures": has_figures}
    return pd.DataFrame.from_records(rows, columns=list(PLAN_COLUMNS)), runnable


def add_inference(workflow: pe.Workflow, sink, tables: pe.Node, files: dict, config: AnalysisConfig) -> None:
    """Plan the analyses and add their nodes and sinks to the group workflow.

    sink : the group workflow's sink factory (``sink(name, node, field, suffix, extension, ...)``
    returning the sink node); tables : the node holding ``features`` and ``dictionary``;
    files : the work-directory paths of the feature table (``features``, ``dictionary``).
    """
    work = Path(files["features"]).parent
    plan, runnable = plan_inference(files["features"], files["dictionary"], config, work)
    summary = pe.Node(niu.IdentityInterface(fields=["plan"]), name="inference_plan")
    summary.inputs.plan = str(write_tsv(work / "inference.tsv", plan))
    sink("inference_plan", summary, "plan", "inference", ".tsv", metadata={
        "Description": "the trial-inference analyses (family x model): run, or skipped with the reason",
        **PLAN_COLUMNS})
    for (family, model), spec in runnable.items():
        node = pe.Node(TrialInference(analysis_json=spec["analysis_json"]), name=f"inference_{family}_{model}")
        workflow.connect([(tables, node, [("features", "features_tsv"), ("dictionary", "dictionary_json")])])
        ds = sink(f"inference_{family}_{model}", node, "table_tsv", "inference", ".tsv",
                  entities={"model": model, "desc": family})
        workflow.connect(node, "metadata_json", ds, "metadata_file")  # formula, corrections, counts
        if spec["figures"]:
            sink(f"inference_figures_{family}_{model}", node, "figures", "figure", ".svg",
                 entities={"model": model}, sidecar=False, datatype="figures", from_filename=True)
