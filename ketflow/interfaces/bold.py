"""Nipype interface: the in-mask BOLD cache of one run (:mod:`ketflow.io.boldcache`).

:class:`CacheBOLD` is the first node of every run that reads voxel data: it decompresses the
run's BOLD once (checking the gzip CRC at the end of the stream) and writes
``<BOLD file name>.inmask.npy`` into its working directory, a (time, in-mask voxels) float32
matrix that Denoise, TaskModelData and ExtractVOI read memory-mapped instead of
decompressing the ``.nii.gz`` again.

Those interfaces take either ``bold_cache`` (the workflow) or ``bold_file`` (a 4-D NIfTI, for
use on their own); :func:`cache_of` gives them a cache in both cases.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

from ..io.boldcache import cache_name, open_bold_cache, read_mask, write_bold_cache


@contextlib.contextmanager
def cache_of(inputs, mask):
    """Path of the BOLD cache an interface reads: ``inputs.bold_cache``, or a temporary cache
    of ``inputs.bold_file`` written to the working directory and removed afterwards."""
    if inputs.bold_cache:
        open_bold_cache(inputs.bold_cache, mask)  # fails early, naming the file, on a wrong cache
        yield inputs.bold_cache
        return
    path = write_bold_cache(inputs.bold_file, mask, Path(os.getcwd()) / f".{cache_name(inputs.bold_file)}")
    try:
        yield str(path)
    finally:
        path.unlink(missing_ok=True)


def source_name(inputs) -> str:
    """Name of the BOLD series an interface reads, for messages."""
    return Path(inputs.bold_cache or inputs.bold_file).name


class _CacheBOLDInputSpec(BaseInterfaceInputSpec):
    bold_file = File(exists=True, mandatory=True, desc="preprocessed 4-D BOLD (fMRIPrep, .nii.gz or .nii)")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the BOLD grid")


class _CacheBOLDOutputSpec(TraitedSpec):
    bold_cache = File(exists=True, desc="(time, in-mask voxels) float32 .npy, voxels in C order of the mask")
    n_volumes = traits.Int(desc="volumes (rows)")
    n_voxels = traits.Int(desc="in-mask voxels (columns)")


class CacheBOLD(SimpleInterface):
    """Decompress a run's BOLD once (CRC verified) into an in-mask (time, voxels) float32 cache."""

    input_spec = _CacheBOLDInputSpec
    output_spec = _CacheBOLDOutputSpec

    def _run_interface(self, runtime):
        mask = read_mask(self.inputs.brain_mask)
        out = write_bold_cache(self.inputs.bold_file, mask, Path(os.getcwd()) / cache_name(self.inputs.bold_file))
        n_volumes, n_voxels = open_bold_cache(out).shape
        self._results.update(bold_cache=str(out), n_volumes=n_volumes, n_voxels=n_voxels)
        return runtime
