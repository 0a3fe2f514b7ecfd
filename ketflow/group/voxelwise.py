"""Voxelwise second level: one-sample per session, paired change and arm x change maps.

Inputs are first-level maps in memory (nibabel images on one grid, one per subject and
session: activation contrast estimates, gPPI estimates or seed-connectivity Fisher z).
Three designs, each a one-regressor test fitted by ordinary least squares at every voxel:

* ``one_sample``: the session's maps, intercept only (is the mean effect zero?);
* ``paired_change``: follow-up minus baseline maps of the subjects with both, intercept only
  (the paired t test of the change);
* ``arm_by_change``: the same change maps, intercept + arm (first arm of ``clinical.arms``
  +0.5, second -0.5), testing the arm column: the difference between arms of the change (the
  arm x session interaction of a 2 x 2 mixed design, estimated within subjects).

Optional covariates (mean-centred) enter every design as further columns.

The maps are smoothed with an isotropic Gaussian kernel (FWHM in mm) and restricted to the
group mask, the voxels inside every subject's map (the intersection of their brain masks,
as SPM's implicit masking), and then:

* parametric maps from nilearn's ``SecondLevelModel`` (effect, t, z, uncorrected p, as
  nilearn defines them: p and z one-sided for effect > 0);
* family-wise error corrected maps by permutation (:mod:`ketflow.group.permutation`; the
  same model, statistic and scheme as nilearn's ``non_parametric_inference``): voxel-level
  (max |t|), TFCE (Smith & Nichols 2009) and cluster mass (Bullmore et al. 1999), and the
  small-volume correction of the voxel-level and TFCE maps inside the circuit mask.

No paths: the interface (:mod:`ketflow.interfaces.voxelwise`) reads and writes the files.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
import pandas as pd

from .permutation import PermutationResult, permutation_inference

__all__ = ["DESIGNS", "TESTED_COLUMN", "Settings", "SecondLevelResult", "common_mask", "check_same_grid",
           "mean_image", "difference_images", "design_matrix", "second_level", "MAP_STATS"]

#: The designs and the design-matrix column each tests.
DESIGNS = ("one_sample", "paired_change", "arm_by_change")
TESTED_COLUMN = {"one_sample": "intercept", "paired_change": "intercept", "arm_by_change": "arm"}
#: Every map a second level can write: (stat, desc) -> what it holds.
MAP_STATS = {
    ("effect", None): "contrast estimate (units of the first-level maps)",
    ("t", None): "t statistic",
    ("z", None): "z equivalent of the one-sided (effect > 0) p of the t statistic (nilearn)",
    ("p", None): "uncorrected one-sided p (effect > 0) of the t statistic (nilearn)",
    ("logp", "voxelFWE"): "-log10 family-wise error corrected p of |t| (max-statistic permutation, whole mask)",
    ("tfce", None): "TFCE of the t map (E 0.5, H 2, 100 steps; signed)",
    ("logp", "tfceFWE"): "-log10 family-wise error corrected p of |TFCE| (max-statistic permutation, whole mask)",
    ("logp", "clusterMassFWE"): "-log10 family-wise error corrected p of the cluster mass of the voxel's "
                                "cluster at the cluster-forming threshold (0 outside clusters)",
    ("logp", "svcVoxelFWE"): "-log10 voxel-level FWE p within the circuit mask (small-volume correction)",
    ("logp", "svcTfceFWE"): "-log10 TFCE FWE p within the circuit mask (small-volume correction)",
}


@dataclass(frozen=True)
class Settings:
    """How a second level is estimated (``group.voxelwise`` of the configuration).

    smoothing_fwhm : mm (None or 0: no smoothing); n_permutations : rearrangements;
    cluster_forming_p : uncorrected p (None: no cluster inference); alpha : FWE level of
    the cluster tables and figures.
    """

    smoothing_fwhm: float | None = 6.0
    n_permutations: int = 5000
    tfce: bool = True
    cluster_forming_p: float | None = 0.001
    two_sided: bool = True
    alpha: float = 0.05
    seed: int = 0


@dataclass
class SecondLevelResult:
    """maps : (stat, desc) -> image (keys of :data:`MAP_STATS`); design : the design matrix."""

    maps: dict
    permutation: PermutationResult
    design: pd.DataFrame
    contrast: str
    n_voxels: int
    n_svc_voxels: int


def check_same_grid(images: list, names: list[str]) -> None:
    """Raise ValueError naming the first image whose shape or affine differs from the first's."""
    ref = images[0]
    for img, name in zip(images[1:], names[1:]):
        if img.shape[:3] != ref.shape[:3] or not np.allclose(img.affine, ref.affine, atol=1e-4):
            raise ValueError(f"{name}: grid {img.shape[:3]} with affine {np.round(img.affine, 3).tolist()} differs "
                             f"from {names[0]}'s {ref.shape[:3]}, {np.round(ref.affine, 3).tolist()}")


def common_mask(images: list) -> np.ndarray:
    """Voxels finite and non-zero in every image (3-D bool): the intersection of the subjects' masks."""
    mask = None
    for img in images:
        data = np.asanyarray(img.dataobj)
        inside = np.isfinite(data) & (data != 0)
        mask = inside if mask is None else mask & inside
    return mask


