"""Nipype interface of the group-level prediction models.

The feature table itself is built before the workflow starts
(:func:`ketflow.workflows.group.prepare_inputs`), so that bad clinical inputs, or no model
being able to run, are input errors reported before anything is written.

:class:`PredictClinicalChange` reads ``features.tsv`` / ``features.json`` (every subject,
``n/a`` where missing) and a model configuration JSON (keys in :mod:`ketflow.group.config`),
selects the complete cases on exactly the model's columns
(:func:`ketflow.group.models.select_model_data`) and writes who was included or left out
and why, the refitted coefficients, the nested-CV performance, the permutation null, the
bootstrap selection frequencies, the out-of-sample predictions and SVG figures
(:func:`ketflow.group.predict.evaluate`, :mod:`ketflow.group.plots`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    OutputMultiObject,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from ..group import plots
from ..group.models import select_model_data
from ..group.predict import evaluate
from ..io.clinical import read_bids_tsv
from ..io.write import write_json, write_text, write_tsv
from ..io.svg import figure_to_svg


class _PredictInputSpec(BaseInterfaceInputSpec):
    features_tsv = File(exists=True, mandatory=True, desc="feature table (ketflow.group.features.build_feature_table)")
    dictionary_json = File(exists=True, mandatory=True, desc="its data dictionary")
    model_config = File(exists=True, mandatory=True, desc="model configuration JSON")
    n_jobs = traits.Int(1, usedefault=True, desc="parallel threads (outer folds, bootstraps)")


class _PredictOutputSpec(TraitedSpec):
    subjects_tsv = File(exists=True, desc="every subject: included in the model or why not")
    coefficients_tsv = File(exists=True, desc="refitted coefficients (all included subjects)")
    performance_json = File(exists=True, desc="nested-CV scores, intervals, p-values, settings, subjects")
    null_tsv = File(exists=True, desc="permutation null of the nested-CV scores")
    selection_tsv = File(exists=True, desc="bootstrap selection frequencies")
    predictions_tsv = File(exists=True, desc="observed outcome and out-of-sample predictions")
    figures = OutputMultiObject(File(exists=True), desc="SVG figures")


class PredictClinicalChange(SimpleInterface):
    """Elastic-net prediction of clinical change with honest (nested-CV) performance.

    Raises ValueError when the model cannot be fitted (too few complete cases, no
    predictor); the group workflow only runs models that can.
    """

    input_spec = _PredictInputSpec
    output_spec = _PredictOutputSpec

    def _run_interface(self, runtime):
        dictionary = json.loads(Path(self.inputs.dictionary_json).read_text())
        config = json.loads(Path(self.inputs.model_config).read_text())
        data = select_model_data(config, read_bids_tsv(self.inputs.features_tsv), dictionary)
        if not data.can_run:
            raise ValueError(f"{self.inputs.model_config}: model not fitted: {data.skip_reason}")
        spec = data.config.spec
        report = evaluate(data.table, spec, n_jobs=self.inputs.n_jobs, **data.config.evaluate_kwargs)

        cwd = Path(os.getcwd())
        excluded = data.subjects[~data.subjects["included"]]
        summary = report.summary()
        summary["subjects"] = {"n_included": int(data.subjects["included"].sum()), "n_excluded": len(excluded),
                               "excluded": excluded[["subject", "reason"]].to_dict("records")}
        summary["arm_subset"] = data.config.arm_subset
        summary["predictor_set"] = data.config.predictor_set
        summary["dropped_predictors"] = data.dropped  # exact linear combinations of other predictors
        out = {
            "subjects_tsv": write_tsv(cwd / "subjects.tsv", data.subjects),
            "coefficients_tsv": write_tsv(cwd / "coefficients.tsv", report.fit.coefficients.reset_index()),
            "performance_json": write_json(cwd / "performance.json", summary),
            "null_tsv": write_tsv(cwd / "permutation_null.tsv", report.null),
            "selection_tsv": write_tsv(cwd / "selection_frequencies.tsv", report.selection.reset_index()),
        }
        preds = pd.DataFrame({"subject": report.fit.design.subjects, "observed": report.observed})
        for rep, row in enumerate(report.predictions):
            preds[f"predicted_repeat-{rep + 1}"] = row
        out["predictions_tsv"] = write_tsv(cwd / "predictions.tsv", preds)
        figures = {
            "coefficients.svg": plots.coefficient_plot(report.fit.coefficients),
            "predicted_vs_observed.svg": plots.predicted_vs_observed(
                report.observed, report.predictions, scores=report.scores, outcome=spec.outcome),
        }
        if len(report.null):
            figures["permutation_null.svg"] = plots.permutation_histogram(
                report.null["r2"].to_numpy(), report.scores["r2"], p_value=report.p_values["r2"])
        if len(report.selection):
            figures["selection_frequencies.svg"] = plots.selection_frequency_bars(report.selection)
        self._results.update({k: str(v) for k, v in out.items()})
        self._results["figures"] = [str(write_text(cwd / name, figure_to_svg(fig))) for name, fig in figures.items()]
        return runtime

