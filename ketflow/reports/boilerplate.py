"""Methods boilerplate generated from the actual configuration (as fMRIPrep does).

The text is written to ``logs/CITATION.md`` and shown in the reports, so that a methods
section describes what was actually run, with the references of each method.
"""

from __future__ import annotations

from .. import __version__
from ..config import AnalysisConfig, load_spheres, roi_names

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
    "friston_dcm": "Friston KJ, Harrison L, Penny W (2003). Dynamic causal modelling. NeuroImage 19:1273-1302.",
    "stephan": "Stephan KE, et al. (2007). Comparing hemodynamic models with DCM. NeuroImage 38:387-401.",
    "friston_vl": "Friston K, et al. (2007). Variational free energy and the Laplace approximation. "
                  "NeuroImage 34:220-234.",
    "friston_peb": "Friston KJ, et al. (2016). Bayesian model reduction and empirical Bayes for group (DCM) "
                   "studies. NeuroImage 128:413-431.",
    "zou": "Zou H, Hastie T (2005). Regularization and variable selection via the elastic net. J R Stat Soc B "
           "67:301-320.",
    "norbury": "Norbury A, et al. (2021). Ketamine and midazolam in PTSD: imaging predictors of treatment "
               "response. Neuropsychopharmacology 46:2266-2277.",
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


