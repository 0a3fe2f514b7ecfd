"""What a run's stages share, made once per run: the BOLD cache, and the task-model data.

* :func:`init_bold_cache_wf`: the run's BOLD decompressed once (gzip CRC checked) into an
  in-mask float32 cache that every node reading voxels memory-maps;
* :func:`init_task_data_wf`: for task runs, the confound regressors of the task models
  (strategy regressors and one spike per censored volume), the in-mask data in percent signal
  change and the task design -- built once and shared by the activation GLM and gPPI (the
  DCM shares the confound regressors; its regions are grand-mean scaled, SPM's convention,
  and its inputs live on its own micro-time grid).
"""

from __future__ import annotations

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from ...config import GLM, Denoising, Task
from ...docs import fill_doc
from ...interfaces.bold import CacheBOLD
from ...interfaces.confounds import SelectConfounds
from ...interfaces.task import TaskModelData


@fill_doc
def init_bold_cache_wf(*, mem_gb: float, name: str = "bold_cache_wf") -> Workflow:
    """Decompress the run's BOLD once into an in-mask cache.

    Parameters
    ----------
    %(mem_gb)s
    %(name)s

    Inputs
    ------
    bold_file
        fMRIPrep's preprocessed BOLD series.
    %(brain_mask)s

    Outputs
    -------
    %(bold_cache)s
    """
    workflow = Workflow(name=name)
    inputnode = pe.Node(IdentityInterface(fields=["bold_file", "brain_mask"]), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=["bold_cache"]), name="outputnode")
    cache = pe.Node(CacheBOLD(), name="bold_cache", mem_gb=mem_gb)
    workflow.connect([
        (inputnode, cache, [("bold_file", "bold_file"), ("brain_mask", "brain_mask")]),
        (cache, outputnode, [("bold_cache", "bold_cache")]),
    ])
    return workflow


@fill_doc
def init_task_data_wf(task: Task, glm: GLM, denoising: Denoising, *, tr: float, start_time: float,
                      n_volumes: int, percent_data: bool, mem_gb: float, name: str = "task_data_wf") -> Workflow:
    """Confound regressors, percent-scaled data and task design of one task run.

    Parameters
    ----------
    %(task)s
    %(glm)s
    %(denoising)s
    %(tr)s
    %(start_time)s
    n_volumes : :obj:`int`
        Volumes of the run.
    percent_data : :obj:`bool`
        Make the percent-scaled data and the task design (the activation GLM or gPPI run);
        without it only the confound regressors are made (the DCM alone).
    %(mem_gb)s
    %(name)s

    Inputs
    ------
    %(bold_cache)s
    %(brain_mask)s
    confounds_tsv, confounds_json
        fMRIPrep's confounds table and its sidecar.
    %(events_file)s

    Outputs
    -------
    %(confounds_file)s
    %(task_data)s
    """
    workflow = Workflow(name=name)
    inputnode = pe.Node(IdentityInterface(fields=["bold_cache", "brain_mask", "confounds_tsv", "confounds_json",
                                                  "events_file"]), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=["confounds_file", "percent_bold", "task_design"]),
                         name="outputnode")
    confounds = pe.Node(SelectConfounds(denoising=denoising, n_volumes=n_volumes), name="glm_confounds", mem_gb=0.2)
    workflow.connect([
        (inputnode, confounds, [("confounds_tsv", "confounds_tsv"), ("confounds_json", "confounds_json")]),
        (confounds, outputnode, [("regressors_tsv", "confounds_file")]),
    ])
    if percent_data:
        data = pe.Node(TaskModelData(tr=tr, start_time=start_time, task=task, glm=glm), name="task_data",
                       mem_gb=mem_gb)
        workflow.connect([
            (inputnode, data, [("bold_cache", "bold_cache"), ("brain_mask", "brain_mask"),
                               ("events_file", "events_file")]),
            (confounds, data, [("regressors_tsv", "confounds_file")]),
            (data, outputnode, [("percent_bold", "percent_bold"), ("task_design", "task_design")]),
        ])
    return workflow
