"""Nipype interfaces of group-level DCM: PEB over the DCMs, and model comparison.

:class:`FitPEB` (baseline) and :class:`FitLongitudinalPEB` read every included subject's DCM
posteriors (``*_atlas-*_dcm.json``) of the DCM task, combine a subject's runs of a session by
Bayesian parameter averaging (:func:`ketflow.dcm.average.bayesian_parameter_average`), take the
parameters of the configured fields with prior variance to the second level
(:func:`ketflow.dcm.peb.select_parameters`), and fit the between-subject design [mean, arm,
clinical, arm × clinical] (``clinical``: the z-scored change in the outcome):
:func:`ketflow.dcm.peb.fit_peb` on the baseline DCMs, with leave-one-out prediction of the
clinical change (:func:`ketflow.dcm.peb_loo.peb_leave_one_out`), or the PEB of PEBs over both
sessions (:func:`ketflow.dcm.peb_longitudinal.fit_longitudinal_peb`). Then second-level BMR/BMA,
the configured contrasts and family comparisons (:func:`ketflow.dcm.peb_tables.analyse_peb`).

Each writes ``parameters.tsv`` (one row per effect × parameter), ``contrasts.tsv``,
``families.tsv`` and ``familymodels.tsv`` (the family comparison and its model space),
``predictions.tsv`` (baseline: leave-one-out), ``summary.json``, ``sidecar.json`` (the model, the
design and the counts, for every table's JSON sidecar) and ``figure.svg``.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, Str, TraitedSpec, traits

from ..dcm.average import bayesian_parameter_average
from ..dcm.compare import group_model_comparison
from ..dcm.labels import readable_parameter_names
from ..dcm.peb import between_subject_design, check_design, fit_peb, select_parameters
from ..dcm.peb_effects import WITHIN_COLUMNS, EffectGrid
from ..dcm.peb_longitudinal import fit_longitudinal_peb
from ..dcm.peb_loo import peb_leave_one_out
from ..dcm.peb_tables import analyse_peb, check_specification
from ..group.plots import peb_parameter_bars
from ..io.collect import find_dcm, find_model_spaces
from ..io.write import write_json, write_text, write_tsv
from ..io.svg import figure_to_svg

#: The between-subject design's clinical column (the z-scored change in clinical.outcome).
CLINICAL = "clinical"


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


@dataclass(frozen=True)
class SecondLevelInputs:
    """The DCM posteriors that enter PEB.

    names : readable names of the P second-level parameters; labels : their labels in the DCM
    vector; qE (N, S, P), qC (N, S, P, P), pE (N, S, P), pC (N, S, P, P): each subject's
    posterior and prior at each of S sessions; F (N, S): free energies (summed over runs).
    """

    names: list
    labels: list
    qE: np.ndarray
    qC: np.ndarray
    pE: np.ndarray
    pC: np.ndarray
    F: np.ndarray


def load_first_level(paths: list[list[list[Path]]], fields=("A", "B", "C")) -> SecondLevelInputs:
    """Second-level inputs from each subject's run files at each session.

    paths : per subject, per session, its runs' ``dcm.json`` files. Runs are combined by Bayesian
    parameter averaging over the whole parameter vector; then the parameters of ``fields`` that
    are free (SPM's threshold) in some subject and session are kept.
    """
    records = [[[json.loads(p.read_text()) for p in runs] for runs in subject] for subject in paths]
    first = records[0][0][0]
    names, regions, inputs = first["param_names"], first["region_names"], first["input_names"]
    posts, F = [], []
    for subject, files in zip(records, paths):
        row, row_F = [], []
        for runs, session_files in zip(subject, files):
            if runs[0]["param_names"] != names or runs[0]["region_names"] != regions:
                raise ValueError(f"{session_files[0]}: the DCM differs from {paths[0][0][0].name} (parameters "
                                 f"{runs[0]['param_names']})")
            row.append(subject_posterior(runs, str(session_files[0].parent)))
            row_F.append(sum(float(r.get("F") or 0.0) for r in runs))
        posts.append(row)
        F.append(row_F)
    prior_var = np.array([np.diag(p[3]) for row in posts for p in row])
    keep = select_parameters(names, prior_var, fields)
    if not keep:
        raise ValueError(f"no DCM parameter of fields {list(fields)} has prior variance")
    sel = np.ix_(keep, keep)
    stack = lambda j, f: np.array([[f(p[j]) for p in row] for row in posts])  # noqa: E731
    labels = [names[i] for i in keep]
    return SecondLevelInputs(names=readable_parameter_names(labels, regions, inputs), labels=labels,
                             qE=stack(0, lambda v: v[keep]), qC=stack(1, lambda m: m[sel]),
                             pE=stack(2, lambda v: v[keep]), pC=stack(3, lambda m: m[sel]), F=np.array(F))


def second_level_parameters(dcm_json: Path, fields=("A", "B", "C")) -> list[str]:
    """Readable names of the parameters one DCM result file would take to the second level."""
    record = json.loads(Path(dcm_json).read_text())
    keep = select_parameters(record["param_names"], np.diag(np.asarray(record["prior_cov"], dtype=float)), fields)
    return readable_parameter_names([record["param_names"][i] for i in keep], record["region_names"],
                                    record["input_names"])


def check_peb_specification(dcm_json: Path, fields, between_columns, longitudinal: bool, contrasts: list[dict],
                            families: list[dict]) -> None:
    """ValueError naming the configuration key when a contrast or family of the ``peb`` section names an
    effect or a parameter that the PEB of ``dcm_json``'s model (its parameters of ``fields``) lacks."""
    grid = EffectGrid(between=tuple(between_columns), within=WITHIN_COLUMNS if longitudinal else ("mean",),
                      parameters=tuple(second_level_parameters(dcm_json, fields)))
    check_specification(grid, contrasts, families, key="peb")


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


def peb_design(rows: pd.DataFrame, arm_column: str, arms, outcome: str) -> tuple[np.ndarray, list[str]]:
    """[mean, arm, clinical, arm:clinical] of the included subjects (arms: (active, control))."""
    active, control = arms
    X, columns = between_subject_design(rows[arm_column].astype(str).to_numpy(), (control, active),
                                        rows[outcome].astype(float).to_numpy(), covariate_name=CLINICAL)
    return check_design(X, columns), columns


class _PEBInputSpec(BaseInterfaceInputSpec):
    out_dir = Str(mandatory=True, desc="participant-level output directory")
    features_tsv = File(exists=True, mandatory=True, desc="table of the included subjects (subject, arm, outcome)")
    task = Str(mandatory=True, desc="DCM task label")
    sessions = traits.List(Str, minlen=1, maxlen=2, mandatory=True,
                           desc="the baseline session, or (baseline, follow-up) for the longitudinal PEB")
    arm_column = Str(mandatory=True, desc="arm column of the feature table")
    arms = traits.List(Str, minlen=2, maxlen=2, desc="(active, control) arm labels")
    outcome = Str(mandatory=True, desc="feature-table column of the clinical change")
    settings_json = File(exists=True, mandatory=True, desc="the peb configuration section (JSON)")


class _PEBOutputSpec(TraitedSpec):
    parameters_tsv = File(exists=True)
    contrasts_tsv = File(exists=True)
    families_tsv = File(exists=True)
    models_tsv = File(exists=True)
    predictions_tsv = File(desc="leave-one-out predictions (baseline PEB with peb.leave_one_out)")
    summary_json = File(exists=True)
    sidecar_json = File(exists=True, desc="model, design and counts for the tables' sidecars")
    figure = File(exists=True)


def _spec(settings: dict, analysis: str) -> tuple[list[dict], list[dict]]:
    contrasts = [c for c in settings.get("contrasts", []) if c.get("analysis", "longitudinal") == analysis]
    return contrasts, list(settings.get("families", []))


class _PEBBase(SimpleInterface):
    input_spec = _PEBInputSpec
    output_spec = _PEBOutputSpec
    analysis = ""

    def _inputs(self):
        inputs = self.inputs
        table = pd.read_csv(inputs.features_tsv, sep="\t", dtype={"subject": str})
        out_dir = Path(inputs.out_dir)

        def every_session(subject):
            found = [find_dcm(out_dir, subject, session, inputs.task) for session in inputs.sessions]
            return found if all(found) else []

        subjects, paths, missing = _subjects_with(table, every_session)
        settings = json.loads(Path(inputs.settings_json).read_text())
        data = load_first_level(paths, tuple(settings["fields"]))
        rows = table.set_index("subject").loc[subjects]
        X, columns = peb_design(rows, inputs.arm_column, inputs.arms, inputs.outcome)
        return subjects, paths, missing, settings, data, rows, X, columns

    def _write(self, tables, grid, summary, sidecar) -> None:
        """The tables, summary, sidecar fields and the figure (BMA per effect, 90% intervals)."""
        cwd = Path(os.getcwd())
        shape = (len(grid.effects), len(grid.parameters))
        fig = peb_parameter_bars(tables.reduction.Ep.reshape(shape), tables.reduction.Cp,
                                 covariate_names=grid.effects, parameter_names=list(grid.parameters),
                                 Pp=tables.reduction.Pp.reshape(shape))
        self._results.update(
            parameters_tsv=str(write_tsv(cwd / "parameters.tsv", tables.parameters)),
            contrasts_tsv=str(write_tsv(cwd / "contrasts.tsv", tables.contrasts)),
            families_tsv=str(write_tsv(cwd / "families.tsv", tables.families)),
            models_tsv=str(write_tsv(cwd / "familymodels.tsv", tables.models)),
            summary_json=str(write_json(cwd / "summary.json", summary)),
            sidecar_json=str(write_json(cwd / "sidecar.json", sidecar)),
            figure=str(write_text(cwd / "figure.svg", figure_to_svg(fig))),
        )


class FitPEB(_PEBBase):
    """PEB of the baseline DCMs on [mean, arm, clinical, arm:clinical], BMR/BMA, contrasts,
    families and leave-one-out prediction of the clinical change."""

    analysis = "baseline"

    def _run_interface(self, runtime):
        subjects, paths, missing, settings, data, rows, X, columns = self._inputs()
        qE, qC = data.qE[:, 0], data.qC[:, 0]
        pE, pC = _shared_or_per_subject(data.pE[:, 0], data.pC[:, 0])
        peb = fit_peb(qE, qC, pE, pC, X, method=settings["method"], first_level_F=data.F[:, 0])
        grid = EffectGrid(between=tuple(columns), within=("mean",), parameters=tuple(data.names))
        contrasts, families = _spec(settings, "baseline")
        tables = analyse_peb(peb, grid, greedy=settings["greedy"], contrasts=contrasts, families=families)
        summary, sidecar = _describe(self.inputs, self.analysis, peb, tables, data, subjects, missing, paths,
                                     settings, X, columns, rows)
        if settings.get("leave_one_out", True):
            loo_columns = [0, 1, 2]  # the predicted clinical column must not enter an interaction
            loo = peb_leave_one_out(qE, qC, pE, pC, X[:, loo_columns], column=2, method=settings["method"],
                                    first_level_F=data.F[:, 0])
            predictions = pd.DataFrame({"subject": subjects, "observed": loo.observed,
                                        "predicted_mean": loo.predicted_mean, "predicted_sd": loo.predicted_sd})
            summary["leave_one_out"] = {"variable": self.inputs.outcome, "design_columns": columns[:3],
                                        "r": loo.r, "T": loo.T, "df": loo.df, "p": loo.p,
                                        "method": settings["method"]}
            self._results["predictions_tsv"] = str(write_tsv(Path(os.getcwd()) / "predictions.tsv", predictions))
        self._write(tables, grid, summary, sidecar)
        return runtime


class FitLongitudinalPEB(_PEBBase):
    """PEB of PEBs over both sessions' DCMs: session, arm and clinical effects on the session mean
    and on the change, BMR/BMA, contrasts and families."""

    analysis = "longitudinal"

    def _run_interface(self, runtime):
        subjects, paths, missing, settings, data, rows, X, columns = self._inputs()
        if data.qE.shape[1] != 2:
            raise ValueError("the longitudinal PEB needs two sessions")
        fit = fit_longitudinal_peb(data.qE, data.qC, data.pE, data.pC, X, between_columns=columns,
                                   parameters=data.names, first_level_F=data.F, method=settings["method"],
                                   within=settings.get("within", "saturated"))
        contrasts, families = _spec(settings, "longitudinal")
        tables = analyse_peb(fit.between, fit.grid, greedy=settings["greedy"], contrasts=contrasts, families=families)
        summary, sidecar = _describe(self.inputs, self.analysis, fit.between, tables, data, subjects, missing, paths,
                                     settings, X, columns, rows)
        summary["longitudinal"] = fit.settings
        sidecar["WithinSubjectDesign"] = {"columns": ["mean", "session"], "coding": {"pre": -0.5, "post": 0.5}}
        self._write(tables, fit.grid, summary, sidecar)
        return runtime


def _describe(inputs, analysis, peb, tables, data, subjects, missing, paths, settings, X, columns, rows):
    """(summary.json, sidecar fields) of one PEB analysis."""
    n_runs = [[len(runs) for runs in subject] for subject in paths]
    counts = {str(k): int(v) for k, v in rows[inputs.arm_column].astype(str).value_counts().sort_index().items()}
    summary = {"analysis": analysis, "F": peb.F, "Eh": np.atleast_1d(peb.Eh).tolist(),
               "n_iterations": peb.n_iterations, "converged": peb.converged, "design_columns": columns,
               "design": X.tolist(), "parameters": data.names, "parameter_labels": data.labels,
               "subjects": subjects, "subjects_without_dcm": missing, "subjects_per_arm": counts,
               "sessions": list(inputs.sessions), "task": inputs.task, "runs_per_subject": n_runs,
               "run_combination": "Bayesian parameter averaging (Kasess et al. 2010)",
               "settings": {k: settings[k] for k in ("fields", "method", "greedy", "within") if k in settings},
               "reduction": {"searched": tables.reduction.searched.tolist(),
                             "steps": [list(map(int, s)) for s in tables.reduction.steps]}}
    sidecar = {"Model": f"Parametric Empirical Bayes ({analysis}) over DCMs of task-{inputs.task} "
                        "(Friston et al. 2016)",
               "Method": f"{settings['method']} (ketflow.dcm.peb)", "SecondLevelReduction": settings["greedy"],
               "DesignColumns": columns, "ClinicalColumn": f"z-scored {inputs.outcome}",
               "ArmCoding": {inputs.arms[0]: 0.5, inputs.arms[1]: -0.5, "note": "then mean-centred"},
               "Sessions": list(inputs.sessions), "Parameters": data.names, "NSubjects": len(subjects),
               "NSubjectsPerArm": counts, "NSubjectsWithoutDCM": len(missing)}
    return summary, sidecar


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
