"""How often the packaged prediction models predict out of sample on simulated studies.

For N in (20, 40), with the simulator's imaging drivers present and absent (the arm effect stays:
ketamine lowers CAPS-5 by 4 points more, and some imaging measures change with ketamine), each
study is drawn by :func:`ketflow.simulate.features.simulated_feature_study` (the image simulator's
subjects "measured" with the participant level's measured error) and three models are evaluated
with the packaged settings (l1_ratios, 100 alphas, leave-one-out refit, 5-fold inner and 10-fold
outer CV), ``--permutations`` permutations (default 200: p resolves 0.005) and no selection
bootstraps:

* ``change`` — the a-priori set (the measures of group.predictor_sets.apriori that the
  simulator has: the three DCM parameters, the dACC conflict contrast, resting vmPFC–anterior
  insula coupling; 6 measures);
* ``change-by-arm`` — the same with the arm (unpenalised) and arm × measure terms: ΔR² over the
  arm-only model and its Freedman–Lane p;
* ``change-full`` — every measure (26) plus 181 pure-noise measures: 207, the full circuit's count.

"Predicts" = nested-CV R² > 0 and permutation p < 0.05 (for change-by-arm: ΔR² > 0 and its p < 0.05).

    NIPYPE_NO_ET=1 OMP_NUM_THREADS=1 python benchmarks/group_prediction_power.py --studies 10 \
        [--full-studies 5] [--permutations 200] [--quick]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from ketflow.config import APRIORI_MEASURES, load_config
from ketflow.group.features import build_feature_table
from ketflow.group.models import select_model_data
from ketflow.group.predict import evaluate
from ketflow.simulate.features import simulated_feature_study

OUTCOME = "caps5_total__change"


def _settings(permutations: int) -> dict:
    group = load_config().group
    return {"l1_ratios": group.l1_ratios, "n_alphas": group.n_alphas, "refit_inner_folds": group.refit_inner_folds,
            "inner_folds": group.inner_folds, "outer_folds": group.outer_folds, "n_permutations": permutations,
            "n_selection_bootstrap": 0, "n_bootstrap": 200, "seed": 0}


def _models(dictionary: dict) -> dict:
    apriori = [m for m in APRIORI_MEASURES if f"{m}__change" in dictionary]
    arm = {"arm": "group", "arm_levels": ["midazolam", "ketamine"]}
    return {"change": {"predictor_set": {"name": "apriori", "measures": apriori}},
            "change-by-arm": {"predictor_set": {"name": "apriori", "measures": apriori}, **arm,
                              "include_arm": True, "arm_interactions": True},
            "change-full": {}}


def run(n: int, drivers: bool, seeds: range, names: list[str], permutations: int) -> dict:
    hits = {name: [] for name in names}
    r2 = {name: [] for name in names}
    cpu = {name: 0.0 for name in names}
    for seed in seeds:
        measures, clinical, participants = simulated_feature_study(n, 1000 + seed, drivers=drivers, n_noise=181)
        table = build_feature_table(measures, clinical, participants, arm="group")
        for name, model in _models(table.dictionary).items():
            if name not in names:
                continue
            config = {"outcome": OUTCOME, "predictors": "change", **_settings(permutations), **model}
            data = select_model_data(config, table.table, table.dictionary)
            start = time.process_time()
            rep = evaluate(data.table, data.config.spec, **data.config.evaluate_kwargs)
            cpu[name] += time.process_time() - start
            if rep.reference is not None:
                hits[name].append(rep.reference["delta_r2"] > 0 and rep.reference["p_delta_r2"] < 0.05)
                r2[name].append(rep.reference["delta_r2"])
            else:
                hits[name].append(rep.scores["r2"] > 0 and rep.p_values["r2"] < 0.05)
                r2[name].append(rep.scores["r2"])
    return {name: (int(np.sum(hits[name])), len(hits[name]), float(np.median(r2[name])), cpu[name] / len(seeds))
            for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=10)
    parser.add_argument("--full-studies", type=int, default=5)
    parser.add_argument("--permutations", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="2 studies, 20 permutations")
    args = parser.parse_args()
    if args.quick:
        args.studies, args.full_studies, args.permutations = 2, 1, 20
    warnings.simplefilter("ignore")
    print("N  drivers  model          predicts (R2>0, p<0.05)  median R2 (dR2 for change-by-arm)  CPU s/study")
    for n in (20, 40):
        for drivers in (True, False):
            small = run(n, drivers, range(args.studies), ["change", "change-by-arm"], args.permutations)
            full = run(n, drivers, range(args.full_studies), ["change-full"], args.permutations)
            for name, (hit, total, med, cpu) in {**small, **full}.items():
                print(f"{n:<3d}{'present' if drivers else 'absent':9s}{name:15s}{hit:3d}/{total:<3d}"
                      f"{'':22s}{med:+.2f}{'':33s}{cpu:.1f}", flush=True)


if __name__ == "__main__":
    main()
