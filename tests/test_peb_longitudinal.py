"""The longitudinal PEB (PEB of PEBs over two sessions), named effects, contrasts and families."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import multivariate_normal

from conftest import TESTS
from ketflow.dcm.peb import between_subject_design
from ketflow.dcm.peb_effects import EffectGrid, effect_name
from ketflow.dcm.peb_longitudinal import fit_longitudinal_peb, saturated_within_subject, within_subject_design
from ketflow.dcm.peb_tables import analyse_peb, check_specification
from ketflow.group.synthetic_peb import synthetic_longitudinal_posteriors

PARAMETERS = ["A_vmPFC-to-vmPFC", "A_vmPFC-to-amygdala_L", "A_amygdala_L-to-vmPFC", "A_amygdala_L-to-amygdala_L",
              "B_amygdala_L-to-vmPFC_fearful"]
PE = np.array([0.0, 1 / 128, 1 / 128, 0.0, 0.0])
PC = np.diag([1 / 64] * 4 + [1.0])


def _pool():
    """SPM12's posterior covariances of the 16 simulated subjects of tests/data/spm/spm_peb."""
    folder = TESTS / "data" / "spm" / "spm_peb" / "peb_cross" / "first_level"
    idx = [0, 1, 2, 3, 10]
    return np.array([pd.read_csv(f).to_numpy()[np.ix_(idx, idx)] for f in sorted(folder.glob("sub-*_Cp.csv"))])


