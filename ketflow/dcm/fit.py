"""Fit a deterministic one-state DCM for fMRI (SPM12's ``spm_dcm_estimate``).

Friston, Harrison & Penny (2003) "Dynamic causal modelling", NeuroImage
19:1273-1302; estimation by variational Laplace (Friston et al. 2007,
NeuroImage 34:220-234), see :mod:`ketflow.dcm.vl`. Data are preprocessed as
in :func:`ketflow.dcm.spec.preprocess_data`; priors are those of
:func:`ketflow.dcm.priors.dcm_fmri_priors`.

Posterior probabilities follow SPM12: ``Pp = P(|θ| > prior mean)`` under the
Gaussian posterior, i.e. ``Φ((|Ep| - pE) / sd)``, which is P(θ ≠ 0) in the
usual sense for every parameter whose prior mean is 0 (for switched-on
off-diagonal A, whose prior mean is 1/128 Hz, the threshold is 1/128).

Serially correlated noise (``options.noise = "ar1"``, not in SPM12): a deterministic DCM's
residuals carry whatever the model leaves out -- spontaneous neuronal fluctuations, smooth
physiological noise -- filtered by the haemodynamics, so they are autocorrelated, and the
i.i.d. likelihood then counts every scan as independent evidence and makes the posterior
overconfident. The model is first inverted with white noise; each region's lag-1
autocorrelation of the residuals (after the confounds) gives its AR(1) coefficient
(Yule-Walker, clipped to [0, 0.9]: a negative estimate is set to 0 so that sampling noise
cannot narrow the intervals), and the model is inverted again from the prior with that
noise correlation (:func:`ketflow.dcm.vl.variational_laplace`), as a GLM is refitted after
estimating AR(1) from its OLS residuals (Friston et al. 2002, NeuroImage 16:484-512; as
nilearn's ``FirstLevelModel(noise_model="ar1")``). The hyperprior keeps its meaning (the
marginal noise variance).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import norm

from .integrate import make_schedule, predict_bold
from .model import HEMO, ParameterLayout
from .priors import constrain_to_modes, dcm_fmri_priors, mode_projection
from .spec import DCMSpec, preprocess_data

from .vl import variational_laplace

LOGGER = logging.getLogger("ketflow.dcm")

__all__ = ["DCMResult", "fit_dcm"]

Z90 = norm.ppf(0.95)


def _posterior_probability(Ep, Vp, pE):
    with np.errstate(divide="ignore", invalid="ignore"):
        Pp = norm.cdf((np.abs(Ep) - pE) / np.sqrt(Vp))
    return np.where(Vp > 0, Pp, np.nan)


@dataclass
class DCMResult:
    """Posterior of a fitted DCM.

    Ep, Vp, Pp : dict of arrays A (n, n) [to, from], B (m, n, n) [input, to,
        from], C (n, m) [to, input], D (n_d, n, n), transit (n,), decay (),
        epsilon (): posterior means, variances and posterior probabilities.
    Ep_vector, Vp_vector, Pp_vector, prior_mean, prior_var : arrays (P,) in
        SPM's parameter order (``param_names``).
    Cp, prior_cov : arrays (P, P) posterior and prior covariance.
    masks : dict of the model's masks a, b, c, d.
    mode_projection : array (n, n) or None, the principal-mode projector used
        to constrain A's prior when n > ``options.maxnodes``.
    F : free energy (nats), approximate log evidence.
    y_predicted : array (n_scans, n) model prediction (preprocessed units,
        without confounds); Y : the preprocessed data; scale : SPM's data scaling.
    noise_variance : array (n,) = exp(-Eh); Eh : log noise precisions.
    noise_ar1 : array (n,) AR(1) coefficient of each region's noise (zeros for ``noise="iid"``).
    trace : per-iteration records (accepted, F - F0, predicted dF).
    """

    region_names: list
    input_names: list
    param_names: list
    layout: ParameterLayout
    Ep: dict
    Vp: dict
    Pp: dict
    Ep_vector: np.ndarray
    Vp_vector: np.ndarray
    Pp_vector: np.ndarray
    Cp: np.ndarray
    prior_mean: np.ndarray
    prior_var: np.ndarray
    prior_cov: np.ndarray
    masks: dict
    mode_projection: np.ndarray | None
    F: float
    n_iterations: int
    converged: bool
    y_predicted: np.ndarray
    Y: np.ndarray
    scale: float
    confounds_beta: np.ndarray
    noise_variance: np.ndarray
    Eh: np.ndarray
    noise_ar1: np.ndarray | None = None
    trace: list = field(default_factory=list)
    elapsed_s: float = math.nan

    def parameter_table(self):
        """One row per parameter: name, prior mean/var, posterior mean, sd, 90% CI, Pp.

        Returns a pandas DataFrame in SPM's parameter order; ``free`` marks
        parameters with non-zero prior variance.
        """
        import pandas as pd

        sd = np.sqrt(np.clip(self.Vp_vector, 0, None))
        return pd.DataFrame(
            {
                "name": self.param_names,
                "prior_mean": self.prior_mean,
                "prior_var": self.prior_var,
                "posterior_mean": self.Ep_vector,
                "posterior_sd": sd,
                "ci90_low": self.Ep_vector - Z90 * sd,
                "ci90_high": self.Ep_vector + Z90 * sd,
                "Pp": self.Pp_vector,
                "free": self.prior_var > 0,
            }
        )

    def to_dict(self) -> dict:
        """JSON-ready summary (NaN becomes None)."""

        def clean(x):
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [clean(v) for v in x]
            if isinstance(x, np.ndarray):
                return clean(x.tolist())
            if isinstance(x, (np.floating, float)):
                return None if not np.isfinite(x) else float(x)
            if isinstance(x, (np.integer,)):
                return int(x)
            if isinstance(x, np.bool_):
                return bool(x)
            return x

        table = self.parameter_table()
        return clean(
            {
                "region_names": self.region_names,
                "input_names": self.input_names,
                "F": self.F,
                "n_iterations": self.n_iterations,
                "converged": self.converged,
                "Ep": self.Ep,
                "Sd": {k: np.sqrt(np.clip(v, 0, None)) for k, v in self.Vp.items()},
                "Vp": self.Vp,
                "Pp": self.Pp,
                "noise_variance": self.noise_variance,
                "noise_ar1": self.noise_ar1,
                "data_scale": self.scale,
                "parameters": table.to_dict(orient="records"),
                "param_names": self.param_names,
                "Ep_vector": self.Ep_vector,
                "Cp": self.Cp,
                "prior_mean": self.prior_mean,
                "prior_cov": self.prior_cov,
                "trace": self.trace,
            }
        )


def _confound_fit(X0, beta, shape) -> np.ndarray:
    """X0 β per region (n_scans, n_regions); zeros without confounds."""
    if X0 is None or np.size(beta) == 0:
        return np.zeros(shape)
    X0 = np.asarray(X0, dtype=float).reshape(shape[0], -1)
    return X0 @ np.asarray(beta).reshape(shape[1], -1).T


def residual_ar1(residuals: np.ndarray, max_rho: float = 0.9) -> np.ndarray:
    """Lag-1 Yule-Walker autocorrelation of each column of ``residuals`` (n_scans, n), clipped to [0, max_rho]."""
    e = residuals - residuals.mean(axis=0)
    rho = (e[1:] * e[:-1]).sum(axis=0) / np.maximum((e * e).sum(axis=0), np.finfo(float).tiny)
    return np.clip(rho, 0.0, max_rho)


def fit_dcm(spec: DCMSpec) -> DCMResult:
    """Invert a DCM for fMRI by variational Laplace (SPM12 conventions).

    Parameters
    ----------
    spec : DCMSpec

    Returns
    -------
    DCMResult
    """
    start = time.perf_counter()
    Y, scale = preprocess_data(spec.Y)
    pE, pV, layout = dcm_fmri_priors(spec.a, spec.b, spec.c, spec.d)
    pC = np.diag(pV)
    projection = None
    if layout.n > spec.options.maxnodes:
        projection = mode_projection(Y, spec.X0, spec.options.maxnodes)
        pC = constrain_to_modes(pC, projection, layout)
    nsteps = round(max(spec.TR, 1)) if layout.n_d else 0
    schedule = make_schedule(spec.processed_inputs(), spec.U_dt, spec.TR, spec.n_scans, spec.delays, nsteps=nsteps)
    TE = spec.TE if spec.options.use_acquisition_te else HEMO["TE"]
    opts = spec.options
    if opts.noise not in ("iid", "ar1"):
        raise ValueError(f"options.noise must be 'iid' or 'ar1', not {opts.noise!r}")

    def invert(noise_ar1):
        return variational_laplace(
            Y,
            lambda thetas: predict_bold(thetas, layout, schedule, TE=TE),
            pE,
            pC,
            X0=spec.X0,
            hE=opts.hE,
            hC=opts.hC,
            maxit=opts.maxit,
            m_step=opts.m_step,
            noise_ar1=noise_ar1,
        )

    post = invert(None)
    noise_ar1 = np.zeros(layout.n)
    if opts.noise == "ar1":
        noise_ar1 = residual_ar1(Y - post.prediction - _confound_fit(spec.X0, post.beta, Y.shape))
        post = invert(noise_ar1)
    Vp = np.clip(np.diag(post.Cp), 0, None)
    Pp = _posterior_probability(post.Ep, Vp, pE)
    y_pred = predict_bold(post.Ep, layout, schedule, TE=TE)

    def as_dict(vec):
        parts = layout.unpack(vec)
        parts["decay"] = float(parts["decay"])
        parts["epsilon"] = float(parts["epsilon"])
        return parts

    elapsed_s = time.perf_counter() - start
    # Logged, not written: outputs must not depend on the machine's speed (byte-identical reruns).
    LOGGER.info("DCM inverted in %.1f s (%d iterations)", elapsed_s, post.n_iterations)
    return DCMResult(
        region_names=list(spec.region_names),
        input_names=list(spec.input_names),
        param_names=layout.names(),
        layout=layout,
        Ep=as_dict(post.Ep),
        Vp=as_dict(Vp),
        Pp=as_dict(Pp),
        Ep_vector=post.Ep,
        Vp_vector=Vp,
        Pp_vector=Pp,
        Cp=post.Cp,
        prior_mean=pE,
        prior_var=np.diag(pC).copy(),
        prior_cov=pC,
        masks={"a": spec.a.copy(), "b": spec.b.copy(), "c": spec.c.copy(),
               "d": None if spec.d is None else spec.d.copy()},
        mode_projection=projection,
        F=post.F,
        n_iterations=post.n_iterations,
        converged=post.converged,
        y_predicted=y_pred,
        Y=Y,
        scale=scale,
        confounds_beta=post.beta,
        noise_variance=np.exp(-post.Eh),
        Eh=post.Eh,
        noise_ar1=noise_ar1,
        trace=post.trace,
        elapsed_s=elapsed_s,
    )
