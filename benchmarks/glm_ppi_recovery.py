"""Recovery of the simulator's gPPI and conflict activation by ketflow's per-run stages.

Simulates a dataset with :func:`ketflow.simulate.simulate_dataset` (default 10 subjects x
2 sessions, faces and conflict runs, 4 mm, default noise and artefacts) -- or reuses one given with ``--bids`` --
and runs, per run, what the participant workflow runs (its ROI and task-model data stages,
with the default 36P + FD-censoring spikes; the gPPI node's ROI-to-ROI estimates from the
run's percent-scaled data and design; the activation stage, all with the default
configuration), then compares with ``ground_truth.json``:

* faces gPPI, each seed -> target pair a truth defines, contrasts ``fearful-gt-shapes``,
  ``neutral-gt-shapes`` and ``fearful-gt-neutral`` against the truth's ``fearful``,
  ``neutral`` and ``fearful_minus_neutral`` (see ``TARGET_CONTRAST``), for two truths: the
  true strength ``B`` (``ppi_modulation``: the DCM's modulation of amygdala_L -> vmPFC; the
  issue's criterion) and the noise-free gPPI coefficient (``ppi_noise_free``: amygdala_L and
  amygdala_R -> vmPFC; amygdala_R has no direct connection to vmPFC, so it has no B):
  Pearson r across runs
  (all runs, and per session), the fraction of runs with the sign of the truth, the
  regression slope of estimate on truth and the mean per-run z, for the deconvolved gPPI
  (the default) and the non-deconvolved (BOLD product) variant, with mean and
  first-eigenvariate ROI signals, AR(1) (the default) and OLS;
* the same gPPI on the simulator's noise-free ROI signals (``sourcedata/truth``) with a
  plain design (conditions + cosines) and with the run's pipeline design, OLS and AR(1)
  (variants ``noisefree_*``): where recovery is lost on the way to the noisy data;
* conflict activation, dACC ``incongruent-gt-congruent`` (ROI contrast table) against the
  same contrast of ``glm_noise_free``: r, sign agreement, mean error (percent).

Run (about 7.5 minutes for 20 subjects on one core, a third of it simulating)::

    PYTHONPATH=. NIPYPE_NO_ET=1 MPLBACKEND=Agg OMP_NUM_THREADS=1 \\
        python benchmarks/glm_ppi_recovery.py --out /tmp/glm_ppi_recovery [--subjects 20] [--seed 1] \\
        [--noise 1.0] [--bids EXISTING_SIMULATED_BIDS]

Prints a JSON summary (also written to OUT/recovery.json) and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import gppi_roi_signals, prepare_task_run, run_stage

from ketflow.config import load_config
from ketflow.io.design import load_task_design, task_design_from_files
from ketflow.signal.gppi import roi_to_roi_gppi
from ketflow.simulate.bids import noise_free_timeseries, run_files
from ketflow.workflows.bold.activation import init_activation_wf

#: gPPI contrast -> the truth it estimates.  The simulator's noise-free gPPI has interaction
#: terms for fearful and neutral only, so its ``fearful`` is the fearful PPI relative to shapes
#: blocks; ketflow's gPPI has a term for every condition (shapes too), and as the blocks tile
#: the run, a single condition's PPI beta is confounded with the seed's main effect (only
#: differences between conditions are well estimated): fearful-gt-shapes is the comparable
#: quantity.
TARGET_CONTRAST = {"fearful-gt-shapes": "fearful", "neutral-gt-shapes": "neutral",
                   "fearful-gt-neutral": "fearful_minus_neutral"}
EXTRA_CONTRASTS = {"neutral-gt-shapes": {"neutral": 1, "shapes": -1}}
VARIANTS = {  # name -> (ROI signal, deconvolve, noise model); the configuration's default first
    "deconvolved": ("mean", True, "ar1"),
    "bold_product": ("mean", False, "ar1"),
    "deconvolved_eigenvariate": ("eigenvariate", True, "ar1"),
    "deconvolved_ols": ("mean", True, "ols"),
    "bold_product_ols": ("mean", False, "ols"),
}


def faces_estimates(prep: dict, config) -> dict:
    """ROI-to-ROI gPPI of the run in every variant (the gPPI node's estimates, from the run's
    percent-scaled data and task design)."""
    contrasts = {**config.tasks["faces"].contrasts_by_name(), **EXTRA_CONTRASTS}
    design = load_task_design(prep["task_design"])
    out = {}
    for variant, (signal, deconvolve, noise_model) in VARIANTS.items():
        rois = gppi_roi_signals(prep, signal)
        out[variant] = roi_to_roi_gppi(rois, design, ["amygdala_L", "amygdala_R"], contrasts, deconvolve, noise_model)
    return out


def noise_free_estimates(bids: Path, sub: str, ses: str, files: dict, prep: dict, config, n_volumes: int) -> dict:
    """gPPI of the simulator's noise-free ROI signals, with a plain design (conditions + cosines)
    and with the run's pipeline design (+ 36P and spikes), deconvolved or not, OLS or AR(1):
    where recovery is lost between the truth's definition and the noisy data."""
    task = config.tasks["faces"]
    contrasts = {**task.contrasts_by_name(), **EXTRA_CONTRASTS}
    rois = pd.read_csv(noise_free_timeseries(bids, sub, ses, "faces"), sep="\t")
    rois = rois[["vmPFC", "amygdala_L", "amygdala_R"]]
    out = {}
    for design_name, confounds in (("plain", None), ("pipeline", prep["regressors"])):
        design = task_design_from_files(files["events"], files["tr"], n_volumes, files["start_time"], confounds, task,
                                        config.glm)
        for deconvolve in (True, False):
            for noise_model in ("ols", "ar1"):
                name = f"noisefree_{design_name}_{'deconvolved' if deconvolve else 'bold_product'}_{noise_model}"
                out[name] = roi_to_roi_gppi(rois, design, ["amygdala_L", "amygdala_R"], contrasts, deconvolve,
                                            noise_model)
    return out


