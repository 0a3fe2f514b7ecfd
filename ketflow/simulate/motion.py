"""Head motion of the simulated runs and its summary measures.

Motion: six rigid-body parameters (trans_x/y/z in mm, rot_x/y/z in rad, fMRIPrep's order) as a
random walk plus occasional jerks. Framewise displacement after Power et al. (2012, NeuroImage
59:2142-2154): sum of absolute backward differences, rotations converted to arc length on a
50 mm sphere. RMS deviation after Jenkinson (1999, FMRIB TR99MJ1): relative RMS displacement
of the rigid transform between consecutive volumes over an 80 mm sphere.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.spatial.transform import Rotation

MOTION_COLUMNS = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]


def motion_parameters(n_scans: int, rng: np.random.Generator, level: float = 1.0) -> np.ndarray:
    """Random-walk motion (n_scans, 6): steps of 0.02 mm / 0.0003 rad SD, jerks with
    probability 0.03 per volume (0.3 mm / 0.004 rad SD), all scaled by ``level``."""
    step_sd = np.array([0.02] * 3 + [0.0003] * 3) * level
    jerk_sd = np.array([0.3] * 3 + [0.004] * 3) * level
    steps = rng.standard_normal((n_scans, 6)) * step_sd
    jerks = rng.random(n_scans) < 0.03
    steps[jerks] += rng.standard_normal((int(jerks.sum()), 6)) * jerk_sd
    steps[0] = 0.0
    return np.cumsum(steps, axis=0)


def framewise_displacement(params: np.ndarray, radius: float = 50.0) -> np.ndarray:
    """Power FD (n_scans,) in mm; element 0 is NaN (no previous volume)."""
    d = np.abs(np.diff(params, axis=0))
    fd = d[:, :3].sum(axis=1) + radius * d[:, 3:].sum(axis=1)
    return np.concatenate([[np.nan], fd])


def _rigid(p: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = Rotation.from_euler("xyz", p[3:]).as_matrix()
    m[:3, 3] = p[:3]
    return m


def rms_deviation(params: np.ndarray, radius: float = 80.0) -> np.ndarray:
    """Jenkinson relative RMS deviation (n_scans,) in mm; element 0 is NaN.

    RMS^2 = R^2/5 * trace(M^T M) + t^T t, with [M t] = T_i T_{i-1}^-1 - I (sphere at the origin).
    """
    out = [np.nan]
    for prev, cur in itertools.pairwise(params):
        d = _rigid(cur) @ np.linalg.inv(_rigid(prev)) - np.eye(4)
        m, t = d[:3, :3], d[:3, 3]
        out.append(float(np.sqrt(radius**2 / 5.0 * np.trace(m.T @ m) + t @ t)))
    return np.asarray(out)
