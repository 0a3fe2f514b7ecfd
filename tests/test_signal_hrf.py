"""SPM canonical HRF and micro-time convolution against SPM12 reference outputs."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ketflow.signal.hrf import (
    convolve_microtime,
    scan_bins,
    spm_canonical_hrf,
    spm_hrf_basis,
)

REF = Path(__file__).resolve().parent / "data" / "spm" / "spm_ppi" / "ppi_amygdala_fear"


def test_canonical_hrf_equals_spm_microtime_hrf():
    spm = pd.read_csv(REF / "hrf_microtime.csv")["hrf"].to_numpy()
    ours = spm_canonical_hrf(0.125)
    assert ours.shape == spm.shape
    np.testing.assert_allclose(ours, spm, rtol=0, atol=1e-12)


def test_convolution_at_microtime_onset_equals_spm_psychological_regressor():
    u = pd.read_csv(REF / "U.csv")
    psy = u["fear"].to_numpy() - u["neutral"].to_numpy()
    psy = psy - psy.mean()
    expected = pd.read_csv(REF / "ppi_regressors.csv")["P"].to_numpy()
    got = convolve_microtime(psy, spm_canonical_hrf(0.125), 200, 16, 8)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)


def test_hrf_shape_properties():
    hrf = spm_canonical_hrf(0.1)
    t = np.arange(hrf.size) * 0.1
    assert hrf.sum() == pytest.approx(1.0)
    assert 4.5 < t[np.argmax(hrf)] < 5.5  # canonical peak near 5 s
    assert hrf.min() < 0 and 14 < t[np.argmin(hrf)] < 17  # undershoot


def test_derivative_is_orthogonal_and_shifts_peak():
    basis = spm_hrf_basis(0.1, derivative=True)
    assert basis.shape[1] == 2
    assert abs(basis[:, 0] @ basis[:, 1]) < 1e-12
    # a slightly earlier response is hrf + a positive multiple of the derivative
    early = spm_canonical_hrf(0.1, onset=-0.3)
    coef = np.linalg.lstsq(basis, early, rcond=None)[0]
    assert coef[1] > 0


def test_scan_bins_and_validation():
    np.testing.assert_array_equal(scan_bins(3, 16, 8), [7, 23, 39])
    np.testing.assert_array_equal(scan_bins(2, 16, 1), [0, 16])
    with pytest.raises(ValueError, match="microtime_onset"):
        scan_bins(3, 16, 0)
    with pytest.raises(ValueError, match="micro-time bins"):
        convolve_microtime(np.ones(10), np.ones(3), 3, 16, 8)


def test_convolution_of_impulse_returns_kernel_at_scan_bins():
    kernel = np.arange(1.0, 40.0)
    x = np.zeros(64)
    x[0] = 1.0
    got = convolve_microtime(np.column_stack([x, 2 * x]), kernel, 4, 16, 1)
    np.testing.assert_allclose(got[:, 0], kernel[[0, 16, 32]].tolist() + [0.0])
    np.testing.assert_allclose(got[:, 1], 2 * got[:, 0])
