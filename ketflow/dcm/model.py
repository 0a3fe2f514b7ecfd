"""Generative model of deterministic one-state DCM for fMRI (SPM12 conventions).

Neuronal states (Friston, Harrison & Penny 2003, NeuroImage 19:1273):

    dx/dt = (A + Σ_j u_j B_j + Σ_k x_k D_k) x + (C / 16) u

with log-scaled self-connections: the rate of region i's self-connection is
``-exp(A_ii + Σ_j u_j B_jii) / 2`` (Hz), so ``A_ii = 0`` means -0.5 Hz.

Hemodynamics per region (balloon model; Buxton et al. 1998; Friston et al.
2000; Stephan et al. 2007, NeuroImage 38:387), on log flow/volume/dHb:

    ds/dt     = x - κ s - γ (f - 1)                   κ = 0.64·exp(decay) Hz, γ = 0.32 Hz
    dln f/dt  = s / f
    dln v/dt  = (f - v^(1/α)) / (τ v)                 τ = 2·exp(transit_i) s, α = 0.32
    dln q/dt  = (f E(f)/E0 - v^(1/α) q / v) / (τ q)   E(f) = 1 - (1 - E0)^(1/f), E0 = 0.4

BOLD (Stephan et al. 2007, Eq. 12; per cent signal change with V0 = 4):

    y = V0 [k1 (1 - q) + k2 (1 - q/v) + k3 (1 - v)]
    k1 = 4.3 ϑ0 E0 TE,  k2 = ε r0 E0 TE,  k3 = 1 - ε,   ε = exp(epsilon)
    ϑ0 = 40.3 Hz, r0 = 25 Hz, TE = 0.04 s.

As in SPM12's deterministic DCM, the state equation is integrated through its
*bilinear approximation* around rest (all states 0, u = 0): with the
augmented state z = [1; x; s; ln f; ln v; ln q],

    dz/dt = (M0 + Σ_j u_j M1_j) z,

where M0 is the Jacobian at rest and M1_j its derivative with respect to input
j (Friston 2002, NeuroImage 16:513), both by finite differences as SPM12's
``spm_bireduce``. The output nonlinearity is kept exact.
With nonlinear (D) terms the neuronal Jacobian is also made state-dependent
(second-order expansion), see :mod:`ketflow.dcm.integrate`.

Parameter vector (SPM order, column-major within each block):
A (n·n), B (n·n·m), C (n·m), D (n·n·n_d), transit (n), decay (1), epsilon (1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "HEMO",
    "ParameterLayout",
    "bilinear_operators",
    "bold_output",
    "state_flow",
]

#: Fixed hemodynamic and BOLD constants of SPM12 (units in comments).
HEMO = {
    "kappa": 0.64,  # signal decay rate κ (Hz)
    "gamma": 0.32,  # flow-dependent elimination (autoregulation) γ (Hz)
    "tau": 2.00,  # transit time τ (s)
    "alpha": 0.32,  # Grubb's exponent α (unitless)
    "E0": 0.4,  # resting oxygen extraction fraction (unitless)
    "V0": 4.0,  # resting venous blood volume fraction (%)
    "nu0": 40.3,  # frequency offset at the outer surface of magnetised vessels (Hz)
    "r0": 25.0,  # slope of intravascular relaxation rate vs oxygen saturation (Hz)
    "TE": 0.04,  # echo time used by SPM12's observation equation (s)
    "input_scale": 16.0,  # C is divided by this (SPM12 convention)
}


@dataclass(frozen=True)
class ParameterLayout:
    """Index layout of the SPM parameter vector for n regions, m inputs, n_d D-slices."""

    n: int
    m: int
    n_d: int = 0

    @property
    def sl_A(self) -> slice:
        return slice(0, self.n * self.n)

    @property
    def sl_B(self) -> slice:
        s = self.sl_A.stop
        return slice(s, s + self.n * self.n * self.m)

    @property
    def sl_C(self) -> slice:
        s = self.sl_B.stop
        return slice(s, s + self.n * self.m)

    @property
    def sl_D(self) -> slice:
        s = self.sl_C.stop
        return slice(s, s + self.n * self.n * self.n_d)

    @property
    def sl_transit(self) -> slice:
        s = self.sl_D.stop
        return slice(s, s + self.n)

    @property
    def i_decay(self) -> int:
        return self.sl_transit.stop

    @property
    def i_epsilon(self) -> int:
        return self.i_decay + 1

    @property
    def size(self) -> int:
        return self.i_epsilon + 1

    def names(self) -> list[str]:
        """Parameter labels in vector order (as spec.json ``param_order``)."""
        n, m = self.n, self.m
        out = [f"A_to{i + 1}_from{j + 1}" for j in range(n) for i in range(n)]
        out += [f"B_to{i + 1}_from{j + 1}_in{k + 1}" for k in range(m) for j in range(n) for i in range(n)]
        out += [f"C_to{i + 1}_in{k + 1}" for k in range(m) for i in range(n)]
        out += [
            f"D_to{i + 1}_from{j + 1}_by{k + 1}" for k in range(self.n_d) for j in range(n) for i in range(n)
        ]
        out += [f"transit_{i + 1}" for i in range(n)] + ["decay", "epsilon"]
        return out

    def unpack(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Split a parameter vector (..., size) into named arrays.

        Returns A (..., n, n), B (..., m, n, n) [input, to, from], C (..., n, m),
        D (..., n_d, n, n) [state, to, from], transit (..., n), decay (...), epsilon (...).
        """
        n, m, nd = self.n, self.m, self.n_d
        lead = theta.shape[:-1]

        def col_major(block, shape):
            # SPM vectorises column-major: reshape Fortran-style in the trailing dims.
            arr = block.reshape(*lead, *shape[::-1])
            return np.swapaxes(arr, -1, -2) if len(shape) == 2 else arr

        A = col_major(theta[..., self.sl_A], (n, n))
        B = theta[..., self.sl_B].reshape(*lead, m, n, n).swapaxes(-1, -2)
        C = col_major(theta[..., self.sl_C], (n, m))
        D = theta[..., self.sl_D].reshape(*lead, nd, n, n).swapaxes(-1, -2)
        return {
            "A": A,
            "B": B,
            "C": C,
            "D": D,
            "transit": theta[..., self.sl_transit],
            "decay": theta[..., self.i_decay],
            "epsilon": theta[..., self.i_epsilon],
        }

    def pack(self, A, B, C, transit, decay, epsilon, D=None) -> np.ndarray:
        """Inverse of :meth:`unpack` for a single parameter set (1-D output)."""
        n, m, nd = self.n, self.m, self.n_d
        A = np.asarray(A, float).reshape(n, n)
        B = np.asarray(B, float).reshape(m, n, n)
        C = np.asarray(C, float).reshape(n, m)
        D = np.zeros((0, n, n)) if D is None else np.asarray(D, float).reshape(nd, n, n)
        return np.concatenate(
            [
                A.ravel(order="F"),
                B.transpose(0, 2, 1).ravel(),
                C.ravel(order="F"),
                D.transpose(0, 2, 1).ravel(),
                np.broadcast_to(np.asarray(transit, float), (n,)),
                [float(decay), float(epsilon)],
            ]
        )


