"""fMRIPrep-style confounds table and metadata computed from a simulated run.

Columns and conventions follow fMRIPrep 23 (Esteban et al. 2019, Nat Methods 16:111-116):
tissue means and their expansions (Satterthwaite et al. 2013, NeuroImage 64:240-256), DVARS and
standardised DVARS (Nichols 2017, arXiv:1704.01469), framewise displacement (Power et al. 2012),
RMS deviation (Jenkinson 1999), anatomical and temporal CompCor (Behzadi et al. 2007,
NeuroImage 37:90-101) on high-pass-filtered, steady-state volumes with components kept up to
50% cumulative variance, a DCT high-pass basis (128 s), and one-hot outlier columns.
First rows of derivatives, dvars, std_dvars, framewise_displacement and rmsd are NaN (written
``n/a``); CompCor and cosine columns are zero on non-steady-state volumes, as fMRIPrep pads them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ketflow.simulate.motion import (
    MOTION_COLUMNS,
    framewise_displacement,
    rms_deviation,
)

HIGH_PASS_S = 128.0
VARIANCE_THRESHOLD = 0.5
TCOMPCOR_FRACTION = 0.02
FD_SPIKE_MM = 0.5
DVARS_SPIKE = 1.5


def cosine_basis(n: int, tr: float, cutoff_s: float = HIGH_PASS_S) -> np.ndarray:
    """DCT-II high-pass regressors (n, K), K = floor(2 n tr / cutoff), unit norm, no constant."""
    k_max = int(np.floor(2.0 * n * tr / cutoff_s))
    t = np.arange(n)
    return np.stack(
        [np.sqrt(2.0 / n) * np.cos(np.pi / n * (t + 0.5) * k) for k in range(1, k_max + 1)],
        axis=1,
    ) if k_max else np.zeros((n, 0))


def _expand(name: str, x: np.ndarray) -> dict:
    d = np.concatenate([[np.nan], np.diff(x)])
    return {
        name: x,
        f"{name}_derivative1": d,
        f"{name}_derivative1_power2": d**2,
        f"{name}_power2": x**2,
    }


def dvars(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DVARS and standardised DVARS (n_t,) of data y (n_vox, n_t), first element NaN.

    Data are scaled so the median voxel mean is 1000; the standardisation divides by the
    expected DVARS under the null, mean over voxels of sqrt(2 (1 - rho_v)) * sd_v, with sd_v
    the robust (IQR / 1.349) standard deviation and rho_v the lag-1 autocorrelation.
    """
    y = np.asarray(y, dtype=float)
    y = y[y.std(axis=1) > 1e-10]
    y = y * (1000.0 / np.median(y.mean(axis=1)))
    q75, q25 = np.percentile(y, [75, 25], axis=1)
    sd = (q75 - q25) / 1.349
    yc = y - y.mean(axis=1, keepdims=True)
    rho = (yc[:, 1:] * yc[:, :-1]).sum(axis=1) / (yc**2).sum(axis=1)
    expected = np.mean(np.sqrt(2.0 * (1.0 - rho)) * sd)
    dv = np.sqrt(np.mean(np.diff(y, axis=1) ** 2, axis=0))
    dv = np.concatenate([[np.nan], dv])
    return dv, dv / expected


