"""The run's outputs, written by one derivatives workflow (as XCP-D's ``init_postproc_derivatives_wf``).

:func:`init_bold_derivatives_wf` receives every output of a run's stages on its ``inputnode``
and stores each with a :class:`~ketflow.interfaces.bids.DerivativesDataSink`: BIDS-Derivatives
/ XCP-D names (the run's entities from its BOLD series, then the output's own), sidecars
with the metadata below and provenance.  :func:`add_sink` is the one way a sink is made, also
for the session-level fixed effects (:mod:`ketflow.workflows.session`).
"""

from __future__ import annotations

from dataclasses import dataclass

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from ...config import GLM, AnalysisConfig, Task
from ...docs import fill_doc
from ...interfaces.bids import DerivativesDataSink
from ...io.bids import RunInputs
from .activation import ACTIVATION_OUTPUTS
from ...io.names import ROI_SERIES_SUFFIX
from ...io.motion import motion_sidecar, outliers_sidecar
from ...io.relmat import connectivity_sidecars, node_files, relmat_sidecar
from ...signal.connectivity import MEASURE_STATS
from .betaseries import BETA_SERIES_OUTPUTS, beta_series_sinks
from .connectivity import CONNECTIVITY_OUTPUTS, fc_measures
from .dcm import DCM_OUTPUTS
from .gppi import GPPI_OUTPUTS

#: Inputs of the derivatives workflow from the ROI and denoising stages.
BASE_OUTPUTS = ["labels_file", "labels_tsv", "timeseries", "coverage", "outliers_tsv", "motion_tsv", "denoise_qc",
                "roi_quality_tsv", "roi_quality_json"]


@dataclass
class Provenance:
    """What every sink of a run (or session) records: its source BOLD series, the input files
    as BIDS URIs, the dataset links and the configuration hash."""

    source_file: list[str]
    sources: list[str]
    source_links: dict[str, str]
    config_hash: str
    out_dir: str

    @classmethod
    def of_runs(cls, runs: list[RunInputs], *, out_dir: str, source_links: dict, config_hash: str) -> Provenance:
        """Provenance of outputs computed from ``runs`` (the entities they share name them)."""
        files = sorted({p for run in runs for p in (run.bold, run.mask, run.confounds, run.events, run.gm_probseg) if p})
        return cls(source_file=[run.bold for run in runs], sources=files,
                   source_links={k: str(v) for k, v in source_links.items()}, config_hash=config_hash,
                   out_dir=str(out_dir))


def add_sink(workflow: pe.Workflow, provenance: Provenance, name: str, source: pe.Node, field_: str, suffix: str,
             extension: str, *, meta: dict | None = None, meta_from: str | None = None,
             entities_from: dict[str, str] | None = None, from_filename: bool = False, datatype: str = "func",
             sidecar: bool = True, meta_by_entity: dict | None = None, **entities) -> pe.Node:
    """A sink ``ds_<name>`` storing ``source.field_``.

    ``meta``: sidecar fields; ``meta_from``: a field of ``source`` holding a JSON file of more
    fields (the computing node's description); ``entities_from``: entity -> field of ``source``
    giving one value per file; ``from_filename``: further entities from the files' own names;
    ``meta_by_entity``: entity -> {value -> fields} for the files with that value; ``entities``:
    fixed entity values.
    """
    sink = pe.Node(
        DerivativesDataSink(base_directory=provenance.out_dir, source_file=provenance.source_file, suffix=suffix,
                            extension=extension, datatype=datatype, sources=provenance.sources,
                            source_links=provenance.source_links, meta_dict=meta or {},
                            config_hash=provenance.config_hash, sidecar=sidecar, entities_from_filename=from_filename,
                            **({"meta_by_entity": meta_by_entity} if meta_by_entity else {}), **entities),
        name=f"ds_{name}", run_without_submitting=True, mem_gb=0.1,
    )
    workflow.connect(source, field_, sink, "in_file")
    if meta_from:
        workflow.connect(source, meta_from, sink, "metadata_file")
    for entity, list_field in (entities_from or {}).items():
        workflow.connect(source, list_field, sink, entity)
    return sink


def task_metadata(task: Task, glm: GLM) -> dict:
    """``TaskConfig`` of the task models' sidecars: the task's conditions and contrasts, the GLM settings."""
    return {"conditions": list(task.conditions), "derived_conditions": [d.model_dump() for d in task.derived_conditions],
            "contrasts": task.contrasts, "hrf": glm.hrf, "high_pass_s": glm.high_pass_s, "noise_model": glm.noise_model,
            "autocorrelation_fwhm_mm": glm.autocorrelation_fwhm_mm}


