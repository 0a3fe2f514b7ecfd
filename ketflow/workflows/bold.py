"""Per-run workflows: BOLD cache, ROIs → denoising → ROI signals, then the run's measures.

Every run gets the in-mask BOLD cache (decompressed once; every node that reads voxel data
reads it), the circuit ROIs on its grid, denoising and denoised ROI time series.  Rest
runs (and any task listed under ``connectivity.tasks``) add ROI-to-ROI and seed-to-voxel
connectivity; task runs add the activation GLM, gPPI (tasks under ``ppi.tasks``) and the
DCM (the ``dcm.task``).  Outputs are stored by :class:`~ketflow.interfaces.bids.DerivativesSink`
with BIDS-Derivatives / XCP-D names.
"""

from __future__ import annotations

import json

import nibabel as nb
import numpy as np
from nipype.pipeline import engine as pe

from ..config import AnalysisConfig
from ..interfaces.bids import DerivativesSink
from ..interfaces.bold import CacheBOLD
from ..interfaces.confounds import SelectConfounds
from ..interfaces.connectivity import Connectivity
from ..interfaces.dcm import ExtractVOI, FitDCM
from ..interfaces.denoise import Denoise
from ..interfaces.glm import FirstLevelGLM
from ..interfaces.ppi import GPPI
from ..interfaces.rois import BuildROIs, ExtractROISignals
from ..io.bids import RunInputs

def run_wf_name(run: RunInputs) -> str:
    """A Nipype-safe workflow name for a run, e.g. ``ses_pre_task_faces_wf``."""
    parts = [f"{k}_{v}" for k, v in run.entities.items() if k != "sub" and v is not None]
    return "_".join(parts + ["wf"]).replace("-", "")


#: Peak memory of the nodes that read voxel data, in copies of the run's (time, in-mask voxels)
#: float32 matrix on top of the Python process, measured on a full-size run (docs/performance.md):
#: the cache node holds one volume; denoising its output and blocks; the GLM and gPPI the
#: percent-scaled data and the fits; connectivity the denoised data and the seed maps.
MEMORY_COPIES = {"bold_cache": 0.1, "denoise": 1.8, "signals": 0.3, "connectivity": 2.2, "activation": 2.2,
                 "gppi": 2.6}


def bold_memory_gb(run: RunInputs, copies: float) -> float:
    """Memory estimate (GB) of a node holding ``copies`` float32 (time, in-mask voxels) matrices
    of the run, plus 0.25 GB for the Python process and its libraries."""
    n_volumes = nb.load(run.bold).shape[3]
    n_voxels = int(np.count_nonzero(np.asanyarray(nb.load(run.mask).dataobj)))
    return round(copies * 4 * float(n_volumes) * n_voxels / 1e9 + 0.25, 2)


def task_config_json(config: AnalysisConfig, task: str) -> str:
    """The task settings the GLM and gPPI interfaces read, as JSON text."""
    spec = config.tasks[task]
    return json.dumps({
        "conditions": spec.conditions,
        "derived_conditions": [d.model_dump() for d in spec.derived_conditions],
        "contrasts": spec.contrasts,
        "hrf": config.glm.hrf,
        "high_pass_s": config.glm.high_pass_s,
        "noise_model": config.glm.noise_model,
        "autocorrelation_fwhm_mm": config.glm.autocorrelation_fwhm_mm,
    }, sort_keys=True)


