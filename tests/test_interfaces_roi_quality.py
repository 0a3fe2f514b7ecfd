"""The default circuit on a run (BuildROIs -> ROIQuality -> later nodes), issue 16.1.

One synthetic run on the simulator's 4 mm MNI grid (template brain mask, template grey-matter
probability written as an fMRIPrep-style ``label-GM_probseg``), 60 volumes of constant signal
1000 plus white noise SD 10 (tSNR 100), with two planted defects:

* dropout: the voxels of the right amygdala at 30 % of the brain's intensity (susceptibility
  signal loss), so every one of its voxels is in dropout;
* no grey matter in the left amygdala (its GM probability set to 0 in the probseg), so the
  grey-matter restriction leaves it no voxel.

Both must be excluded by the coverage rule with their reasons, and be absent from what the
later nodes read; every other region keeps its voxels, in the mask and in grey matter only.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ketflow.config import load_config
from ketflow.interfaces import run_in
from ketflow.interfaces.connectivity import Connectivity
from ketflow.interfaces.roi_quality import ROIQuality
from ketflow.interfaces.rois import BuildROIs, ExtractROISignals
from ketflow.io.boldcache import write_bold_cache
from ketflow.signal.rois import read_circuit_atlas
from ketflow.simulate.grid import build_anatomy

N_VOLUMES, MEAN, NOISE_SD, DROPOUT_SCALE = 60, 1000.0, 10.0, 0.3


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The synthetic run, its placed ROIs and the ROIQuality outputs (default circuit)."""
    base = tmp_path_factory.mktemp("roi_quality")
    anatomy = build_anatomy(4.0)
    mask = anatomy.brain
    gm = anatomy.p_gm.astype(np.float32)
    gm[anatomy.rois["amygdala_L"]] = 0.0  # the left amygdala lies outside grey matter
    rng = np.random.default_rng(0)
    data = np.zeros(anatomy.shape + (N_VOLUMES,), np.float32)
    data[mask] = MEAN + rng.normal(0, NOISE_SD, (int(mask.sum()), N_VOLUMES))
    data[anatomy.rois["amygdala_R"]] *= DROPOUT_SCALE  # susceptibility dropout
    files = {"bold": base / "bold.nii.gz", "mask": base / "mask.nii.gz", "gm": base / "GM_probseg.nii.gz"}
    nib.Nifti1Image(data, anatomy.affine).to_filename(files["bold"])
    nib.Nifti1Image(mask.astype(np.uint8), anatomy.affine).to_filename(files["mask"])
    nib.Nifti1Image(gm, anatomy.affine).to_filename(files["gm"])
    confounds = base / "confounds.tsv"
    pd.DataFrame({"non_steady_state_outlier00": [1] + [0] * (N_VOLUMES - 1)}).to_csv(confounds, sep="\t", index=False)
    cache = write_bold_cache(files["bold"], mask, base / "cache.npy")
    circuit = load_config().circuit
    placed = run_in(BuildROIs(bold_ref=str(files["mask"]), brain_mask=str(files["mask"]), gm_probseg=str(files["gm"]),
                              circuit=circuit), base / "placed")
    quality = run_in(ROIQuality(bold_cache=str(cache), brain_mask=str(files["mask"]), labels_file=placed.labels_file,
                                labels_tsv=placed.labels_tsv, rois_meta=placed.rois_meta, confounds_tsv=str(confounds),
                                circuit=circuit), base / "work")
    return {"anatomy": anatomy, "gm": gm, "files": files, "cache": cache, "placed": placed, "quality": quality,
            "table": pd.read_csv(quality.quality_tsv, sep="\t"), "circuit": circuit, "base": base}


def test_default_circuit_is_the_anatomical_atlas_exclusive_in_mask_and_grey_matter(run):
    placed = np.asanyarray(nib.load(run["placed"].labels_file).dataobj)
    names = pd.read_csv(run["placed"].labels_tsv, sep="\t")["name"].tolist()
    assert tuple(names) == read_circuit_atlas()[2]
    labelled = placed > 0
    # one label per voxel, every labelled voxel inside the brain mask and the given grey matter
    assert labelled.sum() == sum(int((placed == i).sum()) for i in range(1, len(names) + 1))
    assert run["anatomy"].brain[labelled].all() and (run["gm"][labelled] > 0.5).all()
    # grey matter comes from the probseg given, not the template: the left amygdala has none there
    assert (placed == names.index("amygdala_L") + 1).sum() == 0
    assert (placed == names.index("amygdala_R") + 1).sum() >= 5
    meta = json.loads(open(run["quality"].quality_json).read())
    assert meta["GreyMatter"] == {"Source": "GM_probseg.nii.gz", "Threshold": 0.5,
                                  "Interpolation": "linear, onto the BOLD grid"}
    assert meta["ROISource"] == "anatomical"