def _study(n, session_arm=0.4, session_clinical=0.0, seed=0):
    rng = np.random.default_rng(seed)
    arm = np.array(["midazolam", "ketamine"] * (n // 2))
    X, columns = between_subject_design(arm, ("midazolam", "ketamine"), rng.normal(size=n), covariate_name="clinical")
    beta_mean = np.zeros((4, 5))
    beta_mean[0] = [-0.15, -0.3, 0.35, -0.05, 0.4]
    beta_change = np.zeros((4, 5))
    beta_change[1, 4] = session_arm
    beta_change[2, 1] = session_clinical
    data = synthetic_longitudinal_posteriors(beta_mean, beta_change, X, PE, PC, _pool(), seed=seed)
    return data, X, columns


@pytest.fixture(scope="module")
def planted():
    data, X, columns = _study(40, seed=11)
    fit = fit_longitudinal_peb(data.qE, data.qC, PE, PC, X, between_columns=columns, parameters=PARAMETERS)
    return data, X, fit


def test_effect_names_and_grid():
    grid = EffectGrid(between=("mean", "arm", "clinical", "arm:clinical"), within=("mean", "session"),
                      parameters=("a", "b"))
    assert grid.effects == ["mean", "session", "arm", "session:arm", "clinical", "session:clinical",
                            "arm:clinical", "session:arm:clinical"]
    assert effect_name("arm", "session") == "session:arm"
    assert grid.index("session:arm", "b") == (1, 3)
    assert grid.labels()[1 * 4 + 3] == ("session:arm", "b")
    with pytest.raises(ValueError, match=r"peb.contrasts\[x\]: effect 'session:age' is not in the design"):
        grid.weights({"session:age": {"a": 1}}, where="peb.contrasts[x]")
    with pytest.raises(ValueError, match=r"peb.families\[f\]: parameter 'c' is not a second-level DCM parameter"):
        check_specification(grid, [], [{"name": "f", "parameters": ["c"], "effects": None}])


def test_saturated_within_subject_is_the_exact_linear_gaussian_model():
    """Two sessions with exact Gaussian posteriors: the (mean, change) posterior and the log evidence
    equal the closed-form linear-Gaussian model θ_s = Z_s φ, φ ~ N([pE, 0], diag(1, 4) ⊗ pC)."""
    rng = np.random.default_rng(3)
    P = 5
    lams = [np.diag(rng.uniform(200, 900, P)) for _ in range(2)]
    theta = np.array([[0.1, -0.3, 0.3, 0.0, 0.2], [0.1, -0.2, 0.3, 0.1, 0.6]])
    ys = [rng.multivariate_normal(theta[s], np.linalg.inv(lams[s])) for s in range(2)]
    prior_prec = np.linalg.inv(PC)
    qC = np.array([np.linalg.inv(prior_prec + lam) for lam in lams])
    qE = np.array([qC[s] @ (prior_prec @ PE + lams[s] @ ys[s]) for s in range(2)])
    log_ev_first = [multivariate_normal(PE, np.linalg.inv(lams[s]) + PC).logpdf(ys[s]) for s in range(2)]
    w = saturated_within_subject(qE, qC, np.array([PE, PE]), np.array([PC, PC]), log_ev_first)
    T = np.kron(within_subject_design(), np.eye(P))
    bE, bC = np.concatenate([PE, np.zeros(P)]), np.kron(np.diag([1.0, 4.0]), PC)
    L = np.zeros((2 * P, 2 * P))
    L[:P, :P], L[P:, P:] = lams
    post_prec = T.T @ L @ T + np.linalg.inv(bC)
    mean = np.linalg.solve(post_prec, T.T @ L @ np.concatenate(ys) + np.linalg.solve(bC, bE))
    np.testing.assert_allclose(w.Ep.ravel(), mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(w.Cp, np.linalg.inv(post_prec), rtol=1e-9, atol=1e-14)
    noise = np.zeros((2 * P, 2 * P))
    noise[:P, :P], noise[P:, P:] = np.linalg.inv(lams[0]), np.linalg.inv(lams[1])
    exact = multivariate_normal(T @ bE, T @ bC @ T.T + noise).logpdf(np.concatenate(ys))
    assert w.F == pytest.approx(exact, abs=1e-6)


def test_planted_session_by_arm_effect_is_recovered(planted):
    """40 subjects, session × arm effect 0.4 on the fearful modulation B (amygdala → vmPFC), no
    other covariate effect: the right sign, the truth inside the 95% interval, Pp > 0.95, and no
    other covariate effect with Pp > 0.95."""
    _, _, fit = planted
    k, j = fit.grid.index("session:arm", PARAMETERS[4])
    Ep, sd = fit.between.Ep[k, j], fit.between.Ep_sd[k, j]
    assert Ep > 0 and abs(Ep - 0.4) < 1.96 * sd and Ep / sd > 3
    tables = analyse_peb(fit.between, fit.grid)
    row = tables.parameters.set_index(["effect", "parameter"]).loc[("session:arm", PARAMETERS[4])]
    assert row["Pp"] > 0.95 and row["p_positive"] > 0.99
    others = tables.parameters[(tables.parameters["effect"] != "mean")
                               & ~((tables.parameters["effect"] == "session:arm")
                                   & (tables.parameters["parameter"] == PARAMETERS[4]))]
    assert (others["Pp"] < 0.95).all(), others[others["Pp"] >= 0.95]
    # the group means of the session mean are recovered (truth −0.3 and 0.35 for the A connections)
    means = fit.between.Ep[0, :5]
    assert abs(means[1] + 0.3) < 3 * fit.between.Ep_sd[0, 1] and abs(means[2] - 0.35) < 3 * fit.between.Ep_sd[0, 2]


def test_contrasts_and_families_on_the_planted_effect(planted):
    _, _, fit = planted
    contrasts = [{"name": "arm-change-B", "weights": {"session:arm": {PARAMETERS[4]: 1}}, "expect": "positive"},
                 {"name": "ketamine-change-B", "weights": {"session": {PARAMETERS[4]: 1},
                                                           "session:arm": {PARAMETERS[4]: 0.5}}, "expect": "positive"},
                 {"name": "clinical-top-down", "weights": {"session:clinical": {PARAMETERS[1]: 1}}}]
    families = [{"name": "fear-modulation", "parameters": [PARAMETERS[4]], "effects": ["session:arm"]},
                {"name": "top-down", "parameters": [PARAMETERS[1]], "effects": ["session", "session:arm",
                                                                                 "session:clinical"]}]
    tables = analyse_peb(fit.between, fit.grid, contrasts=contrasts, families=families)
    c = tables.contrasts.set_index("name")
    k, j = fit.grid.index("session:arm", PARAMETERS[4])
    assert c.loc["arm-change-B", "mean"] == pytest.approx(fit.between.Ep[k, j])
    assert c.loc["arm-change-B", "p_expected"] > 0.99
    assert 0.05 < c.loc["clinical-top-down", "p_expected"] < 0.95  # no clinical effect planted
    f = tables.families.set_index("family")
    assert f.loc["fear-modulation", "p_with"] > 0.95 and f.loc["top-down", "p_with"] < 0.5
    np.testing.assert_allclose(f["p_with"] + f["p_without"], 1.0)
    assert len(tables.models) == 4 and tables.models["posterior"].sum() == pytest.approx(1.0)


def test_null_study_has_no_strong_covariate_effect():
    data, X, columns = _study(40, session_arm=0.0, seed=12)
    fit = fit_longitudinal_peb(data.qE, data.qC, PE, PC, X, between_columns=columns, parameters=PARAMETERS)
    tables = analyse_peb(fit.between, fit.grid)
    assert (tables.parameters.loc[tables.parameters["effect"] != "mean", "Pp"] < 0.95).all()


def test_spm_within_subject_peb_option_runs_and_is_less_precise(planted):
    data, X, fit = planted
    spm = fit_longitudinal_peb(data.qE, data.qC, PE, PC, X, between_columns=list(fit.grid.between),
                               parameters=PARAMETERS, within="peb", between_components="single", between_hC=1 / 16)
    k, j = fit.grid.index("session:arm", PARAMETERS[4])
    assert spm.between.Ep_sd[k, j] > fit.between.Ep_sd[k, j]
    with pytest.raises(ValueError, match="within must be"):
        fit_longitudinal_peb(data.qE, data.qC, PE, PC, X, between_columns=list(fit.grid.between),
                             parameters=PARAMETERS, within="other")
