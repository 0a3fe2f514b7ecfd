"""Estimates set against the simulator's ground truth (used by tests and benchmarks).

* :func:`truth_vector`: the true value of every free A/B/C parameter of a fitted DCM
  (``dcm.json``), from a faces run's ``dcm`` entry of ``ground_truth.json``;
* :func:`voi_agreement`: how well a run's DCM volumes of interest follow the simulator's
  noise-free regional signals.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def voi_agreement(voi: pd.DataFrame, X0: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Per region: correlation and regression slope of the VOI on the noise-free signal, the
    latter adjusted for the same X0 (slope 1 = per cent signal change recovered)."""
    basis = np.linalg.qr(np.column_stack([np.ones(len(voi)), X0.to_numpy(dtype=float)]))[0]
    out = {}
    for region in voi.columns:
        target = truth[region].to_numpy(dtype=float)
        target = target - basis @ (basis.T @ target)
        y = voi[region].to_numpy(dtype=float)
        out[region] = (float(np.corrcoef(y, target)[0, 1]), float(np.polyfit(target, y, 1)[0]))
    return out


def truth_vector(result: dict, dcm_truth: dict) -> dict:
    """True value of every free A/B/C parameter of the fitted model, keyed by parameter name.

    C is given in the units of the data the model was fitted to: FitDCM rescales the VOIs to a
    range of at most 4 % (SPM's preprocessing, ``data_scale`` in dcm.json), and the driving input
    that explains the rescaled data is the true C times that scale (A and B are rates and do not
    depend on it). With the simulator's spontaneous amygdala fluctuations the VOI range often
    exceeds 4 % (docs/dcm.md).
    """
    regions, inputs = result["region_names"], result["input_names"]
    r_index = [dcm_truth["regions"].index(r) for r in regions]
    i_index = [dcm_truth["inputs"].index(i) for i in inputs]
    A = np.asarray(dcm_truth["A"])[np.ix_(r_index, r_index)]
    B = np.asarray(dcm_truth["B"])[np.ix_(i_index, r_index, r_index)]
    C = np.asarray(dcm_truth["C"])[np.ix_(r_index, i_index)]
    out = {}
    for row in result["parameters"]:
        name = row["name"]
        if not row["free"] or not name.startswith(("A_", "B_", "C_")):
            continue
        parts = name.split("_")
        to = int(parts[1][2:]) - 1
        if name.startswith("A_"):
            out[name] = A[to, int(parts[2][4:]) - 1]
        elif name.startswith("B_"):
            out[name] = B[int(parts[3][2:]) - 1, to, int(parts[2][4:]) - 1]
        else:
            out[name] = C[to, int(parts[2][2:]) - 1] * result.get("data_scale", 1.0)
    return out