def mean_image(images: list) -> nib.Nifti1Image:
    """Equal-weight average of images on one grid (a session's runs), float32."""
    if len(images) == 1:
        return images[0]
    data = np.mean([np.asanyarray(img.dataobj, dtype=np.float64) for img in images], axis=0)
    return nib.Nifti1Image(data.astype(np.float32), images[0].affine)


def difference_images(followup: list, baseline: list) -> list:
    """follow-up minus baseline, image by image (float32)."""
    return [nib.Nifti1Image((np.asanyarray(a.dataobj, dtype=np.float64)
                             - np.asanyarray(b.dataobj, dtype=np.float64)).astype(np.float32), a.affine)
            for a, b in zip(followup, baseline)]


def design_matrix(design: str, n_subjects: int, arm: np.ndarray | None = None,
                  covariates: pd.DataFrame | None = None) -> pd.DataFrame:
    """Design matrix (n_subjects rows) of a design of :data:`DESIGNS`.

    arm : (n_subjects,) effect-coded arm (+0.5 / -0.5), needed for ``arm_by_change``.
    covariates : (n_subjects, k) numeric columns, mean-centred here.
    """
    if design not in DESIGNS:
        raise ValueError(f"unknown design {design!r}; designs: {DESIGNS}")
    matrix = pd.DataFrame({"intercept": np.ones(n_subjects)})
    if design == "arm_by_change":
        if arm is None or len(np.unique(arm)) != 2:
            raise ValueError("the arm x change design needs an arm with two levels")
        matrix["arm"] = np.asarray(arm, dtype=float)
    if covariates is not None and covariates.shape[1]:
        values = covariates.astype(float).reset_index(drop=True)
        matrix = pd.concat([matrix, values - values.mean()], axis=1)
    if np.linalg.matrix_rank(matrix.to_numpy()) < matrix.shape[1]:
        raise ValueError(f"the {design} design matrix (columns {list(matrix.columns)}) is rank-deficient")
    return matrix


def _logp(p: np.ndarray) -> np.ndarray:
    return -np.log10(np.clip(p, 1e-300, 1.0))


def second_level(images: list, design: pd.DataFrame, contrast: str, mask: np.ndarray, *,
                 settings: Settings = Settings(), svc: np.ndarray | None = None, n_jobs: int = 1,
                 rearranged=None) -> SecondLevelResult:
    """Parametric and permutation maps of one second-level test.

    images : one image per design row (same grid); design : from :func:`design_matrix`;
    contrast : the tested column; mask : 3-D bool group mask; svc : 3-D bool small volume
    (None or empty: no small-volume correction); rearranged : explicit
    :class:`~ketflow.group.permutation.Rearrangements` (tests), else drawn from ``settings``.
    """
    from nilearn.glm.second_level import SecondLevelModel
    from nilearn.maskers import NiftiMasker

    if len(images) != len(design):
        raise ValueError(f"{len(images)} images for a design of {len(design)} rows")
    affine = images[0].affine
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), affine)
    fwhm = settings.smoothing_fwhm or None
    model = SecondLevelModel(mask_img=mask_img, smoothing_fwhm=fwhm, minimize_memory=True)
    model.fit(images, design_matrix=design)
    parametric = model.compute_contrast(contrast, output_type="all")

    masker = NiftiMasker(mask_img=mask_img, smoothing_fwhm=fwhm, standardize=None).fit()
    data = masker.transform(images)
    others = [c for c in design.columns if c not in (contrast, "intercept")]
    svc_voxels = None if svc is None else np.asarray(svc, dtype=bool)[mask]
    perm = permutation_inference(data, design[contrast].to_numpy(), mask,
                                 confounds=design[others].to_numpy() if others else None,
                                 n_permutations=settings.n_permutations, two_sided=settings.two_sided,
                                 tfce=settings.tfce, cluster_forming_p=settings.cluster_forming_p,
                                 svc=svc_voxels, seed=settings.seed, n_jobs=n_jobs, rearranged=rearranged)

    def volume(values: np.ndarray) -> nib.Nifti1Image:
        out = np.zeros(mask.shape, dtype=np.float32)
        out[mask] = values
        return nib.Nifti1Image(out, affine)

    maps = {("effect", None): parametric["effect_size"], ("t", None): parametric["stat"],
            ("z", None): parametric["z_score"], ("p", None): parametric["p_value"],
            ("logp", "voxelFWE"): volume(_logp(perm.p_voxel))}
    if perm.tfce is not None:
        maps[("tfce", None)] = volume(perm.tfce)
        maps[("logp", "tfceFWE")] = volume(_logp(perm.p_tfce))
    if perm.p_cluster_mass is not None:
        maps[("logp", "clusterMassFWE")] = volume(_logp(perm.p_cluster_mass))
    n_svc = int(svc_voxels.sum()) if svc_voxels is not None else 0
    if n_svc:
        maps[("logp", "svcVoxelFWE")] = volume(np.where(svc_voxels, _logp(np.nan_to_num(perm.p_voxel_svc, nan=1)), 0))
        if perm.p_tfce_svc is not None:
            maps[("logp", "svcTfceFWE")] = volume(np.where(svc_voxels, _logp(np.nan_to_num(perm.p_tfce_svc, nan=1)),
                                                           0))
    maps = {key: nib.Nifti1Image(np.asanyarray(img.dataobj, dtype=np.float32), affine) for key, img in maps.items()}
    return SecondLevelResult(maps=maps, permutation=perm, design=design, contrast=contrast,
                             n_voxels=int(mask.sum()), n_svc_voxels=n_svc)
