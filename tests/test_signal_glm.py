"""Voxelwise GLM against nilearn FirstLevelModel (OLS and AR(1)), fixed effects, ROI contrasts."""

import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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


# --- realistic first-level designs: the pipeline's 36P + spike confounds in raw units -------------


def pipeline_design(bids, sub="01", ses="pre", seed_column=False):
    """Design the pipeline builds for a simulated faces run (36P, FD spikes, cosines), data in percent."""
    from ketflow.io.boldcache import read_mask, read_masked_bold
    from ketflow.io.confounds import ConfoundStrategy, load_confounds
    from ketflow.signal.design import spike_regressors

    func = bids / "derivatives" / "fmriprep" / f"sub-{sub}" / f"ses-{ses}" / "func"
    prefix = f"sub-{sub}_ses-{ses}_task-faces"
    bold = func / f"{prefix}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
    mask = read_mask(func / f"{prefix}_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz")
    raw = read_masked_bold(bold, mask)
    conf = load_confounds(func / f"{prefix}_desc-confounds_timeseries.tsv",
                          func / f"{prefix}_desc-confounds_timeseries.json",
                          ConfoundStrategy("36P", fd_threshold=0.3, min_segment=5), n_volumes=raw.shape[0])
    regressors = pd.concat([conf.regressors.reset_index(drop=True), spike_regressors(conf.keep)], axis=1)
    events = pd.read_csv(bids / f"sub-{sub}" / f"ses-{ses}" / "func" / f"{prefix}_events.tsv", sep="\t")
    design = make_task_design(events, 2.0, raw.shape[0], ["fearful", "neutral", "shapes"], start_time=1.0,
                              confounds=regressors)
    x = design.matrix
    if seed_column:  # a gPPI-style seed: raw-unit mean of some voxels (~1000)
        x = x.assign(seed=raw[:, :40].mean(axis=1))
    y, _ = mean_scaling(raw)
    return design, x, y


def _nilearn_reference(y, x, noise_model, contrast):
    """nilearn run_glm + compute_contrast on the same model with unit-norm columns (see test)."""
    from nilearn.glm.contrasts import compute_contrast as nilearn_contrast
    from nilearn.glm.first_level import run_glm

    norms = np.linalg.norm(x, axis=0)
    labels, results = run_glm(y, x / norms, noise_model=noise_model)
    ref = nilearn_contrast(labels, results, contrast / norms)
    return labels.astype(float), ref


@pytest.mark.parametrize("seed_column", [False, True])
@pytest.mark.parametrize("noise_model", ["ols", "ar1"])
def test_realistic_raw_unit_design_matches_nilearn(tiny_bids, noise_model, seed_column):
    """36P (+ derivatives and squares, raw units: power2 columns ~1e6) + spikes + cosines (+ a raw seed).

    nilearn's own pinv of such a design loses about cond(X) * eps ~ 1e-3 of precision (its z
    maps then differ from the exact ones by up to ~0.4 on the demo data), so the reference
    is nilearn fitted to the same model with columns scaled to unit norm: an identical
    model (same column space, contrast weights rescaled), which nilearn fits accurately.
    """
    design, x, y = pipeline_design(tiny_bids, seed_column=seed_column)
    xv = x.to_numpy()
    assert np.linalg.cond(xv) > 1e10  # the design really is badly scaled
    assert any(c.startswith("censored_") for c in x.columns)
    con = contrast_vector("fearful - neutral", design, list(x.columns))
    fit = fit_glm(y, xv, noise_model)
    res = compute_contrast(fit, con)
    rho, ref = _nilearn_reference(y, xv, noise_model, con)
    same = rho == fit.rho
    assert same.mean() > 0.999  # Yule-Walker values within ~1e-12 of a 0.01 bin edge may differ
    assert np.all(res.variance > 0) and np.all(np.isfinite(res.z))
    for ours, theirs in [(res.effect, ref.effect_size()), (res.variance, ref.effect_variance()),
                         (res.z, ref.z_score())]:
        theirs = np.ravel(theirs)
        np.testing.assert_allclose(ours[same], theirs[same], rtol=1e-5, atol=1e-5 * np.abs(theirs).max())


_scales = st.floats(min_value=-4.0, max_value=4.0).map(lambda e: 10.0**e)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_confound_order_and_scale_do_not_change_estimates(tiny_bids, data):
    design, x, y = _realistic_cached(tiny_bids)
    nuisance = [c for c in x.columns if c not in design.columns]
    order = data.draw(st.permutations(nuisance))
    scales = np.array(data.draw(st.lists(_scales, min_size=len(order), max_size=len(order))))
    shuffled = pd.concat([x[design.columns], x[order] * scales], axis=1)
    con = contrast_vector("fearful - neutral", design, list(x.columns))
    con_shuffled = contrast_vector("fearful - neutral", design, list(shuffled.columns))
    ref = compute_contrast(fit_glm(y, x.to_numpy(), "ar1"), con)
    fit = fit_glm(y, shuffled.to_numpy(), "ar1")
    res = compute_contrast(fit, con_shuffled)
    for ours, theirs in [(res.effect, ref.effect), (res.variance, ref.variance), (res.z, ref.z)]:
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9 * np.abs(theirs).max())


_CACHE: dict = {}


def _realistic_cached(bids):
    """The realistic design with a raw seed and 300 voxels of its data (built once)."""
    if bids not in _CACHE:
        design, x, y = pipeline_design(bids, seed_column=True)
        _CACHE[bids] = (design, x, y[:, ::max(1, y.shape[1] // 300)])
    return _CACHE[bids]
