"""Tests of ketflow.dcm.peb on exactly linear-Gaussian synthetic first levels.

The default scheme is SPM12's (``method="spm"``; equality with SPM's own outputs is tested in
test_peb_spm_reference.py); the exact-in-β scheme (``method="exact"``) is tested where its
closed form applies. The second-level reductions use ``greedy="subsets"`` where a test asks for
the recovery of every true effect: SPM's shortcut (``greedy="spm"``) can prune a true effect
together with many absent ones (docs/dcm.md), which ``test_spm_shortcut_documented`` records.
"""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from ketflow.dcm.peb import between_subject_design, fit_peb, peb_conditional, precision_components
from ketflow.dcm.peb_loo import peb_leave_one_out
from ketflow.dcm.peb_reduce import reduce_peb
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


@pytest.fixture(scope="module", params=["spm", "exact"])
def effect_fit(request):
    X = design(40)
    qE, qC, _, _ = simulate(B_TRUE, X, seed=1)
    peb = fit_peb(qE, qC, PE, PC, X, components="all", method=request.param)
    return peb, reduce_peb(peb, greedy="subsets")


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
    peb = fit_peb(qE, qC, PE, PC, X)
    red = reduce_peb(peb)
    assert np.all(red.Pp[1:] < 0.5), red.Pp
    assert red.Pp[0, 1] > 0.95
    means = reduce_peb(peb, search="mean")  # the group mean scored on its own
    assert means.Pp[0, 1] > 0.95 and np.all(means.Pp[1:] == 1.0)


def test_interaction_that_is_present_is_detected():
    """arm × clinical change on parameter 2 (the effect the reference study's design asks about)."""
    X = design(40, seed=5)
    B = B_TRUE.copy()
    B[3, 2] = 0.3
    qE, qC, _, _ = simulate(B, X, seed=5)
    peb = fit_peb(qE, qC, PE, PC, X, components="all")
    red = reduce_peb(peb)
    sd = np.sqrt(np.diag(peb.Cp)).reshape(peb.Ep.shape)
    assert abs(peb.Ep[3, 2] - 0.3) < 3 * sd[3, 2] and peb.Ep[3, 2] > 0
    assert red.Pp[3, 2] > 0.95 and red.Ep[3, 2] > 0.15
    assert red.Pp[3, 0] < 0.5 and red.Pp[3, 1] < 0.5


def test_group_mean_is_kept_unless_searched():
    X = design(30, seed=6)
    B = B_TRUE.copy()
    B[0] = [0.0, 0.0, 0.02]  # no or weak group means: a joint search would prune them
    qE, qC, _, _ = simulate(B, X, seed=6)
    peb = fit_peb(qE, qC, PE, PC, X)
    red = reduce_peb(peb, search="covariates")
    np.testing.assert_array_equal(red.Pp[0], 1.0)
    assert red.models[:, :P].all()
    joint = reduce_peb(peb)  # SPM's default: every parameter, the group mean included
    np.testing.assert_array_equal(joint.Pp, reduce_peb(peb, search="all").Pp)
    assert joint.Pp[0, 0] < 0.5
    with pytest.raises(ValueError, match="search"):
        reduce_peb(peb, search="nothing")


def _first_level_under(prior_cov, theta, lam, rng):
    """Exact posterior under N(0, prior_cov) (possibly singular) of y ~ N(θ, lam⁻¹)."""
    y = rng.multivariate_normal(theta, np.linalg.inv(lam))
    S = np.linalg.inv(lam) + prior_cov
    K = prior_cov @ np.linalg.inv(S)
    return K @ y, prior_cov - K @ prior_cov, y


