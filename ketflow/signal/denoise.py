"""Denoising of BOLD data as one linear regression.

Lindquist MA, Geuter S, Wager TD, Caffo BS (2019) Modular preprocessing pipelines can
reintroduce artifacts into fMRI data. Hum Brain Mapp 40(8):2358-2376: filtering and
nuisance regression done one after the other (a "modular" pipeline) put back into the data
signal removed by the previous step unless the regressors are filtered the same way. Here
every nuisance term is a column of ONE design matrix fitted once by least squares:

* intercept;
* confounds (T, k), e.g. from :mod:`ketflow.io.confounds`;
* a discrete cosine (DCT-II) high-pass basis: the cosines with period longer than
  ``high_pass_s`` seconds (SPM's / nilearn's ``create_cosine_drift`` convention:
  ``floor(2 T TR / high_pass_s)`` cosines);
* for a band-pass (resting state), also the cosines with frequency above ``low_pass_hz``.
  Band-pass filtering is thus a projection onto the low/high-frequency cosines in the same
  fit, never a separate filter, so no step can reintroduce what another removed. Its cost
  is explicit: each cosine is a lost degree of freedom (reported as ``dof_lost``).

Censoring (Power et al. 2014 NeuroImage 84:320-341): censored volumes (dummy scans,
high motion) are dropped from the fit and from the output. The regressors, cosines
included, are built on the full time grid and then restricted to the kept volumes, so
kept volumes keep their true acquisition times. Outputs therefore have ``keep.sum()``
rows; ``keep`` maps them back to acquisition order. No interpolation is done.

Arrays are (time, voxels) float; TR in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


#: Exclusion policy defaults of the analysis configuration (``denoising.min_volumes`` and
#: ``denoising.min_dof``, :mod:`ketflow.config`). Below about 30 residual degrees of
#: freedom a resting run's correlations are mostly sampling noise (benchmarks/rest_recovery.py:
#: with 24 left, the strongest pair is ranked first in 16% of runs and the RMS error of the
#: correlations is 0.29; docs/denoising_connectivity.md).
MIN_VOLUMES = 40
MIN_DOF = 30


class TooFewVolumesError(ValueError):
    """A run keeps too few volumes (or degrees of freedom) after censoring to be denoised."""


@dataclass(frozen=True)
class DenoiseResult:
    """Output of :func:`denoise`.

    data : (n_kept, V) float32 residuals (standardised if asked).
    keep : bool (T,), True for the volumes in ``data``, in order.
    n_censored : volumes removed.
    dof_lost : rank of the nuisance design on the kept volumes (intercept, confounds,
        cosines).
    dof_remaining : n_kept - dof_lost.
    design : (n_kept, p) nuisance design actually fitted.
    """

    data: np.ndarray
    keep: np.ndarray
    n_censored: int
    dof_lost: int
    dof_remaining: int
    design: np.ndarray


def dct_basis(n_volumes: int, orders) -> np.ndarray:
    """DCT-II cosines of the given orders k (1..T-1), unit norm; shape (T, len(orders)).

    Column k is sqrt(2/T) cos(pi k (t + 1/2) / T) for t = 0..T-1; its frequency is
    k / (2 T TR) Hz.
    """
    t = np.arange(n_volumes)[:, None] + 0.5
    k = np.asarray(list(orders), dtype=float)[None, :]
    return np.sqrt(2.0 / n_volumes) * np.cos(np.pi * k * t / n_volumes)


def filter_cutoffs(high_pass_s: float | None, band_pass_hz: tuple[float, float] | None
                   ) -> tuple[float | None, float | None]:
    """(high-pass period in s, low-pass frequency in Hz) of the denoising model.

    A band-pass ``[low, high]`` Hz (rest runs) replaces the high-pass period by ``1 / low``.
    """
    if band_pass_hz:
        low, high = band_pass_hz
        return 1.0 / low, high
    return high_pass_s, None


def cosine_regressors(n_volumes: int, tr: float, high_pass_s: float | None, low_pass_hz: float | None = None) -> np.ndarray:
    """Cosines removing periods > ``high_pass_s`` s and frequencies > ``low_pass_hz`` Hz; (T, k)."""
    orders = []
    if high_pass_s is not None:
        orders += range(1, min(n_volumes - 1, int(np.floor(2 * n_volumes * tr / high_pass_s))) + 1)
    if low_pass_hz is not None:
        first = int(np.floor(2 * n_volumes * tr * low_pass_hz)) + 1
        orders += [k for k in range(first, n_volumes) if k not in orders]
    return dct_basis(n_volumes, orders)


def nuisance_design(confounds: np.ndarray, tr: float, high_pass_s: float | None, low_pass_hz: float | None) -> np.ndarray:
    """Full-length design [intercept, centred confounds, cosines], shape (T, p)."""
    confounds = np.asarray(confounds, dtype=float).reshape(confounds.shape[0], -1)
    n = confounds.shape[0]
    centred = confounds - confounds.mean(axis=0)
    return np.column_stack([np.ones(n), centred, cosine_regressors(n, tr, high_pass_s, low_pass_hz)])


def design_basis(design: np.ndarray) -> np.ndarray:
    """Orthonormal basis (T, rank) of the column space of ``design`` (T, p).

    From the left singular vectors of the column-normalised design, so collinear
    regressors (e.g. fMRIPrep cosines next to ours) count once.
    """
    norms = np.linalg.norm(design, axis=0)
    u, s, _ = np.linalg.svd(design / np.where(norms > 0, norms, 1.0), full_matrices=False)
    rank = int((s > s[0] * max(design.shape) * np.finfo(float).eps).sum()) if s.size else 0
    return u[:, :rank]


def residualise(data: np.ndarray, design: np.ndarray) -> tuple[np.ndarray, int]:
    """Least-squares residuals of ``data`` (T, V) on ``design`` (T, p) and the design rank."""
    basis = design_basis(design).astype(data.dtype)
    return data - basis @ (basis.T @ data), basis.shape[1]


def kept_design(
    confounds: np.ndarray,
    tr: float,
    keep: np.ndarray | None = None,
    high_pass_s: float | None = 128.0,
    low_pass_hz: float | None = None,
    min_volumes: int = 50,
    min_dof: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check a run can be denoised; return (keep (T,), design (n_kept, p), basis (n_kept, rank)).

    Needs no BOLD data, so a workflow can screen runs before processing them. Raises
    :class:`TooFewVolumesError` when fewer than ``min_volumes`` volumes are kept or fewer
    than ``min_dof`` residual degrees of freedom remain (a band-pass by regression costs
    one per cosine, see the module docstring).
    """
    confounds = np.asarray(confounds, dtype=float)
    n = confounds.shape[0]
    keep = np.ones(n, bool) if keep is None else np.asarray(keep, bool)
    if keep.shape != (n,):
        raise ValueError(f"keep has shape {keep.shape}, confounds {n} rows")
    n_kept = int(keep.sum())
    if n_kept < min_volumes:
        raise TooFewVolumesError(
            f"{n_kept} of {n} volumes remain after censoring; at least {min_volumes} are required"
        )
    design = nuisance_design(confounds, tr, high_pass_s, low_pass_hz)[keep]
    basis = design_basis(design)
    if n_kept - basis.shape[1] < min_dof:
        raise TooFewVolumesError(
            f"{n_kept} kept volumes but the nuisance design has rank {basis.shape[1]}: "
            f"{n_kept - basis.shape[1]} residual degrees of freedom, at least {min_dof} required"
        )
    return keep, design, basis


