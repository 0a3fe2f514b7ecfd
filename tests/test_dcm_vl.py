"""Variational Laplace core: exact on linear-Gaussian models; regularised Gauss-Newton step."""

import numpy as np
import pytest
from scipy.linalg import expm

from ketflow.dcm.vl import _regularised_step, variational_laplace


def test_regularised_step_is_the_matrix_exponential_update():
    rng = np.random.default_rng(0)
    L = rng.standard_normal((5, 5))
    H = -(L @ L.T + np.eye(5))
    g = rng.standard_normal(5)
    for v in (-4.0, 0.0, 4.0):
        t = np.exp(v - np.log(np.abs(np.linalg.eigvalsh(H))).sum() / 5)
        aug = np.zeros((6, 6))
        aug[1:, 0] = t * g
        aug[1:, 1:] = t * H
        np.testing.assert_allclose(_regularised_step(H, g, v), expm(aug)[1:, 0], rtol=1e-9, atol=1e-12)
    # a very light regularisation is a Newton step
    np.testing.assert_allclose(_regularised_step(H, g, 40.0), -np.linalg.solve(H, g), rtol=1e-9)


def test_linear_gaussian_model_gives_exact_posterior_and_evidence():
    rng = np.random.default_rng(1)
    n, k = 120, 4
    X = rng.standard_normal((n, k))
    pE = np.array([0.0, 0.5, 0.0, -0.2])
    pV = np.array([1.0, 0.5, 2.0, 0.0])  # last parameter fixed
    theta = np.array([0.8, -0.4, 1.5, -0.2])
    sigma2 = 0.3
    y = (X @ theta + np.sqrt(sigma2) * rng.standard_normal(n))[:, None]

    def predict(thetas):
        return (thetas @ X.T)[:, :, None]

    # hyperprior pinned at the true noise precision: the model is linear-Gaussian
    post = variational_laplace(y, predict, pE, pV, hE=-np.log(sigma2), hC=1e-10, maxit=64)
    pC = np.diag(pV)
    S = X @ pC @ X.T + sigma2 * np.eye(n)
    K = pC @ X.T @ np.linalg.inv(S)
    qE = pE + K @ (y[:, 0] - X @ pE)
    qC = pC - K @ X @ pC
    r = y[:, 0] - X @ pE
    log_evidence = -0.5 * (r @ np.linalg.solve(S, r) + np.linalg.slogdet(S)[1] + n * np.log(2 * np.pi))
    assert post.converged
    np.testing.assert_allclose(post.Ep, qE, atol=1e-6)
    np.testing.assert_allclose(post.Cp, qC, atol=1e-8)
    assert post.F == pytest.approx(log_evidence, abs=1e-3)
    assert post.Eh[0] == pytest.approx(-np.log(sigma2), abs=1e-6)


def test_ar1_noise_gives_the_exact_posterior_and_evidence_of_the_correlated_model():
    """With known AR(1) noise correlations (one per response column), the posterior and F are
    those of the linear-Gaussian model with covariance exp(-h) R(rho) per column: the
    Prais-Winsten whitening and its log-determinant are exact."""
    from scipy.linalg import block_diag, toeplitz

    rng = np.random.default_rng(3)
    n, k = 80, 3
    X = rng.standard_normal((n, k))
    pE, pV = np.zeros(k), np.array([1.0, 2.0, 0.5])
    theta = np.array([0.7, -1.0, 0.3])
    sigma2, rho = np.array([0.2, 0.5]), np.array([0.6, 0.3])
    R = [toeplitz(r ** np.arange(n)) for r in rho]
    noise = np.column_stack([np.linalg.cholesky(s2 * Rr) @ rng.standard_normal(n) for s2, Rr in zip(sigma2, R)])
    # two responses sharing the parameters: response j is X @ theta scaled by j + 1
    y = np.column_stack([X @ theta, 2 * X @ theta]) + noise

    def predict(thetas):
        base = thetas @ X.T
        return np.stack([base, 2 * base], axis=-1)

    post = variational_laplace(y, predict, pE, pV, hE=-np.log(sigma2), hC=1e-10, maxit=64, noise_ar1=rho)
    G = np.vstack([X, 2 * X])  # stacked response columns
    pC = np.diag(pV)
    S = G @ pC @ G.T + block_diag(*(s2 * Rr for s2, Rr in zip(sigma2, R)))
    K = pC @ G.T @ np.linalg.inv(S)
    yv = y.T.ravel()
    log_evidence = -0.5 * (yv @ np.linalg.solve(S, yv) + np.linalg.slogdet(S)[1] + 2 * n * np.log(2 * np.pi))
    assert post.converged
    np.testing.assert_allclose(post.Ep, K @ yv, atol=1e-6)
    np.testing.assert_allclose(post.Cp, pC - K @ G @ pC, atol=1e-8)
    assert post.F == pytest.approx(log_evidence, abs=1e-3)
    with pytest.raises(ValueError, match="noise_ar1"):
        variational_laplace(y, predict, pE, pV, noise_ar1=[0.5, 1.0])


