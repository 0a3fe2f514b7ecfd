"""Nipype interface of the voxelwise second level: one first-level map kind, every planned design.

:class:`VoxelwiseSecondLevel` reads an analysis JSON written by
:func:`ketflow.workflows.group_voxelwise.plan_voxelwise` (the subjects' map files per session,
their arms and covariates, the designs to fit with their subjects, the settings and the circuit
section of the configuration), loads the maps once (a session's runs averaged with equal weights), builds the
group mask (voxels inside every subject's map), the circuit mask on that grid, and runs
:func:`ketflow.group.voxelwise.second_level` for each design. It writes to its working
directory, with names the group workflow's sinks complete with the map's entities:

* ``desc-group_mask.nii.gz``: the group mask;
* per design (``[ses-<s>_]model-<design>``): ``..._stat-<stat>[_desc-<correction>]_statmap.nii.gz``
  (:data:`ketflow.group.voxelwise.MAP_STATS`), ``..._clusters.tsv``
  (:data:`ketflow.group.clusters.CLUSTER_COLUMNS`), ``..._nulldistribution.tsv`` (the maxima of
  every rearrangement) and ``..._meta.json`` (the sidecar fields: model, contrast, subjects,
  smoothing, permutations, thresholds, results).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import nilearn
import numpy as np
import pandas as pd
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

from ..group.clusters import cluster_table, roi_coordinates
from ..group.voxelwise import (MAP_STATS, Settings, check_same_grid, common_mask, design_matrix,
                               difference_images, mean_image, second_level)
from ..config import Circuit
from ..io.names import bids_label
from ..io.rois import circuit_roiset
from ..io.voxelwise import load_anatomical_atlas
from ..io.write import write_json, write_nifti, write_tsv

#: Corrected p maps of a result that enter the cluster table: correction -> (stat, desc).
CORRECTIONS = {"voxelFWE": ("logp", "voxelFWE"), "tfceFWE": ("logp", "tfceFWE"),
               "clusterMassFWE": ("logp", "clusterMassFWE"), "svcVoxelFWE": ("logp", "svcVoxelFWE"),
               "svcTfceFWE": ("logp", "svcTfceFWE")}


def design_prefix(design: dict) -> str:
    """``[ses-<s>_]model-<design>`` of a planned design (the entities its files add)."""
    prefix = f"model-{bids_label(design['design'])}"
    return f"ses-{design['session']}_{prefix}" if design.get("session") else prefix


class _SecondLevelInputSpec(BaseInterfaceInputSpec):
    analysis_json = File(exists=True, mandatory=True, desc="analysis plan (ketflow.workflows.group_voxelwise)")
    n_jobs = traits.Int(1, usedefault=True, desc="threads sharing the permutations")


class _SecondLevelOutputSpec(TraitedSpec):
    mask = File(exists=True, desc="group mask")
    maps = traits.List(traits.List(File(exists=True)), desc="per design: its statistical maps")
    clusters = traits.List(File(exists=True), desc="per design: cluster table")
    null = traits.List(File(exists=True), desc="per design: null maxima of every rearrangement")
    meta = traits.List(File(exists=True), desc="per design: sidecar fields")


class VoxelwiseSecondLevel(SimpleInterface):
    """Every planned second-level design of one first-level map kind (module docstring)."""

    input_spec = _SecondLevelInputSpec
    output_spec = _SecondLevelOutputSpec

    def _run_interface(self, runtime):
        plan = json.loads(Path(self.inputs.analysis_json).read_text())
        cwd = Path(os.getcwd())
        settings = Settings(**plan["settings"])
        images, files = _load_session_maps(plan)
        ordered = list(images)
        check_same_grid([images[k] for k in ordered], [files[k] for k in ordered])
        mask = common_mask([images[k] for k in ordered])
        if not mask.any():
            raise ValueError(f"{self.inputs.analysis_json}: no voxel lies inside every subject's map")
        reference = images[ordered[0]]
        roi_labels, roi_names = _circuit_labels(Circuit.model_validate(plan["circuit"]), reference)
        svc = (roi_labels > 0) & mask if plan["small_volume"] else None
        rois = list(zip(roi_names, roi_coordinates(roi_labels, reference.affine, len(roi_names))))
        atlas = load_anatomical_atlas()
        self._results["mask"] = str(write_nifti(cwd / "desc-group_mask.nii.gz",
                                                nib.Nifti1Image(mask.astype(np.uint8), reference.affine)))
        outputs = {"maps": [], "clusters": [], "null": [], "meta": []}
        for design in plan["designs"]:
            result_files = _fit_design(design, plan, images, mask, svc, settings, rois, atlas, roi_names, cwd,
                                       self.inputs.n_jobs)
            for key, value in result_files.items():
                outputs[key].append(value)
        self._results.update(outputs)
        return runtime


def _load_session_maps(plan: dict) -> tuple[dict, dict]:
    """(subject, session) -> image (runs averaged) and -> the first file's path (for messages)."""
    images, files = {}, {}
    for subject in plan["subjects"]:
        for session, paths in subject["maps"].items():
            runs = [nib.load(p) for p in paths]
            check_same_grid(runs, paths)
            images[(subject["subject"], session)] = mean_image(runs)
            files[(subject["subject"], session)] = paths[0]
    return images, files


