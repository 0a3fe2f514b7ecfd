"""Nipype interface: beta-series connectivity of one event-related task run.

:class:`BetaSeries` reads the run's percent-scaled in-mask data and task design (both from
:class:`~ketflow.interfaces.task.TaskModelData`) and its events, takes each circuit ROI's signal
(``circuit.signal``, as the gPPI does: :func:`ketflow.signal.gppi.ppi_roi_signals`), estimates
every trial's response by least squares - separate (:func:`ketflow.signal.betaseries.lss_betas`,
with the design's confounds, spike regressors, drifts and constant as the shared nuisance part)
and writes into the working directory:

* ``stat-effect_betaseries.tsv``: one row per modelled trial (``trial``, ``onset``,
  ``duration``, ``trial_type``, ``column``, ``retained_fraction`` of its regressor after the
  nuisance projection, ``used`` 1/0 in the correlations: ``beta_series.max_variance_inflation``)
  and one column of single-trial estimates per ROI (percent signal change per unit regressor);
* ``contrast-<condition>_stat-pearsoncorrelation_relmat.tsv`` for every condition with at least
  ``beta_series.min_trials`` used trials: the ROI x ROI Pearson correlation of the beta series
  (``Node`` column, XCP-D's relmat layout);
* ``contrast-<contrast>_stat-fisherz_relmat.tsv`` for every task contrast whose conditions all
  have a matrix: the contrast-weighted sum of the conditions' Fisher z matrices (diagonal n/a);
* ``desc-betaseries_meta.json``: the trial counts, the conditions and contrasts left out (and why).
"""

from __future__ import annotations

import os
from pathlib import Path

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

from ..config import BetaSeries as BetaSeriesSettings
from ..config import Task
from ..io.boldcache import read_mask
from ..io.design import load_task_design
from ..io.names import bids_label
from ..io.rois import read_labels
from ..io.tables import read_events
from ..io.write import write_json, write_tsv
from ..signal.betaseries import beta_series, contrast_fisher_z, trial_table
from ..signal.gppi import nuisance_columns, ppi_roi_signals


class _BetaSeriesInputSpec(BaseInterfaceInputSpec):
    percent_bold = File(exists=True, mandatory=True, desc="percent-scaled in-mask data from TaskModelData")
    task_design = File(exists=True, mandatory=True, desc="the run's task design from TaskModelData")
    events_file = File(exists=True, mandatory=True, desc="the run's BIDS events TSV")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the BOLD grid")
    labels_file = File(exists=True, mandatory=True, desc="ROI label image on the BOLD grid")
    labels_tsv = File(exists=True, mandatory=True, desc="ROI labels TSV (index, name)")
    signal = traits.Enum("mean", "eigenvariate", mandatory=True, desc="ROI signal (circuit.signal)")
    task = traits.Instance(Task, mandatory=True, desc="the run's task section (conditions, contrasts)")
    settings = traits.Instance(BetaSeriesSettings, mandatory=True, desc="the beta_series section")


class _BetaSeriesOutputSpec(TraitedSpec):
    betas_tsv = File(exists=True, desc="single-trial estimates, one row per trial, one column per ROI")
    condition_relmats = OutputMultiObject(File(exists=True), desc="Pearson correlation matrix per condition")
    contrast_relmats = OutputMultiObject(File(exists=True), desc="Fisher z contrast matrix per contrast")
    meta_json = File(exists=True, desc="trial counts and what was left out")


class BetaSeries(SimpleInterface):
    """LSS beta series (Mumford et al. 2012) and their correlations (Rissman et al. 2004)."""

    input_spec = _BetaSeriesInputSpec
    output_spec = _BetaSeriesOutputSpec

    def _run_interface(self, runtime):
        task, settings = self.inputs.task, self.inputs.settings
        mask = read_mask(self.inputs.brain_mask)
        design = load_task_design(self.inputs.task_design)
        labels, names = read_labels(self.inputs.labels_file, self.inputs.labels_tsv, mask)
        inside = np.flatnonzero(labels > 0)
        nuisance = design.matrix[nuisance_columns(design)].to_numpy()
        rois = ppi_roi_signals(np.load(self.inputs.percent_bold, mmap_mode="r")[:, inside], labels[inside], names,
                               self.inputs.signal, nuisance)
        derived = [d.model_dump() for d in task.derived_conditions]
        try:
            trials = trial_table(read_events(self.inputs.events_file), design, task.conditions, derived)
        except ValueError as err:
            raise ValueError(f"{Path(self.inputs.events_file).name}: {err}") from err
        result = beta_series(rois.to_numpy(), trials, design, nuisance, min_trials=settings.min_trials,
                             max_variance_inflation=settings.max_variance_inflation)
        betas, retained, usable, matrices, counts = (result.betas, result.retained, result.usable, result.matrices,
                                                     result.counts)
        cwd = Path(os.getcwd())
        table = pd.concat([trials.drop(columns="modulation").reset_index(drop=True).assign(
                               retained_fraction=retained, used=usable.astype(int)),
                           pd.DataFrame(betas, columns=names)], axis=1)
        condition_files = [str(write_tsv(cwd / f"contrast-{bids_label(name)}_stat-pearsoncorrelation_relmat.tsv",
                                         _relmat(matrix, names))) for name, matrix in matrices.items()]
        contrast_files, skipped = [], {}
        for name, weights in task.contrasts_by_name().items():
            z = contrast_fisher_z(matrices, weights)
            if z is None:
                short = [c for c, w in weights.items() if w and c not in matrices]
                skipped[name] = f"condition(s) {short} have fewer than {settings.min_trials} trials or none"
                continue
            contrast_files.append(str(write_tsv(cwd / f"contrast-{bids_label(name)}_stat-fisherz_relmat.tsv",
                                                _relmat(z, names))))
        meta = {"Method": "least-squares-separate single-trial estimates (Mumford et al. 2012), ordinary least "
                          "squares, canonical HRF; Pearson correlation over each condition's trials (Rissman "
                          "et al. 2004); contrasts: weighted sums of the conditions' Fisher z",
                "NumberOfTrials": counts, "MinTrials": settings.min_trials,
                "TrialsLeftOut": {"count": int((~usable).sum()), "trials": list(trials.loc[~usable, "trial"]),
                                  "rule": "retained_fraction (share of the trial regressor's sum of squares left after "
                                          "the confounds and censoring spikes) below the run's median / "
                                          f"{settings.max_variance_inflation:g}"},
                "Conditions": list(matrices), "Contrasts": [n for n in task.contrasts_by_name() if n not in skipped],
                "SkippedConditions": {c: f"{n} trial(s), fewer than {settings.min_trials}"
                                      for c, n in counts.items() if c not in matrices},
                "SkippedContrasts": skipped, "ROISignal": self.inputs.signal}
        self._results.update(
            betas_tsv=str(write_tsv(cwd / "stat-effect_betaseries.tsv", table)),
            condition_relmats=condition_files,
            contrast_relmats=contrast_files,
            meta_json=str(write_json(cwd / "desc-betaseries_meta.json", meta)),
        )
        return runtime


def _relmat(matrix: np.ndarray, names: list[str]) -> pd.DataFrame:
    """A ROI x ROI matrix in XCP-D's relmat layout (``Node`` column, then one column per ROI)."""
    return pd.DataFrame(matrix, index=pd.Index(names, name="Node"), columns=names).reset_index()
