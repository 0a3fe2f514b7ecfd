"""Nipype interfaces: first-level task GLM of one run, and fixed effects across runs.

:class:`FirstLevelGLM` reads the run's percent-scaled in-mask data and task design (both from
:class:`~ketflow.interfaces.task.TaskModelData`), fits the voxelwise GLM
(:func:`ketflow.signal.glm.fit_glm`) and writes into the working directory:

* ``contrast-<label>_stat-{effect,variance,z}_statmap.nii.gz`` for every contrast;
* ``desc-design_design.tsv`` and ``desc-design_design.svg`` (the design matrix);
* ``desc-design_meta.json``: the design description
  (:func:`ketflow.signal.describe.design_description`), merged into the sidecars;
* ``desc-roi_contrasts.tsv`` (roi, contrast, effect, variance, t, z, dof): the GLM of each
  ROI's mean over its voxels of the percent-scaled data.

:class:`FixedEffects` combines the contrast maps (and ROI contrast tables) of several runs
of one task and session by inverse-variance weighting
(:func:`ketflow.signal.glm.fixed_effects`), within the voxels every run's brain mask holds.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
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

from ..config import GLM, Task
from ..io.boldcache import read_mask
from ..io.design import load_task_design
from ..io.names import bids_label
from ..io.rois import read_labels
from ..io.svg import write_svg
from ..io.write import write_json, write_nifti, write_tsv
from ..signal.describe import design_description
from ..signal.design import contrast_vector
from ..signal.extract import extract
from ..signal.glm import (
    compute_contrast,
    fit_glm,
    fixed_effects,
    fixed_effects_table,
    roi_contrasts,
    voxel_smoother,
)
from ..signal.plots import design_figure


def map_to_image(values: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """float32 image holding ``values`` (n_voxels,) in ``mask`` and 0 elsewhere."""
    out = np.zeros(mask.shape, dtype=np.float32)
    out[mask] = values
    return nib.Nifti1Image(out, affine)


#: The maps of a contrast, as nilearn's ``save_glm_to_bids`` and fitlins write them (``stat-p``:
#: one-sided, upper tail).
CONTRAST_STATS = ("effect", "variance", "t", "z", "p")


def contrast_files(prefix: str, name: str) -> dict[str, str]:
    """Working file names of one contrast's maps (``<prefix>contrast-<label>_stat-<stat>_statmap.nii.gz``)."""
    label = bids_label(name)
    return {stat: f"{prefix}contrast-{label}_stat-{stat}_statmap.nii.gz" for stat in CONTRAST_STATS}


def write_contrast_maps(prefix: str, name: str, result, mask: np.ndarray, affine: np.ndarray) -> dict[str, str]:
    """Write one contrast's effect, variance, t, z and p maps into the working directory; stat -> path."""
    files = contrast_files(prefix, name)
    return {stat: str(write_nifti(Path(os.getcwd()) / files[stat], map_to_image(getattr(result, stat), mask, affine)))
            for stat in CONTRAST_STATS}


class _FirstLevelGLMInputSpec(BaseInterfaceInputSpec):
    percent_bold = File(exists=True, mandatory=True, desc="percent-scaled in-mask data from TaskModelData")
    task_design = File(exists=True, mandatory=True, desc="the run's task design from TaskModelData")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the BOLD grid")
    labels_file = File(exists=True, mandatory=True, desc="ROI label image on the BOLD grid")
    labels_tsv = File(exists=True, mandatory=True, desc="ROI labels TSV (index, name)")
    task = traits.Instance(Task, mandatory=True, desc="the run's task section (contrasts)")
    glm = traits.Instance(GLM, mandatory=True, desc="the configuration's glm section (noise model, high-pass)")


class _FirstLevelGLMOutputSpec(TraitedSpec):
    contrast_names = traits.List(Str, desc="contrast names, in the order of the maps")
    effect_maps = OutputMultiObject(File(exists=True), desc="effect size NIfTI per contrast")
    variance_maps = OutputMultiObject(File(exists=True), desc="effect variance NIfTI per contrast")
    z_maps = OutputMultiObject(File(exists=True), desc="z NIfTI per contrast")
    t_maps = OutputMultiObject(File(exists=True), desc="t NIfTI per contrast")
    p_maps = OutputMultiObject(File(exists=True), desc="one-sided p NIfTI per contrast")
    dof = traits.Float(desc="residual degrees of freedom")
    design_tsv = File(exists=True, desc="design matrix TSV")
    design_svg = File(exists=True, desc="design matrix figure")
    design_json = File(exists=True, desc="design description (sidecar fields)")
    roi_tsv = File(desc="ROI contrast estimates TSV")


