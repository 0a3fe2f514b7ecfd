"""Power and error rates of the trial inference (ANCOVA, mixed model; uncorrected, FDR, FWE).

Repeated simulated studies (no images): every subject's truth is the image-level simulator's
own draw (``ketflow.simulate.parameters.draw_subject``: its change model ``CHANGE_MODEL`` —
under ketamine amygdala_L -> vmPFC fearful modulation B +0.40 Hz, dACC incongruent -
congruent -1.0 (midazolam -0.2), resting vmPFC - amygdala coupling +0.20; SD of the change
0.12, 0.4, 0.08), measured with Gaussian error per session of the size the image-level
recovery benchmarks measured (defaults below; docs/group.md), on every measure of the packaged
configuration (activation 50, gPPI 135, resting FC 45, DCM 6), via
``ketflow.simulate.measured.measured_study``.  Each study goes through the feature table and
``ketflow.group.inference`` exactly as at the group level, except that the parametric
statistics are the closed-form ones of the permutation engine (equal to statsmodels' fits on
these complete data: tests/test_inference.py; ``--check-statsmodels K`` re-runs K studies
through the statsmodels path and prints the largest difference).

Reported, over ``--studies`` studies per sample size:

* with the simulator's effects (``--effect-scale``, default 1): for every true arm x session
  effect, the rate of detection with the right sign, uncorrected (p < 0.05), FDR (q < 0.05) and
  FWE (p_fwe < 0.05), per model; the same for the true within-arm changes; the family-wise
  error over the families' null measures and the mean false-discovery proportion;
* with no effect (``effect_scale`` 0): the rate of studies with any significant measure in a
  family (family-wise error; under the complete null also the FDR), per family, model, effect
  and correction.

Run (``--quick``: 10 studies, 200 permutations, N = 20)::

    PYTHONPATH=. NIPYPE_NO_ET=1 MPLBACKEND=Agg OMP_NUM_THREADS=1 \\
        python benchmarks/group_inference_power.py --studies 200 --sizes 20 40 --permutations 1000

``--summarise PREFIX`` prints Markdown tables (uncorrected / FDR / FWE rates in each cell) of
the per-study results an earlier run wrote with ``--out PREFIX``.  ``--timing --sizes 40
--permutations 5000`` instead times one analysis per family x model
(statsmodels fits, corrections and 5,000 permutations) and the permutation tests alone.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from ketflow.config import load_config, roi_names
from ketflow.group.features import build_feature_table
from ketflow.group.inference import InferenceSettings, permutation_tests, prepare_analysis, run_analysis
from ketflow.group.trial_models import EFFECTS
from ketflow.simulate.measured import measured_study

ARMS = ("ketamine", "midazolam")
#: Per-session estimation error SD by family (docs/group.md, 40 simulated subjects through the
#: pipeline: DCM B 0.30 Hz, dACC contrast 0.32, Fisher z 0.14; gPPI: docs/group.md, "Trial inference").
ERROR_SD = {"dcm": 0.30, "activation": 0.32, "fc": 0.14, "ppi": 0.86}
#: The simulator's true effects: measure -> sign of the arm x session effect (ketamine - midazolam).
TRUE_ARM_BY_SESSION = {
    "dcm_faces_B_amygdala_L-to-vmPFC_fearful": +1,
    "activation_conflict_incongruent-gt-congruent_dACC": -1,
    "fc_rest_vmPFC-amygdala_L": +1,
    "fc_rest_vmPFC-amygdala_R": +1,
    "ppi_faces_fearful-gt-shapes_amygdala_L-to-vmPFC": +1,
    "ppi_faces_fearful-gt-neutral_amygdala_L-to-vmPFC": +1,
    "ppi_faces_faces-gt-shapes_amygdala_L-to-vmPFC": +1,
}
#: ... and of the within-arm changes (measure, arm key) -> sign.
TRUE_CHANGE = {(m, "within_arm_change_active"): s for m, s in TRUE_ARM_BY_SESSION.items()}
TRUE_CHANGE[("activation_conflict_incongruent-gt-congruent_dACC", "within_arm_change_control")] = -1


def configured_measures(config) -> list[str]:
    """Every measure of the packaged configuration, named as ketflow.io.collect names them."""
    rois = roi_names(config)
    names = [f"activation_{task}_{contrast}_{roi}" for task in config.task_labels("task")
             for contrast in config.tasks[task].contrasts for roi in rois]
    names += [f"ppi_{task}_{contrast}_{seed}-to-{target}" for task in config.ppi.tasks
              for contrast in config.tasks[task].contrasts for seed in config.ppi.seeds for target in rois
              if target != seed]
    names += [f"fc_{task}_{a}-{b}" for task in config.connectivity.tasks for i, a in enumerate(rois)
              for b in rois[i + 1:]]
    dcm, masks = config.dcm, config.dcm.full_masks()
    regions = dcm.regions
    names += [f"dcm_{dcm.task}_A_{regions[j]}-to-{regions[i]}" for i in range(len(regions))
              for j in range(len(regions))]
    names += [f"dcm_{dcm.task}_B_{regions[j]}-to-{regions[i]}_{u}" for u, mask in masks["b"].items()
              for i in range(len(regions)) for j in range(len(regions)) if mask[i][j]]
    names += [f"dcm_{dcm.task}_C_{u}-to-{regions[i]}" for u, mask in masks["c"].items()
              for i in range(len(regions)) if mask[i]]
    return names


def feature_table(n: int, seed: int, measures: list[str], contrasts: dict, error_sd: dict, scale: float):
    long, participants = measured_study(n, seed, measures, contrasts, error_sd, effect_scale=scale, arms=ARMS)
    clinical = pd.DataFrame([{"subject": s, "session": ses, "caps5_total": 0.0}
                             for s in participants["subject"] for ses in ("pre", "post")])
    return build_feature_table(long, clinical, participants, arm="group")


def analyse(features, settings: InferenceSettings, families, models) -> list[dict]:
    """Rows (family, model, effect key, measure, t, p, q, p_fwe) of one study."""
    rows = []
    for family in families:
        for model in models:
            data = prepare_analysis(features.table, features.dictionary, family, model, settings)
            tested = [i for i, name in enumerate(data.measures) if name not in data.untestable]
            tests = permutation_tests(data, tested)
            for effect in EFFECTS:
                t, df = tests.t[effect.key], tests.df[effect.key]
                p = 2 * stats.t.sf(np.abs(t), df)
                q = multipletests(p, method="fdr_bh")[1]
                for k, i in enumerate(tests.measures):
                    rows.append({"family": family, "model": model, "effect": effect.key,
                                 "measure": data.measures[i], "t": t[k], "p": p[k], "q": q[k],
                                 "p_fwe": tests.p_fwe[effect.key][k]})
    return rows


CORRECTIONS = {"uncorrected": "p", "FDR": "q", "FWE": "p_fwe"}


def _rate(hits: pd.Series) -> str:
    n = len(hits)
    rate = hits.mean()
    return f"{rate:.3f} ± {np.sqrt(max(rate * (1 - rate), 1 / n) / n):.3f}"


def summarise(results: pd.DataFrame, condition: str, n: int, n_studies: int) -> dict:
    """Detection rates (effects) or family-wise error rates (null) of one sample size."""
    summary = {}
    if condition == "effects":
        for (measure, effect), sign in {**{(m, "arm_by_session"): s for m, s in TRUE_ARM_BY_SESSION.items()},
                                        **TRUE_CHANGE}.items():
            part = results[(results["measure"] == measure) & (results["effect"] == effect)]
            for model, rows in part.groupby("model"):
                for name, column in CORRECTIONS.items():
                    hits = (rows[column] < 0.05) & (np.sign(rows["t"]) == sign)
                    summary[f"{measure} | {effect} | {model} | {name}"] = _rate(hits)
        truth = set(TRUE_ARM_BY_SESSION)
        null = results[(results["effect"] == "arm_by_session")]
        for (family, model), rows in null.groupby(["family", "model"]):
            for name, column in CORRECTIONS.items():
                significant = rows[column] < 0.05
                false = significant & ~rows["measure"].isin(truth)
                per_study = pd.DataFrame({"study": rows["study"], "false": false, "significant": significant})
                grouped = per_study.groupby("study")
                fdp = (grouped["false"].sum() / grouped["significant"].sum().clip(lower=1))
                summary[f"null measures | arm_by_session | {family} | {model} | {name}"] = (
                    f"FWER {_rate(grouped['false'].any())}, mean FDP {fdp.mean():.3f}")
    else:
        for (family, model, effect), rows in results.groupby(["family", "model", "effect"]):
            for name, column in CORRECTIONS.items():
                any_hit = rows.assign(hit=rows[column] < 0.05).groupby("study")["hit"].any()
                summary[f"{family} | {effect} | {model} | {name}"] = _rate(any_hit)
    return summary


def markdown_tables(results: pd.DataFrame) -> str:
    """Markdown tables of a run's per-study results (``--out`` TSV): detection of the true effects,
    family-wise error on null studies, and the error over null measures in studies with effects."""
    sizes, models = sorted(results["n"].unique()), sorted(results["model"].unique())
    lines = []
    effects = results[results["condition"] == "effects"]
    head = [f"N={n} {m}" for n in sizes for m in models]
    lines += ["| true effect (sign) | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for (measure, effect), sign in {**{(m, "arm_by_session"): s for m, s in TRUE_ARM_BY_SESSION.items()},
                                    **TRUE_CHANGE}.items():
        cells = []
        for n in sizes:
            for model in models:
                rows = effects[(effects["n"] == n) & (effects["model"] == model) & (effects["measure"] == measure)
                               & (effects["effect"] == effect)]
                right = np.sign(rows["t"]) == sign
                cells.append(" / ".join(f"{((rows[c] < 0.05) & right).mean():.2f}" for c in CORRECTIONS.values()))
        label = effect.replace("within_arm_change_active", f"change in {ARMS[0]}").replace(
            "within_arm_change_control", f"change in {ARMS[1]}").replace("arm_by_session", "arm x session")
        lines.append(f"| {measure}, {label} ({'+' if sign > 0 else '-'}) | " + " | ".join(cells) + " |")
    null = results[results["condition"] == "null"]
    lines += ["", "| null studies: any significant measure | " + " | ".join(head) + " |",
              "|---" * (len(head) + 1) + "|"]
    for family in sorted(null["family"].unique()):
        for effect in [e.key for e in EFFECTS]:
            cells = []
            for n in sizes:
                for model in models:
                    rows = null[(null["n"] == n) & (null["model"] == model) & (null["family"] == family)
                                & (null["effect"] == effect)]
                    cells.append(" / ".join(f"{rows.assign(h=rows[c] < 0.05).groupby('study')['h'].any().mean():.3f}"
                                            for c in CORRECTIONS.values()))
            lines.append(f"| {family}, {effect} | " + " | ".join(cells) + " |")
    lines += ["", "| studies with effects, arm x session: null measures | " + " | ".join(head) + " |",
              "|---" * (len(head) + 1) + "|"]
    for family in sorted(effects["family"].unique()):
        cells = []
        for n in sizes:
            for model in models:
                rows = effects[(effects["n"] == n) & (effects["model"] == model) & (effects["family"] == family)
                               & (effects["effect"] == "arm_by_session")]
                false = ~rows["measure"].isin(set(TRUE_ARM_BY_SESSION))
                parts = []
                for name, column in (("FDR", "q"), ("FWE", "p_fwe")):
                    flagged = rows.assign(s=rows[column] < 0.05, f=(rows[column] < 0.05) & false).groupby("study")
                    fdp = (flagged["f"].sum() / flagged["s"].sum().clip(lower=1)).mean()
                    parts.append(f"{name}: FWER {flagged['f'].any().mean():.3f}, FDR {fdp:.3f}")
                cells.append("; ".join(parts))
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check_statsmodels(n: int, seed: int, measures, contrasts, settings, families, models) -> float:
    """Largest |p difference| between the statsmodels path (run_analysis) and the closed form."""
    features = feature_table(n, seed, measures, contrasts, ERROR_SD, 1.0)
    fast = pd.DataFrame(analyse(features, settings, families, models))
    worst = 0.0
    for family in families:
        for model in models:
            table = run_analysis(prepare_analysis(features.table, features.dictionary, family, model, settings)).table
            key = np.where(table["effect"] == "within_arm_change",
                           "within_arm_change_" + np.where(table["arm"] == ARMS[0], "active", "control"),
                           table["effect"])
            merged = fast[(fast["family"] == family) & (fast["model"] == model)].merge(
                table.assign(effect=key)[["measure", "effect", "p"]], on=["measure", "effect"], suffixes=("", "_sm"))
            worst = max(worst, float(np.abs(merged["p"] - merged["p_sm"]).max()))
    return worst


def timing(n: int, permutations: int, measures, contrasts, families, models) -> dict:
    """CPU seconds of one analysis per family x model at ``n`` subjects: the whole analysis
    (statsmodels fits, corrections, ``permutations`` permutations) and the permutation tests alone."""
    features = feature_table(n, 7, measures, contrasts, ERROR_SD, 1.0)
    settings = InferenceSettings(arm_column="group", arms=ARMS, n_permutations=permutations, seed=0)
    out = {}
    for family in families:
        for model in models:
            start = time.process_time()
            data = prepare_analysis(features.table, features.dictionary, family, model, settings)
            run_analysis(data)
            whole = time.process_time() - start
            start = time.process_time()
            permutation_tests(data, range(len(data.measures)))
            out[f"{family} {model} ({len(data.measures)} measures)"] = {
                "analysis_cpu_s": round(whole, 2), "permutation_tests_cpu_s": round(time.process_time() - start, 2)}
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=200, help="simulated studies per sample size and condition")
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 40], help="subjects per study (both arms)")
    parser.add_argument("--permutations", type=int, default=1000, help="FWE permutations per study")
    parser.add_argument("--effect-scale", type=float, default=1.0, help="scale of the simulator's mean changes")
    parser.add_argument("--error", type=json.loads, default={}, help='error SD overrides, e.g. \'{"ppi": 0.5}\'')
    parser.add_argument("--families", nargs="+", default=["activation", "ppi", "fc", "dcm"])
    parser.add_argument("--models", nargs="+", default=["ancova", "lmm"])
    parser.add_argument("--check-statsmodels", type=int, default=2, help="studies re-run through statsmodels")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="10 studies, 200 permutations, N = 20")
    parser.add_argument("--timing", action="store_true", help="only time one analysis per family x model "
                                                                  "(first of --sizes, --permutations)")
    parser.add_argument("--summarise", metavar="PREFIX",
                        help="only print Markdown tables of an earlier run's PREFIX_studies.tsv (--out PREFIX)")
    parser.add_argument("--out", help="write the per-study results (TSV) and the summary (JSON) with this prefix")
    args = parser.parse_args(argv)
    if args.quick:
        args.studies, args.permutations, args.sizes, args.check_statsmodels = 10, 200, [20], 1
    error_sd = {**ERROR_SD, **args.error}
    config = load_config()
    measures = configured_measures(config)
    contrasts = {task: spec.contrasts for task, spec in config.tasks.items()}
    if args.summarise:
        # keep_default_na=False: pandas would read the condition "null" as missing
        print(markdown_tables(pd.read_csv(f"{args.summarise}_studies.tsv", sep="\t", keep_default_na=False,
                                          na_values=[""])))
        return
    if args.timing:
        for key, value in timing(args.sizes[0], args.permutations, measures, contrasts, args.families,
                                 args.models).items():
            print(f"N = {args.sizes[0]}, {args.permutations} permutations, {key}: {value}", flush=True)
        return
    settings = InferenceSettings(arm_column="group", arms=ARMS, n_permutations=args.permutations, seed=0)
    print(f"{len(measures)} measures; error SD per session {error_sd}; {args.studies} studies per cell, "
          f"{args.permutations} permutations, effect scale {args.effect_scale}", flush=True)
    report = {"settings": {**vars(args), "error_sd": error_sd, "n_measures": len(measures)}, "results": {}}
    frames = []
    for n in args.sizes:
        for condition, scale in (("effects", args.effect_scale), ("null", 0.0)):
            start, wall = time.process_time(), time.time()
            rows = []
            for k in range(args.studies):
                seed = args.seed + 10000 * (condition == "null") + k
                features = feature_table(n, seed, measures, contrasts, error_sd, scale)
                rows += [dict(r, study=k) for r in analyse(features, settings, args.families, args.models)]
            results = pd.DataFrame(rows).assign(n=n, condition=condition)
            frames.append(results)
            cpu = time.process_time() - start
            summary = summarise(results, condition, n, args.studies)
            report["results"][f"N={n} {condition}"] = {"cpu_s": round(cpu, 1), "wall_s": round(time.time() - wall, 1),
                                                       **summary}
            print(f"\n## N = {n}, {condition} ({args.studies} studies, {cpu:.0f} s CPU)", flush=True)
            for key, value in summary.items():
                print(f"{key}: {value}")
    if args.check_statsmodels:
        worst = max(check_statsmodels(args.sizes[0], args.seed + 50000 + k, measures, contrasts, settings,
                                      args.families, args.models) for k in range(args.check_statsmodels))
        report["statsmodels_max_abs_p_difference"] = worst
        print(f"\nlargest |p(statsmodels) - p(closed form)| over {args.check_statsmodels} studies: {worst:.2e}")
    if args.out:
        pd.concat(frames).to_csv(f"{args.out}_studies.tsv", sep="\t", index=False)
        with open(f"{args.out}_summary.json", "w") as handle:
            json.dump(report, handle, indent=1, default=str)


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    main()
