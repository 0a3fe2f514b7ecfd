"""Psychophysiological interaction with deconvolution of the seed (SPM ``spm_peb_ppi`` semantics).

Gitelman, Penny, Ashburner & Friston (2003), "Modeling regional and psychophysiologic
interactions in fMRI: the importance of hemodynamic deconvolution", NeuroImage 19:200-207.

The seed BOLD signal ``y`` (scans) is modelled as the canonical HRF convolved with a
neuronal signal expanded on a discrete cosine set over the micro-time grid, plus
confounds::

    y = H x_b beta + X0 gamma + e,      e ~ N(0, I / 4)
    beta ~ N(0, I * n / tr(H'H)),       gamma ~ N(0, 1e6 I)  (confounds: quasi-flat prior)

where ``x_b`` holds ``n`` DCT basis functions of the micro-time grid (padded by 128 bins
before the first scan so that the convolution has a history) and ``H x_b`` is the
convolved basis read at the scan times.  This is the parametric empirical Bayes model of
Gitelman et al. with the covariance components fixed as SPM fixes them (error variance
1/4 of the seed's units, white neuronal prior scaled to the convolved basis).  The
posterior mean of ``beta`` gives the neuronal estimate ``xn = x_b beta`` (mean removed).
The interaction is formed at the neuronal level, ``PSY * xn``, re-convolved with the HRF
and read at the scans' reference micro-time bin.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.signal import fftconvolve

from .hrf import convolve_microtime, spm_canonical_hrf

__all__ = ["PPIResult", "peb_ppi", "peb_deconvolve"]

#: Micro-time bins of history prepended to the DCT basis before convolution.
_PAD_BINS = 128
#: Error covariance of the seed (SPM assumes i.i.d. noise with variance 1/4).
_ERROR_VARIANCE = 0.25
#: Prior variance of confound coefficients (effectively flat).
_CONFOUND_PRIOR_VARIANCE = 1e6


class PPIResult(NamedTuple):
    """Output of :func:`peb_ppi`.

    Attributes
    ----------
    ppi : ndarray, shape (n_scans,)
        Interaction regressor ``conv(PSY * xn, hrf)`` at scan times, mean removed.
    Y : ndarray, shape (n_scans,)
        Seed time series with the confounds projected out.
    P : ndarray, shape (n_scans,)
        Psychological regressor ``conv(PSY, hrf)`` at scan times.
    xn : ndarray, shape (n_scans * microtime_resolution,)
        Deconvolved neuronal signal of the seed on the micro-time grid, mean removed.
    """

    ppi: np.ndarray
    Y: np.ndarray
    P: np.ndarray
    xn: np.ndarray


def _dct_basis(n_samples: int, n_functions: int) -> np.ndarray:
    """Orthonormal DCT-II basis, shape (n_samples, n_functions); column 0 is constant."""
    t = (2 * np.arange(n_samples)[:, None] + 1) * np.arange(n_functions)[None, :]
    basis = np.sqrt(2.0 / n_samples) * np.cos(np.pi * t / (2 * n_samples))
    basis[:, 0] = 1.0 / np.sqrt(n_samples)
    return basis


def _as_confounds(confounds, n_scans: int) -> np.ndarray:
    x0 = np.asarray(confounds, dtype=float)
    if x0.ndim == 1:
        x0 = x0[:, None]
    if x0.ndim != 2 or x0.shape[0] != n_scans:
        raise ValueError(f"confounds must have shape ({n_scans}, k); got {x0.shape}")
    return x0


def peb_deconvolve(
    seed: np.ndarray,
    tr: float,
    confounds: np.ndarray,
    microtime_resolution: int = 16,
    microtime_onset: int = 1,
) -> np.ndarray:
    """Neuronal signal of a seed by parametric empirical Bayes deconvolution.

    Parameters
    ----------
    seed : ndarray, shape (n_scans,)
        Seed BOLD time series (arbitrary units; the fixed error variance of 1/4 makes the
        amount of smoothing depend on this scale, as in SPM).
    tr : float
        Repetition time in seconds.
    confounds : ndarray, shape (n_scans, k)
        Confound regressors (include a constant), modelled with a flat prior.
    microtime_resolution : int
        Micro-time bins per scan.
    microtime_onset : int
        1-based micro-time bin at which the convolution model reads each scan.  SPM's
        ``spm_peb_ppi`` always uses 1 (scan ``i`` at bin ``i * microtime_resolution``)
        whatever ``fMRI_T0``; pass the design's onset bin to keep the neuronal estimate
        aligned with regressors read at a slice-timing reference.

    Returns
    -------
    ndarray, shape (n_scans * microtime_resolution,)
        Posterior mean neuronal signal on the micro-time grid, mean removed.
    """
    y = np.asarray(seed, dtype=float).ravel()
    n = y.size
    x0 = _as_confounds(confounds, n)
    nt = int(microtime_resolution)
    hrf = spm_canonical_hrf(tr / nt)
    basis = _dct_basis(n * nt + _PAD_BINS, n)
    if not 1 <= microtime_onset <= nt:
        raise ValueError(f"microtime_onset must be in [1, {nt}], got {microtime_onset}")
    scan_rows = np.arange(n) * nt + _PAD_BINS + microtime_onset - 1
    convolved = fftconvolve(basis, hrf[:, None], axes=0)[scan_rows]
    basis = basis[_PAD_BINS:]

    design = np.hstack([convolved, x0])
    prior_var = np.r_[
        np.full(n, n / np.sum(convolved**2)),
        np.full(x0.shape[1], _CONFOUND_PRIOR_VARIANCE),
    ]
    # Posterior mean for Gaussian likelihood and Gaussian prior, i.e. the ridge solution of
    # [design / sd_e; diag(1 / sd_prior)] coef ~ [y / sd_e; 0], solved as a least-squares
    # problem (SVD) rather than through the normal equations, whose condition number is the
    # square of this one (~1e10: low-frequency basis functions and confounds trade off
    # against each other, held apart only by the weak confound prior).
    sd_e = np.sqrt(_ERROR_VARIANCE)
    augmented = np.vstack([design / sd_e, np.diag(1.0 / np.sqrt(prior_var))])
    coef = np.linalg.lstsq(augmented, np.r_[y / sd_e, np.zeros(design.shape[1])], rcond=None)[0]
    xn = basis @ coef[:n]
    return xn - xn.mean()


def peb_ppi(
    seed: np.ndarray,
    psych: np.ndarray,
    tr: float,
    confounds: np.ndarray,
    microtime_resolution: int = 16,
    microtime_onset: int = 8,
) -> PPIResult:
    """PPI interaction regressor with deconvolution of the seed (Gitelman et al. 2003).

    Parameters
    ----------
    seed : ndarray, shape (n_scans,)
        Seed BOLD time series.
    psych : ndarray, shape (n_scans * microtime_resolution,)
        Weighted psychological variable on the micro-time grid (bin ``j`` at
        ``j * tr / microtime_resolution`` s), e.g. +1 fear, -1 neutral; its mean is
        removed here.
    tr : float
        Repetition time in seconds.
    confounds : ndarray, shape (n_scans, k)
        Confounds (constant, drift, ...), projected out of ``Y`` and modelled in the
        deconvolution.
    microtime_resolution : int
        Micro-time bins per scan (SPM ``fMRI_T``).
    microtime_onset : int
        1-based reference bin of each scan (SPM ``fMRI_T0``) for reading the convolved
        regressors.

    Returns
    -------
    PPIResult
        ``ppi``, ``Y``, ``P`` (n_scans,) and ``xn`` (n_scans * microtime_resolution,).
    """
    y = np.asarray(seed, dtype=float).ravel()
    n = y.size
    nt = int(microtime_resolution)
    psy = np.asarray(psych, dtype=float).ravel()
    if psy.size != n * nt:
        raise ValueError(
            f"psych has {psy.size} samples; expected n_scans * microtime_resolution = {n * nt}"
        )
    x0 = _as_confounds(confounds, n)
    xn = peb_deconvolve(y, tr, x0, nt)
    psy = psy - psy.mean()
    hrf = spm_canonical_hrf(tr / nt)
    ppi = convolve_microtime(psy * xn, hrf, n, nt, microtime_onset)
    p = convolve_microtime(psy, hrf, n, nt, microtime_onset)
    y_clean = y - x0 @ np.linalg.lstsq(x0, y, rcond=None)[0]
    return PPIResult(ppi=ppi - ppi.mean(), Y=y_clean, P=p, xn=xn)