def dcm_model_json(config: AnalysisConfig) -> str:
    """The DCM of the configuration in the FitDCM interface's layout.

    Masks are [to][from]; b is [input][to][from], c [to][input], d [region][to][from] (all
    regions when any is given); ``model_space`` maps each nested model's name to its masks
    in the same layout (masks a model does not give are the full model's).
    """
    dcm = config.dcm
    n = len(dcm.regions)
    inputs = list(dcm.inputs)
    zeros = [[0] * n for _ in range(n)]

    def layout(a, b, c, d):
        out = {"a": a, "b": [b[name] for name in inputs],
               "c": [[c[name][region] for name in inputs] for region in range(n)]}
        if d:
            out["d"] = [d.get(name, zeros) for name in dcm.regions]
        return out

    full = dcm.full_masks()
    model = {"regions": dcm.regions, "inputs": dcm.inputs, **layout(**full),
             "delays": dcm.delays if dcm.delays is not None else [0.0] * n,
             "options": dcm.options.model_dump()}
    if dcm.model_space:
        model["model_space"] = {
            m.name: layout(m.a or full["a"], {**full["b"], **(m.b or {})}, {**full["c"], **(m.c or {})},
                           {**full["d"], **(m.d or {})} if (full["d"] or m.d) else {})
            for m in dcm.model_space}
        if not full["d"]:  # a nested model cannot add nonlinear terms
            for masks in model["model_space"].values():
                masks.pop("d", None)
    return json.dumps(model, sort_keys=True)


class _Sinks:
    """Creates DerivativesSink nodes for one run with shared provenance settings."""

    def __init__(self, workflow: pe.Workflow, run: RunInputs, ctx: dict):
        self.workflow, self.run, self.ctx = workflow, run, ctx
        self.base = {**run.entities, "space": ctx["space"]}
        self.sources = [p for p in (run.bold, run.mask, run.confounds, run.events) if p]

    def add(self, name: str, source: pe.Node, field: str, suffix: str, extension: str, *,
            entities: dict | None = None, metadata: dict | None = None, meta_from: tuple | None = None,
            varying: tuple | None = None, from_filename: bool = False, datatype: str = "func",
            sidecar: bool = True) -> pe.Node:
        """Sink ``source.field``.

        ``varying=(entity, node, field)`` names a list of files by a list output of ``node``;
        ``from_filename`` takes entities from the files' own names.
        """
        sink = pe.Node(
            DerivativesSink(out_dir=self.ctx["out_dir"], entities={**self.base, **(entities or {})}, suffix=suffix,
                            extension=extension, datatype=datatype, source_files=self.sources,
                            source_links=self.ctx["source_links"], metadata=metadata or {},
                            config_hash=self.ctx["config_hash"], sidecar=sidecar,
                            entities_from_filename=from_filename),
            name=f"ds_{name}", run_without_submitting=True, mem_gb=0.1,
        )
        self.workflow.connect(source, field, sink, "in_file")
        if meta_from:
            self.workflow.connect(meta_from[0], meta_from[1], sink, "metadata_file")
        if varying:
            entity, node, list_field = varying
            sink.inputs.varying_entity = entity
            self.workflow.connect(node, list_field, sink, "varying_values")
        return sink


