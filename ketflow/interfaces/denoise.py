"""Nipype interface: denoise one BOLD run (confounds + cosine filter + censoring).

Reads the run's in-mask (time, voxels) float32 BOLD cache (:mod:`ketflow.io.boldcache`; made
from ``bold_file`` when no ``bold_cache`` is given) in blocks of voxels, selects confounds
(:mod:`ketflow.io.confounds`), calls :func:`ketflow.signal.denoise.denoise` on each block (every
voxel is fitted on its own, so the blocks give the whole-matrix result) and writes into the
working directory:

* ``desc-denoised_bold.npy`` (retained volumes x in-mask voxels, float32, voxels in
  C order of the mask) or ``desc-denoised_bold.nii.gz`` (float32, retained volumes only);
* ``desc-censoring_timeseries.tsv``: one row per acquired volume (FD, dummy, censored,
  retained);
* ``desc-denoise_qc.json``: strategy, degrees of freedom, censoring counts and the
  XCP-D-style QC of :func:`ketflow.signal.connectivity.qc_metrics`.

Strategy JSON keys (all optional): ``strategy`` (24P | 36P | aCompCor), ``n_compcor``,
``fd_threshold`` (mm or null), ``std_dvars_threshold``, ``min_contiguous``,
``high_pass_s``, ``band_pass_hz`` ([low, high] Hz; replaces ``high_pass_s`` by 1/low),
``standardize`` (bool), ``min_volumes``, ``min_dof`` (residual degrees of freedom).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

from ..io.boldcache import (
    masked_volumes,
    open_bold_cache,
    read_mask,
    volume_blocks,
    voxel_chunks,
    voxel_columns,
)
from ..io.confounds import ConfoundStrategy, load_confounds
from ..io.write import write_json, write_nifti, write_tsv
from ..signal.connectivity import dvars, qc_metrics
from ..signal.denoise import MIN_DOF, MIN_VOLUMES, denoise
from .bold import cache_of

DEFAULTS = {
    "strategy": "36P",
    "n_compcor": 0.5,
    "fd_threshold": 0.5,
    "std_dvars_threshold": None,
    "min_contiguous": 5,
    "high_pass_s": 128.0,
    "band_pass_hz": None,
    "standardize": False,
    "min_volumes": MIN_VOLUMES,
    "min_dof": MIN_DOF,
}


def read_masked_bold(path: str | os.PathLike, mask: np.ndarray) -> np.ndarray:
    """In-mask voxels of a 4-D BOLD file as a (time, voxels) float32 matrix.

    Decompresses the file once, front to back, one volume in memory besides the output
    (:func:`ketflow.io.boldcache.masked_volumes`, which also checks the gzip CRC).
    """
    shape = nib.load(path).shape
    out = np.empty((shape[-1] if len(shape) == 4 else 0, int(mask.sum())), dtype=np.float32)
    for t, values in enumerate(masked_volumes(path, mask)):  # raises first if not 4-D on the mask's grid
        out[t] = values
    return out


def read_denoised(path: str | os.PathLike, mask: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
    """Denoised (retained volumes, in-mask voxels) float32 matrix from .npy or NIfTI.

    columns : optional index over the in-mask voxels: read only those (from a ``.npy``, only
        the pages holding them are read).
    """
    if str(path).endswith(".npy"):
        data = open_bold_cache(path, mask)
        return np.array(data) if columns is None else voxel_columns(path, columns)
    data = read_masked_bold(path, mask)
    return data if columns is None else data[:, columns]


def cache_dvars(cache: str | os.PathLike) -> np.ndarray:
    """:func:`~ketflow.signal.connectivity.dvars` of a BOLD cache (T-1,), read in blocks of volumes."""
    parts, previous = [], None
    for _, block in volume_blocks(cache):
        parts.append(dvars(block if previous is None else np.concatenate([previous, block])))
        previous = block[-1:]
    return np.concatenate(parts)


def strategy_settings(path: str | None) -> dict:
    """Strategy JSON merged over :data:`DEFAULTS` (unknown keys rejected)."""
    given = json.loads(Path(path).read_text()) if path else {}
    unknown = set(given) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"{path}: unknown denoising settings {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    return {**DEFAULTS, **given}


def confound_strategy(settings: dict) -> ConfoundStrategy:
    """The :class:`ConfoundStrategy` of merged settings (see :func:`strategy_settings`)."""
    return ConfoundStrategy(
        name=settings["strategy"],
        n_compcor=settings["n_compcor"],
        fd_threshold=settings["fd_threshold"],
        std_dvars_threshold=settings["std_dvars_threshold"],
        min_segment=settings["min_contiguous"],
    )


def filter_cutoffs(settings: dict) -> tuple[float | None, float | None]:
    """(high-pass period in s, low-pass frequency in Hz); a band-pass [low, high] sets 1/low and high."""
    if settings["band_pass_hz"]:
        low, high = settings["band_pass_hz"]
        return 1.0 / low, high
    return settings["high_pass_s"], None


def _finite_or_none(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


class _DenoiseInputSpec(BaseInterfaceInputSpec):
    bold_cache = File(exists=True, mandatory=True, xor=["bold_file"], desc="in-mask BOLD cache from CacheBOLD")
    bold_file = File(exists=True, mandatory=True, xor=["bold_cache"], desc="or the preprocessed 4-D BOLD (fMRIPrep)")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the BOLD grid")
    confounds_tsv = File(exists=True, mandatory=True, desc="fMRIPrep desc-confounds_timeseries.tsv")
    confounds_json = File(exists=True, desc="its JSON (CompCor metadata)")
    strategy_json = File(exists=True, desc="denoising settings (module docstring); defaults if absent")
    tr = traits.Float(mandatory=True, desc="repetition time (s)")
    output_format = traits.Enum("npy", "nifti", usedefault=True, desc="denoised data as .npy cache or NIfTI")


class _DenoiseOutputSpec(TraitedSpec):
    denoised_file = File(exists=True, desc="denoised data (retained volumes)")
    censoring_tsv = File(exists=True, desc="per-volume FD and censoring flags")
    qc_json = File(exists=True, desc="degrees of freedom, censoring and QC metrics")


class Denoise(SimpleInterface):
    """Denoise one run in a single regression; raises TooFewVolumesError for unusable runs."""

    input_spec = _DenoiseInputSpec
    output_spec = _DenoiseOutputSpec

    def _run_interface(self, runtime):
        settings = strategy_settings(self.inputs.strategy_json or None)
        mask = read_mask(self.inputs.brain_mask)
        with cache_of(self.inputs, mask) as cache:
            n_volumes, n_voxels = open_bold_cache(cache).shape
            confounds = load_confounds(
                self.inputs.confounds_tsv, self.inputs.confounds_json or None, confound_strategy(settings),
                n_volumes=n_volumes,
            )
            high_pass_s, low_pass_hz = filter_cutoffs(settings)
            denoised = np.empty((int(confounds.keep.sum()), n_voxels), dtype=np.float32)
            for columns, block in voxel_chunks(cache):
                result = denoise(
                    block,
                    confounds.regressors.to_numpy(),
                    self.inputs.tr,
                    keep=confounds.keep,
                    high_pass_s=high_pass_s,
                    low_pass_hz=low_pass_hz,
                    standardize=settings["standardize"],
                    min_volumes=settings["min_volumes"],
                    min_dof=settings["min_dof"],
                )
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
        censoring = pd.DataFrame(
            {
                "framewise_displacement": confounds.framewise_displacement,
                "dummy": confounds.dummy.astype(int),
                "motion_censored": confounds.motion_censored.astype(int),
                "retained": confounds.keep.astype(int),
            }
        )
        censoring_tsv = write_tsv(cwd / "desc-censoring_timeseries.tsv", censoring)
        qc = qc_metrics(confounds.framewise_displacement, confounds.keep, raw_dvars, dvars(denoised))
        qc.update(
            {
                "strategy": settings,
                "confound_columns": list(confounds.regressors.columns),
                "num_dummy_volumes": int(confounds.dummy.sum()),
                "dof_lost": result.dof_lost,
                "dof_remaining": result.dof_remaining,
                "high_pass_s": high_pass_s,
                "low_pass_hz": low_pass_hz,
                "n_voxels": int(mask.sum()),
            }
        )
        qc_json = write_json(cwd / "desc-denoise_qc.json", {k: _finite_or_none(v) for k, v in qc.items()})
        self._results.update(denoised_file=str(out), censoring_tsv=str(censoring_tsv), qc_json=str(qc_json))
        return runtime