def state_flow(z, u, P, n):
    """Nonlinear state equation dz/dt of the one-state DCM (without D terms).

    Parameters
    ----------
    z : array (nb, K, 5n)
        States [x, s, ln f, ln v, ln q] (each n wide) for K evaluation points.
    u : array (nb, K, m)
        Inputs.
    P : dict
        Unpacked parameters (see :meth:`ParameterLayout.unpack`), batch nb.
    n : int
        Number of regions.

    Returns
    -------
    array (nb, K, 5n), units 1/s (per second change of each state).
    """
    H = HEMO
    x, s, lf, lv, lq = (z[..., i * n:(i + 1) * n] for i in range(5))
    r = np.arange(n)
    EE = P["A"][:, None] + np.einsum("bkm,bmij->bkij", u, P["B"])
    EE[..., r, r] = -np.exp(EE[..., r, r]) / 2  # log self-inhibition
    fx = np.einsum("bkij,bkj->bki", EE, x) + np.einsum("bim,bkm->bki", P["C"], u) / H["input_scale"]
    f, v, q = np.exp(lf), np.exp(lv), np.exp(lq)
    kappa = H["kappa"] * np.exp(P["decay"])[:, None, None]
    tau = H["tau"] * np.exp(P["transit"])[:, None, :]
    alpha, E0 = H["alpha"], H["E0"]
    outflow = v ** (1.0 / alpha)
    extraction = (1.0 - (1.0 - E0) ** (1.0 / f)) / E0
    fs = x - kappa * s - H["gamma"] * (f - 1.0)
    flf = s / f
    flv = (f - outflow) / (tau * v)
    flq = (f * extraction - outflow * q / v) / (tau * q)
    return np.concatenate([fx, fs, flf, flv, flq], axis=-1)