@fill_doc
def init_bold_derivatives_wf(run: RunInputs, config: AnalysisConfig, provenance: Provenance, *,
                             connectivity: bool, activation: bool, ppi: bool, dcm: bool,
                             beta_series: bool = False, name: str = "derivatives_wf") -> Workflow:
    """Store every output of one run.

    Parameters
    ----------
    %(run)s
    config : :class:`ketflow.config.AnalysisConfig`
        The configuration (the sidecars record the settings of each model).
    provenance : :class:`Provenance`
        Output folder, source files, dataset links and configuration hash.
    connectivity, activation, ppi, dcm, beta_series : :obj:`bool`
        Which stages the run has (their outputs are stored).
    %(name)s

    Inputs
    ------
    labels_file, labels_tsv, timeseries, coverage, outliers_tsv, motion_tsv, denoise_qc, roi_quality_tsv,
    roi_quality_json
        From the ROI and denoising stages (always).
    relmat_files, measures, seed_maps, seed_names, connectivity_qc
        From the connectivity stage.
    contrast_names, effect_maps, variance_maps, t_maps, z_maps, p_maps, design_tsv, design_svg, design_json,
    roi_tsv
        From the activation stage.
    ppi_relmat_files, ppi_stats_tsv, ppi_seed_maps, ppi_design_tsv, ppi_figure, ppi_meta_json
        From the gPPI stage.
    voi_timeseries, voi_qc, dcm_json, dcm_params, dcm_figure, dcm_model_space
        From the DCM stage.
    betaseries_betas_tsv, betaseries_condition_relmats, betaseries_contrast_relmats, betaseries_meta_json
        From the beta-series stage.
    """
    workflow = Workflow(name=name)
    fields = list(BASE_OUTPUTS)
    fields += [f"connectivity_{f}" if f == "qc_json" else f for f in CONNECTIVITY_OUTPUTS] if connectivity else []
    fields += ACTIVATION_OUTPUTS if activation else []
    fields += [f"ppi_{f}" for f in GPPI_OUTPUTS] if ppi else []
    fields += DCM_OUTPUTS if dcm else []
    fields += [f"betaseries_{f}" for f in BETA_SERIES_OUTPUTS] if beta_series else []
    inputnode = pe.Node(IdentityInterface(fields=fields), name="inputnode")
    circuit = config.circuit.name

    def sink(name: str, field_: str, suffix: str, extension: str, **kwargs) -> pe.Node:
        return add_sink(workflow, provenance, name, inputnode, field_, suffix, extension, **kwargs)

    series_meta = {
        "RepetitionTime": run.tr,
        "StartTime": run.start_time,
        "Units": "BOLD signal of the preprocessed series after confound regression (arbitrary units)",
        "ROISummary": config.circuit.signal,
        "Rows": "volumes retained after dummy-scan removal and censoring (the volumes with motion_outlier and "
                "dummy_scan 0 in _outliers.tsv)",
    }
    stat = "mean" if config.circuit.signal == "mean" else "eigenvariate"
    sink("timeseries", "timeseries", ROI_SERIES_SUFFIX, ".tsv", atlas=circuit, stat=stat, meta=series_meta,
         meta_from="denoise_qc")
    sink("coverage", "coverage", "bold", ".tsv", atlas=circuit, stat="coverage")
    sink("dseg", "labels_file", "dseg", ".nii.gz", atlas=circuit,
         meta={"Description": "circuit ROIs on this run's BOLD grid, within its brain mask"})
    sink("dseg_tsv", "labels_tsv", "dseg", ".tsv", atlas=circuit, sidecar=False)
    sink("roi_quality", "roi_quality_tsv", "qc", ".tsv", atlas=circuit, desc="rois", meta_from="roi_quality_json")
    denoising = config.denoising
    sink("outliers", "outliers_tsv", "outliers", ".tsv",
         meta=outliers_sidecar(denoising.fd_threshold, denoising.min_contiguous))
    sink("motion", "motion_tsv", "motion", ".tsv", meta=motion_sidecar())
    sink("denoise_qc", "denoise_qc", "qc", ".json", desc="denoise", sidecar=False)
    if connectivity:
        _connectivity_sinks(sink, run, config)
    if activation or ppi:
        design_meta = {"TaskConfig": task_metadata(config.tasks[run.task], config.glm), "RepetitionTime": run.tr,
                       "StartTime": run.start_time,
                       "ConfoundStrategy": {"Strategy": config.denoising.for_task_models().strategy,
                                            "FDThresholdMM": config.denoising.fd_threshold,
                                            "MinContiguousVolumes": config.denoising.min_contiguous}}
        if activation:
            _activation_sinks(sink, circuit, design_meta)
        if ppi:
            _ppi_sinks(sink, run, config, design_meta)
    if dcm:
        _dcm_sinks(sink, run, config)
    if beta_series:
        beta_series_sinks(sink, run, config)
    return workflow


