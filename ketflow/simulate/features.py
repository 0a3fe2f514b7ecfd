"""Feature-level simulated studies: the image simulator's subjects, "measured" with Gaussian error.

The group level's power can be measured on thousands of studies only without simulating and
processing images.  :func:`simulated_feature_study` draws each subject exactly as the image-level
simulator does (:func:`ketflow.simulate.parameters.draw_subject`: true DCM, activation and resting
coupling at each session; :func:`ketflow.simulate.clinical.draw_scores`: CAPS-5 and MADRS from
``clinical_model``; arms by the simulator's allocation) and, instead of simulating BOLD and
estimating the measures, adds to each session's true value a Gaussian error whose SD is what the
participant level was measured to achieve on the simulator's images (docs/group.md, the
40-subject run at 4 mm: DCM B 0.30 Hz, dACC conflict contrast 0.32, Fisher z 0.14).  Optional
pure-noise measures (no relation to anything) pad the measure count to that of the full circuit.

The measures are those the simulator has a ground truth for (26): the DCM parameters between
vmPFC and amygdala_L, the conflict contrasts (dACC incongruent − congruent, rACC iI − cI), the
faces fearful − shapes activation of every ROI and the resting coupling of every pair involving
vmPFC or amygdala_L.  gPPI has no simulator truth and is absent.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .clinical import clinical_model, draw_scores
from .dataset import _allocation
from .grid import roi_names
from .parameters import draw_subject

__all__ = ["MEASURED_ERROR_SD", "DEMO_ERROR_SD", "B_DRIVER", "DACC_DRIVER", "simulated_feature_study", "true_measures"]

#: Per-session estimation error SD by measure family, measured on the simulator's images
#: (40 subjects, 4 mm; docs/group.md).
MEASURED_ERROR_SD = {"dcm": 0.30, "activation": 0.32, "fc": 0.14}
#: The same, measured on the demo's 6 subjects at 4 mm (benchmarks/group_simulator_recovery.py):
#: the error sizes tests/test_group_simulator_truth.py and benchmarks/group_interaction_power.py use.
DEMO_ERROR_SD = {"dcm": 0.20, "activation": 0.16, "fc": 0.18}
B_DRIVER = "dcm_faces_B_amygdala_L-to-vmPFC_fearful"
DACC_DRIVER = "activation_conflict_incongruent-gt-congruent_dACC"


def true_measures(session: dict) -> dict[str, float]:
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


def simulated_feature_study(n: int, seed: int, *, interaction: bool = True, drivers: bool = True,
                            error_sd: dict | None = None, n_noise: int = 0):
    """(measures, clinical, participants) long tables of ``n`` simulated subjects, measured with error.

    interaction : the clinical model's arm × B-change term; drivers : False sets the imaging
    drivers' coefficients (and the interaction) to 0, keeping the arm effect; error_sd : per-session
    error SD by family (default :data:`MEASURED_ERROR_SD`); n_noise : extra measures
    ``fc_rest_noise<k>-noise`` of pure noise (N(0, 0.2) per session).  The tables are the inputs of
    :func:`ketflow.group.features.build_feature_table` (arm column ``group``).
    """
    rois = roi_names()
    model = clinical_model(interaction and drivers)
    if not drivers:
        for driver in model["drivers"]:
            driver["coefficient"] = 0.0
    error_sd = MEASURED_ERROR_SD if error_sd is None else error_sd
    noise = np.random.default_rng([seed, 99])
    measures, clinical, participants = [], [], []
    for i, arm in enumerate(_allocation(n, seed)):
        rng = np.random.default_rng([seed, 1, i])  # the simulator's per-subject stream
        truth = draw_subject(rng, arm, rois)
        scores = draw_scores(rng, model, arm, truth["change"])
        sub = f"{i + 1:03d}"
        participants.append({"participant_id": f"sub-{sub}", "group": arm})
        for ses in ("pre", "post"):
            values = {name: value + noise.normal(0, error_sd[name.split("_")[0]])
                      for name, value in true_measures(truth["sessions"][ses]).items()}
            values.update({f"fc_rest_noise{k:03d}-noise": noise.normal(0, 0.2) for k in range(n_noise)})
            for name, value in values.items():
                family, task = name.split("_")[:2]
                measures.append({"subject": sub, "session": ses, "task": task, "measure": name, "value": value})
            clinical.append({"subject": sub, "session": ses, **{k: v[ses] for k, v in scores.items()}})
    return pd.DataFrame(measures), pd.DataFrame(clinical), pd.DataFrame(participants)
