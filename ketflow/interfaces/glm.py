"""Nipype interfaces: first-level task GLM of one run, and fixed effects across runs.

:class:`FirstLevelGLM` reads a preprocessed BOLD run (its in-mask cache,
:mod:`ketflow.io.boldcache`, or a 4-D NIfTI), its brain mask, BIDS events and the selected
confound regressors, builds the design (:func:`ketflow.signal.design.make_task_design`),
fits the voxelwise GLM (:func:`ketflow.signal.glm.fit_glm`, data scaled to percent signal
change of each voxel's mean unless ``signal_scaling`` is false) and writes into the
working directory:

* ``contrast-<label>_stat-{effect,variance,z}_statmap.nii.gz`` for every contrast;
* ``desc-design_design.tsv`` and ``desc-design_design.svg`` (the design matrix);
* ``desc-design_meta.json``: the full design description (:func:`design_description`),
  merged into the sidecars of every output;
* ``desc-roi_contrasts.tsv`` (roi, contrast, effect, variance, t, z, dof) when a label
  image and its labels TSV (``index``, ``name``) are given: GLM of each ROI's mean over
  its voxels of the (percent-scaled) data.

Task config JSON keys: ``type`` ("task", the default), ``conditions`` (list),
``derived_conditions`` (list of ``{name, trial_type, previous}``), ``contrasts``
({name: {condition: weight} or expression}), ``hrf`` ("spm" | "spm+derivative"),
``derivative`` (bool, same as "spm+derivative"), ``high_pass_s`` (default 128),
``noise_model`` ("ar1" | "ols" | "ar<p>-corrected"), ``autocorrelation_fwhm_mm`` (smoothing of
the corrected models' autocorrelations in voxelwise fits, default 15), ``signal_scaling``
(default true: percent of each voxel's mean, as nilearn).

:class:`FixedEffects` combines the contrast maps (and ROI contrast tables) of several runs
of one task and session by inverse-variance weighting, within the voxels every run's brain
mask holds.
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
from ..io.write import write_json, write_nifti, write_text, write_tsv
from ..reports.svg import figure_to_svg
from ..signal.design import DRIFT_PREFIX, TaskDesign, contrast_vector, make_task_design
from ..signal.extract import extract
from ..signal.glm import (
    AUTOCORRELATION_FWHM_MM,
    compute_contrast,
    fit_glm,
    fixed_effects,
    noise_model_description,
    roi_contrasts,
    voxel_smoother,
)
from ..io.boldcache import open_bold_cache, read_mask, voxel_chunks
from .bold import cache_of

TASK_DEFAULTS = {
    "type": "task",
    "conditions": [],
    "derived_conditions": [],
    "contrasts": {},
    "hrf": "spm",
    "derivative": False,
    "high_pass_s": 128.0,
    "noise_model": "ar1",
    "autocorrelation_fwhm_mm": AUTOCORRELATION_FWHM_MM,
    "signal_scaling": True,
}
#: Name prefix of the censoring spike columns written by ``SelectConfounds``.
SPIKE_PREFIX = "censored_"
PERCENT_UNITS = "percent signal change (100 * (y / temporal mean of the voxel - 1))"


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


def design_description(design: TaskDesign, settings: dict, dof: int, vectors: dict[str, np.ndarray]) -> dict:
    """Sidecar fields describing a first-level model: columns, confounds, HRF, filter, noise model.

    ``vectors`` maps contrast names to weight vectors over ``design.matrix.columns``.
    """
    columns = list(design.matrix.columns)
    task = set(design.columns) | {f"{c}_derivative" for c in design.columns}
    nuisance = [c for c in columns if c not in task]
    drifts = [c for c in nuisance if c.startswith(DRIFT_PREFIX)]
    confounds = [c for c in nuisance if c not in drifts and c != "constant"]
    spikes = [c for c in confounds if c.startswith(SPIKE_PREFIX)]
    scaling = PERCENT_UNITS if settings["signal_scaling"] else "none (units of the preprocessed BOLD)"
    return {
        "DesignColumns": columns,
        "ConditionColumns": list(design.columns),
        "ConditionMembers": design.members,
        "UnestimableConditions": design.unestimable,
        "NumberOfEvents": design.n_events,
        "ConfoundColumns": [c for c in confounds if c not in spikes],
        "SpikeRegressors": {"Count": len(spikes),
                            "Description": "one indicator column per censored volume (dummy scans and "
                                           "framewise-displacement censoring), named censored_<volume index>"},
        "HRF": {"Model": "SPM canonical HRF (double gamma: peak 6 s, undershoot 16 s, ratio 1/6, 32 s)"
                + (" and its temporal derivative" if settings["derivative"] else ""),
                "MicrotimeResolution": design.microtime_resolution,
                "MicrotimeOnset": design.microtime_onset,
                "StartTime": design.start_time},
        "HighPass": {"CutoffSeconds": settings["high_pass_s"], "Model": "discrete cosine set",
                     "Columns": drifts},
        "NoiseModel": noise_model_description(settings["noise_model"], settings["autocorrelation_fwhm_mm"]),
        "SignalScaling": scaling,
        "EffectUnits": "percent signal change per unit regressor (condition regressors: HRF-convolved "
                       "unit-height boxcars, unit-sum HRF)" if settings["signal_scaling"] else "data units",
        "Contrasts": {name: {c: float(w) for c, w in zip(columns, vec) if w != 0} for name, vec in vectors.items()},
        "DegreesOfFreedom": int(dof),
    }


def plot_design(matrix: pd.DataFrame, path: Path) -> Path:
    """Design matrix figure (nilearn's rendering) saved as SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nilearn.plotting import plot_design_matrix

    ax = plot_design_matrix(matrix)
    write_text(path, figure_to_svg(ax.figure, bbox_inches="tight"))
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


def read_labels(labels_file: str, labels_tsv: str, mask: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """ROI label of every in-mask voxel (n_voxels,), 0 = none, and the ROI names (index 1..n)."""
    table = pd.read_csv(labels_tsv, sep="\t").sort_values("index")
    if table["index"].tolist() != list(range(1, len(table) + 1)):
        raise ValueError(f"{Path(labels_tsv).name}: label indices must be 1..{len(table)}")
    labels = np.asanyarray(nib.load(labels_file).dataobj).astype(np.int64)
    if labels.shape != mask.shape:
        raise ValueError(f"label image {labels.shape} and brain mask {mask.shape} differ in shape")
    return labels[mask], table["name"].astype(str).tolist()


def scaled_bold(cache: str, settings: dict) -> np.ndarray:
    """In-mask (time, voxels) float32 data of a BOLD cache, in percent of each voxel's mean when
    ``signal_scaling`` (nilearn's ``mean_scaling``, applied block by block: it is per voxel)."""
    data = np.empty(open_bold_cache(cache).shape, dtype=np.float32)
    for columns, block in voxel_chunks(cache):
        data[:, columns] = mean_scaling(block)[0] if settings["signal_scaling"] else block
    return data


def roi_voxels(labels: np.ndarray) -> np.ndarray:
    """Indices of the in-mask voxels that belong to an ROI (label > 0)."""
    return np.flatnonzero(labels > 0)


class _FirstLevelGLMInputSpec(BaseInterfaceInputSpec):
    bold_cache = File(exists=True, mandatory=True, xor=["bold_file"], desc="in-mask BOLD cache from CacheBOLD")
    bold_file = File(exists=True, mandatory=True, xor=["bold_cache"],
                     desc="or the preprocessed (denoising-ready) 4-D BOLD")
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
    design_json = File(exists=True, desc="design description (sidecar fields)")
    roi_tsv = File(desc="ROI contrast estimates TSV")


class FirstLevelGLM(SimpleInterface):
    """Voxelwise task GLM of one run (OLS or AR(1)) with per-contrast maps."""

    input_spec = _FirstLevelGLMInputSpec
    output_spec = _FirstLevelGLMOutputSpec

    def _run_interface(self, runtime):
        settings = task_settings(self.inputs.task_config)
        mask_img = nib.load(self.inputs.brain_mask)
        mask = read_mask(self.inputs.brain_mask)
        with cache_of(self.inputs, mask) as cache:
            data = scaled_bold(cache, settings)
        confounds = self.inputs.confounds_file if self.inputs.confounds_file else None
        design = load_task_design(
            self.inputs.events_file, self.inputs.tr, data.shape[0], self.inputs.start_time, confounds, settings
        )
        x = design.matrix
        fit = fit_glm(data, x.to_numpy(), settings["noise_model"], smoother=voxel_smoother(
            settings["noise_model"], mask, mask_img.affine, settings["autocorrelation_fwhm_mm"]))
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
        meta = design_description(design, settings, fit.dof, vectors)
        self._results.update(
            contrast_names=names,
            effect_maps=effects,
            variance_maps=variances,
            z_maps=zs,
            dof=float(fit.dof),
            design_tsv=str(write_tsv(cwd / "desc-design_design.tsv", x.reset_index())),
            design_svg=str(plot_design(x, cwd / "desc-design_design.svg")),
            design_json=str(write_json(cwd / "desc-design_meta.json", meta)),
        )
        if self.inputs.labels_file and self.inputs.labels_tsv and vectors:
            labels, rois = read_labels(self.inputs.labels_file, self.inputs.labels_tsv, mask)
            inside = roi_voxels(labels)
            signals = pd.DataFrame(extract(data[:, inside], labels[inside], len(rois), "mean"), columns=rois)
            table = roi_contrasts(signals, x, vectors, settings["noise_model"])
            self._results["roi_tsv"] = str(write_tsv(cwd / "desc-roi_contrasts.tsv", table))
        return runtime


#: One run's maps: a list, or a single file (Nipype unlists one-element outputs).
_RunFiles = traits.Either(File(exists=True), traits.List(File(exists=True)))


class _FixedEffectsInputSpec(BaseInterfaceInputSpec):
    effect_maps = traits.List(_RunFiles, mandatory=True,
                              desc="per run, the effect map of every contrast (run-major)")
    variance_maps = traits.List(_RunFiles, mandatory=True, desc="matching variance maps")
    contrast_names = traits.List(traits.List(Str), mandatory=True, desc="per run, the contrast names of its maps")
    dofs = traits.List(traits.Float, mandatory=True, desc="residual degrees of freedom per run")
    brain_masks = InputMultiObject(File(exists=True), mandatory=True,
                                   desc="brain mask of each run (their intersection is used)")
    roi_tables = InputMultiObject(File(exists=True), desc="per run, the ROI contrast table (roi, contrast, ...)")


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

        cwd = Path(os.getcwd())
        out = {"effect": [], "variance": [], "z": []}
        for k, name in enumerate(names):
            res = fixed_effects(
                np.array([load(maps[k]) for maps in effect_maps]),
                np.array([load(maps[k]) for maps in variance_maps]),
                inputs.dofs,
            )
            files = contrast_files("", name)
            for stat, values in (("effect", res.effect), ("variance", res.variance), ("z", res.z)):
                out[stat].append(str(write_nifti(cwd / files[stat], map_to_image(values, mask, affine))))
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
        self._results.update(contrast_names=names, effect_maps=out["effect"], variance_maps=out["variance"],
                             z_maps=out["z"], meta_json=str(write_json(cwd / "desc-fixed_meta.json", meta)))
        if inputs.roi_tables:
            self._results["roi_tsv"] = str(write_tsv(cwd / "desc-roi_contrasts.tsv",
                                                     fixed_effects_table(inputs.roi_tables, inputs.dofs)))
        return runtime


def fixed_effects_table(paths, dofs) -> pd.DataFrame:
    """Fixed-effects combination of per-run ROI contrast tables (roi, contrast, effect, variance)."""
    if len(paths) != len(dofs):
        raise ValueError(f"{len(paths)} ROI tables for {len(dofs)} runs")
    tables = [pd.read_csv(p, sep="\t").set_index(["roi", "contrast"]) for p in paths]
    keys = tables[0].index
    for path, table in zip(paths[1:], tables[1:]):
        if not table.index.equals(keys):
            raise ValueError(f"{Path(path).name}: ROIs or contrasts differ from {Path(paths[0]).name}")
    res = fixed_effects(np.array([t["effect"].to_numpy() for t in tables]),
                        np.array([t["variance"].to_numpy() for t in tables]), dofs)
    return pd.DataFrame({"roi": keys.get_level_values(0), "contrast": keys.get_level_values(1),
                         "effect": res.effect, "variance": res.variance, "t": res.t, "z": res.z, "dof": res.dof})
