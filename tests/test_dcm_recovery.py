"""Parameter recovery, credible-interval coverage, model comparison and figure of DCM."""

import dataclasses

import numpy as np
import pytest
from matplotlib.figure import Figure

from ketflow.dcm import DCMSpec, fit_dcm, simulate_bold
from ketflow.dcm.compare import (
    compare_models,
    model_posterior,
    reduce_model,
    score_model_space,
)
from ketflow.dcm.plot import plot_dcm

TR, N_SCANS = 2.0, 200
DT = TR / 16
A_TRUE = np.array([[0.0, 0.4], [-0.3, 0.0]])
B_TRUE = np.zeros((2, 2, 2))
B_TRUE[1, 0, 1] = 0.5
C_TRUE = np.array([[0.0, 0.0], [1.0, 0.0]])


def _blocks():
    U = np.zeros((N_SCANS * 16, 2))
    for k, onset in enumerate(range(10, 390, 40)):
        rows = slice(int(onset / DT), int((onset + 20) / DT))
        U[rows, 0] = 1.0
        U[rows, 1] = float(k % 2 == 0)
    return U


@pytest.fixture(scope="module")
def design():
    U = _blocks()
    y0 = simulate_bold(A_TRUE, B_TRUE, C_TRUE, U, DT, TR, N_SCANS, delays=[1.0, 1.0])
    return U, y0


def _spec(U, y, **kw):
    return DCMSpec(Y=y, U=U, U_dt=DT, TR=TR, a=np.ones((2, 2)), b=(B_TRUE != 0).astype(float),
                   c=(C_TRUE != 0).astype(float), delays=[1.0, 1.0], region_names=["vmPFC", "amygdala"],
                   input_names=["faces", "fear"], **kw)


@pytest.fixture(scope="module")
def noisy_fits(design):
    U, y0 = design
    fits = []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        y = y0 + rng.standard_normal(y0.shape) * y0.std(axis=0) / 2  # SNR 2 (SD ratio)
        fits.append(fit_dcm(_spec(U, y)))
    return fits


def test_recovery_and_coverage_at_snr2(noisy_fits):
    truth = noisy_fits[0].layout.pack(A_TRUE, B_TRUE, C_TRUE, np.zeros(2), 0.0, 0.0)
    hits, errors = [], []
    for r in noisy_fits:
        table = r.parameter_table()
        keep = (table["free"] & table["name"].str.match("^[ABC]_")).to_numpy()
        inside = (table["ci90_low"] <= truth) & (truth <= table["ci90_high"])
        hits.append(inside.to_numpy()[keep])
        errors.append((table["posterior_mean"] - truth).to_numpy()[keep])
        assert r.converged
        assert r.Ep["B"][1, 0, 1] > 0.2 and r.Pp["B"][1, 0, 1] > 0.95
    errors = np.array(errors)
    assert np.sqrt((errors**2).mean()) < 0.12
    # Laplace posteriors of DCM are somewhat overconfident: nominal 90%, measured ~77% (docs/dcm.md)
    assert np.mean(hits) >= 0.6


def _coverage(fits):
    truth = fits[0].layout.pack(A_TRUE, B_TRUE, C_TRUE, np.zeros(2), 0.0, 0.0)
    hits = []
    for r in fits:
        table = r.parameter_table()
        keep = (table["free"] & table["name"].str.match("^[ABC]_")).to_numpy()
        hits.append(((table["ci90_low"] <= truth) & (truth <= table["ci90_high"])).to_numpy()[keep])
    return float(np.mean(hits))


def test_ar1_noise_model_restores_interval_coverage(design):
    """Serially correlated noise (AR(1), rho 0.7, SNR 2): SPM's i.i.d. model with its tight noise
    hyperprior covers the truth in about half the cases; the two-pass AR(1) model with a weak
    hyperprior (the packaged configuration) estimates rho from the residuals and restores
    coverage near the nominal 90 % (docs/dcm.md: measured 0.52 -> 0.95). On white noise its
    rho estimate stays near 0."""
    from scipy.signal import lfilter

    from ketflow.dcm.spec import DCMOptions

    U, y0 = design
    ar1 = DCMOptions(noise="ar1", hC=1.0, m_step="newton")
    fits = {"spm": [], "ar1": []}
    for seed in range(10):
        e = lfilter([1.0], [1.0, -0.7], np.random.default_rng(seed).standard_normal(y0.shape), axis=0)
        y = y0 + e / e.std(axis=0) * y0.std(axis=0) / 2
        fits["spm"].append(fit_dcm(_spec(U, y)))
        fits["ar1"].append(fit_dcm(_spec(U, y, options=ar1)))
    rho = np.array([r.noise_ar1 for r in fits["ar1"]])
    assert np.all(fits["spm"][0].noise_ar1 == 0)
    assert abs(rho.mean() - 0.7) < 0.1
    assert _coverage(fits["ar1"]) >= 0.85
    assert _coverage(fits["ar1"]) > _coverage(fits["spm"]) + 0.2
    white = fit_dcm(_spec(U, y0 + np.random.default_rng(0).standard_normal(y0.shape) * y0.std(axis=0) / 2,
                          options=ar1))
    assert np.all(white.noise_ar1 < 0.1)
    with pytest.raises(ValueError, match="noise"):
        fit_dcm(_spec(U, y0, options=DCMOptions(noise="ar2")))


