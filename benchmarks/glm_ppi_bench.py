"""Benchmark: whole-brain activation GLM and seed-to-voxel gPPI vs nilearn FirstLevelModel.

One synthetic run on the 2 mm MNI grid (97 x 115 x 97), an ellipsoidal brain mask of
~230k voxels, 200 volumes (TR 2 s), a fearful/neutral/shapes block design with six motion
confounds, 128 s cosine drifts and spatially varying AR(1) noise.  Both packages fit the
same design matrices with AR(1) prewhitening and mean (percent signal) scaling:

* ketflow: ``mean_scaling`` + :func:`ketflow.signal.glm.fit_glm` + contrasts on the masked
  (time, voxels) array; gPPI adds the seed deconvolution and design
  (:func:`ketflow.signal.gppi.seed_to_voxel_gppi`);
* nilearn: ``FirstLevelModel(noise_model="ar1").fit(img, design_matrices=...)`` and
  ``compute_contrast`` for every contrast (masking included, as in real use; the masking
  time is also reported on its own), and nilearn's core ``run_glm`` + ``compute_contrast``
  on the same masked array.

Agreement of the z maps is reported as the maximum absolute difference.

Run (about 1 minute, 2.6 GB peak memory)::

    NIPYPE_NO_ET=1 MPLBACKEND=Agg OMP_NUM_THREADS=1 /work/venv/bin/python benchmarks/glm_ppi_bench.py

Prints a JSON summary.
"""

from __future__ import annotations

import json
import time
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn.glm.contrasts import compute_contrast as nilearn_compute_contrast
from nilearn.glm.first_level import FirstLevelModel, mean_scaling, run_glm
from nilearn.maskers import NiftiMasker

from ketflow.signal.design import contrast_vector, make_task_design
from ketflow.signal.glm import compute_contrast, fit_glm
from ketflow.signal.gppi import gppi_contrasts, seed_to_voxel_gppi

TR, N_SCANS, SHAPE = 2.0, 200, (97, 115, 97)
AFFINE = np.array([[-2.0, 0, 0, 96], [0, 2, 0, -132], [0, 0, 2, -78], [0, 0, 0, 1]])
CONTRASTS = {"fearful-gt-neutral": "fearful - neutral", "faces-gt-shapes": "fearful + neutral - 2*shapes"}


def brain_mask() -> np.ndarray:
    """Ellipsoid of ~230k voxels centred in the grid."""
    i, j, k = np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in SHAPE], indexing="ij")
    return (i / 35.0) ** 2 + (j / 45.0) ** 2 + (k / 35.0) ** 2 <= 1.0


def simulate(mask: np.ndarray, rng: np.random.Generator):
    events = pd.DataFrame(
        {"onset": 8.0 + 20.0 * np.arange(19), "duration": 12.0, "trial_type": ["fearful", "neutral", "shapes"] * 6
         + ["fearful"]}
    )
    motion = pd.DataFrame(np.cumsum(rng.standard_normal((N_SCANS, 6)) * 0.02, axis=0),
                          columns=["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"])
    design = make_task_design(events, TR, N_SCANS, ["fearful", "neutral", "shapes"], confounds=motion)
    n_vox = int(mask.sum())
    coords = np.argwhere(mask)
    rho = 0.1 + 0.4 * (coords[:, 2] / SHAPE[2])  # AR(1) coefficient varying along z
    active = np.linalg.norm(coords - np.array([60, 60, 40]), axis=1) < 6  # "amygdala"
    data = np.empty((N_SCANS, n_vox), dtype=np.float32)
    noise = rng.standard_normal(n_vox).astype(np.float32) * 8
    fear = design.matrix["fearful"].to_numpy()
    shared = np.convolve(rng.standard_normal(N_SCANS), np.ones(3) / 3, "same") * 6
    for t in range(N_SCANS):
        noise = rho * noise + rng.standard_normal(n_vox).astype(np.float32) * 8
        data[t] = 1000 + noise
        data[t, active] += 15 * fear[t] + shared[t]
    # a "vmPFC" region coupled to the seed during fearful blocks
    coupled = np.linalg.norm(coords - np.array([48, 90, 40]), axis=1) < 6
    data[:, coupled] += ((fear - fear.mean()) * shared)[:, None].astype(np.float32) * 2
    return design, data, active


