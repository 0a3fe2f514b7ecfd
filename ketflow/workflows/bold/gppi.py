"""Stage: generalized PPI of a task run (ROI-to-ROI and seed-to-voxel)."""

from __future__ import annotations

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from ...config import GLM, PPI, Task
from ...docs import fill_doc
from ...interfaces.ppi import GPPI
from ...reports.boilerplate import paragraph

#: Outputs of the gPPI stage.
GPPI_OUTPUTS = ["contrast_names", "relmat_files", "stats_tsv", "seed_maps", "design_tsv", "figure", "meta_json"]


def gppi_desc(ppi: PPI, described_tasks: dict[str, Task], run_pooling: str) -> str:
    """Methods paragraph of the gPPI models of the described tasks; ``run_pooling``: how a
    session's runs are pooled (``glm.run_pooling``)."""
    ppi_tasks = [label for label in ppi.tasks if label in described_tasks]
    deconv = ("after deconvolution of the seed signal to the neuronal level with a parametric empirical Bayes "
              "estimator ([@gitelman])" if ppi.deconvolve
              else "without deconvolution (interaction formed at the BOLD level)")
    return paragraph("Generalized PPI", (
        f"For seed(s) {', '.join(ppi.seeds)} in task(s) {', '.join(ppi_tasks)}, psychophysiological "
        f"interaction terms were formed for every condition {deconv}, with mean-centred psychological "
        "regressors, and entered with all task regressors, the seed and the confounds into one model "
        "([@mclaren]), giving ROI-to-ROI and seed-to-voxel PPI estimates"
        + ("; ROI-to-ROI estimates were averaged over both directions." if ppi.symmetrize else ".")
        + (" The ROI-to-ROI estimates of a session's runs were pooled by their precision (inverse-variance "
           "weights, fixed effects)." if run_pooling == "precision"
           else " The ROI-to-ROI estimates of a session's runs were averaged with equal weights.")))


@fill_doc
def init_gppi_wf(task: Task, glm: GLM, ppi: PPI, signal: str, *, mem_gb: float, described_tasks: dict[str, Task],
                 name: str = "gppi_wf") -> Workflow:
    """Fit the gPPI models of one task run.

    Parameters
    ----------
    %(task)s
    %(glm)s
    %(ppi)s
    signal : ``"mean"`` or ``"eigenvariate"``
        ROI signal of the seeds and targets (``circuit.signal``).
    %(mem_gb)s
    %(described_tasks)s
    %(name)s

    Inputs
    ------
    %(task_data)s
    %(brain_mask)s
    %(labels)s

    Outputs
    -------
    contrast_names, relmat_files
        Seed x target PPI matrix of every condition and contrast.
    stats_tsv
        Every ROI-to-ROI estimate (seed, target, contrast, effect, variance, t, z, dof).
    seed_maps
        Seed-to-voxel effect, variance and z maps of every seed and contrast.
    design_tsv, figure, meta_json
        The first seed's gPPI design, a figure and the model description (sidecar fields).
    """
    workflow = Workflow(name=name)
    workflow.__desc__ = gppi_desc(ppi, described_tasks, glm.run_pooling)
    inputnode = pe.Node(IdentityInterface(fields=["percent_bold", "task_design", "brain_mask", "labels_file",
                                                  "labels_tsv"]), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=GPPI_OUTPUTS), name="outputnode")
    model = pe.Node(GPPI(task=task, glm=glm, ppi=ppi, signal=signal), name="gppi", mem_gb=mem_gb)
    workflow.connect([
        (inputnode, model, [(field, field) for field in ("percent_bold", "task_design", "brain_mask", "labels_file",
                                                         "labels_tsv")]),
        (model, outputnode, [(field, field) for field in GPPI_OUTPUTS]),
    ])
    return workflow
