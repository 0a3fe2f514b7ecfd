"""Circuit ROIs as integer label images on a BOLD grid.

Two ways to define ROIs, both ending in the same :class:`ROISet`:

* spheres (MNI world coordinates in mm and a radius in mm): a voxel belongs to a sphere
  when the world position of the voxel *centre* lies within the radius. Where spheres
  overlap, each voxel goes to the sphere whose centre is nearest (ties: the sphere listed
  first), so every voxel has exactly one label and the result does not depend on any
  painting order. This is the usual "spherical seed" definition (e.g. nilearn's
  NiftiSpheresMasker, which however lets overlapping spheres share voxels);
* a user atlas (``atlas-*_dseg.nii.gz`` with a labels TSV), resampled nearest-neighbour
  onto the BOLD grid with :func:`nilearn.image.resample_to_img`;
* both: the spheres first, then the atlas regions (a voxel in a sphere belongs to the
  sphere; a sphere named like an atlas region replaces it), so that an atlas can extend the
  circuit.

The labels are then intersected with the run's brain mask; an ROI left with fewer than
``min_voxels`` voxels (e.g. an ROI lying outside the field of view) raises ``ValueError``
naming the ROI, because its mean or eigenvariate would not be a measurement of that region.

Label values are 1..n in the order of ``ROISet.names``; 0 is background.
Default circuit coordinates: ``ketflow/data/rois/circuit_spheres.tsv`` (sources cited there).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd

CIRCUIT_SPHERES_TSV = files("ketflow") / "data" / "rois" / "circuit_spheres.tsv"
#: Default fewest in-mask voxels an ROI may keep (the ``circuit.min_voxels`` default and the
#: ``BuildROIs`` default). Five keeps the default 5 mm spheres usable on 4 mm grids (about 8
#: voxels there, about 65 on 2 mm grids) while rejecting an ROI that lies mostly outside the
#: field of view.
MIN_VOXELS = 5


@dataclass(frozen=True)
class Sphere:
    """A spherical ROI: ``center`` (x, y, z) in world mm, ``radius_mm`` in mm."""

    name: str
    center: tuple[float, float, float]
    radius_mm: float


@dataclass(frozen=True)
class ROISet:
    """ROI labels on a voxel grid.

    labels : int32 array, shape = the grid's 3-D shape; 0 = background, i+1 = ``names[i]``.
    names : ROI names, in label order.
    n_voxels : voxels per ROI after masking, shape (n_rois,).
    n_voxels_unmasked : voxels per ROI before the brain mask, shape (n_rois,).
    """

    labels: np.ndarray
    names: tuple[str, ...]
    n_voxels: np.ndarray
    n_voxels_unmasked: np.ndarray

    @property
    def coverage(self) -> np.ndarray:
        """Fraction of each ROI's voxels inside the brain mask, shape (n_rois,)."""
        return self.n_voxels / np.maximum(self.n_voxels_unmasked, 1)

    def table(self) -> pd.DataFrame:
        """One row per ROI: index (label value), name, voxel counts, coverage."""
        return pd.DataFrame(
            {
                "index": np.arange(1, len(self.names) + 1),
                "name": list(self.names),
                "n_voxels": self.n_voxels,
                "n_voxels_unmasked": self.n_voxels_unmasked,
                "coverage": self.coverage,
            }
        )


