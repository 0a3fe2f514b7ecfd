"""Speed and peak memory of the whole default group level, against the implementation it replaced
(f12c3c1: scikit-learn ``ElasticNetCV`` pipelines under joblib) and a direct scikit-learn loop.

One run does, for each N in ``--sizes`` (default 21, 60, 200), in a fresh child process (so that
its peak memory is its own):

1. a simulated feature table with the packaged configuration's measure names (all 207 imaging
   measures of the default analysis, both sessions, with the exact contrast dependences of the
   real one: fearful-gt-shapes = faces-gt-shapes + ½ fearful-gt-neutral), CAPS-5 and MADRS;
2. **ketflow (this branch)**: every packaged model through ``PredictClinicalChange`` (outputs and
   figures written) with the packaged settings (1000 permutations, 1000 selection bootstraps),
   ``--nprocs`` threads; PEB over synthetic exact first-level DCM posteriors as ``FitPEB`` runs it
   (fit, two reductions, leave-one-out); the group report from those outputs.  Also the
   full-circuit model (``change-full``, every measure: the packaged configuration lists it
   commented out) separately;
3. **f12c3c1** (``--baseline-tree``: a checkout of commit f12c3c1, e.g. ``git archive f12c3c1 |
   tar -x -C DIR``): each model's ``evaluate`` with the same predictors and settings but
   ``--baseline-permutations`` permutations and selection bootstraps (default 3), in a child
   process, extrapolated linearly: t(1000, 1000) = t0 + 1000·(t(k, 0) − t0)/k + 1000·(t(0, k) − t0)/k,
   t0 = t(0, 0);
4. **a direct scikit-learn loop** (models without arm or covariates, where the reference pipeline
   is exactly ``Pipeline(StandardScaler, ElasticNetCV)``): for k permutations, every outer fold's
   pipeline fitted and predicted, and k bootstrap refits with grouped inner folds, extrapolated
   to 1000 + 1000 in the same way.

    NIPYPE_NO_ET=1 MPLBACKEND=Agg OMP_NUM_THREADS=1 python benchmarks/group_speed.py \
        --baseline-tree /path/to/f12c3c1 [--sizes 21 60 200] [--nprocs 2] [--quick]

``--quick``: N = 21 only, 20 permutations and bootstraps, baselines with k = 1.  ``--no-full``: skip
the full-circuit model.  ``--kernel-only`` (with ``--quick``: 20 outcomes): instead, one training
fold's whole path for 200 outcomes by the Numba kernel and by coordinate descent vectorised over
outcomes in NumPy.  Prints one line per
model and size: wall and CPU seconds, and the speed-ups.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

OUTCOME = "caps5_total__change"


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure_names(config) -> list[str]:
    """Every imaging measure of the default analysis, named as ketflow/io/collect.py names them."""
    from ketflow.simulate.grid import roi_names

    rois = roi_names()
    names = [f"activation_{task}_{contrast}_{roi}" for task, spec in config.tasks.items() if spec.type == "task"
             for contrast in spec.contrasts for roi in rois]
    names += [f"ppi_{task}_{contrast}_{seed}-to-{target}" for task in config.ppi.tasks
              for contrast in config.tasks[task].contrasts for seed in config.ppi.seeds for target in rois
              if target != seed]
    names += [f"fc_rest_{a}-{b}" for i, a in enumerate(rois) for b in rois[i + 1:]]
    names += ["dcm_faces_A_vmPFC-to-vmPFC", "dcm_faces_A_vmPFC-to-amygdala_L", "dcm_faces_A_amygdala_L-to-vmPFC",
              "dcm_faces_A_amygdala_L-to-amygdala_L", "dcm_faces_B_amygdala_L-to-vmPFC_fearful",
              "dcm_faces_C_faces-to-amygdala_L"]
    return names


def feature_table(n: int, seed: int, config):
    """FeatureTable of n simulated subjects: arm effect, three a-priori drivers, contrast dependences."""
    from ketflow.group.features import build_feature_table

    rng = np.random.default_rng(seed)
    names = measure_names(config)
    arm = np.array(["ketamine" if i % 2 else "midazolam" for i in range(n)])
    rows, values = [], {}
    for ses in ("pre", "post"):
        level = {}
        for name in names:
            parts = name.split("_", 3)
            if parts[0] in ("activation", "ppi") and parts[1] == "faces":
                key = (parts[0], parts[3])
                if key not in level:
                    level[key] = rng.normal(size=(3, n))  # fearful, neutral, shapes
                fearful, neutral, shapes = level[key]
                values[(name, ses)] = {"faces-gt-shapes": (fearful + neutral) / 2 - shapes,
                                       "fearful-gt-neutral": fearful - neutral,
                                       "fearful-gt-shapes": fearful - shapes}[parts[2]]
            else:
                values[(name, ses)] = rng.normal(size=n) * (0.3 if name.startswith(("fc", "dcm")) else 1.0)
    change = {name: values[(name, "post")] - values[(name, "pre")] for name in names}
    caps = (-4.0 * (arm == "ketamine") - 6.0 * change["dcm_faces_B_amygdala_L-to-vmPFC_fearful"]
            + 1.5 * change["activation_conflict_incongruent-gt-congruent_dACC"]
            - 1.0 * change["ppi_faces_faces-gt-shapes_amygdala_L-to-vmPFC"] + rng.normal(0, 3, n))
    subjects = [f"{i + 1:03d}" for i in range(n)]
    for (name, ses), vals in values.items():
        rows += [{"subject": s, "session": ses, "task": name.split("_")[1], "measure": name, "value": v}
                 for s, v in zip(subjects, vals)]
    caps_pre, madrs_pre = rng.normal(42, 8, n), rng.normal(27, 6, n)
    madrs_change = 0.5 * caps + rng.normal(0, 2.5, n)
    clinical = pd.DataFrame({"subject": subjects * 2, "session": ["pre"] * n + ["post"] * n,
                             "caps5_total": np.r_[caps_pre, caps_pre + caps],
                             "madrs_total": np.r_[madrs_pre, madrs_pre + madrs_change]})
    participants = pd.DataFrame({"participant_id": [f"sub-{s}" for s in subjects], "group": arm})
    return build_feature_table(pd.DataFrame(rows), clinical, participants, arm="group")


def _model_configs(config, quick: bool, full: bool) -> dict:
    from ketflow.workflows.group import model_configs

    models = model_configs(config)
    if full:
        first = next(iter(models.values()))
        models["change-full"] = {k: v for k, v in first.items() if k != "predictor_set"}
    if quick:
        for m in models.values():
            m.update(n_permutations=20, n_selection_bootstrap=20)
    return models


# ---------------------------------------------------------------- this branch (one size, child process)
def run_size(n: int, nprocs: int, quick: bool, full: bool, out: Path) -> dict:
    from ketflow.config import load_config
    from ketflow.dcm.peb import between_subject_design, fit_peb
    from ketflow.dcm.peb_loo import peb_leave_one_out
    from ketflow.dcm.peb_reduce import reduce_peb
    from ketflow.group.models import select_model_data
    from ketflow.group.synthetic import synthetic_dcm_posteriors
    from ketflow.interfaces.group import PredictClinicalChange
    from ketflow.io.names import bids_label
    from ketflow.io.write import write_json, write_tsv
    from ketflow.reports.group import group_report
    from ketflow.workflows.group import MODEL_COLUMNS

    config = load_config()
    result = feature_table(n, 0, config)
    group = out / "group"
    (group / "figures").mkdir(parents=True, exist_ok=True)
    features = write_tsv(group / "features.tsv", result.table)
    dictionary = write_json(group / "features.json", result.dictionary)
    write_tsv(group / "missing.tsv", result.missing)
    times, rows, baseline_models = {}, [], {}
    for name, model in _model_configs(config, quick, full).items():
        data = select_model_data(model, result.table, result.dictionary)
        label = bids_label(name)
        rows.append({"model": name, "label": label, "method": "elastic net", "status": "run" if data.can_run
                     else "skipped", "n_included": int(data.subjects["included"].sum()),
                     "n_excluded": int((~data.subjects["included"]).sum()),
                     "n_predictors": len(data.config.spec.features), "reason": data.skip_reason or ""})
        if not data.can_run:
            continue
        explicit = {k: v for k, v in model.items() if k != "predictor_set"}
        explicit["predictors"] = list(data.config.spec.features)
        baseline_models[name] = explicit
        work = out / "work" / label
        work.mkdir(parents=True)
        model_file = write_json(work / "model.json", model)
        cwd, start, cpu = os.getcwd(), time.monotonic(), _cpu()
        os.chdir(work)
        try:
            outputs = PredictClinicalChange(features_tsv=str(features), dictionary_json=str(dictionary),
                                            model_config=str(model_file), n_jobs=nprocs).run().outputs
        finally:
            os.chdir(cwd)
        times[name] = (time.monotonic() - start, _cpu() - cpu, len(data.config.spec.features), len(data.table))
        if name == "change-full":
            continue
        for field, suffix in (("coefficients_tsv", "coefficients"), ("null_tsv", "nulldistribution"),
                              ("selection_tsv", "selectionfrequencies"), ("predictions_tsv", "predictions"),
                              ("subjects_tsv", "subjects"), ("performance_json", "performance")):
            src = Path(getattr(outputs, field))
            (group / f"model-{label}_{suffix}{src.suffix}").write_bytes(src.read_bytes())
        for fig in outputs.figures:
            desc = {"coefficients": "coefficients", "predicted_vs_observed": "predictedVsObserved",
                    "permutation_null": "permutationNull", "selection_frequencies": "selectionFrequencies"}[Path(fig).stem]
            (group / "figures" / f"model-{label}_desc-{desc}_figure.svg").write_bytes(Path(fig).read_bytes())
    # PEB as FitPEB runs it, on exact synthetic first-level posteriors of the 6 DCM parameters
    start, cpu = time.monotonic(), _cpu()
    rng = np.random.default_rng(1)
    arm = np.array(["ketamine" if i % 2 else "midazolam" for i in range(n)])
    X, _ = between_subject_design(arm, ("midazolam", "ketamine"), rng.normal(size=n))
    pE, pC = np.zeros(6), np.eye(6) / 64
    B = np.zeros((4, 6))
    B[1, 0], B[2, 1] = -0.15, 0.10
    first = synthetic_dcm_posteriors(B, X, pE, pC, seed=2)
    peb = fit_peb(first.qE, first.qC, pE, pC, X)
    reduce_peb(peb)  # SPM's search over every parameter, as FitPEB's tables run it
    peb_leave_one_out(first.qE, first.qC, pE, pC, X[:, :3], column=2)
    times["PEB"] = (time.monotonic() - start, _cpu() - cpu, 6, n)
    rows = [r for r in rows if r["model"] != "change-full"]
    write_tsv(group / "models.tsv", pd.DataFrame.from_records(rows, columns=MODEL_COLUMNS))
    start, cpu = time.monotonic(), _cpu()
    (out / "group.html").write_text(group_report(out, config))
    times["report"] = (time.monotonic() - start, _cpu() - cpu, 0, n)
    write_json(out / "baseline_models.json", baseline_models)
    return {"times": times, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# ---------------------------------------------------------------- f12c3c1 and the scikit-learn loop
def run_baseline(out: Path, k: int) -> dict:
    """Extrapolated f12c3c1 times of every model (child process with the old tree on sys.path)."""
    from ketflow.group.models import select_model_data
    from ketflow.group.predict import evaluate
    from ketflow.io.clinical import read_bids_tsv

    table = read_bids_tsv(out / "group" / "features.tsv")
    dictionary = json.loads((out / "group" / "features.json").read_text())
    result = {}
    for name, model in json.loads((out / "baseline_models.json").read_text()).items():
        model = {key: v for key, v in model.items() if key != "permutation_early_stop"}
        data = select_model_data(model, table, dictionary)
        kwargs = dict(data.config.evaluate_kwargs, permutation_early_stop=None, n_jobs=1)
        t = {}
        for perms, boots in ((0, 0), (k, 0), (0, k)):
            start = time.process_time()
            evaluate(data.table, data.config.spec, **dict(kwargs, n_permutations=perms, n_selection_bootstrap=boots))
            t[(perms, boots)] = time.process_time() - start
        n_perm, n_boot = model.get("n_permutations", 1000), model.get("n_selection_bootstrap", 1000)
        result[name] = (t[(0, 0)] + n_perm * (t[(k, 0)] - t[(0, 0)]) / k
                        + n_boot * (t[(0, k)] - t[(0, 0)]) / k)
    return result


def run_sklearn_loop(out: Path, k: int) -> dict:
    """Extrapolated CPU time of a direct Pipeline(StandardScaler, ElasticNetCV) loop doing each
    plain model's work (no arm, no covariates): k permutations and k bootstraps."""
    from sklearn.linear_model import ElasticNetCV
    from sklearn.model_selection import GroupKFold, KFold, LeaveOneGroupOut, LeaveOneOut
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from ketflow.io.clinical import read_bids_tsv

    table = read_bids_tsv(out / "group" / "features.tsv")
    result = {}
    for name, model in json.loads((out / "baseline_models.json").read_text()).items():
        if model.get("covariates") or model.get("include_arm") or model.get("arm_interactions"):
            continue
        data = table
        if model.get("arm_subset"):
            data = table[table[model["arm"]] == model["arm_subset"]]
        data = data.dropna(subset=[model["outcome"], *model["predictors"]])
        X, y = data[model["predictors"]].to_numpy(float), data[model["outcome"]].to_numpy(float)
        n = len(y)
        ratios, n_alphas, inner = model["l1_ratios"], model["n_alphas"], model["inner_folds"]

        def pipeline(cv):
            return Pipeline([("s", StandardScaler()), ("e", ElasticNetCV(l1_ratio=ratios, alphas=n_alphas, cv=cv))])

        def nested(yy):
            outer = KFold(model["outer_folds"], shuffle=True, random_state=0) if model["outer_folds"] < n \
                else LeaveOneOut()
            for train, test in outer.split(X):
                cv = KFold(inner, shuffle=True, random_state=0) if inner and inner < len(train) else LeaveOneOut()
                pipeline(cv).fit(X[train], yy[train]).predict(X[test])

        rng = np.random.default_rng(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.process_time()
            pipeline(LeaveOneOut()).fit(X, y)
            nested(y)
            t0 = time.process_time() - start
            start = time.process_time()
            for _ in range(k):
                nested(y[rng.permutation(n)])
            t_perm = (time.process_time() - start) / k
            start = time.process_time()
            for _ in range(k):
                idx = np.sort(rng.integers(0, n, n))
                cv = LeaveOneGroupOut() if not inner or inner >= len(set(idx)) else GroupKFold(inner)
                pipeline(list(cv.split(X[idx], groups=idx))).fit(X[idx], y[idx])
            t_boot = (time.process_time() - start) / k
        result[name] = t0 + model.get("n_permutations", 1000) * t_perm + model.get("n_selection_bootstrap", 1000) * t_boot
    return result


def numpy_vectorised_comparison(n: int = 21, outcomes: int = 200) -> None:
    """One training fold's whole path for many outcomes: the Numba kernel against coordinate descent
    vectorised over outcomes in NumPy (covariance updates, one Python-level loop over coordinates;
    sweeps until the largest change is below the same tolerance, at most 100 per penalty, so its time
    is a lower bound), at p = 11 and p = 207.  Prints the CPU seconds of each and their ratio (the
    reason the engine is compiled)."""
    from ketflow.group import elasticnet as engine

    rng = np.random.default_rng(0)
    for p in (11, 207):
        X = rng.normal(size=(n, p))
        X = (X - X.mean(axis=0)) / X.std(axis=0)
        y = X[:, 0] - X[:, 1] + rng.normal(size=n)
        Y = np.column_stack([y[rng.permutation(n)] for _ in range(outcomes)])
        folds = list(__import__("sklearn.model_selection", fromlist=["KFold"]).KFold(5).split(X))[:1]
        ratios = np.array([0.1, 0.5, 0.9, 1.0])
        alphas = engine.alpha_grid(X, Y, ratios, 100)
        prob = next(engine.fold_problems(X, Y, folds))
        tol2, yy = engine._outcome_scale(Y, engine.DEFAULT_TOL)
        sq = np.zeros_like(alphas)
        engine._path_errors(prob.G, prob.F, prob.C, prob.Xte, prob.Yte, alphas[:1], ratios, tol2[:1], yy[:1],
                            engine.DEFAULT_MAX_SWEEPS, sq[:1])  # compile / load the cache
        start = time.process_time()
        engine._path_errors(prob.G, prob.F, prob.C, prob.Xte, prob.Yte, alphas, ratios, tol2, yy,
                            engine.DEFAULT_MAX_SWEEPS, sq)
        compiled = time.process_time() - start
        start = time.process_time()
        G, C = prob.G, prob.C.T                      # (p, p), (B, p)
        diag = np.diag(G)
        for li, l1 in enumerate(ratios):
            W = np.zeros_like(C)
            grad = C.copy()
            for ai in range(alphas.shape[2]):
                lam1, lam2 = alphas[:, li, ai] * l1, alphas[:, li, ai] * (1 - l1)
                for _ in range(100):  # capped: a lower bound on its time (it may stop unconverged)
                    biggest = np.zeros(len(C))
                    for j in range(p):
                        z = grad[:, j] + diag[j] * W[:, j]
                        new = np.sign(z) * np.maximum(np.abs(z) - lam1, 0) / (diag[j] + lam2)
                        d = new - W[:, j]
                        if np.any(d):
                            W[:, j] = new
                            grad -= d[:, None] * G[j][None, :]
                            biggest = np.maximum(biggest, diag[j] * d * d)
                    if np.all(biggest <= tol2):
                        break
        vectorised = time.process_time() - start
        print(f"  one fold ({n - n // 5} training subjects), p = {p}, {outcomes} outcomes, 4 x 100 penalties: "
              f"Numba kernel {compiled:.2f} s CPU, NumPy vectorised {vectorised:.1f} s CPU "
              f"({vectorised / compiled:.0f}x)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[21, 60, 200])
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--baseline-tree", type=Path, help="checkout of f12c3c1 (omit: no baseline)")
    parser.add_argument("--baseline-permutations", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-full", action="store_true", help="skip the full-circuit model (change-full)")
    parser.add_argument("--kernel-only", action="store_true",
                        help="only the Numba-vs-NumPy comparison of one fold's path")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.child:
        mode, out = args.child[0], Path(args.child[1])
        if mode == "ours":
            res = run_size(args.n, args.nprocs, args.quick, not args.no_full, out)
        elif mode == "baseline":
            res = run_baseline(out, args.baseline_permutations)
        else:
            res = run_sklearn_loop(out, args.baseline_permutations)
        print("RESULT " + json.dumps(res))
        return
    if args.quick:
        args.sizes, args.baseline_permutations = [21], 1
    print(f"load: {os.getloadavg()}")
    if args.kernel_only:
        numpy_vectorised_comparison(outcomes=20 if args.quick else 200)
        return
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[1])
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)

            def child(mode, pythonpath):
                cmd = [sys.executable, __file__, "--child", mode, str(out), "--n", str(n), "--nprocs",
                       str(args.nprocs), "--baseline-permutations", str(args.baseline_permutations)]
                if args.quick:
                    cmd.append("--quick")
                if args.no_full:
                    cmd.append("--no-full")
                start = time.monotonic()
                proc = subprocess.run(cmd, env=dict(env, PYTHONPATH=pythonpath), capture_output=True, text=True)
                if proc.returncode:
                    raise RuntimeError(proc.stderr[-3000:])
                line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
                return json.loads(line[len("RESULT "):]), time.monotonic() - start

            ours, wall = child("ours", here)
            times = ours["times"]
            default = {k: v for k, v in times.items() if k != "change-full"}
            print(f"\nN = {n}: whole default group level (models, PEB, report; child process {wall:.0f} s wall): "
                  f"{sum(v[0] for v in default.values()):.1f} s wall, {sum(v[1] for v in default.values()):.1f} s CPU; "
                  f"peak RSS {ours['peak_rss_mib']:.0f} MiB (load {os.getloadavg()[0]:.1f})")
            old = sklearn = {}
            if args.baseline_tree:
                old, _ = child("baseline", str(args.baseline_tree))
                sklearn, _ = child("sklearn", here)
            print(f"  {'part':28s}{'p':>5s}{'N':>5s}{'wall s':>9s}{'CPU s':>9s}{'f12c3c1 CPU s':>15s}{'x':>7s}"
                  f"{'sklearn CPU s':>15s}{'x':>7s}")
            for name, (w, c, p, nn) in times.items():
                o, s = old.get(name), sklearn.get(name)
                print(f"  {name:28s}{p:5d}{nn:5d}{w:9.1f}{c:9.1f}"
                      + (f"{o:15.0f}{o / c:7.0f}" if o else f"{'':22s}")
                      + (f"{s:15.0f}{s / c:7.0f}" if s else ""), flush=True)


if __name__ == "__main__":
    main()
