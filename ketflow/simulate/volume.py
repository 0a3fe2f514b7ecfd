"""Voxel-wise BOLD of one simulated run: ROI signals, noise, physiological and artefact terms.

Every brain voxel's intensity is ``baseline * (1 + s / 100)`` where ``s`` (percent signal change)
sums: its ROI's noise-free signal (ROI voxels only), AR(1) voxel noise, low-rank physiological
noise loading most on CSF then WM (the structure CompCor exploits; Behzadi et al. 2007,
NeuroImage 37:90-101) and, with artefacts on, head-motion effects through smooth random spatial
loadings with spikes at volumes of FD > 0.5 mm, a global fluctuation, scanner drift and bright
non-steady-state volumes at the start. Voxels outside the brain but in the head carry a dim
noisy scalp signal; voxels outside the head are zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from ketflow.simulate.grid import Anatomy
from ketflow.simulate.motion import framewise_displacement, motion_parameters
from ketflow.simulate.signals import smooth_noise

BASELINE = {"gm": 1000.0, "wm": 850.0, "csf": 1300.0, "scalp": 250.0}
PHYSIO_WEIGHT = {"gm": 0.4, "wm": 1.2, "csf": 2.5}
N_PHYSIO = 4
DUMMY_GAIN = (1.6, 1.2)
QUANTUM = 64.0


@dataclass(frozen=True)
class ArtefactSettings:
    """Artefact switches and sizes (percent signal change unless stated)."""

    enabled: bool = True
    motion_level: float = 1.0  # scales motion_parameters steps and jerks
    motion_loading: float = 0.4  # percent per mm of displacement (SD over voxels)
    spike_fd_mm: float = 0.5  # FD above which a volume gets a spike
    spike_percent_per_mm: float = 3.0
    global_sd: float = 0.3
    drift_sd: float = 0.8  # SD of the linear and quadratic drift over the run
    max_dummies: int = 2  # 1..max_dummies bright volumes at the start

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class RunVolume:
    """A run's 4-D data (x, y, z, t float32) and the true artefact time courses."""

    data: np.ndarray
    motion: np.ndarray  # (t, 6)
    n_dummy: int
    spikes: list


def _smooth_field(rng: np.random.Generator, shape: tuple, sigma: float) -> np.ndarray:
    f = gaussian_filter(rng.standard_normal(shape), sigma)
    return f / f.std()


def _ar1(rng: np.random.Generator, n_vox: int, n_t: int, phi: float, sd: float) -> np.ndarray:
    e = np.empty((n_vox, n_t), dtype=np.float32)
    e[:, 0] = rng.standard_normal(n_vox)
    scale = np.sqrt(1.0 - phi**2)
    for t in range(1, n_t):
        e[:, t] = phi * e[:, t - 1] + scale * rng.standard_normal(n_vox)
    return e * np.float32(sd)


def roi_labels(anat: Anatomy) -> dict:
    """ROI name -> flat indices of its voxels among the brain voxels (the ROIs are exclusive)."""
    position = np.cumsum(anat.brain.ravel()) - 1
    return {name: position[np.flatnonzero(mask.ravel() & anat.brain.ravel())] for name, mask in anat.rois.items()}


def simulate_volume(anat: Anatomy, roi_index: dict, signals: dict, n_scans: int, tr: float,
                    noise_sd: float, artefacts: ArtefactSettings,
                    rng: np.random.Generator, attenuation: np.ndarray | None = None) -> RunVolume:
    """Voxel data of one run; ``signals`` maps ROI name -> (n_scans,) percent signal change.

    attenuation : (n_brain_voxels,) factors in (0, 1] of susceptibility dropout
        (:func:`ketflow.simulate.dropout.susceptibility_attenuation`), or None. They scale a
        voxel's baseline; its thermal (AR(1)) noise keeps its size in intensity units, so in
        percent of the lowered baseline it grows by 1 / attenuation and the voxel's tSNR drops in
        proportion. The other components (signal, physiological noise, artefacts) are fractional
        changes of the signal and keep their percent size.
    """
    brain = anat.brain.ravel()
    n_vox = int(brain.sum())
    tissue = {k: getattr(anat, k).ravel()[brain] for k in ("gm", "wm", "csf")}
    bias = 1.0 + 0.05 * _smooth_field(rng, anat.shape, 3.0).ravel()[brain]
    baseline = sum(BASELINE[k] * m for k, m in tissue.items()) * bias

    pct = _ar1(rng, n_vox, n_scans, 0.3, noise_sd)
    if attenuation is not None:
        baseline = baseline * attenuation
        pct /= attenuation.astype(np.float32)[:, None]
    for name, idx in roi_index.items():
        if name in signals:
            pct[idx] += signals[name].astype(np.float32)

    weight = sum(PHYSIO_WEIGHT[k] * m for k, m in tissue.items())
    for _ in range(N_PHYSIO):
        load = _smooth_field(rng, anat.shape, 1.5).ravel()[brain] * weight * 0.5 * noise_sd
        course = smooth_noise(rng, n_scans, tr, 1.0, 1.0)
        pct += np.outer(load, course).astype(np.float32)

    motion = np.zeros((n_scans, 6))
    n_dummy, spikes = 0, []
    if artefacts.enabled:
        motion = motion_parameters(n_scans, rng, artefacts.motion_level)
        disp = motion - motion[0]
        disp[:, 3:] *= 50.0  # rotation (rad) -> displacement (mm) on a 50 mm sphere
        loads = np.stack(
            [_smooth_field(rng, anat.shape, 2.0).ravel()[brain] for _ in range(6)], axis=1
        )
        pct += (artefacts.motion_loading * loads @ disp.T).astype(np.float32)
        fd = framewise_displacement(motion)
        spike_map = np.abs(_smooth_field(rng, anat.shape, 1.0).ravel()[brain])
        for t in np.flatnonzero(fd > artefacts.spike_fd_mm):
            spikes.append(int(t))
            pct[:, t] += (artefacts.spike_percent_per_mm * fd[t] * spike_map).astype(np.float32)
        pct += smooth_noise(rng, n_scans, tr, 4.0, artefacts.global_sd).astype(np.float32)
        s = np.linspace(-1.0, 1.0, n_scans)
        a1, a2 = rng.normal(0.0, artefacts.drift_sd, 2)
        vox_gain = (1.0 + 0.3 * rng.standard_normal(n_vox)).astype(np.float32)
        pct += np.outer(vox_gain, a1 * s + a2 * (s**2 - 1.0 / 3.0)).astype(np.float32)
        n_dummy = int(rng.integers(1, artefacts.max_dummies + 1))

    brain_data = baseline[:, None].astype(np.float32) * (1.0 + pct / np.float32(100.0))
    for t in range(n_dummy):
        brain_data[:, t] *= np.float32(DUMMY_GAIN[t] if t < len(DUMMY_GAIN) else 1.1)

    data = np.zeros((int(np.prod(anat.shape)), n_scans), dtype=np.float32)
    data[brain] = brain_data
    scalp = anat.head.ravel() & ~brain
    n_scalp = int(scalp.sum())
    data[scalp] = BASELINE["scalp"] * (
        1.0 + 0.03 * rng.standard_normal((n_scalp, n_scans)).astype(np.float32)
    )
    # quantise to 1/64 intensity unit (~0.002 %): lossless-looking, compresses 30 % better
    data = np.round(data * np.float32(QUANTUM)) / np.float32(QUANTUM)
    return RunVolume(data.reshape(anat.shape + (n_scans,)), motion, n_dummy, spikes)
