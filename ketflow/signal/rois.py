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

The packaged anatomical circuit atlas (``ketflow/data/rois/tpl-MNI152NLin2009cAsym_atlas-circuit_dseg``,
built by ``scripts/build_circuit_atlas.py`` from the Neuromorphometrics labels; docs/rois.md)
is brought onto a run's grid by :func:`anatomical_roiset`: labels resampled by majority vote
(:func:`resample_labels`), then restricted to the brain mask and to grey matter
(:func:`grey_matter_mask`: fMRIPrep's ``label-GM_probseg`` in the output space when present,
the template's grey-matter probability, :func:`template_grey_matter`, otherwise).
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
CIRCUIT_ATLAS_DSEG = files("ketflow") / "data" / "rois" / "tpl-MNI152NLin2009cAsym_atlas-circuit_dseg.nii.gz"
CIRCUIT_ATLAS_TSV = files("ketflow") / "data" / "rois" / "tpl-MNI152NLin2009cAsym_atlas-circuit_dseg.tsv"
#: Default grey-matter probability above which a voxel counts as grey matter (docs/rois.md:
#: tissue by the larger posterior, as SPM's and FSL's hard segmentations; voxel counts at other
#: thresholds are tabulated there).
GM_THRESHOLD = 0.5


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


def read_circuit_atlas() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The packaged anatomical circuit atlas: (int labels (193, 229, 193), affine (4, 4), names).

    MNI152NLin2009cAsym res-01 grid; label value i + 1 is ``names[i]`` (the order of the
    packaged table, which is the circuit order of ``circuit_spheres.tsv``).
    """
    import nibabel as nib

    img = nib.load(str(CIRCUIT_ATLAS_DSEG))
    table = pd.read_csv(CIRCUIT_ATLAS_TSV, sep="\t")
    if table["index"].tolist() != list(range(1, len(table) + 1)):
        raise ValueError(f"{CIRCUIT_ATLAS_TSV}: indices must be 1..n in order")
    return np.asarray(img.dataobj).astype(np.int32), img.affine, tuple(table["name"])


def _world_to_voxel(world: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Voxel coordinates (float, (..., 3)) of world positions (mm, (..., 3)) on a grid."""
    inverse = np.linalg.inv(affine)
    return world @ inverse[:3, :3].T + inverse[:3, 3]


def _nearest_labels(labels: np.ndarray, labels_affine: np.ndarray, shape, affine) -> np.ndarray:
    """``labels`` read at the nearest source voxel of each target voxel centre (0 outside)."""
    src = np.rint(_world_to_voxel(voxel_centres_mm(shape, affine), labels_affine)).astype(np.int64)
    inside = np.all((src >= 0) & (src < np.array(labels.shape[:3])), axis=-1)
    out = np.zeros(shape[:3], dtype=np.int32)
    out[inside] = labels[tuple(np.moveaxis(src[inside], -1, 0))]
    return out


def _crop_to_labels(labels: np.ndarray, labels_affine: np.ndarray, target_affine: np.ndarray):
    """The part of a label image around its labelled voxels, with a margin of one target voxel
    and one source voxel, and its affine: every source voxel that votes with a labelled one for
    the same target voxel is kept, and the vote stays cheap for a 1 mm whole-brain atlas."""
    found = np.argwhere(labels > 0)
    if not len(found):
        return labels, labels_affine
    source_size = np.sqrt((labels_affine[:3, :3] ** 2).sum(axis=0)).min()
    target_size = np.sqrt((target_affine[:3, :3] ** 2).sum(axis=0)).max()
    margin = int(np.ceil(target_size / source_size)) + 1
    low = np.maximum(found.min(axis=0) - margin, 0)
    high = np.minimum(found.max(axis=0) + margin + 1, labels.shape)
    shift = np.eye(4)
    shift[:3, 3] = low
    return labels[low[0]:high[0], low[1]:high[1], low[2]:high[2]], labels_affine @ shift


def resample_labels(labels: np.ndarray, labels_affine: np.ndarray, shape, affine,
                    method: str = "majority") -> np.ndarray:
    """A label image brought onto another grid.

    labels : int array (3-D), 0 = background; labels_affine : its (4, 4) voxel-to-world matrix.
    shape, affine : the target grid (3-D shape, (4, 4) matrix; mm).
    method : ``"nearest"`` -- each target voxel takes the label at the source voxel nearest its
        centre (nilearn's ``resample_to_img(interpolation="nearest")``); ``"majority"`` -- each
        source voxel votes for the target voxel containing its centre and a target voxel takes
        the label with most votes, provided it has at least as many as the background (ties
        between labels go to the smaller label value). Majority keeps a region's volume when
        the target voxels are larger than the source's (a 1 mm atlas on a 2-4 mm BOLD grid),
        where nearest keeps whatever label sits at the voxel centre. Target voxels that receive
        no source voxel (a finer target grid) fall back to nearest.
    Returns an int32 array of the target's 3-D shape.
    """
    if method not in ("majority", "nearest"):
        raise ValueError(f"label resampling method must be 'majority' or 'nearest', got {method!r}")
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"a label image must be 3-D, got shape {labels.shape}")
    shape = tuple(int(n) for n in shape[:3])
    nearest = _nearest_labels(labels, labels_affine, shape, affine)
    if method == "nearest":
        return nearest
    labels, labels_affine = _crop_to_labels(labels, labels_affine, affine)
    target = np.rint(_world_to_voxel(voxel_centres_mm(labels.shape, labels_affine), affine)).astype(np.int64)
    inside = np.all((target >= 0) & (target < np.array(shape)), axis=-1)
    flat_target = np.ravel_multi_index(tuple(np.moveaxis(target[inside], -1, 0)), shape)
    votes_all = np.bincount(flat_target, minlength=int(np.prod(shape)))
    values = labels[inside].astype(np.int64)
    labelled = values > 0
    n_labels = int(values.max(initial=0))
    out = np.zeros(int(np.prod(shape)), dtype=np.int32)
    if n_labels:
        codes, counts = np.unique(flat_target[labelled] * n_labels + values[labelled] - 1, return_counts=True)
        voxel, label = np.divmod(codes, n_labels)
        # per target voxel, the label with most votes (stable order: smaller label first)
        order = np.lexsort((label, -counts, voxel))
        first = order[np.r_[True, np.diff(voxel[order]) != 0]]
        best_voxel, best_label, best_count = voxel[first], label[first] + 1, counts[first]
        labelled_votes = np.bincount(flat_target[labelled], minlength=out.size)
        background = votes_all[best_voxel] - labelled_votes[best_voxel]
        win = best_count >= background
        out[best_voxel[win]] = best_label[win]
    out = out.reshape(shape)
    no_vote = votes_all.reshape(shape) == 0
    out[no_vote] = nearest[no_vote]
    return out


