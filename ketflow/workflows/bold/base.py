"""One BOLD run: the stage workflows composed, and their outputs stored.

Every run gets the in-mask BOLD cache (decompressed once; every node that reads voxels
reads it), the circuit ROIs on its grid, denoising and denoised ROI signals.  Rest runs (and
any task listed under ``connectivity.tasks``) add ROI-to-ROI and seed-to-voxel connectivity;
task runs add, from one per-run task-model data node, the activation GLM, gPPI (tasks under
``ppi.tasks``) and the DCM (the ``dcm.task``).  The derivatives workflow stores the outputs.
"""

from __future__ import annotations

import os
from pathlib import Path

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from ...config import AnalysisConfig, Task
from ...docs import fill_doc
from ...io.atlases import resolve_atlases
from ...io.bids import RunInputs
from ...io.boldcache import cache_name
from .activation import ACTIVATION_OUTPUTS, init_activation_wf
from .atlases import init_atlas_wf
from .betaseries import BETA_SERIES_OUTPUTS, init_beta_series_wf
from .connectivity import CONNECTIVITY_OUTPUTS, init_connectivity_wf
from .data import init_bold_cache_wf, init_task_data_wf
from .dcm import DCM_OUTPUTS, init_dcm_wf
from .denoise import init_denoise_wf
from .gppi import GPPI_OUTPUTS, init_gppi_wf
from .outputs import Provenance, init_bold_derivatives_wf
from .resources import run_memory
from .rois import init_rois_wf

#: Inputs of a run workflow, set from its :class:`~ketflow.io.bids.RunInputs`.
RUN_FILES = {"bold_file": "bold", "brain_mask": "mask", "bold_ref": "boldref", "confounds_tsv": "confounds",
             "confounds_json": "confounds_json", "events_file": "events", "gm_probseg": "gm_probseg"}


def run_wf_name(run: RunInputs) -> str:
    """A Nipype-safe workflow name for a run, e.g. ``ses_pre_task_faces_wf``."""
    parts = [f"{k}_{v}" for k, v in run.entities.items() if k != "sub" and v is not None]
    return "_".join(parts + ["wf"]).replace("-", "")


def bold_cache_file(work_dir: str | os.PathLike, run: RunInputs, top: str = "ketflow_wf") -> Path:
    """Where the BOLD cache of ``run`` lies in the Nipype work directory once its workflow ran."""
    return (Path(work_dir) / top / f"single_subject_{run.subject}_wf" / run_wf_name(run) / "bold_cache_wf"
            / "bold_cache" / cache_name(run.bold))


def stages(run: RunInputs, config: AnalysisConfig) -> dict[str, bool]:
    """The optional stages a run has: connectivity, activation, ppi, dcm, beta_series."""
    task = config.tasks[run.task].type == "task"
    return {"connectivity": not task or run.task in config.connectivity.tasks,
            "activation": task and config.measures.activation,
            "ppi": task and config.measures.ppi and run.task in config.ppi.tasks,
            "dcm": task and config.measures.dcm and run.task == config.dcm.task,
            "beta_series": task and config.measures.beta_series and run.task in config.beta_series.tasks}


