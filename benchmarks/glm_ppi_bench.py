"""Benchmark: whole-brain activation GLM and seed-to-voxel gPPI vs nilearn FirstLevelModel.

One synthetic run on the 2 mm MNI grid (97 x 115 x 97), an ellipsoidal brain mask of
~230k voxels, 200 volumes (TR 2 s), spatially varying AR(1) noise, with the design the
pipeline builds: the faces events of a simulated run and its fMRIPrep-style confounds
(``ketflow.simulate``, 200 volumes) selected as the default configuration does -- 36P
(motion, CSF, WM and global signal with derivatives and squares, in raw units) plus one
spike column per FD-censored volume -- then 128 s cosines and a constant.  gPPI is run for
the pipeline's three seeds (vmPFC, amygdala_L, amygdala_R: spheres of the synthetic volume),
with 3 conditions + 3 contrasts each.  Both packages fit the same designs with AR(1)
prewhitening and mean (percent signal) scaling:

* ketflow: ``mean_scaling`` + :func:`ketflow.signal.glm.fit_glm` + contrasts on the masked
  (time, voxels) array; gPPI adds the seed deconvolution and design
  (:func:`ketflow.signal.gppi.seed_to_voxel_gppi`);
* nilearn: ``FirstLevelModel(noise_model="ar1").fit(img, design_matrices=...)`` and
  ``compute_contrast(output_type="all")`` for every contrast (masking included, as in real
  use; the masking time is also reported on its own), and nilearn's core ``run_glm`` +
  ``compute_contrast`` on the masked array for the activation model.

nilearn is given the design with every column scaled to unit norm (the same model: same
column space, contrast weights rescaled), because on the raw-unit design its ``pinv``
loses about ``cond(X) * eps`` of precision; that loss is reported too
(``nilearn_raw_design_max_abs_z_error``: nilearn's core on the raw design against itself
on the scaled one).  Agreement of the z maps is the maximum absolute difference over
voxels in the same AR(1) bin (``ar_bin_mismatches`` voxels, whose Yule-Walker value lies
within rounding of a 0.01 bin edge, can fall into neighbouring bins).

Run (about 3-5 minutes on an idle 2-core machine, ~3 GB peak memory)::

    PYTHONPATH=. NIPYPE_NO_ET=1 MPLBACKEND=Agg OMP_NUM_THREADS=1 python benchmarks/glm_ppi_bench.py

Prints a JSON summary.
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn.glm.contrasts import compute_contrast as nilearn_compute_contrast
from nilearn.glm.first_level import FirstLevelModel, mean_scaling, run_glm
from nilearn.maskers import NiftiMasker

from ketflow.io.confounds import ConfoundStrategy, load_confounds
from ketflow.signal.design import contrast_vector, make_task_design, spike_regressors
from ketflow.signal.glm import compute_contrast, fit_glm
from ketflow.signal.gppi import gppi_contrasts, seed_to_voxel_gppi

TR, N_SCANS, SHAPE = 2.0, 200, (97, 115, 97)
AFFINE = np.array([[-2.0, 0, 0, 96], [0, 2, 0, -132], [0, 0, 2, -78], [0, 0, 0, 1]])
CONTRASTS = {
    "faces-gt-shapes": "0.5*fearful + 0.5*neutral - shapes",
    "fearful-gt-neutral": "fearful - neutral",
    "fearful-gt-shapes": "fearful - shapes",
}
SEEDS = {"vmPFC": (48, 90, 40), "amygdala_L": (60, 60, 30), "amygdala_R": (36, 60, 30)}


def brain_mask() -> np.ndarray:
    """Ellipsoid of ~230k voxels centred in the grid."""
    i, j, k = np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in SHAPE], indexing="ij")
    return (i / 35.0) ** 2 + (j / 45.0) ** 2 + (k / 35.0) ** 2 <= 1.0


def pipeline_design():
    """Faces events and 36P + spike confounds of a simulated 200-volume run, and its design."""
    from ketflow.simulate import simulate_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = simulate_dataset(Path(tmp) / "bids", n_subjects=2, seed=0, voxel_size=8.0,
                                n_volumes={"faces": N_SCANS, "conflict": 40, "rest": 40})
        func = root / "derivatives" / "fmriprep" / "sub-01" / "ses-pre" / "func"
        prefix = "sub-01_ses-pre_task-faces"
        conf = load_confounds(func / f"{prefix}_desc-confounds_timeseries.tsv",
                              func / f"{prefix}_desc-confounds_timeseries.json",
                              ConfoundStrategy("36P", fd_threshold=0.5, min_segment=5), n_volumes=N_SCANS)
        events = pd.read_csv(root / "sub-01" / "ses-pre" / "func" / f"{prefix}_events.tsv", sep="\t")
    confounds = pd.concat([conf.regressors.reset_index(drop=True), spike_regressors(conf.keep)], axis=1)
    return make_task_design(events, TR, N_SCANS, ["fearful", "neutral", "shapes"], start_time=1.0,
                            confounds=confounds)


def simulate(mask: np.ndarray, design, rng: np.random.Generator):
    n_vox = int(mask.sum())
    coords = np.argwhere(mask)
    rho = 0.1 + 0.4 * (coords[:, 2] / SHAPE[2])  # AR(1) coefficient varying along z
    near = {name: np.linalg.norm(coords - np.array(c), axis=1) < 4 for name, c in SEEDS.items()}
    data = np.empty((N_SCANS, n_vox), dtype=np.float32)
    noise = rng.standard_normal(n_vox).astype(np.float32) * 8
    fear = design.matrix["fearful"].to_numpy()
    shared = np.convolve(rng.standard_normal(N_SCANS), np.ones(3) / 3, "same") * 6
    for t in range(N_SCANS):
        noise = rho * noise + rng.standard_normal(n_vox).astype(np.float32) * 8
        data[t] = 1000 + noise
        for name in ("amygdala_L", "amygdala_R"):
            data[t, near[name]] += 15 * fear[t] + shared[t]
    data[:, near["vmPFC"]] += ((fear - fear.mean()) * shared)[:, None].astype(np.float32) * 2
    return data, near


def max_abs_diff(ours, theirs, same) -> float:
    return float(np.abs(np.asarray(ours)[same] - np.ravel(theirs)[same]).max())


def main() -> None:
    rng = np.random.default_rng(0)
    mask = brain_mask()
    t0 = time.perf_counter()
    design = pipeline_design()
    result = {"design_s": time.perf_counter() - t0}
    x = design.matrix
    data, near = simulate(mask, design, rng)
    n_vox = data.shape[1]
    result.update(grid=list(SHAPE), n_voxels=n_vox, n_scans=N_SCANS, n_regressors=x.shape[1],
                  n_spikes=int(sum(c.startswith("censored_") for c in x.columns)),
                  design_condition_number=float(np.linalg.cond(x.to_numpy())))
    vectors = {name: contrast_vector(spec, design) for name, spec in CONTRASTS.items()}

    # ketflow activation GLM
    t0 = time.perf_counter()
    y, _ = mean_scaling(data)
    fit = fit_glm(y, x.to_numpy(), "ar1")
    ours = {name: compute_contrast(fit, vec) for name, vec in vectors.items()}
    result["ketflow_activation_s"] = time.perf_counter() - t0
    result["n_ar_levels"] = int(fit.cov.shape[0])

    # nilearn's GLM core on the same masked, scaled array (scaled design, then the raw one)
    norms = np.linalg.norm(x.to_numpy(), axis=0)
    t0 = time.perf_counter()
    labels, results = run_glm(y, x.to_numpy() / norms, noise_model="ar1")
    core = {name: nilearn_compute_contrast(labels, results, vec / norms).z_score() for name, vec in vectors.items()}
    result["nilearn_run_glm_core_s"] = time.perf_counter() - t0
    del results
    raw_labels, raw_results = run_glm(y, x.to_numpy(), noise_model="ar1")
    same_raw = raw_labels.astype(float) == labels.astype(float)
    result["nilearn_raw_design_max_abs_z_error"] = max(
        max_abs_diff(nilearn_compute_contrast(raw_labels, raw_results, vec).z_score(), core[name], same_raw)
        for name, vec in vectors.items())
    del raw_results

    # ketflow gPPI seed-to-voxel, the three seeds
    t0 = time.perf_counter()
    ppi_maps, ppi_designs = {}, {}
    for seed, where in near.items():
        gd, maps = seed_to_voxel_gppi(y, y[:, where].mean(axis=1), design, CONTRASTS, deconvolve=True,
                                      noise_model="ar1")
        ppi_maps[seed], ppi_designs[seed] = maps, gd
    result["ketflow_gppi_3_seeds_s"] = time.perf_counter() - t0
    ppi_rho = {seed: fit_glm(y, gd.to_numpy(), "ar1").rho for seed, gd in ppi_designs.items()}  # for checks
    del y

    # nilearn FirstLevelModel on the same designs (columns scaled to unit norm)
    data_4d = np.zeros((*SHAPE, N_SCANS), dtype=np.float32)
    data_4d[mask] = data.T
    del data
    img = nib.Nifti1Image(data_4d, AFFINE)
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), AFFINE)
    del data_4d
    z_diff, mismatch = [], 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        masker = NiftiMasker(mask_img, standardize=None).fit()
        t0 = time.perf_counter()
        masker.transform(img)
        result["nilearn_masking_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        flm = FirstLevelModel(t_r=TR, mask_img=mask_img, noise_model="ar1", minimize_memory=True)
        flm.fit(img, design_matrices=x / norms)
        theirs = {name: masker.transform(flm.compute_contrast(vec / norms, output_type="all")["z_score"]).ravel()
                  for name, vec in vectors.items()}
        result["nilearn_activation_s"] = time.perf_counter() - t0
        same = flm.labels_[0].astype(float) == fit.rho
        mismatch = int((~same).sum())
        z_diff.append(max(max_abs_diff(ours[n].z, theirs[n], same) for n in CONTRASTS))
        del flm

        t0 = time.perf_counter()
        for seed, gd in ppi_designs.items():
            gnorms = np.linalg.norm(gd.to_numpy(), axis=0)
            flm = FirstLevelModel(t_r=TR, mask_img=mask_img, noise_model="ar1", minimize_memory=True)
            flm.fit(img, design_matrices=gd / gnorms)
            same_ppi = flm.labels_[0].astype(float) == ppi_rho[seed]
            mismatch = max(mismatch, int((~same_ppi).sum()))
            for name, vec in gppi_contrasts(design, gd.columns, CONTRASTS).items():
                z = masker.transform(flm.compute_contrast(vec / gnorms, output_type="all")["z_score"]).ravel()
                z_diff.append(max_abs_diff(ppi_maps[seed][name].z, z, same_ppi))
            del flm
        result["nilearn_gppi_3_seeds_glm_s"] = time.perf_counter() - t0

    result["ar_bin_mismatches"] = mismatch
    result["max_abs_z_diff_activation"] = z_diff[0]
    result["max_abs_z_diff_gppi"] = max(z_diff[1:])
    result["max_abs_z_diff_activation_vs_run_glm_core"] = max(max_abs_diff(ours[n].z, core[n], same)
                                                              for n in CONTRASTS)
    result["speedup_activation"] = result["nilearn_activation_s"] / result["ketflow_activation_s"]
    result["speedup_activation_vs_run_glm_core"] = result["nilearn_run_glm_core_s"] / result["ketflow_activation_s"]
    result["speedup_gppi"] = result["nilearn_gppi_3_seeds_glm_s"] / result["ketflow_gppi_3_seeds_s"]
    coupled = near["vmPFC"]
    z_ppi = ppi_maps["amygdala_L"]["fearful-gt-neutral"].z
    result["gppi_z_amygdala_L_fearful_gt_neutral_vmPFC_median"] = float(np.median(z_ppi[coupled]))
    result["gppi_z_amygdala_L_fearful_gt_neutral_elsewhere_sd"] = float(np.std(z_ppi[~coupled]))
    print(json.dumps({k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in result.items()}, indent=2))


if __name__ == "__main__":
    main()