def test_noiseless_data_recovers_truth(design):
    U, y0 = design
    r = fit_dcm(_spec(U, y0))
    np.testing.assert_allclose(r.Ep["A"][[1, 0], [0, 1]], [-0.3, 0.4], atol=0.03)
    assert r.Ep["B"][1, 0, 1] == pytest.approx(0.5, abs=0.03)
    assert r.Ep["C"][1, 0] == pytest.approx(1.0, abs=0.05)


def test_fit_is_deterministic(design):
    U, y0 = design
    y = y0 + np.random.default_rng(42).standard_normal(y0.shape) * 0.3
    r1, r2 = fit_dcm(_spec(U, y)), fit_dcm(_spec(U, y))
    np.testing.assert_array_equal(r1.Ep_vector, r2.Ep_vector)
    assert r1.F == r2.F


def test_model_reduction_scores_nested_models(noisy_fits, design):
    full = noisy_fits[0]
    same = reduce_model(full)
    assert same.dF == pytest.approx(0.0, abs=1e-8)
    np.testing.assert_allclose(same.Ep_vector, full.Ep_vector, atol=1e-10)
    no_b = {"b": np.zeros((2, 2, 2))}
    a_no_forward = np.ones((2, 2))
    a_no_forward[1, 0] = 0.0
    table = score_model_space(full, {"no_modulation": no_b, "no_amygdala_to_vmpfc": {"a": a_no_forward}})
    assert list(table["model"]) == ["full", "no_modulation", "no_amygdala_to_vmpfc"]
    assert table["posterior_probability"].sum() == pytest.approx(1.0)
    assert table.loc[0, "posterior_probability"] > 0.99  # the true model wins
    # refitting the reduced model agrees that it is much worse
    U, _ = design
    refit = fit_dcm(dataclasses.replace(_spec(U, full.Y), b=np.zeros((2, 2, 2))))
    assert refit.F - full.F < -10 and table.loc[1, "dF"] < -10
    with pytest.raises(ValueError):
        reduce_model(full, c=np.ones((2, 2)))  # cannot switch on a connection


def test_fixed_effects_comparison(noisy_fits):
    F = np.array([[-10.0, -12.0], [-11.0, -10.5], [-9.0, -12.0]])
    p = model_posterior(F)
    assert p.sum() == pytest.approx(1.0)
    assert p[0] == pytest.approx(1 / (1 + np.exp(-4.5)))  # summed F: -30 vs -34.5
    table = compare_models([[r for r in noisy_fits[:3]], [r.F - 1.0 for r in noisy_fits[:3]]], names=["m1", "m2"])
    assert table.loc[0, "dF"] == 0.0 and table.loc[1, "dF"] == pytest.approx(-3.0)
    assert table.loc[0, "posterior_probability"] == pytest.approx(1 / (1 + np.exp(-3.0)))


def test_figure(noisy_fits):
    fig = plot_dcm(noisy_fits[0])
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert "vmPFC" in labels and any(t.startswith("fear:") for t in labels)


def test_nonlinear_model_recovers_gating(design):
    U, _ = design
    D = np.zeros((2, 2, 2))
    D[1, 0, 1] = 3.0  # amygdala activity gates amygdala -> vmPFC
    B = np.zeros((2, 2, 2))
    y0 = simulate_bold(A_TRUE, B, C_TRUE, U, DT, TR, N_SCANS, delays=[1.0, 1.0], D=D)
    y = y0 + np.random.default_rng(0).standard_normal(y0.shape) * y0.std(axis=0) / 4
    nonlinear = fit_dcm(dataclasses.replace(_spec(U, y), b=B, d=(D != 0).astype(float)))
    bilinear = fit_dcm(dataclasses.replace(_spec(U, y), b=B))
    assert nonlinear.Ep["D"][1, 0, 1] > 1.0 and nonlinear.Pp["D"][1, 0, 1] > 0.95
    assert nonlinear.F > bilinear.F


def test_principal_mode_constraint_for_large_models(design):
    """More regions than options.maxnodes: A's prior is confined to the data's principal modes."""
    U, _ = design
    A = np.array([[0.0, 0.4, 0.0], [-0.3, 0.0, 0.0], [0.0, 0.3, 0.0]])
    C = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    y0 = simulate_bold(A, np.zeros((2, 3, 3)), C, U, DT, TR, N_SCANS)
    y = y0 + np.random.default_rng(3).standard_normal(y0.shape) * y0.std(axis=0) / 2
    spec = DCMSpec(Y=y, U=U, U_dt=DT, TR=TR, a=np.ones((3, 3)), b=np.zeros((2, 3, 3)), c=C,
                   options={"maxnodes": 2})
    r = fit_dcm(spec)
    P = r.mode_projection
    np.testing.assert_allclose(P @ P, P, atol=1e-12)
    assert np.linalg.matrix_rank(P) == 2
    block = r.prior_cov[r.layout.sl_A, r.layout.sl_A]
    assert np.linalg.matrix_rank(block) == 4  # (2 modes)^2 directions of A stay free
    # full mask: every A variance is 1/64 before the projection
    np.testing.assert_allclose(block, np.kron(P, P) @ (np.eye(9) / 64) @ np.kron(P, P), atol=1e-12)
    assert r.converged
    assert reduce_model(r).dF == pytest.approx(0.0, abs=1e-8)
