"""Nipype interface: what a task run's models share, made once per run.

:class:`TaskModelData` reads the run's in-mask BOLD cache once, scales every voxel to percent
signal change of its temporal mean (:func:`ketflow.signal.glm.percent_signal_change`, as
nilearn's ``FirstLevelModel`` does) and builds the run's task design from its events and
confound regressors (:func:`ketflow.io.design.task_design_from_files`).  It writes

* ``desc-percent_bold.npy``: (time, in-mask voxels) float32, voxels in C order of the mask;
* ``desc-task_design.pkl``: the :class:`~ketflow.signal.design.TaskDesign`
  (:func:`ketflow.io.design.save_task_design`),

which the activation GLM and the gPPI nodes read instead of each scaling the run and building
the design again.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

from ..config import GLM, Task
from ..io.boldcache import read_cache, read_mask
from ..io.design import save_task_design, task_design_from_files
from ..signal.glm import percent_signal_change
from .bold import cache_of


class _TaskModelDataInputSpec(BaseInterfaceInputSpec):
    bold_cache = File(exists=True, mandatory=True, xor=["bold_file"], desc="in-mask BOLD cache from CacheBOLD")
    bold_file = File(exists=True, mandatory=True, xor=["bold_cache"], desc="or the preprocessed 4-D BOLD")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the BOLD grid")
    events_file = File(exists=True, mandatory=True, desc="BIDS events TSV")
    tr = traits.Float(mandatory=True, desc="repetition time (s)")
    start_time = traits.Float(mandatory=True, desc="acquisition time of the first sample (s, slice-timing reference)")
    confounds_file = File(exists=True, desc="confound regressors TSV (SelectConfounds), one column each")
    task = traits.Instance(Task, mandatory=True, desc="the run's task section of the configuration")
    glm = traits.Instance(GLM, mandatory=True, desc="the configuration's glm section (HRF, high-pass)")


class _TaskModelDataOutputSpec(TraitedSpec):
    percent_bold = File(exists=True, desc="(time, in-mask voxels) float32 .npy in percent signal change")
    task_design = File(exists=True, desc="the run's task design (read with ketflow.io.design.load_task_design)")


class TaskModelData(SimpleInterface):
    """Percent-scaled in-mask data and the task design of one run, for its GLM and gPPI."""

    input_spec = _TaskModelDataInputSpec
    output_spec = _TaskModelDataOutputSpec

    def _run_interface(self, runtime):
        mask = read_mask(self.inputs.brain_mask)
        with cache_of(self.inputs, mask) as cache:
            data = read_cache(cache, percent_signal_change)
        design = task_design_from_files(self.inputs.events_file, self.inputs.tr, data.shape[0],
                                        self.inputs.start_time, self.inputs.confounds_file or None,
                                        self.inputs.task, self.inputs.glm)
        cwd = Path(os.getcwd())
        np.save(cwd / "desc-percent_bold.npy", data)
        self._results.update(percent_bold=str(cwd / "desc-percent_bold.npy"),
                             task_design=str(save_task_design(design, cwd / "desc-task_design.pkl")))
        return runtime
