"""Stage: denoising of the run (one regression, censoring) and its ROI signals."""

from __future__ import annotations

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from ...config import Denoising
from ...docs import fill_doc
from ...interfaces.denoise import Denoise
from ...interfaces.rois import ExtractROISignals
from ...reports.boilerplate import paragraph

#: The confounds of each strategy, in words.
STRATEGY_TEXT = {
    "24P": "the six realignment parameters, their temporal derivatives and the squares of both "
           "(24 parameters; [@satterthwaite])",
    "36P": "the six realignment parameters, mean white-matter, cerebrospinal-fluid and global signals, their "
           "temporal derivatives and the squares of all of these (36 parameters; [@satterthwaite])",
    "aCompCor": "anatomical CompCor components of the combined white-matter and cerebrospinal-fluid mask "
                "(as many as explain 50% of its variance; [@behzadi]) and fMRIPrep's cosine regressors, together "
                "with the six realignment parameters, their temporal derivatives and the squares of both "
                "(24 parameters; [@satterthwaite])",
}


def _volumes(n: int) -> str:
    return f"{n} volume" + ("" if n == 1 else "s")


def denoise_desc(denoising: Denoising, *, describe_band_pass: bool) -> str:
    """Methods paragraph of denoising; ``describe_band_pass``: rest runs are among those described."""
    den = denoising
    censor = (
        f" Volumes with framewise displacement above {den.fd_threshold:g} mm ([@power]) were censored, "
        f"together with uncensored segments shorter than {_volumes(den.min_contiguous)}."
        if den.fd_threshold else ""
    )
    band = (
        f" Resting-state runs were additionally band-pass filtered ({den.band_pass_rest[0]:g}-"
        f"{den.band_pass_rest[1]:g} Hz) within the same model."
        if den.band_pass_rest and describe_band_pass else ""
    )
    task_models = den.for_task_models().strategy
    task_text = (f" The task models (activation, gPPI, beta series, DCM) instead included {STRATEGY_TEXT[task_models]}"
                 " as confound regressors in the models themselves, with one regressor per censored volume."
                 if task_models != den.strategy else "")
    return paragraph("Denoising", (
        "Non-steady-state volumes flagged by fMRIPrep were discarded. Confounds comprised "
        f"{STRATEGY_TEXT[den.strategy]}"
        + (f" and a discrete cosine basis with a {den.high_pass_s:g} s cut-off" if den.high_pass_s else "")
        + ", removed from the BOLD signal in a single regression ([@lindquist])." + censor + band + task_text
        + f" Runs left with fewer than {_volumes(den.min_volumes)}"
        + (f" (or {den.min_time_s:g} s of data)" if den.min_time_s else "")
        + f" or {den.min_dof} residual degrees of freedom were excluded."))


@fill_doc
def init_denoise_wf(denoising: Denoising, signal: str, *, rest: bool, tr: float, mem_gb: dict[str, float],
                    describe_band_pass: bool, name: str = "denoise_wf") -> Workflow:
    """Denoise the run in one regression and extract its ROI signals.

    Parameters
    ----------
    %(denoising)s
    signal : ``"mean"`` or ``"eigenvariate"``
        ROI summary of the denoised data (``circuit.signal``).
    rest : :obj:`bool`
        A rest run (band-passed when ``denoising.band_pass_rest`` is set).
    %(tr)s
    mem_gb : :obj:`dict`
        Memory estimates (GB) of the ``denoise`` and ``signals`` nodes.
    describe_band_pass : :obj:`bool`
        The methods paragraph mentions the rest runs' band-pass (rest runs are described).
    %(name)s

    Inputs
    ------
    %(bold_cache)s
    %(brain_mask)s
    confounds_tsv, confounds_json
        fMRIPrep's confounds table and its sidecar.
    %(labels)s

    Outputs
    -------
    denoised_file
        Denoised data of the retained volumes, (volumes, in-mask voxels) float32 ``.npy``.
    censoring_tsv
        Per-volume framewise displacement, dummy scans, censoring and retained volumes.
    outliers_tsv, motion_tsv
        XCP-D-style outlier flags and motion parameters with FD in mm (:mod:`ketflow.io.motion`).
    qc_json
        Settings, degrees of freedom, censoring counts and QC metrics.
    timeseries, coverage
        ROI signals (columns = ROIs, rows = retained volumes) and ROI coverage.
    """
    workflow = Workflow(name=name)
    workflow.__desc__ = denoise_desc(denoising, describe_band_pass=describe_band_pass)
    inputnode = pe.Node(IdentityInterface(fields=["bold_cache", "brain_mask", "confounds_tsv", "confounds_json",
                                                  "labels_file", "labels_tsv"]), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=["denoised_file", "censoring_tsv", "qc_json", "timeseries",
                                                   "coverage", "outliers_tsv", "motion_tsv"]), name="outputnode")
    denoise = pe.Node(Denoise(denoising=denoising, band_pass=rest, tr=tr), name="denoise", mem_gb=mem_gb["denoise"])
    signals = pe.Node(ExtractROISignals(method=signal), name="signals", mem_gb=mem_gb["signals"])
    workflow.connect([
        (inputnode, denoise, [("bold_cache", "bold_cache"), ("brain_mask", "brain_mask"),
                              ("confounds_tsv", "confounds_tsv"), ("confounds_json", "confounds_json")]),
        (inputnode, signals, [("brain_mask", "brain_mask"), ("labels_file", "labels_file"),
                              ("labels_tsv", "labels_tsv")]),
        (denoise, signals, [("denoised_file", "denoised_file")]),
        (denoise, outputnode, [("denoised_file", "denoised_file"), ("censoring_tsv", "censoring_tsv"),
                               ("qc_json", "qc_json"), ("outliers_tsv", "outliers_tsv"),
                               ("motion_tsv", "motion_tsv")]),
        (signals, outputnode, [("timeseries", "timeseries"), ("coverage", "coverage")]),
    ])
    return workflow
