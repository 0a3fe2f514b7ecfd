"""Bayesian model reduction is exact for linear-Gaussian models."""

import numpy as np
import pytest

from ketflow.dcm.bmr import bayesian_model_reduction


def _log_evidence(y, X, pE, pC, noise_var):
    """Exact log p(y) for y = X θ + e, θ ~ N(pE, pC), e ~ N(0, noise_var I)."""
    cov = X @ pC @ X.T + noise_var * np.eye(y.size)
    r = y - X @ pE
    sign, logdet = np.linalg.slogdet(cov)
    assert sign > 0
    return -0.5 * (r @ np.linalg.solve(cov, r) + logdet + y.size * np.log(2 * np.pi))


def _posterior(y, X, pE, pC, noise_var):
    """Exact posterior mean and covariance (allows singular pC)."""
    K = pC @ X.T @ np.linalg.inv(X @ pC @ X.T + noise_var * np.eye(y.size))
    qE = pE + K @ (y - X @ pE)
    qC = pC - K @ X @ pC
    return qE, (qC + qC.T) / 2


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    n, k = 40, 6
    X = rng.standard_normal((n, k))
    theta = np.array([1.0, -0.5, 0.0, 0.3, 0.0, 2.0])
    y = X @ theta + 0.5 * rng.standard_normal(n)
    pE = np.array([0.1, 0.0, 0.0, -0.2, 0.0, 0.0])
    L = rng.standard_normal((k, k))
    pC = L @ L.T / k + np.eye(k)
    pC[4, :] = pC[:, 4] = 0.0  # parameter 5 fixed in the full model
    return y, X, pE, pC, 0.25


def test_switch_off_parameters_matches_refit(problem):
    y, X, pE, pC, s2 = problem
    qE, qC = _posterior(y, X, pE, pC, s2)
    F_full = _log_evidence(y, X, pE, pC, s2)
    rE, rC = pE.copy(), pC.copy()
    for j in (2, 3):  # switch off two correlated parameters at nonzero values
        rC[j, :] = rC[:, j] = 0.0
    rE[3] = 0.7
    dF, sE, sC = bayesian_model_reduction(qE, qC, pE, pC, rE, rC)
    F_red = _log_evidence(y, X, rE, rC, s2)
    sE_ref, sC_ref = _posterior(y, X, rE, rC, s2)
    assert dF == pytest.approx(F_red - F_full, abs=1e-8)
    np.testing.assert_allclose(sE, sE_ref, atol=1e-9)
    np.testing.assert_allclose(sC, sC_ref, atol=1e-9)
    assert sC[2, 2] == pytest.approx(0.0, abs=1e-15) and sE[3] == pytest.approx(0.7)


def test_shrunk_prior_matches_refit(problem):
    y, X, pE, pC, s2 = problem
    qE, qC = _posterior(y, X, pE, pC, s2)
    F_full = _log_evidence(y, X, pE, pC, s2)
    rE = pE + np.array([0.2, 0.0, -0.1, 0.0, 0.0, 0.3])
    rC = pC * 0.3
    dF, sE, sC = bayesian_model_reduction(qE, qC, pE, pC, rE, rC)
    F_red = _log_evidence(y, X, rE, rC, s2)
    sE_ref, sC_ref = _posterior(y, X, rE, rC, s2)
    assert dF == pytest.approx(F_red - F_full, abs=1e-8)
    np.testing.assert_allclose(sE, sE_ref, atol=1e-9)
    np.testing.assert_allclose(sC, sC_ref, atol=1e-9)


def test_identical_prior_gives_zero(problem):
    y, X, pE, pC, s2 = problem
    qE, qC = _posterior(y, X, pE, pC, s2)
    dF, sE, sC = bayesian_model_reduction(qE, qC, pE, pC, pE, pC)
    assert dF == pytest.approx(0.0, abs=1e-10)
    np.testing.assert_allclose(sE, qE, atol=1e-10)
    np.testing.assert_allclose(sC, qC, atol=1e-10)


def test_freeing_a_fixed_parameter_is_rejected(problem):
    y, X, pE, pC, s2 = problem
    qE, qC = _posterior(y, X, pE, pC, s2)
    rC = pC.copy()
    rC[4, 4] = 1.0
    with pytest.raises(ValueError):
        bayesian_model_reduction(qE, qC, pE, pC, pE, rC)