@fill_doc
def init_bold_wf(run: RunInputs, config: AnalysisConfig, provenance: Provenance, *,
                 described_tasks: dict[str, Task]) -> Workflow:
    """The workflow of one BOLD run (module docstring).

    Parameters
    ----------
    %(run)s
    config : :class:`ketflow.config.AnalysisConfig`
        The configuration; each stage receives the sections it needs.
    provenance : :class:`~ketflow.workflows.bold.outputs.Provenance`
        Where and how the outputs are stored.
    %(described_tasks)s

    Outputs
    -------
    contrast_names, effect_maps, variance_maps, dof, roi_tsv
        The activation GLM's (task runs with activation), for the session-level fixed effects.
    """
    has = stages(run, config)
    memory = run_memory(run)
    kind = config.tasks[run.task].type
    workflow = Workflow(name=run_wf_name(run))
    inputnode = pe.Node(IdentityInterface(fields=list(RUN_FILES)), name="inputnode")
    for field_, attribute in RUN_FILES.items():
        value = getattr(run, attribute)
        if field_ == "bold_ref":
            value = value or run.mask  # any image on the run's grid will do
        if value:
            setattr(inputnode.inputs, field_, value)
    outputnode = pe.Node(IdentityInterface(fields=ACTIVATION_OUTPUTS), name="outputnode")
    workflow.add_nodes([outputnode])  # connected when the run has an activation stage

    cache_wf = init_bold_cache_wf(mem_gb=memory["bold_cache"])
    rois_wf = init_rois_wf(config.circuit)
    denoise_wf = init_denoise_wf(config.denoising, config.circuit.signal, rest=kind == "rest", tr=run.tr,
                                 mem_gb=memory, describe_band_pass=any(t.type == "rest"
                                                                       for t in described_tasks.values()))
    derivatives_wf = init_bold_derivatives_wf(run, config, provenance, **has)
    workflow.connect([
        (inputnode, cache_wf, [("bold_file", "inputnode.bold_file"), ("brain_mask", "inputnode.brain_mask")]),
        (inputnode, rois_wf, [("bold_ref", "inputnode.bold_ref"), ("brain_mask", "inputnode.brain_mask"),
                              ("confounds_tsv", "inputnode.confounds_tsv"), ("gm_probseg", "inputnode.gm_probseg")]),
        (cache_wf, rois_wf, [("outputnode.bold_cache", "inputnode.bold_cache")]),
        (inputnode, denoise_wf, [("brain_mask", "inputnode.brain_mask"), ("confounds_tsv", "inputnode.confounds_tsv"),
                                 ("confounds_json", "inputnode.confounds_json")]),
        (cache_wf, denoise_wf, [("outputnode.bold_cache", "inputnode.bold_cache")]),
        (rois_wf, denoise_wf, [("outputnode.labels_file", "inputnode.labels_file"),
                               ("outputnode.labels_tsv", "inputnode.labels_tsv")]),
        (rois_wf, derivatives_wf, [("outputnode.labels_file", "inputnode.labels_file"),
                                   ("outputnode.labels_tsv", "inputnode.labels_tsv"),
                                   ("outputnode.quality_tsv", "inputnode.roi_quality_tsv"),
                                   ("outputnode.quality_json", "inputnode.roi_quality_json")]),
        (denoise_wf, derivatives_wf, [("outputnode.timeseries", "inputnode.timeseries"),
                                      ("outputnode.coverage", "inputnode.coverage"),
                                      ("outputnode.outliers_tsv", "inputnode.outliers_tsv"),
                                      ("outputnode.motion_tsv", "inputnode.motion_tsv"),
                                      ("outputnode.qc_json", "inputnode.denoise_qc")]),
    ])
    if has["connectivity"]:
        # the paragraph describes connectivity only when it is a configured measure
        connectivity_wf = init_connectivity_wf(
            config.connectivity, task_residual=kind == "task", tr=run.tr, mem_gb=memory["connectivity"],
            described_tasks=described_tasks if config.measures.connectivity else {})
        workflow.connect([
            (inputnode, connectivity_wf, [("brain_mask", "inputnode.brain_mask"),
                                          ("events_file", "inputnode.events_file")]),
            (denoise_wf, connectivity_wf, [("outputnode.timeseries", "inputnode.timeseries"),
                                           ("outputnode.coverage", "inputnode.coverage"),
                                           ("outputnode.qc_json", "inputnode.denoise_qc"),
                                           ("outputnode.denoised_file", "inputnode.denoised_file"),
                                           ("outputnode.censoring_tsv", "inputnode.censoring_tsv")]),
            (connectivity_wf, derivatives_wf, [(f"outputnode.{f}", f"inputnode.connectivity_{f}" if f == "qc_json"
                                                else f"inputnode.{f}") for f in CONNECTIVITY_OUTPUTS]),
        ])
    for atlas in resolve_atlases(config.atlases):  # atlases measured beside the circuit (issue 15.3)
        atlas_wf = init_atlas_wf(
            atlas, config.circuit, config.connectivity if has["connectivity"] else None, provenance,
            task_residual=kind == "task", tr=run.tr, mem_gb=memory["connectivity"],
            run_metadata={"RepetitionTime": run.tr, "StartTime": run.start_time, "ROISummary": config.circuit.signal})
        workflow.connect([
            (inputnode, atlas_wf, [(f, f"inputnode.{f}") for f in ("bold_ref", "brain_mask", "confounds_tsv",
                                                                   "events_file")]),
            (cache_wf, atlas_wf, [("outputnode.bold_cache", "inputnode.bold_cache")]),
            (denoise_wf, atlas_wf, [("outputnode.denoised_file", "inputnode.denoised_file"),
                                    ("outputnode.qc_json", "inputnode.denoise_qc"),
                                    ("outputnode.censoring_tsv", "inputnode.censoring_tsv")]),
        ])
    if has["activation"] or has["ppi"] or has["dcm"] or has["beta_series"]:
        _add_task_models(workflow, run, config, has, memory, described_tasks, cache_wf, rois_wf, derivatives_wf,
                         outputnode)
    return workflow