def test_divergent_predictions_are_rejected_without_nan_or_warnings():
    """Parameter sets whose 'integration' overflows (θ ≥ 2.9 here, inf and NaN) are rejected like
    SPM's step rejection: the data pull θ to 3.0, beyond the wall, so steps and finite-difference
    perturbations cross it; no NaN reaches the posterior and no floating-point warning escapes."""
    t = np.linspace(0.0, 1.0, 60)
    rng = np.random.default_rng(2)
    y = (np.exp(3.0 * t) + 0.05 * rng.standard_normal(t.size))[:, None]

    def predict(thetas):
        th = thetas[:, :1]
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.where(th < 2.9, np.exp(th * t[None, :]), np.inf)
        out[:, 5] = np.where(th[:, 0] < 2.9, out[:, 5], np.nan)
        return out[:, :, None]

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        post = variational_laplace(y, predict, np.array([0.0]), np.array([16.0]), hE=4.0, hC=1.0, maxit=64)
    assert np.all(np.isfinite(post.Ep)) and np.all(np.isfinite(post.Cp)) and np.isfinite(post.F)
    assert 2.85 < post.Ep[0] < 2.9


def _m_step_gradient(post, y, X, hE, hC):
    """dF/dh of the mean-field objective at the returned posterior (zero at the M-step optimum)."""
    e = y[:, 0] - X @ post.Ep
    residual = e @ e + np.trace(post.Cp @ X.T @ X)
    return y.shape[0] / 2 - np.exp(post.Eh[0]) * residual / 2 - (post.Eh[0] - hE) / hC


def test_newton_m_step_converges_where_spm_fisher_steps_oscillate():
    """Noise variance 1 against SPM's hyperprior (noise variance e^-6, hC = 1/128): the clipped
    Fisher-scoring steps of SPM oscillate and leave h off its optimum; the Newton M-step finds it,
    and F is higher."""
    rng = np.random.default_rng(3)
    n = 150
    X = rng.standard_normal((n, 3))
    y = (X @ np.array([0.5, -0.3, 0.2]) + rng.standard_normal(n))[:, None]

    def predict(thetas):
        return (thetas @ X.T)[:, :, None]

    kw = dict(hE=6.0, hC=1 / 128, maxit=64)
    fisher = variational_laplace(y, predict, np.zeros(3), np.ones(3), m_step="fisher", **kw)
    newton = variational_laplace(y, predict, np.zeros(3), np.ones(3), m_step="newton", **kw)
    assert abs(_m_step_gradient(newton, y, X, 6.0, 1 / 128)) < 1e-3
    assert abs(_m_step_gradient(fisher, y, X, 6.0, 1 / 128)) > 1.0
    assert newton.F > fisher.F
    with pytest.raises(ValueError, match="m_step"):
        variational_laplace(y, predict, np.zeros(3), np.ones(3), m_step="em")
