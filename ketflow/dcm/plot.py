"""Figures of a fitted DCM: connectivity diagram and parameter estimates."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch

from .fit import Z90, DCMResult

__all__ = ["plot_dcm"]

_INPUT_COLOURS = ["tab:red", "tab:purple", "tab:orange", "tab:green", "tab:brown", "tab:pink"]


def _edge(ax, p_from, p_to, text, colour, rad, linestyle="-", radius=0.2, label_at=0.5):
    """Arrow from p_from to p_to (matplotlib ``arc3`` curvature ``rad``), labelled at the point a
    fraction ``label_at`` along the curve (modulatory edges off the middle, so that their labels do
    not cover the endogenous ones)."""
    start, end = np.asarray(p_from, float), np.asarray(p_to, float)
    direction = (end - start) / np.linalg.norm(end - start)
    a, b = start + direction * radius, end - direction * radius
    ax.add_patch(
        FancyArrowPatch(
            a, b, arrowstyle="-|>", mutation_scale=14, color=colour, lw=1.6,
            connectionstyle=f"arc3,rad={rad}", linestyle=linestyle,
        )
    )
    normal = np.array([direction[1], -direction[0]])
    control = (a + b) / 2 + normal * rad * np.linalg.norm(b - a)  # the quadratic Bezier's control point
    t = label_at
    on_curve = (1 - t) ** 2 * a + 2 * t * (1 - t) * control + t**2 * b
    ax.text(*(on_curve + normal * 0.05 * np.sign(rad)), text, color=colour, fontsize=8,
            ha="center", va="center", bbox={"fc": "white", "ec": "none", "alpha": 0.8, "pad": 0.5})


def plot_dcm(result: DCMResult, threshold: float = 0.95) -> Figure:
    """Connectivity diagram and parameter bars of a fitted DCM.

    Left: regions on a circle; endogenous (A) edges solid black, modulatory
    (B) edges dashed (one colour per input), driving inputs (C) as short
    arrows from outside; every edge is labelled with its posterior mean (Hz;
    self-connections as log-scale) and drawn grey when ``Pp < threshold``.
    Right: posterior means of all free connectivity parameters with 90%
    credible intervals.

    Returns a matplotlib Figure (not attached to pyplot).
    """
    n, m = result.layout.n, result.layout.m
    Ep, Pp, Vp = result.Ep, result.Pp, result.Vp
    fig = Figure(figsize=(13, 6), constrained_layout=True)
    ax, axb = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.3, 1]})

    angles = np.pi / 2 - 2 * np.pi * np.arange(n) / n
    pos = np.column_stack([np.cos(angles), np.sin(angles)])

    def colour(p, base):
        return base if np.isfinite(p) and p >= threshold else "0.7"

    for i in range(n):
        for j in range(n):
            if i != j and Vp["A"][i, j] > 0:
                _edge(ax, pos[j], pos[i], f"{Ep['A'][i, j]:.2f}", colour(Pp["A"][i, j], "black"), 0.15)
            for k in range(m):
                if Vp["B"][k, i, j] > 0 and i != j:
                    _edge(ax, pos[j], pos[i], f"{result.input_names[k]}: {Ep['B'][k, i, j]:+.2f}",
                          colour(Pp["B"][k, i, j], _INPUT_COLOURS[k % len(_INPUT_COLOURS)]), -0.3, "--",
                          label_at=0.3 - 0.1 * k)
        outward = pos[i] * 1.65
        for k in range(m):
            if Vp["C"][i, k] > 0:
                offset = np.array([-pos[i][1], pos[i][0]]) * 0.18 * (k - (m - 1) / 2)
                _edge(ax, outward + offset, pos[i] + offset * 0.3,
                      f"{result.input_names[k]}: {Ep['C'][i, k]:.2f}",
                      colour(Pp["C"][i, k], _INPUT_COLOURS[k % len(_INPUT_COLOURS)]), 0.0, radius=0.02)
        self_label = f"self {Ep['A'][i, i]:+.2f}"
        for k in range(m):
            if Vp["B"][k, i, i] > 0:
                self_label += f"\n{result.input_names[k]}: {Ep['B'][k, i, i]:+.2f}"
        ax.add_patch(Circle(pos[i], 0.2, fc="lightsteelblue", ec="black", zorder=3))
        ax.text(*pos[i], result.region_names[i], ha="center", va="center", fontsize=8, zorder=4, weight="bold")
        ax.text(*(pos[i] * 1.33 + np.array([0.25, 0.0])), self_label, ha="left", va="center", fontsize=7,
                color=colour(Pp["A"][i, i], "black"))
    ax.set_xlim(-1.9, 1.9)
    ax.set_ylim(-1.9, 1.9)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"DCM posterior means (grey: Pp < {threshold:g});  F = {result.F:.1f}")

    table = result.parameter_table()
    table = table[table["free"] & table["name"].str.match(r"^[ABCD]_")]
    y = np.arange(len(table))[::-1]
    err = Z90 * table["posterior_sd"].to_numpy()
    strong = table["Pp"].to_numpy() >= threshold
    axb.barh(y, table["posterior_mean"], xerr=err, color=np.where(strong, "tab:blue", "0.75"),
             error_kw={"ecolor": "black", "capsize": 2})
    axb.set_yticks(y, table["name"], fontsize=8)
    axb.axvline(0, color="black", lw=0.8)
    axb.set_xlabel("posterior mean with 90% credible interval (Hz; A_ii: log scale)")
    noise = ", ".join(f"{name} {var:.2g}" for name, var in zip(result.region_names, result.noise_variance))
    if result.noise_ar1 is not None and np.any(result.noise_ar1):
        noise += "; AR(1) " + ", ".join(f"{r:.2f}" for r in result.noise_ar1)
    axb.set_title(f"Connectivity parameters\nnoise variance {noise}", fontsize=9)
    return fig
