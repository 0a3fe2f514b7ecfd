"""Susceptibility dropout of gradient-echo EPI for the simulated runs (optional).

Near air-tissue interfaces the static field varies quickly; the through-plane gradient
dephases the signal within a voxel and the EPI signal is lost: in orbitofrontal and
ventromedial prefrontal cortex above the frontal sinus and orbits, and in the inferior
temporal lobe and medial temporal structures (amygdala, anterior hippocampus) above the ear
canals and petrous bone (Ojemann et al. 1997, NeuroImage 6:156-167; Deichmann et al. 2003,
NeuroImage 19:430-441; Weiskopf et al. 2006, NeuroImage 33:493-504).

This module stands in for a field-map model with a smooth attenuation map: one minus a sum of
three Gaussian "holes" (:data:`HOLES`), each centred below the cortex it affects (the
orbitofrontal one under gyrus rectus, the temporal ones under the amygdalae), so that loss is
strongest at the ventral surface and fades upwards within centimetres, as in the signal-loss
maps of those studies. At the defaults (2 mm grid, circuit atlas regions): gyrus rectus keeps
about 15 % of its signal; vmPFC 76 % on average (14 % of its voxels below half); the amygdalae
65-69 % (17-27 % of voxels below half); the anterior hippocampi 75-77 %; the anterior insulae
98 %; dACC and rACC all of it. The map is the same for every subject and run (no random draw:
the dataset stays byte-identical for a seed). It is a qualitative pattern, not
fitted to any measurement; its sizes are parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ketflow.signal.rois import voxel_centres_mm


@dataclass(frozen=True)
class Hole:
    """A Gaussian region of signal loss: centre (mm), SD per axis (mm), depth (0..1 at the centre)."""

    name: str
    centre: tuple[float, float, float]
    sd_mm: tuple[float, float, float]
    depth: float


HOLES = (
    Hole("frontal sinus and orbits", (0.0, 36.0, -28.0), (18.0, 16.0, 10.0), 0.95),
    Hole("left ear canal", (-28.0, -4.0, -34.0), (10.0, 12.0, 10.0), 0.95),
    Hole("right ear canal", (28.0, -4.0, -34.0), (10.0, 12.0, 10.0), 0.95),
)
#: Lowest attenuation (a voxel keeps at least this fraction of its signal).
FLOOR = 0.05


def susceptibility_attenuation(affine: np.ndarray, shape: tuple, holes=HOLES) -> np.ndarray:
    """Fraction of the EPI signal each voxel keeps, float array ``shape`` in [FLOOR, 1]."""
    xyz = voxel_centres_mm(tuple(shape), affine)
    loss = np.zeros(tuple(shape))
    for hole in holes:
        d2 = (((xyz - np.asarray(hole.centre)) / np.asarray(hole.sd_mm)) ** 2).sum(axis=-1)
        loss += hole.depth * np.exp(-0.5 * d2)
    return np.clip(1.0 - loss, FLOOR, 1.0)


def as_dict(holes=HOLES) -> dict:
    """The settings recorded in ``ground_truth.json``."""
    return {"holes": [h.__dict__ for h in holes], "floor": FLOOR,
            "thermal_noise": "constant in intensity units (tSNR scales with the attenuation)"}