def methods_text(config: AnalysisConfig, tasks: list[str] | None = None) -> str:
    """Markdown methods paragraph(s) with a reference list, from ``config``."""
    tasks = tasks or list(config.tasks)
    den = config.denoising
    rois = roi_names(config)
    spheres = {s.name: s for s in load_spheres(config.circuit)}
    sphere_list = ", ".join(
        f"{name} ({s.x:g}, {s.y:g}, {s.z:g}; {s.radius_mm:g} mm)" if (s := spheres.get(name)) else name
        for name in rois
    )
    used = ["ketflow", "nipype", "fmriprep", "nilearn", "lindquist", "satterthwaite"]
    paragraphs = [
        f"Results were computed with ketflow {__version__} (configuration '{config.name}'), built on Nipype "
        "(Gorgolewski et al. 2011) and Nilearn (Abraham et al. 2014), from data preprocessed with fMRIPrep "
        "(Esteban et al. 2019).",
        f"**Regions of interest.** The circuit ('{config.circuit.name}') comprised {len(rois)} regions: "
        f"{sphere_list} (MNI152NLin2009cAsym coordinates, spheres in mm). Each region was resampled to the "
        f"BOLD grid of every run, intersected with that run's brain mask, and required at least "
        f"{config.circuit.min_voxels} voxels; its signal was the "
        + ("mean over voxels." if config.circuit.signal == "mean" else "first eigenvariate, as in SPM.")
    ]
    censor = (
        f" Volumes with framewise displacement above {den.fd_threshold:g} mm (Power et al. 2012) were censored, "
        f"together with uncensored segments shorter than {den.min_contiguous} volumes."
        if den.fd_threshold else ""
    )
    band = (
        f" Resting-state runs were additionally band-pass filtered ({den.band_pass_rest[0]:g}-"
        f"{den.band_pass_rest[1]:g} Hz) within the same model."
        if den.band_pass_rest else ""
    )
    paragraphs.append(
        "**Denoising.** Non-steady-state volumes flagged by fMRIPrep were discarded. Confounds comprised "
        f"{_STRATEGY_TEXT[den.strategy]}"
        + (f" and a discrete cosine basis with a {den.high_pass_s:g} s cut-off" if den.high_pass_s else "")
        + ", removed from the BOLD signal in a single regression (Lindquist et al. 2019)." + censor + band
        + f" Runs left with fewer than {den.min_volumes} volumes were excluded."
    )
    if den.strategy == "aCompCor":
        used.append("behzadi")
    if den.fd_threshold:
        used.append("power")
    task_labels = [t for t in tasks if config.tasks[t].type == "task"]
    if config.measures.activation and task_labels:
        used.append("friston_glm")
        hrf = "the SPM canonical HRF" + (" and its temporal derivative" if config.glm.hrf == "spm+derivative" else "")
        contrasts = "; ".join(
            f"task '{t}': " + ", ".join(config.tasks[t].contrasts) for t in task_labels if config.tasks[t].contrasts
        )
        paragraphs.append(
            f"**Task activation.** Conditions from each run's events were convolved with {hrf}; the first-level "
            f"general linear model (Friston et al. 1994) included the denoising confounds and a {config.glm.high_pass_s:g} s "
            f"cosine high-pass, with {'AR(1) prewhitening' if config.glm.noise_model == 'ar1' else 'ordinary least squares'}. "
            f"Contrasts: {contrasts}. Runs of the same task and session were combined with fixed effects."
        )
        if any(config.tasks[t].derived_conditions for t in task_labels):
            used.append("etkin")
    ppi_tasks = [t for t in config.ppi.tasks if t in tasks]
    if config.measures.ppi and ppi_tasks:
        used += ["mclaren", "gitelman"]
        deconv = ("after deconvolution to the neuronal level with a parametric empirical Bayes estimator "
                  "(Gitelman et al. 2003)" if config.ppi.deconvolve else "without deconvolution (BOLD-level interaction)")
        paragraphs.append(
            f"**Generalized PPI.** For seeds {', '.join(config.ppi.seeds)} in task(s) {', '.join(ppi_tasks)}, "
            f"psychophysiological interaction terms were formed for every condition {deconv}, with mean-centred "
            "psychological regressors, and entered with all task regressors, the seed and the confounds into one "
            "model (McLaren et al. 2012)"
            + ("; ROI-to-ROI estimates were averaged over both directions." if config.ppi.symmetrize else ".")
        )
    fc_tasks = [t for t in config.connectivity.tasks if t in tasks]
    if config.measures.connectivity and fc_tasks:
        used.append("ledoit")
        paragraphs.append(
            f"**Functional connectivity.** In run(s) of task(s) {', '.join(fc_tasks)}, ROI-to-ROI connectivity was "
            f"estimated as {', '.join(config.connectivity.measures)} (Ledoit-Wolf shrinkage; Ledoit & Wolf 2004)"
            + (f", and seed-to-voxel Fisher-z maps were computed for {', '.join(config.connectivity.seeds)}."
               if config.connectivity.seed_to_voxel else ".")
        )
    if config.measures.dcm and config.dcm.task in tasks:
        used += ["friston_dcm", "stephan", "friston_vl"]
        paragraphs.append(
            f"**Dynamic causal modelling.** A deterministic bilinear DCM (Friston et al. 2003) of regions "
            f"{', '.join(config.dcm.regions)} with inputs {', '.join(config.dcm.inputs)} in task '{config.dcm.task}' "
            "was inverted with variational Laplace (Friston et al. 2007) under SPM12's priors and hemodynamic model "
            "(Stephan et al. 2007); region signals were first eigenvariates."
        )
    paragraphs.append(
        f"**Group level.** Change scores ({config.sessions.followup} minus {config.sessions.baseline}) of the imaging "
        f"measures predicted change in {config.clinical.outcome} with elastic-net regression (Zou & Hastie 2005), "
        "the penalty chosen by leave-one-out cross-validation as in Norbury et al. (2021); out-of-sample performance "
        "was estimated by nested cross-validation with permutation tests (Varoquaux 2018), and DCM parameters were "
        "analysed with Parametric Empirical Bayes (Friston et al. 2016)."
    )
    used += ["zou", "norbury", "varoquaux", "friston_peb"]
    refs = "\n".join(f"- {REFERENCES[key].format(version=__version__)}" for key in dict.fromkeys(used))
    return "# Methods\n\n" + "\n\n".join(paragraphs) + "\n\n## References\n\n" + refs + "\n"
