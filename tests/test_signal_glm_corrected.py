"""Bias-corrected AR(p) prewhitening (Worsley et al. 2002) in ketflow.signal.glm."""

import numpy as np
import pytest

from ketflow.signal import glm

N_SCANS = 150


def _design(rng, n_nuisance: int = 40) -> np.ndarray:
    """A block regressor (20 s blocks at TR 2 s), smooth nuisance columns (random walks, as motion
    and tissue confounds are), cosines and a constant: shape (150, 1 + n_nuisance + 5)."""
    t = np.arange(N_SCANS)
    block = ((t // 10) % 2).astype(float)
    walks = np.cumsum(rng.standard_normal((N_SCANS, n_nuisance)), axis=0)
    cosines = np.cos(np.pi / N_SCANS * (t[:, None] + 0.5) * np.arange(1, 5))
    return np.column_stack([block, walks, cosines, np.ones(N_SCANS)])


def _ar_noise(rng, n_vox: int, coefs) -> np.ndarray:
    """Stationary AR(p) noise (150, n_vox), unit innovations, 200 burn-in samples."""
    e = rng.standard_normal((N_SCANS + 200, n_vox))
    y = np.zeros_like(e)
    for t in range(len(e)):
        y[t] = e[t] + sum(c * y[t - 1 - i] for i, c in enumerate(coefs) if t - 1 - i >= 0)
    return y[200:]


def _box_mask(n_vox: int):
    mask = np.zeros((20, 20, 20), bool)
    mask.ravel()[:n_vox] = True
    return mask, np.diag([3.0, 3.0, 3.0, 1.0])


def test_corrected_ar2_fit_equals_nilearn_armodel_for_the_same_coefficients(monkeypatch):
    """Given the AR coefficients, whitening, coefficients, dispersion and dof are nilearn's."""
    from nilearn.glm.contrasts import compute_contrast as nl_contrast
    from nilearn.glm.regression import ARModel

    rng = np.random.default_rng(0)
    x = _design(rng, 10)
    y = _ar_noise(rng, 50, (0.4, -0.15)) + x[:, :1] * 0.5
    coefs = np.array([0.37, -0.12])
    monkeypatch.setattr(glm, "_corrected_ar", lambda s, ols, order, smoother: np.tile(coefs, (s["rss"].size, 1)))
    fit = glm.fit_glm(y, x, "ar2-corrected")
    contrast = np.zeros(x.shape[1])
    contrast[0] = 1.0
    ours = glm.compute_contrast(fit, contrast)
    theirs = nl_contrast(np.zeros(y.shape[1]), {0.0: ARModel(x, coefs).fit(y)}, contrast, "t")
    np.testing.assert_allclose(ours.effect, theirs.effect_size().ravel(), rtol=1e-8)
    np.testing.assert_allclose(ours.variance, theirs.effect_variance().ravel(), rtol=1e-8)
    np.testing.assert_allclose(ours.z, theirs.z_score().ravel(), rtol=1e-6, atol=1e-8)
    assert fit.ar.shape == (50, 2) and np.all(fit.rho == 0.37)


def test_bias_correction_recovers_the_noise_autocorrelation():
    rng = np.random.default_rng(1)
    x = _design(rng)
    y = _ar_noise(rng, 3000, (0.4,))
    nilearn_rho = glm.fit_glm(y, x, "ar1").rho.mean()
    corrected = glm.fit_glm(y, x, "ar1-corrected").rho.mean()
    assert nilearn_rho < 0.25  # the residual-forming matrix biases the plain estimate
    assert corrected == pytest.approx(0.4, abs=0.025)
    ar2 = glm.fit_glm(_ar_noise(rng, 3000, (0.5, -0.2)), x, "ar2-corrected").ar.mean(axis=0)
    np.testing.assert_allclose(ar2, (0.5, -0.2), atol=0.03)


def test_corrected_models_calibrate_null_z_where_nilearns_ar1_does_not():
    rng = np.random.default_rng(2)
    x = _design(rng)
    y = _ar_noise(rng, 4000, (0.3,))
    contrast = np.zeros(x.shape[1])
    contrast[0] = 1.0
    mask, affine = _box_mask(y.shape[1])
    smoother = glm.mask_smoother(mask, affine, 15.0)
    sd = {model: glm.compute_contrast(glm.fit_glm(y, x, model, **kw), contrast).z.std()
          for model, kw in (("ar1", {}), ("ar1-corrected", {"smoother": smoother}),
                            ("ar2-corrected", {"smoother": smoother}))}
    assert sd["ar1"] > 1.08
    assert sd["ar1-corrected"] == pytest.approx(1.0, abs=0.04)
    assert sd["ar2-corrected"] == pytest.approx(1.0, abs=0.04)


def test_mask_smoother_keeps_constants_and_stays_in_the_mask():
    mask = np.zeros((12, 10, 8), bool)
    mask[2:9, 1:8, 1:6] = True
    mask[5, 5, 7] = True  # an isolated voxel keeps its own value
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    smooth = glm.mask_smoother(mask, affine, 6.0)
    np.testing.assert_allclose(smooth(np.full(mask.sum(), 0.3)), 0.3)
    values = np.random.default_rng(3).standard_normal(mask.sum())
    assert smooth(values).std() < values.std()
    with pytest.raises(ValueError, match="FWHM"):
        glm.mask_smoother(mask, affine, 0.0)


def test_noise_model_names_are_checked():
    assert glm.parse_noise_model("ar3-corrected") == ("corrected", 3)
    assert glm.parse_noise_model("ar1") == ("ar1", 1)
    with pytest.raises(ValueError, match="noise_model"):
        glm.parse_noise_model("ar2")
    x = _design(np.random.default_rng(4), 2)
    with pytest.raises(ValueError, match="smoother"):
        glm.fit_glm(np.ones((N_SCANS, 3)), x, "ar1", smoother=lambda v: v)
