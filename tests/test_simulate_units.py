"""Unit tests of the simulator's numerical pieces (grid, motion, confounds, clinical model)."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from ketflow.simulate.clinical import caps_change_expected, clinical_model
from ketflow.simulate.confounds import compcor, cosine_basis, dvars
from ketflow.simulate.grid import grid_geometry, roi_names
from ketflow.simulate.motion import framewise_displacement, rms_deviation
from ketflow.simulate.parameters import nearest_correlation
from ketflow.simulate.writer import nifti_bytes


def test_grid_matches_fmriprep_res2():
    affine, shape = grid_geometry(2.0)
    assert shape == (97, 115, 97)
    np.testing.assert_array_equal(affine[:3, 3], [-96, -132, -78])
    np.testing.assert_array_equal(np.diag(affine)[:3], [2, 2, 2])
    aff4, shape4 = grid_geometry(4.0)
    assert shape4 == (49, 58, 49)
    np.testing.assert_array_equal(aff4[:3, :3] @ (np.array(shape4) - 1) + aff4[:3, 3], [96, 96, 114])


def test_sphere_table_is_read_from_package():
    names = roi_names()
    assert {"vmPFC", "amygdala_L", "amygdala_R", "dACC", "rACC"} <= set(names)


def test_framewise_displacement_power():
    p = np.zeros((3, 6))
    p[1, 0] = 0.3
    p[2, 3] = 0.01  # rad
    fd = framewise_displacement(p)
    assert np.isnan(fd[0])
    np.testing.assert_allclose(fd[1:], [0.3, 0.3 + 0.5])


def test_rms_deviation_translation_and_rest():
    p = np.zeros((3, 6))
    p[2, :3] = [3.0, 4.0, 0.0]
    rms = rms_deviation(p)
    np.testing.assert_allclose(rms[1:], [0.0, 5.0])
    q = np.zeros((2, 6))
    q[1, 5] = 0.01
    assert rms_deviation(q)[1] == pytest.approx(np.sqrt(80.0**2 / 5 * 2 * (2 - 2 * np.cos(0.01))))


def test_cosine_basis_orthonormal_and_count():
    b = cosine_basis(150, 2.0)
    assert b.shape == (150, 4)
    np.testing.assert_allclose(b.T @ b, np.eye(4), atol=1e-10)
    np.testing.assert_allclose(b.sum(axis=0), 0.0, atol=1e-10)


def test_compcor_recovers_planted_component():
    rng = np.random.default_rng(0)
    n_t, n_vox = 120, 400
    course = np.sin(np.linspace(0, 25, n_t))
    y = 100 + rng.normal(size=(n_vox, n_t)) * 0.2 + np.outer(rng.normal(1, 0.1, n_vox), course)
    u, s = compcor(y, cosine_basis(n_t, 2.0))
    assert np.all(np.diff(s) <= 1e-9)
    c = course - course.mean()
    assert abs(np.corrcoef(u[:, 0], c)[0, 1]) > 0.95
    np.testing.assert_allclose(np.linalg.norm(u, axis=0), 1.0)


def test_standardised_dvars_near_one_for_white_noise():
    rng = np.random.default_rng(1)
    y = 1000 + rng.normal(size=(3000, 100)) * 10
    dv, sdv = dvars(y)
    assert np.isnan(dv[0]) and np.isnan(sdv[0])
    assert np.nanmean(sdv) == pytest.approx(1.0, abs=0.05)
    assert np.nanmean(dv) == pytest.approx(np.sqrt(2) * 10, rel=0.05)


def test_clinical_interaction_switch():
    change = {"faces_B_fearful_amygdala_L_to_vmPFC": 0.5,
              "conflict_dACC_incongruent_minus_congruent": -1.0}
    with_int = clinical_model(True)
    without = clinical_model(False)
    k = caps_change_expected(with_int, "ketamine", change)
    k0 = caps_change_expected(without, "ketamine", change)
    m = caps_change_expected(with_int, "midazolam", change)
    assert k - k0 == pytest.approx(with_int["interaction"]["coefficient"] * 0.5)
    assert m == caps_change_expected(without, "midazolam", change)


def test_nearest_correlation_makes_positive_definite():
    r = np.array([[1, 0.9, -0.9], [0.9, 1, 0.9], [-0.9, 0.9, 1.0]])
    out = nearest_correlation(r)
    assert np.linalg.eigvalsh(out).min() >= 0.02
    np.testing.assert_allclose(np.diag(out), 1.0)


def test_nifti_bytes_deterministic_and_readable():
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    a = nifti_bytes(data, np.eye(4), np.float32)
    assert a == nifti_bytes(data, np.eye(4), np.float32)
    assert a[4:8] == b"\x00\x00\x00\x00"
    img = nib.Nifti1Image.from_bytes(gzip.decompress(a))
    np.testing.assert_array_equal(img.get_fdata(), data)
    assert img.header["sform_code"] == 4


def test_noise_free_ppi_tracks_the_modulation():
    from ketflow.simulate.design import faces_events
    from ketflow.simulate.parameters import draw_subject
    from ketflow.simulate.signals import faces_signals, noise_free_ppi

    names = roi_names()
    truth = draw_subject(np.random.default_rng(3), "ketamine", names)["sessions"]["pre"]["faces"]
    events = faces_events(150, 2.0, np.random.default_rng(4))
    out = {}
    for b in (0.0, 0.6):
        dcm = {**truth["dcm"], "B": np.zeros((4, 3, 3)).tolist()}
        dcm["B"][1][0][1] = b
        sig, u = faces_signals(events, {"dcm": dcm, "activation": {}}, 150, 2.0, 1.0,
                               np.random.default_rng(5))
        out[b] = noise_free_ppi(sig, u, events, dcm, 150, 2.0, 1.0)
    effect = out[0.6]["amygdala_L"]["fearful_minus_neutral"]
    null = out[0.0]["amygdala_L"]["fearful_minus_neutral"]
    assert effect > 0 and effect > 3 * abs(null)


def test_faces_dcm_amygdala_r_prefers_fearful_faces():
    from ketflow.simulate.design import faces_events
    from ketflow.simulate.parameters import draw_subject
    from ketflow.simulate.signals import (
        faces_regressors,
        faces_signals,
        noise_free_betas,
    )

    names = roi_names()
    truth = draw_subject(np.random.default_rng(3), "midazolam", names)["sessions"]["pre"]["faces"]
    truth = {"dcm": {**truth["dcm"], "endogenous_sd": 0.0}, "activation": truth["activation"]}
    events = faces_events(150, 2.0, np.random.default_rng(4))
    sig, _ = faces_signals(events, truth, 150, 2.0, 1.0, np.random.default_rng(5))
    betas = noise_free_betas(sig, faces_regressors(events, 150, 2.0, 1.0))
    amy = betas["amygdala_R"]
    assert amy["fearful"] > amy["neutral"] > amy["shapes"]
    for cond, amp in truth["activation"]["antInsula_L"].items():
        assert betas["antInsula_L"][cond] == pytest.approx(amp, abs=1e-8)


def test_ppi_modulation_is_the_dcm_modulation_of_the_direct_connection():
    from ketflow.simulate.parameters import DCM_INPUTS, DCM_REGIONS, ppi_modulation

    a = np.zeros((3, 3))
    a[0, 1] = 0.4  # amygdala_L -> vmPFC; amygdala_R has no direct connection to vmPFC
    b = np.zeros((4, 3, 3))
    b[0, 0, 1], b[1, 0, 1], b[1, 0, 2] = 0.1, 0.3, 0.9
    dcm = {"regions": DCM_REGIONS, "inputs": DCM_INPUTS, "A": a.tolist(), "B": b.tolist()}
    truth = ppi_modulation(dcm)
    assert truth["target"] == "vmPFC" and list(truth["seeds"]) == ["amygdala_L"]
    assert truth["seeds"]["amygdala_L"] == pytest.approx({"fearful": 0.4, "neutral": 0.1,
                                                           "fearful_minus_neutral": 0.3})


def test_faces_spontaneous_amygdala_bold_has_resting_amplitude():
    """FacesModel's justification (docs/simulator.md): the spontaneous input alone gives an
    amygdala_L BOLD SD of about 1 % (the rest model's amplitude), the task inputs alone less."""
    from ketflow.dcm import simulate_bold
    from ketflow.simulate.design import faces_events
    from ketflow.simulate.parameters import REST_AMPLITUDE, draw_subject
    from ketflow.simulate.signals import MICROTIME, faces_inputs

    names = roi_names()
    spontaneous, evoked = [], []
    for i in range(6):
        dcm = draw_subject(np.random.default_rng([7, i]), "midazolam", names)["sessions"]["pre"]["faces"]["dcm"]
        rng = np.random.default_rng([8, i])
        u = faces_inputs(faces_events(150, 2.0, rng), dcm, 150, 2.0, rng)
        for keep, out in ((slice(2, 4), spontaneous), (slice(0, 2), evoked)):
            only = np.zeros_like(u)
            only[:, keep] = u[:, keep]
            bold = simulate_bold(np.asarray(dcm["A"]), np.asarray(dcm["B"]), np.asarray(dcm["C"]), only,
                                 dt=2.0 / MICROTIME, TR=2.0, n_scans=150, transit=np.asarray(dcm["transit"]),
                                 decay=dcm["decay"], epsilon=dcm["epsilon"], delays=np.full(3, 1.0))
            out.append(bold[:, 1].std())
    assert 0.75 * REST_AMPLITUDE < np.mean(spontaneous) < 1.25 * REST_AMPLITUDE, spontaneous
    assert np.mean(evoked) < np.mean(spontaneous), (evoked, spontaneous)
