"""Nipype interface of the trial inference on circuit measures (one family × model analysis).

:class:`TrialInference` reads the group feature table (``features.tsv`` / ``features.json``)
and an analysis specification JSON written by :mod:`ketflow.workflows.group_inference`
(``family``, ``model``, ``settings`` of :class:`ketflow.group.inference.InferenceSettings`,
``apriori``, ``rois``), runs :func:`ketflow.group.inference.prepare_analysis` and
:func:`~ketflow.group.inference.run_analysis`, and writes the result table, its sidecar fields
and, for resting FC and gPPI, one ROI-to-ROI matrix figure per edge set and effect set
(:mod:`ketflow.group.roi_matrices`, :mod:`ketflow.group.matrix_plots`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    OutputMultiObject,
    SimpleInterface,
    TraitedSpec,
)

from ..group.inference import FAMILY_NAMES, InferenceSettings, prepare_analysis, run_analysis
from ..group.matrix_plots import roi_matrix_figure
from ..group.roi_matrices import edge_matrices
from ..group.trial_models import EFFECTS
from ..io.clinical import read_bids_tsv
from ..io.derivatives import bids_label
from ..io.write import write_json, write_text, write_tsv
from ..io.svg import figure_to_svg

#: Display names of the models.
MODEL_NAMES = {"ancova": "ANCOVA", "lmm": "mixed model"}


class _TrialInferenceInputSpec(BaseInterfaceInputSpec):
    features_tsv = File(exists=True, mandatory=True, desc="feature table (ketflow.group.features)")
    dictionary_json = File(exists=True, mandatory=True, desc="its data dictionary")
    analysis_json = File(exists=True, mandatory=True, desc="analysis specification (family, model, settings, "
                                                           "apriori, rois)")


class _TrialInferenceOutputSpec(TraitedSpec):
    table_tsv = File(exists=True, desc="one row per measure and effect")
    metadata_json = File(exists=True, desc="sidecar fields: model, corrections, counts, columns")
    figures = OutputMultiObject(File(exists=True), desc="ROI-to-ROI matrix figures (FC and gPPI), "
                                                        "named desc-<edge set>_figure.svg")


class TrialInference(SimpleInterface):
    """Arm × session, within-arm change and baseline difference on one family, with FDR and FWE."""

    input_spec = _TrialInferenceInputSpec
    output_spec = _TrialInferenceOutputSpec

    def _run_interface(self, runtime):
        spec = json.loads(Path(self.inputs.analysis_json).read_text())
        settings = InferenceSettings(**{k: tuple(v) if isinstance(v, list) else v
                                        for k, v in spec["settings"].items()})
        dictionary = json.loads(Path(self.inputs.dictionary_json).read_text())
        data = prepare_analysis(read_bids_tsv(self.inputs.features_tsv), dictionary, spec["family"], spec["model"],
                                settings, spec.get("apriori"))
        result = run_analysis(data)
        cwd = Path(os.getcwd())
        self._results["table_tsv"] = str(write_tsv(cwd / "inference.tsv", result.table))
        self._results["metadata_json"] = str(write_json(cwd / "metadata.json", result.metadata))
        self._results["figures"] = [str(path) for path in
                                    matrix_figures(result.table, spec["family"], spec["model"], settings,
                                                   spec.get("rois", []), cwd)]
        return runtime


def matrix_figures(table, family: str, model: str, settings: InferenceSettings, rois: list[str],
                   folder: Path) -> list[Path]:
    """One SVG per FC / gPPI / beta-series edge set with a panel per effect; [] for the other families."""
    if family not in ("fc", "ppi", "betaseries"):
        return []
    active, control = settings.arms[0], settings.arms[1]
    arm_of = {None: f"{active} - {control}", "active": active, "control": control}
    titles = {"arm_by_session": f"arm x session ({active} - {control})", "baseline_difference": "baseline difference"}
    panels: dict[str, list] = {}
    for effect in EFFECTS:
        title = titles.get(effect.name, f"change in {arm_of[effect.arm]}")
        for matrix in edge_matrices(table, effect.name, arm_of[effect.arm], rois):
            panels.setdefault(matrix.label, []).append((title, matrix))
    paths = []
    for label, items in panels.items():
        name = label.split("_", 2)
        title = f"{FAMILY_NAMES[family]} {' '.join(name[1:])}, {MODEL_NAMES[model]}: t per edge"
        svg = figure_to_svg(roi_matrix_figure(items, title))
        paths.append(write_text(folder / f"desc-{bids_label(label)}_figure.svg", svg))
    return paths
