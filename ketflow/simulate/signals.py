"""Noise-free ROI BOLD signals (percent signal change) of the simulated runs.

Conventions: scan i is sampled at ``i * tr + start_time`` seconds (the slice-timing reference of
the derivatives' ``StartTime``) on the micro-time grid ``dt = tr / 16``. Activations are built
with ketflow's own first-level design (:func:`ketflow.signal.design.make_task_design`, SPM
canonical HRF, Friston et al. 1998, NeuroImage 7:30-40), so each stored amplitude is the GLM
beta that ketflow's first level fitted to noise-free data returns. The faces DCM regions come
from :func:`ketflow.dcm.simulate_bold` (Friston et al. 2003, NeuroImage 19:1273-1302).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter1d

from ketflow.dcm import simulate_bold
from ketflow.signal.design import make_task_design
from ketflow.signal.hrf import spm_canonical_hrf

MICROTIME = 16
REST_LEAD_S = 32.0
REST_SMOOTHING_S = 1.0
CONFLICT_DERIVED = (
    {"name": "iI", "trial_type": "incongruent", "previous": "incongruent"},
    {"name": "cI", "trial_type": "incongruent", "previous": "congruent"},
)


def smooth_noise(rng: np.random.Generator, n: int, dt: float, sigma_s: float, sd: float) -> np.ndarray:
    """Zero-mean Gaussian-smoothed white noise (n,) rescaled to standard deviation ``sd``."""
    x = gaussian_filter1d(rng.standard_normal(n), sigma_s / dt, mode="wrap")
    return sd * (x - x.mean()) / x.std()


def task_regressors(events: pd.DataFrame, conditions: list[str], n_scans: int, tr: float,
                    start_time: float, derived=()) -> pd.DataFrame:
    """HRF-convolved condition regressors (n_scans, n_columns) of ketflow's first-level design."""
    design = make_task_design(events, tr, n_scans, conditions, derived, start_time=start_time,
                              high_pass=None)
    return design.matrix[design.columns]


def _weighted_sum(regs: pd.DataFrame, amps: dict) -> np.ndarray:
    return sum(amp * regs[c].to_numpy() for c, amp in amps.items() if c in regs)


def boxcar(events: pd.DataFrame, trial_types: list[str], n_micro: int, dt: float) -> np.ndarray:
    """Indicator (n_micro,) on the micro-time grid t = k*dt of the events of ``trial_types``."""
    t = np.arange(n_micro) * dt
    u = np.zeros(n_micro)
    for onset, dur, tt in zip(events["onset"], events["duration"], events["trial_type"]):
        if tt in trial_types:
            u[(t >= onset) & (t < onset + dur)] = 1.0
    return u


def faces_inputs(events: pd.DataFrame, dcm: dict, n_scans: int, tr: float,
                 rng: np.random.Generator) -> np.ndarray:
    """DCM inputs U (n_scans * 16, 4) on the micro-time grid: faces, fearful, endogenous L/R."""
    n_micro = n_scans * MICROTIME
    dt = tr / MICROTIME
    u = np.zeros((n_micro, len(dcm["inputs"])))
    u[:, 0] = boxcar(events, ["fearful", "neutral"], n_micro, dt)
    u[:, 1] = boxcar(events, ["fearful"], n_micro, dt)
    for j in (2, 3):
        u[:, j] = smooth_noise(rng, n_micro, dt, dcm["endogenous_smoothing_s"], dcm["endogenous_sd"])
    return u


def neuronal_states(dcm: dict, u: np.ndarray, dt: float) -> np.ndarray:
    """Neuronal states x (n_micro, n_regions) of the bilinear DCM, forward Euler on the
    micro-time grid: dx/dt = (A + sum_j u_j B_j) x + C u / 16, diagonal of A as -exp(A_ii)/2."""
    a = np.asarray(dcm["A"], dtype=float)
    a = a - np.diag(np.diag(a)) - np.diag(np.exp(np.diag(a)) / 2.0)
    b = np.asarray(dcm["B"], dtype=float)
    c = np.asarray(dcm["C"], dtype=float) / 16.0
    x = np.zeros((len(u), a.shape[0]))
    for k in range(1, len(u)):
        jac = a + np.tensordot(u[k - 1], b, axes=1)
        x[k] = x[k - 1] + dt * (jac @ x[k - 1] + c @ u[k - 1])
    return x


