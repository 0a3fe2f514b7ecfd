"""Nipype interface: generalized PPI of one task run (ROI-to-ROI and seed-to-voxel).

:class:`GPPI` builds the run's task design as :class:`ketflow.interfaces.glm.FirstLevelGLM`
does, forms the gPPI design of every seed ROI (:mod:`ketflow.signal.gppi`; the seed is
deconvolved unless ``deconvolve`` is false) and writes into the working directory:

* ``contrast-<label>_stat-ppi_relmat.tsv`` per condition and contrast: seed x target
  matrix of PPI effects (``Node`` column = seed, one column per target ROI; ``n/a`` on
  the diagonal and for pairs not estimated); symmetrised (mean of both directions) when
  ``symmetrize`` is true;
* ``desc-ppi_stats.tsv``: long table (seed, target, contrast, effect, variance, t, z, dof);
* ``seed-<ROI>_contrast-<label>_stat-{effect,variance,z}_statmap.nii.gz`` for every seed
  in ``voxel_seeds`` (needs ``bold_file``);
* ``desc-ppi_design.tsv``: the gPPI design of the first seed;
* ``desc-ppi_design.svg``: the first seed's interaction regressors and the ROI-to-ROI
  matrix of the first contrast.

ROI time series must cover every acquired volume (deconvolution needs an uncensored,
evenly sampled series): one row per volume, one column per ROI.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn.glm.first_level import mean_scaling
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    OutputMultiObject,
    SimpleInterface,
    Str,
    TraitedSpec,
    traits,
)

from ..io.derivatives import bids_label
from ..io.write import write_nifti, write_tsv
from ..signal.gppi import gppi_design, roi_to_roi_gppi, seed_to_voxel_gppi, symmetrize
from .denoise import read_mask, read_masked_bold
from .glm import contrast_files, map_to_image, load_task_design, task_settings


def relmat(table: pd.DataFrame, contrast: str, rois: list[str], symmetric: bool) -> pd.DataFrame:
    """Seed x target matrix of one contrast's PPI effects (``Node`` column = rows)."""
    mat = pd.DataFrame(np.nan, index=rois, columns=rois)
    rows = table[table["contrast"] == contrast]
    if symmetric:
        for a, b, e in rows[["roi_a", "roi_b", "effect"]].itertuples(index=False):
            mat.loc[a, b] = mat.loc[b, a] = e
    else:
        for s, t, e in rows[["seed", "target", "effect"]].itertuples(index=False):
            mat.loc[s, t] = e
    return mat.rename_axis("Node").reset_index()


def plot_ppi(design: pd.DataFrame, matrix: pd.DataFrame, title: str, path: Path) -> Path:
    """Figure: interaction regressors of one seed and one ROI-to-ROI PPI matrix (SVG)."""
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
    fig.savefig(path, format="svg")
    plt.close(fig)
    return path


class _GPPIInputSpec(BaseInterfaceInputSpec):
    timeseries = File(exists=True, mandatory=True, desc="ROI time series TSV, all volumes, columns = ROIs")
    events_file = File(exists=True, mandatory=True, desc="BIDS events TSV")
    tr = traits.Float(mandatory=True, desc="repetition time (s)")
    start_time = traits.Float(0.0, usedefault=True, desc="acquisition time of the first sample (s)")
    confounds_file = File(exists=True, desc="selected confound regressors TSV, one column each")
    task_config = Str(mandatory=True, desc="task config JSON (see ketflow.interfaces.glm)")
    seeds = InputMultiObject(Str, desc="seed ROIs for ROI-to-ROI gPPI (default: all ROIs)")
    voxel_seeds = InputMultiObject(Str, desc="seed ROIs to make seed-to-voxel maps for")
    bold_file = File(exists=True, desc="preprocessed 4-D BOLD, for seed-to-voxel maps")
    brain_mask = File(exists=True, desc="brain mask on the BOLD grid, for seed-to-voxel maps")
    deconvolve = traits.Bool(True, usedefault=True, desc="deconvolve the seed (Gitelman 2003)")
    symmetrize = traits.Bool(False, usedefault=True, desc="average both directions of ROI pairs")