class FirstLevelGLM(SimpleInterface):
    """Voxelwise task GLM of one run (OLS or AR(1)) with per-contrast maps."""

    input_spec = _FirstLevelGLMInputSpec
    output_spec = _FirstLevelGLMOutputSpec

    def _run_interface(self, runtime):
        task, glm = self.inputs.task, self.inputs.glm
        mask_img = nib.load(self.inputs.brain_mask)
        mask = read_mask(self.inputs.brain_mask)
        data = np.load(self.inputs.percent_bold)
        design = load_task_design(self.inputs.task_design)
        x = design.matrix
        fit = fit_glm(data, x.to_numpy(), glm.noise_model, smoother=voxel_smoother(
            glm.noise_model, mask, mask_img.affine, glm.autocorrelation_fwhm_mm))
        vectors = {name: contrast_vector(spec, design) for name, spec in task.contrasts_by_name().items()}
        maps = {name: write_contrast_maps("", name, compute_contrast(fit, vec), mask, mask_img.affine)
                for name, vec in vectors.items()}
        cwd = Path(os.getcwd())
        meta = design_description(design, high_pass_s=glm.high_pass_s, noise_model=glm.noise_model, dof=fit.dof,
                                  vectors=vectors, autocorrelation_fwhm_mm=glm.autocorrelation_fwhm_mm)
        self._results.update(
            contrast_names=list(maps),
            effect_maps=[m["effect"] for m in maps.values()],
            variance_maps=[m["variance"] for m in maps.values()],
            z_maps=[m["z"] for m in maps.values()],
            t_maps=[m["t"] for m in maps.values()],
            p_maps=[m["p"] for m in maps.values()],
            dof=float(fit.dof),
            design_tsv=str(write_tsv(cwd / "desc-design_design.tsv", x.reset_index())),
            design_svg=str(write_svg(cwd / "desc-design_design.svg", design_figure(x), bbox_inches="tight")),
            design_json=str(write_json(cwd / "desc-design_meta.json", meta)),
        )
        if vectors:
            labels, rois = read_labels(self.inputs.labels_file, self.inputs.labels_tsv, mask)
            inside = np.flatnonzero(labels > 0)
            signals = pd.DataFrame(extract(data[:, inside], labels[inside], len(rois), "mean"), columns=rois)
            table = roi_contrasts(signals, x, vectors, glm.noise_model)
            self._results["roi_tsv"] = str(write_tsv(cwd / "desc-roi_contrasts.tsv", table))
        return runtime


#: One run's maps: a list, or a single file (Nipype unlists one-element outputs).
_RunFiles = traits.Either(File(exists=True), traits.List(File(exists=True)))


#: How run-level ROI estimates of a session are pooled (``glm.run_pooling``; sidecars).
POOLING_DESCRIPTION = {
    "precision": "precision-weighted (inverse-variance, fixed-effects) mean of the runs' ROI estimates: weight of "
                 "run k = (1 / variance_k) / sum_j (1 / variance_j); runs that lack an ROI (coverage rule) do not "
                 "count for it",
    "equal": "equal-weight mean of the runs' ROI estimates (variance: mean run variance / number of runs)",
}


class _FixedEffectsInputSpec(BaseInterfaceInputSpec):
    effect_maps = traits.List(_RunFiles, mandatory=True,
                              desc="per run, the effect map of every contrast (run-major)")
    variance_maps = traits.List(_RunFiles, mandatory=True, desc="matching variance maps")
    contrast_names = traits.List(traits.List(Str), mandatory=True, desc="per run, the contrast names of its maps")
    dofs = traits.List(traits.Float, mandatory=True, desc="residual degrees of freedom per run")
    brain_masks = InputMultiObject(File(exists=True), mandatory=True,
                                   desc="brain mask of each run (their intersection is used)")
    roi_tables = InputMultiObject(File(exists=True), desc="per run, the ROI contrast table (roi, contrast, ...)")
    roi_pooling = traits.Enum("precision", "equal", usedefault=True,
                              desc="ROI estimates: inverse-variance weighted (default) or equal-weight mean "
                                   "(glm.run_pooling)")


