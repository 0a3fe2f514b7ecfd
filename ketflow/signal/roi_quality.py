"""Per-ROI measurement quality of a run: voxel count, temporal SNR, signal dropout, coverage rule.

Definitions (docs/rois.md):

* **temporal SNR** of a voxel: its temporal mean divided by the standard deviation of its time
  series after removing a polynomial trend of order ``detrend_order`` (default 2: constant,
  linear, quadratic; Legendre basis), with ``n - detrend_order - 1`` degrees of freedom, so that
  slow scanner drift is not counted as noise: nipype's ``TSNR`` interface with
  ``regress_poly=2``, the setting of Nipype's example preprocessing workflows (which divides by
  ``n`` rather than the residual degrees of freedom). A region's tSNR is the **median** over its voxels (robust to a few
  voxels at the mask edge); ``tsnr_roi_signal`` is the tSNR of the region's mean time series,
  the quantity its ROI-level analyses actually receive.
* **dropout**: a voxel whose temporal mean is below ``dropout_fraction`` (default 0.5) times
  the median temporal mean over the brain mask. Susceptibility gradients near the air-filled
  sinuses and ear canals dephase the signal in orbitofrontal/ventromedial PFC and the medial
  temporal lobe (Ojemann et al. 1997, NeuroImage 6:156-167; Weiskopf et al. 2006, NeuroImage
  33:493-504); such voxels have a low mean intensity, and with thermal noise of fixed size a
  proportionally low tSNR. The threshold follows the intensity-fraction rules that decide
  whether a voxel carries usable EPI signal: AFNI's ``3dAutomask`` clips at 0.5 of the brain's
  typical intensity (``-clfrac 0.5``, its default); SPM's first-level implicit mask uses 0.8
  of the global mean (``defaults.mask.thresh``), which is known to remove ventral-frontal and
  medial-temporal voxels wholesale, so the more lenient 0.5 flags dropout without calling every
  mildly attenuated voxel lost. The fraction is a parameter.
* **coverage rule** (:class:`CoverageRule`): a region is excluded from a run when it keeps
  fewer than ``min_voxels`` voxels (brain mask and grey matter applied) or when more than
  ``max_dropout_fraction`` of its voxels are in dropout; the reasons are recorded.

All functions take plain arrays: ``data`` (time, voxels) in scanner intensity units (not
percent-scaled, so the mean intensity is still there), steady-state volumes only, the voxels
those of the brain mask; ``labels`` (voxels,) the ROI label of each voxel (0 = none).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.polynomial import legendre

#: Default fraction of the brain's median mean intensity below which a voxel is in dropout.
DROPOUT_FRACTION = 0.5
#: Default largest fraction of an ROI's voxels in dropout before the ROI is excluded.
MAX_DROPOUT_FRACTION = 0.5
#: Default polynomial order removed before the temporal SD is taken.
DETREND_ORDER = 2
_CHUNK = 8192


def _detrend_basis(n: int, order: int) -> np.ndarray:
    """Orthonormal basis (n, order + 1) of polynomials up to ``order`` (Legendre on [-1, 1])."""
    t = np.linspace(-1.0, 1.0, n)
    q, _ = np.linalg.qr(legendre.legvander(t, order))
    return q


def temporal_stats(data: np.ndarray, detrend_order: int = DETREND_ORDER) -> tuple[np.ndarray, np.ndarray]:
    """Temporal mean and detrended SD of every voxel.

    data : (n_volumes, n_voxels), any float dtype (processed in float64 by voxel chunks).
    Returns (mean (n_voxels,), sd (n_voxels,)); sd has ``n_volumes - detrend_order - 1``
    degrees of freedom.
    """
    data = np.asarray(data)
    if data.ndim != 2:
        raise ValueError(f"data must be (volumes, voxels), got shape {data.shape}")
    n = data.shape[0]
    dof = n - detrend_order - 1
    if dof < 2:
        raise ValueError(f"{n} volumes leave {dof} degrees of freedom after a polynomial of order {detrend_order}")
    basis = _detrend_basis(n, detrend_order)
    mean = np.empty(data.shape[1])
    sd = np.empty(data.shape[1])
    for start in range(0, data.shape[1], _CHUNK):
        block = np.asarray(data[:, start:start + _CHUNK], dtype=np.float64)
        mean[start:start + _CHUNK] = block.mean(axis=0)
        resid = block - basis @ (basis.T @ block)
        sd[start:start + _CHUNK] = np.sqrt(np.einsum("ij,ij->j", resid, resid) / dof)
    return mean, sd


def temporal_snr(mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """mean / sd per voxel; 0 where the SD is 0 (a constant voxel carries no signal)."""
    mean, sd = np.asarray(mean, dtype=float), np.asarray(sd, dtype=float)
    out = np.zeros_like(mean)
    np.divide(mean, sd, out=out, where=sd > 0)
    return out


def dropout_voxels(mean: np.ndarray, fraction: float = DROPOUT_FRACTION) -> np.ndarray:
    """Voxels (bool, like ``mean``) whose temporal mean is below ``fraction`` x the median over
    all the voxels given (the brain mask's)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"dropout fraction must be in (0, 1), got {fraction}")
    mean = np.asarray(mean, dtype=float)
    return mean < fraction * np.median(mean)


def roi_quality(
    data: np.ndarray,
    labels: np.ndarray,
    names,
    dropout_fraction: float = DROPOUT_FRACTION,
    detrend_order: int = DETREND_ORDER,
) -> pd.DataFrame:
    """Quality numbers of each ROI in one run.

    data : (n_volumes, n_voxels) intensities of the brain-mask voxels (steady-state volumes).
    labels : (n_voxels,) int, ROI label of each voxel (i + 1 for ``names[i]``, 0 none), after
        the brain mask and grey matter.
    Returns one row per ROI: ``name``, ``n_voxels``, ``tsnr`` (median voxel tSNR; NaN without
    voxels), ``tsnr_roi_signal`` (tSNR of the ROI mean series), ``mean_ratio`` (median voxel
    mean / median brain mean), ``dropout_fraction`` (fraction of voxels in dropout).
    """
    names = tuple(names)
    labels = np.asarray(labels)
    if labels.shape != (np.shape(data)[1],):
        raise ValueError(f"labels shape {labels.shape} does not match data with {np.shape(data)[1]} voxels")
    mean, sd = temporal_stats(data, detrend_order)
    tsnr = temporal_snr(mean, sd)
    lost = dropout_voxels(mean, dropout_fraction)
    brain_median = np.median(mean)
    basis = _detrend_basis(np.shape(data)[0], detrend_order)
    rows = []
    for value, name in enumerate(names, start=1):
        member = np.flatnonzero(labels == value)
        row = {"name": name, "n_voxels": int(member.size), "tsnr": np.nan, "tsnr_roi_signal": np.nan,
               "mean_ratio": np.nan, "dropout_fraction": np.nan}
        if member.size:
            series = np.asarray(data[:, member], dtype=np.float64).mean(axis=1)
            resid = series - basis @ (basis.T @ series)
            sd_series = np.sqrt(resid @ resid / (len(series) - detrend_order - 1))
            row.update(
                tsnr=float(np.median(tsnr[member])),
                tsnr_roi_signal=float(series.mean() / sd_series) if sd_series > 0 else 0.0,
                mean_ratio=float(np.median(mean[member]) / brain_median),
                dropout_fraction=float(lost[member].mean()),
            )
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class CoverageRule:
    """When an ROI is excluded from a run.

    min_voxels : fewest voxels (after brain mask and grey matter) an ROI may keep.
    max_dropout_fraction : largest fraction of its voxels that may be in dropout (None: no limit).
    """

    min_voxels: int = 1
    max_dropout_fraction: float | None = MAX_DROPOUT_FRACTION

    def __post_init__(self):
        if self.min_voxels < 1:
            raise ValueError(f"min_voxels must be at least 1, got {self.min_voxels}")
        if self.max_dropout_fraction is not None and not 0.0 <= self.max_dropout_fraction <= 1.0:
            raise ValueError(f"max_dropout_fraction must be in [0, 1], got {self.max_dropout_fraction}")


def apply_coverage_rule(quality: pd.DataFrame, rule: CoverageRule) -> pd.DataFrame:
    """``quality`` (from :func:`roi_quality`) with ``excluded`` (bool) and ``reason`` (str, empty
    when kept; several reasons joined by "; ") columns."""
    reasons = []
    for row in quality.itertuples(index=False):
        why = []
        if row.n_voxels < rule.min_voxels:
            why.append(f"{row.n_voxels} voxels < min_voxels {rule.min_voxels}")
        if (rule.max_dropout_fraction is not None and row.n_voxels
                and row.dropout_fraction > rule.max_dropout_fraction):
            why.append(f"dropout in {row.dropout_fraction:.0%} of voxels > max_dropout_fraction "
                       f"{rule.max_dropout_fraction:.0%}")
        reasons.append("; ".join(why))
    out = quality.copy()
    out["excluded"] = [bool(r) for r in reasons]
    out["reason"] = reasons
    return out
