"""Feature-level studies from the simulator's truth: the circuit measures "measured" with error.

Running the image-level simulator and the participant level for hundreds of studies is far
too slow for power and error-rate benchmarks.  :func:`measured_study` instead draws each
subject's true parameters with the image-level simulator's own generator
(:func:`ketflow.simulate.parameters.draw_subject`: the arms' change model, the faces DCM, the
activation amplitudes, the resting couplings), computes the true value of every measure ketflow
reports (names as :mod:`ketflow.io.collect` writes them) and adds Gaussian estimation error,
independent between measures and sessions, of a size per measure family that the image-level
recovery benchmarks measured (docs/group.md).

(:mod:`ketflow.simulate.features` draws the same subjects with their clinical scores, for the
prediction models; this module computes any configured measure, including gPPI, for the trial
inference, without clinical scores.)

True values (per session):

* ``activation_<task>_<contrast>_<roi>``: the contrast weights applied to the simulator's
  amplitudes (faces: the non-DCM ROIs' fearful/neutral/shapes; conflict: dACC, rACC and the
  amygdalae's congruent/iI/cI, ``incongruent`` being the mean of iI and cI); 0 where the
  simulator has no direct amplitude (the faces response of the DCM regions, whose change with
  B is not modelled here);
* ``ppi_<task>_<contrast>_<seed>-to-<target>``: the contrast of the true PPI strength (the
  DCM's modulation of amygdala_L -> vmPFC in fearful and neutral blocks relative to shapes,
  ``ppi_modulation``), in Hz; 0 for every other pair and for the conflict task;
* ``fc_<task>_<a>-<b>``: the Fisher z of the subject's true coupling;
* ``dcm_<task>_{A,B,C}_...``: the two-region model's parameters read from the three-region
  truth (A, the fearful modulation B, the faces input C);
* ``betaseries_<task>_<contrast>_<a>-<b>``: 0 -- the simulator's conflict responses have no
  trial-by-trial variability, so no beta-series coupling (a benchmark plants any it wants).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..group.roi_matrices import parse_edge
from .grid import roi_names
from .parameters import draw_subject

__all__ = ["true_value", "measured_study"]

def _contrast(weights: Mapping[str, float], amplitudes: Mapping[str, float]) -> float:
    return float(sum(w * amplitudes.get(c, 0.0) for c, w in weights.items()))


def _activation_amplitudes(session: dict, task: str, roi: str) -> dict:
    truth = session.get(task, {}).get("activation", {}).get(roi)
    if truth is None:
        return {}
    if task == "conflict":
        return {"congruent": truth["congruent"], "iI": truth["iI"], "cI": truth["cI"],
                "incongruent": 0.5 * (truth["iI"] + truth["cI"])}
    return dict(truth)


def _dcm_value(session: dict, rest: str) -> float:
    """``<A|B|C>_...`` of a dcm measure name (after ``dcm_<task>_``) from the simulator's DCM."""
    dcm = session["faces"]["dcm"]
    regions, inputs = dcm["regions"], dcm["inputs"]
    matrix, _, body = rest.partition("_")
    if matrix == "C":
        source, target = body.split("-to-")
        return float(dcm["C"][regions.index(target)][inputs.index(source)])
    source, target = body.split("-to-")
    if matrix == "A":
        return float(dcm["A"][regions.index(target)][regions.index(source)])
    modulator = max((u for u in inputs if target.endswith("_" + u)), key=len)
    target = target[: -len(modulator) - 1]
    return float(dcm["B"][inputs.index(modulator)][regions.index(target)][regions.index(source)])


def true_value(name: str, session: dict, rois: Sequence[str], contrasts: Mapping[str, Mapping]) -> float:
    """The true value of measure ``name`` in one session's truth (``draw_subject``'s sessions).

    rois : circuit ROI names; contrasts : task -> contrast -> condition weights (the analysis
    configuration's ``tasks.<task>.contrasts``).
    """
    family, task, rest = name.split("_", 2)
    if family == "activation":
        roi = max((r for r in rois if rest.endswith("_" + r)), key=len)
        contrast = rest[: -len(roi) - 1]
        return _contrast(contrasts[task][contrast], _activation_amplitudes(session, task, roi))
    if family == "dcm":
        return _dcm_value(session, rest)
    if family == "betaseries":
        return 0.0
    parsed = parse_edge(name, task, rois)
    if parsed is None:
        raise ValueError(f"cannot read measure name {name!r}")
    label, source, target = parsed
    if family == "fc":
        order = session["rest"]["roi_order"]
        r = session["rest"]["coupling"][order.index(source)][order.index(target)]
        return float(np.arctanh(r))
    seeds = session.get(task, {}).get("ppi_modulation", {}).get("seeds", {})
    if target != "vmPFC" or source not in seeds:
        return 0.0
    modulation = seeds[source]
    strength = {"fearful": modulation["fearful"], "neutral": modulation["neutral"], "shapes": 0.0}
    return _contrast(contrasts[task][label[len(f"ppi_{task}_"):]], strength)


def measured_study(n_subjects: int, seed: int, measures: Sequence[str], contrasts: Mapping[str, Mapping],
                   error_sd: Mapping[str, float], *, effect_scale: float = 1.0,
                   arms: Sequence[str] = ("ketamine", "midazolam")) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(long measures ``subject, session, task, measure, value``, participants ``subject, group``).

    Subjects alternate between ``arms`` (balanced); each subject's truth is
    ``draw_subject(default_rng([seed, 1, i]), arm, rois, effect_scale=effect_scale)`` (the
    image-level simulator's per-subject stream) and the error a separate stream.
    error_sd : per-session estimation error SD by family (``activation``, ``ppi``, ``fc``, ``dcm``).
    """
    rois = roi_names()
    noise = np.random.default_rng([seed, 99])
    rows, participants = [], []
    for i in range(n_subjects):
        arm = arms[i % 2]
        subject = f"{i + 1:03d}"
        truth = draw_subject(np.random.default_rng([seed, 1, i]), arm, rois,
                             rest_rng=np.random.default_rng([seed, 3, i]), effect_scale=effect_scale)
        participants.append({"subject": subject, "group": arm})
        for session, values in truth["sessions"].items():
            for name in measures:
                family, task = name.split("_", 2)[:2]
                value = true_value(name, values, rois, contrasts) + noise.normal(0.0, error_sd[family])
                rows.append({"subject": subject, "session": session, "task": task, "measure": name, "value": value})
    return pd.DataFrame(rows), pd.DataFrame(participants)
