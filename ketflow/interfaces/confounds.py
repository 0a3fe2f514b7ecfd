"""Nipype interface: the confound regressors a run's task models include.

Loads the run's fMRIPrep confounds with the configured strategy
(:func:`ketflow.io.confounds.load_confounds`), adds one spike regressor per censored volume
(:func:`ketflow.signal.design.spike_regressors`: task models keep every volume) and writes
``desc-confounds_regressors.tsv``, which the task design and the DCM's X0 use.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

from ..config import Denoising
from ..io.confounds import confound_strategy, load_confounds
from ..io.write import write_tsv
from ..signal.design import spike_regressors


class _SelectConfoundsInputSpec(BaseInterfaceInputSpec):
    confounds_tsv = File(exists=True, mandatory=True, desc="fMRIPrep desc-confounds_timeseries.tsv")
    confounds_json = File(exists=True, desc="its JSON sidecar (CompCor metadata)")
    denoising = traits.Instance(Denoising, mandatory=True, desc="the configuration's denoising section")
    n_volumes = traits.Int(mandatory=True, desc="volumes of the BOLD run")


class _SelectConfoundsOutputSpec(TraitedSpec):
    regressors_tsv = File(exists=True, desc="strategy regressors + one spike column per censored volume")
    n_censored = traits.Int(desc="volumes censored (dummy scans included)")


class SelectConfounds(SimpleInterface):
    """Write the confound regressors (with censoring spikes) of one run for its task models."""

    input_spec = _SelectConfoundsInputSpec
    output_spec = _SelectConfoundsOutputSpec

    def _run_interface(self, runtime):
        confounds = load_confounds(self.inputs.confounds_tsv, self.inputs.confounds_json or None,
                                   confound_strategy(self.inputs.denoising), n_volumes=self.inputs.n_volumes)
        table = pd.concat([confounds.regressors.reset_index(drop=True), spike_regressors(confounds.keep)], axis=1)
        out = write_tsv(Path(os.getcwd()) / "desc-confounds_regressors.tsv", table)
        self._results.update(regressors_tsv=str(out), n_censored=confounds.n_censored)
        return runtime
