"""Nipype interface: per-ROI quality of a run and the coverage rule (issue 16.1; docs/rois.md).

:class:`ROIQuality` reads the run's BOLD cache (scanner intensities of the brain-mask voxels),
drops fMRIPrep's non-steady-state volumes, computes for every ROI placed by
:class:`~ketflow.interfaces.rois.BuildROIs` its voxel count, temporal SNR and dropout fraction
(:func:`ketflow.signal.roi_quality.roi_quality`), applies the configured coverage rule
(:func:`~ketflow.signal.roi_quality.apply_coverage_rule`) and writes into the working directory:

* ``desc-rois_qc.tsv``: one row per placed ROI (``index``, ``name``, ``n_voxels``, ``tsnr``,
  ``tsnr_roi_signal``, ``mean_ratio``, ``dropout_fraction``, ``excluded``, ``reason``) and
  ``desc-rois_qc.json``, its sidecar (column descriptions, the rule, the grey-matter source);
* ``desc-circuit_dseg.nii.gz`` / ``.tsv``: the label image and table of the ROIs kept, indices
  renumbered 1..k in the circuit order, which every later node of the run reads, so an excluded
  ROI is absent from the run's time series, matrices and ROI tables rather than measured badly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

from ..config import Circuit
from ..io.boldcache import open_bold_cache, read_mask
from ..io.confounds import dummy_scans
from ..io.rois import read_labels, read_roi_table
from ..io.write import write_json, write_nifti, write_tsv
from ..signal.roi_quality import DETREND_ORDER, CoverageRule, apply_coverage_rule, roi_quality

#: Descriptions of the QC table's columns (its JSON sidecar).
QC_COLUMNS = {
    "index": "label value of the ROI in the circuit as placed on this run's grid (before exclusions)",
    "name": "ROI name",
    "n_voxels": "voxels of the ROI inside the brain mask (and grey matter, for anatomical ROIs)",
    "tsnr": "median over the ROI's voxels of temporal SNR: temporal mean / SD after removing a quadratic "
            "polynomial trend, steady-state volumes of the preprocessed BOLD",
    "tsnr_roi_signal": "temporal SNR of the ROI's mean time series (same definition)",
    "mean_ratio": "median temporal mean of the ROI's voxels / median temporal mean of the brain mask",
    "dropout_fraction": "fraction of the ROI's voxels whose temporal mean is below DropoutFraction x the "
                        "brain mask's median temporal mean",
    "excluded": "the coverage rule excluded the ROI from this run's analyses",
    "reason": "why (empty when kept)",
}


class _ROIQualityInputSpec(BaseInterfaceInputSpec):
    bold_cache = File(exists=True, mandatory=True, desc="in-mask (time, voxels) float32 BOLD cache")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask of the cache")
    labels_file = File(exists=True, mandatory=True, desc="label image from BuildROIs (every ROI placed)")
    labels_tsv = File(exists=True, mandatory=True, desc="labels TSV from BuildROIs")
    rois_meta = File(exists=True, desc="JSON description of the placement from BuildROIs")
    confounds_tsv = File(exists=True, desc="fMRIPrep confounds (non-steady-state volumes are left out)")
    circuit = traits.Instance(Circuit, mandatory=True, desc="the configuration's circuit section")


class _ROIQualityOutputSpec(TraitedSpec):
    labels_file = File(exists=True, desc="label image of the ROIs kept, 1..k")
    labels_tsv = File(exists=True, desc="labels TSV of the ROIs kept")
    quality_tsv = File(exists=True, desc="desc-rois_qc.tsv")
    quality_json = File(exists=True, desc="desc-rois_qc.json (sidecar)")


class ROIQuality(SimpleInterface):
    """Voxel count, tSNR and dropout of each ROI; the ROIs the coverage rule keeps."""

    input_spec = _ROIQualityInputSpec
    output_spec = _ROIQualityOutputSpec

    def _run_interface(self, runtime):
        circuit = self.inputs.circuit
        mask_img = nib.load(self.inputs.brain_mask)
        mask = read_mask(self.inputs.brain_mask)
        labels, names = read_labels(self.inputs.labels_file, self.inputs.labels_tsv, mask)
        data = open_bold_cache(self.inputs.bold_cache, mask)
        steady = np.ones(data.shape[0], dtype=bool)
        if self.inputs.confounds_tsv:
            steady = ~dummy_scans(pd.read_csv(self.inputs.confounds_tsv, sep="\t"))
            if steady.size != data.shape[0]:
                raise ValueError(f"{Path(self.inputs.confounds_tsv).name}: {steady.size} rows for "
                                 f"{data.shape[0]} volumes")
        rule = CoverageRule(min_voxels=circuit.min_voxels,
                            max_dropout_fraction=circuit.coverage.max_dropout_fraction)
        # the whole brain is read: the dropout reference is the brain mask's median temporal mean;
        # dummy scans lead the run, so the steady-state volumes are a view of the memory map
        first = int(np.argmax(steady))
        steady_data = data[first:] if steady[first:].all() else data[np.flatnonzero(steady)]
        quality = roi_quality(steady_data, labels, names, circuit.coverage.dropout_fraction)
        quality = apply_coverage_rule(quality, rule)
        quality.insert(0, "index", np.arange(1, len(names) + 1))
        kept = quality.loc[~quality["excluded"], "name"].tolist()
        if not kept:
            raise ValueError(f"{Path(self.inputs.bold_cache).name}: the coverage rule excluded every ROI of the "
                             "circuit from this run: " + "; ".join(f"{r.name}: {r.reason}"
                                                                   for r in quality.itertuples()))
        cwd = Path(os.getcwd())
        labels_out, table_out = _kept_labels(self.inputs.labels_file, self.inputs.labels_tsv, kept)
        placement = json.loads(Path(self.inputs.rois_meta).read_text()) if self.inputs.rois_meta else {}
        meta = {
            "Description": "quality of each circuit ROI in this run and the coverage rule's decision",
            "Columns": {column: QC_COLUMNS[column] for column in quality.columns},
            "SteadyStateVolumes": int(steady.sum()),
            "DetrendOrder": DETREND_ORDER,
            "DropoutFraction": circuit.coverage.dropout_fraction,
            "CoverageRule": {"MinVoxels": rule.min_voxels, "MaxDropoutFraction": rule.max_dropout_fraction},
            "ExcludedROIs": quality.loc[quality["excluded"], "name"].tolist(),
            **placement,
        }
        self._results.update(
            labels_file=str(write_nifti(cwd / "desc-circuit_dseg.nii.gz",
                                        nib.Nifti1Image(labels_out, mask_img.affine))),
            labels_tsv=str(write_tsv(cwd / "desc-circuit_dseg.tsv", table_out)),
            quality_tsv=str(write_tsv(cwd / "desc-rois_qc.tsv", quality)),
            quality_json=str(write_json(cwd / "desc-rois_qc.json", meta)),
        )
        return runtime


def _kept_labels(labels_file: str, labels_tsv: str, kept: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """The label image (int16) and table restricted to the ROIs ``kept``, renumbered 1..k in order."""
    table = read_roi_table(labels_tsv)
    labels = np.asanyarray(nib.load(labels_file).dataobj).astype(np.int32)
    lookup = np.zeros(int(table["index"].max()) + 1, dtype=np.int16)
    rows = table[table["name"].astype(str).isin(kept)].copy()
    lookup[rows["index"].to_numpy()] = np.arange(1, len(rows) + 1)
    rows["index"] = np.arange(1, len(rows) + 1)
    return lookup[labels], rows.reset_index(drop=True)