class _GPPIOutputSpec(TraitedSpec):
    contrast_names = traits.List(Str, desc="condition and contrast names, in the order of relmat_files")
    relmat_files = OutputMultiObject(File(exists=True), desc="seed x target PPI matrix per contrast")
    stats_tsv = File(exists=True, desc="long table of all PPI estimates")
    seed_maps = OutputMultiObject(File(exists=True), desc="seed-to-voxel effect/variance/z maps")
    design_tsv = File(exists=True, desc="gPPI design of the first seed")
    figure = File(exists=True, desc="PPI regressors and ROI-to-ROI matrix figure")


class GPPI(SimpleInterface):
    """Generalized PPI (McLaren et al. 2012) for ROI pairs and seed-to-voxel maps."""

    input_spec = _GPPIInputSpec
    output_spec = _GPPIOutputSpec

    def _run_interface(self, runtime):
        settings = task_settings(self.inputs.task_config)
        rois = pd.read_csv(self.inputs.timeseries, sep="\t")
        confounds = self.inputs.confounds_file if self.inputs.confounds_file else None
        design = load_task_design(
            self.inputs.events_file, self.inputs.tr, len(rois), self.inputs.start_time, confounds, settings
        )
        seeds = list(self.inputs.seeds) if self.inputs.seeds else list(rois.columns)
        table = roi_to_roi_gppi(
            rois, design, seeds, settings["contrasts"], self.inputs.deconvolve, settings["noise_model"]
        )
        cwd = Path(os.getcwd())
        shown = symmetrize(table) if self.inputs.symmetrize else table
        names = list(pd.unique(table["contrast"]))
        relmats = []
        for name in names:
            mat = relmat(shown, name, list(rois.columns), self.inputs.symmetrize)
            relmats.append(str(write_tsv(cwd / f"contrast-{bids_label(name)}_stat-ppi_relmat.tsv", mat)))
        stats_tsv = write_tsv(cwd / "desc-ppi_stats.tsv", table)
        first = gppi_design(rois[seeds[0]].to_numpy(), design, self.inputs.deconvolve)
        design_tsv = write_tsv(cwd / "desc-ppi_design.tsv", first.reset_index())
        last_name = list(settings["contrasts"])[-1] if settings["contrasts"] else names[0]
        figure = plot_ppi(
            first,
            relmat(shown, last_name, list(rois.columns), self.inputs.symmetrize),
            f"PPI {last_name}",
            cwd / "desc-ppi_design.svg",
        )
        self._results.update(
            contrast_names=names,
            relmat_files=relmats,
            stats_tsv=str(stats_tsv),
            design_tsv=str(design_tsv),
            figure=str(figure),
            seed_maps=self._seed_maps(rois, design, settings, cwd),
        )
        return runtime

    def _seed_maps(self, rois, design, settings, cwd) -> list[str]:
        if not self.inputs.voxel_seeds:
            return []
        if not (self.inputs.bold_file and self.inputs.brain_mask):
            raise ValueError("seed-to-voxel gPPI maps need bold_file and brain_mask")
        unknown = sorted(set(self.inputs.voxel_seeds) - set(rois.columns))
        if unknown:
            raise ValueError(f"voxel seeds {unknown} are not ROI columns {list(rois.columns)}")
        mask_img = nib.load(self.inputs.brain_mask)
        mask = read_mask(self.inputs.brain_mask)
        data = read_masked_bold(self.inputs.bold_file, mask)
        if data.shape[0] != len(rois):
            raise ValueError(f"{Path(self.inputs.bold_file).name}: {data.shape[0]} volumes, ROI series {len(rois)}")
        if settings["signal_scaling"]:
            data, _ = mean_scaling(data)
        files = []
        for seed in self.inputs.voxel_seeds:
            _, maps = seed_to_voxel_gppi(
                data, rois[seed].to_numpy(), design, settings["contrasts"], self.inputs.deconvolve,
                settings["noise_model"],
            )
            for name, res in maps.items():
                names = contrast_files(f"seed-{bids_label(seed)}_", name)
                for stat, values in (("effect", res.effect), ("variance", res.variance), ("z", res.z)):
                    files.append(str(write_nifti(cwd / names[stat], map_to_image(values, mask, mask_img.affine))))
        return files
