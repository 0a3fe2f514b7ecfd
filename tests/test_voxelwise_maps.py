"""Voxelwise second-level maps against direct nilearn calls on the same images.

ketflow wraps nilearn's SecondLevelModel for the parametric maps and reproduces
non_parametric_inference's model for the permutation maps; these tests check ketflow's own
choices (design matrices, arm coding, paired change as a one-sample test of differences,
smoothing, group mask) against nilearn given the same images, and the cluster table.
"""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import gaussian_filter

from ketflow.group.clusters import cluster_table, roi_coordinates
from ketflow.group.permutation import nilearn_rearrangements
from ketflow.group.voxelwise import (Settings, check_same_grid, common_mask, design_matrix, difference_images,
                                     mean_image, second_level)

SHAPE = (12, 13, 11)
AFFINE = np.array([[4.0, 0, 0, -24], [0, 4, 0, -26], [0, 0, 4, -20], [0, 0, 0, 1]])


def _images(rng, n, effect=0.0, holes=True):
    """n smooth random maps (float32), zero outside a per-subject brain mask, ``effect`` added in a blob."""
    blob = np.zeros(SHAPE)
    blob[3:7, 4:8, 3:6] = 1
    out = []
    for _ in range(n):
        data = gaussian_filter(rng.standard_normal(SHAPE), 1.0) + effect * blob
        inside = np.ones(SHAPE, dtype=bool)
        inside[0, :, :] = False
        if holes:
            inside[-1 - rng.integers(0, 2), :, :] = False  # subjects' masks differ at one edge
        out.append(nib.Nifti1Image(np.where(inside, data, 0).astype(np.float32), AFFINE))
    return out


def _nilearn_contrast(images, design, contrast, mask, fwhm):
    from nilearn.glm.second_level import SecondLevelModel

    model = SecondLevelModel(mask_img=nib.Nifti1Image(mask.astype(np.uint8), AFFINE), smoothing_fwhm=fwhm)
    return model.fit(images, design_matrix=design).compute_contrast(contrast, output_type="all")


def _values(img, mask):
    return np.asanyarray(img.dataobj, dtype=float)[mask]


def test_group_mask_is_the_intersection_of_the_subjects_maps():
    rng = np.random.default_rng(0)
    images = _images(rng, 5)
    mask = common_mask(images)
    expected = np.all([np.asanyarray(i.dataobj) != 0 for i in images], axis=0)
    np.testing.assert_array_equal(mask, expected)
    assert not mask[0].any() and mask[1:-2].all()


def test_arm_by_change_equals_nilearn_two_group_model_of_the_change():
    """Effect-coded arm (+0.5 / -0.5) with an intercept: its effect is mean change(arm 1) - mean change(arm 2),
    the same t as nilearn's cell-means model with contrast [1, -1]."""
    rng = np.random.default_rng(1)
    pre, post = _images(rng, 10), _images(rng, 10, effect=0.8)
    change = difference_images(post, pre)
    mask = common_mask(pre + post)
    arm = np.repeat([0.5, -0.5], 5)
    ours = second_level(change, design_matrix("arm_by_change", 10, arm=arm), "arm", mask,
                        settings=Settings(smoothing_fwhm=6.0, n_permutations=20))
    cells = pd.DataFrame({"ketamine": (arm > 0).astype(float), "midazolam": (arm < 0).astype(float)})
    ref = _nilearn_contrast(change, cells, "ketamine - midazolam", mask, 6.0)
    for ours_key, ref_key in ((("effect", None), "effect_size"), (("t", None), "stat"), (("z", None), "z_score"),
                              (("p", None), "p_value")):
        np.testing.assert_allclose(_values(ours.maps[ours_key], mask), _values(ref[ref_key], mask), rtol=1e-5,
                                   atol=1e-5)
    # the same effect by hand: unsmoothed difference of the arms' mean changes
    plain = second_level(change, design_matrix("arm_by_change", 10, arm=arm), "arm", mask,
                         settings=Settings(smoothing_fwhm=0, n_permutations=20))
    changes = np.stack([_values(c, mask) for c in change])
    np.testing.assert_allclose(_values(plain.maps[("effect", None)], mask),
                               changes[:5].mean(axis=0) - changes[5:].mean(axis=0), rtol=1e-5, atol=1e-5)


