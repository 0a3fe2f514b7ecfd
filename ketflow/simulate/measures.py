"""The group level's inputs from the simulator's per-subject truth, measured with error (no images).

The simulator's own per-subject draws (:func:`ketflow.simulate.parameters.draw_subject`,
:func:`ketflow.simulate.clinical.draw_scores`: true DCM, activation and resting-coupling
parameters at each session and the CAPS-5 / MADRS scores they generate) are "measured" with
Gaussian estimation error of the size the participant level shows on the simulator's demo
data (benchmarks/group_simulator_recovery.py: DCM B 0.20 Hz, dACC contrast 0.16, Fisher z
0.18 per session).  :func:`simulated_study` gives the long tables the group level's feature
table is built from; ``tests/test_group_simulator_truth.py`` and
``benchmarks/group_interaction_power.py`` use it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .clinical import clinical_model, draw_scores
from .dataset import _allocation
from .grid import read_sphere_table
from .parameters import draw_subject

#: Per-session estimation error SD of each measure family (benchmark, demo data at 4 mm).
ERROR_SD = {"dcm": 0.20, "activation": 0.16, "fc": 0.18}
B_DRIVER = "dcm_faces_B_amygdala_L-to-vmPFC_fearful"
DACC_DRIVER = "activation_conflict_incongruent-gt-congruent_dACC"


def _true_values(session: dict, rois: list[str]) -> dict:
    """The measures ketflow estimates, at their true values, for one subject and session."""
    dcm = session["faces"]["dcm"]
    regions = dcm["regions"]
    v, a = regions.index("vmPFC"), regions.index("amygdala_L")
    values = {B_DRIVER: dcm["B"][1][v][a],
              "dcm_faces_A_amygdala_L-to-vmPFC": dcm["A"][v][a],
              "dcm_faces_A_vmPFC-to-amygdala_L": dcm["A"][a][v]}
    dacc = session["conflict"]["activation"]["dACC"]
    values[DACC_DRIVER] = dacc["cI"] - dacc["congruent"]
    racc = session["conflict"]["activation"]["rACC"]
    values["activation_conflict_iI-gt-cI_rACC"] = racc["iI"] - racc["cI"]
    for roi, amp in session["faces"]["activation"].items():
        values[f"activation_faces_fearful-gt-shapes_{roi}"] = amp["fearful"] - amp["shapes"]
    coupling = np.array(session["rest"]["coupling"])
    order = session["rest"]["roi_order"]
    for i, j in zip(*np.triu_indices(len(order), 1)):
        if "vmPFC" in (order[i], order[j]) or "amygdala_L" in (order[i], order[j]):
            values[f"fc_rest_{order[i]}-{order[j]}"] = float(np.arctanh(coupling[i, j]))
    return values


def simulated_study(n: int, seed: int, interaction: bool = True, error_sd: dict = ERROR_SD):
    """(measures, clinical, participants) long tables of ``n`` simulated subjects, measured with error.

    error_sd : per-session estimation error SD by measure family (``dcm``, ``activation``, ``fc``).
    """
    rois = [s.name for s in read_sphere_table()]
    model = clinical_model(interaction)
    noise = np.random.default_rng([seed, 99])
    measures, clinical, participants = [], [], []
    for i, arm in enumerate(_allocation(n, seed)):
        rng = np.random.default_rng([seed, 1, i])  # the simulator's per-subject stream
        truth = draw_subject(rng, arm, rois)
        scores = draw_scores(rng, model, arm, truth["change"])
        sub = f"{i + 1:03d}"
        participants.append({"participant_id": f"sub-{sub}", "group": arm})
        for ses in ("pre", "post"):
            for name, value in _true_values(truth["sessions"][ses], rois).items():
                family, task = name.split("_")[:2]
                measures.append({"subject": sub, "session": ses, "task": task, "measure": name,
                                 "value": value + noise.normal(0, error_sd[family])})
            clinical.append({"subject": sub, "session": ses, **{k: v[ses] for k, v in scores.items()}})
    return pd.DataFrame(measures), pd.DataFrame(clinical), pd.DataFrame(participants)
