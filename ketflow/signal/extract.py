"""ROI time series from (time, voxels) data and a voxel label vector.

* mean: the average over an ROI's voxels at each volume (as nilearn's NiftiLabelsMasker
  with ``strategy="mean"``);
* first eigenvariate, as SPM's volume-of-interest extraction (spm_regions) is documented
  (Friston et al., SPM12 manual, "VOI extraction"; Friston KJ et al. (1997) NeuroImage
  6:218-229 for its use in PPI): the first principal component of the ROI's (time, voxels)
  data Y = U S V'. The summary is u1 * s1 / sqrt(n_voxels), i.e. the first left singular
  vector scaled so that its variance matches that of the voxel-averaged projection
  (the eigenvariate "scaled to the data"), with its sign chosen so that the voxel
  weights v1 sum to a positive number, so that the eigenvariate correlates positively
  with the ROI mean when the ROI is coherent. Y is used as given (denoise first: SPM
  extracts from data adjusted for confounds); nothing is centred here.

Implemented from these descriptions with NumPy's SVD (no SPM code used).
"""

from __future__ import annotations

import numpy as np


def _check(data: np.ndarray, labels: np.ndarray, n_rois: int) -> None:
    if data.ndim != 2 or labels.ndim != 1 or data.shape[1] != labels.shape[0]:
        raise ValueError(f"data must be (time, voxels) and labels (voxels,), got {data.shape} and {labels.shape}")
    empty = [i for i in range(1, n_rois + 1) if not np.any(labels == i)]
    if empty:
        raise ValueError(f"ROI labels {empty} have no voxels")


def roi_means(data: np.ndarray, labels: np.ndarray, n_rois: int) -> np.ndarray:
    """Mean time series per ROI, shape (T, n_rois); ``labels`` (V,) values 0..n_rois, 0 ignored."""
    labels = np.asarray(labels)
    _check(data, labels, n_rois)
    onehot = np.zeros((labels.shape[0], n_rois), dtype=np.float64)
    inside = labels > 0
    onehot[np.flatnonzero(inside), labels[inside] - 1] = 1.0
    onehot /= onehot.sum(axis=0)
    return np.asarray(data, dtype=np.float64) @ onehot


def first_eigenvariate(roi_data: np.ndarray) -> np.ndarray:
    """SPM-convention first eigenvariate of one ROI's (T, n_voxels) data; shape (T,)."""
    roi_data = np.asarray(roi_data, dtype=np.float64)
    u, s, vt = np.linalg.svd(roi_data, full_matrices=False)
    sign = 1.0 if vt[0].sum() >= 0 else -1.0
    return sign * u[:, 0] * s[0] / np.sqrt(roi_data.shape[1])


def roi_eigenvariates(data: np.ndarray, labels: np.ndarray, n_rois: int) -> np.ndarray:
    """First eigenvariate per ROI (see module docstring), shape (T, n_rois)."""
    labels = np.asarray(labels)
    _check(data, labels, n_rois)
    return np.column_stack([first_eigenvariate(data[:, labels == i]) for i in range(1, n_rois + 1)])


def extract(data: np.ndarray, labels: np.ndarray, n_rois: int, method: str = "mean") -> np.ndarray:
    """ROI time series (T, n_rois) by ``method`` "mean" or "eigenvariate"."""
    if method == "mean":
        return roi_means(data, labels, n_rois)
    if method == "eigenvariate":
        return roi_eigenvariates(data, labels, n_rois)
    raise ValueError(f"unknown extraction method {method!r}; use 'mean' or 'eigenvariate'")
