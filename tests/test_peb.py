"""Tests of ketflow.dcm.peb on exactly linear-Gaussian synthetic first levels."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from ketflow.dcm.peb import (
    between_subject_design,
    fit_peb,
    peb_conditional,
    peb_leave_one_out,
    precision_components,
    reduce_peb,
)
from ketflow.group.synthetic import synthetic_dcm_posteriors

P = 3
PE = np.zeros(P)
PC = np.eye(P) / 64  # SPM's prior variance of extrinsic DCM connections


def simulate(B, X, seed=0):
    fl = synthetic_dcm_posteriors(B, X, PE, PC, seed=seed)
    return fl.qE, fl.qC, fl.y, fl.lam


def design(n, seed=0):
    rng = np.random.default_rng(seed + 100)
    arm = np.where(np.arange(n) % 2 == 0, 0.5, -0.5)
    clin = rng.normal(size=n)
    clin = (clin - clin.mean()) / clin.std()
    inter = arm * clin
    return np.column_stack([np.ones(n), arm, clin, inter - inter.mean()])


B_TRUE = np.array([[0.10, 0.20, -0.10],    # group mean
                   [-0.15, 0.0, 0.0],      # arm (ketamine − midazolam) on parameter 0
                   [0.0, 0.10, 0.0],       # clinical change (per SD) on parameter 1
                   [0.0, 0.0, 0.0]])       # arm × clinical: none


@pytest.fixture(scope="module")
def effect_fit():
    X = design(40)
    qE, qC, _, _ = simulate(B_TRUE, X, seed=1)
    peb = fit_peb(qE, qC, PE, PC, X, components="all")
    return peb, reduce_peb(peb)


def test_conditional_posterior_equals_closed_form_hierarchical_gls():
    X = design(12, seed=2)
    qE, qC, ys, lams = simulate(B_TRUE, X, seed=2)
    gamma = np.array([0.3, -0.2, 0.1])
    Qs = precision_components(PC, "all")
    Ep, Cp, F, sE, sC = peb_conditional(qE, qC, PE, PC, X, gamma, Qs)
    cov_r = np.linalg.inv(sum(np.exp(g) * Q for g, Q in zip(gamma, Qs)))
    n, K = X.shape
    A = np.vstack([np.kron(X[i][None, :], np.eye(P)) for i in range(n)])
    V = np.zeros((n * P, n * P))
    for i in range(n):
        V[i * P:(i + 1) * P, i * P:(i + 1) * P] = np.linalg.inv(lams[i]) + cov_r
    bE = np.zeros(K * P)
    bE[:P] = PE
    bC = np.kron(np.eye(K), PC)
    prec = A.T @ np.linalg.solve(V, A) + np.linalg.inv(bC)
    mean = np.linalg.solve(prec, A.T @ np.linalg.solve(V, ys.ravel()) + np.linalg.solve(bC, bE))
    np.testing.assert_allclose(Ep.ravel(), mean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(Cp, np.linalg.inv(prec), rtol=1e-8, atol=1e-12)
    log_ev = multivariate_normal(A @ bE, A @ bC @ A.T + V).logpdf(ys.ravel())
    log_ev_first = sum(multivariate_normal(PE, np.linalg.inv(lams[i]) + PC).logpdf(ys[i])
                       for i in range(n))
    assert F == pytest.approx(log_ev - log_ev_first, abs=1e-6)
    # subject 0's empirical-Bayes posterior: its prior is N(A_0 Ep, cov_r) averaged over β
    theta_prec = lams[0] + np.linalg.inv(cov_r)
    assert np.allclose(sC[0], np.linalg.inv(theta_prec))
    np.testing.assert_allclose(sE[0], np.linalg.solve(theta_prec, lams[0] @ ys[0]
                                                      + np.linalg.solve(cov_r, X[0] @ Ep)))


def test_group_effects_recovered_with_right_sign_and_high_pp(effect_fit):
    peb, red = effect_fit
    sd = np.sqrt(np.diag(peb.Cp)).reshape(peb.Ep.shape)
    assert np.all(np.abs(peb.Ep - B_TRUE) < 3.5 * sd)
    assert peb.Ep[1, 0] < 0 and peb.Ep[2, 1] > 0
    assert red.Pp[1, 0] > 0.95 and red.Pp[2, 1] > 0.95
    assert red.Pp[0, 1] > 0.95  # group mean of parameter 1 (0.2)
    null = [(1, 1), (1, 2), (2, 0), (2, 2), (3, 0), (3, 1), (3, 2)]
    assert all(red.Pp[k, p] < 0.5 for k, p in null), red.Pp
    assert red.Ep[1, 0] < 0 and red.Ep[2, 1] > 0
    assert red.best_on[1, 0] and red.best_on[2, 1] and not red.best_on[3].any()
    assert red.posterior.sum() == pytest.approx(1.0)
    # between-subject covariance stays near the simulated pC/16 (log-precision prior hC = 1/16)
    ratio = np.diag(peb.between_covariance) / np.diag(PC / 16)
    assert np.all((ratio > 0.2) & (ratio < 5))


def test_null_effects_have_low_pp():
    X = design(40, seed=3)
    B = B_TRUE.copy()
    B[1:] = 0.0
    qE, qC, _, _ = simulate(B, X, seed=3)
    red = reduce_peb(fit_peb(qE, qC, PE, PC, X))
    assert np.all(red.Pp[1:] < 0.5), red.Pp
    assert red.Pp[0, 1] > 0.95


def test_leave_one_out_predicts_clinical_change():
    n = 20
    X = design(n, seed=4)[:, [0, 2]]
    B = np.array([[0.1, 0.2, -0.1], [0.0, 0.15, 0.0]])
    qE, qC, _, _ = simulate(B, X, seed=4)
    loo = peb_leave_one_out(qE, qC, PE, PC, X, column=1)
    assert loo.r > 0.6 and loo.p < 0.01
    assert np.all(loo.predicted_sd > 0) and np.all(loo.predicted_sd < X[:, 1].std(ddof=1))


def test_input_validation():
    X = design(6)
    qE, qC, _, _ = simulate(B_TRUE, X)
    with pytest.raises(ValueError, match="first design column"):
        fit_peb(qE, qC, PE, PC, X[:, 1:])
    with pytest.raises(ValueError, match="partition"):
        precision_components(PC, [[0, 1]])
    bad = PC.copy()
    bad[2, 2] = 0
    with pytest.raises(ValueError, match="positive definite"):
        fit_peb(qE, qC, PE, bad, X)


def test_between_subject_design():
    X, names = between_subject_design(["k", "m", "k", "k"], ("m", "k"), [10.0, 20.0, 30.0, 40.0],
                                      covariate_name="caps5_change")
    assert names == ["mean", "arm", "caps5_change", "arm:caps5_change"]
    np.testing.assert_allclose(X[:, 0], 1.0)
    np.testing.assert_allclose(X[:, 1:].mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(X[:, 1], [0.25, -0.75, 0.25, 0.25])
    assert X[:, 2].std() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not among arm_levels"):
        between_subject_design(["k", "x"], ("m", "k"))


def test_reduction_keeps_non_candidates_and_averages_consistently(effect_fit):
    peb, red = effect_fit
    keep_means = reduce_peb(peb, candidates=range(P, peb.Ep.size))
    np.testing.assert_allclose(keep_means.Pp[0], 1.0)
    assert keep_means.models[:, :P].all()
    # BMA mean is the model-probability-weighted mean of reduced posteriors: zero where Pp = 0
    off = red.Pp == 0
    np.testing.assert_allclose(red.Ep[off], 0.0, atol=1e-12)
    assert np.all(np.diag(red.Cp) >= -1e-15)
