"""The simulator's anatomical ROI placement and optional susceptibility dropout."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ketflow.signal import rois
from ketflow.signal.roi_quality import roi_quality
from ketflow.simulate import simulate_dataset
from ketflow.simulate.dropout import susceptibility_attenuation

SETTINGS = {"n_subjects": 2, "voxel_size": 6.0, "n_volumes": 60, "tasks": ["rest"], "seed": 3}
FUNC = "derivatives/fmriprep/sub-01/ses-pre/func/sub-01_ses-pre_task-rest_space-MNI152NLin2009cAsym"


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("dropout")
    return (simulate_dataset(base / "plain", **SETTINGS),
            simulate_dataset(base / "dropout", dropout=True, **SETTINGS))


def _quality(root: Path) -> pd.DataFrame:
    mask = np.asarray(nib.load(root / f"{FUNC}_desc-brain_mask.nii.gz").dataobj) > 0
    data = np.asarray(nib.load(root / f"{FUNC}_desc-preproc_bold.nii.gz").dataobj)[mask].T
    labels = np.asarray(nib.load(root / "sourcedata/truth/desc-rois_dseg.nii.gz").dataobj)[mask]
    names = pd.read_csv(root / "sourcedata/truth/desc-rois_dseg.tsv", sep="\t")["name"]
    return roi_quality(data[2:], labels, names).set_index("name")  # after the dummy volumes


def test_signals_sit_on_the_atlas_regions(pair):
    plain, _ = pair
    labels = np.asarray(nib.load(plain / "sourcedata/truth/desc-rois_dseg.nii.gz").dataobj)
    affine = nib.load(plain / "sourcedata/truth/desc-rois_dseg.nii.gz").affine
    atlas, atlas_affine, names = rois.read_circuit_atlas()
    assert np.array_equal(labels, rois.resample_labels(atlas, atlas_affine, labels.shape, affine, "majority"))
    truth = pd.read_json(plain / "ground_truth.json", typ="series")
    assert [r["name"] for r in truth["rois"]] == list(names)
    assert truth["dropout"] is None
    # the template-based grey-matter probseg exceeds 0.5 on every ROI voxel, as fMRIPrep's would
    probseg = np.asarray(nib.load(plain / "derivatives/fmriprep/sub-01/anat/"
                                  "sub-01_space-MNI152NLin2009cAsym_label-GM_probseg.nii.gz").dataobj)
    assert np.all(probseg[labels > 0] > 0.5)


def test_dropout_lowers_mean_and_tsnr_ventrally_only(pair):
    plain, lossy = (_quality(root) for root in pair)
    # same seed: identical noise draws, so the differences are the dropout's
    for roi in ("vmPFC", "amygdala_L", "amygdala_R"):
        assert lossy.loc[roi, "mean_ratio"] < 0.85 * plain.loc[roi, "mean_ratio"], roi
        assert lossy.loc[roi, "tsnr"] < plain.loc[roi, "tsnr"], roi
        assert lossy.loc[roi, "tsnr_roi_signal"] < plain.loc[roi, "tsnr_roi_signal"], roi
    assert lossy.loc["vmPFC", "dropout_fraction"] > 0.05 and plain.loc["vmPFC", "dropout_fraction"] == 0
    assert lossy.loc["dACC", "tsnr"] == pytest.approx(plain.loc["dACC", "tsnr"], rel=0.02)
    assert lossy.loc["dACC", "dropout_fraction"] == 0


def test_attenuation_map_is_ventral_and_bounded():
    shape = (33, 39, 33)
    affine = np.diag([6.0, 6.0, 6.0, 1.0])
    affine[:3, 3] = (-96.0, -132.0, -78.0)
    kept = susceptibility_attenuation(affine, shape)
    xyz = rois.voxel_centres_mm(shape, affine)
    assert kept.min() >= 0.05 and kept.max() == 1.0
    assert np.all(kept[xyz[..., 2] > 20] > 0.999)  # nothing above the ventricles
    gyrus_rectus = np.argmin(np.linalg.norm(xyz - (0.0, 39.0, -24.0), axis=-1))
    assert kept.ravel()[gyrus_rectus] < 0.5
