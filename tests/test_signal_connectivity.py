"""Tests for ketflow.signal.connectivity against nilearn ConnectivityMeasure and invariants."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nilearn.connectome import ConnectivityMeasure
from sklearn.covariance import EmpiricalCovariance, LedoitWolf

from ketflow.signal import connectivity as cx


def _ts(seed=0, n=120, r=6):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(r, r)) * 0.5 + np.eye(r)
    return rng.normal(size=(n, r)) @ mix + 10


@pytest.mark.parametrize(
    ("ours", "kind", "estimator"),
    [
        ("pearsoncorrelation", "correlation", EmpiricalCovariance()),
        ("partialcorrelation", "partial correlation", EmpiricalCovariance()),
        ("ledoitwolfcovariance", "covariance", LedoitWolf(store_precision=False)),
        ("ledoitwolfcorrelation", "correlation", LedoitWolf(store_precision=False)),
        ("ledoitwolfpartialcorrelation", "partial correlation", LedoitWolf(store_precision=False)),
    ],
)
def test_matches_nilearn_connectivity_measure(ours, kind, estimator):
    ts = _ts()
    mats = cx.connectivity_matrices(ts)
    # ketflow always works on z-scored series; nilearn z-scores itself only for
    # kind="correlation", so the other kinds get z-scored input (Ledoit-Wolf is not
    # scale invariant)
    zs = (ts - ts.mean(0)) / ts.std(0, ddof=1)
    measure = ConnectivityMeasure(cov_estimator=estimator, kind=kind, standardize=True)
    theirs = measure.fit_transform([ts if kind == "correlation" else zs])[0]
    assert np.abs(mats[ours] - theirs).max() < 1e-6


def test_pearson_equals_numpy_and_fisher_z():
    ts = _ts(1)
    r = cx.pearson(ts)
    assert np.allclose(r, np.corrcoef(ts, rowvar=False))
    z = cx.fisher_z(r)
    assert np.isnan(np.diag(z)).all()
    off = ~np.eye(6, dtype=bool)
    assert np.allclose(np.tanh(z[off]), r[off])


def test_seed_to_voxel_z():
    rng = np.random.default_rng(2)
    seed = rng.normal(size=100)
    data = np.column_stack([seed * 2 + 1, -seed + rng.normal(size=100) * 0.5, rng.normal(size=100), np.ones(100)])
    z = cx.seed_to_voxel_z(seed, data)
    assert np.isnan(z[0]) or z[0] > 10  # r = 1 (up to rounding): inf -> NaN like the diagonal
    assert np.isclose(np.tanh(z[1]), np.corrcoef(seed, data[:, 1])[0, 1])
    assert abs(z[2]) < 0.3 and np.isnan(z[3])


def test_dvars_and_qc():
    rng = np.random.default_rng(4)
    data = rng.normal(size=(50, 30))
    d = cx.dvars(data)
    assert np.allclose(d, np.sqrt(np.mean(np.diff(data, axis=0) ** 2, axis=1)))
    fd = np.abs(rng.normal(size=50)) * 0.2
    fd[0] = 0
    keep = fd < 0.3
    qc = cx.qc_metrics(fd, keep, d, cx.dvars(data[keep]))
    assert qc["num_censored_volumes"] == int((~keep).sum())
    assert qc["num_retained_volumes"] + qc["num_censored_volumes"] == 50
    assert np.isclose(qc["mean_fd"], fd.mean()) and -1 <= qc["fd_dvars_correlation_initial"] <= 1


def test_task_residuals_remove_evoked_response():
    tr, n = 2.0, 160
    events = pd.DataFrame({"onset": np.arange(10, 300, 30.0), "duration": 1.0, "trial_type": "faces"})
    fir = cx.fir_task_regressors(events, n, tr, n_delays=8)
    assert fir.shape == (n, 8)
    rng = np.random.default_rng(5)
    response = fir @ np.array([0, 1, 3, 4, 3, 2, 1, 0.5])
    ts = np.column_stack([response + rng.normal(size=n) * 0.3, response + rng.normal(size=n) * 0.3])
    assert cx.pearson(ts)[0, 1] > 0.8  # task-driven co-activation
    resid = cx.task_residual_timeseries(ts, events, tr, n_delays=8)
    assert abs(cx.pearson(resid)[0, 1]) < 0.3
    keep = np.ones(n, bool)
    keep[50:55] = False
    assert cx.task_residual_timeseries(ts[keep], events, tr, 8, keep=keep).shape == (n - 5, 2)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 7))
def test_matrices_symmetric_unit_diagonal(seed, r):
    ts = _ts(seed, n=40, r=r)
    for name, mat in cx.connectivity_matrices(ts).items():
        if name in ("fisherz", "ledoitwolfcovariance"):
            continue
        assert np.allclose(mat, mat.T, atol=1e-10)
        assert np.allclose(np.diag(mat), 1.0)
        assert np.all(np.abs(mat) <= 1 + 1e-10)


def test_constant_series_rejected():
    ts = _ts()
    ts[:, 2] = 3.0
    with pytest.raises(ValueError, match=r"\[2\] are constant"):
        cx.pearson(ts)


def test_only_the_requested_measures_are_computed():
    ts = _ts()
    every = cx.connectivity_matrices(ts)
    assert set(every) == {s for stats in cx.MEASURE_STATS.values() for s in stats}
    some = cx.connectivity_matrices(ts, ["fisher_z", "ledoit_wolf"])
    assert set(some) == {"fisherz", "ledoitwolfcovariance", "ledoitwolfcorrelation", "ledoitwolfpartialcorrelation"}
    for name, matrix in some.items():
        np.testing.assert_array_equal(matrix, every[name])
    with pytest.raises(ValueError, match="unknown connectivity measure"):
        cx.connectivity_matrices(ts, ["spearman"])
