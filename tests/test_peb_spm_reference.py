"""ketflow's PEB against SPM12's own outputs (``tests/data/spm/spm_peb``, README there).

16 first-level DCMs (2 regions, A and B(1,2,2) at the second level), design
[mean, arm, clinical, arm × clinical]: ``spm_dcm_peb``, ``spm_dcm_peb_bmc`` and ``spm_dcm_loo``
of SPM12 r7771 under Octave. The first-level posteriors are given in full, so ketflow starts
from exactly what SPM's PEB saw.
"""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ketflow.dcm.peb import _spm_basis, empirical_bayes_posteriors, fit_peb, select_parameters
from ketflow.dcm.peb_loo import peb_leave_one_out
from ketflow.dcm.peb_reduce import reduce_peb

CASE = Path(__file__).parent / "data" / "spm" / "spm_peb" / "peb_cross"


@pytest.fixture(scope="module")
def case():
    first = json.loads((CASE / "first_level.json").read_text())
    subjects = first["subjects"]
    qE = np.array([pd.read_csv(CASE / "first_level" / f"{s}_Ep.csv")["post_mean"].to_numpy() for s in subjects])
    qC = np.array([pd.read_csv(CASE / "first_level" / f"{s}_Cp.csv").to_numpy() for s in subjects])
    return {"names": first["param_labels"], "qE": qE, "qC": qC, "pE": np.array(first["pE"]),
            "pC": np.array(first["pC"]), "F": np.array(first["F"]),
            "X": pd.read_csv(CASE / "X.csv").to_numpy(), "ref": json.loads((CASE / "peb.json").read_text())}


def _selected(case, fields):
    idx = select_parameters(case["names"], np.diag(case["pC"]), fields)
    block = np.ix_(idx, idx)
    return idx, case["qE"][:, idx], case["qC"][:, idx][:, :, idx], case["pE"][idx], case["pC"][block]


@pytest.fixture(scope="module")
def peb(case):
    _, qE, qC, pE, pC = _selected(case, ("A", "B"))
    return fit_peb(qE, qC, pE, pC, case["X"], first_level_F=case["F"])


def _rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.abs(a - b).max() / np.abs(b).max()


def test_parameter_selection_and_basis(case):
    idx = select_parameters(case["names"], np.diag(case["pC"]), ("A", "B"))
    assert [i + 1 for i in idx] == case["ref"]["Pind"]
    PC = case["pC"][np.ix_(idx, idx)]
    np.testing.assert_array_equal(_spm_basis(PC), np.array(case["ref"]["M"]["U"]))


def test_peb_equals_spm(peb, case):
    ref = case["ref"]
    assert peb.n_iterations == ref["n_VL_iterations"] == 44 and peb.converged
    assert _rel(peb.Ep.T, ref["Ep"]) < 1e-13
    assert _rel(peb.Cp, ref["Cp"]) < 1e-13
    assert _rel(peb.Eh, ref["Eh"]) < 1e-13
    assert _rel(peb.Ch, ref["Ch"]) < 1e-13
    assert _rel(peb.F, ref["F"]) < 1e-13
    assert _rel(peb.between_covariance, ref["Ce"]) < 1e-13
    np.testing.assert_allclose(peb.bC, np.array(ref["M"]["pC"]), rtol=1e-15)
    np.testing.assert_allclose(peb.X, np.array(ref["M"]["X"]), rtol=1e-15)  # JSON: 16 digits


def test_iterations_follow_spm_log(case):
    """F, its last accepted gain and the regularisation t of every VL iteration, as SPM printed them."""
    log = (CASE / "spm_log.txt").read_text().splitlines()
    spm = [tuple(map(float, m.groups())) for m in
           (re.match(r"VL Iteration (\d+)\s*: F = (\S+) dF: (\S+)\s+\[(\S+)\]", line) for line in log[1:45])]
    idx, qE, qC, pE, pC = _selected(case, ("A", "B"))
    trace = []
    import ketflow.dcm.peb as core

    original = core.peb_variational

    def traced(*args, **kwargs):
        return original(*args, trace=trace, **kwargs)

    core.peb_variational = traced
    try:
        fit_peb(qE, qC, pE, pC, case["X"], first_level_F=case["F"])
    finally:
        core.peb_variational = original
    assert len(trace) == len(spm) == 44
    for (n, F, dF, t), (n_ref, F_ref, dF_ref, t_ref) in zip(trace, spm):
        assert n == n_ref and round(F, 2) == pytest.approx(F_ref, abs=0.006)
        assert round(dF, 4) == pytest.approx(dF_ref, abs=6e-5) and t == t_ref