def test_quality_numbers_on_a_run_with_planted_dropout(run):
    table = run["table"].set_index("name")
    placed = np.asanyarray(nib.load(run["placed"].labels_file).dataobj)
    for name, row in table.iterrows():
        assert row["n_voxels"] == (placed == row["index"]).sum()
    intact = table.drop(index=["amygdala_L", "amygdala_R"])
    assert (intact["dropout_fraction"] == 0).all()
    # tSNR = 1000 / 10 with 59 steady-state volumes (median over voxels; about +-10 % sampling error)
    assert np.allclose(intact["tsnr"], MEAN / NOISE_SD, rtol=0.1), intact["tsnr"]
    assert np.allclose(intact["mean_ratio"], 1.0, atol=0.01)
    dropped = table.loc["amygdala_R"]
    assert dropped["dropout_fraction"] == 1.0
    assert dropped["mean_ratio"] == pytest.approx(DROPOUT_SCALE, abs=0.01)
    assert dropped["tsnr"] == pytest.approx(MEAN / NOISE_SD, rel=0.15)  # scaled signal and noise alike
    assert json.loads(open(run["quality"].quality_json).read())["SteadyStateVolumes"] == N_VOLUMES - 1


def test_coverage_rule_excludes_with_the_reason_recorded(run):
    table = run["table"].set_index("name")
    assert table["excluded"].tolist() == [name in ("amygdala_L", "amygdala_R") for name in table.index]
    assert table.loc["amygdala_L", "reason"] == f"0 voxels < min_voxels {run['circuit'].min_voxels}"
    assert table.loc["amygdala_R", "reason"] == "dropout in 100% of voxels > max_dropout_fraction 50%"
    meta = json.loads(open(run["quality"].quality_json).read())
    assert meta["ExcludedROIs"] == ["amygdala_L", "amygdala_R"]
    assert meta["CoverageRule"] == {"MinVoxels": run["circuit"].min_voxels, "MaxDropoutFraction": 0.5}
    assert set(meta["Columns"]) == set(run["table"].columns)
    # no dropout rule: the right amygdala is kept
    lenient = run["circuit"].model_copy(update={"coverage": run["circuit"].coverage.model_copy(
        update={"max_dropout_fraction": None})})
    kept = run_in(ROIQuality(bold_cache=str(run["cache"]), brain_mask=str(run["files"]["mask"]),
                             labels_file=run["placed"].labels_file, labels_tsv=run["placed"].labels_tsv,
                             circuit=lenient), run["base"] / "lenient")
    assert pd.read_csv(kept.quality_tsv, sep="\t")["excluded"].sum() == 1


def test_later_nodes_skip_the_excluded_rois(run):
    kept_names = run["table"].loc[~run["table"]["excluded"], "name"].tolist()
    table = pd.read_csv(run["quality"].labels_tsv, sep="\t")
    assert table["name"].tolist() == kept_names and table["index"].tolist() == list(range(1, len(kept_names) + 1))
    labels = np.asanyarray(nib.load(run["quality"].labels_file).dataobj)
    placed = np.asanyarray(nib.load(run["placed"].labels_file).dataobj)
    old = dict(zip(run["table"]["name"], run["table"]["index"]))
    for new_index, name in enumerate(kept_names, start=1):
        assert ((labels == new_index) == (placed == old[name])).all()
    work = run["base"] / "later"
    # the BOLD cache stands in for the denoised data (the same in-mask float32 layout)
    series = run_in(ExtractROISignals(denoised_file=str(run["cache"]), brain_mask=str(run["files"]["mask"]),
                                      labels_file=run["quality"].labels_file, labels_tsv=run["quality"].labels_tsv,
                                      method="mean"), work)
    assert pd.read_csv(series.timeseries, sep="\t").columns.tolist() == kept_names
    connectivity = run_in(Connectivity(timeseries=series.timeseries, coverage=series.coverage,
                                       denoised_file=str(run["cache"]), brain_mask=str(run["files"]["mask"]),
                                       seeds=["amygdala_R", "vmPFC"], connectivity_measures=["pearson"]),
                          work)
    assert connectivity.seed_names == ["vmPFC"]
    assert json.loads(open(connectivity.qc_json).read())["seeds_excluded"] == ["amygdala_R"]
