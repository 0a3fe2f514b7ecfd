"""Nonlinear (D) DCM: compiled integration against the matrix-exponential reference, unchanged
estimates, batched against serial predictions and Jacobians, and the forward model itself
(Stephan et al. 2008's state equation, discretisation error against an accurate ODE solution)."""

import dataclasses

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.linalg import expm

import ketflow.dcm.nonlinear as nonlinear
from ketflow.dcm import DCMSpec, fit_dcm, simulate_bold
from ketflow.dcm.integrate import make_schedule, predict_bold
from ketflow.dcm.model import ParameterLayout, bilinear_operators, bold_output
from ketflow.dcm.priors import dcm_fmri_priors

TR, DT = 2.0, 2.0 / 16
A_TRUE = np.array([[0.0, 0.4], [-0.3, 0.0]])
C_TRUE = np.array([[0.0, 0.0], [1.0, 0.0]])
D_TRUE = np.zeros((2, 2, 2))
D_TRUE[1, 0, 1] = 3.0  # amygdala activity gates amygdala -> vmPFC
D_MASK = (D_TRUE != 0).astype(float)


def _blocks(n_scans):
    U = np.zeros((n_scans * 16, 2))
    for k, onset in enumerate(range(10, int(n_scans * TR) - 10, 40)):
        rows = slice(int(onset / DT), int((onset + 20) / DT))
        U[rows, 0] = 1.0
        U[rows, 1] = float(k % 2 == 0)
    return U


def reference_states(J, M2, pattern, steps, dt, n):
    """The integration before it was compiled: one ``scipy.linalg.expm`` of the augmented matrix
    [[0, 0], [h f, h J]] per event, for one parameter set at a time (serial)."""
    nb, _, ns, _ = J.shape
    xs = slice(1, 1 + n)
    Z = np.empty((len(steps), nb, ns))
    for b in range(nb):
        z = np.zeros(ns)
        z[0] = 1.0
        for i, (p, L) in enumerate(zip(pattern, steps)):
            Z[i, b] = z
            if not L:
                continue
            x = z[xs]
            F = J[b, p].copy()
            F[xs, xs] += np.einsum("k,kij->ij", x, M2[b])
            jac = F.copy()
            jac[xs, xs] += np.einsum("kij,j->ik", M2[b], x)
            aug = np.zeros((ns + 1, ns + 1))
            aug[1:, 0] = F @ z * L * dt
            aug[1:, 1:] = jac * L * dt
            z = z + expm(aug)[1:, 0]
    return Z


@pytest.fixture(scope="module")
def model():
    n_scans = 60
    U = _blocks(n_scans)
    spec = DCMSpec(Y=np.zeros((n_scans, 2)), U=U, U_dt=DT, TR=TR, a=np.ones((2, 2)), b=np.zeros((2, 2, 2)),
                   c=C_TRUE != 0, d=D_MASK)
    pE, pV, layout = dcm_fmri_priors(spec.a, spec.b, spec.c, spec.d)
    schedule = make_schedule(U, DT, TR, n_scans, spec.delays, nsteps=2)
    return pE, pV, layout, schedule


def _truth(layout, D=D_TRUE):
    return layout.pack(A_TRUE, np.zeros((2, 2, 2)), C_TRUE, np.zeros(2), 0.0, 0.0, D)


def _parameter_sets(pE, pV, layout, rng):
    """Prior draws around the truth and hard cases: divergent gating, very fast self-decay."""
    theta = _truth(layout) + rng.standard_normal((8, pE.size)) * np.sqrt(pV) * (pV > 0)
    gating = layout.names().index("D_to1_from2_by2")
    theta[:, gating] = rng.uniform(-4.0, 4.0, 8)
    theta[1, layout.names().index("D_to2_from2_by2")] = -40.0  # self-excitation: the trajectory diverges
    theta[2, layout.names().index("A_to2_from2")] = 7.0  # self-decay exp(7)/2 Hz: stiff steps
    return theta


