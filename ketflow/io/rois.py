"""The circuit ROIs on a run's grid, and the label files the ROI node writes for the others.

* :func:`circuit_roiset`: the configured circuit (spheres of ``circuit.spheres_file`` /
  ``circuit.spheres``, then the regions of the packaged anatomical atlas or ``circuit.atlas``;
  the order of :func:`ketflow.config.roi_names`) on a BOLD grid, within a brain mask and, for
  the anatomical atlas, grey matter (:mod:`ketflow.signal.rois` does the geometry);
* :func:`grey_matter_on_grid`: fMRIPrep's grey-matter probability (or the template's) on a
  BOLD grid, thresholded;
* :func:`read_roi_table` / :func:`read_labels`: the labels TSV (``index``, ``name``, voxel
  counts, ``coverage``) and label image written by the ROI node, as the ROI label of every
  in-mask voxel;
* :func:`read_roi_voxels`: the cache columns of chosen ROIs (the DCM's volumes of interest).
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ..config import Circuit, load_spheres
from ..signal.rois import (
    ROISet,
    Sphere,
    anatomical_roiset,
    atlas_roiset,
    grey_matter_mask,
    read_circuit_atlas,
    resample_probability,
    spheres_roiset,
    template_grey_matter,
)
from .boldcache import volume_means, voxel_columns


def circuit_roiset(circuit: Circuit, reference: nib.Nifti1Image, brain_mask: np.ndarray,
                   min_voxels: int | None = None, grey_matter: np.ndarray | None = None) -> ROISet:
    """The circuit's ROIs on ``reference``'s grid within ``brain_mask`` (3-D bool).

    ``min_voxels`` (default ``circuit.min_voxels``): ROIs with fewer voxels in the mask raise
    ValueError (:func:`ketflow.signal.rois.mask_labels`). ``grey_matter`` (3-D bool on the
    grid, :func:`grey_matter_on_grid`): the anatomical atlas's ROIs (and extra spheres) are
    restricted to it as well; None: no restriction.
    """
    spheres = [Sphere(s.name, (float(s.x), float(s.y), float(s.z)), float(s.radius_mm))
               for s in load_spheres(circuit)]
    min_voxels = circuit.min_voxels if min_voxels is None else min_voxels
    if circuit.rois == "anatomical":
        # majority vote: a 1 mm atlas keeps each region's volume on a 2-4 mm grid (docs/rois.md)
        atlas, atlas_affine, names = read_circuit_atlas()
        return anatomical_roiset(atlas, atlas_affine, names, reference.shape[:3], reference.affine, brain_mask,
                                 grey_matter, min_voxels=min_voxels, spheres=spheres)
    if circuit.atlas is not None:
        labels = pd.read_csv(circuit.atlas.labels, sep="\t")
        return atlas_roiset(nib.load(circuit.atlas.dseg), labels, reference, brain_mask, min_voxels, spheres)
    if not spheres:
        raise ValueError("the circuit has neither spheres nor an atlas (circuit.spheres_file, circuit.spheres, "
                         "circuit.atlas)")
    return spheres_roiset(spheres, reference.shape[:3], reference.affine, brain_mask, min_voxels)


#: The grey matter used when fMRIPrep's is absent (sidecars; :func:`grey_matter_on_grid`).
TEMPLATE_GM_DESCRIPTION = ("template grey-matter probability (ICBM 2009a symmetric, 1 mm, shipped with nilearn; "
                           "fMRIPrep's label-GM_probseg in the output space was not found)")


def grey_matter_on_grid(gm_probseg: str | os.PathLike | None, reference: nib.Nifti1Image,
                        threshold: float) -> np.ndarray:
    """Grey matter (3-D bool) on ``reference``'s grid: fMRIPrep's ``label-GM_probseg`` of the run's
    output space when given (any grid of that space; linear interpolation), else the template's
    grey-matter probability (:func:`ketflow.signal.rois.template_grey_matter`), above ``threshold``."""
    if gm_probseg:
        image = nib.load(gm_probseg)
        if image.ndim != 3:
            raise ValueError(f"{Path(gm_probseg).name}: a grey-matter probability map must be 3-D, "
                             f"got shape {image.shape}")
        prob, affine = np.asarray(image.dataobj, dtype=np.float32), image.affine
    else:
        prob, affine = template_grey_matter()
    return grey_matter_mask(resample_probability(prob, affine, reference.shape[:3], reference.affine), threshold)


def read_roi_table(labels_tsv: str | os.PathLike) -> pd.DataFrame:
    """The ROI node's labels TSV sorted by ``index``, which must run 1..n."""
    table = pd.read_csv(labels_tsv, sep="\t").sort_values("index")
    if table["index"].tolist() != list(range(1, len(table) + 1)):
        raise ValueError(f"{Path(labels_tsv).name}: label indices must be 1..{len(table)}")
    return table


def _label_image(labels_file: str | os.PathLike, mask: np.ndarray) -> np.ndarray:
    labels = np.asanyarray(nib.load(labels_file).dataobj).astype(np.int64)
    if labels.shape != mask.shape:
        raise ValueError(f"label image {labels.shape} and brain mask {mask.shape} differ in shape")
    return labels


def read_labels(labels_file: str | os.PathLike, labels_tsv: str | os.PathLike,
                mask: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """ROI label of every in-mask voxel (n_voxels,), 0 = none, and the ROI names (index 1..n)."""
    table = read_roi_table(labels_tsv)
    return _label_image(labels_file, mask)[mask], table["name"].astype(str).tolist()


def read_roi_voxels(cache: str | os.PathLike, mask: np.ndarray, labels_file: str | os.PathLike,
                    labels_tsv: str | os.PathLike, regions: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per-volume in-mask mean intensity (T,) and each region's voxels [(T, n_voxels)], float64,
    from a BOLD cache; ``regions`` are ROI names of the labels TSV, whose ROIs lie in ``mask``."""
    table = pd.read_csv(labels_tsv, sep="\t")
    index = dict(zip(table["name"].astype(str), table["index"].astype(int)))
    missing = [r for r in regions if r not in index]
    if missing:
        raise ValueError(f"{Path(labels_tsv).name}: DCM regions {missing} are not among the ROIs {sorted(index)}")
    labels = _label_image(labels_file, mask)
    indices = [index[r] for r in regions]
    outside = sorted({int(i) for i in indices if np.any((labels == i) & ~mask)})
    if outside:
        raise ValueError(f"labels {outside} have voxels outside the brain mask")
    in_mask = labels[mask]
    voxels = [voxel_columns(cache, np.flatnonzero(in_mask == i)).astype(np.float64) for i in indices]
    return volume_means(cache), voxels
