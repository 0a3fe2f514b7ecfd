"""Stage: an atlas measured beside the circuit (``atlases``, ``--atlases``; issue 15.3).

For every configured atlas a run gets, as xcp_d does for its atlases, the atlas on its grid
(:class:`~ketflow.interfaces.rois.BuildROIs`: nearest-neighbour resampling of a template atlas,
identity for an atlas on the run's grid, brain mask), the ROI quality and coverage rule of the
circuit (:class:`~ketflow.interfaces.roi_quality.ROIQuality`), the denoised ROI time series and,
on connectivity runs, the ROI-to-ROI matrices -- every output named ``atlas-<label>``.  The
activation, gPPI and DCM models stay on the circuit.  The atlas's files were found and checked
against every run before processing (:mod:`ketflow.io.atlases`).
"""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from ...config import Atlas, Circuit, Connectivity
from ...interfaces.rois import ExtractROISignals
from ...io.atlases import ResolvedAtlas
from ...io.names import ROI_SERIES_SUFFIX
from ...io.relmat import connectivity_sidecars, node_files
from ...signal.connectivity import MEASURE_STATS
from ...reports.boilerplate import paragraph
from .connectivity import fc_measures, init_connectivity_wf
from .outputs import Provenance, add_sink
from .rois import init_rois_wf


def atlas_circuit(atlas: ResolvedAtlas, circuit: Circuit) -> Circuit:
    """The ``circuit`` settings (minimum size, coverage rule, ROI signal) applied to ``atlas``."""
    return circuit.model_copy(update={"name": atlas.label, "rois": "atlas", "spheres_file": None, "spheres": [],
                                      "atlas": Atlas(dseg=Path(atlas.dseg), labels=Path(atlas.labels))})


def atlas_desc(atlas: ResolvedAtlas) -> str:
    """Methods paragraph of one extra atlas."""
    where = (f"in {atlas.space}, resampled to each run's BOLD grid (nearest neighbour)" if atlas.space
             else "on the runs' BOLD grid")
    return paragraph("Regions of interest", (
        f"The {len(atlas.names)} regions of the atlas '{atlas.label}' ({Path(atlas.dseg).name}, {where}) were "
        "intersected with each run's brain mask and measured with the circuit's quality checks and coverage rule; "
        "their denoised mean signals and ROI-to-ROI connectivity were computed as for the circuit."))


def init_atlas_wf(atlas: ResolvedAtlas, circuit: Circuit, connectivity: Connectivity | None, provenance: Provenance,
                  *, task_residual: bool, tr: float, mem_gb: float, run_metadata: dict) -> Workflow:
    """Measure ``atlas`` in one run and store its outputs.

    Parameters
    ----------
    atlas : :class:`~ketflow.io.atlases.ResolvedAtlas`
        The atlas's checked files.
    circuit : :class:`ketflow.config.Circuit`
        Settings applied to the atlas as to the circuit (coverage rule, ROI signal).
    connectivity : :class:`ketflow.config.Connectivity` or None
        The run's connectivity settings (None: the run has no connectivity stage); seed maps stay
        the circuit's.
    provenance : :class:`~ketflow.workflows.bold.outputs.Provenance`
        Where and how the outputs are stored.
    task_residual, tr, mem_gb
        As for :func:`~ketflow.workflows.bold.connectivity.init_connectivity_wf`.
    run_metadata : :obj:`dict`
        Sidecar fields of the time series (repetition time, units, ...), as the circuit's.

    Inputs
    ------
    bold_ref, brain_mask, bold_cache, confounds_tsv
        As for :func:`~ketflow.workflows.bold.rois.init_rois_wf`.
    denoised_file, denoise_qc, censoring_tsv, events_file
        The run's denoising outputs (and events, for task-residual connectivity).
    """
    settings = atlas_circuit(atlas, circuit)
    workflow = Workflow(name=f"atlas_{atlas.label}_wf")
    workflow.__desc__ = atlas_desc(atlas)
    inputnode = pe.Node(IdentityInterface(fields=["bold_ref", "brain_mask", "bold_cache", "confounds_tsv",
                                                  "denoised_file", "denoise_qc", "censoring_tsv", "events_file"]),
                        name="inputnode")
    rois_wf = init_rois_wf(settings, name="rois_wf")
    rois_wf.__desc__ = None  # this workflow's paragraph describes the atlas
    signals = pe.Node(ExtractROISignals(method=circuit.signal), name="signals", mem_gb=mem_gb)
    workflow.connect([
        (inputnode, rois_wf, [(f, f"inputnode.{f}") for f in ("bold_ref", "brain_mask", "bold_cache",
                                                              "confounds_tsv")]),
        (inputnode, signals, [("brain_mask", "brain_mask"), ("denoised_file", "denoised_file")]),
        (rois_wf, signals, [("outputnode.labels_file", "labels_file"), ("outputnode.labels_tsv", "labels_tsv")]),
    ])
    label = atlas.label
    add_sink(workflow, provenance, "dseg", rois_wf, "outputnode.labels_file", "dseg", ".nii.gz", atlas=label,
             meta={"Description": f"regions of atlas {label} kept by the coverage rule on this run's BOLD grid",
                   "Atlas": Path(atlas.dseg).name})
    add_sink(workflow, provenance, "dseg_tsv", rois_wf, "outputnode.labels_tsv", "dseg", ".tsv", atlas=label,
             sidecar=False)
    add_sink(workflow, provenance, "roi_quality", rois_wf, "outputnode.quality_tsv", "qc", ".tsv", atlas=label,
             desc="rois", meta_from="outputnode.quality_json")
    stat = "mean" if circuit.signal == "mean" else "eigenvariate"
    add_sink(workflow, provenance, "timeseries", signals, "timeseries", ROI_SERIES_SUFFIX, ".tsv", atlas=label,
             stat=stat, meta=run_metadata)
    add_sink(workflow, provenance, "coverage", signals, "coverage", "bold", ".tsv", atlas=label, stat="coverage")
    if connectivity is not None:
        connectivity_wf = init_connectivity_wf(
            connectivity.model_copy(update={"seeds": [], "seed_to_voxel": False}), task_residual=task_residual,
            tr=tr, mem_gb=mem_gb, described_tasks={}, name="connectivity_wf")
        connectivity_wf.__desc__ = None
        workflow.connect([
            (inputnode, connectivity_wf, [(f, f"inputnode.{f}") for f in ("denoise_qc", "denoised_file",
                                                                          "censoring_tsv", "brain_mask",
                                                                          "events_file")]),
            (signals, connectivity_wf, [("timeseries", "inputnode.timeseries"), ("coverage", "inputnode.coverage")]),
        ])
        stats = [stat for measure in fc_measures(connectivity) for stat in MEASURE_STATS[measure]]
        add_sink(workflow, provenance, "relmats", connectivity_wf, "outputnode.relmat_files", "relmat", ".tsv",
                 atlas=label, entities_from={"stat": "outputnode.measures"}, meta_from="outputnode.qc_json",
                 meta_by_entity={"stat": connectivity_sidecars(stats, node_files(provenance.source_file[0], label))})
    return workflow

