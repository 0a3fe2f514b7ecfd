"""Stage: ROI-to-ROI and seed-to-voxel connectivity of the denoised run."""

from __future__ import annotations

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from ...config import Connectivity as ConnectivitySettings
from ...config import Task
from ...docs import fill_doc
from ...interfaces.connectivity import Connectivity
from ...reports.boilerplate import paragraph

#: Outputs of the connectivity stage.
CONNECTIVITY_OUTPUTS = ["relmat_files", "measures", "seed_maps", "seed_names", "qc_json"]


def fc_measures(connectivity: ConnectivitySettings) -> list[str]:
    """The configured connectivity measures plus ``fisher_z``, which the group level reads."""
    return list(dict.fromkeys([*connectivity.measures, "fisher_z"]))


def connectivity_seeds(connectivity: ConnectivitySettings) -> list[str]:
    """The seeds of seed-to-voxel maps (none when ``seed_to_voxel`` is off)."""
    return list(connectivity.seeds) if connectivity.seed_to_voxel else []


def connectivity_desc(connectivity: ConnectivitySettings, described_tasks: dict[str, Task]) -> str:
    """Methods paragraph of functional connectivity in the described tasks ("" when none of
    them is listed under ``connectivity.tasks``)."""
    fc_tasks = [label for label in connectivity.tasks if label in described_tasks]
    if not fc_tasks:
        return ""
    task = [label for label in fc_tasks if described_tasks[label].type == "task"]
    measures = set(fc_measures(connectivity))
    described = [text for key, text in (
        ("pearson", "Pearson correlation"), ("fisher_z", "the Fisher z transform of the Pearson correlation"),
        ("partial", "partial correlation"),
        ("ledoit_wolf", "Ledoit-Wolf shrinkage covariance with the correlation and partial correlation derived "
                        "from it ([@ledoit])")) if key in measures]
    text = (
        f"In the runs of task(s) {', '.join(fc_tasks)}, ROI-to-ROI connectivity was computed from the denoised "
        f"ROI signals of the retained volumes as {', '.join(described[:-1]) + ' and ' if len(described) > 1 else ''}"
        f"{described[-1]}"
    )
    if task:
        text += (f"; in task runs ({', '.join(task)}) condition-wise finite-impulse-response task responses were "
                 "regressed out first (task-residual connectivity; [@cole])")
    if connectivity_seeds(connectivity):
        text += (f". Seed-to-voxel maps (Fisher z of the correlation with every voxel) were computed for "
                 f"{', '.join(connectivity.seeds)}")
    return paragraph("Functional connectivity", text + ".")


@fill_doc
def init_connectivity_wf(connectivity: ConnectivitySettings, *, task_residual: bool, tr: float, mem_gb: float,
                         described_tasks: dict[str, Task], name: str = "connectivity_wf") -> Workflow:
    """ROI-to-ROI matrices and seed-to-voxel maps of the denoised run.

    Parameters
    ----------
    %(connectivity)s
    task_residual : :obj:`bool`
        A task run: regress condition-wise FIR task responses out first (Cole et al. 2019).
    %(tr)s
    %(mem_gb)s
    %(described_tasks)s
    %(name)s

    Inputs
    ------
    timeseries, coverage
        The denoised ROI signals and ROI coverage (:func:`ketflow.workflows.bold.denoise.init_denoise_wf`).
    denoise_qc, denoised_file, censoring_tsv
        Denoising's QC, denoised data and censoring table.
    %(brain_mask)s
    %(events_file)s
        (task runs)

    Outputs
    -------
    relmat_files, measures
        One ROI-to-ROI matrix per measure (``stat-`` names in ``measures``).
    seed_maps, seed_names
        Seed-to-voxel Fisher z maps and their seeds.
    qc_json
        Denoising QC with volumes used and ROI coverage.
    """
    workflow = Workflow(name=name)
    workflow.__desc__ = connectivity_desc(connectivity, described_tasks) or None
    inputnode = pe.Node(IdentityInterface(fields=["timeseries", "coverage", "denoise_qc", "denoised_file",
                                                  "censoring_tsv", "brain_mask", "events_file"]), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=CONNECTIVITY_OUTPUTS), name="outputnode")
    conn = pe.Node(Connectivity(seeds=connectivity_seeds(connectivity), connectivity_measures=fc_measures(connectivity)),
                   name="connectivity", mem_gb=mem_gb)
    workflow.connect([
        (inputnode, conn, [("timeseries", "timeseries"), ("coverage", "coverage"), ("denoise_qc", "denoise_qc"),
                           ("denoised_file", "denoised_file"), ("brain_mask", "brain_mask")]),
        (conn, outputnode, [(field, field) for field in CONNECTIVITY_OUTPUTS]),
    ])
    if task_residual:  # task-residual connectivity (Cole et al. 2019)
        conn.inputs.tr = tr
        workflow.connect(inputnode, "events_file", conn, "events_file")
        workflow.connect(inputnode, "censoring_tsv", conn, "censoring_tsv")
    return workflow
