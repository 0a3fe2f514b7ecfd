"""Figures for the group level: elastic-net coefficients, out-of-sample fit,
permutation null, bootstrap selection frequencies and PEB parameters.

Each function takes plain arrays / DataFrames (see
:mod:`ketflow.group.predict` and :mod:`ketflow.dcm.peb`) and returns a new
:class:`matplotlib.figure.Figure`; saving is left to the caller.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from scipy import stats

__all__ = [
    "coefficient_plot",
    "predicted_vs_observed",
    "permutation_histogram",
    "selection_frequency_bars",
    "peb_parameter_bars",
]

_POS, _NEG, _GREY = "#b2182b", "#2166ac", "#9e9e9e"


def _height(n: int) -> float:
    return max(2.5, 0.28 * n + 1.2)


#: Most predictors listed in one bar chart (the rest are counted in the title).
MAX_ROWS = 40


def _largest(values: pd.Series, max_rows: int) -> tuple[pd.Series, int]:
    """The ``max_rows`` entries of largest magnitude, sorted by value; and how many were left out."""
    if len(values) <= max_rows:
        return values.sort_values(), 0
    keep = values.abs().sort_values(ascending=False).index[:max_rows]
    return values.loc[keep].sort_values(), len(values) - max_rows


def _heading(fig: Figure, *lines: str, width: int = 80) -> None:
    """A left-aligned figure title, each line wrapped to ``width`` characters, so that it stays
    inside the canvas however long the predictor names pushing the axes to the right are."""
    text = "\n".join(textwrap.fill(line, width) for line in lines if line)
    if text:
        fig.suptitle(text, x=0.01, ha="left", fontsize=9)


def coefficient_plot(coefficients: pd.DataFrame, column: str = "coef_std",
                     title: str = "Elastic-net coefficients", max_rows: int = MAX_ROWS) -> Figure:
    """Horizontal bars of the predictors the penalty retained (``coefficients[column]`` non-zero;
    index = predictor names), sorted; those set to zero are counted in the title, not drawn.
    At most ``max_rows`` predictors, those of largest magnitude, are shown."""
    all_values = coefficients[column].astype(float)
    retained = all_values[all_values != 0]
    values, hidden = _largest(retained, max_rows)
    n_zero = int((all_values == 0).sum())
    fig = Figure(figsize=(6.5, _height(max(len(values), 2))), layout="constrained")
    ax = fig.add_subplot()
    ax.barh(np.arange(len(values)), values.to_numpy(), color=[_POS if v > 0 else _NEG for v in values])
    ax.set_yticks(np.arange(len(values)), values.index, fontsize=7)
    ax.axvline(0, color="black", lw=0.8)
    if values.empty:
        ax.text(0.5, 0.5, "no predictor retained", transform=ax.transAxes, ha="center", va="center")
    ax.set_xlabel("coefficient per predictor SD\n(outcome units)" if column == "coef_std" else column)
    _heading(fig, title,
             f"{len(retained)} of {len(all_values)} predictors retained; {n_zero} predictors set to zero by the "
             "penalty are not shown" + (f", nor {hidden} smaller retained ones" if hidden else ""))
    return fig


def predicted_vs_observed(observed: np.ndarray, predicted: np.ndarray, *,
                          scores: dict | None = None, outcome: str = "observed") -> Figure:
    """Scatter of out-of-sample predictions against observations.

    observed : (n,); predicted : (n,) or (n_repeats, n) (plotted as the mean
    over repeats); scores : {'r2', 'r'} to print (computed from the plotted
    predictions if omitted).
    """
    observed = np.asarray(observed, dtype=float)
    pred = np.atleast_2d(np.asarray(predicted, dtype=float)).mean(axis=0)
    if scores is None:
        r2 = 1 - np.sum((observed - pred) ** 2) / np.sum((observed - observed.mean()) ** 2)
        scores = {"r2": r2, "r": stats.pearsonr(observed, pred)[0]}
    fig = Figure(figsize=(4.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(observed, pred, s=18, color="#404040")
    lims = [min(observed.min(), pred.min()), max(observed.max(), pred.max())]
    ax.plot(lims, lims, ls="--", color=_GREY, lw=1, label="identity")
    slope, intercept = np.polyfit(observed, pred, 1)
    ax.plot(lims, intercept + slope * np.asarray(lims), color=_POS, lw=1.2, label="least squares")
    ax.set_xlabel(outcome)
    ax.set_ylabel("cross-validated prediction")
    ax.set_title(f"r = {scores['r']:.2f}, R\u00b2 = {scores['r2']:.2f}")
    ax.legend(fontsize=7, loc="upper left")
    return fig


def permutation_histogram(null: np.ndarray, observed: float, *, p_value: float | None = None,
                          score: str = "R\u00b2") -> Figure:
    """Histogram of permuted nested-CV scores with the observed score marked."""
    null = np.asarray(null, dtype=float)
    fig = Figure(figsize=(5, 3.5), layout="constrained")
    ax = fig.add_subplot()
    ax.hist(null, bins=min(50, max(10, null.size // 10)), color=_GREY)
    ax.axvline(observed, color=_POS, lw=2, label=f"observed {score} = {observed:.2f}")
    ax.set_xlabel(f"nested cross-validated {score}")
    ax.set_ylabel("permutations")
    title = f"permutation null (n = {null.size})"
    if p_value is not None:
        title += f", p = {p_value:.3g}"
    ax.set_title(title)
    ax.legend(fontsize=7)
    return fig


def selection_frequency_bars(selection: pd.DataFrame, *, threshold: float | None = None,
                             max_rows: int = MAX_ROWS) -> Figure:
    """Bars of bootstrap selection frequency (``selection['frequency']``), coloured
    by the majority sign (``selection['positive']``), optional threshold line; at most
    ``max_rows`` predictors, the most often selected."""
    order, hidden = _largest(selection["frequency"].astype(float), max_rows)
    sel = selection.loc[order.index]
    fig = Figure(figsize=(6.5, _height(len(sel))), layout="constrained")
    ax = fig.add_subplot()
    pos = sel["positive"].fillna(0.5).to_numpy()
    colours = [_POS if p > 0.5 else (_NEG if p < 0.5 else _GREY) for p in pos]
    ax.barh(np.arange(len(sel)), sel["frequency"].to_numpy(), color=colours)
    ax.set_yticks(np.arange(len(sel)), sel.index, fontsize=7)
    ax.set_xlim(0, 1)
    if threshold is not None:
        ax.axvline(threshold, color="black", ls="--", lw=0.8)
    ax.set_xlabel("bootstrap selection frequency")
    _heading(fig, "Bootstrap selection frequencies (colour: the sign the predictor mostly takes)",
             f"{hidden} less often selected predictors not shown" if hidden else "")
    fig.legend(handles=[Patch(color=_POS, label="mostly positive"), Patch(color=_NEG, label="mostly negative")],
               loc="outside lower right", fontsize=7, ncols=2, frameon=False)
    return fig


def peb_parameter_bars(Ep: np.ndarray, Cp: np.ndarray, *, covariate_names: Sequence[str],
                       parameter_names: Sequence[str], Pp: np.ndarray | None = None,
                       level: float = 0.90) -> Figure:
    """One panel per design column: posterior means of the P parameters with
    ``level`` credible intervals (Ep: (K, P); Cp: (K·P, K·P) in k·P + p order),
    bars coloured when Pp (K, P), if given, exceeds 0.95."""
    Ep = np.atleast_2d(np.asarray(Ep, dtype=float))
    K, P = Ep.shape
    half = stats.norm.ppf(0.5 + level / 2) * np.sqrt(np.clip(np.diag(Cp), 0, None)).reshape(K, P)
    fig = Figure(figsize=(max(4.0, 0.6 * P + 2), 2.4 * K), layout="constrained")
    axes = fig.subplots(K, 1, squeeze=False)[:, 0]
    for k, ax in enumerate(axes):
        colours = [_POS if (Pp is None or Pp[k, p] > 0.95) else _GREY for p in range(P)]
        ax.bar(np.arange(P), Ep[k], color=colours)
        ax.errorbar(np.arange(P), Ep[k], yerr=half[k], fmt="none", ecolor="black", capsize=3)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_title(covariate_names[k], fontsize=9)
        ax.set_xticks(np.arange(P), parameter_names if k == K - 1 else [""] * P,
                      rotation=45, ha="right", fontsize=7)
    axes[0].set_ylabel(f"posterior mean, {int(round(level * 100))}% CI")
    return fig
