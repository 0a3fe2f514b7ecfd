"""Nipype interface: generalized PPI of one task run (ROI-to-ROI and seed-to-voxel).

:class:`GPPI` reads the run's percent-scaled in-mask data and task design (both from
:class:`~ketflow.interfaces.task.TaskModelData`), takes each ROI's signal from the scaled voxels
(:func:`ketflow.signal.gppi.ppi_roi_signals`: ``mean`` or SPM-style first ``eigenvariate``),
fits the gPPI models of :mod:`ketflow.signal.gppi` (the seed -- never prewhitened -- is
deconvolved when ``ppi.deconvolve``) and writes into the working directory:

* ``contrast-<label>_stat-ppi_relmat.tsv`` per condition and contrast: seed x target
  matrix of PPI effects (``Node`` column = seed, one column per target ROI; ``n/a`` on
  the diagonal and for pairs not estimated); symmetrised (mean of both directions) when
  ``ppi.symmetrize``;
* ``desc-ppi_stats.tsv``: long table (seed, target, contrast, effect, variance, t, z, dof);
* ``desc-<seed>_contrast-<label>_stat-{effect,variance,z}_statmap.nii.gz`` for every seed;
* ``desc-ppi_design.tsv``: the gPPI design of the first seed;
* ``desc-ppi_design.svg``: the first seed's interaction regressors and the ROI-to-ROI
  matrix of the last contrast;
* ``desc-ppi_meta.json``: the model description (:func:`ketflow.signal.describe.gppi_description`).

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
    OutputMultiObject,
    SimpleInterface,
    Str,
    TraitedSpec,
    traits,
)

from ..config import GLM, PPI, Task
from ..io.boldcache import read_mask
from ..io.design import load_task_design
from ..io.names import bids_label
from ..io.rois import read_labels
from ..io.svg import write_svg
from ..io.write import write_json, write_tsv
from ..signal.describe import gppi_description
from ..signal.glm import voxel_smoother
from ..signal.gppi import (
    gppi_design,
    nuisance_columns,
    ppi_matrix,
    ppi_roi_signals,
    roi_to_roi_gppi,
    seed_to_voxel_gppi,
    symmetrize,
)
from ..signal.plots import ppi_figure
from .glm import write_contrast_maps


class _GPPIInputSpec(BaseInterfaceInputSpec):
    percent_bold = File(exists=True, mandatory=True, desc="percent-scaled in-mask data from TaskModelData")
    task_design = File(exists=True, mandatory=True, desc="the run's task design from TaskModelData")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the BOLD grid")
    labels_file = File(exists=True, mandatory=True, desc="ROI label image on the BOLD grid")
    labels_tsv = File(exists=True, mandatory=True, desc="ROI labels TSV (index, name)")
    signal = traits.Enum("mean", "eigenvariate", mandatory=True, desc="ROI signal (circuit.signal)")
    task = traits.Instance(Task, mandatory=True, desc="the run's task section (contrasts)")
    glm = traits.Instance(GLM, mandatory=True, desc="the configuration's glm section (noise model, high-pass)")
    ppi = traits.Instance(PPI, mandatory=True, desc="the configuration's ppi section (seeds, deconvolution)")


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
        task, glm, ppi = self.inputs.task, self.inputs.glm, self.inputs.ppi
        mask_img = nib.load(self.inputs.brain_mask)
        mask = read_mask(self.inputs.brain_mask)
        data = np.load(self.inputs.percent_bold)
        design = load_task_design(self.inputs.task_design)
        labels, names = read_labels(self.inputs.labels_file, self.inputs.labels_tsv, mask)
        inside = np.flatnonzero(labels > 0)
        rois = ppi_roi_signals(data[:, inside], labels[inside], names, self.inputs.signal,
                               design.matrix[nuisance_columns(design)].to_numpy())
        # the configuration names only circuit ROIs (validated), so a seed absent from the run's
        # labels was excluded from this run by the coverage rule (desc-rois_qc.tsv): it is skipped
        voxel_seeds = [s for s in ppi.seeds if s in names]
        seeds = voxel_seeds if ppi.seeds else names
        if not seeds:
            raise ValueError(f"every gPPI seed {list(ppi.seeds)} was excluded from this run by the coverage rule "
                             f"(ROIs kept: {names}; see the run's desc-rois_qc.tsv)")
        contrasts = task.contrasts_by_name()
        table = roi_to_roi_gppi(rois, design, seeds, contrasts, ppi.deconvolve, glm.noise_model)
        cwd = Path(os.getcwd())
        shown = symmetrize(table) if ppi.symmetrize else table
        contrast_names = list(pd.unique(table["contrast"]))
        relmats = [str(write_tsv(cwd / f"contrast-{bids_label(name)}_stat-ppi_relmat.tsv",
                                 ppi_matrix(shown, name, names, ppi.symmetrize)))
                   for name in contrast_names]
        first = gppi_design(rois[seeds[0]].to_numpy(), design, ppi.deconvolve)
        last = list(contrasts)[-1] if contrasts else contrast_names[0]
        figure = write_svg(cwd / "desc-ppi_design.svg",
                           ppi_figure(first, ppi_matrix(shown, last, names, ppi.symmetrize), f"PPI {last}"))
        meta = gppi_description(design, first, contrasts, seeds=voxel_seeds if ppi.seeds else None,
                                voxel_seeds=voxel_seeds,
                                deconvolve=ppi.deconvolve, symmetrize=ppi.symmetrize, signal=self.inputs.signal,
                                high_pass_s=glm.high_pass_s, noise_model=glm.noise_model,
                                dof=int(table["dof"].iloc[0]), autocorrelation_fwhm_mm=glm.autocorrelation_fwhm_mm)
        if len(voxel_seeds) < len(ppi.seeds):
            meta["PPI"]["SeedsExcludedByCoverage"] = [s for s in ppi.seeds if s not in names]
        smoother = voxel_smoother(glm.noise_model, mask, mask_img.affine, glm.autocorrelation_fwhm_mm)
        seed_maps = []
        for seed in voxel_seeds:
            _, maps = seed_to_voxel_gppi(data, rois[seed].to_numpy(), design, contrasts, ppi.deconvolve,
                                         glm.noise_model, smoother)
            for name, result in maps.items():
                seed_maps += write_contrast_maps(f"desc-{bids_label(seed)}_", name, result, mask,
                                                 mask_img.affine).values()
        self._results.update(
            contrast_names=contrast_names,
            relmat_files=relmats,
            stats_tsv=str(write_tsv(cwd / "desc-ppi_stats.tsv", table)),
            design_tsv=str(write_tsv(cwd / "desc-ppi_design.tsv", first.reset_index())),
            figure=str(figure),
            meta_json=str(write_json(cwd / "desc-ppi_meta.json", meta)),
            seed_maps=seed_maps,
        )
        return runtime