def _add_task_models(workflow, run, config, has, memory, described_tasks, cache_wf, rois_wf, derivatives_wf,
                     outputnode) -> None:
    """The task-model data of the run and its activation, gPPI, beta-series and DCM stages."""
    inputnode = workflow.get_node("inputnode")
    task = config.tasks[run.task]
    data_wf = init_task_data_wf(task, config.glm, config.denoising.for_task_models(), tr=run.tr,
                                start_time=run.start_time, n_volumes=run.n_volumes,
                                percent_data=has["activation"] or has["ppi"] or has["beta_series"],
                                mem_gb=memory["task_data"])
    workflow.connect([
        (inputnode, data_wf, [("brain_mask", "inputnode.brain_mask"), ("confounds_tsv", "inputnode.confounds_tsv"),
                              ("confounds_json", "inputnode.confounds_json"),
                              ("events_file", "inputnode.events_file")]),
        (cache_wf, data_wf, [("outputnode.bold_cache", "inputnode.bold_cache")]),
    ])

    # fresh lists for every connection: Nipype edits a connection list when it flattens the graph
    def model_inputs():
        return [("outputnode.percent_bold", "inputnode.percent_bold"), ("outputnode.task_design", "inputnode.task_design")]

    def label_inputs():
        return [("outputnode.labels_file", "inputnode.labels_file"), ("outputnode.labels_tsv", "inputnode.labels_tsv")]
    if has["activation"]:
        activation_wf = init_activation_wf(task, config.glm, mem_gb=memory["activation"],
                                           described_tasks=described_tasks)
        workflow.connect([
            (inputnode, activation_wf, [("brain_mask", "inputnode.brain_mask")]),
            (data_wf, activation_wf, model_inputs()),
            (rois_wf, activation_wf, label_inputs()),
            (activation_wf, derivatives_wf, [(f"outputnode.{f}", f"inputnode.{f}") for f in ACTIVATION_OUTPUTS]),
            (activation_wf, outputnode, [(f"outputnode.{f}", f) for f in ACTIVATION_OUTPUTS]),
        ])
    if has["ppi"]:
        gppi_wf = init_gppi_wf(task, config.glm, config.ppi, config.circuit.signal, mem_gb=memory["gppi"],
                               described_tasks=described_tasks)
        workflow.connect([
            (inputnode, gppi_wf, [("brain_mask", "inputnode.brain_mask")]),
            (data_wf, gppi_wf, model_inputs()),
            (rois_wf, gppi_wf, label_inputs()),
            (gppi_wf, derivatives_wf, [(f"outputnode.{f}", f"inputnode.ppi_{f}") for f in GPPI_OUTPUTS]),
        ])
    if has["beta_series"]:
        beta_series_wf = init_beta_series_wf(task, config.beta_series, config.circuit.signal,
                                             mem_gb=0.5,  # reads only the ROIs' voxels (memory-mapped)
                                             described_tasks=described_tasks)
        workflow.connect([
            (inputnode, beta_series_wf, [("brain_mask", "inputnode.brain_mask"),
                                         ("events_file", "inputnode.events_file")]),
            (data_wf, beta_series_wf, model_inputs()),
            (rois_wf, beta_series_wf, label_inputs()),
            (beta_series_wf, derivatives_wf, [(f"outputnode.{f}", f"inputnode.betaseries_{f}")
                                              for f in BETA_SERIES_OUTPUTS]),
        ])
    if has["dcm"]:
        dcm_wf = init_dcm_wf(config.dcm, high_pass_s=config.glm.high_pass_s, tr=run.tr, start_time=run.start_time)
        workflow.connect([
            (inputnode, dcm_wf, [("brain_mask", "inputnode.brain_mask"), ("events_file", "inputnode.events_file")]),
            (cache_wf, dcm_wf, [("outputnode.bold_cache", "inputnode.bold_cache")]),
            (data_wf, dcm_wf, [("outputnode.confounds_file", "inputnode.confounds_file")]),
            # a DCM needs all its regions: it reads them as placed, the QC table flags a failing one
            (rois_wf, dcm_wf, [("outputnode.placed_labels_file", "inputnode.labels_file"),
                               ("outputnode.placed_labels_tsv", "inputnode.labels_tsv")]),
            (dcm_wf, derivatives_wf, [(f"outputnode.{f}", f"inputnode.{f}") for f in DCM_OUTPUTS
                                      if f != "dcm_model_space" or config.dcm.model_space]),
        ])
