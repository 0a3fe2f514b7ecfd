"""Voxel grid, tissue compartments and circuit ROIs of the simulated datasets.

The grid is MNI152NLin2009cAsym world space as fMRIPrep writes it: at 2 mm it is the
97 x 115 x 97 grid with origin (-96, -132, -78) mm (the ``res-2`` template grid); other voxel
sizes cover the same bounding box. Tissue compartments come from the ICBM 2009a symmetric
MNI152 templates shipped inside nilearn (Fonov et al. 2011, NeuroImage 54:313-327; no download),
smoothed to the target voxel size and resampled: they stand in for the 2009c asymmetric template,
which differs from them by a few millimetres at most.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib.resources import files

import nibabel as nib
import numpy as np
from nilearn import image
from nilearn.datasets import struct
from scipy import ndimage

BBOX_MIN_MM = np.array([-96.0, -132.0, -78.0])
BBOX_MAX_MM = np.array([96.0, 96.0, 114.0])
SPHERE_TABLE = ("ketflow", "data/rois/circuit_spheres.tsv")


@dataclass(frozen=True)
class Sphere:
    """One circuit ROI sphere: centre (x, y, z) in MNI mm and radius in mm."""

    name: str
    x: float
    y: float
    z: float
    radius_mm: float


@dataclass
class Anatomy:
    """Boolean 3-D masks on the grid (shape ``shape``) and a T1-like intensity map in [0, 1].

    ``gm``, ``wm`` and ``csf`` partition ``brain``; ``head`` is ``brain`` dilated by about 8 mm
    (scalp and skull voxels that an un-skull-stripped fMRIPrep output still contains).
    ``rois`` maps ROI name to its boolean sphere mask (always inside ``gm``).
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


def grid_geometry(voxel_size: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Affine (4 x 4, mm) and shape of the MNI grid with isotropic ``voxel_size`` mm voxels."""
    v = float(voxel_size)
    shape = tuple(int(n) for n in np.floor((BBOX_MAX_MM - BBOX_MIN_MM) / v + 1e-6) + 1)
    affine = np.diag([v, v, v, 1.0])
    affine[:3, 3] = BBOX_MIN_MM
    return affine, shape


def read_sphere_table() -> list[Sphere]:
    """Read ``ketflow/data/rois/circuit_spheres.tsv`` (columns name, x, y, z, radius_mm)."""
    text = files(SPHERE_TABLE[0]).joinpath(SPHERE_TABLE[1]).read_text()
    rows = csv.DictReader(text.splitlines(), delimiter="\t")
    return [
        Sphere(r["name"], float(r["x"]), float(r["y"]), float(r["z"]), float(r["radius_mm"]))
        for r in rows
    ]


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


def voxel_coordinates(affine: np.ndarray, shape: tuple) -> np.ndarray:
    """World coordinates (mm) of every voxel centre, shape ``shape + (3,)``."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def sphere_mask(sphere: Sphere, affine: np.ndarray, shape: tuple) -> np.ndarray:
    """Voxels whose centre lies within the sphere; the voxel nearest the centre at least."""
    xyz = voxel_coordinates(affine, shape)
    dist = np.linalg.norm(xyz - np.array([sphere.x, sphere.y, sphere.z]), axis=-1)
    mask = dist <= sphere.radius_mm
    mask[np.unravel_index(np.argmin(dist), shape)] = True
    return mask


def build_anatomy(voxel_size: float, spheres: list[Sphere]) -> Anatomy:
    """Brain, tissue and ROI masks on the grid of ``voxel_size`` mm.

    brain: smoothed T1 template > 0.2; csf: brain voxels with 1 - p(GM) - p(WM) > 0.5;
    wm: remaining brain voxels with p(WM) > 0.7; gm: the rest of the brain plus every ROI voxel.
    """
    affine, shape = grid_geometry(voxel_size)
    t1 = _template_on_grid(struct.MNI152_FILE_PATH, affine, shape)
    p_gm = _template_on_grid(struct.GM_MNI152_FILE_PATH, affine, shape)
    p_wm = _template_on_grid(struct.WM_MNI152_FILE_PATH, affine, shape)
    rois = {s.name: sphere_mask(s, affine, shape) for s in spheres}
    any_roi = np.zeros(shape, dtype=bool)
    for m in rois.values():
        any_roi |= m
    brain = (t1 > 0.2) | any_roi
    csf = brain & (1.0 - p_gm - p_wm > 0.5) & ~any_roi
    wm = brain & ~csf & (p_wm > 0.7) & ~any_roi
    gm = brain & ~csf & ~wm
    n_dilate = max(1, round(8.0 / float(voxel_size)))
    head = ndimage.binary_dilation(brain, iterations=n_dilate)
    return Anatomy(affine, shape, brain, gm, wm, csf, head, t1, rois)
