"""Nipype interface: Parametric Empirical Bayes over the subjects' baseline DCMs.

Reads every included subject's DCM posterior (``*_atlas-*_dcm.json``) of the DCM task at
one session, takes the connectivity parameters with prior variance (A, B, C) to the second
level, and fits the between-subject model [mean, arm, clinical change, arm × change]
(:func:`ketflow.dcm.peb.fit_peb`), followed by Bayesian model reduction over the
second-level parameters (:func:`ketflow.dcm.peb.reduce_peb`) and a leave-one-out
prediction of the clinical change (:func:`ketflow.dcm.peb.peb_leave_one_out`).

Writes ``peb_parameters.tsv`` (one row per covariate and parameter: posterior mean, SD,
90% interval, BMA mean, posterior probability), ``peb.json`` and ``peb.svg``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, Str, TraitedSpec, traits
from scipy.stats import norm

from ..dcm.peb import between_subject_design, fit_peb, peb_leave_one_out, reduce_peb
from ..group.plots import peb_parameter_bars
from ..io.write import write_json, write_text, write_tsv

#: DCM parameter families taken to the second level (connectivity, not hemodynamics).
SECOND_LEVEL_FIELDS = ("A_", "B_", "C_")


def find_dcm(out_dir: Path, subject: str, session: str, task: str) -> Path | None:
    """The DCM result file of a subject, session and task in the participant outputs."""
    matches = sorted(p for p in (out_dir / f"sub-{subject}" / f"ses-{session}" / "func").glob(
        f"sub-{subject}_ses-{session}_task-{task}_*_dcm.json") if "_desc-" not in p.name)
    return matches[0] if matches else None


def load_first_level(paths: list[Path]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(parameter names, qE (N, P), qC (N, P, P), pE (P,), pC (P, P)) of the free connectivity parameters."""
    results = [json.loads(p.read_text()) for p in paths]
    names = results[0]["param_names"]
    for path, result in zip(paths, results):
        if result["param_names"] != names:
            raise ValueError(f"{path}: the DCM differs from {paths[0].name} (parameters {result['param_names']})")
    prior_cov = np.asarray(results[0]["prior_cov"], dtype=float)
    keep = [i for i, n in enumerate(names) if n.startswith(SECOND_LEVEL_FIELDS) and prior_cov[i, i] > 0]
    qE = np.array([np.asarray(r["Ep_vector"], dtype=float)[keep] for r in results])
    qC = np.array([np.asarray(r["Cp"], dtype=float)[np.ix_(keep, keep)] for r in results])
    pE = np.asarray(results[0]["prior_mean"], dtype=float)[keep]
    return [names[i] for i in keep], qE, qC, pE, prior_cov[np.ix_(keep, keep)]


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
        subjects, paths, missing = [], [], []
        for subject in table["subject"]:
            path = find_dcm(Path(inputs.out_dir), subject, inputs.session, inputs.task)
            if path is None:
                missing.append(subject)
            else:
                paths.append(path)
                subjects.append(subject)
        if len(paths) < 3:
            raise ValueError(f"PEB needs DCMs of at least 3 subjects at ses-{inputs.session}; found {len(paths)}")
        rows = table.set_index("subject").loc[subjects]
        names, qE, qC, pE, pC = load_first_level(paths)
        active, control = inputs.arms
        X, columns = between_subject_design(rows[inputs.arm_column].astype(str).to_numpy(), (control, active),
                                            rows[inputs.outcome].astype(float).to_numpy(),
                                            covariate_name=inputs.outcome)
        peb = fit_peb(qE, qC, pE, pC, X)
        reduced = reduce_peb(peb)
        loo = peb_leave_one_out(qE, qC, pE, pC, X[:, :3], column=2)
        sd = np.sqrt(np.clip(np.diag(peb.Cp), 0, None)).reshape(peb.Ep.shape)
        z90 = norm.ppf(0.95)
        records = []
        for k, covariate in enumerate(columns):
            for p, name in enumerate(names):
                records.append({"covariate": covariate, "parameter": name, "posterior_mean": peb.Ep[k, p],
                                "posterior_sd": sd[k, p], "ci90_low": peb.Ep[k, p] - z90 * sd[k, p],
                                "ci90_high": peb.Ep[k, p] + z90 * sd[k, p], "bma_mean": reduced.Ep[k, p],
                                "Pp": reduced.Pp[k, p]})
        cwd = Path(os.getcwd())
        summary = {"F": peb.F, "design_columns": columns, "parameters": names, "subjects": subjects,
                   "subjects_without_dcm": missing, "session": inputs.session, "task": inputs.task,
                   "leave_one_out": {"predicted": loo.predicted_mean.tolist(), "observed": loo.observed.tolist(),
                                     "r": loo.r, "p": loo.p, "variable": inputs.outcome}}
        figure = peb_parameter_bars(reduced.Ep, reduced.Cp, covariate_names=columns, parameter_names=names,
                                    Pp=reduced.Pp)
        import io

        buffer = io.StringIO()
        figure.savefig(buffer, format="svg")
        self._results.update(
            parameters_tsv=str(write_tsv(cwd / "peb_parameters.tsv", pd.DataFrame.from_records(records))),
            result_json=str(write_json(cwd / "peb.json", summary)),
            figure=str(write_text(cwd / "peb.svg", buffer.getvalue())),
        )
        return runtime
