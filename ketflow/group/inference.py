"""The trial's questions on every circuit measure: arm × session, within-arm change, baseline.

For one measure *family* (``activation``, ``ppi`` (gPPI), ``fc`` (resting FC), ``dcm``) and one
*model* (``ancova`` or ``lmm``, :mod:`ketflow.group.trial_models`), every measure of the family
in the feature table (:mod:`ketflow.group.features`: ``<measure>__ses-<label>`` columns, the
arm, the covariates) gets four effects — arm × session (follow-up − baseline change, active
minus control arm), the change within each arm, and the baseline difference between arms —
with estimates, standard errors, 95% confidence intervals, t tests, effect sizes and two
corrections over the family's *a-priori* measures (default: all of them):

* the false discovery rate of Benjamini & Hochberg (1995, J R Stat Soc B 57:289), with
  statsmodels' ``multipletests(method="fdr_bh")``, per effect;
* the family-wise error rate by the max-statistic permutation test (Nichols & Holmes 2002,
  Hum Brain Mapp 15:1), per effect, with Freedman–Lane residual rearrangements (Winkler et al.
  2014, NeuroImage 92:381): subjects permuted for the between-arm effects, their signs flipped
  for the within-arm changes (:mod:`ketflow.group.freedman_lane`).  The statistics are converted
  to z before the maximum is taken, so measures with different degrees of freedom (missing
  data) weigh alike.

Missing data as in the feature table: each measure uses its complete cases (ANCOVA: subjects
with both sessions; the mixed model: every observation, a single-session subject included);
subjects without an arm in ``arms`` or with a missing covariate are left out of the whole
analysis; the counts are reported per measure and per analysis.  A measure with fewer than
``min_per_arm`` subjects with both sessions in an arm, or whose design is rank-deficient, is
listed but not tested.

An analysis that cannot run raises :class:`InferenceError`, whose ``setting`` names the
setting of :class:`InferenceSettings` (or ``apriori``/``families``) concerned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests

from .features import session_column
from .freedman_lane import contrast_t, family_max, induced, max_statistic_p, rearrangements, t_to_z
from .trial_models import EFFECTS, ancova_contrasts, fit_ancova, fit_lmm, lmm_contrasts, morris_factor, \
    pooled_baseline_sd

__all__ = ["FAMILIES", "FAMILY_NAMES", "MODELS", "RESULT_COLUMNS", "InferenceError", "InferenceSettings",
           "AnalysisData", "InferenceResult", "PermutationTests", "family_measures", "prepare_analysis",
           "run_analysis", "permutation_tests", "model_formula"]

#: Measure families (the text before the first ``_`` of a measure name) and their display names.
FAMILIES = ("activation", "ppi", "fc", "dcm", "betaseries")
FAMILY_NAMES = {"activation": "activation", "ppi": "gPPI", "fc": "resting-state FC", "dcm": "DCM",
                "betaseries": "beta-series connectivity"}
MODELS = ("ancova", "lmm")

#: Columns of the result table, with their descriptions (the TSV sidecar's column entries).
RESULT_COLUMNS = {
    "measure": "measure name (feature-table column without the session suffix)",
    "task": "task the measure comes from",
    "effect": "arm_by_session (change in the active arm minus change in the control arm), within_arm_change "
              "(follow-up minus baseline within one arm) or baseline_difference (active minus control at baseline)",
    "arm": "the arm of a within-arm change, or 'active - control' for a between-arm effect",
    "estimate": "the effect in the measure's units",
    "se": "standard error of the estimate",
    "ci_low": "lower bound of the 95% confidence interval (t distribution, df)",
    "ci_high": "upper bound of the 95% confidence interval",
    "t": "t statistic (estimate / se)",
    "df": "degrees of freedom of the t test",
    "p": "two-sided p-value, uncorrected",
    "q_fdr": "Benjamini-Hochberg adjusted p-value over the family's tested a-priori measures (per effect)",
    "p_fwe": "max-statistic permutation p-value, family-wise over the family's tested a-priori measures "
             "(per effect)",
    "significant_fdr": "q_fdr at or below the FDR level",
    "significant_fwe": "p_fwe at or below the FWE level",
    "effect_size": "estimate / pooled within-arm baseline SD x Morris (2008) small-sample factor",
    "effect_size_ci_low": "the confidence interval's lower bound on the effect-size scale",
    "effect_size_ci_high": "the confidence interval's upper bound on the effect-size scale",
    "baseline_sd": "baseline SD pooled within arms (the effect size's standardiser)",
    "n_active": "subjects of the active arm in the fit",
    "n_control": "subjects of the control arm in the fit",
    "n_observations": "observations in the fit (ANCOVA: subjects; mixed model: subject-sessions)",
    "apriori": "true for the a-priori measures the corrections are over",
    "note": "why a measure was not tested, or a caveat of its fit",
}


class InferenceError(ValueError):
    """An analysis that cannot run; ``setting`` is the setting concerned (``apriori``,
    ``families``, ``arms``, ``covariates`` or ``min_per_arm``)."""

    def __init__(self, setting: str, message: str):
        super().__init__(message)
        self.setting = setting


@dataclass(frozen=True)
class InferenceSettings:
    """Settings of the trial inference.

    arm_column : feature-table column of the treatment arm.
    arms : (active, control) arm labels (``clinical.arms``: exactly two).
    baseline, followup : session labels.
    covariates : feature-table covariate columns in every model.
    min_per_arm : fewest subjects with both sessions per arm for a measure to be tested.
    n_permutations : random rearrangements of the FWE test (0: no FWE p-values).
    fdr_level, fwe_level : levels of the ``significant_*`` flags.
    seed : seed of the rearrangements.
    """

    arm_column: str
    arms: tuple[str, ...]
    baseline: str = "pre"
    followup: str = "post"
    covariates: tuple[str, ...] = ()
    min_per_arm: int = 3
    n_permutations: int = 5000
    fdr_level: float = 0.05
    fwe_level: float = 0.05
    seed: int = 0


@dataclass(frozen=True)
class AnalysisData:
    """One family × model analysis, ready to run (:func:`prepare_analysis`).

    subjects : (N,) labels of the subjects with an arm and every covariate; active : (N,) 1/0;
    covariates : (N, q); measures : (M,) names; tasks : (M,); pre, post : (M, N), NaN where
    missing; apriori : (M,) bool; untestable : measure -> reason; left_out : subject -> reason.
    """

    family: str
    model: str
    settings: InferenceSettings
    subjects: np.ndarray
    active: np.ndarray
    covariates: np.ndarray
    measures: list
    tasks: list
    pre: np.ndarray
    post: np.ndarray
    apriori: np.ndarray
    untestable: dict = field(default_factory=dict)
    left_out: dict = field(default_factory=dict)


@dataclass(frozen=True)
class InferenceResult:
    """table : one row per measure and effect (:data:`RESULT_COLUMNS`); metadata : the sidecar."""

    table: pd.DataFrame
    metadata: dict


def family_measures(dictionary: Mapping[str, Mapping], family: str, baseline: str) -> list[str]:
    """Measures of ``family`` in a feature table's data dictionary, in its column order."""
    suffix = session_column("", baseline)
    return [col[: -len(suffix)] for col, meta in dictionary.items()
            if meta.get("role") == "imaging_session" and meta.get("session") == baseline
            and meta.get("family") == family]


