"""Tests of ketflow.group.predict on synthetic tables with known drivers."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize
from sklearn.linear_model import ElasticNetCV
from sklearn.model_selection import LeaveOneOut
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ketflow.group.predict import (
    ModelSpec,
    design_matrix,
    evaluate,
    evaluate_per_arm,
    fit_model,
    nested_cv_predictions,
    permutation_null,
    permutation_p_value,
    prediction_scores,
    selection_frequencies,
)
from ketflow.group.synthetic import ARMS, synthetic_change_table as synthetic_table

OUTCOME = "caps5_total__change"


def _features(table):
    return tuple(c for c in table.columns if c.startswith("f"))


def _cheap(table, **kw):
    """Spec with a small penalty search for fast tests."""
    return ModelSpec(OUTCOME, _features(table), l1_ratios=(0.5, 1.0), n_alphas=20, inner_folds=5, **kw)


@pytest.fixture(scope="module")
def table():
    return synthetic_table()


@pytest.fixture(scope="module")
def report(table):
    return evaluate(table, _cheap(table), outer_folds=5, n_permutations=60, n_bootstrap=300,
                    n_selection_bootstrap=40, seed=1)


def test_reference_model_equals_direct_sklearn_fit():
    """The packaged grid with scikit-learn's default tolerance: same penalty, coefficients equal to
    that tolerance (tests/test_elasticnet.py compares at a tight tolerance, to 1e-6)."""
    table = synthetic_table(n=30, p=10, seed=3)
    spec = ModelSpec(OUTCOME, _features(table))  # leave-one-out, default grid
    fit = fit_model(table, spec)
    X, y = table[list(_features(table))].to_numpy(), table[OUTCOME].to_numpy()
    direct = Pipeline([("scale", StandardScaler()),
                       ("enet", ElasticNetCV(l1_ratio=[0.1, 0.5, 0.7, 0.9, 0.95, 0.99, 1.0],
                                             alphas=100, cv=LeaveOneOut(), max_iter=10000))]).fit(X, y)
    np.testing.assert_allclose(fit.coefficients["coef_std"], direct[-1].coef_, atol=1e-3 * np.abs(y).max())
    assert fit.alpha == pytest.approx(direct[-1].alpha_, rel=1e-12) and fit.l1_ratio == direct[-1].l1_ratio_
    manual = X @ fit.coefficients["coef"].to_numpy() + fit.intercept
    np.testing.assert_allclose(manual, fit.predict(X), rtol=1e-12)
    np.testing.assert_allclose(manual, direct.predict(X), atol=1e-3 * np.abs(y).max())


def test_true_drivers_retained_with_right_sign(report):
    coefs = report.fit.coefficients
    assert coefs.loc["f00__change", "coef"] > 0 and coefs.loc["f01__change", "coef"] < 0
    sel = report.selection
    assert sel.loc["f00__change", "frequency"] >= 0.9 and sel.loc["f00__change", "positive"] == 1
    assert sel.loc["f01__change", "frequency"] >= 0.9 and sel.loc["f01__change", "positive"] == 0
    noise = sel.drop(["f00__change", "f01__change", "f02__change"])["frequency"]
    assert noise.mean() < 0.6


def test_nested_cv_beats_permutation_null(report):
    assert report.scores["r2"] > 0.15 and report.scores["r"] > 0.4
    assert report.p_values["r2"] < 0.05 and report.p_values["r"] < 0.05
    assert report.null["r2"].median() < 0.05
    lo, hi = report.intervals["r2"]
    assert lo < report.scores["r2"] < hi
    assert report.predictions.shape == (1, 60) and not np.isnan(report.predictions).any()


def test_null_outcome_is_not_significant():
    rng = np.random.default_rng(5)
    table = synthetic_table(n=40, p=10, seed=5)
    table[OUTCOME] = rng.normal(size=40)
    rep = evaluate(table, _cheap(table), outer_folds=5, n_permutations=40, n_bootstrap=100,
                   n_selection_bootstrap=0, seed=2)
    assert rep.p_values["r2"] > 0.05 and rep.scores["r2"] < 0.1


@pytest.mark.parametrize("strength, present", [(1.0, True), (0.0, False)])
def test_arm_interaction_detected_only_when_present(strength, present):
    table = synthetic_table(interaction=strength)
    spec = _cheap(table, arm="arm", arm_levels=ARMS, arm_interactions=True)
    design = design_matrix(table, spec)
    sel = selection_frequencies(design, spec, n_bootstrap=30, seed=0)
    coef = fit_model(table, spec).coefficients.loc["arm:f02__change", "coef"]
    if present:
        assert sel.loc["arm:f02__change", "frequency"] >= 0.9 and coef > 0
        assert sel.loc["arm:f02__change", "positive"] == 1
    else:
        assert sel.loc["arm:f02__change", "frequency"] < 0.5 and abs(coef) < 1


def test_unpenalised_covariates_match_direct_partial_penalty():
    """At the chosen penalty, the covariate is unpenalised: the fit minimises the elastic-net loss
    with [1, age] free (direct numerical minimisation on the same scaling)."""
    table = synthetic_table(n=40, p=5, seed=7)
    table[OUTCOME] += 0.5 * table["age"]
    spec = ModelSpec(OUTCOME, _features(table), covariates=("age",), l1_ratios=(0.7,), n_alphas=30)
    fit = fit_model(table, spec)
    design = design_matrix(table, spec)
    X, y = design.X, design.y
    alpha, l1 = fit.alpha, fit.l1_ratio
    Z = np.column_stack([np.ones(40), X[:, 5]])
    P = X[:, :5]
    resid = P - Z @ np.linalg.lstsq(Z, P, rcond=None)[0]
    s = resid.std(axis=0)
    Ps = P / s

    def loss(w):
        g, u, v = w[:2], w[2:7], w[7:]
        b = u - v
        r = y - Z @ g - Ps @ b
        return r @ r / 80 + alpha * (l1 * np.sum(u + v) + (1 - l1) / 2 * b @ b)

    w0 = np.zeros(12)
    bounds = [(None, None)] * 2 + [(0, None)] * 10
    sol = minimize(loss, w0, method="L-BFGS-B", bounds=bounds, options={"ftol": 1e-15, "gtol": 1e-10,
                                                                          "maxiter": 20000})
    b = (sol.x[2:7] - sol.x[7:]) / s
    coef = fit.coefficients["coef"].to_numpy()
    np.testing.assert_allclose(coef[:5], b, atol=2e-3)
    np.testing.assert_allclose(coef[5], sol.x[1], atol=2e-3)
    assert loss(np.r_[fit.intercept, coef[5], np.maximum(coef[:5] * s, 0), np.maximum(-coef[:5] * s, 0)]) <= \
        sol.fun + 1e-9  # ours is at least as good as the numerical minimum
    assert coef[5] == pytest.approx(0.5, abs=0.3)  # the true age effect, unpenalised


def test_forced_covariates_in_fit_and_freedman_lane_null():
    table = synthetic_table(n=40, p=6, seed=8)
    table[OUTCOME] += 2.0 * table["age"]
    spec = _cheap(table, covariates=("age",))
    fit = fit_model(table, spec)
    assert not fit.coefficients.loc["age", "penalised"] and fit.coefficients.loc["age", "retained"]
    assert fit.coefficients.loc["age", "coef"] == pytest.approx(2.0, abs=0.5)
    design = design_matrix(table, spec)
    null = permutation_null(design, spec, n_permutations=5, outer_folds=5, seed=0)
    # the covariate's predictive value survives Freedman-Lane permutation
    assert null["r2"].min() > 0.3


def test_deterministic_given_seed_and_independent_of_n_jobs(table):
    spec = _cheap(table)
    design = design_matrix(table, spec)
    a = permutation_null(design, spec, n_permutations=4, outer_folds=5, seed=3, n_jobs=1)
    b = permutation_null(design, spec, n_permutations=4, outer_folds=5, seed=3, n_jobs=2)
    pd.testing.assert_frame_equal(a, b)
    p1 = nested_cv_predictions(design, spec, outer_folds=4, outer_repeats=2, seed=3)
    p2 = nested_cv_predictions(design, spec, outer_folds=4, outer_repeats=2, seed=3)
    np.testing.assert_array_equal(p1, p2)
    assert p1.shape == (2, 60)
    c = permutation_null(design, spec, n_permutations=4, outer_folds=5, seed=4)
    assert not a.equals(c)


def test_per_arm_models_recover_opposite_slopes(table):
    spec = dataclasses.replace(_cheap(table), arm="arm")
    reps = evaluate_per_arm(table, spec, outer_folds=5, n_permutations=0, n_bootstrap=50,
                            n_selection_bootstrap=0)
    assert set(reps) == set(ARMS)
    assert reps["ketamine"].fit.coefficients.loc["f02__change", "coef"] > 0
    assert reps["midazolam"].fit.coefficients.loc["f02__change", "coef"] < 0
    assert reps["ketamine"].settings["n_subjects"] == 30


def test_prediction_scores():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert prediction_scores(y, y) == {"r2": 1.0, "r": pytest.approx(1.0)}
    s = prediction_scores(y, np.full(4, 2.5))
    assert s["r2"] == 0.0 and s["r"] == 0.0


def test_spec_and_design_validation(table):
    with pytest.raises(ValueError, match="arm_levels"):
        ModelSpec(OUTCOME, ("f00__change",), arm="arm", arm_interactions=True)
    with pytest.raises(ValueError, match="no column 'nope'"):
        design_matrix(table, ModelSpec(OUTCOME, ("nope",)))
    with pytest.raises(ValueError, match="not among arm_levels"):
        design_matrix(table, ModelSpec(OUTCOME, ("f00__change",), arm="arm", include_arm=True,
                                       arm_levels=("placebo", "ketamine")))
    d = design_matrix(table, ModelSpec(OUTCOME, ("f00__change",), arm="arm", include_arm=True,
                                       arm_levels=ARMS, arm_coding="dummy"))
    assert set(d.X[:, 1]) == {0.0, 1.0}
    assert d.X[table["arm"].to_numpy() == "ketamine", 1].min() == 1.0


def test_permutation_p_value():
    null = np.array([0.1, 0.5, 0.2, 0.6, 0.7, 0.0, 0.9])
    assert permutation_p_value(null, 0.55) == pytest.approx((1 + 3) / 8)
    assert permutation_p_value(null, 1.0) == pytest.approx(1 / 8)


def test_observed_and_permuted_outcomes_share_one_nested_cv(table):
    """The permutation null computed alone equals the null columns of evaluate's joint batch."""
    spec = _cheap(table)
    design = design_matrix(table, spec)
    alone = permutation_null(design, spec, n_permutations=6, outer_folds=5, seed=2)
    joint = evaluate(table, spec, outer_folds=5, n_permutations=6, n_bootstrap=10, n_selection_bootstrap=0, seed=2)
    pd.testing.assert_frame_equal(alone, joint.null, rtol=1e-9)
    single = nested_cv_predictions(design, spec, outer_folds=5, seed=2)
    np.testing.assert_allclose(joint.predictions, single, rtol=1e-9)


def test_resampling_penalty_search_is_separate_from_the_reported_fit():
    table = synthetic_table(n=20, p=4, seed=4)
    spec = ModelSpec(OUTCOME, _features(table), l1_ratios=(0.5, 1.0), n_alphas=10)
    same = evaluate(table, spec, outer_folds=5, n_permutations=0, n_bootstrap=10, n_selection_bootstrap=0)
    kfold = evaluate(table, spec, inner_folds=3, outer_folds=5, n_permutations=0, n_bootstrap=10,
                     n_selection_bootstrap=0)
    pd.testing.assert_frame_equal(same.fit.coefficients, kfold.fit.coefficients)  # LOO refit either way
    assert same.settings["inner_cv"] == "leave-one-out" and kfold.settings["inner_cv"].startswith("3-fold")
    assert not np.allclose(same.predictions, kfold.predictions)
    # outer K >= n is leave-one-out
    small, cheap = table.iloc[:12], dataclasses.replace(spec, inner_folds=3)
    loo = nested_cv_predictions(design_matrix(small, cheap), cheap, outer_folds=50)
    np.testing.assert_allclose(loo, nested_cv_predictions(design_matrix(small, cheap), cheap, outer_folds=None))
