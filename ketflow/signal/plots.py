"""Figures of first-level models: the design matrix and the gPPI regressors and matrix.

Each function returns a matplotlib figure made with pyplot (close it after saving, e.g. with
:func:`ketflow.io.svg.write_svg`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def design_figure(matrix: pd.DataFrame):
    """Design matrix figure, nilearn's rendering (``plot_design_matrix``)."""
    import matplotlib

    matplotlib.use("Agg")
    from nilearn.plotting import plot_design_matrix

    return plot_design_matrix(matrix).figure


def ppi_figure(design: pd.DataFrame, matrix: pd.DataFrame, title: str):
    """Interaction regressors (``PPI_*`` columns) of one seed's gPPI design and one ROI-to-ROI
    PPI matrix (``Node`` column = seeds, as :func:`ketflow.signal.gppi.ppi_matrix`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [2, 1]})
    for col in [c for c in design.columns if c.startswith("PPI_")]:
        ax1.plot(design.index, design[col], label=col)
    ax1.set_xlabel("time (s)")
    ax1.set_ylabel("interaction regressor")
    ax1.legend(fontsize="small")
    values = matrix.drop(columns="Node").to_numpy(dtype=float)
    lim = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0
    im = ax2.imshow(values, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax2.set_xticks(range(values.shape[1]), matrix.columns[1:], rotation=90, fontsize="small")
    ax2.set_yticks(range(values.shape[0]), matrix["Node"], fontsize="small")
    ax2.set_xlabel("target")
    ax2.set_ylabel("seed")
    ax2.set_title(title)
    fig.colorbar(im, ax=ax2)
    fig.tight_layout()
    return fig
