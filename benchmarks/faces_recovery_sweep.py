"""gPPI and DCM recovery of the faces truth under alternative simulator settings (ROI level).

Which settings of the simulated faces DCM (:class:`ketflow.simulate.parameters.FacesModel`:
between-subject spread of the fearful modulation B, amplitude and time scale of the
spontaneous amygdala input) make a fair test bed for gPPI and DCM?  Simulating the voxels for
every setting would take minutes per setting; this script simulates them once and reuses the
noise:

1. ``simulate_dataset`` writes a faces-only dataset (default settings, 4 mm, default noise and
   artefacts), or ``--bids`` gives one;
2. per run, the participant workflow's nodes build the ROIs and the GLM confounds (BuildROIs,
   SelectConfounds: 36P + FD spikes), the voxels are scaled to percent of their mean and
   averaged per ROI (the gPPI's ``mean`` ROI signal); the run's *noise* is that ROI signal minus
   the noise-free ROI signal the simulator stored (voxel noise, physiological noise, motion,
   spikes, drift as they reach the ROI means);
3. for every setting, each run's noise-free ROI signals are generated again with the
   simulator's own functions and random streams (same subject draws, events and standard-normal
   draws of the spontaneous inputs; only the setting differs), the run's noise is added, and
   * the gPPI of the pipeline (design: conditions + the run's confounds and spikes + cosines;
     AR(1); seed amygdala_L, target vmPFC; deconvolved and BOLD product) gives the
     ``fearful-gt-shapes`` and ``fearful-gt-neutral`` PPI,
   * the default two-region DCM (vmPFC, amygdala_L; SPM priors, ``m_step: newton``; data
     residualised on the same nuisance columns, which are X0) is fitted;
4. both are compared across runs with the true strength B (``ppi_modulation``) and the
   noise-free gPPI coefficient (``ppi_noise_free``): Pearson r, fraction of runs with the
   right sign, mean z; DCM: coverage of the 90 % credible intervals of A, B, C (C against the
   truth times the fit's ``data_scale``, the units of the rescaled data it refers to) and
   r(posterior mean of B, B).

ROI means stand in for the DCM path's eigenvariates (``benchmarks/dcm_simulator_recovery.py``
runs that path); the full voxel-level numbers of the default setting come from
``benchmarks/glm_ppi_recovery.py`` and ``benchmarks/dcm_simulator_recovery.py``.

Run (about 3 min to simulate 30 subjects, then ~20 s per setting and noise scale on one core)::

    PYTHONPATH=. NIPYPE_NO_ET=1 MPLBACKEND=Agg OMP_NUM_THREADS=1 \\
        python benchmarks/faces_recovery_sweep.py --out /tmp/faces_sweep --subjects 30 --seed 2 \\
        [--n-volumes 150] [--noise-scales 1,0.5,0] [--hC 1] [--settings default,before,...]

Prints a Markdown table (also written to OUT/sweep.md) and writes OUT/sweep.tsv.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np
import pandas as pd

from common import gppi_roi_signals, prepare_task_run

from ketflow.config import load_config
from ketflow.dcm import fit_dcm
from ketflow.dcm.spec import build_spec
from ketflow.io.design import load_task_design
from ketflow.io.tables import read_events
from ketflow.signal.gppi import nuisance_columns, roi_to_roi_gppi
from ketflow.simulate.bids import noise_free_timeseries, run_files
from ketflow.simulate.dataset import _allocation
from ketflow.simulate.design import faces_events
from ketflow.simulate.grid import roi_names
from ketflow.simulate.parameters import FacesModel, draw_subject
from ketflow.simulate.signals import faces_signals, noise_free_ppi

DCM_REGIONS = ["vmPFC", "amygdala_L", "amygdala_R"]
#: name -> (FacesModel, description); "default" is the simulator's, "before" the earlier one
SETTINGS = {
    "default": (FacesModel(), "spontaneous BOLD SD ~1 % (= rest), smoothing 1 s, B SD 0.25"),
    "before": (FacesModel(0.35, 0.08, 0.3, 2.0), "earlier simulator: input SD 0.3 (BOLD ~0.4 %), 2 s, B SD 0.08"),
    "b_spread_only": (FacesModel(0.35, 0.25, 0.3, 2.0), "earlier spontaneous input, B SD 0.25"),
    "spontaneous_only": (FacesModel(0.35, 0.08, 0.85, 1.0), "spontaneous ~1 %, B SD 0.08"),
    "spontaneous_evoked": (FacesModel(0.35, 0.25, 0.55, 1.0), "spontaneous BOLD SD ~0.65 % (= evoked SD)"),
    "spontaneous_1.5": (FacesModel(0.35, 0.25, 1.3, 1.0), "spontaneous BOLD SD ~1.5 %"),
    "smoothing_2s": (FacesModel(0.35, 0.25, 0.68, 2.0), "spontaneous ~1 %, smoothing 2 s"),
}
CONTRASTS = {"fearful-gt-shapes": ("fearful - shapes", "fearful"),
             "fearful-gt-neutral": ("fearful - neutral", "fearful_minus_neutral")}


def extract_runs(bids: Path, work: Path) -> dict:
    """Per faces run: the pipeline design and the noise of the vmPFC / amygdala ROI means."""
    truth = json.loads((bids / "ground_truth.json").read_text())
    config = load_config()
    runs = []
    for sub_key, subject in sorted(truth["subjects"].items()):
        sub = sub_key.removeprefix("sub-")
        for ses in ("pre", "post"):
            files = run_files(bids, sub, ses, "faces")
            n = subject["sessions"][ses]["faces"]["run"]["n_volumes"]
            prep = prepare_task_run(files, config, "faces", work / "runs" / sub_key / ses)
            rois = gppi_roi_signals(prep, "mean")
            noise_free = pd.read_csv(noise_free_timeseries(bids, sub, ses, "faces"), sep="\t")
            runs.append({
                "subject_index": int(sub) - 1, "session": ses, "n_volumes": n, "tr": files["tr"],
                "start_time": files["start_time"],
                "events": read_events(files["events"]),
                "design": load_task_design(prep["task_design"]),
                "noise": {r: rois[r].to_numpy() - noise_free[r].to_numpy() for r in DCM_REGIONS},
            })
    return {"seed": truth["seed"], "n_subjects": len(truth["subjects"]), "runs": runs}


def run_truth(data: dict, run: dict, faces: FacesModel, names: list[str], arms: list[str]):
    """The run's noise-free ROI signals and truth under ``faces`` (the simulator's random streams)."""
    seed, i = data["seed"], run["subject_index"]
    params = draw_subject(np.random.default_rng([seed, 1, i]), arms[i], names,
                          rest_rng=np.random.default_rng([seed, 3, i]), faces=faces)
    truth = params["sessions"][run["session"]]["faces"]
    rng = np.random.default_rng([seed, 2, i, ("pre", "post").index(run["session"]), 0])  # the faces run's stream
    events = faces_events(run["n_volumes"], run["tr"], rng)
    if not np.allclose(events["onset"], run["events"]["onset"]):
        raise RuntimeError("regenerated events differ from the dataset's: not the simulator's random streams")
    signals, u = faces_signals(events, truth, run["n_volumes"], run["tr"], run["start_time"], rng)
    ppi = noise_free_ppi(signals, u, events, truth["dcm"], run["n_volumes"], run["tr"], run["start_time"])
    return signals, truth, ppi


def fit_two_region_dcm(rois: pd.DataFrame, run: dict, model: dict) -> dict:
    """The packaged DCM on ROI means residualised on the design's nuisance columns (X0)."""
    x0 = run["design"].matrix[nuisance_columns(run["design"])].to_numpy(dtype=float)
    q = np.linalg.qr(x0 / np.linalg.norm(x0, axis=0))[0]
    y = rois.to_numpy() - q @ (q.T @ rois.to_numpy())
    confounds = pd.DataFrame(x0[:, np.ptp(x0, axis=0) > 0])
    spec = build_spec(pd.DataFrame(y, columns=rois.columns), run["events"], run["tr"], run["start_time"], model,
                      confounds=confounds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fit_dcm(spec).to_dict()


def dcm_rows(result: dict, truth: dict) -> list[dict]:
    a, b, c = (np.asarray(truth["dcm"][k]) for k in ("A", "B", "C"))
    true = {"A_to1_from1": a[0, 0], "A_to2_from1": a[1, 0], "A_to1_from2": a[0, 1], "A_to2_from2": a[1, 1],
            "B_to1_from2_in2": b[1, 0, 1], "C_to2_in1": c[1, 0] * result["data_scale"]}
    table = {row["name"]: row for row in result["parameters"]}
    return [{"parameter": k, "truth": v, "estimate": table[k]["posterior_mean"],
             "covered": table[k]["ci90_low"] <= v <= table[k]["ci90_high"]} for k, v in true.items()]


def evaluate(data: dict, name: str, faces: FacesModel, noise_scale: float, model: dict) -> tuple[dict, pd.DataFrame]:
    names = roi_names()
    arms = _allocation(data["n_subjects"], data["seed"])
    ppi_rows, dcm = [], []
    for k, run in enumerate(data["runs"]):
        signals, truth, ppi = run_truth(data, run, faces, names, arms)
        rois = pd.DataFrame({r: signals[r] + noise_scale * run["noise"][r] for r in DCM_REGIONS})
        b_true = truth["ppi_modulation"]["seeds"]["amygdala_L"]
        for deconvolve in (True, False):
            table = roi_to_roi_gppi(rois, run["design"], ["amygdala_L"], {c: e for c, (e, _) in CONTRASTS.items()},
                                    deconvolve, "ar1")
            for contrast, (_, key) in CONTRASTS.items():
                row = table[(table["target"] == "vmPFC") & (table["contrast"] == contrast)].iloc[0]
                ppi_rows.append({"run": k, "session": run["session"], "deconvolved": deconvolve, "contrast": contrast,
                                 "estimate": row["effect"], "z": row["z"], "B": b_true[key],
                                 "noise_free_ppi": ppi["amygdala_L"][key]})
        if model is not None:
            dcm += [{"run": k, **r} for r in dcm_rows(fit_two_region_dcm(rois[model["regions"]], run, model), truth)]
    ppi = pd.DataFrame(ppi_rows)
    out = {"setting": name, "noise_scale": noise_scale, "description": SETTINGS[name][1]}
    first = ppi[ppi["deconvolved"] & (ppi["contrast"] == "fearful-gt-shapes")]
    out["sd_B"] = float(first["B"].std())
    out["r_noise_free_ppi_B"] = float(np.corrcoef(first["noise_free_ppi"], first["B"])[0, 1])
    for (deconvolve, contrast), g in ppi.groupby(["deconvolved", "contrast"]):
        key = f"{'deconvolved' if deconvolve else 'bold_product'}/{contrast}"
        out[f"{key}/r_B"] = float(np.corrcoef(g["estimate"], g["B"])[0, 1])
        out[f"{key}/r_noise_free_ppi"] = float(np.corrcoef(g["estimate"], g["noise_free_ppi"])[0, 1])
        out[f"{key}/sign"] = float(np.mean(np.sign(g["estimate"]) == np.sign(g["B"])))
        out[f"{key}/mean_z"] = float(g["z"].mean())
    if dcm:
        frame = pd.DataFrame(dcm)
        out["dcm_coverage"] = float(frame["covered"].mean())
        for family in "ABC":
            out[f"dcm_coverage_{family}"] = float(frame[frame["parameter"].str[0] == family]["covered"].mean())
        b = frame[frame["parameter"] == "B_to1_from2_in2"]
        out["dcm_r_B"] = float(np.corrcoef(b["estimate"], b["truth"])[0, 1])
    return out, ppi


def markdown(rows: list[dict]) -> str:
    head = ("| setting | noise | SD(B) | r(noise-free PPI, B) | gPPI fearful-gt-shapes r(B) / r(nf) / sign / z | "
            "fearful-gt-neutral r(B) | BOLD product fgs r(B) | DCM coverage (A/B/C) | DCM r(B) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        d = "deconvolved/fearful-gt-shapes"
        cov = (f"{r['dcm_coverage']:.2f} ({r['dcm_coverage_A']:.2f}/{r['dcm_coverage_B']:.2f}/"
               f"{r['dcm_coverage_C']:.2f})" if "dcm_coverage" in r else "")
        lines.append(
            f"| {r['setting']} | {r['noise_scale']:g} | {r['sd_B']:.2f} | {r['r_noise_free_ppi_B']:.2f} | "
            f"{r[d + '/r_B']:.2f} / {r[d + '/r_noise_free_ppi']:.2f} / {r[d + '/sign']:.2f} / {r[d + '/mean_z']:.2f} | "
            f"{r['deconvolved/fearful-gt-neutral/r_B']:.2f} | {r['bold_product/fearful-gt-shapes/r_B']:.2f} | {cov} | "
            f"{r.get('dcm_r_B', float('nan')):.2f} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/faces_sweep"))
    parser.add_argument("--subjects", type=int, default=30)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--n-volumes", type=int, default=150, help="faces run length (volumes)")
    parser.add_argument("--bids", type=Path, help="reuse a simulated dataset (faces runs) instead of simulating")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma list of {list(SETTINGS)}")
    parser.add_argument("--noise-scales", default="1", help="comma list of factors on the runs' noise (0: noise-free)")
    parser.add_argument("--hC", type=float, help="DCM noise hyperprior variance (default: the configuration's)")
    parser.add_argument("--no-dcm", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    bids = args.bids
    if bids is None:
        from ketflow.simulate import simulate_dataset

        t0 = time.perf_counter()
        bids = simulate_dataset(args.out / "bids", n_subjects=args.subjects, seed=args.seed, tasks=["faces"],
                                n_volumes={"faces": args.n_volumes})
        print(f"simulated in {time.perf_counter() - t0:.0f} s")
    data = extract_runs(Path(bids), args.out / "work")
    model = None
    if not args.no_dcm:
        model = load_config().dcm.model_layout()
        if args.hC is not None:
            model["options"]["hC"] = args.hC
    rows, frames = [], []
    for name in args.settings.split(","):
        for scale in (float(s) for s in args.noise_scales.split(",")):
            t0 = time.perf_counter()
            row, ppi = evaluate(data, name, SETTINGS[name][0], scale, model)
            rows.append(row)
            frames.append(ppi.assign(setting=name, noise_scale=scale))
            print(f"{name} noise x{scale:g}: {time.perf_counter() - t0:.0f} s", flush=True)
    pd.concat(frames).to_csv(args.out / "sweep_ppi.tsv", sep="\t", index=False)
    pd.DataFrame(rows).to_csv(args.out / "sweep.tsv", sep="\t", index=False)
    table = markdown(rows)
    header = (f"{data['n_subjects']} subjects x 2 sessions, seed {data['seed']}, "
              f"{data['runs'][0]['n_volumes']} volumes; DCM hC {model['options']['hC'] if model else '-'}\n\n")
    (args.out / "sweep.md").write_text(header + table + "\n")
    print(header + table)
    return rows


if __name__ == "__main__":
    main()
