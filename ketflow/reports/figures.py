"""Report figures of one run, drawn from arrays and images already loaded.

Each function returns a :class:`matplotlib.figure.Figure` (no pyplot state); :func:`save_svg`
writes it deterministically (fixed SVG id salt, no date), so rebuilding a report from the
same outputs gives byte-identical figures.

* :func:`plot_roi_placement` — the circuit ROIs of a run (its ``atlas-*_dseg``) over its
  BOLD reference, axial and sagittal cuts through the ROI centres (nilearn ``plot_roi``);
* :func:`plot_carpet` — framewise displacement with the censoring threshold, DVARS, the
  per-volume censoring status, a carpet plot of the preprocessed BOLD (Power 2017,
  NeuroImage 154:150-158) and the denoised ROI signals;
* :func:`plot_relmats` — ROI-to-ROI connectivity matrices;
* :func:`plot_statmap` — a statistical map as a glass brain (MNI spaces) or slices.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..io.write import atomic_path
from ..io.svg import figure_to_svg

#: |z| threshold of the activation and PPI glass brains (p < 0.001 one-sided, as nilearn's GLM reports).
Z_THRESHOLD = 3.09
#: Fisher-z threshold of seed-to-voxel connectivity maps (|r| > 0.2).
FISHER_Z_THRESHOLD = float(np.arctanh(0.2))
#: Most voxels drawn as rows of a carpet plot (evenly subsampled, in mask order).
CARPET_MAX_ROWS = 600
#: Preferred order of connectivity panels (others follow alphabetically).
RELMAT_ORDER = ("pearsoncorrelation", "fisherz", "partialcorrelation", "ledoitwolfcorrelation",
                "ledoitwolfpartialcorrelation", "ledoitwolfcovariance")


def save_svg(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as SVG atomically and deterministically (``svg.hashsalt``, no date)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(figure_to_svg(fig, bbox_inches="tight"), encoding="utf-8")
    return path


def roi_colours(n: int) -> ListedColormap:
    """``n`` distinct colours (tab10 / tab20, or sampled from a rainbow for more)."""
    if n <= 10:
        colours = matplotlib.colormaps["tab10"].colors[:n]
    elif n <= 20:
        colours = matplotlib.colormaps["tab20"].colors[:n]
    else:
        colours = matplotlib.colormaps["gist_rainbow"](np.linspace(0, 1, n))
    return ListedColormap(colours)


def _cuts(values: np.ndarray, step: float, most: int) -> list[float]:
    """Distinct cut positions (world mm): ``values`` rounded to ``step``, at most ``most`` of them."""
    cuts = np.unique(np.round(np.asarray(values) / step) * step)
    if len(cuts) > most:
        cuts = cuts[np.linspace(0, len(cuts) - 1, most).round().astype(int)]
    return [float(c) for c in cuts]


def plot_roi_placement(dseg, labels: pd.DataFrame, background, title: str = "") -> Figure:
    """ROIs of a label image over ``background`` (both NIfTI images on the same space).

    ``labels`` has columns ``index``, ``name`` and optionally ``n_voxels`` (the run's
    ``*_dseg.tsv``).  Cuts pass through the ROI centres of mass: axial above, sagittal below.
    """
    import nibabel as nib
    from nilearn import plotting

    data = np.asanyarray(dseg.dataobj).astype(int)
    labels = labels[labels["index"].isin(np.unique(data[data > 0]))].reset_index(drop=True)
    if labels.empty:
        raise ValueError("the label image holds none of the labels of its table")
    ranks = np.zeros_like(data)
    centres = []
    for rank, index in enumerate(labels["index"], start=1):
        voxels = np.argwhere(data == index)
        ranks[data == index] = rank
        centres.append(nib.affines.apply_affine(dseg.affine, voxels.mean(axis=0)))
    centres = np.array(centres)
    ranked = nib.Nifti1Image(ranks.astype(np.int16), dseg.affine)
    zooms = dseg.header.get_zooms()[:3]
    cmap = roi_colours(len(labels))
    fig = Figure(figsize=(12, 6.2))
    rows = [("z", _cuts(centres[:, 2], zooms[2], 7), [0.0, 0.52, 1.0, 0.42]),
            ("x", _cuts(centres[:, 0], zooms[0], 7), [0.0, 0.12, 1.0, 0.38])]
    for mode, cuts, rect in rows:
        plotting.plot_roi(ranked, bg_img=background, display_mode=mode, cut_coords=cuts, figure=fig,
                          axes=fig.add_axes(rect), cmap=cmap, vmin=0.5, vmax=len(labels) + 0.5, colorbar=False,
                          alpha=0.85, black_bg=True, draw_cross=False, annotate=True, threshold=0.5,
                          resampling_interpolation="nearest")
    counts = labels["n_voxels"] if "n_voxels" in labels else [None] * len(labels)
    handles = [Patch(color=cmap(i), label=f"{name}" + (f" ({int(n)} vox)" if n is not None else ""))
               for i, (name, n) in enumerate(zip(labels["name"], counts))]
    legend_ax = fig.add_axes([0.0, 0.0, 1.0, 0.1])
    legend_ax.axis("off")
    legend_ax.legend(handles=handles, loc="center", ncol=min(len(handles), 5), frameon=False, fontsize=9)
    if title:
        fig.suptitle(title, y=1.0)
    return fig


def _detrended_z(data: np.ndarray) -> np.ndarray:
    """Each column (voxel) of (T, V) ``data`` linearly detrended and z-scored (constant -> 0)."""
    t = np.arange(data.shape[0], dtype=np.float64)
    design = np.column_stack([np.ones_like(t), t - t.mean()])
    beta, *_ = np.linalg.lstsq(design, data, rcond=None)
    resid = data - design @ beta
    sd = resid.std(axis=0)
    sd[sd == 0] = np.inf
    return resid / sd


def plot_carpet(bold: np.ndarray, censoring: pd.DataFrame, tr: float, fd_threshold: float | None,
                roi_signals: pd.DataFrame | None = None, title: str = "") -> Figure:
    """FD, DVARS, censoring status, carpet plot and denoised ROI signals of one run.

    ``bold`` is the preprocessed series as (T, V) in-mask voxels; ``censoring`` the run's
    censoring table (:meth:`ketflow.reports.outputs.RunOutputs.censoring`; T rows:
    ``framewise_displacement``, ``dummy``, ``motion_censored``, ``retained``); ``roi_signals``
    the denoised ROI series of the retained volumes (rows in volume order, one column per ROI), or None.
    """
    from ..signal.connectivity import dvars

    n_vol = bold.shape[0]
    if len(censoring) != n_vol:
        raise ValueError(f"the censoring table has {len(censoring)} rows but the BOLD series {n_vol} volumes")
    fd = censoring["framewise_displacement"].to_numpy(float)
    dummy = censoring["dummy"].to_numpy(bool)
    censored = censoring["motion_censored"].to_numpy(bool) & ~dummy
    retained = censoring["retained"].to_numpy(bool)
    heights = [1.0, 0.8, 0.18, 3.0] + ([1.4] if roi_signals is not None else [])
    fig = Figure(figsize=(12, 1.6 * sum(heights) + 0.6))
    grid = fig.add_gridspec(len(heights), 2, height_ratios=heights, width_ratios=[1, 0.015], hspace=0.12,
                            wspace=0.02)
    axes = [fig.add_subplot(grid[i, 0]) for i in range(len(heights))]
    for ax in axes[1:]:
        ax.sharex(axes[0])
    x = np.arange(n_vol)
    ax_fd, ax_dv, ax_status, ax_carpet = axes[:4]
    ax_fd.plot(x, fd, color="tab:blue", lw=1)
    if fd_threshold:
        ax_fd.axhline(fd_threshold, color="tab:red", ls="--", lw=0.8, label=f"threshold {fd_threshold:g} mm")
    for ax in (ax_fd, ax_dv):
        for vol in np.flatnonzero(censored):
            ax.axvspan(vol - 0.5, vol + 0.5, color="tab:red", alpha=0.25, lw=0)
        for vol in np.flatnonzero(dummy):
            ax.axvspan(vol - 0.5, vol + 0.5, color="0.5", alpha=0.3, lw=0)
    ax_fd.set_ylabel("FD (mm)")
    ax_fd.legend(loc="upper right", fontsize=8, frameon=False)
    ax_fd.set_title(
        f"{title}\n{n_vol} volumes, {int(dummy.sum())} dummy, {int(censored.sum())} censored "
        f"(shaded red), {int(retained.sum())} retained; mean FD {np.nanmean(fd[~dummy]):.3f} mm", fontsize=10)
    dv = dvars(bold)
    dv[dummy[1:] | dummy[:-1]] = np.nan  # steps into or out of non-steady-state volumes would set the scale
    ax_dv.plot(x[1:], dv, color="tab:green", lw=1)
    ax_dv.set_ylabel("DVARS")
    status = np.where(dummy, 1, np.where(censored, 2, np.where(retained, 0, 3)))[None, :]
    status_cmap = ListedColormap(["white", "0.6", "tab:red", "tab:orange"])
    ax_status.imshow(status, aspect="auto", cmap=status_cmap, vmin=-0.5, vmax=3.5, interpolation="nearest",
                     extent=(-0.5, n_vol - 0.5, 0, 1))
    ax_status.set_yticks([])
    ax_status.set_ylabel("kept", rotation=0, ha="right", va="center", fontsize=8)
    rows = np.linspace(0, bold.shape[1] - 1, min(CARPET_MAX_ROWS, bold.shape[1])).round().astype(int)
    carpet = np.full((len(rows), n_vol), np.nan)  # dummy volumes are left out of the scaling and not drawn
    carpet[:, ~dummy] = _detrended_z(bold[np.ix_(~dummy, rows)].astype(np.float64)).T
    image = ax_carpet.imshow(np.ma.masked_invalid(carpet), aspect="auto", interpolation="nearest",
                             cmap=matplotlib.colormaps["gray"].with_extremes(bad="0.85"), vmin=-2, vmax=2,
                             extent=(-0.5, n_vol - 0.5, len(rows), 0))
    ax_carpet.set_ylabel(f"voxels\n({len(rows)} of {bold.shape[1]})")
    ax_carpet.set_yticks([])
    fig.colorbar(image, cax=fig.add_subplot(grid[3, 1]), label="z")
    if roi_signals is not None:
        ax_roi = axes[4]
        if len(roi_signals) != int(retained.sum()):
            raise ValueError(f"the ROI signals have {len(roi_signals)} rows but {int(retained.sum())} volumes "
                             "are retained")
        full = np.full((roi_signals.shape[1], n_vol), np.nan)
        values = roi_signals.to_numpy(float)
        sd = values.std(axis=0)
        sd[sd == 0] = np.inf
        full[:, retained] = ((values - values.mean(axis=0)) / sd).T
        cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.85")
        roi_image = ax_roi.imshow(np.ma.masked_invalid(full), aspect="auto", cmap=cmap, vmin=-2.5, vmax=2.5,
                                  interpolation="nearest", extent=(-0.5, n_vol - 0.5, full.shape[0] - 0.5, -0.5))
        ax_roi.set_yticks(range(full.shape[0]), list(roi_signals.columns), fontsize=7)
        ax_roi.set_ylabel("denoised\nROI signals")
        fig.colorbar(roi_image, cax=fig.add_subplot(grid[4, 1]), label="z")
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    axes[-1].set_xlabel(f"volume (TR = {tr:g} s)")
    axes[0].set_xlim(-0.5, n_vol - 0.5)
    return fig


def plot_relmats(matrices: dict[str, pd.DataFrame], title: str = "") -> Figure:
    """One panel per connectivity matrix (``stat`` name -> square ROI x ROI table)."""
    if not matrices:
        raise ValueError("no connectivity matrix to plot")
    names = [m for m in RELMAT_ORDER if m in matrices] + sorted(set(matrices) - set(RELMAT_ORDER))
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    n_roi = max(len(m) for m in matrices.values())
    side = 4.0 if n_roi <= 12 else 5.5
    fig = Figure(figsize=(side * ncols + 1, side * nrows + 0.8), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, name in zip(axes.flat, names):
        frame = matrices[name]
        values = frame.to_numpy(float).copy()
        if "covariance" not in name:
            np.fill_diagonal(values, np.nan)  # 1 (or infinite Fisher z) by construction
        finite = np.abs(values[np.isfinite(values)])
        vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.85")
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
        labels = list(frame.columns)
        if len(labels) <= 40:
            ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
            ax.set_yticks(range(len(labels)), list(frame.index), fontsize=7)
        ax.set_title(name, fontsize=10)
        fig.colorbar(image, ax=ax, shrink=0.8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return fig


def plot_statmap(img, title: str, threshold: float, glass: bool, background=None, cut_coords=None) -> Figure:
    """A statistical map: glass brain (MNI-space data) or slices over ``background``.

    Values with ``|value| <= threshold`` are not drawn; the title gives the largest ``|value|``
    and the number of voxels above threshold.
    """
    from nilearn import plotting

    values = np.asanyarray(img.dataobj, dtype=np.float64)
    finite = np.abs(values[np.isfinite(values)])
    peak = float(finite.max()) if finite.size else 0.0
    n_supra = int((finite > threshold).sum())
    vmax = max(peak, threshold * 1.5)
    fig = Figure(figsize=(12, 3.4))
    ax = fig.add_axes([0, 0, 1, 0.86])
    label = f"{title}\nmax |value| {peak:.2f}; {n_supra} voxels with |value| > {threshold:.2f}"
    if glass:
        plotting.plot_glass_brain(img, threshold=threshold, plot_abs=False, colorbar=True, display_mode="lyrz",
                                  figure=fig, axes=ax, vmin=-vmax, vmax=vmax, cmap="RdBu_r")
    else:
        plotting.plot_stat_map(img, bg_img=background, threshold=threshold, display_mode="ortho",
                               cut_coords=cut_coords, figure=fig, axes=ax, vmax=vmax, cmap="RdBu_r",
                               colorbar=True, black_bg=True, draw_cross=False)
    fig.suptitle(label, fontsize=10, y=0.99)
    return fig