def _connectivity_sinks(sink, run: RunInputs, config: AnalysisConfig) -> None:
    circuit = config.circuit.name
    stats = [stat for measure in fc_measures(config.connectivity) for stat in MEASURE_STATS[measure]]
    sink("relmats", "relmat_files", "relmat", ".tsv", atlas=circuit, entities_from={"stat": "measures"},
         meta_from="connectivity_qc_json",
         meta_by_entity={"stat": connectivity_sidecars(stats, node_files(run.bold, circuit))})
    if config.connectivity.seed_to_voxel and config.connectivity.seeds:
        sink("seed_maps", "seed_maps", "boldmap", ".nii.gz", stat="fisherz", entities_from={"desc": "seed_names"},
             meta={"Description": "seed-to-voxel connectivity, Fisher z of the Pearson correlation"})


def _activation_sinks(sink, circuit: str, design_meta: dict) -> None:
    for stat in ("effect", "variance", "t", "z", "p"):
        sink(f"{stat}_maps", f"{stat}_maps", "statmap", ".nii.gz", from_filename=True, meta=design_meta,
             meta_from="design_json")
    sink("design", "design_tsv", "design", ".tsv", desc="activation", meta=design_meta, meta_from="design_json")
    sink("design_svg", "design_svg", "design", ".svg", desc="activation", datatype="figures", sidecar=False)
    sink("roi_contrasts", "roi_tsv", "contrasts", ".tsv", atlas=circuit, stat="effect",
         meta=dict(design_meta, ROISignal="GLM of each ROI's mean over its voxels of the percent-scaled data"),
         meta_from="design_json")


def _ppi_sinks(sink, run: RunInputs, config: AnalysisConfig, design_meta: dict) -> None:
    circuit = config.circuit.name
    ppi = config.ppi
    meta = dict(design_meta, Deconvolution=ppi.deconvolve, Symmetrized=ppi.symmetrize, Seeds=ppi.seeds)
    relmat_meta = relmat_sidecar(
        "generalized PPI effect (McLaren et al. 2012): the target ROI's coefficient of the seed x condition "
        "interaction regressor, or a contrast of them" + (", averaged over both directions" if ppi.symmetrize else ""),
        directed=not ppi.symmetrize, seed_axis=None if ppi.symmetrize else "row", valid_diagonal=False,
        node_files=node_files(run.bold, circuit),
        description=None if ppi.symmetrize else "rows (Node column): seed ROIs; columns: target ROIs; n/a where "
                                                 "not estimated (the diagonal, and rows of ROIs that are not seeds)")
    sink("ppi_relmats", "ppi_relmat_files", "relmat", ".tsv", atlas=circuit, from_filename=True,
         meta=dict(meta, **relmat_meta), meta_from="ppi_meta_json")
    sink("ppi_stats", "ppi_stats_tsv", "ppi", ".tsv", atlas=circuit, meta=meta, meta_from="ppi_meta_json")
    sink("ppi_design", "ppi_design_tsv", "design", ".tsv", desc="gppi", meta=meta, meta_from="ppi_meta_json")
    sink("ppi_figure", "ppi_figure", "ppi", ".svg", desc="gppi", datatype="figures", sidecar=False)
    sink("ppi_maps", "ppi_seed_maps", "statmap", ".nii.gz", model="gppi", from_filename=True, meta=meta,
         meta_from="ppi_meta_json")


def _dcm_sinks(sink, run: RunInputs, config: AnalysisConfig) -> None:
    circuit = config.circuit.name
    dcm_meta = {"Model": config.dcm.model_layout(), "RepetitionTime": run.tr}
    sink("dcm_voi", "voi_timeseries", ROI_SERIES_SUFFIX, ".tsv", atlas=circuit, stat="eigenvariate", desc="voi",
         meta_from="voi_qc",
         meta={"RepetitionTime": run.tr, "StartTime": run.start_time,
               "Units": "percent of the run's grand mean (grand-mean scaled to 100)",
               "Description": "DCM regions' first eigenvariates of the preprocessed BOLD after "
                              "grand-mean scaling and adjustment for confounds (constant, cosine "
                              "high-pass, nuisance regressors, censored volumes); one row per "
                              "acquired volume"})
    sink("dcm_json", "dcm_json", "dcm", ".json", atlas=circuit, sidecar=False)
    sink("dcm_params", "dcm_params", "dcm", ".tsv", atlas=circuit, desc="parameters", meta=dcm_meta)
    sink("dcm_figure", "dcm_figure", "dcm", ".svg", desc="dcm", datatype="figures", sidecar=False)
    if config.dcm.model_space:
        sink("dcm_model_space", "dcm_model_space", "dcm", ".tsv", atlas=circuit, desc="modelspace",
             meta=dict(dcm_meta, Description="nested DCMs scored by Bayesian model reduction of "
                                             "the fitted full model (Friston et al. 2016)",
                       Columns={"model": "model name ('full' = the fitted model)",
                                "F": "free energy, approximate log evidence (nats)",
                                "dF": "F minus the full model's F (nats)",
                                "posterior_probability": "posterior model probability in this "
                                                         "run (uniform model prior)"}))