def read_sphere_table(path: str | Path | None = None) -> list[Sphere]:
    """Read a sphere TSV (columns name, x, y, z, radius_mm); default: the circuit table."""
    table = pd.read_csv(path if path is not None else CIRCUIT_SPHERES_TSV, sep="\t")
    missing = {"name", "x", "y", "z", "radius_mm"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: sphere table lacks columns {sorted(missing)}")
    if table["name"].duplicated().any():
        raise ValueError(f"{path}: duplicated ROI names {table['name'][table['name'].duplicated()].tolist()}")
    return [
        Sphere(str(r.name), (float(r.x), float(r.y), float(r.z)), float(r.radius_mm))
        for r in table.itertuples(index=False)
    ]


def voxel_centres_mm(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """World coordinates (mm) of every voxel centre, shape (*shape, 3)."""
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in shape[:3]), indexing="ij"), axis=-1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def sphere_labels(spheres: list[Sphere], shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """Label image (int32, ``shape``) of spheres; overlaps go to the nearest centre.

    affine : (4, 4) voxel-to-world matrix of the grid (mm).
    """
    xyz = voxel_centres_mm(shape, affine)
    labels = np.zeros(shape[:3], dtype=np.int32)
    best = np.full(shape[:3], np.inf)
    for index, sphere in enumerate(spheres, start=1):
        dist = np.linalg.norm(xyz - np.asarray(sphere.center), axis=-1)
        take = (dist <= sphere.radius_mm) & (dist < best)
        labels[take] = index
        best[take] = dist[take]
    return labels


def mask_labels(
    labels: np.ndarray, names: tuple[str, ...] | list[str], brain_mask: np.ndarray, min_voxels: int = 1
) -> ROISet:
    """Intersect a label image with a brain mask and count voxels.

    labels : int array (3-D), values 0..len(names).
    brain_mask : bool-like array, same shape.
    min_voxels : an ROI keeping fewer voxels raises ``ValueError`` naming it.
    """
    names = tuple(names)
    if labels.shape != brain_mask.shape:
        raise ValueError(f"label image shape {labels.shape} != brain mask shape {brain_mask.shape}")
    n_rois = len(names)
    unmasked = np.bincount(labels.ravel(), minlength=n_rois + 1)[1 : n_rois + 1]
    kept = np.where(np.asarray(brain_mask, dtype=bool), labels, 0).astype(np.int32)
    counts = np.bincount(kept.ravel(), minlength=n_rois + 1)[1 : n_rois + 1]
    short = [f"{name} ({count} voxels)" for name, count in zip(names, counts, strict=True) if count < min_voxels]
    if short:
        raise ValueError(
            f"ROIs with fewer than {min_voxels} voxels inside the brain mask: {', '.join(short)}"
        )
    return ROISet(kept, names, counts, unmasked)


def spheres_roiset(
    spheres: list[Sphere],
    shape: tuple[int, int, int],
    affine: np.ndarray,
    brain_mask: np.ndarray,
    min_voxels: int = 1,
) -> ROISet:
    """Sphere ROIs on a BOLD grid (shape + affine), restricted to ``brain_mask``."""
    labels = sphere_labels(spheres, shape, affine)
    return mask_labels(labels, [s.name for s in spheres], brain_mask, min_voxels)


def atlas_labels_on_grid(atlas_img, atlas_labels: pd.DataFrame, reference_img) -> tuple[np.ndarray, tuple[str, ...]]:
    """A user atlas resampled (nearest neighbour) onto ``reference_img``'s grid.

    atlas_img : nibabel image of integer labels (a BIDS ``atlas-*_dseg.nii.gz``).
    atlas_labels : table with columns ``index`` and ``name`` (BIDS dseg TSV); only these
        labels are kept, renumbered 1..n in table order.
    reference_img : nibabel image defining the BOLD grid (3-D or 4-D).
    Returns (int32 label image of the grid's 3-D shape, names in label order).
    """
    from nilearn.image import resample_to_img

    missing = {"index", "name"} - set(atlas_labels.columns)
    if missing:
        raise ValueError(f"atlas labels table lacks columns {sorted(missing)}")
    resampled = resample_to_img(
        atlas_img,
        reference_img,
        interpolation="nearest",
        force_resample=True,
        copy_header=True,
    )
    values = np.rint(np.asanyarray(resampled.dataobj)).astype(np.int64)
    values = values.reshape(values.shape[:3])  # a 4-D dseg must have a single volume
    labels = np.zeros(values.shape, dtype=np.int32)
    for new, old in enumerate(atlas_labels["index"].astype(int), start=1):
        labels[values == old] = new
    return labels, tuple(str(n) for n in atlas_labels["name"])


def combine_labels(
    first: np.ndarray, first_names, second: np.ndarray, second_names
) -> tuple[np.ndarray, tuple[str, ...]]:
    """One label image from two (e.g. spheres, then an atlas) on the same grid.

    ``first``'s ROIs keep labels 1..n1; ``second``'s follow, in order, except those whose
    name is already in ``first_names`` (a sphere of the same name replaces that atlas
    region). A voxel labelled in both goes to ``first``. Returns (int32 labels, names).
    """
    if first.shape != second.shape:
        raise ValueError(f"label images differ in shape: {first.shape} and {second.shape}")
    first_names, second_names = tuple(first_names), tuple(second_names)
    labels = np.asarray(first, dtype=np.int32).copy()
    names = list(first_names)
    for old, name in enumerate(second_names, start=1):
        if name in first_names:
            continue
        names.append(name)
        labels[(second == old) & (labels == 0)] = len(names)
    return labels, tuple(names)


def atlas_roiset(atlas_img, atlas_labels: pd.DataFrame, reference_img, brain_mask: np.ndarray,
                 min_voxels: int = 1, spheres: list[Sphere] = ()) -> ROISet:
    """ROIs of a user atlas on ``reference_img``'s grid (see :func:`atlas_labels_on_grid`),
    optionally with ``spheres`` added first (:func:`combine_labels`: spheres come first in the
    label order, own the voxels they share with atlas regions and replace atlas regions of the
    same name), restricted to ``brain_mask``.
    """
    labels, names = atlas_labels_on_grid(atlas_img, atlas_labels, reference_img)
    if spheres:
        sphere_img = sphere_labels(list(spheres), labels.shape, reference_img.affine)
        labels, names = combine_labels(sphere_img, [s.name for s in spheres], labels, names)
    return mask_labels(labels, names, brain_mask, min_voxels)
