"""Does the whole pipeline recover the simulator's clinical model?  (simulate -> participant -> group)

Run (2 cores; about 1 min of CPU per subject at the participant level plus the group level,
see docs/group.md for measured times):

    NIPYPE_NO_ET=1 MPLBACKEND=Agg /work/main/.venv/bin/python benchmarks/group_simulator_recovery.py \\
        /tmp/group/recovery --subjects 40 --seed 7 [--voxel-size 4] [--nprocs 2] [--config FILE]

Simulates N subjects (``ketflow-simulate``), runs ``ketflow ... participant`` and
``ketflow ... group`` with the packaged default configuration (or ``--config``), and reports,
against ``ground_truth.json``:

* the participant level's estimation error of the measures that drive symptom change (faces
  DCM B fearful amygdala_L -> vmPFC, conflict dACC incongruent - congruent) and of the
  resting vmPFC - amygdala_L Fisher z (bias and SD over subjects and sessions);
* for the ``change`` model: whether each true driver is retained with the right sign, its
  selection frequency, nested-CV R^2 / r and permutation p-values;
* for the ``change-by-arm`` model: the arm x B-change interaction (coefficient, sign,
  selection frequency) against the truth (``clinical_model.interaction``);
* wall and CPU time of each step.  Existing outputs in OUT are reused (rerun = resume).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

#: ground_truth.json measure -> ketflow feature-table measure.
TRUTH_TO_MEASURE = {
    "faces_B_fearful_amygdala_L_to_vmPFC": "dcm_faces_B_amygdala_L-to-vmPFC_fearful",
    "conflict_dACC_incongruent_minus_congruent": "activation_conflict_incongruent-gt-congruent_dACC",
    "rest_vmPFC_amygdala_coupling": "fc_rest_vmPFC-amygdala_L",
}


def _run(label: str, cmd: list[str]) -> None:
    start, cpu = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    env = dict(os.environ, NIPYPE_NO_ET="1", MPLBACKEND="Agg")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
    print(f"{label}: exit {proc.returncode}, {time.monotonic() - start:.0f} s wall, {used:.0f} s CPU "
          f"(load average {os.getloadavg()[0]:.1f})", flush=True)
    if proc.returncode != 0:
        sys.exit(proc.stdout[-3000:] + proc.stderr[-3000:])


def estimation_errors(bids: Path, out: Path) -> pd.DataFrame:
    """Bias and SD of (estimate - truth) over subjects and sessions for the clinical drivers."""
    truth = json.loads((bids / "ground_truth.json").read_text())
    rows = []
    for sub, subject in truth["subjects"].items():
        for ses, session in subject["sessions"].items():
            func = out / sub / f"ses-{ses}" / "func"
            dcm = [p for p in func.glob("*task-faces*_dcm.json") if "_desc-" not in p.name]
            if dcm:
                est = json.loads(dcm[0].read_text())
                names = est["region_names"]
                regions = session["faces"]["dcm"]["regions"]
                k = est["input_names"].index("fearful")
                rows.append(("dcm B fearful amygdala_L->vmPFC (Hz)",
                             est["Ep"]["B"][k][names.index("vmPFC")][names.index("amygdala_L")],
                             session["faces"]["dcm"]["B"][1][regions.index("vmPFC")][regions.index("amygdala_L")]))
            con = list(func.glob("*task-conflict*_stat-effect_contrasts.tsv"))
            if con:
                table = pd.read_csv(con[0], sep="\t").set_index(["roi", "contrast"])
                amp = session["conflict"]["activation"]["dACC"]
                rows.append(("activation dACC incongruent-gt-congruent",
                             table.loc[("dACC", "incongruent-gt-congruent"), "effect"], amp["cI"] - amp["congruent"]))
            rest = list(func.glob("*task-rest*_stat-fisherz_relmat.tsv"))
            if rest:
                matrix = pd.read_csv(rest[0], sep="\t", index_col=0)
                order = session["rest"]["roi_order"]
                coupling = np.array(session["rest"]["coupling"])
                rows.append(("fc vmPFC-amygdala_L (Fisher z)", matrix.loc["vmPFC", "amygdala_L"],
                             np.arctanh(coupling[order.index("vmPFC"), order.index("amygdala_L")])))
    frame = pd.DataFrame(rows, columns=["measure", "estimate", "truth"])
    frame["error"] = frame["estimate"] - frame["truth"]
    return frame.groupby("measure").agg(n=("error", "size"), bias=("error", "mean"), sd=("error", "std"),
                                        truth_sd=("truth", "std"))


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=["n/a"])


def recovery(bids: Path, out: Path) -> None:
    truth = json.loads((bids / "ground_truth.json").read_text())["clinical_model"]
    group = out / "group"
    models = _read(group / "models.tsv").set_index("model")
    print(models[["status", "n_included", "n_excluded", "n_predictors", "reason"]].to_string())
    perf = json.loads((group / "model-change_performance.json").read_text())
    coefs = _read(group / "model-change_coefficients.tsv").set_index("predictor")
    sel = _read(group / "model-change_selectionfrequencies.tsv").set_index("predictor")
    print(f"change model ({perf['settings']['n_subjects']} subjects, {len(coefs)} predictors, "
          f"{int(coefs['retained'].sum())} retained):")
    for driver in truth["drivers"]:
        col = TRUTH_TO_MEASURE[driver["measure"]] + "__change"
        coef = coefs.loc[col, "coef"]
        sign_ok = (coef < 0) if driver["sign"] == "negative" else (coef > 0)
        print(f"  {col}: true {driver['coefficient']:+g} ({driver['sign']}); refit coef {coef:+.3g} "
              f"({'retained with the right sign' if sign_ok else 'NOT retained with the right sign'}), "
              f"selection frequency {sel.loc[col, 'frequency']:.2f} (positive {sel.loc[col, 'positive']:.2f})")
    oos = perf["out_of_sample"]
    for key in ("r2", "r"):
        print(f"  nested CV {key} = {oos[key]['estimate']:.3f} {oos[key]['interval']} "
              f"permutation p = {oos[key]['p_permutation']:.4f} ({perf['settings']['n_permutations_run']} permutations)")
    inter = truth["interaction"]
    by_arm = group / "model-changeByArm_coefficients.tsv"
    if by_arm.is_file():
        coefs = _read(by_arm).set_index("predictor")
        sel = _read(group / "model-changeByArm_selectionfrequencies.tsv").set_index("predictor")
        name = [c for c in coefs.index if c.endswith(":" + TRUTH_TO_MEASURE[inter["measure"]] + "__change")][0]
        print(f"change-by-arm model: {name}: truth {'present' if inter['enabled'] else 'absent'} "
              f"({inter['coefficient']:+g}, {inter['sign']}); refit coef {coefs.loc[name, 'coef']:+.3g}, "
              f"selection frequency {sel.loc[name, 'frequency']:.2f} (positive {sel.loc[name, 'positive']:.2f})")
        perf = json.loads((group / "model-changeByArm_performance.json").read_text())
        print(f"  nested CV R2 = {perf['out_of_sample']['r2']['estimate']:.3f}, "
              f"p = {perf['out_of_sample']['r2']['p_permutation']:.4f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--subjects", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--voxel-size", type=float, default=4.0)
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--config", type=Path)
    args = parser.parse_args(argv)
    bids, out, work = args.root / "bids", args.root / "out", args.root / "work"
    py = [sys.executable, "-m"]
    config = ["--config", str(args.config)] if args.config else []
    if not (bids / "ground_truth.json").is_file():
        _run(f"simulate {args.subjects} subjects", py + ["ketflow.simulate.cli", str(bids), "--subjects",
             str(args.subjects), "--seed", str(args.seed), "--voxel-size", str(args.voxel_size)])
    _run("participant level", py + ["ketflow", str(bids), str(out), "participant", "-w", str(work), "--nprocs",
                                    str(args.nprocs), "--skip-bids-validation", *config])
    _run("group level", py + ["ketflow", str(bids), str(out), "group", "-w", str(work), "--nprocs",
                              str(args.nprocs), *config])
    print("participant-level estimation error (estimate - truth, over subjects x sessions):")
    print(estimation_errors(bids, out).to_string(float_format=lambda v: f"{v:.3f}"))
    recovery(bids, out)


if __name__ == "__main__":
    main()
