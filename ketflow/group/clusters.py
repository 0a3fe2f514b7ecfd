"""Cluster tables of corrected second-level maps: peaks in MNI space, size, nearest circuit ROI.

A cluster here is a set of face-connected voxels (6-connectivity, as the permutation
inference uses) that are significant after family-wise error correction (corrected p < alpha)
and whose t statistics share a sign. For cluster-mass inference these are exactly the
significant clusters at the cluster-forming threshold.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

__all__ = ["CLUSTER_COLUMNS", "cluster_table", "roi_coordinates"]

#: Columns of a cluster table and what they hold (the TSV sidecar's column descriptions).
CLUSTER_COLUMNS = {
    "correction": "the family-wise error correction whose significant voxels form the cluster "
                  "(voxelFWE, tfceFWE, clusterMassFWE, svcVoxelFWE, svcTfceFWE)",
    "cluster": "cluster number within this correction, largest first",
    "sign": "'+' (t > 0) or '-' (t < 0)",
    "n_voxels": "significant voxels in the cluster",
    "volume_mm3": "cluster volume (mm^3)",
    "x_mm": "peak (largest |t|) MNI x (mm)", "y_mm": "peak MNI y (mm)", "z_mm": "peak MNI z (mm)",
    "peak_t": "t statistic at the peak",
    "peak_zscore": "z equivalent of the peak's one-sided p (nilearn's z map)",
    "p_fwe": "smallest corrected p in the cluster (for clusterMassFWE: the cluster's p)",
    "nearest_roi": "circuit ROI nearest to the peak",
    "roi_distance_mm": "distance from the peak to the nearest voxel of that ROI (0: the peak lies in it)",
    "anatomical_label": "atlas region at the peak ('' outside every region)",
}


def roi_coordinates(labels: np.ndarray, affine: np.ndarray, n_rois: int) -> list[np.ndarray]:
    """MNI coordinates (k, 3) of the voxels of each ROI 1..n_rois of a label image."""
    out = []
    for index in range(1, n_rois + 1):
        ijk = np.argwhere(labels == index)
        out.append(ijk @ affine[:3, :3].T + affine[:3, 3])
    return out


def cluster_table(t_map: np.ndarray, p_maps: dict[str, np.ndarray], affine: np.ndarray, alpha: float, *,
                  z_map: np.ndarray | None = None, rois: list[tuple[str, np.ndarray]] = (),
                  atlas=None) -> pd.DataFrame:
    """One row per significant cluster of each correction.

    t_map : (X, Y, Z) t statistic; p_maps : correction name -> (X, Y, Z) corrected p (NaN or 1
    where not tested); affine : voxel-to-MNI (mm); z_map : (X, Y, Z) z statistic;
    rois : (name, (k, 3) MNI voxel coordinates) per circuit ROI (:func:`roi_coordinates`);
    atlas : an object with ``label_at(xyz_mm) -> str`` (:class:`ketflow.io.voxelwise.AnatomicalAtlas`).
    """
    structure = ndimage.generate_binary_structure(3, 1)
    voxel_mm3 = round(float(abs(np.linalg.det(affine[:3, :3]))), 6)
    rows = []
    for correction, p_map in p_maps.items():
        significant = np.nan_to_num(p_map, nan=1.0) < alpha
        clusters = []
        for sign, side in (("+", t_map > 0), ("-", t_map < 0)):
            labels, n = ndimage.label(significant & side, structure)
            for index in range(1, n + 1):
                clusters.append((sign, labels == index))
        clusters.sort(key=lambda item: -int(item[1].sum()))
        for number, (sign, members) in enumerate(clusters, start=1):
            ijk = np.argwhere(members)
            peak = tuple(ijk[np.argmax(np.abs(t_map[members]))])
            xyz = np.asarray(peak, dtype=float) @ affine[:3, :3].T + affine[:3, 3]
            row = {"correction": correction, "cluster": number, "sign": sign, "n_voxels": len(ijk),
                   "volume_mm3": len(ijk) * voxel_mm3, "x_mm": xyz[0], "y_mm": xyz[1], "z_mm": xyz[2],
                   "peak_t": float(t_map[peak]),
                   "peak_zscore": float(z_map[peak]) if z_map is not None else np.nan,
                   "p_fwe": float(np.nanmin(p_map[members])), "nearest_roi": "", "roi_distance_mm": np.nan,
                   "anatomical_label": atlas.label_at(xyz) if atlas is not None else ""}
            distances = [(float(np.sqrt(((coords - xyz) ** 2).sum(axis=1)).min()), name)
                         for name, coords in rois if len(coords)]
            if distances:
                row["roi_distance_mm"], row["nearest_roi"] = min(distances)
            rows.append(row)
    return pd.DataFrame.from_records(rows, columns=list(CLUSTER_COLUMNS))