def denoise(
    data: np.ndarray,
    confounds: np.ndarray,
    tr: float,
    keep: np.ndarray | None = None,
    high_pass_s: float | None = 128.0,
    low_pass_hz: float | None = None,
    standardize: bool = False,
    min_volumes: int = 50,
    min_dof: int = 1,
) -> DenoiseResult:
    """Regress confounds + cosine filter out of (T, V) ``data`` in one fit (module docstring).

    confounds : (T, k); keep : bool (T,) volumes to use (default all).
    standardize : divide each voxel's residual by its standard deviation (ddof=1);
        constant voxels stay 0.
    min_volumes, min_dof : see :func:`kept_design` (raises :class:`TooFewVolumesError`).
    """
    data = np.asarray(data)
    if not np.issubdtype(data.dtype, np.floating):
        data = data.astype(np.float32)
    n = data.shape[0]
    if confounds.shape[0] != n:
        raise ValueError(f"confounds have {confounds.shape[0]} rows, data {n} volumes")
    keep, design, basis = kept_design(confounds, tr, keep, high_pass_s, low_pass_hz, min_volumes, min_dof)
    kept = data[keep]
    # The intercept is in the design, so removing voxel means first changes nothing
    # mathematically; numerically it keeps float32 projections of BOLD (mean ~1e2-1e4)
    # from losing precision to the large mean.
    kept -= kept.mean(axis=0, dtype=np.float64).astype(kept.dtype)
    basis = basis.astype(kept.dtype)
    residuals = kept - basis @ (basis.T @ kept)
    if standardize:
        sd = residuals.std(axis=0, ddof=1)
        residuals = residuals / np.where(sd > 0, sd, 1.0).astype(residuals.dtype)
    rank = basis.shape[1]
    n_kept = int(keep.sum())
    return DenoiseResult(residuals.astype(np.float32), keep, n - n_kept, rank, n_kept - rank, design)