class _FixedEffectsOutputSpec(TraitedSpec):
    contrast_names = traits.List(Str, desc="contrast names, in the order of the maps")
    effect_maps = OutputMultiObject(File(exists=True), desc="combined effect per contrast")
    variance_maps = OutputMultiObject(File(exists=True), desc="combined variance per contrast")
    z_maps = OutputMultiObject(File(exists=True), desc="combined z per contrast")
    roi_tsv = File(desc="combined ROI contrast table")
    meta_json = File(exists=True, desc="sidecar fields of the combination")


class FixedEffects(SimpleInterface):
    """Inverse-variance weighted combination of every contrast across runs (nilearn's convention)."""

    input_spec = _FixedEffectsInputSpec
    output_spec = _FixedEffectsOutputSpec

    def _run_interface(self, runtime):
        inputs = self.inputs
        n_runs = len(inputs.effect_maps)
        if not (len(inputs.variance_maps) == len(inputs.contrast_names) == len(inputs.dofs)
                == len(inputs.brain_masks) == n_runs) or n_runs < 2:
            raise ValueError(
                f"fixed effects need one list of effect maps, variance maps, contrast names, a dof and a "
                f"brain mask per run, for at least two runs; got {n_runs}, {len(inputs.variance_maps)}, "
                f"{len(inputs.contrast_names)}, {len(inputs.dofs)}, {len(inputs.brain_masks)}"
            )
        effect_maps = [[m] if isinstance(m, str) else list(m) for m in inputs.effect_maps]
        variance_maps = [[m] if isinstance(m, str) else list(m) for m in inputs.variance_maps]
        names = list(inputs.contrast_names[0])
        for run, other in enumerate(inputs.contrast_names[1:], start=2):
            if list(other) != names:
                raise ValueError(f"run {run} has contrasts {list(other)}; run 1 has {names}")
        if any(len(m) != len(names) for m in effect_maps + variance_maps):
            raise ValueError(f"every run needs one effect and one variance map per contrast ({len(names)})")
        masks = [read_mask(p) for p in inputs.brain_masks]
        if any(m.shape != masks[0].shape for m in masks):
            raise ValueError("the runs' brain masks are on different grids")
        mask = np.logical_and.reduce(masks)
        affine = nib.load(inputs.brain_masks[0]).affine

        def load(path):
            img = nib.load(path)
            if img.shape[:3] != mask.shape:
                raise ValueError(f"{Path(path).name}: grid {img.shape[:3]} differs from the mask {mask.shape}")
            return np.asanyarray(img.dataobj, dtype=np.float64)[mask]

        maps = [write_contrast_maps("", name, fixed_effects(np.array([load(m[k]) for m in effect_maps]),
                                                            np.array([load(m[k]) for m in variance_maps]),
                                                            inputs.dofs), mask, affine)
                for k, name in enumerate(names)]
        meta = {
            "FixedEffects": {
                "NumberOfRuns": n_runs,
                "Method": "precision-weighted (inverse-variance) mean of the run effects; variance "
                          "1 / sum(1 / run variances); z from t on the summed degrees of freedom",
                "RunDegreesOfFreedom": list(inputs.dofs),
                "Mask": "voxels inside every run's brain mask",
            },
            "DegreesOfFreedom": float(np.sum(inputs.dofs)),
        }
        if inputs.roi_tables:
            meta["FixedEffects"]["ROIPooling"] = POOLING_DESCRIPTION[inputs.roi_pooling]
        cwd = Path(os.getcwd())
        self._results.update(contrast_names=names, effect_maps=[m["effect"] for m in maps],
                             variance_maps=[m["variance"] for m in maps], z_maps=[m["z"] for m in maps],
                             meta_json=str(write_json(cwd / "desc-fixed_meta.json", meta)))
        if inputs.roi_tables:
            tables = [pd.read_csv(p, sep="\t") for p in inputs.roi_tables]
            combined = fixed_effects_table(tables, inputs.dofs, [Path(p).name for p in inputs.roi_tables],
                                           precision_weighted=inputs.roi_pooling == "precision")
            self._results["roi_tsv"] = str(write_tsv(cwd / "desc-roi_contrasts.tsv", combined))
        return runtime
