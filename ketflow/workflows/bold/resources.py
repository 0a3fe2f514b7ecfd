"""Memory estimates of the nodes that hold a run's voxel data (for Nipype's MultiProc).

Every such node declares ``mem_gb`` as measured copies of the run's (time, in-mask voxels)
float32 matrix on top of the Python process (docs/performance.md), so ``--mem-gb`` lets the
scheduler run as many nodes at once as fit.
"""

from __future__ import annotations

import nibabel as nb
import numpy as np

from ...io.bids import RunInputs

#: Peak memory of the nodes that read voxel data, in copies of the run's (time, in-mask voxels)
#: float32 matrix: the cache node holds one volume; denoising its output and blocks; the
#: task-model data node the percent-scaled data and a block; the GLM and gPPI the
#: percent-scaled data and the fits; connectivity the denoised data and the seed maps.
MEMORY_COPIES = {"bold_cache": 0.1, "denoise": 1.8, "signals": 0.3, "task_data": 1.2, "connectivity": 2.2,
                 "activation": 2.2, "gppi": 2.6}


def _run_size(run: RunInputs) -> tuple[int, int]:
    """(volumes, in-mask voxels) of a run, from its BOLD header and brain mask."""
    return nb.load(run.bold).shape[3], int(np.count_nonzero(np.asanyarray(nb.load(run.mask).dataobj)))


def _estimate(copies: float, n_volumes: int, n_voxels: int) -> float:
    return round(copies * 4 * float(n_volumes) * n_voxels / 1e9 + 0.25, 2)


def bold_memory_gb(run: RunInputs, copies: float) -> float:
    """Memory estimate (GB) of a node holding ``copies`` float32 (time, in-mask voxels)
    matrices of the run, plus 0.25 GB for the Python process and its libraries."""
    return _estimate(copies, *_run_size(run))


def run_memory(run: RunInputs) -> dict[str, float]:
    """:func:`bold_memory_gb` of every node of :data:`MEMORY_COPIES` for ``run`` (reading its
    header and mask once)."""
    size = _run_size(run)
    return {name: _estimate(copies, *size) for name, copies in MEMORY_COPIES.items()}
