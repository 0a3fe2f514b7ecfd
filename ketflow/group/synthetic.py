"""Synthetic group-level data with known effects, for recovery tests and benchmarks.

:func:`synthetic_change_table` makes a feature table (as
:func:`ketflow.group.features.build_feature_table` returns) whose clinical
change depends on two imaging change scores and, optionally, on an arm ×
feature interaction.  :func:`synthetic_dcm_posteriors` makes exact Gaussian
first-level DCM posteriors of subjects whose parameters follow a known
second-level GLM (the PEB model of Friston et al. 2016, NeuroImage 128:413).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["ARMS", "synthetic_change_table", "FirstLevel", "synthetic_dcm_posteriors"]

#: (control, active) arm labels used by the generators.
ARMS = ("midazolam", "ketamine")


def synthetic_change_table(n: int = 60, p: int = 20, *, interaction: float = 1.0, noise: float = 1.0,
                           seed: int = 0, outcome: str = "caps5_total__change") -> pd.DataFrame:
    """Feature table with ``p`` imaging change features ``f00__change`` … (standard normal).

    outcome = 8 · (1.0·f00 − 0.8·f01 + 2·interaction·a·f02 + noise·ε), with a = +0.5
    (ketamine) / −0.5 (midazolam): f00 and f01 are the true drivers, and f02 has
    slope +interaction in the ketamine arm and −interaction in the midazolam arm
    (no main effect).  Columns: subject, arm, the features, age (unrelated), outcome.
    """
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    arm = np.array([ARMS[i % 2] for i in range(n)])
    a = np.where(arm == ARMS[1], 0.5, -0.5)
    y = 1.0 * X[:, 0] - 0.8 * X[:, 1] + 2 * interaction * a * X[:, 2] + noise * rng.normal(size=n)
    table = pd.DataFrame(X, columns=[f"f{j:02d}__change" for j in range(p)])
    table.insert(0, "subject", [f"{i:02d}" for i in range(n)])
    table.insert(1, "arm", arm)
    table["age"] = rng.normal(40, 10, n)
    table[outcome] = 8 * y
    return table


@dataclass(frozen=True)
class FirstLevel:
    """Exact first-level posteriors qE (N, P), qC (N, P, P) under the prior
    N(pE, pC); the pseudo-data y (N, P) and likelihood precisions lam (N, P, P)
    they came from; the subjects' true parameters theta (N, P)."""

    qE: np.ndarray
    qC: np.ndarray
    y: np.ndarray
    lam: np.ndarray
    theta: np.ndarray


def synthetic_dcm_posteriors(B: np.ndarray, X: np.ndarray, pE: np.ndarray, pC: np.ndarray, *,
                             between_scale: float = 1 / 16, likelihood_precision: float = 100.0,
                             seed: int = 0) -> FirstLevel:
    """Subjects with θ_i = Bᵀ X_i + ε_i, ε_i ~ N(0, between_scale · pC), seen through a
    Gaussian likelihood of subject-specific precision (mean ≈ likelihood_precision · I,
    random correlations), so that the posteriors are exact (linear-Gaussian).

    B : (K, P) second-level effects; X : (N, K) design; pE, pC : first-level prior.
    """
    rng = np.random.default_rng(seed)
    n, n_par = X.shape[0], B.shape[1]
    theta = X @ B + rng.multivariate_normal(np.zeros(n_par), between_scale * pC, size=n)
    prior_prec = np.linalg.inv(pC)
    qE, qC = np.zeros((n, n_par)), np.zeros((n, n_par, n_par))
    ys, lams = np.zeros((n, n_par)), np.zeros((n, n_par, n_par))
    root = np.sqrt(likelihood_precision)
    for i in range(n):
        L = rng.normal(scale=root * 0.3, size=(n_par, n_par)) + np.eye(n_par) * root * 0.9
        lams[i] = L @ L.T
        ys[i] = rng.multivariate_normal(theta[i], np.linalg.inv(lams[i]))
        qC[i] = np.linalg.inv(prior_prec + lams[i])
        qE[i] = qC[i] @ (prior_prec @ pE + lams[i] @ ys[i])
    return FirstLevel(qE=qE, qC=qC, y=ys, lam=lams, theta=theta)
