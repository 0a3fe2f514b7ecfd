"""Calibration of voxelwise first-level z maps on null voxels of simulated data.

The simulator puts task signal only into its ROI voxels, so every other brain voxel is null:
under a correct noise model, 0.20 % of them lie beyond |z| > 3.09 and their z values have SD 1.
Two modes (both print a table and write a TSV with one row per map):

* ``--outputs OUT``: the z maps a participant-level run wrote (activation
  ``*_contrast-*_stat-z_statmap.nii.gz`` and gPPI ``*_model-gppi_*_stat-z_desc-*_statmap.nii.gz``);
* ``--refit``: refits every faces and conflict run of ``--bids`` with the pipeline's design
  (default configuration: its conditions and contrasts, the 36P strategy with 0.5 mm FD
  censoring spikes, 128 s cosines, percent-scaled voxels) for each ``--noise-models`` entry
  (``ar1``: nilearn's AR(1); ``ols``; ``ar<p>-corrected``: Worsley et al. (2002) bias-corrected
  AR(p), its autocorrelations smoothed with ``--fwhm`` mm, 0 for none), activation contrasts
  and gPPI seed-to-voxel contrasts (seeds of the configuration, from the packaged anatomical
  atlas on the run's grid restricted to the template's grey matter).

Null voxels: the brain mask minus the simulator's ROI voxels (``sourcedata/truth/
desc-rois_dseg.nii.gz``; datasets simulated before it was written: the circuit spheres,
dilated by one voxel).

Run (the demo dataset: 6 subjects, seed 1, 4 mm)::

    PYTHONPATH=. NIPYPE_NO_ET=1 MPLBACKEND=Agg OMP_NUM_THREADS=1 \\
        python benchmarks/glm_calibration.py --bids demo/bids --outputs demo/out
    python benchmarks/glm_calibration.py --bids demo/bids --refit \\
        --noise-models ar1,ols,ar1-corrected,ar2-corrected [--fwhm 15] [--subjects 2] [--quick]

``--quick``: one subject, faces only (a smoke run).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from ketflow.config import load_config
from ketflow.io.confounds import ConfoundStrategy, load_confounds
from ketflow.signal import rois
from ketflow.signal.design import contrast_vector, make_task_design, spike_regressors
from ketflow.signal.glm import compute_contrast, fit_glm, mask_smoother
from ketflow.signal.gppi import seed_to_voxel_gppi
from ketflow.simulate.bids import SPACE

THRESHOLD = 3.09  # two-sided p = 0.002
NOMINAL = 0.002


def null_voxels(bids: Path, mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """In-mask voxels (bool over the mask's voxels) that carry no simulated task signal."""
    truth = bids / "sourcedata" / "truth" / "desc-rois_dseg.nii.gz"
    if truth.is_file():
        signal = np.asarray(nib.load(truth).dataobj) > 0
    else:  # datasets of the sphere-based simulator
        signal = rois.sphere_labels(rois.read_sphere_table(), mask.shape, affine) > 0
        signal = ndimage.binary_dilation(signal)
    return ~signal[mask]


def summary(z: np.ndarray) -> dict:
    """Rate beyond |z| > 3.09 and the SD, mean of z over null voxels."""
    return {"rate": float(np.mean(np.abs(z) > THRESHOLD)), "sd": float(np.std(z)), "mean": float(np.mean(z))}


def from_outputs(bids: Path, outputs: Path) -> pd.DataFrame:
    """One row per z map written by a participant-level run."""
    rows = []
    pattern = re.compile(r"(sub-[^_]+)_(ses-[^_]+)_task-([^_]+)_.*?(model-gppi_)?contrast-([^_]+)_stat-z_(desc-([^_]+)_)?statmap")
    for path in sorted(outputs.glob("sub-*/ses-*/func/*stat-z*statmap.nii.gz")):
        match = pattern.search(path.name)
        if not match:
            continue
        sub, ses, task, gppi, contrast, _, seed = match.groups()
        fmriprep = bids / "derivatives" / "fmriprep" / sub / ses / "func"
        mask_file = next(fmriprep.glob(f"{sub}_{ses}_task-{task}_*desc-brain_mask.nii.gz"))
        mask_img = nib.load(mask_file)
        mask = np.asarray(mask_img.dataobj) > 0
        z = np.asarray(nib.load(path).dataobj)[mask][null_voxels(bids, mask, mask_img.affine)]
        rows.append({"sub": sub, "ses": ses, "task": task, "kind": "gppi" if gppi else "activation",
                     "seed": seed or "", "contrast": contrast, **summary(z)})
    return pd.DataFrame(rows)


def run_design(bids: Path, sub: str, ses: str, task: str, config, n_volumes: int):
    """The pipeline's task design of one simulated run (36P + FD spikes, cosines)."""
    func = bids / "derivatives" / "fmriprep" / f"sub-{sub}" / f"ses-{ses}" / "func"
    prefix = f"sub-{sub}_ses-{ses}_task-{task}"
    strategy = ConfoundStrategy(name=config.denoising.strategy, fd_threshold=config.denoising.fd_threshold,
                                min_segment=config.denoising.min_contiguous)
    confounds = load_confounds(str(func / f"{prefix}_desc-confounds_timeseries.tsv"),
                               str(func / f"{prefix}_desc-confounds_timeseries.json"), strategy,
                               n_volumes=n_volumes)
    regressors = pd.concat([confounds.regressors.reset_index(drop=True), spike_regressors(confounds.keep)], axis=1)
    sidecar = json.loads(next(func.glob(f"{prefix}_space-{SPACE}*_desc-preproc_bold.json")).read_text())
    events = pd.read_csv(bids / f"sub-{sub}" / f"ses-{ses}" / "func" / f"{prefix}_events.tsv", sep="\t")
    spec = config.tasks[task]
    return make_task_design(events, float(sidecar["RepetitionTime"]), n_volumes, spec.conditions,
                            [d.model_dump() for d in spec.derived_conditions],
                            start_time=float(sidecar.get("StartTime", 0.0)),
                            high_pass=config.glm.high_pass_s, confounds=regressors)


def refit(bids: Path, noise_models: list[str], fwhm: float, n_subjects: int | None, tasks) -> pd.DataFrame:
    """One row per (run, noise model, activation or gPPI contrast)."""
    config = load_config(None)
    atlas, atlas_affine, names = rois.read_circuit_atlas()
    gm_prob, gm_affine = rois.template_grey_matter()
    subjects = sorted(p.name[4:] for p in bids.glob("sub-*") if p.is_dir())[:n_subjects]
    rows = []
    for sub in subjects:
        for ses in ("pre", "post"):
            for task in tasks:
                func = bids / "derivatives" / "fmriprep" / f"sub-{sub}" / f"ses-{ses}" / "func"
                bold = next(func.glob(f"sub-{sub}_ses-{ses}_task-{task}_space-{SPACE}*_desc-preproc_bold.nii.gz"))
                mask_img = nib.load(next(func.glob(f"sub-{sub}_ses-{ses}_task-{task}_*desc-brain_mask.nii.gz")))
                mask = np.asarray(mask_img.dataobj) > 0
                data = np.asarray(nib.load(bold).dataobj)[mask].T.astype(np.float64)
                data = 100.0 * (data / data.mean(axis=0) - 1.0)
                null = null_voxels(bids, mask, mask_img.affine)
                design = run_design(bids, sub, ses, task, config, data.shape[0])
                grey = rois.grey_matter_mask(rois.resample_probability(gm_prob, gm_affine, mask.shape, mask_img.affine))
                roiset = rois.anatomical_roiset(atlas, atlas_affine, names, mask.shape, mask_img.affine, mask, grey)
                labels = roiset.labels[mask]
                smoother = mask_smoother(mask, mask_img.affine, fwhm) if fwhm > 0 else None
                for model in noise_models:
                    kwargs = {"smoother": smoother} if model.endswith("-corrected") else {}
                    start = time.process_time()
                    fit = fit_glm(data, design.matrix.to_numpy(), model, **kwargs)
                    seconds = time.process_time() - start
                    for contrast, weights in config.tasks[task].contrasts.items():
                        z = compute_contrast(fit, contrast_vector(weights, design)).z[null]
                        rows.append({"sub": sub, "ses": ses, "task": task, "model": model, "kind": "activation",
                                     "seed": "", "contrast": contrast, "fit_cpu_s": seconds, **summary(z)})
                    for seed in config.ppi.seeds:
                        seed_series = data[:, labels == names.index(seed) + 1].mean(axis=1)
                        _, maps = seed_to_voxel_gppi(data, seed_series, design, config.tasks[task].contrasts,
                                                     config.ppi.deconvolve, model, **kwargs)
                        for contrast in config.tasks[task].contrasts:
                            rows.append({"sub": sub, "ses": ses, "task": task, "model": model, "kind": "gppi",
                                         "seed": seed, "contrast": contrast, "fit_cpu_s": np.nan,
                                         **summary(maps[contrast].z[null])})
                print(f"sub-{sub} ses-{ses} {task}: done", flush=True)
    return pd.DataFrame(rows)


def report(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Median (and mean) rate beyond |z| > 3.09, its ratio to nominal, median z SD, maps."""
    out = table.groupby(by).agg(maps=("rate", "size"), median_rate_pct=("rate", "median"),
                                mean_rate_pct=("rate", "mean"), median_sd=("sd", "median"))
    out[["median_rate_pct", "mean_rate_pct"]] *= 100
    out["median_over_nominal"] = out["median_rate_pct"] / (100 * NOMINAL)
    return out.round(3)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bids", type=Path, required=True, help="simulated dataset (ketflow-simulate)")
    parser.add_argument("--outputs", type=Path, help="participant-level output folder to read z maps from")
    parser.add_argument("--refit", action="store_true", help="refit the task runs with each noise model")
    parser.add_argument("--noise-models", default="ar1,ar1-corrected,ar2-corrected")
    parser.add_argument("--fwhm", type=float, default=15.0, help="autocorrelation smoothing FWHM (mm); 0: none")
    parser.add_argument("--subjects", type=int, default=None, help="first N subjects only")
    parser.add_argument("--tsv", type=Path, help="write the per-map table here")
    parser.add_argument("--quick", action="store_true", help="one subject, faces only")
    args = parser.parse_args(argv)
    pd.set_option("display.width", 200)
    tables = []
    if args.outputs:
        table = from_outputs(args.bids, args.outputs)
        print(f"z maps of {args.outputs}: |z| > {THRESHOLD} on null voxels (nominal {100 * NOMINAL:.2f} %)")
        print(report(table, ["kind"]).to_string())
        print(report(table.assign(all="all"), ["all"]).to_string())
        tables.append(table.assign(model="outputs"))
    if args.refit:
        tasks = ("faces",) if args.quick else ("faces", "conflict")
        subjects = 1 if args.quick else args.subjects
        table = refit(args.bids, args.noise_models.split(","), args.fwhm, subjects, tasks)
        print(f"refit of {args.bids} (autocorrelation FWHM {args.fwhm} mm for the corrected models)")
        print(report(table, ["model", "kind"]).to_string())
        print(report(table, ["model"]).to_string())
        cpu = table.dropna(subset=["fit_cpu_s"]).groupby("model")["fit_cpu_s"].median()
        print("median CPU s per activation fit:", cpu.round(3).to_dict())
        tables.append(table)
    if args.tsv and tables:
        pd.concat(tables).to_csv(args.tsv, sep="\t", index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