#: Finite-difference step of the bilinear reduction (as SPM's spm_diff).
FD_STEP = np.exp(-8)


def bilinear_operators(theta: np.ndarray, layout: ParameterLayout):
    """Bilinear operators of the DCM state equation around rest.

    As SPM12 (``spm_bireduce``), M0 = ∂f/∂z and M1_j = ∂²f/∂z∂u_j at rest are
    taken by forward differences with step e^-8 of :func:`state_flow`; this
    reproduces SPM's predictions to ~1e-14 (the exact derivatives differ from
    them by ~5e-4 relative).

    Parameters
    ----------
    theta : array (nb, P)
        Batch of parameter vectors in SPM order.
    layout : ParameterLayout

    Returns
    -------
    M0 : array (nb, 1 + 5n, 1 + 5n)
        Jacobian at rest of the augmented system z = [1; x; s; ln f; ln v; ln q] (1/s).
    M1 : array (nb, m, 1 + 5n, 1 + 5n)
        Derivative of the Jacobian with respect to each input.
    M2 : array (nb, n_d, n, n)
        Neuronal operators of the nonlinear terms: D_k with its diagonal acting
        on the log self-inhibition (d(-exp(a_ii)/2)/dx_k = -D_kii exp(a_ii)/2).
    """
    n, m = layout.n, layout.m
    P = layout.unpack(theta)
    nb = theta.shape[0]
    N = 5 * n
    probes = np.zeros((1 + N, N))
    probes[1:] = np.eye(N) * FD_STEP

    def jacobian(u):
        F = state_flow(np.broadcast_to(probes, (nb, 1 + N, N)), np.broadcast_to(u, (nb, 1 + N, m)), P, n)
        return np.swapaxes(F[:, 1:] - F[:, :1], 1, 2) / FD_STEP, F[:, 0]

    J0, f0 = jacobian(np.zeros(m))
    M0 = np.zeros((nb, 1 + N, 1 + N))
    M0[:, 1:, 1:] = J0
    M0[:, 1:, 0] = f0
    M1 = np.zeros((nb, m, 1 + N, 1 + N))
    for j in range(m):
        Jj, fj = jacobian(np.eye(m)[j] * FD_STEP)
        M1[:, j, 1:, 1:] = (Jj - J0) / FD_STEP
        M1[:, j, 1:, 0] = (fj - f0) / FD_STEP

    r = np.arange(n)
    M2 = P["D"].copy()
    M2[:, :, r, r] = -P["D"][:, :, r, r] * (np.exp(P["A"][:, r, r]) / 2)[:, None, :]
    return M0, M1, M2


def bold_output(lv: np.ndarray, lq: np.ndarray, epsilon: np.ndarray, TE: float = HEMO["TE"]) -> np.ndarray:
    """BOLD signal change (%) from log venous volume and log dHb.

    lv, lq : arrays (..., n) of ln v and ln q; epsilon : array broadcastable to
    ``lv[..., :1]`` (log ratio of intra- to extravascular signal).
    """
    H = HEMO
    ep = np.exp(epsilon)
    k1 = 4.3 * H["nu0"] * H["E0"] * TE
    k2 = ep * H["r0"] * H["E0"] * TE
    k3 = 1.0 - ep
    v, q = np.exp(lv), np.exp(lq)
    return H["V0"] * (k1 * (1.0 - q) + k2 * (1.0 - q / v) + k3 * (1.0 - v))