def resample_probability(prob: np.ndarray, prob_affine: np.ndarray, shape, affine) -> np.ndarray:
    """A probability map (3-D float) linearly interpolated at a grid's voxel centres; 0 outside."""
    from scipy.ndimage import map_coordinates

    coords = _world_to_voxel(voxel_centres_mm(shape, affine), prob_affine)
    values = map_coordinates(np.asarray(prob, dtype=np.float32), np.moveaxis(coords, -1, 0),
                             order=1, mode="constant", cval=0.0)
    return np.clip(values, 0.0, 1.0)


def template_grey_matter() -> tuple[np.ndarray, np.ndarray]:
    """Grey-matter probability of the MNI template shipped inside nilearn (no download).

    Returns (float32 array (197, 233, 189), affine): the ICBM 2009a symmetric nonlinear GM
    probability map at 1 mm (Fonov et al. 2011), the closest template GM available offline to
    MNI152NLin2009cAsym (the same ICBM 2009 average, symmetric version; docs/rois.md).
    """
    from nilearn.datasets import load_mni152_gm_template

    img = load_mni152_gm_template(resolution=1)
    return np.asarray(img.dataobj, dtype=np.float32), img.affine


def grey_matter_mask(gm_probability: np.ndarray, threshold: float = GM_THRESHOLD) -> np.ndarray:
    """Voxels whose grey-matter probability exceeds ``threshold`` (bool, same shape)."""
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"grey-matter threshold must be in [0, 1), got {threshold}")
    return np.asarray(gm_probability) > threshold


def anatomical_roiset(
    atlas: np.ndarray,
    atlas_affine: np.ndarray,
    names,
    shape,
    affine: np.ndarray,
    brain_mask: np.ndarray,
    grey_matter: np.ndarray | None = None,
    method: str = "majority",
    min_voxels: int = 0,
    spheres: tuple[Sphere, ...] | list[Sphere] = (),
) -> ROISet:
    """Atlas regions on a run's grid, restricted to the brain mask and grey matter.

    atlas, atlas_affine, names : label image (values 1..len(names)), its (4, 4) affine, names.
    shape, affine : the run's grid; brain_mask : bool array of that shape.
    grey_matter : bool array of that shape (:func:`grey_matter_mask` of fMRIPrep's GM
        probability resampled with :func:`resample_probability`) or None (no restriction).
    Returns a :class:`ROISet` whose ``n_voxels_unmasked`` counts each region on the grid before
    any mask and ``n_voxels`` after the brain mask and grey matter. ``min_voxels`` > 0 raises
    ``ValueError`` naming short regions (see :func:`mask_labels`); the default 0 leaves that to
    a coverage rule (:func:`ketflow.signal.roi_quality.apply_coverage_rule`). ``spheres``: ROIs
    placed before the atlas regions (:func:`combine_labels`: a sphere named like a region
    replaces it), restricted like them.
    """
    labels = resample_labels(atlas, atlas_affine, shape, affine, method)
    if spheres:
        labels, names = combine_labels(sphere_labels(list(spheres), tuple(shape[:3]), affine),
                                       [s.name for s in spheres], labels, names)
    keep = np.asarray(brain_mask, dtype=bool)
    if grey_matter is not None:
        if grey_matter.shape != keep.shape:
            raise ValueError(f"grey-matter mask shape {grey_matter.shape} != brain mask shape {keep.shape}")
        keep = keep & grey_matter
    return mask_labels(labels, names, keep, min_voxels)