def compcor(y: np.ndarray, basis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CompCor components of y (n_vox, n_t): returns (U (n_t, k), singular values (k,)).

    Each voxel is high-pass filtered (``basis`` plus a constant regressed out) and scaled to unit
    variance before the SVD.
    """
    x = np.column_stack([np.ones(y.shape[1]), basis])
    m = np.asarray(y, dtype=float).T
    m = m - x @ np.linalg.lstsq(x, m, rcond=None)[0]
    sd = m.std(axis=0)
    m = m[:, sd > 1e-10] / sd[sd > 1e-10]
    # the eigen-decomposition of the small n_t x n_t Gram matrix gives the left singular
    # vectors and values of m much faster than an SVD of the n_t x n_vox matrix
    evals, evecs = np.linalg.eigh(m @ m.T)
    order = np.argsort(evals)[::-1]
    s = np.sqrt(np.clip(evals[order], 0.0, None))
    u = evecs[:, order]
    u = u * np.where(u[np.argmax(np.abs(u), axis=0), np.arange(u.shape[1])] < 0, -1.0, 1.0)
    keep = s > 1e-6 * s[0]
    return u[:, keep], s[keep]


def confounds_table(data: np.ndarray, masks: dict, motion: np.ndarray, n_dummy: int,
                    tr: float) -> tuple[pd.DataFrame, dict]:
    """Confounds (n_t rows) and their JSON metadata.

    data: (n_vox, n_t) intensities of the brain voxels; masks: boolean (n_vox,) arrays
    'csf', 'wm'; motion: (n_t, 6) trans (mm) and rot (rad).
    """
    n_t = data.shape[1]
    csf, wm = masks["csf"], masks["wm"]
    cols, meta = {}, {}
    for name, sel in (
        ("global_signal", slice(None)), ("csf", csf), ("white_matter", wm)
    ):
        cols.update(_expand(name, data[sel].mean(axis=0)))
        meta[name] = {"Method": "Mean"}
    cols["csf_wm"] = data[csf | wm].mean(axis=0)
    meta["csf_wm"] = {"Method": "Mean"}

    steady = np.arange(n_dummy, n_t)
    basis = cosine_basis(len(steady), tr)
    x = np.column_stack([np.ones(len(steady)), basis])
    ys = data[:, steady].astype(float)
    resid = ys - (ys @ np.linalg.pinv(x).T) @ x.T
    var = resid.var(axis=1)
    n_top = max(1, round(TCOMPCOR_FRACTION * len(var)))
    tmask = np.zeros(len(var), dtype=bool)
    tmask[np.argsort(var, kind="stable")[::-1][:n_top]] = True
    cols["tcompcor"] = data[tmask].mean(axis=0)
    meta["tcompcor"] = {"Method": "Mean"}

    dv, sdv = dvars(data)
    cols["std_dvars"], cols["dvars"] = sdv, dv
    fd = framewise_displacement(motion)
    cols["framewise_displacement"] = fd
    cols["rmsd"] = rms_deviation(motion)

    n_dropped = 0
    for prefix, sel, mask_name, method in (
        ("t_comp_cor", tmask, None, "tCompCor"),
        ("c_comp_cor", csf, "CSF", "aCompCor"),
        ("w_comp_cor", wm, "WM", "aCompCor"),
        ("a_comp_cor", csf | wm, "combined", "aCompCor"),
    ):
        u, s = compcor(ys[sel], basis)
        ve = s**2 / np.sum(s**2)
        cum = np.cumsum(ve)
        n_keep = int(np.searchsorted(cum, VARIANCE_THRESHOLD) + 1)
        for i in range(len(s)):
            entry = {
                "CumulativeVarianceExplained": float(cum[i]),
                "Method": method,
                "Retained": i < n_keep,
                "SingularValue": float(s[i]),
                "VarianceExplained": float(ve[i]),
            }
            if mask_name:
                entry["Mask"] = mask_name
            if i < n_keep:
                col = np.zeros(n_t)
                col[steady] = u[:, i]
                cols[f"{prefix}_{i:02d}"] = col
                meta[f"{prefix}_{i:02d}"] = entry
            else:
                meta[f"dropped_{n_dropped}"] = entry
                n_dropped += 1

    for k in range(basis.shape[1]):
        col = np.zeros(n_t)
        col[steady] = basis[:, k]
        cols[f"cosine{k:02d}"] = col
    for k in range(n_dummy):
        cols[f"non_steady_state_outlier{k:02d}"] = (np.arange(n_t) == k).astype(float)
    for j, name in enumerate(MOTION_COLUMNS):
        cols.update(_expand(name, motion[:, j]))
    outliers = np.flatnonzero((fd > FD_SPIKE_MM) | (sdv > DVARS_SPIKE))
    for k, t in enumerate(outliers):
        cols[f"motion_outlier{k:02d}"] = (np.arange(n_t) == t).astype(float)
    return pd.DataFrame(cols), meta
