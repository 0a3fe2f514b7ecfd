"""SPM-style VOI series for DCM: grand-mean scaling, confound adjustment, first eigenvariate."""

import numpy as np
import pandas as pd
import pytest

from ketflow.dcm.voi import grand_mean_scale, spike_volumes, voi_confounds, voi_eigenvariates
from ketflow.signal.denoise import cosine_regressors

T, TR = 120, 2.0


def _signal(rng):
    """A slow zero-mean 'response' in per cent signal change."""
    blocks = (np.arange(T) // 10) % 2 * 1.0
    kernel = np.exp(-np.arange(8) / 2.0)
    s = np.convolve(blocks, kernel / kernel.sum())[:T]
    return (s - s.mean()) / s.std() * 0.8 + 0.1 * rng.standard_normal(T)


def test_spike_volumes_and_grand_mean_scale():
    X = np.zeros((6, 3))
    X[:, 0] = np.arange(6)  # not an indicator
    X[1, 1] = 1.0
    X[4, 2] = 1.0
    assert spike_volumes(X).tolist() == [False, True, False, False, True, False]
    means = np.array([1600.0, 1000.0, 1000.0, 1000.0, 1000.0, 1000.0])
    assert grand_mean_scale(means, ~np.eye(6, dtype=bool)[0]) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="positive"):
        grand_mean_scale(-means)


def test_voi_recovers_percent_signal_change_and_is_orthogonal_to_confounds():
    rng = np.random.default_rng(0)
    s = _signal(rng)
    cos = cosine_regressors(T, TR, 128.0)
    motion = np.cumsum(rng.standard_normal(T)) * 0.05
    spikes = np.zeros((T, 2))
    spikes[[0, 57], [0, 1]] = 1.0
    confounds = np.column_stack([cos, motion, spikes])
    n_vox = 30
    baseline = 1000.0 * (1 + 0.05 * rng.standard_normal(n_vox))  # bias field
    nuisance = (cos @ rng.standard_normal(cos.shape[1]))[:, None] * 2.0 + motion[:, None] * rng.uniform(
        0.5, 1.5, n_vox)
    data = baseline * (1 + (s[:, None] + nuisance + 0.3 * rng.standard_normal((T, n_vox))) / 100)
    data[0] *= 1.6  # a bright non-steady-state volume, censored by its spike column
    data[57] += 300.0  # a motion spike
    scale = grand_mean_scale(data.mean(axis=1), ~spike_volumes(confounds))
    assert 100 / scale == pytest.approx(baseline.mean() * (1 + s.mean() / 100), rel=0.01)
    voi = voi_eigenvariates([data], confounds, scale)
    y = voi.Y[:, 0]
    basis = np.linalg.qr(np.column_stack([np.ones(T), confounds]))[0]
    np.testing.assert_allclose(basis.T @ y, 0.0, atol=1e-8)  # adjusted for X0 (and centred)
    target = s - basis @ (basis.T @ s)  # what adjustment leaves of the response
    keep = ~spike_volumes(confounds)
    assert np.corrcoef(y[keep], target[keep])[0, 1] > 0.98
    slope = np.polyfit(target[keep], y[keep], 1)[0]
    assert slope == pytest.approx(1.0, abs=0.04)  # per cent of the grand mean ~ per cent signal change
    assert voi.n_voxels.tolist() == [n_vox] and 0.3 < voi.variance_explained[0] < 1


def test_voi_refuses_confounds_without_degrees_of_freedom():
    with pytest.raises(ValueError, match="degrees of freedom"):
        voi_eigenvariates([np.ones((10, 3))], np.eye(10)[:, :9])


def test_voi_confounds_hold_cosines_and_usable_nuisance_columns():
    """X0 without its constant: the cosine set, then the nuisance columns (n/a -> 0, constant columns dropped)."""
    nuisance = pd.DataFrame({"trans_x": np.r_[np.nan, np.arange(T - 1.0)], "flat": 1.0, "censored_0000": np.eye(T)[0]})
    x0 = voi_confounds(T, TR, 128.0, nuisance)
    cosines = cosine_regressors(T, TR, 128.0)
    assert list(x0.columns) == [f"cosine{j + 1:02d}" for j in range(cosines.shape[1])] + ["trans_x", "censored_0000"]
    np.testing.assert_array_equal(x0.iloc[:, :cosines.shape[1]].to_numpy(), cosines)
    assert x0["trans_x"].iloc[0] == 0.0
    assert voi_confounds(T, TR, None).shape == (T, 0)
    with pytest.raises(ValueError, match="conf.tsv: 3 rows, but the run has 120 volumes"):
        voi_confounds(T, TR, 128.0, nuisance.iloc[:3], "conf.tsv")
