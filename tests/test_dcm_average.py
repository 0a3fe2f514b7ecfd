"""Bayesian parameter averaging: exact pooled posterior of linear-Gaussian data sets."""

import numpy as np
import pytest

from ketflow.dcm.average import bayesian_parameter_average

P = 4


def _posterior(X, y, noise, pE, pC):
    """Exact posterior of y = X θ + e, e ~ N(0, noise I), θ ~ N(pE, pC) (pC may be singular)."""
    S = X @ pC @ X.T + noise * np.eye(len(y))
    K = pC @ X.T @ np.linalg.inv(S)
    return pE + K @ (y - X @ pE), pC - K @ X @ pC


def _datasets(rng, n_sets=3, n=25):
    theta = np.array([0.4, -0.3, 0.2, 0.0])
    out = []
    for _ in range(n_sets):
        X = rng.standard_normal((n, P))
        out.append((X, X @ theta + 0.5 * rng.standard_normal(n)))
    return out


def test_bpa_equals_the_posterior_of_the_pooled_data():
    rng = np.random.default_rng(0)
    pE, pC = np.array([0.0, 0.0, 0.1, 0.0]), np.diag([1.0, 0.5, 1.0, 0.0])  # last parameter fixed
    sets = _datasets(rng)
    posts = [_posterior(X, y, 0.25, pE, pC) for X, y in sets]
    E, C = bayesian_parameter_average([p[0] for p in posts], [p[1] for p in posts], pE, pC)
    pooled = _posterior(np.vstack([X for X, _ in sets]), np.concatenate([y for _, y in sets]), 0.25, pE, pC)
    np.testing.assert_allclose(E, pooled[0], atol=1e-10)
    np.testing.assert_allclose(C, pooled[1], atol=1e-12)
    assert E[3] == 0.0 and C[3, 3] == 0.0
    # a run with a much less informative posterior counts less than in a plain average
    noisy = _posterior(sets[0][0][:5], sets[0][1][:5] + 3.0, 25.0, pE, pC)
    E2, _ = bayesian_parameter_average([posts[1][0], noisy[0]], [posts[1][1], noisy[1]], pE, pC)
    assert np.abs(E2 - posts[1][0]).max() < np.abs((posts[1][0] + noisy[0]) / 2 - posts[1][0]).max() / 5
    single = bayesian_parameter_average([posts[0][0]], [posts[0][1]], pE, pC)
    np.testing.assert_allclose(single[0], posts[0][0])


def test_bpa_with_data_sets_fitted_under_different_priors():
    """Each data set's likelihood q_i/p_i is used within its own prior's range; the average's prior
    is the mean prior. With a parameter fixed in one data set only, the result equals the exact
    posterior under the mean prior of the data that inform each direction."""
    rng = np.random.default_rng(1)
    pE = np.zeros(P)
    pC1 = np.diag([1.0, 1.0, 1.0, 1.0])
    pC2 = np.diag([1.0, 1.0, 1.0, 0.0])  # parameter 3 fixed in data set 2
    (X1, y1), (X2, y2) = _datasets(rng, 2)
    q1, q2 = _posterior(X1, y1, 0.25, pE, pC1), _posterior(X2, y2, 0.25, pE, pC2)
    E, C = bayesian_parameter_average([q1[0], q2[0]], [q1[1], q2[1]], [pE, pE], [pC1, pC2])
    # exact: prior N(0, mean prior), data set 1 informs all of θ, data set 2 only θ[:3] (with θ3 = 0)
    prior = (pC1 + pC2) / 2
    X2_free = X2.copy()
    X2_free[:, 3] = 0.0
    X = np.vstack([X1, X2_free])
    ref = _posterior(X, np.concatenate([y1, y2]), 0.25, pE, prior)
    np.testing.assert_allclose(E, ref[0], atol=1e-9)
    np.testing.assert_allclose(C, ref[1], atol=1e-10)


def test_bpa_ignores_negative_information():
    pE, pC = np.zeros(2), np.eye(2)
    qE = np.array([[0.5, 0.1], [0.3, -0.2]])
    qC = np.array([np.diag([0.1, 1.2]), np.diag([0.2, 0.5])])  # data set 0: posterior var 1.2 > prior 1
    E, C = bayesian_parameter_average(qE, qC, pE, pC)
    assert C[1, 1] == pytest.approx(0.5)  # only data set 1 informs parameter 1
    assert E[1] == pytest.approx(-0.2)
