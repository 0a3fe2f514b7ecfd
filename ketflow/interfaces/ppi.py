"""Nipype interface: generalized PPI of one task run (ROI-to-ROI and seed-to-voxel).

:class:`GPPI` reads the run's preprocessed BOLD (its in-mask cache, :mod:`ketflow.io.boldcache`,
or a 4-D NIfTI) once, scales every voxel to percent signal
change of its temporal mean (as :class:`ketflow.interfaces.glm.FirstLevelGLM`), builds the
task design the same way, takes each ROI's signal from the scaled voxels (``signal``:
``mean`` over the ROI's voxels, or the SPM-style first ``eigenvariate`` of the ROI's
voxels after projecting out the design's confounds, drifts and constant), forms the gPPI
design of every seed (:mod:`ketflow.signal.gppi`; the seed -- never prewhitened -- is
deconvolved unless ``deconvolve`` is false) and writes into the working directory:

* ``contrast-<label>_stat-ppi_relmat.tsv`` per condition and contrast: seed x target
  matrix of PPI effects (``Node`` column = seed, one column per target ROI; ``n/a`` on
  the diagonal and for pairs not estimated); symmetrised (mean of both directions) when
  ``symmetrize`` is true;
* ``desc-ppi_stats.tsv``: long table (seed, target, contrast, effect, variance, t, z, dof);
* ``seed-<ROI>_contrast-<label>_stat-{effect,variance,z}_statmap.nii.gz`` for every seed
  in ``voxel_seeds``;
* ``desc-ppi_design.tsv``: the gPPI design of the first seed;
* ``desc-ppi_design.svg``: the first seed's interaction regressors and the ROI-to-ROI
  matrix of the last contrast;
* ``desc-ppi_meta.json``: design description (sidecar fields).

Units: ROI and voxel signals are in percent signal change, so a PPI effect is the
target's percent signal change per unit of (seed percent signal change, deconvolved) x
(psychological variable), and the ROI-to-ROI effect of a target equals the mean over the
target ROI's voxels of the seed-to-voxel effect map (exactly for OLS; for AR(1), up to the
voxels' own whitening).
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
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
from ..io.write import write_json, write_nifti, write_text, write_tsv
from ..signal.extract import first_eigenvariate, roi_means
from ..reports.svg import figure_to_svg
from ..signal.glm import column_space, voxel_smoother
from ..signal.gppi import (
    gppi_contrasts,
    gppi_design,
    nuisance_columns,
    roi_to_roi_gppi,
    seed_to_voxel_gppi,
    symmetrize,
)
from ..io.boldcache import read_mask
from .bold import cache_of
from .glm import (
    contrast_files,
    design_description,
    load_task_design,
    map_to_image,
    read_labels,
    roi_voxels,
    scaled_bold,
    task_settings,
)

SIGNAL_DESCRIPTION = {
    "mean": "mean over the ROI's voxels of the voxels' percent signal change",
    "eigenvariate": "first eigenvariate (SPM convention: u1 s1 / sqrt(n_voxels), sign of the summed voxel "
                    "weights) of the ROI's voxels in percent signal change after projecting out the design's "
                    "confounds, drifts and constant",
}


def ppi_roi_signals(
    data: np.ndarray, labels: np.ndarray, names: list[str], method: str, nuisance: np.ndarray
) -> pd.DataFrame:
    """ROI signals (n_scans, n_rois) for gPPI (see :data:`SIGNAL_DESCRIPTION`).

    ``data`` (n_scans, n_voxels) scaled voxels, ``labels`` (n_voxels,) 1..n_rois (0 = none),
    ``nuisance`` (n_scans, k) the design's nuisance columns (used by ``eigenvariate``).
    """
    if method == "mean":
        return pd.DataFrame(roi_means(data, labels, len(names)), columns=names)
    if method != "eigenvariate":
        raise ValueError(f"unknown ROI signal {method!r}; use 'mean' or 'eigenvariate'")
    q = column_space(nuisance)
    series = {}
    for k, name in enumerate(names, start=1):
        roi = np.asarray(data[:, labels == k], dtype=np.float64)
        if roi.shape[1] == 0:
            raise ValueError(f"ROI {name} has no voxels")
        series[name] = first_eigenvariate(roi - q @ (q.T @ roi))
    return pd.DataFrame(series)


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
    write_text(path, figure_to_svg(fig))
    plt.close(fig)
    return path


class _GPPIInputSpec(BaseInterfaceInputSpec):
    bold_cache = File(exists=True, mandatory=True, xor=["bold_file"],
                      desc="in-mask BOLD cache from CacheBOLD (every volume, not denoised)")
    bold_file = File(exists=True, mandatory=True, xor=["bold_cache"], desc="or the preprocessed 4-D BOLD")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the BOLD grid")
    labels_file = File(exists=True, mandatory=True, desc="ROI label image on the BOLD grid")
    labels_tsv = File(exists=True, mandatory=True, desc="ROI labels TSV (index, name)")
    signal = traits.Enum("mean", "eigenvariate", usedefault=True, desc="ROI signal (module docstring)")
    events_file = File(exists=True, mandatory=True, desc="BIDS events TSV")
    tr = traits.Float(mandatory=True, desc="repetition time (s)")
    start_time = traits.Float(0.0, usedefault=True, desc="acquisition time of the first sample (s)")
    confounds_file = File(exists=True, desc="selected confound regressors TSV, one column each")
    task_config = Str(mandatory=True, desc="task config JSON (see ketflow.interfaces.glm)")
    seeds = InputMultiObject(Str, desc="seed ROIs for ROI-to-ROI gPPI (default: all ROIs)")
    voxel_seeds = InputMultiObject(Str, desc="seed ROIs to make seed-to-voxel maps for")
    deconvolve = traits.Bool(True, usedefault=True, desc="deconvolve the seed (Gitelman 2003)")
    symmetrize = traits.Bool(False, usedefault=True, desc="average both directions of ROI pairs")


class _GPPIOutputSpec(TraitedSpec):
    contrast_names = traits.List(Str, desc="condition and contrast names, in the order of relmat_files")
    relmat_files = OutputMultiObject(File(exists=True), desc="seed x target PPI matrix per contrast")
    stats_tsv = File(exists=True, desc="long table of all PPI estimates")
    seed_maps = OutputMultiObject(File(exists=True), desc="seed-to-voxel effect/variance/z maps")
    design_tsv = File(exists=True, desc="gPPI design of the first seed")
    figure = File(exists=True, desc="PPI regressors and ROI-to-ROI matrix figure")
    meta_json = File(exists=True, desc="design description (sidecar fields)")


class GPPI(SimpleInterface):
    """Generalized PPI (McLaren et al. 2012) for ROI pairs and seed-to-voxel maps."""

    input_spec = _GPPIInputSpec
    output_spec = _GPPIOutputSpec

    def _run_interface(self, runtime):
        settings = task_settings(self.inputs.task_config)
        mask_img = nib.load(self.inputs.brain_mask)
        mask = read_mask(self.inputs.brain_mask)
        with cache_of(self.inputs, mask) as cache:
            data = scaled_bold(cache, settings)
        confounds = self.inputs.confounds_file if self.inputs.confounds_file else None
        design = load_task_design(
            self.inputs.events_file, self.inputs.tr, data.shape[0], self.inputs.start_time, confounds, settings
        )
        labels, names = read_labels(self.inputs.labels_file, self.inputs.labels_tsv, mask)
        nuisance = design.matrix[nuisance_columns(design)].to_numpy()
        inside = roi_voxels(labels)
        rois = ppi_roi_signals(data[:, inside], labels[inside], names, self.inputs.signal, nuisance)
        seeds = list(self.inputs.seeds) if self.inputs.seeds else names
        unknown = sorted(set(seeds) | set(self.inputs.voxel_seeds or []))
        unknown = [s for s in unknown if s not in names]
        if unknown:
            raise ValueError(f"seeds {unknown} are not ROIs of {Path(self.inputs.labels_tsv).name} ({names})")
        table = roi_to_roi_gppi(
            rois, design, seeds, settings["contrasts"], self.inputs.deconvolve, settings["noise_model"]
        )
        cwd = Path(os.getcwd())
        shown = symmetrize(table) if self.inputs.symmetrize else table
        contrast_names = list(pd.unique(table["contrast"]))
        relmats = [
            str(write_tsv(cwd / f"contrast-{bids_label(name)}_stat-ppi_relmat.tsv",
                          relmat(shown, name, names, self.inputs.symmetrize)))
            for name in contrast_names
        ]
        first = gppi_design(rois[seeds[0]].to_numpy(), design, self.inputs.deconvolve)
        last_name = list(settings["contrasts"])[-1] if settings["contrasts"] else contrast_names[0]
        figure = plot_ppi(first, relmat(shown, last_name, names, self.inputs.symmetrize), f"PPI {last_name}",
                          cwd / "desc-ppi_design.svg")
        self._results.update(
            contrast_names=contrast_names,
            relmat_files=relmats,
            stats_tsv=str(write_tsv(cwd / "desc-ppi_stats.tsv", table)),
            design_tsv=str(write_tsv(cwd / "desc-ppi_design.tsv", first.reset_index())),
            figure=str(figure),
            meta_json=str(write_json(cwd / "desc-ppi_meta.json",
                                     self._description(design, settings, first, int(table["dof"].iloc[0])))),
            seed_maps=self._seed_maps(data, mask, mask_img.affine, rois, design, settings, cwd),
        )
        return runtime

    def _description(self, design, settings, gppi: pd.DataFrame, dof: int) -> dict:
        meta = design_description(design, settings, dof, {})
        del meta["Contrasts"]
        vectors = gppi_contrasts(design, gppi.columns, settings["contrasts"])
        meta["DesignColumns"] = [c if c != "seed" else "seed (the seed ROI's signal)" for c in gppi.columns]
        meta["PPI"] = {
            "Method": "generalized PPI (McLaren et al. 2012): all task regressors, the seed, one interaction "
                      "term per condition column and the nuisance regressors in one model",
            "Seeds": list(self.inputs.seeds) if self.inputs.seeds else "every ROI",
            "VoxelSeeds": list(self.inputs.voxel_seeds or []),
            "Deconvolution": ("parametric empirical Bayes deconvolution of the (not prewhitened) seed on the "
                              "micro-time grid (Gitelman et al. 2003; ketflow.ppi.peb_deconvolve), nuisance "
                              "regressors as confounds" if self.inputs.deconvolve else
                              "none: interaction = confound-cleaned, centred seed BOLD x centred convolved "
                              "condition regressor"),
            "PsychologicalVariables": "micro-time stimulus function of each condition column, mean-centred",
            "ROISignal": SIGNAL_DESCRIPTION[self.inputs.signal],
            "Symmetrized": bool(self.inputs.symmetrize),
            "Contrasts": {name: {c: float(w) for c, w in zip(gppi.columns, vec) if w != 0}
                          for name, vec in vectors.items()},
        }
        unit = "percent signal change" if settings["signal_scaling"] else "data unit"
        meta["EffectUnits"] = (f"target {unit} per unit of (seed {unit}, deconvolved to the neuronal level) x "
                               "psychological variable" if self.inputs.deconvolve else
                               f"target {unit} per unit of seed {unit} x convolved psychological regressor")
        return meta

    def _seed_maps(self, data, mask, affine, rois, design, settings, cwd) -> list[str]:
        files = []
        for seed in self.inputs.voxel_seeds or []:
            _, maps = seed_to_voxel_gppi(
                data, rois[seed].to_numpy(), design, settings["contrasts"], self.inputs.deconvolve,
                settings["noise_model"],
                voxel_smoother(settings["noise_model"], mask, affine, settings["autocorrelation_fwhm_mm"]),
            )
            for name, res in maps.items():
                names = contrast_files(f"seed-{bids_label(seed)}_", name)
                for stat, values in (("effect", res.effect), ("variance", res.variance), ("z", res.z)):
                    files.append(str(write_nifti(cwd / names[stat], map_to_image(values, mask, affine))))
        return files
