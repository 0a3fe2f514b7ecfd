"""Variational Laplace for nonlinear models with Gaussian noise.

Friston, Mattout, Trujillo-Barreto, Ashburner & Penny (2007), "Variational
free energy and the Laplace approximation", NeuroImage 34:220-234; the scheme
of SPM12's ``spm_nlsi_GN``:

* model ``y = g(θ) + X0 β + e`` with ``e_r ~ N(0, exp(-h_r) I)`` for each
  response column r (one precision component per region); optionally
  ``e_r ~ N(0, exp(-h_r) R(ρ_r))`` with ``R`` the correlation matrix of an AR(1)
  process of known coefficient ρ_r (``noise_ar1``; SPM12 has no such option: it
  is ketflow's, for serially correlated residuals, see below);
* Gaussian priors ``θ ~ N(pE, pC)``, an almost flat prior on the confound
  coefficients β (precision 1e-8) and ``h ~ N(hE, hC)``;
* E-step: Gauss-Newton ascent on F with Levenberg-Marquardt-like
  regularisation: the update is ``(expm(t H) - I) H⁻¹ ∂F/∂θ`` with
  ``t = exp(v) / |H|^(1/k)``; ``v`` grows by 1/2 after an increase of F and
  drops by 2 (to at most -4) after a decrease, in which case the previous
  expansion point is restored;
* M-step: up to 8 Fisher-scoring steps on h per iteration, each clipped to ±1
  (``m_step="fisher"``, SPM's), or Newton steps on the observed curvature until
  converged (``m_step="newton"``);
* a prediction or Jacobian that is not finite (an unstable parameter set makes
  the integration overflow) rejects the step: shorter steps from the last
  accepted point, then that point itself; NaN never propagates;
* free energy ``F = L1 + L2 + L3``: accuracy, parameter complexity and
  hyperparameter complexity;
* stop when the predicted increase of F has been below 0.1 four iterations
  in a row, or after ``maxit`` iterations.

With ``noise_ar1``, residuals and Jacobian are whitened per response by the
Prais-Winsten transform scaled to unit marginal variance (``w_0 = e_0``,
``w_t = (e_t - ρ e_{t-1}) / sqrt(1 - ρ²)``, so ``W'W = R⁻¹`` and ``exp(-h)`` stays
the marginal noise variance the hyperprior refers to), and the accuracy term gains
``log|W| = -(n - 1)/2 · log(1 - ρ²)`` per response. With ρ = 0 the scheme is SPM's.

The model Jacobian is taken by forward differences (step e^-8) along the
eigenvectors of the prior covariance with non-zero variance (the free
subspace). All perturbed parameter sets are evaluated in *one* call of the
batched prediction function.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["VLResult", "variational_laplace"]

FD_STEP = np.exp(-8)
CONFOUND_PRECISION = 1e-8


@dataclass
class VLResult:
    """Posterior of a variational Laplace inversion.

    Ep (P,), Cp (P, P): posterior mean and covariance of the parameters.
    Eh (n_resp,): posterior mean log precision of each response column.
    beta (n_resp·k,): confound coefficients. F: free energy (nats).
    prediction (n_samples, n_resp): g(Ep) at the accepted expansion point.
    """

    Ep: np.ndarray
    Cp: np.ndarray
    Eh: np.ndarray
    beta: np.ndarray
    F: float
    n_iterations: int
    converged: bool
    prediction: np.ndarray
    trace: list = field(default_factory=list)


def _logdet_abs(M: np.ndarray) -> float:
    """log|det| over singular values in (1e-16, 1e16), as SPM's logdet convention."""
    keep = np.flatnonzero(np.diag(M))
    if keep.size == 0:
        return 0.0
    s = np.linalg.svd(M[np.ix_(keep, keep)], compute_uv=False)
    s = s[(s > 1e-16) & (s < 1e16)]
    return float(np.log(s).sum())


def _regularised_step(H: np.ndarray, g: np.ndarray, v: float) -> np.ndarray:
    """dx = (expm(t H) - I) H⁻¹ g with t = exp(v - log|H| / k) (H symmetric)."""
    k = g.size
    t = np.exp(v - _logdet_abs(H) / k)
    w, W = np.linalg.eigh((H + H.T) / 2)
    if t > np.exp(16):
        inv = np.where(np.abs(w) > 1e-12 * np.abs(w).max(), 1.0 / w, 0.0)
        return -(W @ (inv * (W.T @ g)))
    tw = t * w
    small = np.abs(tw) < 1e-8
    phi = np.where(small, t * (1 + tw / 2), np.expm1(tw) / np.where(small, 1.0, w))
    return W @ (phi * (W.T @ g))


