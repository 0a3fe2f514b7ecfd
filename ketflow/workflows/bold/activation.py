"""Stage: the activation GLM of a task run."""

from __future__ import annotations

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from ...config import GLM, Task
from ...docs import fill_doc
from ...interfaces.glm import FirstLevelGLM
from ...reports.boilerplate import paragraph
from ...signal.glm import noise_model_description

#: Outputs of the activation stage (and inputs of the session-level fixed effects).
ACTIVATION_OUTPUTS = ["contrast_names", "effect_maps", "variance_maps", "z_maps", "dof", "design_tsv", "design_svg",
                      "design_json", "roi_tsv", "t_maps", "p_maps"]


def _as_list(value) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def activation_desc(glm: GLM, described_tasks: dict[str, Task]) -> str:
    """Methods paragraph of the activation GLMs of the described task runs.

    Tasks and contrasts are listed by name, the order of the configuration recorded in
    ``logs/config.json`` (sorted keys), which the reports read.
    """
    tasks = {label: task for label, task in described_tasks.items() if task.type == "task"}
    hrf = "the SPM canonical HRF" + (" and its temporal derivative" if glm.hrf == "spm+derivative" else "")
    contrasts = "; ".join(f"task '{label}': " + ", ".join(task.contrasts_by_name())
                          for label, task in tasks.items() if task.contrasts)
    derived = [f"{d.name} = {'/'.join(_as_list(d.trial_type))} trials"
               + (f" after {'/'.join(_as_list(d.previous))} trials" if d.previous else "")
               for task in tasks.values() for d in task.derived_conditions]
    return paragraph("Task activation", (
        f"Conditions from each run's events were convolved with {hrf}; the first-level general linear model "
        f"([@friston_glm]) included the denoising confounds and a {glm.high_pass_s:g} s cosine "
        f"high-pass, with {noise_model_description(glm.noise_model, glm.autocorrelation_fwhm_mm)}"
        + (" ([@worsley_glm])." if glm.noise_model.endswith("-corrected") else ".")
        + (f" Conditions defined by trial history ([@etkin]): {'; '.join(derived)}." if derived else "")
        + (f" Contrasts: {contrasts}." if contrasts else "")
        + " Runs of the same task within a session were combined by fixed effects (inverse-variance weighting)"
        + ("." if glm.run_pooling == "precision" else
           " in the voxelwise maps; the ROI estimates were averaged with equal weights.")))


@fill_doc
def init_activation_wf(task: Task, glm: GLM, *, mem_gb: float, described_tasks: dict[str, Task],
                       name: str = "activation_wf") -> Workflow:
    """Fit the activation GLM of one task run: contrast maps, design and ROI contrasts.

    Parameters
    ----------
    %(task)s
    %(glm)s
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
    contrast_names, effect_maps, variance_maps, z_maps, dof
        Every contrast's maps (in the order of ``contrast_names``) and the residual degrees of freedom.
    design_tsv, design_svg, design_json
        The design matrix, its figure and its description (sidecar fields).
    roi_tsv
        Contrast estimates of each ROI's mean signal.
    """
    workflow = Workflow(name=name)
    workflow.__desc__ = activation_desc(glm, described_tasks)
    inputnode = pe.Node(IdentityInterface(fields=["percent_bold", "task_design", "brain_mask", "labels_file",
                                                  "labels_tsv"]), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=ACTIVATION_OUTPUTS), name="outputnode")
    model = pe.Node(FirstLevelGLM(task=task, glm=glm), name="activation", mem_gb=mem_gb)
    workflow.connect([
        (inputnode, model, [(field, field) for field in ("percent_bold", "task_design", "brain_mask", "labels_file",
                                                         "labels_tsv")]),
        (model, outputnode, [(field, field) for field in ACTIVATION_OUTPUTS]),
    ])
    return workflow
