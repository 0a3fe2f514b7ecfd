"""SPM12's PEB scheme against ketflow's exact-in-β scheme: where and by how much they differ.

1. On SPM12's reference data (tests/data/spm/spm_peb/peb_cross): the difference from SPM's Ep (in
   posterior SDs) and Eh of the exact scheme with each of SPM's conventions switched on in turn
   (shrinkage of the first-level covariances, per-column prior scaling of the design), and of
   SPM's own scheme with them switched off — which convention causes which part of the difference.
2. On simulated single-session studies (exact Gaussian first-level posteriors with the posterior
   covariances SPM estimated for the reference subjects; between-subject covariance pC/16; design
   [mean, arm, clinical, arm × clinical]; true effects: group means, arm 0.3 and clinical 0.15 on
   B, none elsewhere): coverage of the 90% intervals of the 20 group effects, mean absolute
   error, and the free energy's distance from the exact log evidence of the model each scheme fits
   (β integrated analytically, γ by quadrature over its prior; first 20 studies), for both schemes.

    python benchmarks/peb_schemes.py             # 200 simulated studies per size
    python benchmarks/peb_schemes.py --quick     # 20
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import integrate

from ketflow.dcm.bmr import spm_inv
from ketflow.dcm.peb import between_subject_design, fit_peb, peb_conditional, precision_components, select_parameters
from ketflow.group.synthetic_peb import synthetic_longitudinal_posteriors

CASE = Path(__file__).resolve().parents[1] / "tests" / "data" / "spm" / "spm_peb" / "peb_cross"
PE = np.array([0.0, 1 / 128, 1 / 128, 0.0, 0.0])
PC = np.diag([1 / 64] * 4 + [1.0])


def reference_case():
    first = json.loads((CASE / "first_level.json").read_text())
    subjects = first["subjects"]
    qE = np.array([pd.read_csv(CASE / "first_level" / f"{s}_Ep.csv")["post_mean"].to_numpy() for s in subjects])
    qC = np.array([pd.read_csv(CASE / "first_level" / f"{s}_Cp.csv").to_numpy() for s in subjects])
    pC = np.array(first["pC"])
    idx = select_parameters(first["param_labels"], np.diag(pC), ("A", "B"))
    block = np.ix_(idx, idx)
    return (qE[:, idx], qC[:, idx][:, :, idx], np.array(first["pE"])[idx], pC[block], np.array(first["F"]),
            pd.read_csv(CASE / "X.csv").to_numpy(), json.loads((CASE / "peb.json").read_text()))


def decomposition() -> pd.DataFrame:
    qE, qC, pE, pC, F1, X, ref = reference_case()
    Ep_ref, sd_ref = np.array(ref["Ep"]).T, np.sqrt(np.diag(ref["Cp"])).reshape(5, 4).T
    rows = []
    for method in ("exact", "spm"):
        for shrink in (False, True):
            for scale in (False, True):
                fit = fit_peb(qE, qC, pE, pC, X, method=method, first_level_F=F1, shrink_first_level=shrink,
                              scale_prior_by_design=scale)
                z = np.abs(fit.Ep - Ep_ref) / sd_ref
                rows.append({"method": method, "shrink_first_level": shrink, "scale_prior_by_design": scale,
                             "max_dEp_sd": z.max(), "median_dEp_sd": np.median(z), "dEh": float(fit.Eh[0] - ref["Eh"]),
                             "dF": fit.F - ref["F"]})
    return pd.DataFrame(rows)


def exact_log_evidence(qE, qC, pE, pC, X, bC) -> float:
    """log p(y) relative to the first levels: β exactly, the single γ ~ N(0, 1/16) by quadrature."""
    Qs = precision_components(pC, "single", 16.0)

    def integrand(g):
        F = peb_conditional(qE, qC, pE, pC, X, [g], Qs, bC=bC)[2]
        return F, -0.5 * g ** 2 * 16 - 0.5 * np.log(2 * np.pi / 16)

    grid = np.linspace(-2.5, 2.5, 401)
    values = np.array([sum(integrand(g)) for g in grid])
    top = values.max()
    return float(top + np.log(integrate.trapezoid(np.exp(values - top), grid)))


def simulated(n: int, studies: int, pool: np.ndarray) -> pd.DataFrame:
    rows = []
    truth = np.zeros((4, 5))
    truth[0] = [-0.15, -0.3, 0.35, -0.05, 0.4]
    truth[1, 4], truth[2, 4] = 0.3, 0.15
    for seed in range(studies):
        rng = np.random.default_rng(seed)
        arm = np.array(["midazolam", "ketamine"] * (n // 2))
        X, _ = between_subject_design(arm, ("midazolam", "ketamine"), rng.normal(size=n), covariate_name="clinical")
        data = synthetic_longitudinal_posteriors(truth, np.zeros((4, 5)), X, PE, PC, pool, change_scale=0.0,
                                                 seed=seed)
        qE, qC = data.qE[:, 0], data.qC[:, 0]
        for method in ("spm", "exact"):
            start = time.process_time()
            fit = fit_peb(qE, qC, PE, PC, X, method=method)
            seconds = time.process_time() - start
            z = (fit.Ep - truth) / fit.Ep_sd
            # the exact log evidence of the model this scheme fits (SPM's: shrunk first-level covariances)
            model_qC = np.array([spm_inv(spm_inv(c) + spm_inv(PC) / 16) for c in qC]) \
                if fit.settings["shrink_first_level"] else qC
            exact = exact_log_evidence(qE, model_qC, PE, PC, X, fit.bC) if seed < 20 else np.nan
            rows.append({"n": n, "seed": seed, "method": method, "cover90_mean": (np.abs(z[0]) < 1.645).mean(),
                         "cover90_covariates": (np.abs(z[1:]) < 1.645).mean(),
                         "abs_error": np.abs(fit.Ep - truth).mean(), "F_minus_exact_evidence": fit.F - exact,
                         "cpu_s": seconds})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, nargs="+", default=[16, 40])
    args = parser.parse_args()
    studies = 20 if args.quick else args.studies
    print(f"load average {os.getloadavg()[0]:.2f}")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print("1. SPM reference data: difference from SPM12 (Ep in SPM posterior SDs)")
        print(decomposition().round(4).to_string(index=False))
        idx = [0, 1, 2, 3, 10]
        pool = np.array([pd.read_csv(f).to_numpy()[np.ix_(idx, idx)]
                         for f in sorted((CASE / "first_level").glob("sub-*_Cp.csv"))])
        table = pd.concat([simulated(n, studies, pool) for n in args.n])
        summary = table.groupby(["n", "method"]).agg(
            studies=("seed", "size"), cover90_mean=("cover90_mean", "mean"),
            cover90_covariates=("cover90_covariates", "mean"), abs_error=("abs_error", "mean"),
            F_minus_exact_mean=("F_minus_exact_evidence", "mean"),
            F_minus_exact_maxabs=("F_minus_exact_evidence", lambda v: v.abs().max()),
            cpu_s=("cpu_s", "mean")).reset_index()
        print(f"\n2. {studies} simulated studies per size: 90% interval coverage, mean absolute error, "
              "F − exact log evidence of the scheme's model (mean and largest absolute; first 20 studies)")
        print(summary.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