def init_run_wf(run: RunInputs, ctx: dict) -> pe.Workflow:
    """Workflow of one BOLD run (see module docstring)."""
    config: AnalysisConfig = ctx["config"]
    kind = config.tasks[run.task].type
    workflow = pe.Workflow(name=run_wf_name(run))
    sinks = _Sinks(workflow, run, ctx)
    circuit = config.circuit.name

    cache = pe.Node(CacheBOLD(bold_file=run.bold, brain_mask=run.mask), name="bold_cache",
                    mem_gb=bold_memory_gb(run, MEMORY_COPIES["bold_cache"]))
    rois = pe.Node(BuildROIs(bold_ref=run.boldref or run.mask, brain_mask=run.mask,
                             roi_definition=ctx["specs"]["rois"]), name="rois", mem_gb=0.5)
    denoise = pe.Node(Denoise(brain_mask=run.mask, confounds_tsv=run.confounds,
                              strategy_json=ctx["specs"]["denoise_rest" if kind == "rest" else "denoise_task"],
                              tr=run.tr), name="denoise", mem_gb=bold_memory_gb(run, MEMORY_COPIES["denoise"]))
    if run.confounds_json:
        denoise.inputs.confounds_json = run.confounds_json
    signals = pe.Node(ExtractROISignals(brain_mask=run.mask, method=config.circuit.signal), name="signals",
                      mem_gb=bold_memory_gb(run, MEMORY_COPIES["signals"]))
    workflow.connect([
        (cache, denoise, [("bold_cache", "bold_cache")]),
        (denoise, signals, [("denoised_file", "denoised_file")]),
        (rois, signals, [("labels_file", "labels_file"), ("labels_tsv", "labels_tsv")]),
    ])
    stat = "mean" if config.circuit.signal == "mean" else "eigenvariate"
    series_meta = {
        "RepetitionTime": run.tr,
        "StartTime": run.start_time,
        "Units": "BOLD signal of the preprocessed series after confound regression (arbitrary units)",
        "ROISummary": config.circuit.signal,
        "Rows": "volumes retained after dummy-scan removal and censoring (see desc-censoring_timeseries.tsv)",
    }
    sinks.add("timeseries", signals, "timeseries", "timeseries", ".tsv",
              entities={"atlas": circuit, "stat": stat}, metadata=series_meta, meta_from=(denoise, "qc_json"))
    sinks.add("coverage", signals, "coverage", "bold", ".tsv", entities={"atlas": circuit, "stat": "coverage"})
    sinks.add("dseg", rois, "labels_file", "dseg", ".nii.gz", entities={"atlas": circuit},
              metadata={"Description": "circuit ROIs on this run's BOLD grid, within its brain mask"})
    sinks.add("dseg_tsv", rois, "labels_tsv", "dseg", ".tsv", entities={"atlas": circuit}, sidecar=False)
    sinks.add("censoring", denoise, "censoring_tsv", "timeseries", ".tsv", entities={"desc": "censoring"},
              metadata={"Description": "per-volume framewise displacement (mm), dummy scans and censoring "
                                       "(1 = yes) used by denoising"})
    sinks.add("denoise_qc", denoise, "qc_json", "qc", ".json", entities={"desc": "denoise"}, sidecar=False)

    if kind == "rest" or run.task in config.connectivity.tasks:
        _add_connectivity(workflow, sinks, run, ctx, denoise, signals)
    if kind == "task":
        _add_task_models(workflow, sinks, run, ctx, rois, cache)
    return workflow


def fc_measures(config: AnalysisConfig) -> list[str]:
    """The configured connectivity measures plus ``fisher_z``, which the group level reads."""
    return list(dict.fromkeys([*config.connectivity.measures, "fisher_z"]))


def _add_connectivity(workflow, sinks, run, ctx, denoise, signals) -> None:
    config: AnalysisConfig = ctx["config"]
    seeds = config.connectivity.seeds if config.connectivity.seed_to_voxel else []
    conn = pe.Node(Connectivity(brain_mask=run.mask, seeds=seeds, connectivity_measures=fc_measures(config)),
                   name="connectivity",
                   mem_gb=bold_memory_gb(run, MEMORY_COPIES["connectivity"]))
    if config.tasks[run.task].type == "task":  # task-residual connectivity (Cole et al. 2019)
        conn.inputs.events_file = run.events
        conn.inputs.tr = run.tr
        workflow.connect(denoise, "censoring_tsv", conn, "censoring_tsv")
    workflow.connect([
        (signals, conn, [("timeseries", "timeseries"), ("coverage", "coverage")]),
        (denoise, conn, [("qc_json", "denoise_qc"), ("denoised_file", "denoised_file")]),
    ])
    circuit = config.circuit.name
    sinks.add("relmats", conn, "relmat_files", "relmat", ".tsv", entities={"atlas": circuit},
              varying=("stat", conn, "measures"), meta_from=(conn, "qc_json"))
    if seeds:
        sinks.add("seed_maps", conn, "seed_maps", "boldmap", ".nii.gz", entities={"stat": "fisherz"},
                  varying=("desc", conn, "seed_names"),
                  metadata={"Description": "seed-to-voxel connectivity, Fisher z of the Pearson correlation"})


