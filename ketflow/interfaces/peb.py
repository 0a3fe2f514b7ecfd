"""Nipype interfaces of group-level DCM: PEB over baseline DCMs, and model comparison.

:class:`FitPEB` reads every included subject's DCM posteriors (``*_atlas-*_dcm.json``) of the
DCM task at one session, combines a subject's runs by Bayesian parameter averaging
(:func:`ketflow.dcm.average.bayesian_parameter_average`), takes the connectivity parameters
with prior variance (A, B, C) to the second level, and fits the between-subject model
[mean, arm, clinical change, arm × change] (:func:`ketflow.dcm.peb.fit_peb`; each subject
under its own first-level prior), followed by Bayesian model reduction over the covariate
effects (:func:`ketflow.dcm.peb.reduce_peb`; the group mean is kept in those models and
scored by a separate reduction over the group-mean parameters) and a leave-one-out
prediction of the clinical change (:func:`ketflow.dcm.peb.peb_leave_one_out`).

Writes ``peb_parameters.tsv`` (one row per covariate and parameter: posterior mean, SD,
90% interval, BMA mean, posterior probability), ``peb.json`` and ``peb.svg``.

:class:`CompareDCMModels` reads the subjects' model-space tables
(``*_desc-modelspace_dcm.tsv``, one per run: each nested model's free energy from
Bayesian model reduction), sums a subject's runs (independent data under one model) and
compares the models over subjects by fixed effects (summed log evidence) and random
effects (Stephan et al. 2009; protected exceedance probabilities, Rigoux et al. 2014;
:func:`ketflow.dcm.compare.group_model_comparison`). Writes ``model_comparison.tsv``
(one row per session and model) and ``model_comparison.json`` (subjects used, missing).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, Str, TraitedSpec, traits
from scipy.stats import norm

from ..dcm.average import bayesian_parameter_average
from ..dcm.compare import group_model_comparison
from ..dcm.peb import between_subject_design, fit_peb, peb_leave_one_out, reduce_peb
from ..group.plots import peb_parameter_bars
from ..io.collect import find_dcm, find_model_spaces
from ..io.write import write_json, write_text, write_tsv
from ..io.svg import figure_to_svg

#: DCM parameter families taken to the second level (connectivity, not hemodynamics).
SECOND_LEVEL_FIELDS = ("A_", "B_", "C_")


def subject_posterior(results: list[dict], source: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One subject's posterior over its runs by Bayesian parameter averaging.

    results : the runs' ``dcm.json`` contents (same model). Returns (E (P,), C (P, P),
    prior mean (P,), prior covariance (P, P)); the prior is the runs' (their average when
    data-dependent priors differ).
    """
    names = results[0]["param_names"]
    if any(r["param_names"] != names for r in results):
        raise ValueError(f"{source}: the runs were fitted with different DCMs")
    qE = np.array([r["Ep_vector"] for r in results], dtype=float)
    qC = np.array([r["Cp"] for r in results], dtype=float)
    pE = np.array([r["prior_mean"] for r in results], dtype=float)
    pC = np.array([r["prior_cov"] for r in results], dtype=float)
    E, C = bayesian_parameter_average(qE, qC, pE, pC)
    return E, C, pE.mean(axis=0), pC.mean(axis=0)


def load_first_level(paths: list[list[Path]]):
    """Second-level inputs from each subject's run files.

    paths : per subject, its runs' ``dcm.json`` files. Runs are combined by Bayesian
    parameter averaging over the whole parameter vector; then the connectivity
    parameters (A, B, C) that are free in some subject are kept.

    Returns (parameter names, qE (N, P), qC (N, P, P), pE (N, P), pC (N, P, P)): each
    subject's posterior and its own first-level prior.
    """
    subjects = [[json.loads(p.read_text()) for p in runs] for runs in paths]
    names = subjects[0][0]["param_names"]
    posts = []
    for runs, files in zip(subjects, paths):
        if runs[0]["param_names"] != names:
            raise ValueError(f"{files[0]}: the DCM differs from {paths[0][0].name} (parameters "
                             f"{runs[0]['param_names']})")
        posts.append(subject_posterior(runs, str(files[0].parent)))
    prior_var = np.array([np.diag(p[3]) for p in posts])
    keep = [i for i, n in enumerate(names) if n.startswith(SECOND_LEVEL_FIELDS) and np.any(prior_var[:, i] > 0)]
    sel = np.ix_(keep, keep)
    qE = np.array([p[0][keep] for p in posts])
    qC = np.array([p[1][sel] for p in posts])
    pE = np.array([p[2][keep] for p in posts])
    pC = np.array([p[3][sel] for p in posts])
    return [names[i] for i in keep], qE, qC, pE, pC


