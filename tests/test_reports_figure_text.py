"""Every report figure keeps its text inside its canvas (issue 17.2: no clipped titles or labels).

Each figure function of the participant and group reports is drawn from small synthetic
inputs with long, realistic labels; every visible text of the rendered figure (titles, axis
labels, tick labels, legends, colour-bar labels) must lie inside the canvas, as it is saved.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from ketflow.group import plots
from ketflow.group.matrix_plots import roi_matrix_figure
from ketflow.group.roi_matrices import EdgeMatrix

#: Tolerance in pixels (anti-aliasing of glyph edges).
SLACK = 1.5

ROIS = ["dACC", "rACC", "vmPFC", "hippocampus_ant_L", "hippocampus_ant_R", "insula_ant_L", "insula_ant_R",
        "amygdala_L", "amygdala_R"]


def texts_outside(fig) -> list[str]:
    """Visible non-empty texts of ``fig`` whose rendered box leaves the canvas."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    width, height = canvas.get_width_height()
    outside, hidden = [], _undrawn_tick_labels(fig)
    for text in fig.findobj(Text):
        if not text.get_visible() or not text.get_text().strip() or id(text) in hidden:
            continue
        box = text.get_window_extent(renderer)
        if box.x0 < -SLACK or box.y0 < -SLACK or box.x1 > width + SLACK or box.y1 > height + SLACK:
            outside.append(f"{text.get_text()!r} at x {box.x0:.0f}..{box.x1:.0f} of {width}, "
                           f"y {box.y0:.0f}..{box.y1:.0f} of {height}")
    return outside


def _undrawn_tick_labels(fig) -> set[int]:
    """ids of tick labels matplotlib keeps but does not draw (ticks outside the view)."""
    hidden = set()
    for axes in fig.axes:
        for axis in (axes.xaxis, axes.yaxis):
            low, high = sorted(axis.get_view_interval())
            span = (high - low) * 1e-6
            for tick in axis.majorTicks + axis.minorTicks:
                if not (tick.get_visible() and low - span <= tick.get_loc() <= high + span):
                    hidden |= {id(tick.label1), id(tick.label2)}
    return hidden


def _features(n: int, rng) -> list[str]:
    families = ["act_faces_fearfulGtShapes", "gppi_faces_vmPFC_to_amygdala_L", "fc_rest_vmPFC_amygdala_R",
                "dcm_faces_B_amygdala_L_to_vmPFC_by_fearful"]
    return [f"{families[k % 4]}_{ROIS[k % 9]}__change" for k in range(n)]


def group_figures():
    rng = np.random.default_rng(0)
    names = _features(60, rng)
    coefs = pd.DataFrame({"coef_std": np.where(rng.random(60) < 0.2, rng.normal(size=60), 0.0)}, index=names)
    selection = pd.DataFrame({"frequency": rng.random(60), "positive": rng.random(60)}, index=names)
    observed = rng.normal(size=21)
    matrix = EdgeMatrix(label="ppi_faces_fearfulGtShapes", sources=ROIS, targets=ROIS, values=rng.normal(size=(9, 9)),
                        fdr=rng.random((9, 9)) < 0.1, fwe=rng.random((9, 9)) < 0.05, directed=True)
    return {
        "coefficients": plots.coefficient_plot(coefs),
        "predicted_vs_observed": plots.predicted_vs_observed(observed, observed + rng.normal(size=21),
                                                             outcome="change in caps5_total (post - pre)"),
        "permutation_null": plots.permutation_histogram(rng.normal(size=200), 0.3, p_value=0.04),
        "selection_frequencies": plots.selection_frequency_bars(selection, threshold=0.6),
        "roi_matrix": roi_matrix_figure([("ketamine vs midazolam", matrix), ("time x arm interaction", matrix)],
                                        "gPPI faces fearfulGtShapes: trial effects on every edge"),
    }


@pytest.mark.parametrize("name", list(group_figures()))
def test_group_figure_text_stays_inside_the_canvas(name):
    fig = group_figures()[name]
    assert texts_outside(fig) == []


def test_coefficient_plot_shows_the_retained_predictors():
    """Predictors the penalty set to zero are counted in a note, not drawn as zero-length bars."""
    rng = np.random.default_rng(1)
    names = _features(40, rng)
    values = np.zeros(40)
    values[[3, 7, 21]] = [0.4, -0.2, 0.1]
    fig = plots.coefficient_plot(pd.DataFrame({"coef_std": values}, index=names))
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert sorted(labels) == sorted(names[k] for k in (3, 7, 21))
    assert any("37 predictors set to zero" in t.get_text() for t in fig.findobj(Text))