def conflict_estimate(files, prep, config, n_volumes: int, truth_betas: dict, work: Path) -> tuple[float, float]:
    """(estimated, true) dACC incongruent-gt-congruent, from the run's activation stage."""
    task = config.tasks["conflict"]
    glm = run_stage(init_activation_wf(task, config.glm, mem_gb=1.0, described_tasks={}), work,
                    percent_bold=prep["percent_bold"], task_design=prep["task_design"], brain_mask=files["mask"],
                    labels_file=prep["labels"], labels_tsv=prep["labels_tsv"])["activation"]
    table = pd.read_csv(glm.roi_tsv, sep="\t").set_index(["roi", "contrast"])
    estimate = float(table.loc[("dACC", "incongruent-gt-congruent"), "effect"])
    design = task_design_from_files(files["events"], files["tr"], n_volumes, files["start_time"], None, task,
                                    config.glm)
    truth = sum(w * truth_betas[c] for c, w in design.members["incongruent"].items()) - truth_betas["congruent"]
    return estimate, float(truth)


def summary(est: np.ndarray, truth: np.ndarray, z: np.ndarray | None = None) -> dict:
    est, truth = np.asarray(est, float), np.asarray(truth, float)
    return {
        **({} if z is None else {"mean_z": float(np.mean(z))}),
        "n": int(est.size),
        "r": float(np.corrcoef(est, truth)[0, 1]),
        "sign_agreement": float(np.mean(np.sign(est) == np.sign(truth))),
        "slope": float(np.polyfit(truth, est, 1)[0]),
        "mean_estimate": float(est.mean()),
        "mean_truth": float(truth.mean()),
    }


