"""Nipype interfaces of the group level.

The feature table itself is built before the workflow starts
(:func:`ketflow.workflows.group.prepare_inputs`), so that too few complete subjects is an
input error reported before anything is written.

:class:`PredictClinicalChange` reads ``features.tsv`` / ``features.json`` and a
model configuration JSON (keys in :mod:`ketflow.group.config`) and writes the
refitted coefficients, the nested-CV performance, the permutation null, the
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
from ..group.config import spec_from_config
from ..group.predict import evaluate
from ..io.clinical import read_bids_tsv
from ..io.write import write_json, write_text, write_tsv
from ..reports.svg import figure_to_svg

class _PredictInputSpec(BaseInterfaceInputSpec):
    features_tsv = File(exists=True, mandatory=True, desc="feature table (ketflow.group.features.build_feature_table)")
    dictionary_json = File(exists=True, mandatory=True, desc="its data dictionary")
    model_config = File(exists=True, mandatory=True, desc="model configuration JSON")
    n_jobs = traits.Int(1, usedefault=True, desc="parallel jobs (joblib)")


class _PredictOutputSpec(TraitedSpec):
    coefficients_tsv = File(exists=True, desc="refitted coefficients (all subjects)")
    performance_json = File(exists=True, desc="nested-CV scores, intervals, p-values, settings")
    null_tsv = File(exists=True, desc="permutation null of the nested-CV scores")
    selection_tsv = File(exists=True, desc="bootstrap selection frequencies")
    predictions_tsv = File(exists=True, desc="observed outcome and out-of-sample predictions")
    figures = OutputMultiObject(File(exists=True), desc="SVG figures")


class PredictClinicalChange(SimpleInterface):
    """Elastic-net prediction of clinical change with honest (nested-CV) performance."""

    input_spec = _PredictInputSpec
    output_spec = _PredictOutputSpec

    def _run_interface(self, runtime):
        dictionary = json.loads(Path(self.inputs.dictionary_json).read_text())
        config = json.loads(Path(self.inputs.model_config).read_text())
        spec, kwargs, arm_subset = spec_from_config(config, dictionary)
        table = read_bids_tsv(self.inputs.features_tsv)
        if arm_subset is not None:
            if spec.arm is None or spec.arm not in table.columns:
                raise ValueError("'arm_subset' needs the 'arm' column in the configuration")
            table = table[table[spec.arm] == str(arm_subset)].reset_index(drop=True)
        report = evaluate(table, spec, n_jobs=self.inputs.n_jobs, **kwargs)

        cwd = Path(os.getcwd())
        coefs = report.fit.coefficients.reset_index()
        out = {
            "coefficients_tsv": write_tsv(cwd / "coefficients.tsv", coefs),
            "performance_json": write_json(cwd / "performance.json", report.summary()),
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
        paths = []
        for name, fig in figures.items():
            paths.append(str(write_text(cwd / name, figure_to_svg(fig))))
        self._results.update({k: str(v) for k, v in out.items()})
        self._results["figures"] = paths
        return runtime