def model_formula(model: str, covariates: Sequence[str]) -> str:
    """The model's formula in words of the output (``covariates`` appended)."""
    extra = "".join(f" + {c}" for c in covariates)
    if model == "ancova":
        return f"post ~ pre + arm{extra}"
    return f"value ~ session * arm{extra} + (1 | subject)"


def _subjects(table: pd.DataFrame, settings: InferenceSettings) -> tuple[pd.DataFrame, dict]:
    """(rows with an arm of ``arms`` and every covariate, {left-out subject: reason})."""
    arm = table[settings.arm_column].astype(object)
    covariates = table[list(settings.covariates)].apply(pd.to_numeric, errors="coerce")
    left_out = {}
    keep = np.ones(len(table), bool)
    for i, subject in enumerate(table["subject"].astype(str)):
        if pd.isna(arm.iloc[i]) or str(arm.iloc[i]) not in settings.arms:
            left_out[subject] = f"arm {arm.iloc[i]!r} is not one of {list(settings.arms)}"
        elif covariates.iloc[i].isna().any():
            left_out[subject] = "missing covariate(s) " + ", ".join(covariates.columns[covariates.iloc[i].isna()])
        else:
            continue
        keep[i] = False
    return table.loc[keep].reset_index(drop=True), left_out


def _check_design(active: np.ndarray, covariates: np.ndarray, settings: InferenceSettings) -> None:
    """The arm and covariates must be estimable on the analysis' subjects."""
    design = np.column_stack([np.ones_like(active), active])
    if np.linalg.matrix_rank(design) < 2:
        raise InferenceError("arms", f"every included subject is in the same arm; the analysis needs subjects "
                                     f"of both {list(settings.arms)}")
    for j, name in enumerate(settings.covariates):
        design = np.column_stack([design, covariates[:, j]])
        if np.linalg.matrix_rank(design) < design.shape[1]:
            raise InferenceError("covariates", f"the design [intercept, arm, covariates] is rank-deficient on the "
                                               f"{len(active)} subjects: covariate {name!r} is constant or a linear "
                                               "combination of the arm and the covariates before it")


