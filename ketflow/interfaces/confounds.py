"""Nipype interface: the confound regressors a task GLM includes.

Task models keep every volume (deconvolution and event timing need an evenly sampled
series), so censoring enters them as one spike regressor per censored volume (dummy scans
and high-motion volumes), which removes those volumes' influence on the estimates exactly
as dropping them would (Lemieux et al. 2007; Power et al. 2014).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

from ..io.confounds import ConfoundStrategy, load_confounds
from ..io.write import write_tsv


def spike_regressors(keep: np.ndarray) -> pd.DataFrame:
    """One indicator column per censored volume; ``keep`` is bool (T,)."""
    censored = np.flatnonzero(~keep)
    spikes = np.zeros((keep.size, censored.size))
    spikes[censored, np.arange(censored.size)] = 1.0
    return pd.DataFrame(spikes, columns=[f"censored_{i:04d}" for i in censored])


class _SelectConfoundsInputSpec(BaseInterfaceInputSpec):
    confounds_tsv = File(exists=True, mandatory=True, desc="fMRIPrep desc-confounds_timeseries.tsv")
    confounds_json = File(exists=True, desc="its JSON sidecar (CompCor metadata)")
    strategy = traits.Enum("24P", "36P", "aCompCor", mandatory=True, desc="confound strategy")
    fd_threshold = traits.Either(None, traits.Float, default=None, usedefault=True,
                                 desc="framewise displacement censoring threshold (mm); None: no censoring")
    min_contiguous = traits.Int(5, usedefault=True, desc="shortest kept segment (volumes)")
    n_volumes = traits.Int(mandatory=True, desc="volumes of the BOLD run")


class _SelectConfoundsOutputSpec(TraitedSpec):
    regressors_tsv = File(exists=True, desc="strategy regressors + one spike column per censored volume")
    n_censored = traits.Int(desc="volumes censored (dummy scans included)")


class SelectConfounds(SimpleInterface):
    """Write the confound regressors (with censoring spikes) of one run for its GLMs."""

    input_spec = _SelectConfoundsInputSpec
    output_spec = _SelectConfoundsOutputSpec

    def _run_interface(self, runtime):
        strategy = ConfoundStrategy(name=self.inputs.strategy, fd_threshold=self.inputs.fd_threshold,
                                    min_segment=self.inputs.min_contiguous)
        confounds = load_confounds(self.inputs.confounds_tsv, self.inputs.confounds_json or None, strategy,
                                   n_volumes=self.inputs.n_volumes)
        table = pd.concat([confounds.regressors.reset_index(drop=True), spike_regressors(confounds.keep)], axis=1)
        out = write_tsv(Path(os.getcwd()) / "desc-confounds_regressors.tsv", table)
        self._results.update(regressors_tsv=str(out), n_censored=confounds.n_censored)
        return runtime
