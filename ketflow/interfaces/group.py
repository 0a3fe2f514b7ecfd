"""Nipype interfaces of the group level.

:class:`BuildFeatureTable` reads long-format imaging measures TSVs, a clinical
scores TSV, ``participants.tsv`` and a JSON configuration and writes
``features.tsv``, its data dictionary ``features.json`` and ``exclusions.tsv``
(:func:`ketflow.group.features.build_feature_table`).

:class:`PredictClinicalChange` reads ``features.tsv`` / ``features.json`` and a
model configuration JSON (keys in :mod:`ketflow.group.config`) and writes the
refitted coefficients, the nested-CV performance, the permutation null, the
bootstrap selection frequencies, the out-of-sample predictions and SVG figures
(:func:`ketflow.group.predict.evaluate`, :mod:`ketflow.group.plots`).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pandas as pd
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    OutputMultiObject,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from ..group import plots
from ..group.config import spec_from_config
from ..group.features import build_feature_table
from ..group.predict import evaluate
from ..io.clinical import read_bids_tsv
from ..io.write import write_json, write_text, write_tsv

_FEATURE_CONFIG_KEYS = {"baseline", "followup", "arm", "covariates", "scores", "sessions", "units"}


class _BuildFeatureTableInputSpec(BaseInterfaceInputSpec):
    measures_files = InputMultiObject(File(exists=True), mandatory=True,
                                      desc="long TSVs with subject, session, measure, value")
    clinical_file = File(exists=True, mandatory=True, desc="TSV with subject, session and score columns")
    participants_file = File(exists=True, mandatory=True, desc="participants.tsv (arm, covariates)")
    excluded_runs_file = File(exists=True, desc="TSV with subject, session, reason of QC-excluded runs")
    config_file = File(exists=True, desc="JSON with baseline, followup, arm, covariates, scores, "
                                         "sessions, units (all optional)")


class _BuildFeatureTableOutputSpec(TraitedSpec):
    features_tsv = File(exists=True, desc="one row per included subject")
    dictionary_json = File(exists=True, desc="data dictionary of features.tsv")
    exclusions_tsv = File(exists=True, desc="excluded subjects with reasons")


class BuildFeatureTable(SimpleInterface):
    """Long-format measures + clinical + participants -> one tidy feature table."""

    input_spec = _BuildFeatureTableInputSpec
    output_spec = _BuildFeatureTableOutputSpec

    def _run_interface(self, runtime):
        config = json.loads(Path(self.inputs.config_file).read_text()) if self.inputs.config_file else {}
        unknown = sorted(set(config) - _FEATURE_CONFIG_KEYS)
        if unknown:
            raise ValueError(f"unknown feature configuration key(s) {unknown}")
        frames = []
        for path in self.inputs.measures_files:
            frame = read_bids_tsv(path)
            frame["source"] = Path(path).name
            frames.append(frame)
        excluded = (read_bids_tsv(self.inputs.excluded_runs_file)
                    if self.inputs.excluded_runs_file else None)
        result = build_feature_table(
            pd.concat(frames, ignore_index=True), read_bids_tsv(self.inputs.clinical_file),
            read_bids_tsv(self.inputs.participants_file), excluded_runs=excluded,
            sources={"clinical": Path(self.inputs.clinical_file).name,
                     "participants": Path(self.inputs.participants_file).name},
            **{k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items()})
        cwd = Path(os.getcwd())
        self._results["features_tsv"] = str(write_tsv(cwd / "features.tsv", result.table))
        self._results["dictionary_json"] = str(write_json(cwd / "features.json", result.dictionary))
        self._results["exclusions_tsv"] = str(write_tsv(cwd / "exclusions.tsv", result.exclusions))
        return runtime


class _PredictInputSpec(BaseInterfaceInputSpec):
    features_tsv = File(exists=True, mandatory=True, desc="feature table from BuildFeatureTable")
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
            paths.append(str(write_text(cwd / name, _svg_text(fig))))
        self._results.update({k: str(v) for k, v in out.items()})
        self._results["figures"] = paths
        return runtime


def _svg_text(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()
