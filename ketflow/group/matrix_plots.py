"""ROI-to-ROI matrix figures of the trial effects (:mod:`ketflow.group.roi_matrices`).

:func:`roi_matrix_figure` draws one panel per effect of one edge set: the colour is the
effect's t statistic (diverging, the same symmetric range in every panel), an open circle marks
an edge significant after FDR correction and a star one significant family-wise (FWE).  Rows
are seeds and columns targets for gPPI (directed); FC matrices are symmetric.  Returns a new
:class:`matplotlib.figure.Figure`; saving is left to the caller.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from .roi_matrices import EdgeMatrix

__all__ = ["roi_matrix_figure"]


def roi_matrix_figure(panels: Sequence[tuple[str, EdgeMatrix]], title: str) -> Figure:
    """One row of panels ``(panel title, matrix)`` sharing a colour scale."""
    finite = [np.abs(m.values[np.isfinite(m.values)]) for _, m in panels]
    limit = max([float(v.max()) for v in finite if v.size] + [1.0])
    first = panels[0][1]
    width = 1.2 + len(panels) * (0.9 + 0.32 * len(first.targets))
    height = 1.9 + 0.32 * len(first.sources)
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    image = None
    for ax, (name, matrix) in zip(axes, panels):
        image = ax.imshow(np.ma.masked_invalid(matrix.values), cmap="RdBu_r", vmin=-limit, vmax=limit,
                          aspect="equal")
        ax.set_facecolor("#e0e0e0")
        fdr_only = matrix.fdr & ~matrix.fwe
        for mask, marker, size in ((fdr_only, "o", 40), (matrix.fwe, "*", 70)):
            rows, cols = np.nonzero(mask)
            ax.scatter(cols, rows, marker=marker, s=size, facecolors="none" if marker == "o" else "black",
                       edgecolors="black", linewidths=1.0)
        ax.set_xticks(range(len(matrix.targets)), matrix.targets, rotation=90, fontsize=7)
        ax.set_yticks(range(len(matrix.sources)), matrix.sources, fontsize=7)
        ax.set_title(name, fontsize=8)
        if matrix.directed:
            ax.set_xlabel("target", fontsize=7)
            ax.set_ylabel("seed", fontsize=7)
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="t")
    fig.suptitle(title + "\n(o: FDR-significant, *: FWE-significant)", fontsize=9)
    return fig