def _circuit_labels(circuit: Circuit, reference) -> tuple[np.ndarray, list[str]]:
    """The circuit ROIs on the maps' grid, not cut by any mask (label image, names)."""
    roiset = circuit_roiset(circuit, reference, np.ones(reference.shape[:3], dtype=bool), min_voxels=0)
    return roiset.labels, list(roiset.names)


def _design_inputs(design: dict, plan: dict, images: dict) -> tuple[list, pd.DataFrame]:
    """The images and design matrix of a planned design."""
    subjects = design["subjects"]
    by_subject = {s["subject"]: s for s in plan["subjects"]}
    baseline, followup = plan["sessions"]["baseline"], plan["sessions"]["followup"]
    if design["design"] == "one_sample":
        maps = [images[(s, design["session"])] for s in subjects]
    else:
        maps = difference_images([images[(s, followup)] for s in subjects], [images[(s, baseline)] for s in subjects])
    arm = None
    if design["design"] == "arm_by_change":
        active = plan["arms"][0]
        arm = np.array([0.5 if by_subject[s]["arm"] == active else -0.5 for s in subjects])
    covariates = None
    if plan["covariates"]:
        covariates = pd.DataFrame([by_subject[s]["covariates"] for s in subjects], columns=plan["covariates"])
    return maps, design_matrix(design["design"], len(subjects), arm=arm, covariates=covariates)


def _fit_design(design, plan, images, mask, svc, settings, rois, atlas, roi_names, cwd, n_jobs) -> dict:
    maps, matrix = _design_inputs(design, plan, images)
    contrast = "arm" if design["design"] == "arm_by_change" else "intercept"
    result = second_level(maps, matrix, contrast, mask, settings=settings, svc=svc, n_jobs=n_jobs)
    prefix = design_prefix(design)
    written = []
    for (stat, desc), img in result.maps.items():
        name = f"{prefix}_stat-{stat}" + (f"_desc-{desc}" if desc else "") + "_statmap.nii.gz"
        written.append(str(write_nifti(cwd / name, img)))
    t_map = np.asanyarray(result.maps[("t", None)].dataobj)
    p_maps = {name: 10.0 ** -np.asanyarray(result.maps[key].dataobj, dtype=float)
              for name, key in CORRECTIONS.items() if key in result.maps}
    for name, key in CORRECTIONS.items():  # untested voxels (outside the mask or the small volume): p = 1
        if key in result.maps:
            tested = mask if not name.startswith("svc") else svc
            p_maps[name] = np.where(tested, p_maps[name], 1.0)
    table = cluster_table(t_map, p_maps, result.maps[("t", None)].affine, settings.alpha,
                          z_map=np.asanyarray(result.maps[("z", None)].dataobj), rois=rois, atlas=atlas)
    perm = result.permutation
    null = pd.DataFrame(perm.null)
    meta = _metadata(design, plan, result, settings, table, roi_names, atlas)
    return {"maps": written,
            "clusters": str(write_tsv(cwd / f"{prefix}_clusters.tsv", table)),
            "null": str(write_tsv(cwd / f"{prefix}_nulldistribution.tsv", null)),
            "meta": str(write_json(cwd / f"{prefix}_meta.json", meta))}


