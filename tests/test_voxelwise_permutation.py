"""The voxelwise permutation engine against nilearn, and its family-wise error on null data.

ketflow computes TFCE and cluster maxima with a union-find (ketflow.group.cluster_stats) where
nilearn labels the grid 100 times per permutation; on the same rearrangements the null
distributions, statistic maps and FWE p-values must be nilearn's.
"""

from __future__ import annotations

import math
import warnings

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, generate_binary_structure

from ketflow.group.cluster_stats import cluster_labels, cluster_max, neighbours, tfce_map, tfce_max
from ketflow.group.permutation import fwe_p, nilearn_rearrangements, permutation_inference, rearrangements

SHAPE = (10, 12, 9)


def _mask(rng) -> np.ndarray:
    return gaussian_filter(rng.standard_normal(SHAPE), 2) > -0.1


def _maps(rng, n, mask, effect=0.0) -> np.ndarray:
    """(n, voxels) smooth random fields, plus ``effect`` in one corner of the grid."""
    data = np.stack([gaussian_filter(rng.standard_normal(SHAPE), 1.0) for _ in range(n)])
    data[:, 6:, :, :] += effect
    return data[:, mask]


@pytest.mark.parametrize("two_sided", [True, False])
def test_tfce_and_cluster_kernels_equal_nilearn(two_sided):
    from nilearn.mass_univariate._utils import calculate_cluster_measures, calculate_tfce

    rng = np.random.default_rng(1)
    for _ in range(4):
        mask = _mask(rng)
        grid = np.zeros(SHAPE)
        grid[mask] = gaussian_filter(rng.standard_normal(SHAPE), 1.2)[mask] * 5
        values, nbr = grid[mask], neighbours(mask)
        reference = calculate_tfce(grid[..., None], generate_binary_structure(3, 1), two_sided_test=two_sided)
        ours = tfce_map(values, nbr, two_sided=two_sided)
        np.testing.assert_allclose(ours, reference[..., 0][mask], rtol=1e-12, atol=1e-9)
        svc = rng.random(len(values)) < 0.3
        best, best_svc = tfce_max(values, nbr, svc, two_sided=two_sided)
        assert best == pytest.approx(np.abs(ours).max(), rel=1e-12)
        assert best_svc == pytest.approx(np.abs(ours[svc]).max(), rel=1e-12)
        size, mass = calculate_cluster_measures(grid[..., None], 1.0, generate_binary_structure(3, 1),
                                                two_sided_test=two_sided)
        assert cluster_max(values, 1.0, nbr, two_sided=two_sided) == (size[0], pytest.approx(mass[0], rel=1e-12))
        labels, sizes, masses = cluster_labels(values, 1.0, nbr, two_sided=two_sided)
        assert sizes.max() == size[0] and masses.max() == pytest.approx(mass[0], rel=1e-12)
        assert (labels > 0).sum() == sizes.sum() == (np.abs(values) > 1 if two_sided else values > 1).sum()


