"""Beta-series (LSS) speed and equality: ketflow's batched LSS against a nilearn FirstLevelModel loop.

On one simulated emotional-conflict run (``ketflow.simulate``; ``--voxel-size`` mm, ``--n-volumes``
volumes, TR 2 s) the script times, in CPU seconds of this process (one BLAS thread):

* ``ketflow``: what the beta-series node computes from the run's image -- percent signal change of
  the in-mask voxels, the circuit ROIs' mean signals, the design (confounds: the run's 24
  motion parameters), one regressor per trial and the least-squares-separate estimates of every
  trial (:func:`ketflow.signal.betaseries.lss_betas`);
* ``nilearn (ROI voxels)``: one ``FirstLevelModel`` (OLS, percent scaling) per trial, fitted on the
  ROI voxels only (mask = the circuit ROIs), its trial beta averaged over each ROI's voxels -- the
  least work a nilearn loop can do for the same numbers;
* ``nilearn (brain mask)``: the same loop on the whole brain mask, as nilearn's beta-series example
  and NiBetaSeries fit it (timed on ``--nilearn-trials`` trials and scaled to the run's trials).

and prints the largest difference between the ketflow and nilearn ROI betas (equal for OLS: the ROI
mean of voxel betas is the beta of the ROI mean).  Designs for nilearn are built per trial by
``make_task_design`` from events in which the trial alone is relabelled (the other trials keep
their design column), independently of ketflow's batched algebra.

Run (a few minutes at 3 mm; ``--quick``: 6 mm, 80 volumes, seconds)::

    PYTHONPATH=. NIPYPE_NO_ET=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        python benchmarks/beta_series_bench.py --out /tmp/beta_series_bench
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ketflow.config import load_config
from ketflow.io.confounds import MOTION_6, expansions
from ketflow.io.rois import circuit_roiset
from ketflow.signal.betaseries import lss_betas, trial_regressors, trial_table
from ketflow.signal.design import make_task_design
from ketflow.signal.extract import roi_means
from ketflow.signal.glm import percent_signal_change
from ketflow.signal.gppi import nuisance_columns
from ketflow.simulate import simulate_dataset


def _run_files(bids: Path) -> dict:
    func = bids / "derivatives/fmriprep/sub-01/ses-pre/func"
    stem = "sub-01_ses-pre_task-conflict"
    return {"bold": func / f"{stem}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz",
            "mask": func / f"{stem}_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz",
            "confounds": func / f"{stem}_desc-confounds_timeseries.tsv",
            "events": bids / f"sub-01/ses-pre/func/{stem}_events.tsv"}


def ketflow_betas(files: dict, config) -> tuple[np.ndarray, dict]:
    """The beta-series node's computation from the run's files; (betas (trials, ROIs), context)."""
    task = config.tasks["conflict"]
    derived = [d.model_dump() for d in task.derived_conditions]
    img = nib.load(files["bold"])
    mask = np.asanyarray(nib.load(files["mask"]).dataobj) > 0
    rois = circuit_roiset(config.circuit, img, mask, min_voxels=1)
    labels = rois.labels[mask]
    data = percent_signal_change(img.get_fdata(dtype=np.float32)[mask].T)
    tr, n = float(img.header.get_zooms()[3]), img.shape[3]
    events = pd.read_csv(files["events"], sep="\t")
    confounds = pd.read_csv(files["confounds"], sep="\t")[expansions(MOTION_6)].bfill()
    design = make_task_design(events, tr, n, task.conditions, derived, confounds=confounds)
    trials = trial_table(events, design, task.conditions, derived)
    betas = lss_betas(roi_means(data, labels, len(rois.names)), trial_regressors(trials, design),
                      list(trials["column"]), design.matrix[nuisance_columns(design)].to_numpy())
    return betas, {"img": img, "mask": mask, "rois": rois, "labels": labels, "trials": trials, "design": design,
                   "confounds": confounds, "tr": tr, "n": n}


def nilearn_betas(ctx: dict, fit_mask: np.ndarray, n_trials: int) -> np.ndarray:
    """ROI means of the trial betas of one nilearn FirstLevelModel per trial (first ``n_trials``)."""
    from nilearn.glm.first_level import FirstLevelModel

    trials, design = ctx["trials"], ctx["design"]
    mask_img = nib.Nifti1Image(fit_mask.astype(np.uint8), ctx["img"].affine)
    labels = ctx["rois"].labels[fit_mask]
    out = np.full((n_trials, len(ctx["rois"].names)), np.nan)
    for i in range(n_trials):
        events = trials[["onset", "duration", "modulation"]].assign(trial_type=list(trials["column"]))
        events.loc[i, "trial_type"] = "target"
        conditions = ["target"] + [c for c in design.columns if c in set(events["trial_type"])]
        matrix = make_task_design(events, ctx["tr"], ctx["n"], conditions, confounds=ctx["confounds"]).matrix
        model = FirstLevelModel(t_r=ctx["tr"], mask_img=mask_img, noise_model="ols", signal_scaling=0,
                                minimize_memory=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(ctx["img"], design_matrices=[matrix.reset_index(drop=True)])
            beta = model.compute_contrast("target", output_type="effect_size").get_fdata()[fit_mask]
        out[i] = [beta[labels == k].mean() for k in range(1, len(ctx["rois"].names) + 1)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/beta_series_bench"))
    parser.add_argument("--voxel-size", type=float, default=3.0)
    parser.add_argument("--n-volumes", type=int, default=200)
    parser.add_argument("--nilearn-trials", type=int, default=10, help="trials timed for the brain-mask loop")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the ketflow path (best taken)")
    parser.add_argument("--quick", action="store_true", help="6 mm, 80 volumes")
    args = parser.parse_args()
    if args.quick:
        args.voxel_size, args.n_volumes, args.nilearn_trials = 6.0, 80, 3
    bids = args.out / f"bids_{args.voxel_size:g}mm_{args.n_volumes}"
    if not bids.exists():
        simulate_dataset(bids, n_subjects=2, seed=11, voxel_size=args.voxel_size, n_volumes=args.n_volumes)
    files, config = _run_files(bids), load_config(None)
    print(f"load: {os.getloadavg()}")
    times = []
    for _ in range(args.repeats):
        start = time.process_time()
        betas, ctx = ketflow_betas(files, config)
        times.append(time.process_time() - start)
    m = len(ctx["trials"])
    start = time.process_time()
    reference = nilearn_betas(ctx, ctx["rois"].labels > 0, m)
    roi_loop = time.process_time() - start
    k = min(args.nilearn_trials, m)
    start = time.process_time()
    brain = nilearn_betas(ctx, ctx["mask"], k)
    brain_loop = (time.process_time() - start) * m / k
    scale = np.abs(reference).max()
    print(f"run: {args.voxel_size:g} mm, {ctx['n']} volumes, {int(ctx['mask'].sum())} in-mask voxels, "
          f"{int((ctx['rois'].labels > 0).sum())} ROI voxels, {m} trials, {len(ctx['rois'].names)} ROIs")
    print(f"ketflow (image -> LSS betas): {min(times):.3f} s CPU")
    print(f"nilearn loop, ROI voxels:     {roi_loop:.2f} s CPU  ({roi_loop / min(times):.0f}x)")
    print(f"nilearn loop, brain mask:     {brain_loop:.2f} s CPU  ({brain_loop / min(times):.0f}x; "
          f"{k} of {m} trials timed)")
    print(f"max |ketflow - nilearn| (ROI voxels): {np.abs(betas - reference).max():.2e} (betas up to {scale:.1f})")
    print(f"max |ketflow - nilearn| (brain mask, {k} trials): {np.abs(betas[:k] - brain).max():.2e}")
    print(f"load: {os.getloadavg()}")


if __name__ == "__main__":
    main()
