"""Forward model of DCM for fMRI: SPM12 agreement and basic properties."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ketflow.dcm import simulate_bold
from ketflow.dcm.model import ParameterLayout

# SPM12 reference cases kept in the repository (tests/data/spm/README.md)
REF = Path(__file__).resolve().parent / "data" / "spm" / "spm_dcm"
CASES = ["dcm2_block", "dcm2_event", "dcm3_block"]


@pytest.mark.parametrize("case", CASES)
def test_prediction_at_spm_estimates_matches_spm(case):
    spec = json.loads((REF / case / "spec.json").read_text())
    Ep = json.loads((REF / case / "results.json").read_text())["Ep"]
    U = pd.read_csv(REF / case / "U.csv").to_numpy()
    y_spm = pd.read_csv(REF / case / "y_predicted.csv").to_numpy()
    y = simulate_bold(
        Ep["A"], Ep["B"], Ep["C"], U, spec["U_dt"], spec["TR"], spec["n_scans"],
        transit=Ep["transit"], decay=Ep["decay"], epsilon=Ep["epsilon"], delays=spec["delays_s"],
    )
    # SPM builds its Jacobians by finite differences (step e^-8): agreement to ~1e-3 %.
    assert np.abs(y - y_spm).max() < 2e-3 * max(1.0, np.abs(y_spm).max())
    assert ParameterLayout(spec["n_regions"], len(spec["input_names"])).names() == spec["param_order"]


def _design(n_rows=1600, seed=0):
    rng = np.random.default_rng(seed)
    U = np.zeros((n_rows, 2))
    for on in range(40, n_rows, 320):
        U[on:on + 160, 0] = 1.0
    U[:, 1] = (rng.random(n_rows // 160).repeat(160) > 0.5) * U[:, 0]
    return U


def test_no_input_gives_no_signal():
    U = np.zeros((1600, 2))
    A = np.array([[0.0, 0.3], [0.2, 0.0]])
    y = simulate_bold(A, np.zeros((2, 2, 2)), np.array([[0, 0], [1, 0]]), U, 0.125, 2.0, 100)
    assert y.shape == (100, 2) and np.all(y == 0)


def test_driving_input_produces_delayed_positive_response():
    U = np.zeros((1600, 1))
    U[80:240, 0] = 1.0  # 20 s block starting at 10 s
    y = simulate_bold(np.zeros((1, 1)), None, np.ones((1, 1)), U, 0.125, 2.0, 100)[:, 0]
    assert np.all(y[:5] == 0)
    peak = int(np.argmax(y))
    assert 10 < peak * 2.0 < 40 and y.max() > 0.1
    assert y[-1] < 0.05 * y.max()  # returns to baseline


def test_zero_nonlinear_term_equals_bilinear_and_nonzero_changes_it():
    U = _design()
    A = np.array([[0.0, 0.4], [-0.3, 0.0]])
    B = np.zeros((2, 2, 2))
    B[1, 0, 1] = 0.5
    C = np.array([[0.0, 0.0], [1.0, 0.0]])
    y = simulate_bold(A, B, C, U, 0.125, 2.0, 100)
    y0 = simulate_bold(A, B, C, U, 0.125, 2.0, 100, D=np.zeros((2, 2, 2)))
    np.testing.assert_allclose(y0, y, atol=1e-12)
    D = np.zeros((2, 2, 2))
    D[1, 0, 1] = 2.0
    yd = simulate_bold(A, B, C, U, 0.125, 2.0, 100, D=D)
    assert np.abs(yd - y).max() > 1e-3


def test_layout_pack_unpack_round_trip():
    rng = np.random.default_rng(1)
    lay = ParameterLayout(3, 2, 1)
    theta = rng.standard_normal(lay.size)
    P = lay.unpack(theta)
    back = lay.pack(P["A"], P["B"], P["C"], P["transit"], P["decay"], P["epsilon"], P["D"])
    np.testing.assert_array_equal(back, theta)
    assert P["A"][1, 0] == theta[lay.names().index("A_to2_from1")]
    assert P["B"][1, 2, 0] == theta[lay.names().index("B_to3_from1_in2")]
    assert P["C"][0, 1] == theta[lay.names().index("C_to1_in2")]