def _add_task_models(workflow, sinks, run, ctx, rois, cache) -> None:
    config: AnalysisConfig = ctx["config"]
    den = config.denoising
    task_json = task_config_json(config, run.task)
    confounds = pe.Node(SelectConfounds(confounds_tsv=run.confounds, strategy=den.strategy,
                                        fd_threshold=den.fd_threshold, min_contiguous=den.min_contiguous,
                                        n_volumes=run.n_volumes), name="glm_confounds", mem_gb=0.2)
    if run.confounds_json:
        confounds.inputs.confounds_json = run.confounds_json
    design_meta = {"TaskConfig": json.loads(task_json), "RepetitionTime": run.tr, "StartTime": run.start_time,
                   "ConfoundStrategy": {"Strategy": den.strategy, "FDThresholdMM": den.fd_threshold,
                                        "MinContiguousVolumes": den.min_contiguous}}
    if config.measures.activation:
        glm = pe.Node(FirstLevelGLM(brain_mask=run.mask, events_file=run.events, tr=run.tr,
                                    start_time=run.start_time, task_config=task_json),
                      name="activation", mem_gb=bold_memory_gb(run, MEMORY_COPIES["activation"]))
        workflow.connect([
            (cache, glm, [("bold_cache", "bold_cache")]),
            (confounds, glm, [("regressors_tsv", "confounds_file")]),
            (rois, glm, [("labels_file", "labels_file"), ("labels_tsv", "labels_tsv")]),
        ])
        for stat in ("effect", "variance", "z"):
            sinks.add(f"{stat}_maps", glm, f"{stat}_maps", "statmap", ".nii.gz", from_filename=True,
                      metadata=design_meta, meta_from=(glm, "design_json"))
        sinks.add("design", glm, "design_tsv", "design", ".tsv", entities={"desc": "activation"},
                  metadata=design_meta, meta_from=(glm, "design_json"))
        sinks.add("design_svg", glm, "design_svg", "design", ".svg", entities={"desc": "activation"},
                  datatype="figures", sidecar=False)
        sinks.add("roi_contrasts", glm, "roi_tsv", "contrasts", ".tsv",
                  entities={"atlas": config.circuit.name, "stat": "effect"},
                  metadata=dict(design_meta, ROISignal="GLM of each ROI's mean over its voxels of the "
                                                     "percent-scaled data"),
                  meta_from=(glm, "design_json"))
    if config.measures.ppi and run.task in config.ppi.tasks:
        # gPPI reads every volume of the undenoised series: confounds enter its designs.
        ppi = pe.Node(GPPI(brain_mask=run.mask, signal=config.circuit.signal,
                           events_file=run.events, tr=run.tr, start_time=run.start_time, task_config=task_json,
                           seeds=config.ppi.seeds, voxel_seeds=config.ppi.seeds,
                           deconvolve=config.ppi.deconvolve, symmetrize=config.ppi.symmetrize),
                      name="gppi", mem_gb=bold_memory_gb(run, MEMORY_COPIES["gppi"]))
        workflow.connect([
            (cache, ppi, [("bold_cache", "bold_cache")]),
            (rois, ppi, [("labels_file", "labels_file"), ("labels_tsv", "labels_tsv")]),
            (confounds, ppi, [("regressors_tsv", "confounds_file")]),
        ])
        ppi_meta = dict(design_meta, Deconvolution=config.ppi.deconvolve, Symmetrized=config.ppi.symmetrize,
                        Seeds=config.ppi.seeds)
        ppi_from = (ppi, "meta_json")
        sinks.add("ppi_relmats", ppi, "relmat_files", "relmat", ".tsv",
                  entities={"atlas": config.circuit.name}, from_filename=True, metadata=ppi_meta, meta_from=ppi_from)
        sinks.add("ppi_stats", ppi, "stats_tsv", "ppi", ".tsv", entities={"atlas": config.circuit.name},
                  metadata=ppi_meta, meta_from=ppi_from)
        sinks.add("ppi_design", ppi, "design_tsv", "design", ".tsv", entities={"desc": "gppi"},
                  metadata=ppi_meta, meta_from=ppi_from)
        sinks.add("ppi_figure", ppi, "figure", "ppi", ".svg", entities={"desc": "gppi"}, datatype="figures",
                  sidecar=False)
        sinks.add("ppi_maps", ppi, "seed_maps", "statmap", ".nii.gz", entities={"model": "gppi"},
                  from_filename=True, metadata=ppi_meta, meta_from=ppi_from)
    if config.measures.dcm and run.task == config.dcm.task:
        # SPM-style VOIs from the undenoised series (grand-mean scaled, adjusted for X0, first
        # eigenvariate); X0 (constant, cosines, nuisance, censoring spikes) enters the DCM too.
        voi = pe.Node(ExtractVOI(brain_mask=run.mask, regions=config.dcm.regions,
                                 repetition_time=run.tr, high_pass_s=config.glm.high_pass_s),
                      name="dcm_voi", mem_gb=0.5)
        workflow.connect([
            (cache, voi, [("bold_cache", "bold_cache")]),
            (rois, voi, [("labels_file", "labels_file"), ("labels_tsv", "labels_tsv")]),
            (confounds, voi, [("regressors_tsv", "confounds")]),
        ])
        model_json = dcm_model_json(config)
        dcm = pe.Node(FitDCM(events=run.events, repetition_time=run.tr, start_time=run.start_time,
                             model=model_json), name="dcm", mem_gb=0.5)
        workflow.connect([
            (voi, dcm, [("timeseries", "timeseries"), ("confounds_out", "confounds")]),
        ])
        dcm_meta = {"Model": json.loads(model_json), "RepetitionTime": run.tr}
        sinks.add("dcm_voi", voi, "timeseries", "timeseries", ".tsv",
                  entities={"atlas": config.circuit.name, "stat": "eigenvariate", "desc": "voi"},
                  meta_from=(voi, "qc_json"),
                  metadata={"RepetitionTime": run.tr, "StartTime": run.start_time,
                            "Units": "percent of the run's grand mean (grand-mean scaled to 100)",
                            "Description": "DCM regions' first eigenvariates of the preprocessed BOLD after "
                                           "grand-mean scaling and adjustment for confounds (constant, cosine "
                                           "high-pass, nuisance regressors, censored volumes); one row per "
                                           "acquired volume"})
        sinks.add("dcm_json", dcm, "out_json", "dcm", ".json", entities={"atlas": config.circuit.name},
                  sidecar=False)
        sinks.add("dcm_params", dcm, "out_params", "dcm", ".tsv",
                  entities={"atlas": config.circuit.name, "desc": "parameters"}, metadata=dcm_meta)
        sinks.add("dcm_figure", dcm, "out_figure", "dcm", ".svg", entities={"desc": "dcm"}, datatype="figures",
                  sidecar=False)
        if config.dcm.model_space:
            sinks.add("dcm_model_space", dcm, "out_model_space", "dcm", ".tsv",
                      entities={"atlas": config.circuit.name, "desc": "modelspace"},
                      metadata=dict(dcm_meta, Description="nested DCMs scored by Bayesian model reduction of "
                                                          "the fitted full model (Friston et al. 2016)",
                                    Columns={"model": "model name ('full' = the fitted model)",
                                             "F": "free energy, approximate log evidence (nats)",
                                             "dF": "F minus the full model's F (nats)",
                                             "posterior_probability": "posterior model probability in this "
                                                                      "run (uniform model prior)"}))