def evaluate(rows: pd.DataFrame, keys: list[str]) -> dict:
    out = {}
    for key_values, group in rows.groupby(keys, sort=False):
        name = "/".join(map(str, key_values if isinstance(key_values, tuple) else (key_values,)))
        z = group["z"] if "z" in group else None
        out[name] = {"all": summary(group["estimate"], group["truth"], z)}
        for ses, part in group.groupby("session"):
            out[name][ses] = summary(part["estimate"], part["truth"])
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/glm_ppi_recovery"))
    parser.add_argument("--subjects", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--noise", type=float, default=1.0, help="voxel noise SD (percent), simulator's --noise")
    parser.add_argument("--bids", type=Path, help="reuse a simulated dataset instead of simulating")
    parser.add_argument("--strategy", choices=["24P", "36P", "aCompCor"],
                        help="confound strategy of the GLM and gPPI (default: the packaged configuration's)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    timing = {}
    bids = args.bids
    if bids is None:
        from ketflow.simulate import simulate_dataset

        t0 = time.perf_counter()
        bids = simulate_dataset(args.out / "bids", n_subjects=args.subjects, seed=args.seed, noise=args.noise,
                                tasks=["faces", "conflict"])
        timing["simulate_s"] = time.perf_counter() - t0
    bids = Path(bids)
    truth = json.loads((bids / "ground_truth.json").read_text())
    config = load_config()
    if args.strategy:
        config.denoising.strategy = args.strategy
    ppi_rows, act_rows = [], []
    t0 = time.perf_counter()
    for sub_key, subject in sorted(truth["subjects"].items()):
        sub = sub_key.removeprefix("sub-")
        for ses, session in subject["sessions"].items():
            work = args.out / "work" / sub_key / ses
            faces = run_files(bids, sub, ses, "faces")
            n_faces = session["faces"]["run"]["n_volumes"]
            prep = prepare_task_run(faces, config, "faces", work / "faces")
            estimates = faces_estimates(prep, config)
            estimates.update(noise_free_estimates(bids, sub, ses, faces, prep, config, n_faces))
            truths = {"B": session["faces"]["ppi_modulation"],
                      "noise_free_ppi": session["faces"]["run"]["ppi_noise_free"]}
            for kind, ppi_truth in truths.items():
                for seed, values in ppi_truth["seeds"].items():
                    for contrast, truth_key in TARGET_CONTRAST.items():
                        if values[truth_key] is None or (kind == "B" and truth_key == "neutral"):
                            continue  # absent condition; B_neutral is 0 in every run (no faces modulation)
                        for variant, table in estimates.items():
                            row = table[(table["seed"] == seed) & (table["target"] == ppi_truth["target"])
                                        & (table["contrast"] == contrast)]
                            ppi_rows.append({"truth_kind": kind, "subject": sub, "session": ses, "seed": seed,
                                             "contrast": contrast, "variant": variant,
                                             "estimate": float(row["effect"].iloc[0]),
                                             "z": float(row["z"].iloc[0]), "truth": values[truth_key]})
            conflict = run_files(bids, sub, ses, "conflict")
            n_conflict = session["conflict"]["run"]["n_volumes"]
            prep = prepare_task_run(conflict, config, "conflict", work / "conflict")
            est, tru = conflict_estimate(conflict, prep, config, n_conflict,
                                         session["conflict"]["run"]["glm_noise_free"]["dACC"], work / "conflict")
            act_rows.append({"subject": sub, "session": ses, "estimate": est, "truth": tru})
    timing["estimate_s"] = time.perf_counter() - t0
    ppi = pd.DataFrame(ppi_rows)
    act = pd.DataFrame(act_rows)
    ppi.to_csv(args.out / "ppi_estimates.tsv", sep="\t", index=False)
    act.to_csv(args.out / "activation_estimates.tsv", sep="\t", index=False)
    result = {
        "dataset": {"bids": str(bids), "subjects": len(truth["subjects"]), "arguments": truth["arguments"]},
        "ppi_vmPFC_target": evaluate(ppi, ["truth_kind", "variant", "seed", "contrast"]),
        "dACC_incongruent_gt_congruent": {
            **evaluate(act.assign(k="dACC"), ["k"])["dACC"],
            "mean_error_percent": float((act["estimate"] - act["truth"]).mean()),
        },
        "timing_s": timing,
    }
    (args.out / "recovery.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print("\n| truth | variant | seed -> vmPFC | contrast | r (all runs) | r pre / post | sign agreement | mean z |")
    print("|---|---|---|---|---|---|---|---|")
    for name, res in result["ppi_vmPFC_target"].items():
        kind, variant, seed, contrast = name.split("/")
        a = res["all"]
        print(f"| {kind} | {variant} | {seed} | {contrast} | {a['r']:.2f} | {res['pre']['r']:.2f} / "
              f"{res['post']['r']:.2f} | {a['sign_agreement']:.2f} | {a['mean_z']:.2f} |")
    d = result["dACC_incongruent_gt_congruent"]
    print(f"\ndACC incongruent-gt-congruent: r {d['all']['r']:.2f} (pre {d['pre']['r']:.2f}, post "
          f"{d['post']['r']:.2f}), sign agreement {d['all']['sign_agreement']:.2f}, mean error "
          f"{d['mean_error_percent']:.3f} %")
    return result


if __name__ == "__main__":
    main()