def test_reduced_first_level_posteriors(peb, case):
    """The second output of spm_dcm_peb: every subject's whole first-level posterior under the
    empirical prior. Agreement is close but not to rounding error (docs/dcm.md): means within
    0.03 posterior SD, variances within 0.3%, F within 0.1 nats."""
    ref = case["ref"]["reduced_first_level"]
    idx = select_parameters(case["names"], np.diag(case["pC"]), ("A", "B"))
    Ep, Cp, F = empirical_bayes_posteriors(peb, idx, case["qE"], case["qC"], case["pE"], case["pC"], case["F"])
    Vp_ref = np.array(ref["Vp"])
    free = Vp_ref > 0
    sd = np.sqrt(np.where(free, Vp_ref, 1.0))
    assert np.abs((Ep - np.array(ref["Ep"])) / sd).max() < 0.03
    V = np.diagonal(Cp, axis1=1, axis2=2)
    assert np.abs(V[free] / Vp_ref[free] - 1).max() < 3e-3
    np.testing.assert_array_equal(V[~free], 0.0)  # fixed parameters stay fixed
    assert np.abs(F - np.array(ref["F"])).max() < 0.1


@pytest.fixture(scope="module")
def reduction(peb):
    return reduce_peb(peb)


def test_greedy_search_equals_spm(reduction, case):
    bmr = case["ref"]["BMA"]["BMR"]
    np.testing.assert_array_equal(reduction.searched + 1, bmr["k"])
    np.testing.assert_array_equal(~reduction.models[:, reduction.searched], np.array(bmr["K"]) == 1)
    np.testing.assert_allclose(reduction.log_evidence, bmr["F"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(reduction.posterior, bmr["P"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(reduction.Pp.ravel(), case["ref"]["BMA"]["Pp"], rtol=0, atol=1e-6)
    assert [len(s) for s in reduction.steps] == [8, 4, 0]  # "8 out of 20", "4 out of 12", "0 out of 8"


def test_bma_equals_spm_exact_average(reduction, case):
    """SPM samples its BMA; the README's ``exact`` block is the analytic mixture of the same models.
    SPM weighs them by an F whose log-determinant of an ill-conditioned product is noisy at 1e-3
    nats, which bounds the agreement of the means to ~1e-4 posterior SD."""
    exact = case["ref"]["BMA"]["exact"]
    np.testing.assert_array_equal(np.flatnonzero(reduction.in_window) + 1, exact["models_in_window"])
    Vp = np.array(exact["Vp_vector"])
    assert np.abs((reduction.Ep.ravel() - np.array(exact["Ep_vector"])) / np.sqrt(Vp)).max() < 1e-4
    assert np.abs(np.diag(reduction.Cp) / Vp - 1).max() < 1e-4
    sampled = np.array(case["ref"]["BMA"]["Ep_vector"])  # SPM's Monte Carlo estimate (1000 draws)
    assert np.all(np.abs(reduction.Ep.ravel() - sampled) < 4 * np.sqrt(Vp / 1000) + 1e-5)


def test_leave_one_out_equals_spm(case):
    """spm_dcm_loo(GCM, M, {'B'}): predictive means and variances, level probabilities, corr, T, p."""
    _, qE, qC, pE, pC = _selected(case, ("B",))
    loo = peb_leave_one_out(qE, qC, pE, pC, case["X"], column=1, first_level_F=case["F"])
    ref = case["ref"]["loo"]
    np.testing.assert_array_equal(loo.levels, ref["Q_levels"])
    np.testing.assert_allclose(loo.predicted_mean, ref["qE"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(loo.predicted_sd ** 2, ref["qC"], rtol=1e-12)
    np.testing.assert_allclose(loo.level_probabilities.T, np.array(ref["Q"]), rtol=0, atol=1e-7)
    assert loo.r == pytest.approx(ref["corr"], rel=1e-12)
    assert loo.T == pytest.approx(ref["T"], rel=1e-12)
    assert loo.df == ref["df"][1] and loo.p == pytest.approx(ref["p"], rel=1e-9)
