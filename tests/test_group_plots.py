"""Tests of ketflow.group.plots (figures are built and their content checked)."""

import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ketflow.group.plots import (
    coefficient_plot,
    peb_parameter_bars,
    permutation_histogram,
    predicted_vs_observed,
    selection_frequency_bars,
)


def _svg(fig):
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    return buf.getvalue()


def test_coefficient_and_selection_plots():
    coefs = pd.DataFrame({"coef_std": [1.5, 0.0, -0.7]}, index=["a", "b", "c"])
    fig = coefficient_plot(coefs)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["c", "a"]  # b, set to zero, is counted, not drawn
    assert [round(p.get_width(), 2) for p in ax.patches] == [-0.7, 1.5]
    assert "2 of 3 predictors retained; 1 predictors set to zero" in fig.get_suptitle()
    sel = pd.DataFrame({"frequency": [0.9, 0.2], "positive": [1.0, np.nan]}, index=["a", "b"])
    fig = selection_frequency_bars(sel, threshold=0.5)
    assert [round(p.get_width(), 2) for p in fig.axes[0].patches] == [0.2, 0.9]
    assert "<svg" in _svg(fig)


def test_predicted_vs_observed_reports_scores():
    rng = np.random.default_rng(0)
    y = rng.normal(size=30)
    pred = np.vstack([y + rng.normal(size=30), y + rng.normal(size=30)])
    fig = predicted_vs_observed(y, pred, scores={"r2": 0.25, "r": 0.61})
    assert fig.axes[0].get_title() == "r = 0.61, R\u00b2 = 0.25"
    auto = predicted_vs_observed(y, y)
    assert auto.axes[0].get_title() == "r = 1.00, R\u00b2 = 1.00"


def test_permutation_histogram_marks_observed():
    fig = permutation_histogram(np.random.default_rng(1).normal(size=100), 2.5, p_value=0.0099)
    ax = fig.axes[0]
    assert ax.lines[0].get_xdata()[0] == 2.5
    assert "p = 0.0099" in ax.get_title()


def test_peb_parameter_bars_intervals():
    Ep = np.array([[0.1, 0.2], [-0.3, 0.0]])
    Cp = np.diag([0.01, 0.04, 0.01, 0.04])
    Pp = np.array([[1.0, 1.0], [0.99, 0.1]])
    fig = peb_parameter_bars(Ep, Cp, covariate_names=["mean", "arm"],
                             parameter_names=["vmPFC->amygdala", "amygdala->vmPFC"], Pp=Pp)
    assert len(fig.axes) == 2
    bars = fig.axes[1].patches
    assert bars[0].get_height() == -0.3
    segs = fig.axes[1].collections[0].get_segments()
    assert np.isclose(segs[0][1][1] - segs[0][0][1], 2 * 1.6448536 * 0.1)
    assert "<svg" in _svg(fig)
