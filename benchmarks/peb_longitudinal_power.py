"""Detection and false-positive rates of the longitudinal PEB on simulated two-session studies.

Each study: N subjects (half per arm), a clinical covariate (standard normal), the between-subject
design [mean, arm, clinical, arm × clinical] (ketflow.dcm.peb.between_subject_design), and five
DCM parameters (A 2×2 and the fearful modulation B amygdala → vmPFC) with SPM's priors. Subjects'
session means and changes follow ketflow.group.synthetic_peb: group means of A and B as in the SPM
reference data, between-subject SD of mean and change pC/16 (B: 0.25), and a planted session × arm
effect on B (the difference between arms in the post − pre change; default 0.4) or none (null
studies). Each session's first-level posterior is exact and has one of the 16 posterior
covariances SPM12 estimated for the simulated subjects of tests/data/spm/spm_peb (a source
checkout is needed).

Compared: ketflow's longitudinal PEB (saturated within-subject level, one second-level precision
component per within column, hC = 1) with SPM's scheme (the default) or the exact one
(``--schemes ketflow-exact``), and SPM's PEB of PEBs (within-subject PEBs with SPM's defaults, one
component, hC = 1/16); second-level reduction with SPM's greedy search and with the subsets
variant. Reported per condition: detection rate of the planted effect (Pp > 0.95;
and the 95% credible interval excluding 0), coverage of its 90% interval, mean z, and on null
studies the false-positive rate of session:arm on B (Pp > 0.95) and the family-wise rate over all
38 null effects (any Pp > 0.95).

    python benchmarks/peb_longitudinal_power.py            # 100 studies per condition
    python benchmarks/peb_longitudinal_power.py --quick    # 10 studies (smoke run)
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ketflow.dcm.peb import between_subject_design
from ketflow.dcm.peb_longitudinal import fit_longitudinal_peb
from ketflow.dcm.peb_reduce import reduce_peb
from ketflow.group.synthetic_peb import synthetic_longitudinal_posteriors

REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "data" / "spm" / "spm_peb" / "peb_cross" / "first_level"
PARAMETERS = ["A_vmPFC-to-vmPFC", "A_vmPFC-to-amygdala", "A_amygdala-to-vmPFC", "A_amygdala-to-amygdala",
              "B_amygdala-to-vmPFC_fearful"]
PE = np.array([0.0, 1 / 128, 1 / 128, 0.0, 0.0])  # SPM's priors of these parameters
PC = np.diag([1 / 64] * 4 + [1.0])
GROUP_MEAN = np.array([-0.15, -0.3, 0.35, -0.05, 0.4])
SCHEMES = {
    "ketflow": {},
    "spm-peb-of-pebs": {"within": "peb", "between_components": "single", "between_hC": 1 / 16},
    "ketflow-exact": {"method": "exact"},
}


def reference_covariances() -> np.ndarray:
    """The 16 posterior covariances of SPM12's inversions (A 2×2 and B(1,2,2))."""
    idx = [0, 1, 2, 3, 10]
    return np.array([pd.read_csv(f).to_numpy()[np.ix_(idx, idx)] for f in sorted(REFERENCE.glob("sub-*_Cp.csv"))])


def one_study(n: int, effect: float, seed: int, pool: np.ndarray, schemes=("ketflow", "spm-peb-of-pebs")) -> list[dict]:
    rng = np.random.default_rng(seed)
    arm = np.array(["midazolam", "ketamine"] * (n // 2))
    X, columns = between_subject_design(arm, ("midazolam", "ketamine"), rng.normal(size=n),
                                        covariate_name="clinical")
    beta_mean = np.zeros((4, 5))
    beta_mean[0] = GROUP_MEAN
    beta_change = np.zeros((4, 5))
    beta_change[1, 4] = effect
    data = synthetic_longitudinal_posteriors(beta_mean, beta_change, X, PE, PC, pool, seed=seed)
    rows = []
    for scheme in schemes:
        options = SCHEMES[scheme]
        start = time.process_time()
        fit = fit_longitudinal_peb(data.qE, data.qC, PE, PC, X, between_columns=columns, parameters=PARAMETERS,
                                   **options)
        seconds = time.process_time() - start
        k, j = fit.grid.index("session:arm", PARAMETERS[4])
        Ep, sd = fit.between.Ep[k, j], fit.between.Ep_sd[k, j]
        null = np.ones(fit.grid.shape, bool)
        null[0, :5] = False  # the group means
        null[k, j] = effect == 0.0
        for greedy in ("spm", "subsets"):
            red = reduce_peb(fit.between, greedy=greedy)
            rows.append({"scheme": scheme, "greedy": greedy, "n": n, "effect": effect, "seed": seed,
                         "Pp": red.Pp[k, j], "z": Ep / sd, "covered90": abs(Ep - effect) < 1.645 * sd,
                         "ci95_excludes_0": abs(Ep) > 1.96 * sd, "null_max_Pp": red.Pp[null].max(),
                         "null_mean_fp": (red.Pp[null] > 0.95).mean(), "cpu_s": seconds})
    return rows


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    groups = table.groupby(["scheme", "greedy", "n", "effect"])
    return groups.agg(studies=("seed", "size"), detect_Pp95=("Pp", lambda p: (p > 0.95).mean()),
                      detect_ci95=("ci95_excludes_0", "mean"), coverage90=("covered90", "mean"),
                      mean_z=("z", "mean"), fwer_Pp95=("null_max_Pp", lambda p: (p > 0.95).mean()),
                      per_effect_fp=("null_mean_fp", "mean"), cpu_s=("cpu_s", "mean")).reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100, help="simulated studies per condition")
    parser.add_argument("--quick", action="store_true", help="10 studies per condition")
    parser.add_argument("--effect", type=float, default=0.4, help="planted session × arm effect on B")
    parser.add_argument("--n", type=int, nargs="+", default=[20, 40], help="subjects per study")
    parser.add_argument("--out", type=Path, help="write every study's row to this TSV")
    parser.add_argument("--schemes", nargs="+", choices=sorted(SCHEMES), default=["ketflow", "spm-peb-of-pebs"],
                        help="longitudinal PEB variants compared")
    args = parser.parse_args()
    studies = 10 if args.quick else args.studies
    pool = reference_covariances()
    print(f"load average {os.getloadavg()[0]:.2f}; {studies} studies per condition")
    rows = []
    for n in args.n:
        for effect in (args.effect, 0.0):
            for seed in range(studies):
                rows += one_study(n, effect, 1000 * n + seed + (0 if effect else 500_000), pool, args.schemes)
                if args.out:  # every study as it finishes, so that an interrupted run keeps its results
                    pd.DataFrame(rows).to_csv(args.out, sep="\t", index=False)
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(summarise(table).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
