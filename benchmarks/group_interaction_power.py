"""Power of the group models on the simulator's subject-level truth (no images).

Run (about 20 min of CPU):

    NIPYPE_NO_ET=1 MPLBACKEND=Agg OMP_NUM_THREADS=1 PYTHONPATH=. \\
        /work/main/.venv/bin/python benchmarks/group_interaction_power.py [n_seeds]

Uses :func:`ketflow.simulate.features.simulated_feature_study` (as tests/test_group_simulator_truth.py
does): the simulator's own per-subject parameter and clinical draws, "measured" with Gaussian
error (per session) of the size the participant level shows
(benchmarks/group_simulator_recovery.py), fitted with the test's model settings
(:func:`common.fit_study`).  Reports, over ``n_seeds`` simulated studies per cell:

* ``change`` model: how often both drivers (DCM B change, negative; dACC incongruent -
  congruent change, positive) are retained with the right sign, and nested-CV R^2;
* ``change-by-arm`` model: how often the arm x B-change interaction is detected (refit
  coefficient < 0 and bootstrap selection frequency >= 0.9) when the simulator has it, and
  how often it is "detected" when it does not (false positives), by sample size and by the
  estimation error of B.
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
from common import fit_study

from ketflow.simulate.features import B_DRIVER, DACC_DRIVER
from ketflow.simulate.features import DEMO_ERROR_SD as ERROR_SD

B = f"{B_DRIVER}__change"
DACC = f"{DACC_DRIVER}__change"


def drivers(n_seeds: int) -> None:
    for n in (30, 40, 60, 120):
        hits, r2 = [], []
        for seed in range(n_seeds):
            rep = fit_study({"n_permutations": 0}, n=n, seed=100 + seed)
            coef = rep.fit.coefficients["coef"]
            hits.append(coef[B] < 0 and coef[DACC] > 0)
            r2.append(rep.scores["r2"])
        print(f"change model, N={n:4d}: both drivers retained with the right sign in {np.mean(hits):.2f}; "
              f"nested-CV R2 median {np.median(r2):.2f} (range {min(r2):.2f}..{max(r2):.2f})", flush=True)


def interaction(n_seeds: int) -> None:
    model = {"include_arm": True, "arm_interactions": True, "n_permutations": 0, "refit_inner_folds": 10}
    name = f"group:{B}"
    for error_b, sizes in ((0.20, (300, 1000, 2000)), (0.10, (100, 300)), (0.05, (100, 300))):
        for n in sizes:
            start = time.process_time()
            found = {True: [], False: []}
            for present in (True, False):
                for seed in range(n_seeds):
                    rep = fit_study(model, n=n, seed=seed, interaction=present,
                                     error_sd=dict(ERROR_SD, dcm=error_b))
                    found[present].append(rep.fit.coefficients.loc[name, "coef"] < 0
                                          and rep.selection.loc[name, "frequency"] >= 0.9)
            print(f"arm x B interaction, B error {error_b:.2f} Hz/session, N={n:5d}: detected in "
                  f"{np.mean(found[True]):.2f} (present), {np.mean(found[False]):.2f} (absent) of {n_seeds} "
                  f"[{time.process_time() - start:.0f} s CPU]", flush=True)


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    drivers(seeds)
    interaction(seeds)
