"""Stage: beta-series connectivity of an event-related task run (``beta_series.tasks``)."""

from __future__ import annotations

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from ...config import AnalysisConfig, BetaSeries, Task
from ...docs import fill_doc
from ...interfaces.betaseries import BetaSeries as BetaSeriesInterface
from ...io.bids import RunInputs
from ...io.relmat import node_files, relmat_sidecar
from ...reports.boilerplate import paragraph

#: Outputs of the beta-series stage.
BETA_SERIES_OUTPUTS = ["betas_tsv", "condition_relmats", "contrast_relmats", "meta_json"]


def beta_series_desc(settings: BetaSeries, described_tasks: dict[str, Task]) -> str:
    """Methods paragraph of the beta-series connectivity of the described tasks."""
    tasks = [label for label in settings.tasks if label in described_tasks]
    return paragraph("Beta-series connectivity", (
        f"For task(s) {', '.join(tasks)}, the response of every circuit ROI to every trial was estimated by "
        "least squares - separate ([@mumford2012]): one ordinary-least-squares model per trial holding the "
        "trial's regressor, one regressor per condition for its other trials and the confounds, drifts and "
        "constant of the activation model. Beta-series connectivity ([@rissman2004]) was the Pearson "
        "correlation between ROIs of the single-trial estimates of each condition's trials (conditions with "
        f"fewer than {settings.min_trials} trials in a run were left out); each task contrast was the "
        "contrast-weighted sum of the conditions' Fisher-z transformed correlation matrices."))


@fill_doc
def init_beta_series_wf(task: Task, settings: BetaSeries, signal: str, *, mem_gb: float,
                        described_tasks: dict[str, Task], name: str = "beta_series_wf") -> Workflow:
    """Estimate the run's LSS beta series and their correlation matrices.

    Parameters
    ----------
    %(task)s
    settings : :class:`ketflow.config.BetaSeries`
        The configuration's ``beta_series`` section.
    signal : ``"mean"`` or ``"eigenvariate"``
        ROI signal (``circuit.signal``).
    %(mem_gb)s
    %(described_tasks)s
    %(name)s

    Inputs
    ------
    %(task_data)s
    %(events_file)s
    %(brain_mask)s
    %(labels)s

    Outputs
    -------
    betas_tsv
        Single-trial estimates (rows = trials, one column per ROI).
    condition_relmats, contrast_relmats
        Pearson correlation matrix of every condition; Fisher z matrix of every contrast.
    meta_json
        Trial counts and the conditions and contrasts left out.
    """
    workflow = Workflow(name=name)
    workflow.__desc__ = beta_series_desc(settings, described_tasks)
    fields = ["percent_bold", "task_design", "events_file", "brain_mask", "labels_file", "labels_tsv"]
    inputnode = pe.Node(IdentityInterface(fields=fields), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=BETA_SERIES_OUTPUTS), name="outputnode")
    model = pe.Node(BetaSeriesInterface(task=task, settings=settings, signal=signal), name="beta_series",
                    mem_gb=mem_gb)
    workflow.connect([
        (inputnode, model, [(field, field) for field in fields]),
        (model, outputnode, [(field, field) for field in BETA_SERIES_OUTPUTS]),
    ])
    return workflow


def relmat_metadata(run: RunInputs, config: AnalysisConfig, measure: str) -> dict:
    """BEP017 sidecar fields (:func:`ketflow.io.relmat.relmat_sidecar`) of a beta-series relmat of ``run``
    (``measure``: its RelationshipMeasure), with the task models' confound strategy."""
    fields = relmat_sidecar(measure, directed=False, valid_diagonal=False,
                            node_files=node_files(run.bold, config.circuit.name),
                            description="beta-series connectivity (Rissman et al. 2004) of least-squares-separate "
                                        "single-trial estimates (Mumford et al. 2012) of the circuit ROIs")
    return dict(fields, ConfoundStrategy=config.denoising.for_task_models().strategy)


def beta_series_sinks(sink, run: RunInputs, config: AnalysisConfig) -> None:
    """The derivatives of the beta-series stage (``sink``: the derivatives workflow's sink maker)."""
    circuit = config.circuit.name
    sink("betaseries_betas", "betaseries_betas_tsv", "betaseries", ".tsv", atlas=circuit, stat="effect",
         meta={"Description": "least-squares-separate single-trial estimates of every circuit ROI (percent signal "
                              "change per unit trial regressor); one row per modelled trial",
               "ROISummary": config.circuit.signal,
               "ConfoundStrategy": config.denoising.for_task_models().strategy}, meta_from="betaseries_meta_json")
    sink("betaseries_conditions", "betaseries_condition_relmats", "relmat", ".tsv", atlas=circuit,
         desc="betaseries", from_filename=True,
         meta=relmat_metadata(run, config, "Pearson correlation of the single-trial estimates over the trials of "
                                           "the condition (contrast- entity)"), meta_from="betaseries_meta_json")
    sink("betaseries_contrasts", "betaseries_contrast_relmats", "relmat", ".tsv", atlas=circuit,
         desc="betaseries", from_filename=True,
         meta=relmat_metadata(run, config, "contrast-weighted sum of the conditions' Fisher z (arctanh) of the "
                                           "Pearson correlation of the single-trial estimates"),
         meta_from="betaseries_meta_json")
