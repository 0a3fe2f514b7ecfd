"""Tests for ketflow.signal.denoise: one-regression denoising with censoring."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nilearn.signal import clean, create_cosine_drift

from ketflow.signal import denoise as dn

TR = 2.0


def _data(seed=0, n=150, v=20, k=4):
    rng = np.random.default_rng(seed)
    conf = rng.normal(size=(n, k))
    y = 50 + rng.normal(size=(n, v)) + conf @ rng.normal(size=(k, v)) + np.linspace(0, 5, n)[:, None]
    return y, conf


def test_cosines_match_nilearn_drift():
    for n, hp in [(150, 128.0), (97, 100.0), (300, 60.0)]:
        ours = dn.cosine_regressors(n, TR, hp)
        theirs = create_cosine_drift(1 / hp, np.arange(n) * TR)[:, :-1]
        assert ours.shape == theirs.shape and np.allclose(ours, theirs)


def test_matches_nilearn_clean_with_censoring():
    y, conf = _data()
    keep = np.ones(150, bool)
    keep[[0, 1, 2, 40, 41, 42, 43, 44, 100]] = False
    ours = dn.denoise(y, conf, TR, keep=keep, high_pass_s=128.0, min_volumes=20)
    theirs = clean(
        y.copy(), confounds=conf, filter="cosine", high_pass=1 / 128.0, t_r=TR,
        detrend=False, standardize=None, sample_mask=np.flatnonzero(keep),
    )
    assert ours.data.shape == (141, 20) and ours.n_censored == 9
    assert np.abs(ours.data - (theirs - theirs.mean(0))).max() < 1e-5 * np.abs(theirs).max()
    z = dn.denoise(y, conf, TR, keep=keep, high_pass_s=128.0, standardize=True, min_volumes=20)
    theirs_z = clean(
        y.copy(), confounds=conf, filter="cosine", high_pass=1 / 128.0, t_r=TR,
        detrend=False, standardize="zscore_sample", sample_mask=np.flatnonzero(keep),
    )
    assert np.abs(z.data - theirs_z).max() < 1e-5
    # intercept + 4 confounds + floor(2*150*2/128)=4 cosines
    assert ours.dof_lost == 9 and ours.dof_remaining == 141 - 9


def test_band_pass_is_one_projection_and_removes_out_of_band_power():
    n = 200
    t = np.arange(n) * TR
    slow, mid, fast = np.sin(2 * np.pi * 0.003 * t), np.sin(2 * np.pi * 0.04 * t), np.sin(2 * np.pi * 0.2 * t)
    conf = np.random.default_rng(1).normal(size=(n, 2))
    y = np.column_stack([slow + mid + fast + conf @ [1.0, -2.0]])
    out = dn.denoise(y, conf, TR, high_pass_s=100.0, low_pass_hz=0.08, min_volumes=20)
    assert np.corrcoef(out.data[:, 0], mid)[0, 1] > 0.95
    assert abs(np.corrcoef(out.data[:, 0], fast)[0, 1]) < 0.05
    assert abs(np.corrcoef(out.data[:, 0], slow)[0, 1]) < 0.2
    # the residual is orthogonal to every regressor of the single design (nothing reintroduced)
    assert np.abs(out.design.T @ out.data[:, 0]).max() < 1e-4
    n_low = int(np.floor(2 * n * TR / 100.0))
    n_high = n - 1 - int(np.floor(2 * n * TR * 0.08))
    assert out.dof_lost == 1 + 2 + n_low + n_high


def test_too_few_volumes_raise_specific_error():
    y, conf = _data(n=60)
    keep = np.zeros(60, bool)
    keep[:30] = True
    with pytest.raises(dn.TooFewVolumesError, match="30 of 60 volumes remain"):
        dn.denoise(y, conf, TR, keep=keep, min_volumes=40)
    with pytest.raises(dn.TooFewVolumesError, match="0 residual degrees of freedom"):
        dn.denoise(y[:, :3], np.random.default_rng(0).normal(size=(60, 59)), TR, high_pass_s=None, min_volumes=10)
    # band-pass by regression: 200 volumes at TR 2 s, 0.01-0.1 Hz = 8 + 119 cosines, + 1 + 36
    conf36 = np.random.default_rng(1).normal(size=(200, 36))
    keep, _, basis = dn.kept_design(conf36, TR, None, 100.0, 0.1, min_volumes=40)
    assert basis.shape[1] == 1 + 36 + 8 + 119
    censored = np.ones(200, bool)
    censored[:40] = False  # 160 kept: the band-passed design leaves few degrees of freedom
    _, _, basis = dn.kept_design(conf36, TR, censored, 100.0, 0.1, min_volumes=40)
    assert 0 < 160 - basis.shape[1] < 20
    censored[:80] = False  # 120 kept < 164 regressors: screened without any BOLD data
    with pytest.raises(dn.TooFewVolumesError, match="120 kept volumes"):
        dn.kept_design(conf36, TR, censored, 100.0, 0.1, min_volumes=40)
    with pytest.raises(dn.TooFewVolumesError, match="at least 50 required"):
        dn.kept_design(conf36, TR, None, 100.0, 0.1, min_volumes=40, min_dof=50)
    assert issubclass(dn.TooFewVolumesError, ValueError)


def test_collinear_regressors_cost_one_dof():
    y, conf = _data()
    doubled = np.column_stack([conf, conf[:, :1] * 3.0])
    assert dn.denoise(y, doubled, TR, min_volumes=20).dof_lost == dn.denoise(y, conf, TR, min_volumes=20).dof_lost


@settings(max_examples=15, deadline=None)
@given(st.permutations(range(4)), st.integers(0, 1000))
def test_invariant_to_confound_column_order(order, seed):
    y, conf = _data(seed=seed, n=80, v=5)
    a = dn.denoise(y, conf, TR, min_volumes=20).data
    b = dn.denoise(y, conf[:, list(order)], TR, min_volumes=20).data
    assert np.allclose(a, b, atol=1e-4)