def test_subject_specific_priors_equal_exact_hierarchical_model():
    """Some subjects have parameter 2 fixed by their first-level prior (as a projected or
    switched-off prior would): PEB must reduce each subject under its own prior, and equal the
    exact linear-Gaussian hierarchical model in which those subjects say nothing about parameter 2."""
    rng = np.random.default_rng(7)
    n = 16
    X = design(n, seed=7)[:, :2]
    B = B_TRUE[:2]
    cov_r = PC / 16
    lam = np.eye(P) * 200.0
    pCs, qEs, qCs, ys = [], [], [], []
    for i in range(n):
        pC_i = PC.copy()
        if i % 3 == 0:
            pC_i[2, 2] = 0.0
        theta = X[i] @ B + rng.multivariate_normal(np.zeros(P), cov_r)
        q, c, y = _first_level_under(pC_i, theta, lam, rng)
        pCs.append(pC_i), qEs.append(q), qCs.append(c), ys.append(y)
    pEs = np.zeros((n, P))
    Qs = precision_components(PC, "single")
    Ep, Cp, F, sE, sC = peb_conditional(np.array(qEs), np.array(qCs), pEs, np.array(pCs), X, [np.log(1.0)], Qs)
    # exact: y_i (restricted to subject i's free parameters) ~ N(S_i X_i β, S_i (cov_r + lam⁻¹) S_iᵀ)
    ref_C = np.mean(pCs, axis=0)
    rows, covs, obs = [], [], []
    for i in range(n):
        free = np.flatnonzero(np.diag(pCs[i]) > 0)
        A = np.kron(X[i][None, :], np.eye(P))[free]
        rows.append(A)
        covs.append((np.linalg.inv(Qs[0]) + np.linalg.inv(lam))[np.ix_(free, free)])
        obs.append(ys[i][free])
    from scipy.linalg import block_diag

    A, V, yv = np.vstack(rows), block_diag(*covs), np.concatenate(obs)
    b_prec = np.kron(np.eye(2), np.linalg.inv(ref_C))
    prec = A.T @ np.linalg.solve(V, A) + b_prec
    mean = np.linalg.solve(prec, A.T @ np.linalg.solve(V, yv))
    np.testing.assert_allclose(Ep.ravel(), mean, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(Cp, np.linalg.inv(prec), rtol=1e-7, atol=1e-12)
    # fixed parameters stay at their first-level prior mean in the empirical-Bayes posteriors
    assert np.all(sE[::3, 2] == 0.0) and np.all(sC[::3, 2, 2] == 0.0)
    # with the shared prior per subject, the result is that of the shared prior
    peb_shared = fit_peb(np.array(qEs)[1::3], np.array(qCs)[1::3], PE, PC, X[1::3])
    peb_list = fit_peb(np.array(qEs)[1::3], np.array(qCs)[1::3], pEs[1::3], np.array(pCs)[1::3], X[1::3])
    np.testing.assert_allclose(peb_list.Ep, peb_shared.Ep, atol=1e-10)
    fit = fit_peb(np.array(qEs), np.array(qCs), pEs, np.array(pCs), X)
    loo = peb_leave_one_out(np.array(qEs), np.array(qCs), pEs, np.array(pCs), X, column=1)
    assert np.all(np.isfinite(fit.Ep)) and np.all(np.isfinite(loo.predicted_mean))


def test_leave_one_out_predicts_clinical_change():
    n = 20
    X = design(n, seed=4)[:, [0, 2]]
    B = np.array([[0.1, 0.2, -0.1], [0.0, 0.15, 0.0]])
    qE, qC, _, _ = simulate(B, X, seed=4)
    loo = peb_leave_one_out(qE, qC, PE, PC, X, column=1)
    assert loo.r > 0.6 and loo.p < 0.01
    assert loo.levels.size == 0  # a continuous column: no level probabilities
    # SPM's prior of the predicted value has variance 4 var(x) + 1 (exp(-3) after refinement)
    assert np.all(loo.predicted_sd > 0) and np.all(loo.predicted_sd < np.sqrt(4 * X[:, 1].var(ddof=1)))
    exact = peb_leave_one_out(qE, qC, PE, PC, X, column=1, method="exact")
    assert exact.r > 0.6 and exact.p < 0.01
    assert np.all(exact.predicted_sd > 0) and np.all(exact.predicted_sd < X[:, 1].std(ddof=1))


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
    # (exactly for the exact reduction; SPM's leaves a prior variance of 1e-8 there)
    off = red.Pp == 0
    atol = 1e-5 if peb.method == "spm" else 1e-12
    np.testing.assert_allclose(red.Ep[off], 0.0, atol=atol)
    assert np.all(np.diag(red.Cp) >= -1e-15)


def test_spm_shortcut_documented():
    """SPM's greedy shortcut prunes the true arm effect (z ≈ 3.4) of the effect data set with its
    seven absent covariate effects at once (docs/dcm.md); scoring the subsets keeps it."""
    X = design(40)
    qE, qC, _, _ = simulate(B_TRUE, X, seed=1)
    peb = fit_peb(qE, qC, PE, PC, X, components="all")
    assert abs(peb.Ep[1, 0] / peb.Ep_sd[1, 0]) > 3
    assert reduce_peb(peb).Pp[1, 0] == 0.0
    assert reduce_peb(peb, greedy="subsets").Pp[1, 0] > 0.95
