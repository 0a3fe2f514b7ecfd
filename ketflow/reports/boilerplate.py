"""Methods boilerplate generated from the actual configuration (as fMRIPrep does).

The text is written to ``logs/CITATION.md`` and shown in the participant reports, so that a
methods section describes what was actually run, with the references of each method.
:func:`methods` builds the paragraphs once; :class:`Methods` renders them as Markdown or
HTML.  The reports pass the runs found in the outputs, so that only the tasks a participant
actually contributed are described.
"""

from __future__ import annotations

import html
from collections import defaultdict
from dataclasses import dataclass

from .. import __version__
from ..config import AnalysisConfig, load_spheres, roi_names
from ..signal.glm import noise_model_description

REFERENCES = {
    "ketflow": "ketflow developers. ketflow: circuit measures after fMRIPrep. Version {version}.",
    "nipype": "Gorgolewski K, et al. (2011). Nipype: a flexible, lightweight and extensible neuroimaging data "
              "processing framework in Python. Front Neuroinform 5:13.",
    "nilearn": "Abraham A, et al. (2014). Machine learning for neuroimaging with scikit-learn. Front Neuroinform 8:14.",
    "fmriprep": "Esteban O, et al. (2019). fMRIPrep: a robust preprocessing pipeline for functional MRI. "
                "Nat Methods 16:111-116.",
    "lindquist": "Lindquist MA, et al. (2019). Modular preprocessing pipelines can reintroduce artifacts into fMRI "
                 "data. Hum Brain Mapp 40:2358-2376.",
    "satterthwaite": "Satterthwaite TD, et al. (2013). An improved framework for confound regression and filtering "
                     "for control of motion artifact in the preprocessing of resting-state functional connectivity "
                     "data. NeuroImage 64:240-256.",
    "behzadi": "Behzadi Y, et al. (2007). A component based noise correction method (CompCor) for BOLD and "
               "perfusion based fMRI. NeuroImage 37:90-101.",
    "power": "Power JD, et al. (2012). Spurious but systematic correlations in functional connectivity MRI networks "
             "arise from subject motion. NeuroImage 59:2142-2154.",
    "friston_glm": "Friston KJ, et al. (1994). Statistical parametric maps in functional imaging: a general linear "
                   "approach. Hum Brain Mapp 2:189-210.",
    "mclaren": "McLaren DG, et al. (2012). A generalized form of context-dependent psychophysiological interactions "
               "(gPPI): a comparison to standard approaches. NeuroImage 61:1277-1286.",
    "gitelman": "Gitelman DR, et al. (2003). Modeling regional and psychophysiologic interactions in fMRI: the "
                "importance of hemodynamic deconvolution. NeuroImage 19:200-207.",
    "etkin": "Etkin A, et al. (2006). Resolving emotional conflict: a role for the rostral anterior cingulate cortex "
             "in modulating activity in the amygdala. Neuron 51:871-882.",
    "ledoit": "Ledoit O, Wolf M (2004). A well-conditioned estimator for large-dimensional covariance matrices. "
              "J Multivar Anal 88:365-411.",
    "cole": "Cole MW, et al. (2019). Task activations produce spurious but systematic inflation of task functional "
            "connectivity estimates. NeuroImage 189:1-18.",
    "worsley_glm": "Worsley KJ, et al. (2002). A general statistical analysis for fMRI data. NeuroImage 15:1-15.",
    "friston_dcm": "Friston KJ, Harrison L, Penny W (2003). Dynamic causal modelling. NeuroImage 19:1273-1302.",
    "stephan": "Stephan KE, et al. (2007). Comparing hemodynamic models with DCM. NeuroImage 38:387-401.",
    "friston_ar": "Friston KJ, et al. (2002). Classical and Bayesian inference in neuroimaging: applications. "
                  "NeuroImage 16:484-512.",
    "friston_vl": "Friston K, et al. (2007). Variational free energy and the Laplace approximation. "
                  "NeuroImage 34:220-234.",
    "friston_peb": "Friston KJ, et al. (2016). Bayesian model reduction and empirical Bayes for group (DCM) "
                   "studies. NeuroImage 128:413-431.",
    "stephan_bms": "Stephan KE, et al. (2009). Bayesian model selection for group studies. NeuroImage "
                   "46:1004-1017.",
    "rigoux": "Rigoux L, et al. (2014). Bayesian model selection for group studies - revisited. NeuroImage "
              "84:971-985.",
    "zou": "Zou H, Hastie T (2005). Regularization and variable selection via the elastic net. J R Stat Soc B "
           "67:301-320.",
    "norbury": "Norbury A, et al. (2021). Neuroimaging correlates and predictors of response to repeated-dose "
               "intravenous ketamine in PTSD: preliminary evidence. Neuropsychopharmacology 46:2266-2277.",
    "varoquaux": "Varoquaux G (2018). Cross-validation failure: small sample sizes lead to large error bars. "
                 "NeuroImage 180:68-77.",
}


