"""The participant-level workflow: one sub-workflow per subject, one per run inside it.

``init_ketflow_wf`` -> ``single_subject_<label>_wf`` (:func:`init_single_subject_wf`) ->
``<ses>_<task>[_<run>]_wf`` per run (:func:`ketflow.workflows.bold.init_bold_wf`; runs are
independent, so MultiProc runs them in parallel) and ``<ses>_<task>_fixedeffects_wf`` per
session with several runs of a task (:mod:`ketflow.workflows.session`).

Every workflow is a niworkflows ``LiterateWorkflow``: the top one introduces the methods
(``__desc__``) and ends them with the group level (``__postdesc__``); each stage describes
itself, and ``visit_desc()`` gathers the text (:func:`boilerplate`).
"""

from __future__ import annotations

from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from .. import __version__
from ..config import AnalysisConfig, Task
from ..docs import fill_doc
from ..interfaces.connectivity import Connectivity
from ..interfaces.denoise import Denoise
from ..interfaces.glm import FirstLevelGLM
from ..interfaces.ppi import GPPI
from ..io.bids import RunInputs
from ..reports.boilerplate import paragraph
from .bold import init_bold_wf
from .bold.outputs import Provenance
from .execution import reserve_threads
from .screening import screen_runs
from .session import RUN_FIELDS, init_fixed_effects_wf, session_groups

__all__ = ["init_ketflow_wf", "init_single_subject_wf", "screen_runs", "subject_boilerplate"]

#: Interfaces whose voxel-wise linear algebra (regression, projections, correlations over
#: every brain voxel) runs in multithreaded BLAS: their nodes reserve ``--omp-nthreads`` slots.
THREADED_INTERFACES = (Denoise, FirstLevelGLM, GPPI, Connectivity)


def intro_desc(config: AnalysisConfig) -> str:
    """The first paragraph of the methods: software, configuration, preprocessing."""
    overrides = "; ".join(f"{option} set {', '.join(f'{field} = {value!r}' for field, value in fields.items())}"
                          for option, fields in config.command_line_overrides.items())
    return paragraph("", (
        f"Results were computed with ketflow {__version__}[@ketflow] (configuration '{config.name}'"
        + (f"; command-line overrides: {overrides}" if overrides else "") + "), built on "
        "Nipype ([@nipype]) and Nilearn ([@nilearn]), from data preprocessed with fMRIPrep ([@fmriprep])."))


def group_desc(config: AnalysisConfig) -> str:
    """The group level, which the participant-level outputs feed (the methods' last paragraph)."""
    return paragraph("Group level", (
        f"Change scores ({config.sessions.followup} minus {config.sessions.baseline}) of the imaging measures "
        f"predicted change in {config.clinical.outcome} with elastic-net regression ([@zou]), the "
        "penalty chosen by leave-one-out cross-validation as in [@norbury]; out-of-sample performance "
        "was estimated by nested cross-validation with permutation tests ([@varoquaux]), and DCM parameters "
        "were analysed with Parametric Empirical Bayes ([@friston_peb])."))


def described_tasks(runs: list[RunInputs], config: AnalysisConfig) -> dict[str, Task]:
    """The configured tasks among ``runs`` (what the methods describe), by label.

    By label rather than in configuration order: the reports read the configuration recorded
    in ``logs/config.json``, whose keys are sorted, so this order is the same everywhere.
    """
    present = {run.task for run in runs}
    return {label: config.tasks[label] for label in sorted(config.tasks) if label in present}


def init_ketflow_wf(runs: list[RunInputs], config: AnalysisConfig, opts, source_links: dict) -> Workflow:
    """The whole participant-level workflow for ``runs`` (already screened)."""
    workflow = Workflow(name="ketflow_wf")
    workflow.__desc__ = intro_desc(config)
    workflow.__postdesc__ = group_desc(config)
    for subject in sorted({r.subject for r in runs}):
        provenance = {"out_dir": str(opts.output_dir), "source_links": source_links, "config_hash": config.digest()}
        workflow.add_nodes([init_single_subject_wf([r for r in runs if r.subject == subject], config, **provenance)])
    # Each process is limited to --omp-nthreads threads (execution.thread_limits); the nodes
    # that use them reserve as many MultiProc slots, never more than --nprocs.
    reserve_threads(workflow, min(opts.omp_nthreads, opts.nprocs), THREADED_INTERFACES)
    return workflow


@fill_doc
def init_single_subject_wf(runs: list[RunInputs], config: AnalysisConfig, *, out_dir: str, source_links: dict,
                           config_hash: str) -> Workflow:
    """One subject: a workflow per run, and the fixed effects of sessions with several runs of a task.

    Parameters
    ----------
    runs : :obj:`list` of :class:`ketflow.io.bids.RunInputs`
        The subject's runs (screened).
    config : :class:`ketflow.config.AnalysisConfig`
        The configuration; each stage receives the sections it needs.
    out_dir : :obj:`str`
        The output dataset.
    source_links : :obj:`dict`
        Dataset name -> folder, for the BIDS URIs of the sidecars.
    config_hash : :obj:`str`
        SHA-256 of the resolved configuration (``logs/config.json``).
    """
    workflow = Workflow(name=f"single_subject_{runs[0].subject}_wf")
    described = described_tasks(runs, config)
    run_wfs = {}  # run name -> its workflow
    for run in runs:
        provenance = Provenance.of_runs([run], out_dir=out_dir, source_links=source_links, config_hash=config_hash)
        run_wfs[run.name] = init_bold_wf(run, config, provenance, described_tasks=described)
        workflow.add_nodes([run_wfs[run.name]])
    for members in session_groups(runs, config):
        provenance = Provenance.of_runs(members, out_dir=out_dir, source_links=source_links, config_hash=config_hash)
        fixed_wf = init_fixed_effects_wf(members, config, provenance)
        for k, run in enumerate(members, start=1):
            workflow.connect([(run_wfs[run.name], fixed_wf, [(f"outputnode.{f}", f"inputnode.{f}_run{k}")
                                                             for f in RUN_FIELDS])])
    return workflow


def subject_boilerplate(workflow: Workflow, subject: str) -> str:
    """The methods text of one subject's runs: the introduction and its stages' paragraphs."""
    return workflow.__desc__ + workflow.get_node(f"single_subject_{subject}_wf").visit_desc()
