"""Stage: the DCM of a task run (SPM-style VOIs, inversion, model space by reduction)."""

from __future__ import annotations

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from ...config import DCM, DCMOptionsConfig
from ...docs import fill_doc
from ...interfaces.dcm import ExtractVOI, FitDCM
from ...reports.boilerplate import paragraph

#: Outputs of the DCM stage.
DCM_OUTPUTS = ["voi_timeseries", "voi_qc", "dcm_json", "dcm_params", "dcm_figure", "dcm_model_space"]


def _noise_sentence(options: DCMOptionsConfig) -> str:
    """The DCM's observation-noise model and hyperprior, in words."""
    prior = f"a log-precision hyperprior of mean {options.hE:g} and variance {options.hC:g}"
    if options.noise == "ar1":
        return ("Each region's observation noise was modelled as a first-order autoregressive process whose "
                "coefficient was estimated from the residuals of a first inversion before the model was inverted "
                f"again (as for AR(1) GLMs, [@friston_ar]), with {prior}. ")
    return f"Each region's observation noise was i.i.d. with {prior}. "


def dcm_desc(dcm: DCM) -> str:
    """Methods paragraph of the DCM (inputs by name, as the recorded configuration lists them)."""
    return paragraph("Dynamic causal modelling", (
        f"A deterministic bilinear DCM ([@friston_dcm]) of regions {', '.join(dcm.regions)} with "
        f"inputs {', '.join(sorted(dcm.inputs))} in task '{dcm.task}' was inverted with variational "
        "Laplace ([@friston_vl]) under SPM12's priors and hemodynamic model ([@stephan]). "
        + _noise_sentence(dcm.options)
        + "Region signals were first eigenvariates of the grand-mean scaled BOLD after adjustment for the "
        "confounds (cosine high-pass, nuisance regressors and one regressor per censored volume), which also "
        "entered the DCM's confound matrix, as SPM's volume-of-interest extraction does"
        + (f"; models {', '.join(m.name for m in dcm.model_space)} were scored against the full "
           "model by Bayesian model reduction ([@friston_peb]) and compared across subjects by "
           "random-effects Bayesian model selection ([@stephan_bms]; [@rigoux])"
           if dcm.model_space else "")
        + ". Several runs of a session were combined by Bayesian parameter averaging."))


@fill_doc
def init_dcm_wf(dcm: DCM, *, high_pass_s: float | None, tr: float, start_time: float,
                name: str = "dcm_wf") -> Workflow:
    """Regional series (SPM-style VOIs) and the DCM of one task run.

    Parameters
    ----------
    %(dcm)s
    high_pass_s : :obj:`float` or None
        Cosine high-pass period (s) of the confounds X0 (``glm.high_pass_s``).
    %(tr)s
    %(start_time)s
    %(name)s

    Inputs
    ------
    %(bold_cache)s
    %(brain_mask)s
    %(labels)s
    %(confounds_file)s
    %(events_file)s

    Outputs
    -------
    voi_timeseries, voi_qc
        The regions' first eigenvariates (per cent of the grand mean) and their QC.
    dcm_json, dcm_params, dcm_figure
        The fitted model, its parameter table and figure.
    dcm_model_space
        The nested models scored by Bayesian model reduction (when ``dcm.model_space`` is set).
    """
    workflow = Workflow(name=name)
    workflow.__desc__ = dcm_desc(dcm)
    inputnode = pe.Node(IdentityInterface(fields=["bold_cache", "brain_mask", "labels_file", "labels_tsv",
                                                  "confounds_file", "events_file"]), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=DCM_OUTPUTS), name="outputnode")
    # SPM-style VOIs from the undenoised series (grand-mean scaled, adjusted for X0, first
    # eigenvariate); X0 (constant, cosines, nuisance, censoring spikes) enters the DCM too.
    voi = pe.Node(ExtractVOI(regions=dcm.regions, repetition_time=tr, high_pass_s=high_pass_s), name="dcm_voi",
                  mem_gb=0.5)
    fit = pe.Node(FitDCM(repetition_time=tr, start_time=start_time, dcm=dcm), name="dcm", mem_gb=0.5)
    workflow.connect([
        (inputnode, voi, [("bold_cache", "bold_cache"), ("brain_mask", "brain_mask"), ("labels_file", "labels_file"),
                          ("labels_tsv", "labels_tsv"), ("confounds_file", "confounds")]),
        (inputnode, fit, [("events_file", "events")]),
        (voi, fit, [("timeseries", "timeseries"), ("confounds_out", "confounds")]),
        (voi, outputnode, [("timeseries", "voi_timeseries"), ("qc_json", "voi_qc")]),
        (fit, outputnode, [("out_json", "dcm_json"), ("out_params", "dcm_params"), ("out_figure", "dcm_figure"),
                           ("out_model_space", "dcm_model_space")]),
    ])
    return workflow
