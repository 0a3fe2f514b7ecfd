"""Voxelwise GLM against nilearn FirstLevelModel (OLS and AR(1)), fixed effects, ROI contrasts."""

import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.glm import compute_fixed_effects
from nilearn.glm.first_level import FirstLevelModel, mean_scaling
from nilearn.maskers import NiftiMasker

from ketflow.signal.design import contrast_vector, make_task_design
from ketflow.signal.glm import compute_contrast, fit_glm, fixed_effects, roi_contrasts, t_to_z

TR, N = 2.0, 120
SHAPE = (7, 6, 5)


def _events(shift):
    types = ["fearful", "neutral", "shapes"] * 4
    return pd.DataFrame({"onset": shift + 18.0 * np.arange(12), "duration": 12.0, "trial_type": types})


def _run(seed, shift=6.0):
    rng = np.random.default_rng(seed)
    conf = pd.DataFrame({"motion": np.cumsum(rng.standard_normal(N)) * 0.1})
    design = make_task_design(
        _events(shift), TR, N, ["fearful", "neutral", "shapes"], start_time=1.0, confounds=conf
    )
    x = design.matrix.to_numpy()
    n_vox = int(np.prod(SHAPE))
    rho = rng.uniform(-0.1, 0.7, n_vox)
    e = rng.standard_normal((N, n_vox)) * 5
    noise = np.empty_like(e)
    noise[0] = e[0]
    for t in range(1, N):
        noise[t] = rho * noise[t - 1] + e[t]
    betas = rng.standard_normal((3, n_vox)) * np.array([[8.0], [4.0], [0.0]])
    y = 800 + x[:, :3] @ betas + noise
    img = nib.Nifti1Image(y.T.reshape(*SHAPE, N).astype(np.float32), np.diag([3.0, 3, 3, 1]))
    return design, img


@pytest.fixture(scope="module")
def mask():
    data = np.ones(SHAPE, np.uint8)
    data[0, 0, 0] = 0
    return nib.Nifti1Image(data, np.diag([3.0, 3, 3, 1]))


@pytest.mark.parametrize("noise_model", ["ols", "ar1"])
def test_equals_nilearn_first_level_model(noise_model, mask):
    design, img = _run(1)
    con = contrast_vector("fearful - neutral", design)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flm = FirstLevelModel(t_r=TR, mask_img=mask, noise_model=noise_model, minimize_memory=False)
        flm.fit(img, design_matrices=design.matrix)
        ref = flm.compute_contrast(con, output_type="all")
        y = flm.masker_.transform(img)
    y, _ = mean_scaling(y)
    fit = fit_glm(y, design.matrix.to_numpy(), noise_model)
    res = compute_contrast(fit, con)
    if noise_model == "ar1":
        np.testing.assert_array_equal(fit.rho, flm.labels_[0].astype(float))
        assert np.unique(fit.rho).size > 10
    for key, ours in [
        ("effect_size", res.effect),
        ("effect_variance", res.variance),
        ("stat", res.t),
        ("z_score", res.z),
    ]:
        theirs = flm.masker_.transform(ref[key]).ravel()
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5 * np.abs(theirs).max())


def test_fixed_effects_equal_nilearn(mask):
    effects, variances, dofs = [], [], []
    for seed in (2, 3):
        design, img = _run(seed, shift=4.0 + seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y = NiftiMasker(mask, standardize=None).fit().transform(img)
        y, _ = mean_scaling(y)
        fit = fit_glm(y, design.matrix.to_numpy())
        res = compute_contrast(fit, contrast_vector({"fearful": 1}, design))
        effects.append(res.effect)
        variances.append(res.variance)
        dofs.append(fit.dof)
    ours = fixed_effects(np.array(effects), np.array(variances), dofs)
    masker = NiftiMasker(mask, standardize=None).fit()
    imgs = [masker.inverse_transform(e) for e in effects]
    vimgs = [masker.inverse_transform(v) for v in variances]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        con, var, stat, z = compute_fixed_effects(imgs, vimgs, mask, precision_weighted=True, dofs=dofs)
    for ours_map, img in [(ours.effect, con), (ours.variance, var), (ours.t, stat), (ours.z, z)]:
        theirs = masker.transform(img).ravel()
        np.testing.assert_allclose(ours_map, theirs, rtol=1e-5, atol=1e-6 * np.abs(theirs).max())
    # precision weighting lowers the variance below either run's
    assert np.all(ours.variance <= np.min(variances, axis=0) + 1e-12)


def test_roi_contrasts_recover_activation():
    design, img = _run(4)
    rng = np.random.default_rng(5)
    x = design.matrix
    roi = pd.DataFrame(
        {
            "amygdala": 2.0 * x["fearful"] + rng.standard_normal(N) * 0.5,
            "vmPFC": rng.standard_normal(N) * 0.5,
        }
    )
    table = roi_contrasts(roi, x, {"fearful": contrast_vector({"fearful": 1}, design)})
    amy = table.set_index("roi").loc["amygdala"]
    assert amy["effect"] == pytest.approx(2.0, abs=0.3)
    assert amy["z"] > 5
    assert abs(table.set_index("roi").loc["vmPFC", "z"]) < 4


def test_t_to_z_tails_and_errors():
    z = t_to_z(np.array([-40.0, -2.0, 0.0, 2.0, 40.0]), 30)
    assert z[2] == pytest.approx(0.0, abs=1e-12)
    assert z[0] == pytest.approx(-z[4]) and z[1] == pytest.approx(-z[3])
    assert np.isfinite(z).all() and z[4] > 8
    with pytest.raises(ValueError, match="noise_model"):
        fit_glm(np.zeros((10, 2)), np.ones((10, 1)), "ar2")
    with pytest.raises(ValueError, match="contrast has"):
        compute_contrast(fit_glm(np.random.default_rng(0).standard_normal((10, 2)), np.ones((10, 1))), [1, 0])


def test_chunking_and_rank_deficient_design():
    rng = np.random.default_rng(7)
    x = np.column_stack([rng.standard_normal(80), np.ones(80)])
    y = x @ rng.standard_normal((2, 50)) + rng.standard_normal((80, 50))
    whole = fit_glm(y, x, chunk_size=1000)
    chunked = fit_glm(y.astype(np.float32), x, chunk_size=7)
    np.testing.assert_allclose(chunked.beta, whole.beta, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(chunked.rho, whole.rho)
    # a duplicated column: minimum-norm betas split the effect, dof counts the rank
    dup = fit_glm(y, np.column_stack([x[:, 0], x]), "ols")
    np.testing.assert_allclose(dup.beta[0], dup.beta[1])
    np.testing.assert_allclose(dup.beta[0] + dup.beta[1], fit_glm(y, x, "ols").beta[0], rtol=1e-8)
    assert dup.dof == 78
