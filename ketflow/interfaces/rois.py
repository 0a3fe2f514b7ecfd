"""Nipype interfaces: circuit ROIs on a run's BOLD grid, and ROI signals from denoised data.

:class:`BuildROIs` places the configured circuit (:func:`ketflow.io.rois.circuit_roiset`) on
the run's grid within its brain mask -- and, for the anatomical atlas, grey matter
(:func:`ketflow.io.rois.grey_matter_on_grid`: fMRIPrep's GM probseg when given, else the
template's) -- and writes ``desc-circuit_dseg.nii.gz`` (int16), ``desc-circuit_dseg.tsv``
(index, name, voxel counts, coverage) and ``desc-rois_meta.json`` (ROI source, grey matter
used). Short ROIs are left to the coverage rule of
:class:`~ketflow.interfaces.roi_quality.ROIQuality`.  :class:`ExtractROISignals`
writes ``stat-<method>_timeseries.tsv`` (columns = ROI names, rows = retained volumes) and
``stat-coverage_bold.tsv`` (one row per ROI: Node, coverage, n_voxels), which the workflow
stores as XCP-D's ``..._atlas-<circuit>_stat-mean_timeseries.tsv`` and
``..._stat-coverage_bold.tsv``.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

from ..config import Circuit
from ..io.boldcache import read_denoised, read_mask
from ..io.rois import TEMPLATE_GM_DESCRIPTION, circuit_roiset, grey_matter_on_grid, read_labels, read_roi_table
from ..io.write import write_json, write_nifti, write_tsv
from ..signal.extract import extract


class _BuildROIsInputSpec(BaseInterfaceInputSpec):
    bold_ref = File(exists=True, mandatory=True, desc="BOLD reference (or BOLD) defining the grid")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the BOLD grid")
    gm_probseg = File(exists=True, desc="fMRIPrep's label-GM_probseg in the run's output space (optional)")
    circuit = traits.Instance(Circuit, mandatory=True, desc="the configuration's circuit section")


class _BuildROIsOutputSpec(TraitedSpec):
    labels_file = File(exists=True, desc="int16 label image on the BOLD grid")
    labels_tsv = File(exists=True, desc="index, name, n_voxels, n_voxels_unmasked, coverage")
    rois_meta = File(exists=True, desc="JSON: how the ROIs were placed (source, grey matter)")


class BuildROIs(SimpleInterface):
    """Label image + labels TSV of the circuit ROIs on a run's grid."""

    input_spec = _BuildROIsInputSpec
    output_spec = _BuildROIsOutputSpec

    def _run_interface(self, runtime):
        reference = nib.load(self.inputs.bold_ref)
        mask_img = nib.load(self.inputs.brain_mask)
        mask = np.asanyarray(mask_img.dataobj) > 0
        if not np.allclose(reference.affine, mask_img.affine, atol=1e-3) or reference.shape[:3] != mask.shape:
            raise ValueError(
                f"{Path(self.inputs.brain_mask).name} is not on the grid of {Path(self.inputs.bold_ref).name}"
            )
        circuit = self.inputs.circuit
        grey_matter, placement = None, {"ROISource": circuit.rois}
        if circuit.rois == "anatomical" and circuit.grey_matter_threshold is not None:
            gm_file = self.inputs.gm_probseg or None
            grey_matter = grey_matter_on_grid(gm_file, reference, circuit.grey_matter_threshold)
            placement["GreyMatter"] = {
                "Source": Path(gm_file).name if gm_file else TEMPLATE_GM_DESCRIPTION,
                "Threshold": circuit.grey_matter_threshold,
                "Interpolation": "linear, onto the BOLD grid"}
        # short ROIs are left to the coverage rule (ROIQuality), which records why it excludes them
        roiset = circuit_roiset(circuit, reference, mask, min_voxels=0, grey_matter=grey_matter)
        cwd = Path(os.getcwd())
        labels_file = write_nifti(
            cwd / "desc-circuit_dseg.nii.gz", nib.Nifti1Image(roiset.labels.astype(np.int16), mask_img.affine)
        )
        labels_tsv = write_tsv(cwd / "desc-circuit_dseg.tsv", roiset.table())
        self._results.update(labels_file=str(labels_file), labels_tsv=str(labels_tsv),
                             rois_meta=str(write_json(cwd / "desc-rois_meta.json", placement)))
        return runtime


class _ExtractROISignalsInputSpec(BaseInterfaceInputSpec):
    denoised_file = File(exists=True, mandatory=True, desc="denoised data (.npy cache or NIfTI) from Denoise")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask the denoised data were taken in")
    labels_file = File(exists=True, mandatory=True, desc="label image from BuildROIs")
    labels_tsv = File(exists=True, mandatory=True, desc="labels TSV from BuildROIs")
    method = traits.Enum("mean", "eigenvariate", mandatory=True, desc="ROI summary (circuit.signal)")


class _ExtractROISignalsOutputSpec(TraitedSpec):
    timeseries = File(exists=True, desc="stat-<method>_timeseries.tsv, columns = ROI names")
    coverage = File(exists=True, desc="stat-coverage_bold.tsv")


class ExtractROISignals(SimpleInterface):
    """ROI mean (or SPM-convention first eigenvariate) time series of denoised data."""

    input_spec = _ExtractROISignalsInputSpec
    output_spec = _ExtractROISignalsOutputSpec

    def _run_interface(self, runtime):
        mask = read_mask(self.inputs.brain_mask)
        table = read_roi_table(self.inputs.labels_tsv)
        labels, names = read_labels(self.inputs.labels_file, self.inputs.labels_tsv, mask)
        inside = np.flatnonzero(labels > 0)  # only the ROIs' voxels are read
        data = read_denoised(self.inputs.denoised_file, mask, inside)
        series = extract(data, labels[inside], len(names), self.inputs.method)
        cwd = Path(os.getcwd())
        timeseries = write_tsv(cwd / f"stat-{self.inputs.method}_timeseries.tsv", pd.DataFrame(series, columns=names))
        coverage = write_tsv(
            cwd / "stat-coverage_bold.tsv",
            pd.DataFrame({"Node": table["name"], "coverage": table["coverage"], "n_voxels": table["n_voxels"]}),
        )
        self._results.update(timeseries=str(timeseries), coverage=str(coverage))
        return runtime