def participant_figures():
    """The participant report's figures (reports.figures, first-level design and gPPI figures)
    and the PEB bars, from small synthetic inputs on a 4 mm MNI-like grid."""
    import matplotlib.pyplot as plt
    import nibabel as nib

    from ketflow.reports import figures
    from ketflow.signal.plots import design_figure, ppi_figure

    rng = np.random.default_rng(2)
    n_vol = 120
    fd = np.abs(rng.normal(0.2, 0.2, n_vol))
    censoring = pd.DataFrame({"framewise_displacement": fd, "dummy": np.arange(n_vol) < 2,
                              "motion_censored": fd > 0.5})
    censoring["retained"] = ~(censoring["dummy"] | censoring["motion_censored"])
    signals = pd.DataFrame(rng.normal(size=(int(censoring["retained"].sum()), 9)), columns=ROIS)
    matrix = pd.DataFrame(np.corrcoef(rng.normal(size=(9, 40))), index=ROIS, columns=ROIS)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = [-90, -126, -72]
    shape = (46, 55, 46)
    zmap = nib.Nifti1Image(rng.normal(0, 2, shape).astype(np.float32), affine)
    dseg = np.zeros(shape, np.int16)
    for k in range(9):
        dseg[10 + 3 * k:13 + 3 * k, 30:34, 20:24] = k + 1
    labels = pd.DataFrame({"index": np.arange(1, 10), "name": ROIS})
    background = nib.Nifti1Image(rng.random(shape).astype(np.float32), affine)
    t = np.arange(n_vol) * 2.0
    design = pd.DataFrame({"fearful": np.sin(t / 10), "neutral": np.cos(t / 13), "shapes": np.sin(t / 7) ** 2,
                           **{f"trans_{a}": rng.normal(0, 0.1, n_vol) for a in "xyz"},
                           "constant": np.ones(n_vol)}, index=t)
    ppi_design = design.assign(PPI_fearful=design["fearful"] * rng.normal(size=n_vol))
    ppi_matrix = pd.DataFrame(rng.normal(size=(2, 9)), columns=ROIS).assign(Node=["vmPFC", "amygdala_L"])
    made = {
        "carpet": lambda: figures.plot_carpet(rng.normal(size=(n_vol, 500)).astype(np.float32), censoring, 2.0, 0.5,
                                              signals, title="ses-pre task-faces"),
        "relmats": lambda: figures.plot_relmats({m: matrix for m in figures.RELMAT_ORDER[:3]},
                                                title="ses-pre task-rest: ROI-to-ROI connectivity"),
        "roi_placement": lambda: figures.plot_roi_placement(nib.Nifti1Image(dseg, affine), labels, background,
                                                            title="ses-pre task-faces: circuit ROIs on the BOLD grid"),
        "glass_brain": lambda: figures.plot_statmap(zmap, "ses-pre task-faces: contrast fearfulGtShapes, z",
                                                    figures.Z_THRESHOLD, glass=True),
        "seed_map": lambda: figures.plot_statmap(zmap, "ses-pre task-rest: seed vmPFC, Fisher z",
                                                 figures.FISHER_Z_THRESHOLD, glass=False, background=background,
                                                 cut_coords=(0, 43, -14)),
        "design_matrix": lambda: design_figure(design),
        "ppi": lambda: ppi_figure(ppi_design, ppi_matrix, "gPPI seed vmPFC: fearful"),
        "peb": lambda: plots.peb_parameter_bars(
            rng.normal(size=(2, 4)), np.eye(8) * 0.01, covariate_names=["group mean", "ketamine vs midazolam"],
            parameter_names=["vmPFC → amygdala_L", "amygdala_L → vmPFC", "fearful on amygdala_L → vmPFC",
                             "fearful on vmPFC → amygdala_L"]),
    }
    return made, plt


PARTICIPANT_FIGURES = ["carpet", "relmats", "roi_placement", "glass_brain", "seed_map", "design_matrix", "ppi",
                       "peb"]


@pytest.mark.parametrize("name", PARTICIPANT_FIGURES)
def test_participant_figure_text_stays_inside_the_canvas(name):
    made, plt = participant_figures()
    fig = made[name]()
    try:
        assert texts_outside(fig) == []
    finally:
        plt.close("all")
