"""Group power of activation, gPPI and beta series under each task-model confound strategy.

Feature-level studies (``ketflow.simulate.measured.measured_study``: the image-level simulator's
own subject draws and arm x session change model, every measure "measured" with Gaussian error
per session) go through the feature table and ``ketflow.group.inference`` exactly as the group
level runs it (ANCOVA on the change, BH FDR and max-statistic permutation FWE over each family;
``benchmarks/group_inference_power.analyse``).  The error SD of each family per strategy is the
one the image-level benchmark measured (``--errors``: ``benchmarks/task_measure_error.py``'s
errors.json): activation = the dACC contrast's error SD, gPPI = the amygdala_L -> vmPFC error in
Hz-equivalent, beta series = the SD of the Fisher-z contrast over runs.

True effects: the simulator's (dACC incongruent - congruent arm x session -0.8; gPPI amygdala_L ->
vmPFC fearful modulation B +0.40 Hz under ketamine).  The simulator has no trial-by-trial coupling,
so a beta-series effect is planted: ``--betaseries-effect`` (Fisher z, default 0.20 -- the size of
the simulator's resting vmPFC-amygdala coupling change) added to the post session of the first
arm on ``betaseries_conflict_incongruent-gt-congruent_dACC-amygdala_L``.  Null studies have no
effect at all (``effect_scale`` 0, nothing planted).

``--ppi-tasks`` sets which tasks' gPPI measures the gPPI family holds (the multiplicity cost of
conflict gPPI, whose measures carry no simulated effect).

Run (``--quick``: 10 studies, N = 20, 100 permutations)::

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/task_group_power.py \\
        --errors /tmp/task_error/errors.json --studies 100 --sizes 20 40 --permutations 200 --out power
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import numpy as np
import pandas as pd
from group_inference_power import ARMS, analyse, configured_measures

from ketflow.config import load_config, roi_names
from ketflow.group.features import build_feature_table
from ketflow.group.inference import InferenceSettings
from ketflow.simulate.measured import measured_study

BETA_EDGE = "betaseries_conflict_incongruent-gt-congruent_dACC-amygdala_L"
TRUE_EFFECTS = {  # measure -> sign of the arm x session effect (first arm - second arm)
    "activation": ("activation_conflict_incongruent-gt-congruent_dACC", -1),
    "ppi": ("ppi_faces_fearful-gt-shapes_amygdala_L-to-vmPFC", +1),
    "betaseries": (BETA_EDGE, +1),
}
CORRECTIONS = {"uncorrected": "p", "FDR": "q", "FWE": "p_fwe"}


def task_measures(config, ppi_tasks: list[str]) -> list[str]:
    """Activation and gPPI measures of the packaged configuration (gPPI of ``ppi_tasks``) and the
    beta-series contrasts of ``beta_series.tasks``, named as ketflow.io.collect names them."""
    config = config.model_copy(update={"ppi": config.ppi.model_copy(update={"tasks": ppi_tasks})})
    names = [m for m in configured_measures(config) if m.split("_", 1)[0] in ("activation", "ppi")]
    rois = roi_names(config)
    names += [f"betaseries_{task}_{contrast}_{a}-{b}" for task in config.beta_series.tasks
              for contrast in config.tasks[task].contrasts for i, a in enumerate(rois) for b in rois[i + 1:]]
    return names


def errors_of(report: dict, strategy: str) -> dict:
    """Per-session error SD by family of one strategy from task_measure_error.py's errors.json."""
    e = report["errors"][strategy]
    return {"activation": e["activation_dACC"]["error_sd"], "ppi": e["ppi_amygdala_L_to_vmPFC"]["error_sd_hz"],
            "betaseries": e["betaseries_contrast"]["error_sd"]}


