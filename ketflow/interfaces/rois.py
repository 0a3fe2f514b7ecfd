"""Nipype interfaces: circuit ROIs on a run's BOLD grid, and ROI signals from denoised data.

:class:`BuildROIs` makes the label image; :class:`ExtractROISignals` writes
``stat-<method>_timeseries.tsv`` (columns = ROI names, rows = retained volumes) and
``stat-coverage_bold.tsv`` (one row per ROI: Node, coverage, n_voxels), named so the
workflow can sink them as XCP-D's ``..._atlas-<circuit>_stat-mean_timeseries.tsv`` and
``..._stat-coverage_bold.tsv``.

ROI definition JSON (one of):

* ``{}`` or ``{"spheres_tsv": null}``: the default circuit spheres
  (``ketflow/data/rois/circuit_spheres.tsv``);
* ``{"spheres_tsv": "<path>"}``: a sphere table (name, x, y, z, radius_mm);
* ``{"spheres": [{"name": ..., "x": ..., "y": ..., "z": ..., "radius_mm": ...}, ...]}``;
* ``{"atlas": "<atlas-*_dseg.nii.gz>", "atlas_labels": "<TSV with index, name>"}``: the atlas
  regions only;
* ``atlas`` + ``atlas_labels`` together with ``spheres`` or ``spheres_tsv``: the spheres, then
  the atlas regions (:func:`ketflow.signal.rois.combine_labels`; the order of
  :func:`ketflow.config.roi_names`).

Optional key ``min_voxels`` (default :data:`ketflow.signal.rois.MIN_VOXELS`, 5). Writes
``desc-circuit_dseg.nii.gz`` (int16, BOLD grid) and ``desc-circuit_dseg.tsv`` (index, name,
voxel counts, coverage) to the working directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

from ..io.write import write_nifti, write_tsv
from ..signal.extract import extract
from ..signal.rois import MIN_VOXELS, Sphere, atlas_roiset, read_sphere_table, spheres_roiset
from .denoise import read_denoised, read_mask


def _spheres(definition: dict) -> list[Sphere]:
    if "spheres" in definition:
        return [
            Sphere(str(s["name"]), (float(s["x"]), float(s["y"]), float(s["z"])), float(s["radius_mm"]))
            for s in definition["spheres"]
        ]
    if definition.get("spheres_tsv") or not definition.get("atlas"):
        return read_sphere_table(definition.get("spheres_tsv"))
    return []


def roiset_from_definition(definition: dict, reference: nib.Nifti1Image, brain_mask: np.ndarray):
    """Build the :class:`~ketflow.signal.rois.ROISet` a definition dict describes (module docstring)."""
    known = {"spheres_tsv", "spheres", "atlas", "atlas_labels", "min_voxels"}
    unknown = set(definition) - known
    if unknown:
        raise ValueError(f"unknown ROI definition keys {sorted(unknown)}; known: {sorted(known)}")
    min_voxels = int(definition.get("min_voxels", MIN_VOXELS))
    spheres = _spheres(definition)
    if definition.get("atlas"):
        if not definition.get("atlas_labels"):
            raise ValueError(f"ROI definition: atlas {definition['atlas']} given without atlas_labels (TSV)")
        labels = pd.read_csv(definition["atlas_labels"], sep="\t")
        return atlas_roiset(nib.load(definition["atlas"]), labels, reference, brain_mask, min_voxels, spheres)
    if not spheres:
        raise ValueError("ROI definition has neither spheres nor an atlas")
    return spheres_roiset(spheres, reference.shape[:3], reference.affine, brain_mask, min_voxels)


class _BuildROIsInputSpec(BaseInterfaceInputSpec):
    bold_ref = File(exists=True, mandatory=True, desc="BOLD reference (or BOLD) defining the grid")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the BOLD grid")
    roi_definition = File(exists=True, desc="ROI definition JSON (module docstring); default circuit if absent")


class _BuildROIsOutputSpec(TraitedSpec):
    labels_file = File(exists=True, desc="int16 label image on the BOLD grid")
    labels_tsv = File(exists=True, desc="index, name, n_voxels, n_voxels_unmasked, coverage")


class BuildROIs(SimpleInterface):
    """Label image + labels TSV of the circuit ROIs on a run's grid."""

    input_spec = _BuildROIsInputSpec
    output_spec = _BuildROIsOutputSpec

    def _run_interface(self, runtime):
        definition = json.loads(Path(self.inputs.roi_definition).read_text()) if self.inputs.roi_definition else {}
        reference = nib.load(self.inputs.bold_ref)
        mask_img = nib.load(self.inputs.brain_mask)
        mask = np.asanyarray(mask_img.dataobj) > 0
        if not np.allclose(reference.affine, mask_img.affine, atol=1e-3) or reference.shape[:3] != mask.shape:
            raise ValueError(
                f"{Path(self.inputs.brain_mask).name} is not on the grid of {Path(self.inputs.bold_ref).name}"
            )
        roiset = roiset_from_definition(definition, reference, mask)
        cwd = Path(os.getcwd())
        labels_file = write_nifti(
            cwd / "desc-circuit_dseg.nii.gz", nib.Nifti1Image(roiset.labels.astype(np.int16), mask_img.affine)
        )
        labels_tsv = write_tsv(cwd / "desc-circuit_dseg.tsv", roiset.table())
        self._results.update(labels_file=str(labels_file), labels_tsv=str(labels_tsv))
        return runtime


class _ExtractROISignalsInputSpec(BaseInterfaceInputSpec):
    denoised_file = File(exists=True, mandatory=True, desc="denoised data (.npy cache or NIfTI) from Denoise")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask the denoised data were taken in")
    labels_file = File(exists=True, mandatory=True, desc="label image from BuildROIs")
    labels_tsv = File(exists=True, mandatory=True, desc="labels TSV from BuildROIs")
    method = traits.Enum("mean", "eigenvariate", usedefault=True, desc="ROI summary")


class _ExtractROISignalsOutputSpec(TraitedSpec):
    timeseries = File(exists=True, desc="stat-<method>_timeseries.tsv, columns = ROI names")
    coverage = File(exists=True, desc="stat-coverage_bold.tsv")


class ExtractROISignals(SimpleInterface):
    """ROI mean (or SPM-convention first eigenvariate) time series of denoised data."""

    input_spec = _ExtractROISignalsInputSpec
    output_spec = _ExtractROISignalsOutputSpec

    def _run_interface(self, runtime):
        mask = read_mask(self.inputs.brain_mask)
        table = pd.read_csv(self.inputs.labels_tsv, sep="\t")
        labels = np.asanyarray(nib.load(self.inputs.labels_file).dataobj).astype(np.int64)
        if labels.shape != mask.shape:
            raise ValueError(f"label image {labels.shape} and brain mask {mask.shape} differ in shape")
        labels = labels[mask]
        inside = np.flatnonzero(labels > 0)  # only the ROIs' voxels are read
        data = read_denoised(self.inputs.denoised_file, mask, inside)
        series = extract(data, labels[inside], len(table), self.inputs.method)
        cwd = Path(os.getcwd())
        timeseries = write_tsv(
            cwd / f"stat-{self.inputs.method}_timeseries.tsv", pd.DataFrame(series, columns=table["name"].tolist())
        )
        coverage = write_tsv(
            cwd / "stat-coverage_bold.tsv",
            pd.DataFrame({"Node": table["name"], "coverage": table["coverage"], "n_voxels": table["n_voxels"]}),
        )
        self._results.update(timeseries=str(timeseries), coverage=str(coverage))
        return runtime
