"""Nipype interface: denoise one BOLD run (confounds + cosine filter + censoring).

Reads the run's in-mask (time, voxels) float32 BOLD cache (:mod:`ketflow.io.boldcache`; made
from ``bold_file`` when no ``bold_cache`` is given) in blocks of voxels, selects confounds
with the configured strategy (:mod:`ketflow.io.confounds`), calls
:func:`ketflow.signal.denoise.denoise` on each block (every voxel is fitted on its own, so
the blocks give the whole-matrix result) and writes into the working directory:

* ``desc-denoised_bold.npy`` (retained volumes x in-mask voxels, float32, voxels in
  C order of the mask) or ``desc-denoised_bold.nii.gz`` (float32, retained volumes only);
* ``desc-censoring_timeseries.tsv``: one row per acquired volume (FD, dummy, censored,
  retained);
* ``desc-denoise_qc.json``: the settings (:func:`ketflow.io.confounds.denoising_record`),
  degrees of freedom, censoring counts and the XCP-D-style QC of
  :func:`ketflow.signal.connectivity.qc_metrics`.

Rest runs (``band_pass``) are band-passed with ``denoising.band_pass_rest`` when it is set.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

from ..config import Denoising
from ..io.boldcache import cache_dvars, open_bold_cache, read_mask, voxel_chunks
from ..io.confounds import confound_strategy, denoising_record, load_confounds, read_confounds_table
from ..io.motion import motion_table, outliers_table
from ..io.write import write_json, write_nifti, write_tsv
from ..signal.connectivity import dvars, qc_metrics
from ..signal.denoise import denoise, filter_cutoffs
from .bold import cache_of


def _finite_or_none(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


class _DenoiseInputSpec(BaseInterfaceInputSpec):
    bold_cache = File(exists=True, mandatory=True, xor=["bold_file"], desc="in-mask BOLD cache from CacheBOLD")
    bold_file = File(exists=True, mandatory=True, xor=["bold_cache"], desc="or the preprocessed 4-D BOLD (fMRIPrep)")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the BOLD grid")
    confounds_tsv = File(exists=True, mandatory=True, desc="fMRIPrep desc-confounds_timeseries.tsv")
    confounds_json = File(exists=True, desc="its JSON (CompCor metadata)")
    denoising = traits.Instance(Denoising, mandatory=True, desc="the configuration's denoising section")
    band_pass = traits.Bool(mandatory=True, desc="a rest run: band-pass with denoising.band_pass_rest when set")
    tr = traits.Float(mandatory=True, desc="repetition time (s)")
    output_format = traits.Enum("npy", "nifti", usedefault=True, desc="denoised data as .npy cache or NIfTI")


class _DenoiseOutputSpec(TraitedSpec):
    denoised_file = File(exists=True, desc="denoised data (retained volumes)")
    censoring_tsv = File(exists=True, desc="per-volume FD and censoring flags")
    outliers_tsv = File(exists=True, desc="XCP-D-style outlier flags (framewise_displacement = 0/1)")
    motion_tsv = File(exists=True, desc="XCP-D-style motion parameters and framewise displacement (mm)")
    qc_json = File(exists=True, desc="degrees of freedom, censoring and QC metrics")


class Denoise(SimpleInterface):
    """Denoise one run in a single regression; raises TooFewVolumesError for unusable runs."""

    input_spec = _DenoiseInputSpec
    output_spec = _DenoiseOutputSpec

    def _run_interface(self, runtime):
        den = self.inputs.denoising
        settings = denoising_record(den, den.band_pass_rest if self.inputs.band_pass else None)
        mask = read_mask(self.inputs.brain_mask)
        with cache_of(self.inputs, mask) as cache:
            n_volumes, n_voxels = open_bold_cache(cache).shape
            confounds = load_confounds(self.inputs.confounds_tsv, self.inputs.confounds_json or None,
                                       confound_strategy(den), n_volumes=n_volumes)
            high_pass_s, low_pass_hz = filter_cutoffs(settings["high_pass_s"], settings["band_pass_hz"])
            denoised = np.empty((int(confounds.keep.sum()), n_voxels), dtype=np.float32)
            for columns, block in voxel_chunks(cache):
                result = denoise(block, confounds.regressors.to_numpy(), self.inputs.tr, keep=confounds.keep,
                                 high_pass_s=high_pass_s, low_pass_hz=low_pass_hz,
                                 standardize=settings["standardize"], min_volumes=den.required_volumes(self.inputs.tr),
                                 min_dof=settings["min_dof"])
                denoised[:, columns] = result.data
            raw_dvars = cache_dvars(cache)
        cwd = Path(os.getcwd())
        if self.inputs.output_format == "npy":
            out = cwd / "desc-denoised_bold.npy"
            np.save(out, denoised)
        else:
            ref = nib.load(self.inputs.brain_mask)
            volume = np.zeros(mask.shape + (denoised.shape[0],), dtype=np.float32)
            volume[mask] = denoised.T
            out = write_nifti(cwd / "desc-denoised_bold.nii.gz", nib.Nifti1Image(volume, ref.affine))
        censoring = pd.DataFrame({"framewise_displacement": confounds.framewise_displacement,
                                  "dummy": confounds.dummy.astype(int),
                                  "motion_censored": confounds.motion_censored.astype(int),
                                  "retained": confounds.keep.astype(int)})
        censoring_tsv = write_tsv(cwd / "desc-censoring_timeseries.tsv", censoring)
        outliers_tsv = write_tsv(cwd / "outliers.tsv", outliers_table(
            confounds.framewise_displacement, den.fd_threshold, confounds.motion_censored, confounds.dummy))
        motion_tsv = write_tsv(cwd / "motion.tsv", motion_table(
            read_confounds_table(self.inputs.confounds_tsv), confounds.framewise_displacement,
            Path(self.inputs.confounds_tsv).name))
        qc = qc_metrics(confounds.framewise_displacement, confounds.keep, raw_dvars, dvars(denoised))
        qc.update({"strategy": settings, "confound_columns": list(confounds.regressors.columns),
                   "num_dummy_volumes": int(confounds.dummy.sum()), "dof_lost": result.dof_lost,
                   "dof_remaining": result.dof_remaining, "high_pass_s": high_pass_s, "low_pass_hz": low_pass_hz,
                   "n_voxels": int(mask.sum())})
        qc_json = write_json(cwd / "desc-denoise_qc.json", {k: _finite_or_none(v) for k, v in qc.items()})
        self._results.update(denoised_file=str(out), censoring_tsv=str(censoring_tsv), qc_json=str(qc_json),
                             outliers_tsv=str(outliers_tsv), motion_tsv=str(motion_tsv))
        return runtime