def test_compiled_integration_equals_expm_reference(model):
    pE, pV, layout, schedule = model
    theta = _parameter_sets(pE, pV, layout, np.random.default_rng(0))
    M0, M1, M2 = bilinear_operators(theta, layout)
    J = M0[:, None] + np.einsum("pm,bmij->bpij", schedule.patterns, M1)
    args = (schedule.pattern, schedule.steps, schedule.dt, layout.n)
    with np.errstate(all="ignore"):
        Z = nonlinear.local_linear_states(J, M2, *args)
        Z_ref = reference_states(J, M2, *args)
    blown = ~(np.abs(Z).sum(-1) <= 1e6)
    blown_ref = ~(np.abs(Z_ref).sum(-1) <= 1e6)
    # the same trajectories diverge at the same event; predict_bold zeroes them from there on
    np.testing.assert_array_equal(blown.argmax(0), blown_ref.argmax(0))
    assert blown.any(0)[1] and not blown.any(0)[[0, 2]].any()
    keep = ~np.maximum.accumulate(blown_ref, axis=0)
    np.testing.assert_allclose(Z[keep], Z_ref[keep], rtol=1e-11, atol=1e-12)
    # the stiff set takes the scaling-and-squaring branch and is still equal
    h = schedule.steps.max() * schedule.dt
    assert h * np.exp(7.0) / 2 > nonlinear.MAX_SUBSTEPS * nonlinear.TAYLOR_THETA


def test_batched_prediction_and_jacobian_equal_serial(model):
    """All finite-difference perturbations are integrated in one batched call (as for bilinear
    models); each row equals the prediction of its parameter set alone."""
    pE, pV, layout, schedule = model
    theta = _truth(layout) + 0.05 * (pV > 0)
    step = np.exp(-8)
    free = np.flatnonzero(pV > 0)
    batch = np.vstack([theta, theta + step * np.eye(pE.size)[free]])
    y_batch = predict_bold(batch, layout, schedule)
    y_serial = np.stack([predict_bold(t, layout, schedule) for t in batch])
    np.testing.assert_allclose(y_batch, y_serial, rtol=0, atol=1e-13)
    jac_batch = (y_batch[1:] - y_batch[0]) / step
    jac_serial = (y_serial[1:] - y_serial[0]) / step
    np.testing.assert_allclose(jac_batch, jac_serial, rtol=0, atol=1e-9)
    # the D column of the Jacobian is not zero: the gating parameter is identifiable
    assert np.abs(jac_batch[list(free).index(layout.names().index("D_to1_from2_by2"))]).max() > 1e-3


def test_nonlinear_fit_unchanged_against_reference_integrator(monkeypatch):
    """The compiled path gives the estimates of the expm-based integration it replaced."""
    n_scans = 120
    U = _blocks(n_scans)
    y0 = simulate_bold(A_TRUE, None, C_TRUE, U, DT, TR, n_scans, delays=[1.0, 1.0], D=D_TRUE)
    y = y0 + np.random.default_rng(0).standard_normal(y0.shape) * y0.std(axis=0) / 4
    spec = DCMSpec(Y=y, U=U, U_dt=DT, TR=TR, a=np.ones((2, 2)), b=np.zeros((2, 2, 2)), c=C_TRUE != 0,
                   d=D_MASK, delays=[1.0, 1.0])
    compiled = fit_dcm(spec)
    monkeypatch.setattr(nonlinear, "local_linear_states", reference_states)
    reference = fit_dcm(dataclasses.replace(spec))
    assert compiled.n_iterations == reference.n_iterations and compiled.converged
    np.testing.assert_allclose(compiled.Ep_vector, reference.Ep_vector, rtol=0, atol=1e-8)
    np.testing.assert_allclose(compiled.Cp, reference.Cp, rtol=0, atol=1e-9)
    assert compiled.F == pytest.approx(reference.F, abs=1e-6)
    assert compiled.Ep["D"][1, 0, 1] > 1.0


def test_model_structure_used_by_the_compiled_step(model):
    """Haemodynamic rows of the Jacobian do not depend on the inputs, neuronal rows do not
    involve haemodynamic states (the compiled step stores them accordingly)."""
    pE, pV, layout, schedule = model
    theta = _parameter_sets(pE, pV, layout, np.random.default_rng(1))
    M0, M1, _ = bilinear_operators(theta, layout)
    n = layout.n
    assert not np.any(M1[:, :, 1 + n:, :])
    assert not np.any(M0[:, 1:1 + n, 1 + n:]) and not np.any(M1[:, :, 1:1 + n, 1 + n:])


def _stephan_neuronal_flow(x, u, P):
    """dx/dt = (A + Σ_j u_j B_j + Σ_k x_k D_k) x + C u / 16 (Stephan et al. 2008, NeuroImage 42:649),
    with SPM's log self-connections: the diagonal of the bracket enters as -exp(.)/2."""
    E = P["A"][0] + np.einsum("j,jab->ab", u, P["B"][0]) + np.einsum("k,kab->ab", x, P["D"][0])
    r = np.arange(len(x))
    E[r, r] = -np.exp(E[r, r]) / 2
    return E @ x + P["C"][0] @ u / 16


