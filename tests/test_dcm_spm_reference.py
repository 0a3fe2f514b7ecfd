"""fit_dcm against SPM12 (r7771) on the reference cases in tests/data/spm/spm_dcm."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ketflow.dcm import DCMSpec, fit_dcm
from ketflow.dcm.priors import dcm_fmri_priors
from ketflow.dcm.spec import preprocess_data

# SPM12 reference cases kept in the repository (tests/data/spm/README.md)
REF = Path(__file__).resolve().parent / "data" / "spm" / "spm_dcm"
CASES = ["dcm2_block", "dcm2_event", "dcm3_block"]


def _case(case):
    return REF / case


@pytest.fixture(scope="module")
def fitted():
    cache = {}

    def get(case):
        if case not in cache:
            folder = _case(case)
            cache[case] = (fit_dcm(DCMSpec.from_spm_reference(folder)), folder)
        return cache[case]

    return get


@pytest.mark.parametrize("case", CASES)
def test_priors_equal_spm(case):
    folder = _case(case)
    spec = DCMSpec.from_spm_reference(folder)
    params = pd.read_csv(folder / "params.csv")
    pE, pV, layout = dcm_fmri_priors(spec.a, spec.b, spec.c, spec.d)
    assert layout.names() == list(params["label"])
    np.testing.assert_allclose(pE, params["prior_mean"], rtol=0, atol=1e-15)
    np.testing.assert_allclose(pV, params["prior_var"], rtol=0, atol=1e-15)


@pytest.mark.parametrize("case", CASES)
def test_preprocessing_equals_spm(case):
    folder = _case(case)
    spec = DCMSpec.from_spm_reference(folder)
    Yp, scale = preprocess_data(spec.Y)
    np.testing.assert_allclose(Yp, pd.read_csv(folder / "Y_processed.csv").to_numpy(), atol=1e-12)
    assert scale == pytest.approx(json.loads((folder / "spec.json").read_text())["Y_scale"])


def test_preprocessing_rescales_large_range():
    Y = np.column_stack([np.linspace(0, 10, 50), np.zeros(50)])
    Yp, scale = preprocess_data(Y)
    assert scale == pytest.approx(0.4)
    assert Yp.max() - Yp.min() == pytest.approx(4.0)
    np.testing.assert_allclose(Yp.mean(0), 0, atol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_posterior_and_free_energy_match_spm(case, fitted):
    result, folder = fitted(case)
    ref = json.loads((folder / "results.json").read_text())
    Ep_spm = np.array(ref["Ep_vector"])
    sd_spm = np.sqrt(np.array(ref["Vp_vector"]))
    tol = np.maximum(0.05, 0.1 * sd_spm)
    assert np.all(np.abs(result.Ep_vector - Ep_spm) <= tol)
    assert abs(result.F - ref["F"]) < 1.0
    # the implementation follows SPM's scheme step by step: agreement is much tighter
    np.testing.assert_allclose(result.Ep_vector, Ep_spm, atol=1e-6)
    np.testing.assert_allclose(result.Vp_vector, ref["Vp_vector"], rtol=1e-4, atol=1e-12)
    Cp_spm = pd.read_csv(folder / "Cp.csv").to_numpy()
    np.testing.assert_allclose(result.Cp, Cp_spm, atol=1e-8)
    np.testing.assert_allclose(result.noise_variance, ref["Ce"], rtol=1e-5)
    assert result.n_iterations == ref["n_iterations"]
    assert result.converged


@pytest.mark.parametrize("case", CASES)
def test_posterior_probabilities_and_prediction_match_spm(case, fitted):
    result, folder = fitted(case)
    params = pd.read_csv(folder / "params.csv")
    np.testing.assert_allclose(result.Pp_vector, params["post_prob"], atol=1e-6)  # NaN where fixed
    y_spm = pd.read_csv(folder / "y_predicted.csv").to_numpy()
    np.testing.assert_allclose(result.y_predicted, y_spm, atol=1e-6)


def test_result_exports(fitted):
    result, _ = fitted("dcm2_block")
    table = result.parameter_table()
    assert list(table.columns[:4]) == ["name", "prior_mean", "prior_var", "posterior_mean"]
    free = table[table["free"]]
    assert np.all(free["ci90_low"] < free["posterior_mean"]) and np.all(free["posterior_mean"] < free["ci90_high"])
    d = result.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["Ep"]["B"][1][0][1] == pytest.approx(result.Ep["B"][1, 0, 1])
    assert d["Pp"]["B"][0][0][0] is None


def test_spec_validation():
    Y = np.zeros((10, 2))
    U = np.ones((160, 1))
    with pytest.raises(ValueError, match="no driving input"):
        DCMSpec(Y=Y, U=U, U_dt=0.125, TR=2.0, a=np.ones((2, 2)), b=None, c=np.zeros((2, 1)))
    with pytest.raises(ValueError, match="unknown DCM options"):
        DCMSpec(Y=Y, U=U, U_dt=0.125, TR=2.0, a=np.ones((2, 2)), b=None, c=np.ones((2, 1)),
                options={"two_state": 1})
    spec = DCMSpec(Y=Y, U=U, U_dt=0.125, TR=2.0, a=np.ones((2, 2)), b=None, c=np.ones((2, 1)),
                   options={"centre": True, "maxit": 5})
    assert spec.options.maxit == 5 and np.all(spec.processed_inputs() == 0)
    np.testing.assert_array_equal(spec.delays, [1.0, 1.0])  # TR/2
    assert spec.X0.shape == (10, 1) and spec.b.shape == (1, 2, 2)