def test_paired_change_equals_nilearn_paired_design_on_both_sessions():
    """The one-sample test of follow-up - baseline maps is the paired t test: nilearn's model of the 2n session
    maps with a session regressor and one intercept per subject gives the same t."""
    rng = np.random.default_rng(2)
    n = 8
    pre, post = _images(rng, n), _images(rng, n, effect=0.6)
    mask = common_mask(pre + post)
    ours = second_level(difference_images(post, pre), design_matrix("paired_change", n), "intercept", mask,
                        settings=Settings(smoothing_fwhm=5.0, n_permutations=20))
    paired = pd.DataFrame(np.vstack([np.eye(n), np.eye(n)]), columns=[f"sub{i}" for i in range(n)])
    paired.insert(0, "session", np.repeat([-0.5, 0.5], n))
    ref = _nilearn_contrast(pre + post, paired, "session", mask, 5.0)
    np.testing.assert_allclose(_values(ours.maps[("t", None)], mask), _values(ref["stat"], mask), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_values(ours.maps[("effect", None)], mask), _values(ref["effect_size"], mask),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("design", ["one_sample", "arm_by_change"])
def test_permutation_maps_equal_nilearn_non_parametric_inference(design):
    """Same images, smoothing, mask, design and rearrangements: t, TFCE and FWE maps are nilearn's."""
    from nilearn.glm.second_level import non_parametric_inference

    rng = np.random.default_rng(3)
    n, n_perm = 10, 40
    images = (_images(rng, n, effect=0.7) if design == "one_sample"
              else _images(rng, n // 2, effect=1.2) + _images(rng, n // 2))
    mask = common_mask(images)
    arm = np.repeat([0.5, -0.5], n // 2)
    matrix = design_matrix(design, n, arm=arm if design == "arm_by_change" else None)
    contrast = "arm" if design == "arm_by_change" else "intercept"
    settings = Settings(smoothing_fwhm=6.0, cluster_forming_p=0.01)
    rows = nilearn_rearrangements(n, n_perm, 7, signflip=design == "one_sample")
    ours = second_level(images, matrix, contrast, mask, settings=settings, rearranged=rows)
    # nilearn sign-flips whenever the confounds hold a constant column (its intercept test), so the two-group
    # design is given to it without the intercept column, which it then adds itself and permutes the labels,
    # as ketflow does for a non-constant tested regressor
    nilearn_matrix = matrix[["arm"]] if design == "arm_by_change" else matrix
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = non_parametric_inference(images, design_matrix=nilearn_matrix, second_level_contrast=contrast,
                                       mask=nib.Nifti1Image(mask.astype(np.uint8), AFFINE), smoothing_fwhm=6.0,
                                       n_perm=n_perm, two_sided_test=True, random_state=7, n_jobs=1, tfce=True,
                                       threshold=0.01)
    np.testing.assert_allclose(_values(ours.maps[("t", None)], mask), _values(ref["t"], mask), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_values(ours.maps[("tfce", None)], mask), _values(ref["tfce"], mask), rtol=1e-4)
    for ours_key, ref_key in ((("logp", "voxelFWE"), "logp_max_t"), (("logp", "tfceFWE"), "logp_max_tfce")):
        np.testing.assert_allclose(_values(ours.maps[ours_key], mask), _values(ref[ref_key], mask), atol=1e-5)
    # the parametric t (SecondLevelModel) is the permutation t
    np.testing.assert_allclose(ours.permutation.t, _values(ours.maps[("t", None)], mask), rtol=1e-4, atol=1e-4)
    assert (_values(ours.maps[("logp", "tfceFWE")], mask) > -np.log10(0.05)).any()


def test_small_volume_correction_is_never_less_sensitive_inside_the_volume():
    rng = np.random.default_rng(4)
    images = _images(rng, 10, effect=0.5)
    mask = common_mask(images)
    svc = np.zeros(SHAPE, dtype=bool)
    svc[2:8, 3:9, 2:7] = True
    res = second_level(images, design_matrix("one_sample", 10), "intercept", mask,
                       settings=Settings(n_permutations=60), svc=svc)
    inside = svc[mask]
    for whole, small in (("voxelFWE", "svcVoxelFWE"), ("tfceFWE", "svcTfceFWE")):
        logp_whole = _values(res.maps[("logp", whole)], mask)
        logp_small = _values(res.maps[("logp", small)], mask)
        assert (logp_small[inside] >= logp_whole[inside] - 1e-6).all()
        assert (logp_small[~inside] == 0).all()
    assert res.n_svc_voxels == int((svc & mask).sum())


def test_bad_designs_and_grids_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="two levels"):
        design_matrix("arm_by_change", 4, arm=np.ones(4))
    with pytest.raises(ValueError, match="rank-deficient"):
        design_matrix("one_sample", 4, covariates=pd.DataFrame({"age": [30.0] * 4}))
    with pytest.raises(ValueError, match="unknown design"):
        design_matrix("two_sample", 4)
    a = nib.Nifti1Image(np.ones(SHAPE, dtype=np.float32), AFFINE)
    b = nib.Nifti1Image(np.ones((6, 6, 6), dtype=np.float32), AFFINE)
    with pytest.raises(ValueError, match="sub-02_map.nii.gz: grid"):
        check_same_grid([a, b], ["sub-01_map.nii.gz", "sub-02_map.nii.gz"])


def test_runs_are_averaged_with_equal_weights():
    a = nib.Nifti1Image(np.full(SHAPE, 1.0, dtype=np.float32), AFFINE)
    b = nib.Nifti1Image(np.full(SHAPE, 3.0, dtype=np.float32), AFFINE)
    np.testing.assert_allclose(np.asanyarray(mean_image([a, b]).dataobj), 2.0)
    assert mean_image([a]) is a


class _Atlas:
    def label_at(self, xyz):
        return "Left" if xyz[0] < 0 else "Right"


def test_cluster_table_reports_peaks_sizes_and_nearest_roi():
    t_map = np.zeros(SHAPE)
    t_map[2:4, 2:4, 2:4] = 5.0
    t_map[3, 3, 3] = 7.0
    t_map[8:10, 8:10, 7:9] = -4.0
    p = np.where(t_map != 0, 0.01, 1.0)
    roi = np.zeros(SHAPE, dtype=int)
    roi[3, 3, 3] = 1
    roi[10, 10, 9] = 2
    rois = list(zip(["inside", "far"], roi_coordinates(roi, AFFINE, 2)))
    table = cluster_table(t_map, {"voxelFWE": p}, AFFINE, 0.05, rois=rois, atlas=_Atlas())
    assert list(table["sign"]) == ["+", "-"] and list(table["n_voxels"]) == [8, 8]
    first, second = table.iloc[0], table.iloc[1]
    assert (first.x_mm, first.y_mm, first.z_mm) == (-12.0, -14.0, -8.0) and first.peak_t == 7.0
    assert first.volume_mm3 == 8 * 64 and first.nearest_roi == "inside" and first.roi_distance_mm == 0
    assert first.anatomical_label == "Left" and second.anatomical_label == "Right"
    assert second.nearest_roi == "far" and second.roi_distance_mm == pytest.approx(np.sqrt(3 * 8**2))
    assert cluster_table(t_map, {"voxelFWE": np.ones(SHAPE)}, AFFINE, 0.05).empty
