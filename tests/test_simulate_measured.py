"""Feature-level simulated studies (ketflow.simulate.measured) and the simulator's effect scale."""

from __future__ import annotations

import numpy as np
import pytest

from ketflow.config import load_config, roi_names
from ketflow.simulate.measured import measured_study, true_value
from ketflow.simulate.parameters import CHANGE_MODEL, draw_subject

CONFIG = load_config()
ROIS = roi_names(CONFIG)
CONTRASTS = {task: spec.contrasts for task, spec in CONFIG.tasks.items()}


def test_true_values_read_the_simulators_parameters():
    truth = draw_subject(np.random.default_rng(4), "ketamine", ROIS)
    session = truth["sessions"]["post"]
    dcm = session["faces"]["dcm"]
    b = dcm["B"][1][0][1]  # fearful, to vmPFC, from amygdala_L
    assert true_value("dcm_faces_B_amygdala_L-to-vmPFC_fearful", session, ROIS, CONTRASTS) == b
    assert true_value("dcm_faces_A_vmPFC-to-amygdala_L", session, ROIS, CONTRASTS) == dcm["A"][1][0]
    assert true_value("dcm_faces_C_faces-to-amygdala_L", session, ROIS, CONTRASTS) == dcm["C"][1][0]
    dacc = session["conflict"]["activation"]["dACC"]
    assert true_value("activation_conflict_incongruent-gt-congruent_dACC", session, ROIS, CONTRASTS) == \
        pytest.approx(dacc["cI"] - dacc["congruent"])
    insula = session["faces"]["activation"]["antInsula_L"]
    assert true_value("activation_faces_fearful-gt-neutral_antInsula_L", session, ROIS, CONTRASTS) == \
        pytest.approx(insula["fearful"] - insula["neutral"])
    assert true_value("activation_faces_fearful-gt-neutral_vmPFC", session, ROIS, CONTRASTS) == 0.0
    assert true_value("ppi_faces_fearful-gt-shapes_amygdala_L-to-vmPFC", session, ROIS, CONTRASTS) == \
        pytest.approx(b)  # B_faces = 0: the fearful-vs-shapes PPI strength is the fearful modulation
    assert true_value("ppi_faces_faces-gt-shapes_amygdala_L-to-vmPFC", session, ROIS, CONTRASTS) == \
        pytest.approx(b / 2)
    assert true_value("ppi_faces_fearful-gt-shapes_vmPFC-to-amygdala_L", session, ROIS, CONTRASTS) == 0.0
    order = session["rest"]["roi_order"]
    r = session["rest"]["coupling"][order.index("vmPFC")][order.index("amygdala_L")]
    assert true_value("fc_rest_vmPFC-amygdala_L", session, ROIS, CONTRASTS) == pytest.approx(np.arctanh(r))


def test_effect_scale_moves_the_mean_change_only():
    def changes(scale):
        return np.array([draw_subject(np.random.default_rng([5, i]), "ketamine", ROIS, effect_scale=scale)["change"]
                         ["faces_B_fearful_amygdala_L_to_vmPFC"] for i in range(200)])

    full, none = changes(1.0), changes(0.0)
    mean, sd = CHANGE_MODEL["faces_B_fearful_amygdala_L_to_vmPFC"]["ketamine"]
    np.testing.assert_allclose(full - none, mean)  # the same draws, shifted by the mean
    assert abs(none.mean()) < 3 * sd / np.sqrt(200) and none.std() == pytest.approx(sd, rel=0.15)
    default = draw_subject(np.random.default_rng([5, 0]), "ketamine", ROIS)["change"]
    assert default["faces_B_fearful_amygdala_L_to_vmPFC"] == full[0]  # scale 1 is the simulator's default


def test_measured_study_adds_the_family_error():
    names = ["fc_rest_vmPFC-amygdala_L", "dcm_faces_B_amygdala_L-to-vmPFC_fearful"]
    long, participants = measured_study(40, 3, names, CONTRASTS, {"fc": 0.1, "dcm": 0.3})
    assert list(participants["group"][:2]) == ["ketamine", "midazolam"] and len(long) == 40 * 2 * 2
    errors = []
    for row in long[long["measure"] == names[1]].itertuples():
        i = int(row.subject) - 1
        truth = draw_subject(np.random.default_rng([3, 1, i]), participants["group"][i], ROIS,
                             rest_rng=np.random.default_rng([3, 3, i]))
        errors.append(row.value - truth["sessions"][row.session]["faces"]["dcm"]["B"][1][0][1])
    assert np.std(errors) == pytest.approx(0.3, rel=0.2) and abs(np.mean(errors)) < 0.1
