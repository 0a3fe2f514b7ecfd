"""peb_ppi (SPM spm_peb_ppi semantics) against the SPM12 reference PPI."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ketflow.signal.ppi import PPIResult, peb_deconvolve, peb_ppi
from ketflow.signal.hrf import convolve_microtime, spm_canonical_hrf

REF = Path(__file__).resolve().parent / "data" / "spm" / "spm_ppi" / "ppi_amygdala_fear"


@pytest.fixture(scope="module")
def spm_case():
    u = pd.read_csv(REF / "U.csv")
    return {
        "seed": pd.read_csv(REF / "seed_bold.csv")["amygdala"].to_numpy(),
        "psych": u["fear"].to_numpy() - u["neutral"].to_numpy(),
        "x0": pd.read_csv(REF / "X0.csv").to_numpy(),
        "out": pd.read_csv(REF / "ppi_regressors.csv"),
        "xn": pd.read_csv(REF / "xn_microtime.csv")["xn"].to_numpy(),
    }


def test_peb_ppi_matches_spm(spm_case):
    res = peb_ppi(spm_case["seed"], spm_case["psych"], 2.0, spm_case["x0"])
    assert isinstance(res, PPIResult)
    out = spm_case["out"]
    assert np.corrcoef(res.ppi, out["ppi"])[0, 1] > 0.99
    np.testing.assert_allclose(res.ppi, out["ppi"], atol=1e-4 * np.abs(out["ppi"]).max())
    np.testing.assert_allclose(res.Y, out["Y"], atol=1e-10)
    np.testing.assert_allclose(res.P, out["P"], atol=1e-10)
    assert res.xn.shape == spm_case["xn"].shape
    assert np.corrcoef(res.xn, spm_case["xn"])[0, 1] > 0.9999
    np.testing.assert_allclose(res.xn, spm_case["xn"], atol=1e-4 * np.abs(spm_case["xn"]).max())


def test_deconvolution_recovers_slow_neuronal_signal():
    rng = np.random.default_rng(0)
    n, nt, tr = 150, 16, 2.0
    t = np.arange(n * nt) * tr / nt
    neural = np.sin(2 * np.pi * t / 60.0) + (np.sin(2 * np.pi * t / 37.0) > 0.3)
    bold = convolve_microtime(neural, spm_canonical_hrf(tr / nt), n, nt, 1)
    bold = bold + 0.05 * rng.standard_normal(n)
    xn = peb_deconvolve(bold, tr, np.ones((n, 1)), nt)
    assert abs(xn.mean()) < 1e-10
    assert np.corrcoef(xn, neural)[0, 1] > 0.8


def test_input_validation():
    with pytest.raises(ValueError, match="psych"):
        peb_ppi(np.zeros(20), np.zeros(20), 2.0, np.ones((20, 1)))
    with pytest.raises(ValueError, match="confounds"):
        peb_ppi(np.zeros(20), np.zeros(320), 2.0, np.ones((19, 1)))


def test_the_former_module_path_still_works():
    """Other tools import ``ketflow.ppi.peb_ppi``: the module re-exports the core's functions."""
    import ketflow.ppi

    assert (ketflow.ppi.peb_ppi, ketflow.ppi.peb_deconvolve, ketflow.ppi.PPIResult) == (peb_ppi, peb_deconvolve,
                                                                                         PPIResult)
