"""Recovery and timing of the group-level models over many synthetic data sets.

Run (about 10–15 minutes on one core):

    NIPYPE_NO_ET=1 MPLBACKEND=Agg OMP_NUM_THREADS=1 \\
        /work/main/.venv/bin/python benchmarks/group_recovery_bench.py [n_seeds]

Prints, for the elastic net (60 subjects, 20 imaging change features, drivers
f00 (+) and f01 (−), arm × f02 interaction present or absent, null outcome):
retention and sign of the true drivers in the refitted model, selection
frequencies, nested-CV R² / r, permutation p-values, interaction detection and
false-positive rates, and timings of the leave-one-out reference fit; and for
PEB (40 subjects, 3 parameters, design [mean, arm, clinical, arm × clinical]):
90% interval coverage, Pp of the true and null effects, leave-one-out r; and the
false-positive rate of the PEB leave-one-out p-value when the clinical variable has no effect.
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np

from ketflow.dcm.peb import between_subject_design, fit_peb
from ketflow.dcm.peb_loo import peb_leave_one_out
from ketflow.dcm.peb_reduce import reduce_peb
from ketflow.group.predict import (
    ModelSpec,
    design_matrix,
    evaluate,
    fit_model,
    nested_cv_predictions,
    selection_frequencies,
)
from ketflow.group.synthetic import ARMS, synthetic_change_table, synthetic_dcm_posteriors

OUTCOME = "caps5_total__change"


def _spec(table, **kw):
    feats = tuple(c for c in table.columns if c.startswith("f"))
    return ModelSpec(OUTCOME, feats, l1_ratios=(0.5, 0.9, 1.0), n_alphas=30, inner_folds=5, **kw)


def elastic_net(n_seeds: int) -> None:
    rows = []
    for seed in range(n_seeds):
        table = synthetic_change_table(seed=seed, interaction=0.0)
        rep = evaluate(table, _spec(table), outer_folds=5, n_permutations=200, n_bootstrap=500,
                       n_selection_bootstrap=100, seed=seed)
        c = rep.fit.coefficients["coef"]
        noise = rep.selection.drop(["f00__change", "f01__change"])["frequency"]
        rows.append([c["f00__change"] > 0, c["f01__change"] < 0, (c.drop(["f00__change", "f01__change"]) != 0).sum(),
                     rep.selection.loc["f00__change", "frequency"], rep.selection.loc["f01__change", "frequency"],
                     noise.mean(), rep.scores["r2"], rep.scores["r"], rep.p_values["r2"]])
    a = np.array(rows, dtype=float)
    print(f"elastic net, {n_seeds} data sets (60 x 20, no interaction):")
    print(f"  f00 retained with + sign: {a[:, 0].mean():.2f}; f01 retained with - sign: {a[:, 1].mean():.2f}")
    print(f"  noise features retained in the refit: mean {a[:, 2].mean():.1f} of 18")
    print(f"  selection frequency f00 {a[:, 3].mean():.2f}, f01 {a[:, 4].mean():.2f}, noise mean {a[:, 5].mean():.2f}")
    print(f"  nested 5-fold CV R2 mean {a[:, 6].mean():.2f} (range {a[:, 6].min():.2f}..{a[:, 6].max():.2f}),"
          f" r mean {a[:, 7].mean():.2f}; permutation p < 0.05 in {np.mean(a[:, 8] < 0.05):.2f}")

    null_p = []
    for seed in range(n_seeds):
        table = synthetic_change_table(seed=1000 + seed)
        table[OUTCOME] = np.random.default_rng(seed).normal(size=len(table))
        rep = evaluate(table, _spec(table), outer_folds=5, n_permutations=200, n_bootstrap=100,
                       n_selection_bootstrap=0, seed=seed)
        null_p.append(rep.p_values["r2"])
    print(f"  null outcome: permutation p < 0.05 in {np.mean(np.array(null_p) < 0.05):.2f} of {n_seeds}")

    for strength in (1.0, 0.0):
        freq, signs, coefs = [], [], []
        for seed in range(n_seeds):
            table = synthetic_change_table(seed=seed, interaction=strength)
            spec = _spec(table, arm="arm", arm_levels=ARMS, arm_interactions=True)
            sel = selection_frequencies(design_matrix(table, spec), spec, n_bootstrap=100, seed=seed)
            freq.append(sel.loc["arm:f02__change", "frequency"])
            signs.append(sel.loc["arm:f02__change", "positive"])
            coefs.append(fit_model(table, spec).coefficients.loc["arm:f02__change", "coef"])
        freq = np.array(freq)
        print(f"  arm x f02 interaction {'present' if strength else 'absent'}: selection frequency mean"
              f" {freq.mean():.2f} (min {freq.min():.2f}, max {freq.max():.2f}); >= 0.9 in "
              f"{np.mean(freq >= 0.9):.2f}; refit coef != 0 in {np.mean(np.array(coefs) != 0):.2f}")

    table = synthetic_change_table(seed=0)
    spec = ModelSpec(OUTCOME, tuple(c for c in table.columns if c.startswith("f")))
    t0 = time.perf_counter()
    fit_model(table, spec)
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    nested_cv_predictions(design_matrix(table, spec), spec, outer_folds=5)
    t_nested = time.perf_counter() - t0
    print(f"  timing (one core): reference LOO fit (7 l1_ratios x 100 alphas, 60 x 20) {t_ref:.2f} s;"
          f" nested 5-fold outer / LOO inner {t_nested:.1f} s")


def peb(n_seeds: int) -> None:
    """PEB recovery with SPM12's scheme (the default; SPM's greedy reduction over every parameter)
    and with the exact scheme (its reduction over the covariate effects, subsets rule)."""
    _P, pE, pC = 3, np.zeros(3), np.eye(3) / 64
    B = np.array([[0.10, 0.20, -0.10], [-0.15, 0.0, 0.0], [0.0, 0.10, 0.0], [0.0, 0.0, 0.0]])
    true = B != 0
    true[0] = False  # group means reported separately
    for method, reduction in (("spm", {}), ("exact", {"search": "covariates", "greedy": "subsets"})):
        cover, pp_true, pp_null, times, rs = [], [], [], [], []
        for seed in range(n_seeds):
            rng = np.random.default_rng(seed + 500)
            arm = np.array([ARMS[i % 2] for i in range(40)])
            X, _ = between_subject_design(arm, ARMS, rng.normal(size=40), covariate_name="clinical")
            fl = synthetic_dcm_posteriors(B, X, pE, pC, seed=seed)
            t0 = time.perf_counter()
            res = fit_peb(fl.qE, fl.qC, pE, pC, X, components="all", method=method)
            red = reduce_peb(res, **reduction)
            times.append(time.perf_counter() - t0)
            sd = np.sqrt(np.diag(res.Cp)).reshape(B.shape)
            cover.append(np.mean(np.abs(res.Ep - B) < 1.645 * sd))
            pp_true.append(red.Pp[true].min())
            pp_null.append(red.Pp[1:][~true[1:]].max())
            loo = peb_leave_one_out(fl.qE, fl.qC, pE, pC, X[:, [0, 2]], column=1, method=method)
            rs.append(loo.r)
        print(f"PEB ({method} scheme, reduction {reduction or 'SPM'}), {n_seeds} data sets (40 subjects, "
              "3 parameters, 4 design columns):")
        print(f"  90% interval coverage of all 12 effects: {np.mean(cover):.2f}")
        print(f"  smallest Pp of the two true effects: mean {np.mean(pp_true):.3f}, min {np.min(pp_true):.3f}")
        print(f"  largest Pp of the 7 null effects: mean {np.mean(pp_null):.3f}, max {np.max(pp_null):.3f}")
        print(f"  leave-one-out r (clinical from parameters, effect 0.10/SD): mean {np.mean(rs):.2f},"
              f" min {np.min(rs):.2f}")
        print(f"  timing: fit_peb + reduce_peb {np.mean(times):.2f} s per data set")


def peb_loo_null(n_seeds: int) -> None:
    """Calibration of the PEB leave-one-out p-value under the null, with the group level's call
    (design [mean, arm, clinical], column 2): arm effects present, no clinical effect."""
    _P, pE, pC = 3, np.zeros(3), np.eye(3) / 64
    B = np.array([[0.10, 0.20, -0.10], [-0.15, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    ps, rs = [], []
    for seed in range(n_seeds):
        rng = np.random.default_rng(seed + 900)
        arm = np.array([ARMS[i % 2] for i in range(40)])
        X, _ = between_subject_design(arm, ARMS, rng.normal(size=40), covariate_name="clinical")
        fl = synthetic_dcm_posteriors(B, X, pE, pC, seed=seed + 900)
        loo = peb_leave_one_out(fl.qE, fl.qC, pE, pC, X[:, :3], column=2)
        ps.append(loo.p)
        rs.append(loo.r)
    ps = np.array(ps)
    print(f"PEB leave-one-out under the null, {n_seeds} data sets (40 subjects, arm effect, no clinical effect):")
    print(f"  p < 0.05 in {np.mean(ps < 0.05):.3f}, p < 0.01 in {np.mean(ps < 0.01):.3f} of data sets; "
          f"r mean {np.mean(rs):.2f}, SD {np.std(rs):.2f}")


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    peb(n)
    peb_loo_null(n)
    elastic_net(n)