def _untestable_reason(model: str, pre: np.ndarray, post: np.ndarray, active: np.ndarray, covariates: np.ndarray,
                       settings: InferenceSettings) -> str | None:
    """Why one measure cannot be tested by ``model`` (None if it can)."""
    pairs = np.isfinite(pre) & np.isfinite(post)
    counts = {arm: int((pairs & (active == code)).sum()) for arm, code in zip(settings.arms, (1.0, 0.0))}
    if min(counts.values()) < settings.min_per_arm:
        have = ", ".join(f"{arm}: {n}" for arm, n in counts.items())
        return (f"fewer than min_per_arm = {settings.min_per_arm} subjects with both sessions in an arm ({have})")
    ones, z = np.ones(int(pairs.sum())), covariates[pairs]
    if model == "ancova":
        design = np.column_stack([ones, active[pairs], pre[pairs], z])
    else:
        design = np.column_stack([ones, active[pairs], z])
    if np.linalg.matrix_rank(design) < design.shape[1]:
        what = "baseline values, arm and covariates" if model == "ancova" else "arm and covariates"
        return f"rank-deficient design ({what} collinear, e.g. a constant baseline) on its {int(pairs.sum())} subjects"
    if design.shape[0] - design.shape[1] < 1 or np.ptp(post[pairs] - pre[pairs]) == 0:
        return "no residual degrees of freedom or no variation in the change"
    return None


def prepare_analysis(table: pd.DataFrame, dictionary: Mapping[str, Mapping], family: str, model: str,
                     settings: InferenceSettings, apriori: Sequence[str] | None = None) -> AnalysisData:
    """Select the measures and subjects of one analysis and decide what can be tested.

    apriori : the family's a-priori measures (None: every measure of the family).
    Raises :class:`InferenceError` when the analysis cannot run at all: not two arms, no
    measure of the family, an a-priori name that is not a measure of the family, a
    rank-deficient arm/covariate design, or no a-priori measure that can be tested.
    """
    if family not in FAMILIES or model not in MODELS:
        raise InferenceError("families", f"unknown family {family!r} or model {model!r}; families {list(FAMILIES)}, "
                                         f"models {list(MODELS)}")
    if len(settings.arms) != 2:
        raise InferenceError("arms", f"the trial analyses need exactly two arms, got {list(settings.arms)}")
    measures = family_measures(dictionary, family, settings.baseline)
    if not measures:
        raise InferenceError("families", f"the feature table has no {FAMILY_NAMES[family]} ({family}_*) measures")
    if apriori is not None:
        unknown = [name for name in apriori if name not in measures]
        if unknown:
            raise InferenceError("apriori", f"names measure(s) that the feature table does not have: {unknown}; "
                                            f"{family} measures are e.g. {measures[:3]}")
    rows, left_out = _subjects(table, settings)
    active = (rows[settings.arm_column].astype(str) == settings.arms[0]).to_numpy(dtype=float)
    covariates = rows[list(settings.covariates)].apply(pd.to_numeric).to_numpy(dtype=float).reshape(len(rows), -1)
    _check_design(active, covariates, settings)

    def values(session: str) -> np.ndarray:
        return np.vstack([pd.to_numeric(rows[session_column(m, session)], errors="coerce").to_numpy(dtype=float)
                          for m in measures])

    pre, post = values(settings.baseline), values(settings.followup)
    wanted = set(measures if apriori is None else apriori)
    untestable = {}
    for i, name in enumerate(measures):
        reason = _untestable_reason(model, pre[i], post[i], active, covariates, settings)
        if reason:
            untestable[name] = reason
    testable = [m for m in wanted if m not in untestable]
    if not testable:
        reasons = sorted(set(untestable[m] for m in wanted))
        setting = "min_per_arm" if all(r.startswith("fewer than") for r in reasons) else "covariates"
        raise InferenceError(setting, f"no a-priori {family} measure can be tested: " + "; ".join(reasons[:3]))
    tasks = [dictionary[session_column(m, settings.baseline)].get("task") for m in measures]
    return AnalysisData(family=family, model=model, settings=settings, subjects=rows["subject"].astype(str).to_numpy(),
                        active=active, covariates=covariates, measures=measures, tasks=tasks, pre=pre, post=post,
                        apriori=np.array([m in wanted for m in measures]), untestable=untestable, left_out=left_out)