def study(n: int, seed: int, measures, contrasts, error_sd: dict, effects: bool, beta_effect: float):
    long, participants = measured_study(n, seed, measures, contrasts, error_sd, effect_scale=1.0 if effects else 0.0,
                                        arms=ARMS)
    if effects and beta_effect:
        first_arm = set(participants.loc[participants["group"] == ARMS[0], "subject"])
        planted = (long["measure"] == BETA_EDGE) & (long["session"] == "post") & long["subject"].isin(first_arm)
        long.loc[planted, "value"] += beta_effect
    clinical = pd.DataFrame([{"subject": s, "session": ses, "caps5_total": 0.0}
                             for s in participants["subject"] for ses in ("pre", "post")])
    return build_feature_table(long, clinical, participants, arm="group")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--errors", required=True, help="errors.json of benchmarks/task_measure_error.py")
    parser.add_argument("--strategies", nargs="+", help="default: every strategy in --errors")
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 40])
    parser.add_argument("--permutations", type=int, default=200)
    parser.add_argument("--betaseries-effect", type=float, default=0.20)
    parser.add_argument("--ppi-tasks", nargs="+", default=None, help="default: the packaged ppi.tasks")
    parser.add_argument("--seed", type=int, default=3000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", help="write per-study rows (TSV) and the summary (JSON) with this prefix")
    args = parser.parse_args(argv)
    if args.quick:
        args.studies, args.sizes, args.permutations = 10, [20], 100
    report = json.loads(open(args.errors).read())
    strategies = args.strategies or list(report["errors"])
    config = load_config()
    ppi_tasks = args.ppi_tasks or list(config.ppi.tasks)
    measures = task_measures(config, ppi_tasks)
    contrasts = {task: spec.contrasts for task, spec in config.tasks.items()}
    families = ["activation", "ppi", "betaseries"]
    settings = InferenceSettings(arm_column="group", arms=ARMS, n_permutations=args.permutations, seed=0)
    counts = {f: sum(m.startswith(f + "_") for m in measures) for f in families}
    print(f"load {os.getloadavg()}; measures {counts}; gPPI tasks {ppi_tasks}; {args.studies} studies per cell, "
          f"{args.permutations} permutations, ANCOVA", flush=True)
    rows, summary = [], {}
    for strategy in strategies:
        error_sd = errors_of(report, strategy)
        for n in args.sizes:
            for condition in ("effects", "null"):
                start = time.process_time()
                for k in range(args.studies):
                    seed = args.seed + 10000 * (condition == "null") + k
                    features = study(n, seed, measures, contrasts, error_sd, condition == "effects",
                                     args.betaseries_effect)
                    rows += [dict(r, study=k, n=n, condition=condition, strategy=strategy)
                             for r in analyse(features, settings, families, ["ancova"])
                             if r["effect"] == "arm_by_session"]
                cpu = time.process_time() - start
                part = pd.DataFrame([r for r in rows if r["strategy"] == strategy and r["n"] == n
                                     and r["condition"] == condition])
                for family in families:
                    rates = {}
                    fam = part[part["family"] == family]
                    if condition == "effects":
                        measure, sign = TRUE_EFFECTS[family]
                        hit = fam[fam["measure"] == measure]
                        for name, column in CORRECTIONS.items():
                            rates[name] = float(((hit[column] < 0.05) & (np.sign(hit["t"]) == sign)).mean())
                    else:
                        for name, column in CORRECTIONS.items():
                            rates[name] = float(fam.assign(h=fam[column] < 0.05).groupby("study")["h"].any().mean())
                    key = f"{strategy} | N={n} | {condition} | {family}"
                    summary[key] = rates
                    print(f"{key} (error SD {error_sd[family]:.3f}): "
                          + ", ".join(f"{k} {v:.3f}" for k, v in rates.items()), flush=True)
                print(f"  ({args.studies} studies, {cpu:.0f} s CPU, load {os.getloadavg()[0]:.1f})", flush=True)
    if args.out:
        pd.DataFrame(rows).to_csv(f"{args.out}_studies.tsv", sep="\t", index=False)
        with open(f"{args.out}_summary.json", "w") as handle:
            json.dump({"settings": {**vars(args), "measures": counts, "ppi_tasks": ppi_tasks}, "rates": summary},
                      handle, indent=1)


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    main()
