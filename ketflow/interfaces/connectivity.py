"""Nipype interface: ROI-to-ROI connectivity, seed-to-voxel maps and their QC.

Writes into the working directory:

* ``stat-<measure>_relmat.tsv`` for every requested measure of
  :func:`ketflow.signal.connectivity.connectivity_matrices` (``Node`` column + one column
  per ROI, XCP-D's relmat layout); ``measures`` lists the measure names in the same order;
* ``seed-<ROI>_stat-z_boldmap.nii.gz``: Fisher z map of each requested seed ROI
  (0 outside the brain mask and at constant voxels);
* ``desc-connectivity_qc.json``: the Denoise QC (if given) plus volumes used, ROI coverage
  and whether FIR task responses were regressed out first.

With ``events_file`` set, condition-wise FIR task responses are regressed out of the ROI
series (and of the voxel data for seed maps) first (task-residual connectivity, Cole et
al. 2019; :func:`ketflow.signal.connectivity.task_residuals`); ``censoring_tsv`` then gives the
acquisition times of the retained volumes.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    Str,
    TraitedSpec,
    traits,
)

from ..io.boldcache import read_denoised, read_mask
from ..io.tables import read_events
from ..io.write import write_json, write_nifti, write_tsv
from ..signal.connectivity import (
    connectivity_matrices,
    seed_to_voxel_z,
    task_residual_timeseries,
    task_residuals,
)


class _ConnectivityInputSpec(BaseInterfaceInputSpec):
    timeseries = File(exists=True, mandatory=True, desc="ROI time series TSV (columns = ROI names)")
    coverage = File(exists=True, desc="stat-coverage_bold.tsv from ExtractROISignals")
    denoise_qc = File(exists=True, desc="QC JSON from Denoise, merged into the output QC")
    denoised_file = File(exists=True, desc="denoised data, needed for seed-to-voxel maps")
    brain_mask = File(exists=True, desc="brain mask of the denoised data, needed for seed maps")
    seeds = InputMultiObject(Str, desc="ROI names to make seed-to-voxel maps for")
    connectivity_measures = InputMultiObject(
        Str, mandatory=True, desc="measures to write (keys of ketflow.signal.connectivity.MEASURE_STATS)")
    events_file = File(exists=True, desc="BIDS events TSV: regress FIR task responses out first")
    censoring_tsv = File(exists=True, desc="Denoise censoring TSV (retained volumes), with events_file")
    tr = traits.Float(desc="repetition time (s), with events_file")


class _ConnectivityOutputSpec(TraitedSpec):
    relmat_files = traits.List(File(exists=True), desc="one relmat TSV per measure")
    measures = traits.List(Str, desc="measure (stat-) names, in the order of relmat_files")
    seed_maps = traits.List(File(exists=True), desc="seed-to-voxel Fisher z NIfTIs")
    seed_names = traits.List(Str, desc="seed ROI names, in the order of seed_maps")
    qc_json = File(exists=True, desc="connectivity QC")


class Connectivity(SimpleInterface):
    """ROI-to-ROI matrices (Pearson, Fisher z, partial, Ledoit-Wolf) and seed maps."""

    input_spec = _ConnectivityInputSpec
    output_spec = _ConnectivityOutputSpec

    def _run_interface(self, runtime):
        table = pd.read_csv(self.inputs.timeseries, sep="\t")
        names = table.columns.tolist()
        series = table.to_numpy(dtype=np.float64)
        task_residual = bool(self.inputs.events_file)
        keep = None
        if task_residual:
            if not self.inputs.tr or not self.inputs.censoring_tsv:
                raise ValueError("task-residual connectivity needs tr and censoring_tsv with events_file")
            keep = pd.read_csv(self.inputs.censoring_tsv, sep="\t")["retained"].to_numpy(bool)
            series = task_residual_timeseries(series, read_events(self.inputs.events_file), self.inputs.tr, keep=keep)
        cwd = Path(os.getcwd())
        relmats, measures = [], []
        for measure, matrix in connectivity_matrices(series, self.inputs.connectivity_measures).items():
            frame = pd.DataFrame(matrix, index=pd.Index(names, name="Node"), columns=names)
            relmats.append(str(write_tsv(cwd / f"stat-{measure}_relmat.tsv", frame, index=True)))
            measures.append(measure)
        seed_maps, seed_names = [], []
        # the configuration names only circuit ROIs (validated), so a seed absent from the run's
        # series was excluded from this run by the coverage rule (desc-rois_qc.tsv): no map
        seeds = [s for s in self.inputs.seeds if s in names] if self.inputs.seeds else []
        if seeds:
            seed_maps, seed_names = self._seed_maps(series, names, seeds, keep, task_residual, cwd)
        qc = json.loads(Path(self.inputs.denoise_qc).read_text()) if self.inputs.denoise_qc else {}
        qc.update({"num_volumes_connectivity": int(series.shape[0]), "task_residual": task_residual})
        if self.inputs.seeds and len(seeds) < len(self.inputs.seeds):
            qc["seeds_excluded"] = [s for s in self.inputs.seeds if s not in names]
        if self.inputs.coverage:
            coverage = pd.read_csv(self.inputs.coverage, sep="\t")
            qc["roi_coverage"] = dict(zip(coverage["Node"], coverage["coverage"].astype(float), strict=True))
            qc["min_roi_coverage"] = float(coverage["coverage"].min())
        qc = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in qc.items()}
        qc_json = write_json(cwd / "desc-connectivity_qc.json", qc)
        self._results.update(
            relmat_files=relmats, measures=measures, seed_maps=seed_maps, seed_names=seed_names, qc_json=str(qc_json)
        )
        return runtime

    def _seed_maps(self, series, names, seeds, keep, task_residual, cwd):
        if not (self.inputs.denoised_file and self.inputs.brain_mask):
            raise ValueError("seed-to-voxel maps need denoised_file and brain_mask")
        mask_img = nib.load(self.inputs.brain_mask)
        mask = read_mask(self.inputs.brain_mask)
        data = read_denoised(self.inputs.denoised_file, mask)
        if task_residual:
            data = task_residuals(data, read_events(self.inputs.events_file), self.inputs.tr, keep=keep)
        maps, done = [], []
        for seed in seeds:
            z = np.nan_to_num(seed_to_voxel_z(series[:, names.index(seed)], data), nan=0.0)
            volume = np.zeros(mask.shape, dtype=np.float32)
            volume[mask] = z
            path = write_nifti(cwd / f"seed-{seed}_stat-z_boldmap.nii.gz", nib.Nifti1Image(volume, mask_img.affine))
            maps.append(str(path))
            done.append(seed)
        return maps, done