def _parametric(data: AnalysisData, i: int) -> tuple[dict, dict, str]:
    """(estimates by effect key, per-measure counts and baseline SD, note) of measure ``i``."""
    pre, post, active, z = data.pre[i], data.post[i], data.active, data.covariates
    if data.model == "ancova":
        pairs = np.isfinite(pre) & np.isfinite(post)
        estimates = fit_ancova(pre[pairs], post[pairs], active[pairs], z[pairs])
        counts = {"n_active": int(active[pairs].sum()), "n_control": int((1 - active[pairs]).sum()),
                  "n_observations": int(pairs.sum())}
        sd_sample, note = pairs, ""
    else:
        present = np.isfinite(np.stack([pre, post]))  # (2, N)
        session, subject = np.nonzero(present)
        values = np.where(session == 0, pre[subject], post[subject])
        fit = fit_lmm(subject, session.astype(float), values, active[subject], z[subject])
        estimates = fit.estimates
        seen = present.any(axis=0)
        counts = {"n_active": int(active[seen].sum()), "n_control": int((1 - active[seen]).sum()),
                  "n_observations": int(present.sum())}
        single = int((present.sum(axis=0) == 1).sum())
        notes = []
        if single:
            notes.append(f"{single} single-session subject(s) in the mixed model; its FWE p-value is that of "
                         "the subjects with both sessions")
        if not fit.converged:
            notes.append("the REML optimiser did not report convergence")
        if fit.subject_variance <= 1e-8 * max(fit.residual_variance, 1e-300):
            notes.append("REML subject variance on the boundary (0)")
        sd_sample, note = np.isfinite(pre), "; ".join(notes)
    counts["baseline_sd"] = pooled_baseline_sd(pre[sd_sample], active[sd_sample])
    counts["_n_sd"] = int(sd_sample.sum())
    return estimates, counts, note


@dataclass(frozen=True)
class PermutationTests:
    """Closed-form tests of the family's measures (:func:`permutation_tests`).

    measures : indices of the measures, in the order of the arrays; by effect key: ``t`` and
    ``df`` of the ordinary (unpermuted) fits and ``p_fwe`` (NaN without permutations).
    """

    measures: list
    t: dict
    df: dict
    p_fwe: dict