def _free_subspace(pC: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the range of the prior covariance (free directions)."""
    diag = np.diag(pC)
    if np.count_nonzero(pC - np.diag(diag)) == 0:
        idx = np.flatnonzero(diag > 0)
        V = np.zeros((pC.shape[0], idx.size))
        V[idx, np.arange(idx.size)] = 1.0
        return V
    w, W = np.linalg.eigh(pC)
    return W[:, w > 1e-12 * max(w.max(), 0)]


def _ar1_whitener(rho: np.ndarray, ns: int):
    """Whitening of region-stacked vectors (rows ``r·ns + t``) by AR(1) coefficients ``rho`` (n_resp,).

    Returns ``(whiten, log_det)``: ``whiten(x)`` for x (n_resp·ns,) or (n_resp·ns, q), and
    ``log|W|`` summed over responses (nats).
    """
    rho = np.asarray(rho, dtype=float)
    gain = 1.0 / np.sqrt(1.0 - rho**2)
    nr = rho.size

    def whiten(x):
        x3 = x.reshape(nr, ns, -1)
        out = np.empty_like(x3)
        out[:, 0] = x3[:, 0]
        out[:, 1:] = (x3[:, 1:] - rho[:, None, None] * x3[:, :-1]) * gain[:, None, None]
        return out.reshape(x.shape)

    return whiten, float(-(ns - 1) / 2 * np.log(1.0 - rho**2).sum())


def variational_laplace(y, predict, pE, pC, X0=None, hE=6.0, hC=1.0 / 128, maxit=128, m_step="fisher",
                        noise_ar1=None):
    """Invert ``y = predict(θ) + X0 β + e`` by variational Laplace.

    Parameters
    ----------
    y : array (n_samples, n_resp)
        Data; each column has its own noise precision.
    predict : callable
        ``predict(thetas)`` with thetas (nb, P) returns predictions (nb, n_samples, n_resp).
    pE : array (P,)
    pC : array (P,) variances or (P, P) covariance
    X0 : array (n_samples, k), optional
        Confounds (applied to every response column).
    hE, hC : float or array (n_resp,)
        Prior mean and variance of the log precisions.
    maxit : int
    m_step : {"fisher", "newton"}
        Update of the log precisions in each iteration. "fisher": SPM12's at most 8
        Fisher-scoring steps clipped to ±1 (with a tight hyperprior and noise far above
        its prior expectation these oscillate between two values, and F, evaluated at
        whichever one the last step lands on, can then reject every later parameter
        step). "newton": Newton steps on the observed curvature of the (concave)
        objective in h until they are below 1e-6, so F is evaluated at the optimum of h.
    noise_ar1 : float or array (n_resp,), optional
        Known AR(1) coefficient of each response's noise, in (-1, 1); None or 0: white noise
        (SPM12's model).

    Returns
    -------
    VLResult
    """
    if m_step not in ("fisher", "newton"):
        raise ValueError(f"m_step must be 'fisher' or 'newton', not {m_step!r}")
    y = np.asarray(y, dtype=float)
    ns, nr = y.shape
    ny = ns * nr
    yv = y.T.ravel()  # response columns stacked (SPM's spm_vec order)
    pE = np.asarray(pE, dtype=float)
    pC = np.asarray(pC, dtype=float)
    if pC.ndim == 1:
        pC = np.diag(pC)
    X0 = np.zeros((ns, 0)) if X0 is None else np.asarray(X0, dtype=float).reshape(ns, -1)
    dfdu = np.kron(np.eye(nr), X0)  # (ny, nr·k): one set of confound coefficients per response
    hE = np.broadcast_to(np.asarray(hE, dtype=float), (nr,)).copy()
    ihC = np.eye(nr) / np.broadcast_to(np.asarray(hC, dtype=float), (nr,))

    V = _free_subspace(pC)
    n_p, n_u = V.shape[1], dfdu.shape[1]
    ip, iu = slice(0, n_p), slice(n_p, n_p + n_u)
    ipC = np.zeros((n_p + n_u, n_p + n_u))
    ipC[ip, ip] = np.linalg.inv(V.T @ pC @ V)
    ipC[iu, iu] = np.eye(n_u) * CONFOUND_PRECISION

    # start at the prior mean, confounds at their least-squares fit
    Eu = np.linalg.pinv(dfdu) @ yv if n_u else np.zeros(0)
    p = np.concatenate([np.zeros(n_p), Eu])
    h = hE.copy()
    region = np.repeat(np.arange(nr), ns)
    rho = np.zeros(nr) if noise_ar1 is None else np.broadcast_to(np.asarray(noise_ar1, dtype=float), (nr,))
    if np.any(np.abs(rho) >= 1):
        raise ValueError(f"noise_ar1 must lie in (-1, 1), got {rho}")
    whiten, log_det_whitener = _ar1_whitener(rho, ns)

    def evaluate(p_vec):
        """Prediction and Jacobian at p_vec; ``bad`` when either is not finite or explodes."""
        Ep = pE + V @ p_vec[ip]
        batch = np.vstack([Ep[None, :], Ep[None, :] + FD_STEP * V.T])
        # An unstable parameter set (or one of its finite-difference perturbations) makes the
        # integration overflow; that is detected here and the step rejected, never propagated.
        with np.errstate(all="ignore"):
            out = predict(batch)
            f = out[0].T.ravel()
            dfdp = ((out[1:] - out[0][None]) / FD_STEP).transpose(0, 2, 1).reshape(n_p, ny).T
            norm = np.abs(dfdp).sum(axis=1).max() if dfdp.size else 0.0
        bad = not (np.all(np.isfinite(f)) and np.isfinite(norm)) or norm > np.exp(32)
        return f, dfdp, bad

    best = None  # accepted state
    dFdp = dFdpp = None
    v = -4.0
    criterion = [False] * 4
    trace = []
    F0 = None
    converged = False
    k = 0
    for k in range(1, maxit + 1):
        f, dfdp, bad = evaluate(p)
        if bad and best is not None:
            # SPM-like step rejection: shorter steps from the last accepted point ...
            for _ in range(4):
                v = min(v - 2, -4.0)
                p = best["p"] + _regularised_step(dFdpp, dFdp, v)
                f, dfdp, bad = evaluate(p)
                if not bad:
                    break
            if bad:  # ... and, failing those, the accepted point itself (known to be finite)
                p = best["p"].copy()
                f, dfdp, bad = evaluate(p)
        if bad:
            raise RuntimeError("variational Laplace: the model prediction is not finite at the prior mean")

        e = yv - f - dfdu @ p[iu]
        J = -np.hstack([dfdp, dfdu])
        if np.any(rho):
            e, J = whiten(e), whiten(J)
        # per-response blocks of J'J, J'e and e'e
        JJ = np.stack([J[region == r].T @ J[region == r] for r in range(nr)])
        ee = np.array([e[region == r] @ e[region == r] for r in range(nr)])
        Je = np.stack([J[region == r].T @ e[region == r] for r in range(nr)])

        # M-step on the log precisions
        for _ in range(8 if m_step == "fisher" else 64):
            prec = np.exp(-32) + np.exp(h)
            Pp = np.einsum("r,rij->ij", prec, JJ)
            Cp = np.linalg.inv(Pp + ipC)
            w = np.exp(h) / prec  # trace(P_i S) / ns
            residual = ee + np.einsum("ij,rji->r", Cp, JJ)  # expected sum of squares per response
            dFdh = ns * w / 2 - np.exp(h) * residual / 2
            dFdhh = np.diag(-ns * w**2 / 2)
            d = h - hE
            dFdh = dFdh - ihC @ d
            dFdhh = dFdhh - ihC
            Ch = np.linalg.inv(-dFdhh)
            if m_step == "fisher":
                dh = np.clip(_regularised_step(dFdhh, dFdh, 4.0), -1.0, 1.0)
                h = h + dh
                if dFdh @ dh < 1e-2:
                    break
            else:  # Newton on the observed curvature: the objective is concave in h, no overshoot
                observed = np.diag(-np.exp(h) * residual / 2) - ihC
                dh = np.clip(-np.linalg.solve(observed, dFdh), -1.0, 1.0)
                h = h + dh
                if np.max(np.abs(dh)) < 1e-6:
                    break

        # accuracy (log|iS|/2 with iS = W' diag(prec) W, prec repeated over samples), complexities
        L1 = ns * np.log(prec).sum() / 2 + log_det_whitener - (prec * ee).sum() / 2 - ny * np.log(2 * np.pi) / 2
        L2 = _logdet_abs(ipC @ Cp) / 2 - p @ ipC @ p / 2
        L3 = _logdet_abs(ihC @ Ch) / 2 - d @ ihC @ d / 2
        F = float(L1 + L2 + L3)
        if F0 is None:
            F0 = F

        if best is None or F > best["F"] or k < 3:
            best = {"p": p.copy(), "h": h.copy(), "F": F, "Cp": Cp.copy(), "f": f.copy()}
            dFdp = -np.einsum("r,ri->i", prec, Je) - ipC @ p
            dFdpp = -Pp - ipC
            v = min(v + 0.5, 4.0)
            accepted = True
        else:
            p, h = best["p"].copy(), best["h"].copy()
            v = min(v - 2.0, -4.0)
            accepted = False

        dp = _regularised_step(dFdpp, dFdp, v)
        p = p + dp
        dF = float(dFdp @ dp)
        trace.append({"k": k, "accepted": accepted, "F_minus_F0": best["F"] - F0, "dF_predicted": dF, "F": F})
        criterion = [dF < 1e-1] + criterion[:-1]
        if all(criterion):
            converged = True
            break

    Ep = pE + V @ best["p"][ip]
    Cp = V @ best["Cp"][ip, ip] @ V.T
    return VLResult(
        Ep=Ep,
        Cp=(Cp + Cp.T) / 2,
        Eh=best["h"],
        beta=best["p"][iu],
        F=best["F"],
        n_iterations=k,
        converged=converged,
        prediction=best["f"].reshape(nr, ns).T,
        trace=trace,
    )
