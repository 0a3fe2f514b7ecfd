"""Nipype interfaces: first-level task GLM of one run, and fixed effects across runs.

:class:`FirstLevelGLM` reads a preprocessed BOLD run, its brain mask, BIDS events and the
selected confound regressors, builds the design (:func:`ketflow.signal.design.make_task_design`),
fits the voxelwise GLM (:func:`ketflow.signal.glm.fit_glm`, data scaled to percent signal
change of each voxel's mean unless ``signal_scaling`` is false) and writes into the
working directory:

* ``contrast-<label>_stat-{effect,variance,z}_statmap.nii.gz`` for every contrast;
* ``desc-design_design.tsv`` and ``desc-design_design.svg`` (the design matrix);
* ``desc-roi_contrasts.tsv`` (roi, contrast, effect, variance, t, z, dof) when a label
  image and its labels TSV (``index``, ``name``) are given: GLM of ROI mean signals.

Task config JSON keys: ``type`` ("task", the default), ``conditions`` (list),
``derived_conditions`` (list of ``{name, trial_type, previous}``), ``contrasts``
({name: {condition: weight} or expression}), ``hrf`` ("spm" | "spm+derivative"),
``derivative`` (bool, same as "spm+derivative"), ``high_pass_s`` (default 128),
``noise_model`` ("ar1" | "ols"), ``signal_scaling`` (default true: percent of each
voxel's mean, as nilearn).

:class:`FixedEffects` combines one contrast's effect/variance maps of several runs by
inverse-variance weighting.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn.glm.first_level import mean_scaling
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    OutputMultiObject,
    SimpleInterface,
    Str,
    TraitedSpec,
    traits,
)

from ..io.derivatives import bids_label
from ..io.write import write_nifti, write_tsv
from ..signal.design import TaskDesign, contrast_vector, make_task_design
from ..signal.extract import extract
from ..signal.glm import compute_contrast, fit_glm, fixed_effects, roi_contrasts
from .denoise import read_mask, read_masked_bold

TASK_DEFAULTS = {
    "type": "task",
    "conditions": [],
    "derived_conditions": [],
    "contrasts": {},
    "hrf": "spm",
    "derivative": False,
    "high_pass_s": 128.0,
    "noise_model": "ar1",
    "signal_scaling": True,
}


def task_settings(text: str) -> dict:
    """Task config JSON text merged over :data:`TASK_DEFAULTS` (unknown keys rejected)."""
    given = json.loads(text) if text else {}
    unknown = set(given) - set(TASK_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown task settings {sorted(unknown)}; known: {sorted(TASK_DEFAULTS)}")
    settings = {**TASK_DEFAULTS, **given}
    if settings["hrf"] not in ("spm", "spm+derivative"):
        raise ValueError(f"hrf must be 'spm' or 'spm+derivative', got {settings['hrf']!r}")
    if settings["type"] != "task":
        raise ValueError(f"a GLM needs a task run, the config says type {settings['type']!r}")
    if not settings["conditions"]:
        raise ValueError("the task config lists no conditions")
    settings["derivative"] = bool(settings["derivative"]) or settings["hrf"] == "spm+derivative"
    return settings


def load_task_design(
    events_file: str, tr: float, n_scans: int, start_time: float, confounds_file: str | None, settings: dict
) -> TaskDesign:
    """Design of one run from its files; errors name the offending file."""
    confounds = None
    if confounds_file:
        confounds = pd.read_csv(confounds_file, sep="\t")
        if len(confounds) != n_scans:
            raise ValueError(f"{Path(confounds_file).name}: {len(confounds)} rows for {n_scans} volumes")
    try:
        events = pd.read_csv(events_file, sep="\t", na_values=["n/a"])
        return make_task_design(
            events,
            tr,
            n_scans,
            settings["conditions"],
            settings["derived_conditions"],
            start_time=start_time,
            derivative=settings["derivative"],
            high_pass=settings["high_pass_s"],
            confounds=confounds,
        )
    except ValueError as err:
        raise ValueError(f"{Path(events_file).name}: {err}") from err


def plot_design(matrix: pd.DataFrame, path: Path) -> Path:
    """Design matrix figure (nilearn's rendering) saved as SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nilearn.plotting import plot_design_matrix

    ax = plot_design_matrix(matrix)
    ax.figure.savefig(path, format="svg", bbox_inches="tight")
    plt.close(ax.figure)
    return path


def map_to_image(values: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """float32 image holding ``values`` (n_voxels,) in ``mask`` and 0 elsewhere."""
    out = np.zeros(mask.shape, dtype=np.float32)
    out[mask] = values
    return nib.Nifti1Image(out, affine)


def contrast_files(prefix: str, name: str) -> dict[str, str]:
    """File names of one contrast's maps."""
    label = bids_label(name)
    return {stat: f"{prefix}contrast-{label}_stat-{stat}_statmap.nii.gz" for stat in ("effect", "variance", "z")}


class _FirstLevelGLMInputSpec(BaseInterfaceInputSpec):
    bold_file = File(exists=True, mandatory=True, desc="preprocessed (denoising-ready) 4-D BOLD")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the BOLD grid")
    events_file = File(exists=True, mandatory=True, desc="BIDS events TSV")
    tr = traits.Float(mandatory=True, desc="repetition time (s)")
    start_time = traits.Float(0.0, usedefault=True, desc="acquisition time of the first sample (s)")
    confounds_file = File(exists=True, desc="selected confound regressors TSV, one column each")
    task_config = Str(mandatory=True, desc="task config JSON (module docstring)")
    labels_file = File(exists=True, desc="ROI label image on the BOLD grid")
    labels_tsv = File(exists=True, desc="ROI labels TSV (index, name)")


class _FirstLevelGLMOutputSpec(TraitedSpec):
    contrast_names = traits.List(Str, desc="contrast names, in the order of the maps")
    effect_maps = OutputMultiObject(File(exists=True), desc="effect size NIfTI per contrast")
    variance_maps = OutputMultiObject(File(exists=True), desc="effect variance NIfTI per contrast")
    z_maps = OutputMultiObject(File(exists=True), desc="z NIfTI per contrast")
    dof = traits.Float(desc="residual degrees of freedom")
    design_tsv = File(exists=True, desc="design matrix TSV")
    design_svg = File(exists=True, desc="design matrix figure")
    roi_tsv = File(desc="ROI contrast estimates TSV")


class FirstLevelGLM(SimpleInterface):
    """Voxelwise task GLM of one run (OLS or AR(1)) with per-contrast maps."""

    input_spec = _FirstLevelGLMInputSpec
    output_spec = _FirstLevelGLMOutputSpec

    def _run_interface(self, runtime):
        settings = task_settings(self.inputs.task_config)
        mask_img = nib.load(self.inputs.brain_mask)
        mask = read_mask(self.inputs.brain_mask)
        data = read_masked_bold(self.inputs.bold_file, mask)
        if settings["signal_scaling"]:
            data, _ = mean_scaling(data)
        confounds = self.inputs.confounds_file if self.inputs.confounds_file else None
        design = load_task_design(
            self.inputs.events_file, self.inputs.tr, data.shape[0], self.inputs.start_time, confounds, settings
        )
        x = design.matrix
        fit = fit_glm(data, x.to_numpy(), settings["noise_model"])
        cwd = Path(os.getcwd())
        names, effects, variances, zs, vectors = [], [], [], [], {}
        for name, spec in settings["contrasts"].items():
            vec = contrast_vector(spec, design)
            vectors[name] = vec
            res = compute_contrast(fit, vec)
            files = contrast_files("", name)
            for stat, values, sink in (
                ("effect", res.effect, effects),
                ("variance", res.variance, variances),
                ("z", res.z, zs),
            ):
                sink.append(str(write_nifti(cwd / files[stat], map_to_image(values, mask, mask_img.affine))))
            names.append(name)
        design_tsv = write_tsv(cwd / "desc-design_design.tsv", x.reset_index())
        design_svg = plot_design(x, cwd / "desc-design_design.svg")
        self._results.update(
            contrast_names=names,
            effect_maps=effects,
            variance_maps=variances,
            z_maps=zs,
            dof=float(fit.dof),
            design_tsv=str(design_tsv),
            design_svg=str(design_svg),
        )
        if self.inputs.labels_file and self.inputs.labels_tsv and vectors:
            table = pd.read_csv(self.inputs.labels_tsv, sep="\t").sort_values("index")
            if table["index"].tolist() != list(range(1, len(table) + 1)):
                raise ValueError(f"{Path(self.inputs.labels_tsv).name}: label indices must be 1..{len(table)}")
            labels = np.asanyarray(nib.load(self.inputs.labels_file).dataobj).astype(np.int64)
            if labels.shape != mask.shape:
                raise ValueError(f"label image {labels.shape} and brain mask {mask.shape} differ in shape")
            signals = pd.DataFrame(extract(data, labels[mask], len(table), "mean"), columns=table["name"].tolist())
            rois = roi_contrasts(signals, x, vectors, settings["noise_model"])
            self._results["roi_tsv"] = str(write_tsv(cwd / "desc-roi_contrasts.tsv", rois))
        return runtime


class _FixedEffectsInputSpec(BaseInterfaceInputSpec):
    effect_maps = InputMultiObject(File(exists=True), mandatory=True, desc="one contrast's effect map per run")
    variance_maps = InputMultiObject(File(exists=True), mandatory=True, desc="matching variance maps")
    dofs = traits.List(traits.Float, mandatory=True, desc="residual degrees of freedom per run")
    brain_mask = File(exists=True, mandatory=True, desc="mask the maps are defined in")
    contrast_name = Str("contrast", usedefault=True, desc="contrast name for the output files")


class _FixedEffectsOutputSpec(TraitedSpec):
    effect_map = File(exists=True)
    variance_map = File(exists=True)
    z_map = File(exists=True)


class FixedEffects(SimpleInterface):
    """Inverse-variance weighted combination of a contrast across runs."""

    input_spec = _FixedEffectsInputSpec
    output_spec = _FixedEffectsOutputSpec

    def _run_interface(self, runtime):
        n = len(self.inputs.effect_maps)
        if len(self.inputs.variance_maps) != n or len(self.inputs.dofs) != n:
            raise ValueError(
                f"{n} effect maps, {len(self.inputs.variance_maps)} variance maps and "
                f"{len(self.inputs.dofs)} dofs: one of each per run is needed"
            )
        mask_img = nib.load(self.inputs.brain_mask)
        mask = read_mask(self.inputs.brain_mask)

        def load(path):
            img = nib.load(path)
            if img.shape[:3] != mask.shape:
                raise ValueError(f"{Path(path).name}: grid {img.shape[:3]} differs from the mask {mask.shape}")
            return np.asanyarray(img.dataobj, dtype=np.float64)[mask]

        res = fixed_effects(
            np.array([load(p) for p in self.inputs.effect_maps]),
            np.array([load(p) for p in self.inputs.variance_maps]),
            self.inputs.dofs,
        )
        files = contrast_files("desc-fixed_", self.inputs.contrast_name)
        cwd = Path(os.getcwd())
        for stat, values in (("effect", res.effect), ("variance", res.variance), ("z", res.z)):
            self._results[f"{stat}_map"] = str(write_nifti(cwd / files[stat], map_to_image(values, mask, mask_img.affine)))
        return runtime