def faces_signals(events: pd.DataFrame, truth: dict, n_scans: int, tr: float, start_time: float,
                  rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    """ROI signals of a faces run: the DCM regions from ``simulate_bold``, others from activations.

    Returns ({roi: (n_scans,) percent}, U (n_scans * 16, 4)).
    """
    dcm = truth["dcm"]
    u = faces_inputs(events, dcm, n_scans, tr, rng)
    bold = simulate_bold(
        np.asarray(dcm["A"]), np.asarray(dcm["B"]), np.asarray(dcm["C"]), u,
        dt=tr / MICROTIME, TR=tr, n_scans=n_scans,
        transit=np.asarray(dcm["transit"]), decay=dcm["decay"], epsilon=dcm["epsilon"],
        delays=np.full(len(dcm["regions"]), start_time),
    )
    signals = {name: np.asarray(bold[:, i], dtype=float) for i, name in enumerate(dcm["regions"])}
    regs = faces_regressors(events, n_scans, tr, start_time)
    for roi, amps in truth["activation"].items():
        signals[roi] = _weighted_sum(regs, amps)
    return signals, u


def faces_regressors(events: pd.DataFrame, n_scans: int, tr: float, start_time: float):
    """Condition regressors (n_scans, 3) of a faces run: fearful, neutral, shapes."""
    return task_regressors(events, ["fearful", "neutral", "shapes"], n_scans, tr, start_time)


def conflict_regressors(events: pd.DataFrame, n_scans: int, tr: float, start_time: float):
    """Condition regressors of a conflict run: congruent, iI, cI."""
    return task_regressors(events, ["congruent", "incongruent"], n_scans, tr, start_time,
                           CONFLICT_DERIVED)


def noise_free_ppi(signals: dict, u: np.ndarray, events: pd.DataFrame, dcm: dict, n_scans: int,
                   tr: float, start_time: float, target: str = "vmPFC") -> dict:
    """gPPI betas of the noise-free ``target`` BOLD for each amygdala seed (McLaren et al. 2012).

    Regressors: HRF * (fearful, neutral, shapes boxcars, seed neuronal state, seed x fearful,
    seed x neutral) and a constant, all on the micro-time grid read at the scan times; the seed's
    neuronal state comes from :func:`neuronal_states`. Returns {seed: {fearful, neutral,
    fearful_minus_neutral}} interaction betas (percent per unit neuronal state); None for a
    condition absent from the run.
    """
    dt = tr / MICROTIME
    x = neuronal_states(dcm, u, dt)
    h = spm_canonical_hrf(dt)
    rows = np.arange(n_scans) * MICROTIME + round(start_time / dt)
    box = {c: boxcar(events, [c], len(u), dt) for c in ("fearful", "neutral", "shapes")}
    y = signals[target]
    out = {}
    for seed in ("amygdala_L", "amygdala_R"):
        s = x[:, dcm["regions"].index(seed)]
        micro = [box["fearful"], box["neutral"], box["shapes"], s, s * box["fearful"],
                 s * box["neutral"]]
        design = np.column_stack([np.convolve(m, h)[: len(u)][rows] for m in micro]
                                 + [np.ones(n_scans)])
        present = np.ptp(design, axis=0) > 0
        present[-1] = True
        beta = np.full(design.shape[1], np.nan)
        beta[present] = np.linalg.lstsq(design[:, present], y, rcond=None)[0]
        fear = None if np.isnan(beta[4]) else float(beta[4])
        neut = None if np.isnan(beta[5]) else float(beta[5])
        out[seed] = {"fearful": fear, "neutral": neut,
                     "fearful_minus_neutral": None if fear is None or neut is None else fear - neut}
    return out


def noise_free_betas(signals: dict, regressors: pd.DataFrame) -> dict:
    """OLS betas {roi: {column: beta}} of noise-free signals on condition regressors + constant."""
    x = np.column_stack([regressors.to_numpy(), np.ones(len(regressors))])
    y = np.column_stack([signals[k] for k in signals])
    beta = np.linalg.lstsq(x, y, rcond=None)[0]
    return {roi: {c: float(beta[j, i]) for j, c in enumerate(regressors.columns)}
            for i, roi in enumerate(signals)}


def conflict_signals(events: pd.DataFrame, truth: dict, n_scans: int, tr: float,
                     start_time: float) -> dict:
    """ROI signals (percent) of a conflict run from per-column amplitudes (congruent, iI, cI)."""
    regs = conflict_regressors(events, n_scans, tr, start_time)
    return {roi: _weighted_sum(regs, amps) for roi, amps in truth["activation"].items()}


def rest_signals(truth: dict, n_scans: int, tr: float, start_time: float,
                 rng: np.random.Generator) -> dict:
    """Correlated slow neural fluctuations (population correlation ``truth['coupling']``),
    low-passed (Gaussian, sigma 1 s), convolved with the SPM HRF, read at the frame times and
    scaled to SD ``truth['amplitude_percent']`` per ROI. A common filter keeps the expected
    correlation of the BOLD signals equal to the neuronal one."""
    names = truth["roi_order"]
    dt = tr / MICROTIME
    n_lead = round(REST_LEAD_S / dt)
    n_micro = n_scans * MICROTIME + n_lead
    chol = np.linalg.cholesky(np.asarray(truth["coupling"]))
    z = rng.standard_normal((n_micro, len(names))) @ chol.T
    z = gaussian_filter1d(z, REST_SMOOTHING_S / dt, axis=0)
    h = spm_canonical_hrf(dt)
    rows = n_lead + np.arange(n_scans) * MICROTIME + round(start_time / dt)
    out = {}
    for i, name in enumerate(names):
        y = np.convolve(z[:, i], h)[:n_micro][rows]
        out[name] = truth["amplitude_percent"] * (y - y.mean()) / y.std()
    return out
