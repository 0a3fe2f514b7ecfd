"""Voxel grid, tissue compartments and circuit ROIs of the simulated datasets.

The grid is MNI152NLin2009cAsym world space as fMRIPrep writes it: at 2 mm it is the
97 x 115 x 97 grid with origin (-96, -132, -78) mm (the ``res-2`` template grid); other voxel
sizes cover the same bounding box. Tissue compartments come from the ICBM 2009a symmetric
MNI152 templates shipped inside nilearn (Fonov et al. 2011, NeuroImage 54:313-327; no download),
smoothed to the target voxel size and resampled: they stand in for the 2009c asymmetric template,
which differs from them by a few millimetres at most.

The circuit ROIs are the anatomical regions of ketflow's packaged circuit atlas
(``ketflow/data/rois/tpl-MNI152NLin2009cAsym_atlas-circuit_dseg``, Neuromorphometrics labels cut
by documented boundaries; docs/rois.md), brought onto the grid by majority vote
(:func:`ketflow.signal.rois.resample_labels`): the simulated signals sit on the anatomy, not on
ketflow's spheres, so an analysis whose ROIs miss the anatomy loses signal as it would on real
data.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from nilearn import image
from nilearn.datasets import struct
from scipy import ndimage

from ketflow.signal.rois import read_circuit_atlas, resample_labels

BBOX_MIN_MM = np.array([-96.0, -132.0, -78.0])
BBOX_MAX_MM = np.array([96.0, 96.0, 114.0])

@dataclass
class Anatomy:
    """Boolean 3-D masks on the grid (shape ``shape``) and a T1-like intensity map in [0, 1].

    ``gm``, ``wm`` and ``csf`` partition ``brain``; ``head`` is ``brain`` dilated by about 8 mm
    (scalp and skull voxels that an un-skull-stripped fMRIPrep output still contains).
    ``rois`` maps ROI name to its boolean mask (mutually exclusive, always inside ``gm``);
    ``p_gm`` is the template's grey-matter probability on the grid (float, [0, 1]).
    """

    affine: np.ndarray
    shape: tuple
    brain: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    head: np.ndarray
    t1: np.ndarray
    rois: dict
    p_gm: np.ndarray


def grid_geometry(voxel_size: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Affine (4 x 4, mm) and shape of the MNI grid with isotropic ``voxel_size`` mm voxels."""
    v = float(voxel_size)
    shape = tuple(int(n) for n in np.floor((BBOX_MAX_MM - BBOX_MIN_MM) / v + 1e-6) + 1)
    affine = np.diag([v, v, v, 1.0])
    affine[:3, 3] = BBOX_MIN_MM
    return affine, shape


def roi_names() -> list[str]:
    """Names of the circuit ROIs, in the packaged atlas's label order."""
    return list(read_circuit_atlas()[2])


def circuit_regions(affine: np.ndarray, shape: tuple) -> dict:
    """ROI name -> boolean mask on the grid: the packaged atlas's regions by majority vote."""
    atlas, atlas_affine, names = read_circuit_atlas()
    labels = resample_labels(atlas, atlas_affine, shape, affine, "majority")
    return {name: labels == value for value, name in enumerate(names, start=1)}


def _template_on_grid(path: str, affine: np.ndarray, shape: tuple) -> np.ndarray:
    img = image.smooth_img(nib.load(path), fwhm=float(affine[0, 0]))
    res = image.resample_img(
        img,
        target_affine=affine,
        target_shape=shape,
        interpolation="continuous",
        force_resample=True,
        copy_header=True,
    )
    return np.clip(np.asarray(res.dataobj, dtype=float) / 255.0, 0.0, 1.0)


def build_anatomy(voxel_size: float) -> Anatomy:
    """Brain, tissue and ROI masks on the grid of ``voxel_size`` mm.

    brain: smoothed T1 template > 0.2, plus every ROI voxel; csf: brain voxels with 1 - p(GM) -
    p(WM) > 0.5; wm: remaining brain voxels with p(WM) > 0.7; gm: the rest of the brain plus every
    ROI voxel (the atlas labels grey matter).
    """
    affine, shape = grid_geometry(voxel_size)
    t1 = _template_on_grid(struct.MNI152_FILE_PATH, affine, shape)
    p_gm = _template_on_grid(struct.GM_MNI152_FILE_PATH, affine, shape)
    p_wm = _template_on_grid(struct.WM_MNI152_FILE_PATH, affine, shape)
    rois = circuit_regions(affine, shape)
    any_roi = np.zeros(shape, dtype=bool)
    for m in rois.values():
        any_roi |= m
    brain = (t1 > 0.2) | any_roi
    csf = brain & (1.0 - p_gm - p_wm > 0.5) & ~any_roi
    wm = brain & ~csf & (p_wm > 0.7) & ~any_roi
    gm = brain & ~csf & ~wm
    n_dilate = max(1, round(8.0 / float(voxel_size)))
    head = ndimage.binary_dilation(brain, iterations=n_dilate)
    return Anatomy(affine, shape, brain, gm, wm, csf, head, t1, rois, p_gm)
