"""ROI quality numbers (tSNR, dropout) and the coverage rule (ketflow.signal.roi_quality)."""

import numpy as np
import pandas as pd
import pytest

from ketflow.signal import roi_quality as rq

N_VOLUMES = 400


def _run(rng):
    """A synthetic run: 2000 brain voxels at intensity 1000, thermal noise SD 10 (tSNR 100),
    a quadratic drift, and an ROI 'ofc' with a planted dropout: 30 of its 50 voxels at 300
    (same absolute noise, so tSNR 30); ROI 'dacc' intact; ROI 'tiny' of 3 voxels."""
    n_vox = 2000
    t = np.linspace(-1, 1, N_VOLUMES)[:, None]
    mean = np.full(n_vox, 1000.0)
    labels = np.zeros(n_vox, dtype=int)
    labels[:50] = 1
    labels[100:160] = 2
    labels[300:303] = 3
    mean[:30] = 300.0
    drift = 20.0 * t + 15.0 * (t**2 - 1 / 3)
    data = mean + drift * (mean / 1000.0) + 10.0 * rng.standard_normal((N_VOLUMES, n_vox))
    return data.astype(np.float32), labels, ("ofc", "dacc", "tiny")


def test_quality_numbers_on_a_run_with_planted_dropout():
    data, labels, names = _run(np.random.default_rng(1))
    table = rq.roi_quality(data, labels, names)
    assert table["name"].tolist() == list(names)
    assert table["n_voxels"].tolist() == [50, 60, 3]
    ofc, dacc = table.iloc[0], table.iloc[1]
    assert ofc["dropout_fraction"] == pytest.approx(30 / 50)
    assert dacc["dropout_fraction"] == 0.0
    # median voxel tSNR: 30 dropout voxels at ~30, 20 intact at ~100 -> the median lies in the lost part
    assert ofc["tsnr"] == pytest.approx(30.0, rel=0.1)
    assert dacc["tsnr"] == pytest.approx(100.0, rel=0.05)  # drift removed, not counted as noise
    assert ofc["mean_ratio"] == pytest.approx(0.3, rel=0.01)
    # the ROI mean series averages independent noise: tSNR grows about as sqrt(n)
    assert dacc["tsnr_roi_signal"] == pytest.approx(100.0 * np.sqrt(60), rel=0.15)


def test_coverage_rule_excludes_with_reasons():
    data, labels, names = _run(np.random.default_rng(2))
    table = rq.apply_coverage_rule(rq.roi_quality(data, labels, names), rq.CoverageRule(min_voxels=5))
    assert table["excluded"].tolist() == [True, False, True]
    assert "dropout in 60% of voxels > max_dropout_fraction 50%" in table.loc[0, "reason"]
    assert table.loc[1, "reason"] == ""
    assert table.loc[2, "reason"] == "3 voxels < min_voxels 5"
    lenient = rq.apply_coverage_rule(rq.roi_quality(data, labels, names),
                                     rq.CoverageRule(min_voxels=1, max_dropout_fraction=None))
    assert not lenient["excluded"].any()


def test_empty_roi_is_reported_and_excluded():
    data, labels, names = _run(np.random.default_rng(3))
    labels[labels == 3] = 0
    table = rq.apply_coverage_rule(rq.roi_quality(data, labels, names), rq.CoverageRule())
    assert table.loc[2, "n_voxels"] == 0 and np.isnan(table.loc[2, "tsnr"])
    assert table.loc[2, "reason"] == "0 voxels < min_voxels 1"


def test_temporal_stats_detrend_and_dof():
    rng = np.random.default_rng(4)
    noise = rng.standard_normal((50, 3))
    t = np.linspace(-1, 1, 50)[:, None]
    mean, sd = rq.temporal_stats(100.0 + 5 * t + 3 * t**2 + noise)
    mean0, sd0 = rq.temporal_stats(100.0 + noise)
    np.testing.assert_allclose(sd, sd0)
    basis = np.column_stack([np.ones(50), t, t**2])
    resid = noise - basis @ np.linalg.lstsq(basis, noise, rcond=None)[0]
    np.testing.assert_allclose(sd, np.sqrt((resid**2).sum(axis=0) / (50 - 3)))
    np.testing.assert_allclose(mean0, 100.0 + noise.mean(axis=0))
    assert rq.temporal_snr(np.array([5.0, 5.0]), np.array([0.0, 2.0])).tolist() == [0.0, 2.5]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="dropout fraction"):
        rq.dropout_voxels(np.ones(3), 1.5)
    with pytest.raises(ValueError, match="labels shape"):
        rq.roi_quality(np.ones((10, 4)), np.zeros(3, int), ["a"])
    with pytest.raises(ValueError, match="degrees of freedom"):
        rq.temporal_stats(np.ones((3, 2)))
    with pytest.raises(ValueError, match="min_voxels"):
        rq.CoverageRule(min_voxels=0)
    assert isinstance(rq.apply_coverage_rule(pd.DataFrame(columns=["name", "n_voxels", "dropout_fraction"]),
                                             rq.CoverageRule()), pd.DataFrame)