def permutation_tests(data: AnalysisData, tested: Sequence[int]) -> PermutationTests:
    """Closed-form statistics and max-statistic FWE p-values of the measures ``tested``.

    tested : indices of the measures forming the family (testable, a priori).  Measures with
    the same subjects (both sessions) are rearranged together; see :mod:`ketflow.group.freedman_lane`.
    The statistics are those of the fits on the subjects with both sessions (for the mixed model,
    the same as statsmodels' fit when every subject has both sessions).
    """
    settings = data.settings
    builder = ancova_contrasts if data.model == "ancova" else lmm_contrasts
    pairs = np.isfinite(data.pre) & np.isfinite(data.post)
    groups: dict[bytes, list[int]] = {}
    for i in tested:
        groups.setdefault(pairs[i].tobytes(), []).append(i)
    order = [i for members in groups.values() for i in members]
    result = PermutationTests(order, {}, {}, {})
    for effect in EFFECTS:
        transforms = rearrangements(effect.kind, len(data.subjects), settings.n_permutations, settings.seed)
        observed, blocks, ts, dfs = [], [], [], []
        for members in groups.values():
            subset = np.flatnonzero(pairs[members[0]])
            contrast = builder(data.pre[np.ix_(members, subset)], data.post[np.ix_(members, subset)],
                               data.active[subset], data.covariates[subset])[effect.key]
            t = contrast_t(contrast, effect.kind, induced(effect.kind, transforms, subset))
            z = t_to_z(t, contrast.df[:, None])
            ts.append(t[:, 0])
            dfs.append(contrast.df)
            observed.append(z[:, 0])
            blocks.append(z[:, 1:])
        result.t[effect.key] = np.concatenate(ts) if ts else np.zeros(0)
        result.df[effect.key] = np.concatenate(dfs) if dfs else np.zeros(0)
        result.p_fwe[effect.key] = (max_statistic_p(np.concatenate(observed), family_max(blocks))
                                    if settings.n_permutations > 0 and order else np.full(len(order), np.nan))
    return result


def run_analysis(data: AnalysisData) -> InferenceResult:
    """Fit every measure of a prepared analysis, correct over its a-priori measures, tabulate."""
    settings = data.settings
    active_arm, control_arm = settings.arms[0], settings.arms[1]
    arm_label = {None: f"{active_arm} - {control_arm}", "active": active_arm, "control": control_arm}
    rows, fits, untestable = [], {}, dict(data.untestable)
    for i, name in enumerate(data.measures):
        if name in untestable:
            continue
        try:
            fits[i] = _parametric(data, i)
        except (np.linalg.LinAlgError, ValueError) as err:
            untestable[name] = f"the fit failed: {err}"
    tested = [i for i in fits if data.apriori[i]]
    tests = permutation_tests(data, tested)
    fwe = {key: dict(zip(tests.measures, p)) for key, p in tests.p_fwe.items()}
    q = {}
    for effect in EFFECTS:
        ps = np.array([fits[i][0][effect.key].p for i in tested])
        finite = np.isfinite(ps)
        adjusted = np.full(len(ps), np.nan)
        if finite.any():
            adjusted[finite] = multipletests(ps[finite], alpha=settings.fdr_level, method="fdr_bh")[1]
        q[effect.key] = dict(zip(tested, adjusted))
    for effect in EFFECTS:
        for i, name in enumerate(data.measures):
            row = {"measure": name, "task": data.tasks[i], "effect": effect.name, "arm": arm_label[effect.arm],
                   "apriori": bool(data.apriori[i])}
            if i not in fits:
                rows.append(row | {"note": "not tested: " + untestable[name]})
                continue
            estimates, counts, note = fits[i]
            est = estimates[effect.key]
            scale = morris_factor(counts["_n_sd"]) / counts["baseline_sd"] if counts["baseline_sd"] > 0 else np.nan
            row |= {"estimate": est.estimate, "se": est.se, "ci_low": est.ci_low, "ci_high": est.ci_high,
                    "t": est.t, "df": est.df, "p": est.p, "q_fdr": q[effect.key].get(i, np.nan),
                    "p_fwe": fwe.get(effect.key, {}).get(i, np.nan),
                    "effect_size": est.estimate * scale, "effect_size_ci_low": est.ci_low * scale,
                    "effect_size_ci_high": est.ci_high * scale, "baseline_sd": counts["baseline_sd"],
                    **{k: v for k, v in counts.items() if k.startswith("n_")}, "note": note}
            row["significant_fdr"] = bool(row["q_fdr"] <= settings.fdr_level)
            row["significant_fwe"] = bool(row["p_fwe"] <= settings.fwe_level)
            rows.append(row)
    table = pd.DataFrame.from_records(rows).reindex(columns=list(RESULT_COLUMNS))
    return InferenceResult(table=table, metadata=_metadata(data, untestable, len(tested)))


def _session_counts(data: AnalysisData) -> dict:
    """Subjects per arm and session with at least one of the family's measures."""
    out = {}
    for arm, code in zip(data.settings.arms, (1.0, 0.0)):
        members = data.active == code
        out[arm] = {session: int((np.isfinite(values[:, members]).any(axis=0)).sum())
                    for session, values in ((data.settings.baseline, data.pre), (data.settings.followup, data.post))}
    return out