def test_second_order_flow_is_stephan_equation():
    """The integrated flow F(z) z equals the nonlinear state equation exactly for off-diagonal D,
    and to second order in x for gating of a self-connection (SPM's log scale)."""
    layout = ParameterLayout(2, 2, 2)
    B = np.zeros((2, 2, 2))
    B[1, 0, 1] = 0.4
    D = np.zeros((2, 2, 2))
    D[1, 0, 1], D[0, 1, 0] = 2.0, -1.5
    theta = layout.pack(A_TRUE + np.diag([0.2, -0.1]), B, C_TRUE, np.zeros(2), 0.0, 0.0, D)[None]
    P = layout.unpack(theta)
    M0, M1, M2 = bilinear_operators(theta, layout)

    def model_flow(x, u):
        z = np.concatenate([[1.0], x, np.zeros(8)])
        F = M0[0] + np.einsum("j,jab->ab", u, M1[0])
        return F[1:3] @ z + np.einsum("k,kab->ab", x, M2[0]) @ x

    x, u = np.array([0.3, -0.2]), np.array([1.0, 0.0])
    np.testing.assert_allclose(model_flow(x, u), _stephan_neuronal_flow(x, u, P), rtol=1e-9)
    # D on a self-connection: the exponent is expanded to first order, so the error is O(x^2)
    D_self = D.copy()
    D_self[1, 1, 1] = 1.0
    theta_self = layout.pack(A_TRUE, B, C_TRUE, np.zeros(2), 0.0, 0.0, D_self)[None]
    P_self = layout.unpack(theta_self)
    M0, M1, M2 = bilinear_operators(theta_self, layout)
    errors = []
    for scale in (0.1, 0.05):
        xs = scale * np.array([0.5, 1.0])
        errors.append(np.abs(model_flow(xs, u) - _stephan_neuronal_flow(xs, u, P_self)).max())
    assert errors[1] < errors[0] / 6  # third order: halving x divides the error by ~8


def test_discretisation_error_against_accurate_ode_solution():
    """The local-linearisation grid (events + 2 points per scan) against an adaptive ODE solution
    of the same second-order system, strong gating: within 1 % of the peak signal."""
    n_scans = 60
    U = _blocks(n_scans)
    layout = ParameterLayout(2, 2, 2)
    theta = _truth(layout)
    delays = np.array([1.0, 1.0])
    schedule = make_schedule(U, DT, TR, n_scans, delays, nsteps=2)
    y = predict_bold(theta, layout, schedule)

    M0, M1, M2 = bilinear_operators(theta[None], layout)
    n = layout.n

    def flow(_, z, u):
        F = M0[0] + np.einsum("j,jab->ab", u, M1[0])
        F[1:1 + n, 1:1 + n] += np.einsum("k,kab->ab", z[1:1 + n], M2[0])
        return F @ z

    sample_rows = schedule.rows[schedule.sample_index]  # (n_scans, n) micro-time rows
    change = np.flatnonzero(np.any(np.diff(U, axis=0) != 0, axis=1)) + 1
    bounds = np.unique(np.concatenate([[0], change[change < sample_rows.max()], [sample_rows.max()]]))
    z = np.concatenate([[1.0], np.zeros(5 * n)])
    states = {}  # micro-time row -> state at the start of that row
    for start, stop in zip(bounds[:-1], bounds[1:]):  # inputs are constant on [start, stop)
        rows = np.unique(np.append(sample_rows[(sample_rows >= start) & (sample_rows <= stop)], stop))
        sol = solve_ivp(flow, (start * DT, stop * DT), z, args=(U[start],), method="DOP853", rtol=1e-10,
                        atol=1e-12, t_eval=rows * DT)
        states.update(zip(rows, sol.y.T))
        z = sol.y[:, -1]
    regions = np.arange(n)
    lv = np.array([[states[r][1 + 3 * n + j] for j, r in zip(regions, row)] for row in sample_rows])
    lq = np.array([[states[r][1 + 4 * n + j] for j, r in zip(regions, row)] for row in sample_rows])
    y_ode = bold_output(lv, lq, 0.0)
    peak = np.abs(y_ode).max()
    assert peak > 0.5
    assert np.abs(y - y_ode).max() < 0.01 * peak