def _shared_or_per_subject(pE: np.ndarray, pC: np.ndarray):
    """The common prior when every subject has the same one (SPM's case), else the per-subject arrays."""
    if np.all(pE == pE[0]) and np.all(pC == pC[0]):
        return pE[0], pC[0]
    return pE, pC


def _subjects_with(table: pd.DataFrame, finder) -> tuple[list[str], list[list[Path]], list[str]]:
    subjects, paths, missing = [], [], []
    for subject in table["subject"]:
        found = finder(subject)
        if found:
            subjects.append(subject)
            paths.append(found)
        else:
            missing.append(subject)
    return subjects, paths, missing


class _FitPEBInputSpec(BaseInterfaceInputSpec):
    out_dir = Str(mandatory=True, desc="participant-level output directory")
    features_tsv = File(exists=True, mandatory=True, desc="group feature table (included subjects)")
    task = Str(mandatory=True, desc="DCM task label")
    session = Str(mandatory=True, desc="session whose DCMs enter PEB (the baseline)")
    arm_column = Str(mandatory=True, desc="arm column of the feature table")
    arms = traits.List(Str, minlen=2, maxlen=2, desc="(active, control) arm labels")
    outcome = Str(mandatory=True, desc="feature-table column of the clinical change")


class _FitPEBOutputSpec(TraitedSpec):
    parameters_tsv = File(exists=True)
    result_json = File(exists=True)
    figure = File(exists=True)


class FitPEB(SimpleInterface):
    """PEB of baseline DCM connectivity on arm, clinical change and their interaction."""

    input_spec = _FitPEBInputSpec
    output_spec = _FitPEBOutputSpec

    def _run_interface(self, runtime):
        inputs = self.inputs
        table = pd.read_csv(inputs.features_tsv, sep="\t", dtype={"subject": str})
        out_dir = Path(inputs.out_dir)
        subjects, paths, missing = _subjects_with(
            table, lambda s: find_dcm(out_dir, s, inputs.session, inputs.task))
        if len(paths) < 3:
            raise ValueError(f"PEB needs DCMs of at least 3 subjects at ses-{inputs.session}; found {len(paths)}")
        rows = table.set_index("subject").loc[subjects]
        names, qE, qC, pE, pC = load_first_level(paths)
        pE, pC = _shared_or_per_subject(pE, pC)
        active, control = inputs.arms
        X, columns = between_subject_design(rows[inputs.arm_column].astype(str).to_numpy(), (control, active),
                                            rows[inputs.outcome].astype(float).to_numpy(),
                                            covariate_name=inputs.outcome)
        peb = fit_peb(qE, qC, pE, pC, X)
        reduced = reduce_peb(peb, search="covariates")
        means = reduce_peb(peb, search="mean")
        Pp = reduced.Pp.copy()
        Pp[0] = means.Pp[0]
        loo = peb_leave_one_out(qE, qC, pE, pC, X[:, :3], column=2)
        sd = np.sqrt(np.clip(np.diag(peb.Cp), 0, None)).reshape(peb.Ep.shape)
        z90 = norm.ppf(0.95)
        records = []
        for k, covariate in enumerate(columns):
            for p, name in enumerate(names):
                records.append({"covariate": covariate, "parameter": name, "posterior_mean": peb.Ep[k, p],
                                "posterior_sd": sd[k, p], "ci90_low": peb.Ep[k, p] - z90 * sd[k, p],
                                "ci90_high": peb.Ep[k, p] + z90 * sd[k, p], "bma_mean": reduced.Ep[k, p],
                                "Pp": Pp[k, p]})
        cwd = Path(os.getcwd())
        summary = {"F": peb.F, "design_columns": columns, "parameters": names, "subjects": subjects,
                   "subjects_without_dcm": missing, "session": inputs.session, "task": inputs.task,
                   "runs_per_subject": [len(p) for p in paths],
                   "run_combination": "Bayesian parameter averaging (Kasess et al. 2010)",
                   "reduction": "greedy BMR over the covariate effects with the group mean kept; Pp of the "
                                "group mean from a separate reduction over the group-mean parameters",
                   "leave_one_out": {"predicted": loo.predicted_mean.tolist(), "observed": loo.observed.tolist(),
                                     "r": loo.r, "p": loo.p, "variable": inputs.outcome}}
        figure = peb_parameter_bars(reduced.Ep, reduced.Cp, covariate_names=columns, parameter_names=names,
                                    Pp=Pp)
        self._results.update(
            parameters_tsv=str(write_tsv(cwd / "peb_parameters.tsv", pd.DataFrame.from_records(records))),
            result_json=str(write_json(cwd / "peb.json", summary)),
            figure=str(write_text(cwd / "peb.svg", figure_to_svg(figure))),
        )
        return runtime