def _metadata(data: AnalysisData, untestable: dict, n_tested: int) -> dict:
    s = data.settings
    model = data.model
    effects = {
        "arm_by_session": f"({s.followup} - {s.baseline}) in {s.arms[0]} minus ({s.followup} - {s.baseline}) in "
                          f"{s.arms[1]}" + (", adjusted for the baseline value" if model == "ancova" else ""),
        "within_arm_change": f"{s.followup} - {s.baseline} within each arm"
                             + (" (change ~ arm + covariates on the ANCOVA's subjects: not adjusted for the "
                                "baseline, which would test the change at the sample's mean baseline, biased by "
                                "regression to the mean)" if model == "ancova" else ""),
        "baseline_difference": f"{s.arms[0]} minus {s.arms[1]} at {s.baseline}"
                               + (" (pre ~ arm + covariates on the ANCOVA's subjects)" if model == "ancova" else ""),
    }
    fit = ("statsmodels OLS of the change on [1, arm, centred baseline, centred covariates] (the same model as "
           "post ~ pre + arm + covariates; arm_by_session), of the change on [1, arm, centred covariates] "
           "(within_arm_change) and of the baseline on [1, arm, centred covariates] (baseline_difference)"
           if model == "ancova" else
           "statsmodels MixedLM, REML, random subject intercept; session 0 = baseline, 1 = follow-up, arm 1 = "
           f"{s.arms[0]}; optimisers L-BFGS, then Powell and Nelder-Mead near the boundary")
    dof = ("OLS residual degrees of freedom" if model == "ancova" else
           "between-within (Schluchter & Elashoff 1990): n_observations - n_subjects - 2 for arm_by_session and "
           "within_arm_change, n_subjects - 2 - n_covariates for baseline_difference")
    return {
        "Description": f"Trial inference on the {FAMILY_NAMES[data.family]} measures ({data.family}_*): "
                       f"{'ANCOVA' if model == 'ancova' else 'linear mixed model'}, one row per measure and effect",
        "Family": data.family,
        "Model": model,
        "Formula": model_formula(model, s.covariates),
        "Fit": fit,
        "DegreesOfFreedom": dof,
        "Effects": effects,
        "ArmCoding": {"active": s.arms[0], "control": s.arms[1]},
        "Sessions": {"baseline": s.baseline, "followup": s.followup},
        "Covariates": list(s.covariates),
        "EffectSize": "estimate / baseline SD pooled within arms (over the fit's subjects with a baseline value) x "
                      "(1 - 3 / (4 (n - 2) - 1)) (Morris 2008, Organ Res Methods 11:364, d_ppc2); its interval is "
                      "the estimate's 95% CI on the same scale",
        "MultipleComparisons": {
            "Family": "the tested a-priori measures of the family, separately for each effect",
            "FDR": {"Method": "Benjamini-Hochberg (statsmodels multipletests fdr_bh)", "Level": s.fdr_level},
            "FWE": {"Method": "max-statistic permutation test (t converted to z), Freedman-Lane residuals "
                              "(Winkler et al. 2014); between-arm effects: subjects permuted; within-arm change: "
                              "subjects' signs flipped" + ("; on the subjects with both sessions"
                                                          if model == "lmm" else ""),
                    "NPermutations": s.n_permutations, "Seed": s.seed, "Level": s.fwe_level},
        },
        "APrioriMeasures": [m for m, a in zip(data.measures, data.apriori) if a],
        "MissingData": ("complete cases per measure: subjects with both sessions" if model == "ancova" else
                        "every observation of a measure (a subject seen at one session contributes it)")
                       + f"; measures with fewer than {s.min_per_arm} subjects with both sessions in an arm are "
                         "not tested",
        "Counts": {
            "SubjectsPerArm": {arm: int((data.active == code).sum()) for arm, code in zip(s.arms, (1.0, 0.0))},
            "SubjectsPerArmAndSession": _session_counts(data),
            "SubjectsLeftOut": data.left_out,
            "Measures": len(data.measures),
            "APriori": int(data.apriori.sum()),
            "Tested": n_tested,
            "NotTested": untestable,
        },
        **{column: description for column, description in RESULT_COLUMNS.items()},
    }
