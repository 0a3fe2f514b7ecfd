"""Per-session estimation error of the task measures under each task-model confound strategy.

Simulates (or reuses, ``--bids``) a dataset of faces and conflict runs (``ketflow.simulate``,
4 mm, default noise and artefacts: motion, physiological noise, global signal fluctuations,
spikes) and, per run and per candidate ``denoising.task_strategy`` (``--strategies``; each with
FD censoring by spike regressors, as the task models use them), runs the participant
workflow's own ROI and task-model data stages (``benchmarks/common.prepare_task_run``) and
computes, from the run's percent-scaled ROI means and design:

* **activation**: the dACC ``incongruent-gt-congruent`` contrast (AR(1) GLM, the activation
  stage's ROI table), against the same contrast of the simulator's noise-free betas;
* **gPPI**: amygdala_L -> vmPFC ``fearful-gt-shapes`` (deconvolved, AR(1): the packaged gPPI),
  against the true fearful modulation B (Hz; ``ppi_modulation``): the error in Hz-equivalent is
  the residual SD of the estimate's regression on B divided by its slope (docs/group.md);
* **beta series**: the conflict ``incongruent-gt-congruent`` Fisher z contrast of every ROI pair
  (LSS, :mod:`ketflow.signal.betaseries`).  The simulator has no trial-by-trial variability, so
  every pair's true value is 0: the SD over runs is the estimation error, the mean its bias.

Prints per strategy the bias and SD of the error of each measure (the ``error_sd`` the
feature-level power benchmark takes: ``benchmarks/task_group_power.py``), and writes the per-run
estimates (OUT/estimates.tsv) and the summary (OUT/errors.json).

Run (about 1 min to simulate and ~6 s CPU per run and strategy at 4 mm, 150 volumes)::

    PYTHONPATH=. NIPYPE_NO_ET=1 MPLBACKEND=Agg OMP_NUM_THREADS=1 \\
        python benchmarks/task_measure_error.py --out /tmp/task_error --subjects 12 --seed 5
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from common import gppi_roi_signals, prepare_task_run

from ketflow.config import load_config
from ketflow.io.design import load_task_design
from ketflow.io.tables import read_events
from ketflow.signal.betaseries import beta_series, contrast_fisher_z, trial_table
from ketflow.signal.design import contrast_vector
from ketflow.signal.glm import roi_contrasts
from ketflow.signal.gppi import nuisance_columns, roi_to_roi_gppi
from ketflow.simulate.bids import run_files

STRATEGIES = ("36P", "24P", "aCompCor")
BETA_CONTRAST = "incongruent-gt-congruent"


def conflict_estimates(prep: dict, files: dict, config, truth_betas: dict) -> tuple[dict, pd.DataFrame]:
    """dACC activation (estimate, truth) and the beta-series contrast of every ROI pair of one run."""
    task = config.tasks["conflict"]
    design = load_task_design(prep["task_design"])
    rois = gppi_roi_signals(prep, "mean")
    vector = contrast_vector(task.contrasts[BETA_CONTRAST], design)
    table = roi_contrasts(rois, design.matrix, {BETA_CONTRAST: vector}, config.glm.noise_model)
    estimate = float(table.set_index("roi").loc["dACC", "effect"])
    members = design.members
    truth = (sum(w * truth_betas["dACC"][c] for c, w in members["incongruent"].items())
             - sum(w * truth_betas["dACC"][c] for c, w in members["congruent"].items()))
    derived = [d.model_dump() for d in task.derived_conditions]
    trials = trial_table(read_events(files["events"]), design, task.conditions, derived)
    nuisance = design.matrix[nuisance_columns(design)].to_numpy()
    matrices = beta_series(rois.to_numpy(), trials, design, nuisance, min_trials=config.beta_series.min_trials,
                           max_variance_inflation=config.beta_series.max_variance_inflation).matrices
    z = contrast_fisher_z(matrices, task.contrasts[BETA_CONTRAST])
    names = list(rois.columns)
    pairs = pd.DataFrame([{"pair": f"{names[i]}-{names[j]}", "estimate": z[i, j],
                           "r_incongruent": matrices["incongruent"][i, j], "r_congruent": matrices["congruent"][i, j]}
                          for i in range(len(names)) for j in range(i + 1, len(names))])
    return {"estimate": estimate, "truth": float(truth)}, pairs


def gppi_estimate(prep: dict, config) -> float:
    """amygdala_L -> vmPFC fearful-gt-shapes of the packaged gPPI (deconvolved, AR(1), mean signal)."""
    design = load_task_design(prep["task_design"])
    table = roi_to_roi_gppi(gppi_roi_signals(prep, "mean"), design, ["amygdala_L"],
                            {"fearful-gt-shapes": {"fearful": 1, "shapes": -1}}, config.ppi.deconvolve,
                            config.glm.noise_model)
    row = table[(table["target"] == "vmPFC") & (table["contrast"] == "fearful-gt-shapes")]
    return float(row["effect"].iloc[0])


def summarise(act: pd.DataFrame, ppi: pd.DataFrame, beta: pd.DataFrame) -> dict:
    """Bias and SD of the per-session error of each measure, per strategy."""
    out = {}
    for strategy in act["strategy"].unique():
        a = act[act["strategy"] == strategy]
        p = ppi[ppi["strategy"] == strategy]
        b = beta[beta["strategy"] == strategy]
        error = a["estimate"] - a["truth"]
        slope, intercept = np.polyfit(p["truth"], p["estimate"], 1)
        residual = p["estimate"] - (slope * p["truth"] + intercept)
        by_pair = b.groupby("pair")["estimate"]
        out[strategy] = {
            "runs": int(len(a)),
            "activation_dACC": {"bias": float(error.mean()), "error_sd": float(error.std(ddof=1)),
                                "r": float(np.corrcoef(a["estimate"], a["truth"])[0, 1])},
            "ppi_amygdala_L_to_vmPFC": {"r": float(np.corrcoef(p["estimate"], p["truth"])[0, 1]),
                                        "slope": float(slope), "residual_sd": float(residual.std(ddof=2)),
                                        "error_sd_hz": float(residual.std(ddof=2) / slope) if slope > 0 else None},
            "betaseries_contrast": {"bias_mean_over_pairs": float(by_pair.mean().mean()),
                                    "largest_abs_pair_bias": float(by_pair.mean().abs().max()),
                                    "error_sd": float(np.sqrt((by_pair.var(ddof=1)).mean())),
                                    "mean_r_incongruent": float(b["r_incongruent"].mean()),
                                    "mean_r_congruent": float(b["r_congruent"].mean())},
        }
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/task_error"))
    parser.add_argument("--subjects", type=int, default=12)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--n-volumes", type=int, default=150)
    parser.add_argument("--voxel-size", type=float, default=4.0)
    parser.add_argument("--bids", type=Path, help="reuse a simulated dataset")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--quick", action="store_true", help="4 subjects, 100 volumes")
    args = parser.parse_args(argv)
    if args.quick:
        args.subjects, args.n_volumes = 4, 100
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"load at start: {os.getloadavg()}", flush=True)
    bids = args.bids
    if bids is None:
        from ketflow.simulate import simulate_dataset

        bids = args.out / "bids"
        if not (bids / "ground_truth.json").exists():
            simulate_dataset(bids, n_subjects=args.subjects, seed=args.seed, voxel_size=args.voxel_size,
                             n_volumes=args.n_volumes, tasks=["faces", "conflict"])
    truth = json.loads((Path(bids) / "ground_truth.json").read_text())
    act_rows, ppi_rows, beta_rows = [], [], []
    cpu = time.process_time()
    for strategy in args.strategies:
        config = load_config()
        config.denoising.task_strategy = strategy
        for sub_key, subject in sorted(truth["subjects"].items()):
            sub = sub_key.removeprefix("sub-")
            for ses, session in subject["sessions"].items():
                work = args.out / "work" / strategy / sub_key / ses
                faces = run_files(bids, sub, ses, "faces")
                prep = prepare_task_run(faces, _task_config(config), "faces", work / "faces")
                b_true = session["faces"]["ppi_modulation"]["seeds"]["amygdala_L"]["fearful"]
                ppi_rows.append({"strategy": strategy, "subject": sub, "session": ses,
                                 "estimate": gppi_estimate(prep, config), "truth": b_true})
                conflict = run_files(bids, sub, ses, "conflict")
                prep = prepare_task_run(conflict, _task_config(config), "conflict", work / "conflict")
                act, pairs = conflict_estimates(prep, conflict, config,
                                                session["conflict"]["run"]["glm_noise_free"])
                act_rows.append({"strategy": strategy, "subject": sub, "session": ses, **act})
                beta_rows += [dict(r, strategy=strategy, subject=sub, session=ses) for r in pairs.to_dict("records")]
        print(f"{strategy}: done ({time.process_time() - cpu:.0f} s CPU so far)", flush=True)
    act, ppi, beta = pd.DataFrame(act_rows), pd.DataFrame(ppi_rows), pd.DataFrame(beta_rows)
    pd.concat([act.assign(measure="activation_dACC"), ppi.assign(measure="ppi_amygdala_L-to-vmPFC"),
               beta.assign(measure="betaseries_" + beta["pair"])]).to_csv(args.out / "estimates.tsv", sep="\t",
                                                                         index=False)
    result = {"bids": str(bids), "subjects": len(truth["subjects"]), "cpu_s": round(time.process_time() - cpu, 1),
              "load_at_end": os.getloadavg(), "errors": summarise(act, ppi, beta)}
    (args.out / "errors.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return result


def _task_config(config):
    """``prepare_task_run`` builds the task-model confounds from ``config.denoising``: hand it the
    task models' settings, as the participant workflow does (``Denoising.for_task_models``)."""
    return config.model_copy(update={"denoising": config.denoising.for_task_models()})


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    main()