def main() -> None:
    rng = np.random.default_rng(0)
    mask = brain_mask()
    design, data, active = simulate(mask, rng)
    n_vox = data.shape[1]
    result = {"grid": list(SHAPE), "n_voxels": n_vox, "n_scans": N_SCANS, "n_regressors": design.matrix.shape[1]}

    # ketflow activation GLM
    t0 = time.perf_counter()
    y, _ = mean_scaling(data)
    fit = fit_glm(y, design.matrix.to_numpy(), "ar1")
    ours = {name: compute_contrast(fit, contrast_vector(spec, design)) for name, spec in CONTRASTS.items()}
    result["ketflow_activation_s"] = time.perf_counter() - t0
    result["n_ar_levels"] = int(fit.cov.shape[0])

    # nilearn's GLM core on the same masked, scaled array (no masking, no images)
    t0 = time.perf_counter()
    labels, results = run_glm(y, design.matrix.to_numpy(), noise_model="ar1")
    for spec in CONTRASTS.values():
        nilearn_compute_contrast(labels, results, contrast_vector(spec, design)).z_score()
    result["nilearn_run_glm_core_s"] = time.perf_counter() - t0
    del labels, results

    # ketflow gPPI seed-to-voxel
    t0 = time.perf_counter()
    seed = y[:, active].mean(axis=1)
    gd, ppi_maps = seed_to_voxel_gppi(y, seed, design, CONTRASTS, deconvolve=True, noise_model="ar1")
    result["ketflow_gppi_s"] = time.perf_counter() - t0
    del y

    # nilearn on the same designs
    data_4d = np.zeros((*SHAPE, N_SCANS), dtype=np.float32)
    data_4d[mask] = data.T
    del data
    img = nib.Nifti1Image(data_4d, AFFINE)
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), AFFINE)
    del data_4d
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        masker = NiftiMasker(mask_img, standardize=None).fit()
        t0 = time.perf_counter()
        masker.transform(img)
        result["nilearn_masking_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        flm = FirstLevelModel(t_r=TR, mask_img=mask_img, noise_model="ar1", minimize_memory=True)
        flm.fit(img, design_matrices=design.matrix)
        theirs = {
            name: masker.transform(flm.compute_contrast(contrast_vector(spec, design), output_type="z_score")).ravel()
            for name, spec in CONTRASTS.items()
        }
        result["nilearn_activation_s"] = time.perf_counter() - t0

        vectors = gppi_contrasts(design, gd.columns, CONTRASTS)
        t0 = time.perf_counter()
        flm = FirstLevelModel(t_r=TR, mask_img=mask_img, noise_model="ar1", minimize_memory=True)
        flm.fit(img, design_matrices=gd)
        theirs_ppi = {
            name: masker.transform(flm.compute_contrast(vectors[name], output_type="z_score")).ravel()
            for name in CONTRASTS
        }
        result["nilearn_gppi_glm_s"] = time.perf_counter() - t0

    result["max_abs_z_diff_activation"] = max(float(np.abs(ours[n].z - theirs[n]).max()) for n in CONTRASTS)
    result["max_abs_z_diff_gppi"] = max(float(np.abs(ppi_maps[n].z - theirs_ppi[n]).max()) for n in CONTRASTS)
    result["speedup_activation"] = result["nilearn_activation_s"] / result["ketflow_activation_s"]
    result["speedup_activation_vs_run_glm_core"] = result["nilearn_run_glm_core_s"] / result["ketflow_activation_s"]
    result["speedup_gppi"] = result["nilearn_gppi_glm_s"] / result["ketflow_gppi_s"]
    coords = np.argwhere(mask)
    coupled = np.linalg.norm(coords - np.array([48, 90, 40]), axis=1) < 6
    result["gppi_z_fearful_gt_neutral_coupled_region_median"] = float(
        np.median(ppi_maps["fearful-gt-neutral"].z[coupled])
    )
    result["gppi_z_fearful_gt_neutral_elsewhere_sd"] = float(np.std(ppi_maps["fearful-gt-neutral"].z[~coupled]))
    print(json.dumps({k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in result.items()}, indent=2))


if __name__ == "__main__":
    main()
