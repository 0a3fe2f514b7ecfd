"""Stage: session-level fixed effects of a task's runs, and their outputs.

When a subject has several runs of the same task in a session (same entities apart from
``run``), :func:`init_fixed_effects_wf` combines their activation contrasts by fixed effects
(inverse-variance weighting, :class:`~ketflow.interfaces.glm.FixedEffects`) and stores
session-level maps and ROI tables under the run-level names without the ``run`` entity, as
FitLins names its session-level outputs.  With a single run there is nothing to combine and
the run-level outputs are the session's.
"""

from __future__ import annotations

from nipype.interfaces.utility import IdentityInterface, Merge
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from ..config import AnalysisConfig
from ..docs import fill_doc
from ..interfaces.glm import FixedEffects
from ..io.bids import RunInputs
from .bold.outputs import Provenance, add_sink

#: Per-run inputs of the fixed effects (from each run's activation stage).
RUN_FIELDS = ("effect_maps", "variance_maps", "contrast_names", "dof", "roi_tsv")


def session_groups(runs: list[RunInputs], config: AnalysisConfig) -> list[list[RunInputs]]:
    """Activation runs sharing every entity but ``run``, in groups of two or more."""
    if not config.measures.activation:
        return []
    groups: dict[tuple, list] = {}
    for run in runs:
        if config.tasks[run.task].type == "task":
            groups.setdefault(tuple((k, v) for k, v in run.entities.items() if k != "run"), []).append(run)
    return [members for members in groups.values() if len(members) > 1]


def fixed_effects_wf_name(runs: list[RunInputs]) -> str:
    """``<ses>_<task>_fixedeffects_wf`` of the runs' shared entities."""
    parts = [f"{k}_{v}" for k, v in runs[0].entities.items() if k not in ("sub", "run") and v is not None]
    return "_".join(parts + ["fixedeffects_wf"]).replace("-", "")


@fill_doc
def init_fixed_effects_wf(runs: list[RunInputs], config: AnalysisConfig, provenance: Provenance) -> Workflow:
    """Combine the activation contrasts of ``runs`` (one task, one session) and store them.

    Parameters
    ----------
    runs : :obj:`list` of :class:`ketflow.io.bids.RunInputs`
        Two or more runs of one task in one session.
    config : :class:`ketflow.config.AnalysisConfig`
        The configuration (the sidecars record the task's settings).
    provenance : :class:`~ketflow.workflows.bold.outputs.Provenance`
        Output folder, the runs' files, dataset links and configuration hash.

    Inputs
    ------
    <field>_run<k>
        For the k-th run (1-based), each of ``effect_maps``, ``variance_maps``,
        ``contrast_names``, ``dof`` and ``roi_tsv`` of its activation stage.
    """
    workflow = Workflow(name=fixed_effects_wf_name(runs))
    n = len(runs)
    inputnode = pe.Node(IdentityInterface(fields=[f"{f}_run{k}" for f in RUN_FIELDS for k in range(1, n + 1)]),
                        name="inputnode")
    merges = {field_: pe.Node(Merge(n, no_flatten=field_ != "dof"), name=f"merge_{field_}",
                              run_without_submitting=True) for field_ in RUN_FIELDS}
    fixed = pe.Node(FixedEffects(brain_masks=[run.mask for run in runs], roi_pooling=config.glm.run_pooling),
                    name="fixed_effects", mem_gb=0.5)
    for field_, merge in merges.items():
        workflow.connect([(inputnode, merge, [(f"{field_}_run{k}", f"in{k}") for k in range(1, n + 1)])])
    workflow.connect([
        (merges["effect_maps"], fixed, [("out", "effect_maps")]),
        (merges["variance_maps"], fixed, [("out", "variance_maps")]),
        (merges["contrast_names"], fixed, [("out", "contrast_names")]),
        (merges["dof"], fixed, [("out", "dofs")]),
        (merges["roi_tsv"], fixed, [("out", "roi_tables")]),
    ])
    meta = {"Level": "session", "Runs": [run.name for run in runs],
            "TaskConfig": config.tasks[runs[0].task].model_dump(mode="json")}
    for stat in ("effect", "variance", "z"):
        add_sink(workflow, provenance, f"fixed_{stat}_maps", fixed, f"{stat}_maps", "statmap", ".nii.gz",
                 from_filename=True, meta=meta, meta_from="meta_json")
    add_sink(workflow, provenance, "fixed_roi_contrasts", fixed, "roi_tsv", "contrasts", ".tsv",
             atlas=config.circuit.name, stat="effect", meta=meta, meta_from="meta_json")
    return workflow