@pytest.mark.parametrize("design", ["one_sample", "two_groups", "two_groups_covariate"])
@pytest.mark.parametrize("two_sided", [True, False])
def test_null_distributions_and_p_values_equal_nilearn_on_the_same_rearrangements(design, two_sided):
    from nilearn.maskers import NiftiMasker
    from nilearn.mass_univariate import permuted_ols

    rng = np.random.default_rng(3)
    n, n_perm = 12, 60
    mask = _mask(rng)
    data = _maps(rng, n, mask, effect=0.4)
    tested = np.ones(n) if design == "one_sample" else np.repeat([0.5, -0.5], n // 2)
    confounds = rng.standard_normal((n, 1)) if design == "two_groups_covariate" else None
    masker = NiftiMasker(nib.Nifti1Image(mask.astype(np.uint8), np.eye(4))).fit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = permuted_ols(tested[:, None], data, confounding_vars=confounds, n_perm=n_perm, two_sided_test=two_sided,
                           random_state=5, masker=masker, tfce=True, threshold=0.01, n_jobs=1)
    ours = permutation_inference(data, tested, mask, confounds=confounds, two_sided=two_sided, cluster_forming_p=0.01,
                                 rearranged=nilearn_rearrangements(n, n_perm, 5, design == "one_sample"))
    np.testing.assert_allclose(ours.t, ref["t"][0], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ours.tfce, ref["tfce"][0], rtol=1e-9, atol=1e-9)
    for ours_key, ref_key in (("t", "h0_max_t"), ("tfce", "h0_max_tfce"), ("cluster_mass", "h0_max_mass"),
                              ("cluster_size", "h0_max_size")):
        np.testing.assert_allclose(np.sort(ours.null[ours_key]), np.sort(ref[ref_key][0]), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(-np.log10(ours.p_voxel), ref["logp_max_t"][0], atol=1e-12)
    np.testing.assert_allclose(-np.log10(ours.p_tfce), ref["logp_max_tfce"][0], atol=1e-12)
    # clusters: the same masses; p-values from nilearn's null, counted as (1 + #{null >= mass}) / (1 + n)
    # (nilearn itself uses #{null >= mass} / n, clipped to [1/n, 1 - 1/n])
    in_cluster = ours.cluster_labels > 0
    mass = ours.cluster_masses[ours.cluster_labels[in_cluster] - 1]
    np.testing.assert_allclose(mass, ref["mass"][0][in_cluster], rtol=1e-9)
    count = (ref["h0_max_mass"][0][None, :] >= mass[:, None] - 1e-9).sum(axis=1)
    np.testing.assert_allclose(ours.p_cluster_mass[in_cluster], (1 + count) / (1 + n_perm))
    assert (ours.p_cluster_mass[~in_cluster] == 1).all()
    assert in_cluster.any()  # the planted effect forms clusters, so the comparison above is not empty


def test_rearrangements_are_enumerated_when_few_and_drawn_otherwise():
    exhaustive = rearrangements(np.ones(6), 100, seed=0, signflip=True)
    assert exhaustive.exhaustive and len(exhaustive) == 2**6 - 1
    assert len({tuple(r) for r in exhaustive.rows}) == 63 and not (exhaustive.rows == 1).all(axis=1).any()
    arm = np.array([0.5, 0.5, 0.5, -0.5, -0.5, -0.5, -0.5])
    relabel = rearrangements(arm, 100, seed=0, signflip=False)
    assert relabel.exhaustive and len(relabel) == math.comb(7, 3) - 1
    assignments = {tuple(arm[r]) for r in relabel.rows}
    assert len(assignments) == len(relabel) and tuple(arm) not in assignments
    drawn = rearrangements(np.ones(20), 50, seed=0, signflip=True)
    assert not drawn.exhaustive and drawn.rows.shape == (50, 20)
    np.testing.assert_array_equal(drawn.rows, rearrangements(np.ones(20), 50, seed=0, signflip=True).rows)
    assert not rearrangements(arm, 100, seed=0, signflip=False, enumerate_levels=False).exhaustive


def test_results_do_not_depend_on_the_number_of_threads():
    rng = np.random.default_rng(4)
    mask = _mask(rng)
    data = _maps(rng, 10, mask, effect=0.5)
    one = permutation_inference(data, np.ones(10), mask, n_permutations=40, n_jobs=1, seed=2)
    two = permutation_inference(data, np.ones(10), mask, n_permutations=40, n_jobs=2, seed=2)
    for key in one.null:
        np.testing.assert_array_equal(one.null[key], two.null[key])
    np.testing.assert_array_equal(one.p_tfce, two.p_tfce)


def test_fwe_p_counts_the_observed_value():
    np.testing.assert_allclose(fwe_p([0.5, 2.0, 10.0], [1.0, 2.0, 3.0]), [4 / 4, 3 / 4, 1 / 4])


@pytest.mark.parametrize("signflip", [True, False])
def test_family_wise_error_is_controlled_on_null_studies(signflip):
    """Over 200 null studies (8 x 8 x 8 grid, 12 subjects, 99 rearrangements), the rate of any voxel with
    FWE p < 0.05 is at most 0.05 within simulation error, for every correction."""
    rng = np.random.default_rng(11)
    shape = (8, 8, 8)
    mask = np.ones(shape, dtype=bool)
    svc = np.zeros(shape, dtype=bool)
    svc[2:5, 2:5, 2:5] = True
    n, n_studies = 12, 200
    tested = np.ones(n) if signflip else np.repeat([0.5, -0.5], n // 2)
    hits = {key: 0 for key in ("voxel", "tfce", "cluster", "svc_voxel", "svc_tfce")}
    for study in range(n_studies):
        data = np.stack([gaussian_filter(rng.standard_normal(shape), 1.0) for _ in range(n)]).reshape(n, -1)
        res = permutation_inference(data, tested, mask, n_permutations=99, cluster_forming_p=0.01,
                                    svc=svc.ravel(), seed=study)
        hits["voxel"] += res.p_voxel.min() < 0.05
        hits["tfce"] += res.p_tfce.min() < 0.05
        hits["cluster"] += res.p_cluster_mass.min() < 0.05
        hits["svc_voxel"] += np.nanmin(res.p_voxel_svc) < 0.05
        hits["svc_tfce"] += np.nanmin(res.p_tfce_svc) < 0.05
    limit = 0.05 + 2.5 * math.sqrt(0.05 * 0.95 / n_studies)  # 0.089
    rates = {key: count / n_studies for key, count in hits.items()}
    assert all(rate <= limit for rate in rates.values()), rates
    assert sum(hits.values()) > 0, rates  # the tests do reject sometimes (not a constant p = 1)