class _CompareInputSpec(BaseInterfaceInputSpec):
    out_dir = Str(mandatory=True, desc="participant-level output directory")
    features_tsv = File(exists=True, mandatory=True, desc="group feature table (its subjects are compared)")
    task = Str(mandatory=True, desc="DCM task label")
    sessions = traits.List(Str, minlen=1, mandatory=True, desc="sessions, each compared separately")


class _CompareOutputSpec(TraitedSpec):
    comparison_tsv = File(exists=True, desc="model_comparison.tsv")
    summary_json = File(exists=True, desc="model_comparison.json")


def read_model_space(paths: list[Path]) -> pd.Series:
    """A subject's log evidence per model (F summed over runs), indexed by model name."""
    tables = [pd.read_csv(p, sep="\t").set_index("model")["F"] for p in paths]
    models = list(tables[0].index)
    for path, t in zip(paths, tables):
        if list(t.index) != models:
            raise ValueError(f"{path}: models {list(t.index)} differ from {paths[0].name} ({models})")
    return sum(tables)


class CompareDCMModels(SimpleInterface):
    """Fixed- and random-effects comparison of the configured DCM model space over subjects."""

    input_spec = _CompareInputSpec
    output_spec = _CompareOutputSpec

    def _run_interface(self, runtime):
        inputs = self.inputs
        table = pd.read_csv(inputs.features_tsv, sep="\t", dtype={"subject": str})
        out_dir = Path(inputs.out_dir)
        frames, summary = [], {"task": inputs.task, "sessions": {}}
        for session in inputs.sessions:
            subjects, paths, missing = _subjects_with(
                table, lambda s, ses=session: find_model_spaces(out_dir, s, ses, inputs.task))
            if len(subjects) < 2:
                raise ValueError(f"model comparison needs the model-space tables of at least 2 subjects at "
                                 f"ses-{session}; found {len(subjects)} (is dcm.model_space configured?)")
            evidence = [read_model_space(p) for p in paths]
            models = list(evidence[0].index)
            for subject, ev in zip(subjects, evidence):
                if list(ev.index) != models:
                    raise ValueError(f"sub-{subject} ses-{session}: model space {list(ev.index)} differs from "
                                     f"{models}")
            F = np.array([ev.to_numpy() for ev in evidence])
            result = group_model_comparison(F, models, subjects)
            result.insert(0, "session", session)
            frames.append(result)
            summary["sessions"][session] = {"subjects": subjects, "subjects_without_model_space": missing,
                                            "runs_per_subject": [len(p) for p in paths]}
        cwd = Path(os.getcwd())
        self._results.update(
            comparison_tsv=str(write_tsv(cwd / "model_comparison.tsv", pd.concat(frames, ignore_index=True))),
            summary_json=str(write_json(cwd / "model_comparison.json", summary)),
        )
        return runtime