def _metadata(design, plan, result, settings, table, roi_names, atlas) -> dict:
    perm = result.permutation
    subjects = design["subjects"]
    by_subject = {s["subject"]: s for s in plan["subjects"]}
    n_significant = {}
    for name, key in CORRECTIONS.items():
        if key in result.maps:
            n_significant[name] = int((np.asanyarray(result.maps[key].dataobj) > -np.log10(settings.alpha)).sum())
    sessions = [design["session"]] if design.get("session") else [plan["sessions"]["baseline"],
                                                                  plan["sessions"]["followup"]]
    return {
        "Description": f"voxelwise second level ({design['design']}) of {plan['description']}",
        "FirstLevel": {"Family": plan["family"], "Task": plan["task"], "Contrast": plan.get("contrast_name"),
                       "Seed": plan.get("seed_name"), "Sessions": sessions},
        "Model": {"Design": design["design"], "Columns": list(result.design.columns), "Contrast": result.contrast,
                  "Formula": design["formula"], "ArmCoding": ({plan["arms"][0]: 0.5, plan["arms"][1]: -0.5}
                                                               if design["design"] == "arm_by_change" else None)},
        "Subjects": subjects, "NSubjects": len(subjects),
        "Arms": {arm: sum(by_subject[s]["arm"] == arm for s in subjects) for arm in plan["arms"]},
        "ExcludedSubjects": design.get("excluded", []),
        "SmoothingFWHMmm": settings.smoothing_fwhm,
        "MaskVoxels": result.n_voxels,
        "MaskRule": "intersection: voxels finite and non-zero in every included subject's first-level map",
        "SmallVolume": {"Rois": roi_names, "Voxels": result.n_svc_voxels} if result.n_svc_voxels else None,
        "Permutation": {"Requested": settings.n_permutations, "Rearrangements": perm.n_rearrangements,
                        "Exhaustive": perm.exhaustive,
                        "Scheme": "sign flipping" if perm.kind == "signflip" else "permutation of the arm labels",
                        "Seed": settings.seed, "TwoSided": settings.two_sided,
                        "PValue": "(1 + #{null maximum >= observed}) / (1 + rearrangements)"},
        "TFCE": {"E": 0.5, "H": 2.0, "Steps": 100, "Connectivity": 6} if settings.tfce else None,
        "ClusterForming": ({"P": settings.cluster_forming_p, "T": perm.cluster_threshold, "DoF": perm.dof,
                            "Connectivity": 6} if perm.cluster_threshold is not None else None),
        "Alpha": settings.alpha,
        "SignificantVoxels": n_significant,
        "NClusters": {name: int((table["correction"] == name).sum()) for name in n_significant},
        "Maps": {(f"stat-{stat}" + (f"_desc-{desc}" if desc else "")): text for (stat, desc), text in MAP_STATS.items()
                 if (stat, desc) in result.maps},
        "AnatomicalAtlas": atlas.name if atlas is not None else None,
        "Software": {"nilearn": nilearn.__version__},
        "InputFiles": sorted(os.path.relpath(p, plan["out_dir"]) for s in subjects for ses in sessions
                             for p in by_subject[s]["maps"][ses]),
    }