_STRATEGY_TEXT = {
    "24P": "the six realignment parameters, their temporal derivatives and the squares of both "
           "(24 parameters; Satterthwaite et al. 2013)",
    "36P": "the six realignment parameters, mean white-matter, cerebrospinal-fluid and global signals, their "
           "temporal derivatives and the squares of all of these (36 parameters; Satterthwaite et al. 2013)",
    "aCompCor": "anatomical CompCor components (Behzadi et al. 2007) together with the six realignment "
                "parameters and their temporal derivatives",
}


@dataclass
class Methods:
    """Methods paragraphs as ``(heading, text)`` pairs (heading may be empty) and references."""

    paragraphs: list[tuple[str, str]]
    references: list[str]

    def markdown(self) -> str:
        """The text as Markdown, with a ``# Methods`` title and a reference list."""
        body = "\n\n".join(f"**{head}.** {text}" if head else text for head, text in self.paragraphs)
        refs = "\n".join(f"- {ref}" for ref in self.references)
        return "# Methods\n\n" + body + "\n\n## References\n\n" + refs + "\n"

    def html(self) -> str:
        """The text as an HTML fragment (paragraphs and a reference list), escaped."""
        paras = "\n".join(
            f"<p><strong>{html.escape(head)}.</strong> {html.escape(text)}</p>" if head
            else f"<p>{html.escape(text)}</p>"
            for head, text in self.paragraphs
        )
        refs = "\n".join(f"<li>{html.escape(ref)}</li>" for ref in self.references)
        return f'{paras}\n<h2 class="h5">References</h2>\n<ul class="references">\n{refs}\n</ul>'


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _series(items: list[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _data_paragraph(runs: list[tuple[str | None, str, str | None]]) -> str:
    """One sentence listing the runs analysed, e.g. ``faces (sessions pre, post)``."""
    sessions: dict[str, list[str]] = defaultdict(list)
    for session, task, _run in runs:
        sessions[task].append(session)
    parts = []
    for task, ses in sessions.items():
        labelled = list(dict.fromkeys(s for s in ses if s))
        where = f"; session{'s' if len(labelled) > 1 else ''} {', '.join(labelled)}" if labelled else ""
        parts.append(f"task '{task}' ({_plural(len(ses), 'run')}{where})")
    return f"{_plural(len(runs), 'BOLD run')} of this participant were analysed: {_series(parts)}."


def _roi_paragraph(config: AnalysisConfig) -> str:
    circuit = config.circuit
    rois = roi_names(config)
    spheres = {s.name: s for s in load_spheres(circuit)}
    described = [
        f"{name} ({s.x:g}, {s.y:g}, {s.z:g}; radius {s.radius_mm:g} mm)" if (s := spheres.get(name)) else name
        for name in rois
    ]
    where = ("spheres at MNI152NLin2009cAsym coordinates" if not circuit.atlas
             else f"labels of the atlas {circuit.atlas.dseg.name}"
             + (" and spheres at MNI152NLin2009cAsym coordinates" if spheres else ""))
    signal = "the mean over its voxels" if circuit.signal == "mean" else "its first eigenvariate, as in SPM"
    return (
        f"The circuit ('{circuit.name}') comprised {len(rois)} regions ({where}): {', '.join(described)}. "
        "Each region was resampled to the BOLD grid of every run (nearest neighbour), intersected with that "
        f"run's brain mask and required at least {_plural(circuit.min_voxels, 'voxel')}; its signal was {signal}."
    )


def _dcm_noise_sentence(options) -> str:
    """The DCM's observation-noise model and hyperprior, in words."""
    prior = f"a log-precision hyperprior of mean {options.hE:g} and variance {options.hC:g}"
    if options.noise == "ar1":
        return ("Each region's observation noise was modelled as a first-order autoregressive process whose "
                "coefficient was estimated from the residuals of a first inversion before the model was inverted "
                f"again (as for AR(1) GLMs, Friston et al. 2002), with {prior}. ")
    return f"Each region's observation noise was i.i.d. with {prior}. "


def _connectivity_paragraph(config: AnalysisConfig, fc_tasks: list[str]) -> tuple[str, list[str]]:
    cited = ["ledoit"]
    task = [t for t in fc_tasks if config.tasks[t].type == "task"]
    measures = set(config.connectivity.measures) | {"fisher_z"}
    described = [text for key, text in (
        ("pearson", "Pearson correlation"), ("fisher_z", "the Fisher z transform of the Pearson correlation"),
        ("partial", "partial correlation"),
        ("ledoit_wolf", "Ledoit-Wolf shrinkage covariance with the correlation and partial correlation derived "
                        "from it (Ledoit & Wolf 2004)")) if key in measures]
    if "ledoit_wolf" not in measures:
        cited = []
    text = (
        f"In the runs of task(s) {', '.join(fc_tasks)}, ROI-to-ROI connectivity was computed from the denoised "
        f"ROI signals of the retained volumes as {', '.join(described[:-1]) + ' and ' if len(described) > 1 else ''}"
        f"{described[-1]}"
    )
    if task:
        cited.append("cole")
        text += (f"; in task runs ({', '.join(task)}) condition-wise finite-impulse-response task responses were "
                 "regressed out first (task-residual connectivity; Cole et al. 2019)")
    if config.connectivity.seed_to_voxel and config.connectivity.seeds:
        text += (f". Seed-to-voxel maps (Fisher z of the correlation with every voxel) were computed for "
                 f"{', '.join(config.connectivity.seeds)}")
    return text + ".", cited


def methods(config: AnalysisConfig, tasks: list[str] | None = None, *,
            runs: list[tuple[str | None, str, str | None]] | None = None, group: bool = True) -> Methods:
    """The methods of ``config`` restricted to ``tasks`` (default: every configured task).

    ``runs`` — (session, task, run) of the runs actually analysed — adds a sentence
    describing them and restricts ``tasks`` to theirs; ``group=False`` leaves out the
    group-level paragraph (for a participant's report).
    """
    if runs is not None:
        tasks = [t for t in dict.fromkeys(task for _, task, _ in runs) if t in config.tasks]
    tasks = list(config.tasks) if tasks is None else tasks
    den = config.denoising
    used = ["ketflow", "nipype", "fmriprep", "nilearn", "lindquist", "satterthwaite"]
    intro = (
        f"Results were computed with ketflow {__version__} (configuration '{config.name}'), built on Nipype "
        "(Gorgolewski et al. 2011) and Nilearn (Abraham et al. 2014), from data preprocessed with fMRIPrep "
        "(Esteban et al. 2019)."
    )
    if runs:
        intro += " " + _data_paragraph(runs)
    paragraphs = [("", intro), ("Regions of interest", _roi_paragraph(config))]
    censor = (
        f" Volumes with framewise displacement above {den.fd_threshold:g} mm (Power et al. 2012) were censored, "
        f"together with uncensored segments shorter than {_plural(den.min_contiguous, 'volume')}."
        if den.fd_threshold else ""
    )
    rest_tasks = [t for t in tasks if config.tasks[t].type == "rest"]
    band = (
        f" Resting-state runs were additionally band-pass filtered ({den.band_pass_rest[0]:g}-"
        f"{den.band_pass_rest[1]:g} Hz) within the same model."
        if den.band_pass_rest and rest_tasks else ""
    )
    paragraphs.append((
        "Denoising",
        "Non-steady-state volumes flagged by fMRIPrep were discarded. Confounds comprised "
        f"{_STRATEGY_TEXT[den.strategy]}"
        + (f" and a discrete cosine basis with a {den.high_pass_s:g} s cut-off" if den.high_pass_s else "")
        + ", removed from the BOLD signal in a single regression (Lindquist et al. 2019)." + censor + band
        + f" Runs left with fewer than {_plural(den.min_volumes, 'volume')} or {den.min_dof} residual degrees "
        "of freedom were excluded."
    ))
    if den.strategy == "aCompCor":
        used.append("behzadi")
    if den.fd_threshold:
        used.append("power")
    task_labels = [t for t in tasks if config.tasks[t].type == "task"]
    if config.measures.activation and task_labels:
        used.append("friston_glm")
        if config.glm.noise_model.endswith("-corrected"):
            used.append("worsley_glm")
        hrf = "the SPM canonical HRF" + (" and its temporal derivative" if config.glm.hrf == "spm+derivative" else "")
        contrasts = "; ".join(
            f"task '{t}': " + ", ".join(config.tasks[t].contrasts) for t in task_labels if config.tasks[t].contrasts
        )
        derived = [f"{d.name} = {'/'.join(_as_list(d.trial_type))} trials"
                   + (f" after {'/'.join(_as_list(d.previous))} trials" if d.previous else "")
                   for t in task_labels for d in config.tasks[t].derived_conditions]
        paragraphs.append((
            "Task activation",
            f"Conditions from each run's events were convolved with {hrf}; the first-level general linear model "
            f"(Friston et al. 1994) included the denoising confounds and a {config.glm.high_pass_s:g} s cosine "
            f"high-pass, with {noise_model_description(config.glm.noise_model, config.glm.autocorrelation_fwhm_mm)}."
            + (f" Conditions defined by trial history (Etkin et al. 2006): {'; '.join(derived)}." if derived else "")
            + (f" Contrasts: {contrasts}." if contrasts else "")
        ))
        if derived:
            used.append("etkin")
        paragraphs[-1] = (paragraphs[-1][0], paragraphs[-1][1]
                          + " Runs of the same task within a session were combined by fixed effects "
                            "(inverse-variance weighting).")
    ppi_tasks = [t for t in config.ppi.tasks if t in tasks]
    if config.measures.ppi and ppi_tasks:
        used += ["mclaren"] + (["gitelman"] if config.ppi.deconvolve else [])
        deconv = ("after deconvolution of the seed signal to the neuronal level with a parametric empirical Bayes "
                  "estimator (Gitelman et al. 2003)" if config.ppi.deconvolve
                  else "without deconvolution (interaction formed at the BOLD level)")
        paragraphs.append((
            "Generalized PPI",
            f"For seed(s) {', '.join(config.ppi.seeds)} in task(s) {', '.join(ppi_tasks)}, psychophysiological "
            f"interaction terms were formed for every condition {deconv}, with mean-centred psychological "
            "regressors, and entered with all task regressors, the seed and the confounds into one model "
            "(McLaren et al. 2012), giving ROI-to-ROI and seed-to-voxel PPI estimates"
            + ("; ROI-to-ROI estimates were averaged over both directions." if config.ppi.symmetrize else ".")
        ))
    fc_tasks = [t for t in config.connectivity.tasks if t in tasks]
    if config.measures.connectivity and fc_tasks:
        text, cited = _connectivity_paragraph(config, fc_tasks)
        used += cited
        paragraphs.append(("Functional connectivity", text))
    if config.measures.dcm and config.dcm.task in tasks:
        used += ["friston_dcm", "stephan", "friston_vl"] + (["friston_ar"] if config.dcm.options.noise == "ar1" else [])
        paragraphs.append((
            "Dynamic causal modelling",
            f"A deterministic bilinear DCM (Friston et al. 2003) of regions {', '.join(config.dcm.regions)} with "
            f"inputs {', '.join(config.dcm.inputs)} in task '{config.dcm.task}' was inverted with variational "
            "Laplace (Friston et al. 2007) under SPM12's priors and hemodynamic model (Stephan et al. 2007). "
            + _dcm_noise_sentence(config.dcm.options)
            + "Region signals were first eigenvariates of the grand-mean scaled BOLD after adjustment for the "
            "confounds (cosine high-pass, nuisance regressors and one regressor per censored volume), which also "
            "entered the DCM's confound matrix, as SPM's volume-of-interest extraction does"
            + (f"; models {', '.join(m.name for m in config.dcm.model_space)} were scored against the full "
               "model by Bayesian model reduction (Friston et al. 2016) and compared across subjects by "
               "random-effects Bayesian model selection (Stephan et al. 2009; Rigoux et al. 2014)"
               if config.dcm.model_space else "")
            + ". Several runs of a session were combined by Bayesian parameter averaging."
        ))
        if config.dcm.model_space:
            used += ["friston_peb", "stephan_bms", "rigoux"]
    if group:
        paragraphs.append((
            "Group level",
            f"Change scores ({config.sessions.followup} minus {config.sessions.baseline}) of the imaging measures "
            f"predicted change in {config.clinical.outcome} with elastic-net regression (Zou & Hastie 2005), the "
            "penalty chosen by leave-one-out cross-validation as in Norbury et al. (2021); out-of-sample performance "
            "was estimated by nested cross-validation with permutation tests (Varoquaux 2018), and DCM parameters "
            "were analysed with Parametric Empirical Bayes (Friston et al. 2016)."
        ))
        used += ["zou", "norbury", "varoquaux", "friston_peb"]
    refs = [REFERENCES[key].format(version=__version__) for key in dict.fromkeys(used)]
    return Methods(paragraphs, refs)


def methods_text(config: AnalysisConfig, tasks: list[str] | None = None) -> str:
    """Markdown methods paragraph(s) with a reference list, from ``config``."""
    return methods(config, tasks).markdown()


def _as_list(value) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)
