"""End-to-end test of the BuildROIs -> Denoise -> ExtractROISignals -> Connectivity interfaces."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ketflow.config import Circuit, Denoising
from ketflow.interfaces.connectivity import Connectivity
from ketflow.interfaces.denoise import Denoise
from ketflow.interfaces.rois import BuildROIs, ExtractROISignals
from ketflow.io.confounds import MOTION_6, TISSUE_3, expansions
from ketflow.signal.denoise import TooFewVolumesError
from ketflow.signal.extract import roi_means

CIRCUIT = ["dACC", "rACC", "vmPFC", "antHippocampus_L", "antHippocampus_R",
           "antInsula_L", "antInsula_R", "amygdala_L", "amygdala_R"]
TR, N = 2.0, 90
DENOISING = Denoising(strategy="36P", fd_threshold=0.5, min_volumes=30)


@pytest.fixture(scope="module")
def run_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(7)
    shape = (24, 30, 22)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = (-48.0, -60.0, -44.0)
    bold = (200 + rng.normal(size=shape + (N,)) * 3).astype(np.float32)
    bold[10:14, 18:22, 14:18] += rng.normal(size=(1, 1, 1, N)).astype(np.float32) * 5  # a coherent patch
    nib.Nifti1Image(bold, affine).to_filename(root / "bold.nii.gz")
    mask = np.zeros(shape, np.uint8)
    mask[1:-1, 1:-1, 1:-1] = 1
    nib.Nifti1Image(mask, affine).to_filename(root / "mask.nii.gz")
    columns = expansions(MOTION_6) + expansions(TISSUE_3)
    conf = pd.DataFrame(rng.normal(size=(N, len(columns))), columns=columns)
    conf.loc[0, [c for c in columns if "derivative1" in c]] = np.nan
    fd = np.abs(rng.normal(size=N)) * 0.15
    fd[40] = 1.2  # one motion spike
    conf["framewise_displacement"] = fd
    conf.loc[0, "framewise_displacement"] = np.nan
    conf["non_steady_state_outlier00"] = np.eye(N)[0]
    conf.to_csv(root / "confounds.tsv", sep="\t", index=False, na_rep="n/a")
    (root / "confounds.json").write_text("{}")
    events = pd.DataFrame({"onset": np.arange(6.0, 170, 20.0), "duration": 4.0, "trial_type": "faces"})
    events.to_csv(root / "events.tsv", sep="\t", index=False)
    return root


def test_chain(run_files, tmp_path, monkeypatch):
    r = run_files
    monkeypatch.chdir(tmp_path)
    # an ROI keeping fewer in-mask voxels than min_voxels is placed and counted (5 mm spheres keep
    # ~6 voxels at 4 mm): the coverage rule of ROIQuality excludes it from the run with the reason
    # (tests/test_interfaces_roi_quality.py); BuildROIs no longer stops the run
    short = BuildROIs(bold_ref=str(r / "bold.nii.gz"), brain_mask=str(r / "mask.nii.gz"),
                      circuit=Circuit(rois="spheres", min_voxels=20)).run().outputs
    assert (pd.read_csv(short.labels_tsv, sep="\t").set_index("name").loc["antHippocampus_L", "n_voxels"] < 20)
    rois = BuildROIs(bold_ref=str(r / "bold.nii.gz"), brain_mask=str(r / "mask.nii.gz"),
                     circuit=Circuit(rois="spheres", min_voxels=3)).run().outputs
    labels_tsv = pd.read_csv(rois.labels_tsv, sep="\t")
    assert labels_tsv["name"].tolist() == CIRCUIT and (labels_tsv["n_voxels"] >= 3).all()
    assert nib.load(rois.labels_file).shape == (24, 30, 22)

    den = Denoise(
        bold_file=str(r / "bold.nii.gz"), brain_mask=str(r / "mask.nii.gz"), confounds_tsv=str(r / "confounds.tsv"),
        confounds_json=str(r / "confounds.json"), denoising=DENOISING, band_pass=False, tr=TR,
    ).run().outputs
    censoring = pd.read_csv(den.censoring_tsv, sep="\t")
    assert len(censoring) == N and censoring["retained"].sum() == N - 1 - censoring["motion_censored"].sum()
    assert censoring.loc[40, "motion_censored"] == 1 and censoring.loc[0, "dummy"] == 1
    outliers, motion = pd.read_csv(den.outliers_tsv, sep="\t"), pd.read_csv(den.motion_tsv, sep="\t")
    assert outliers.columns.tolist() == ["framewise_displacement", "motion_outlier", "dummy_scan"]
    assert (outliers["motion_outlier"] == censoring["motion_censored"]).all()
    assert (outliers["dummy_scan"] == censoring["dummy"]).all()
    assert (outliers["framewise_displacement"] == (censoring["framewise_displacement"] > 0.5)).all()
    assert set(outliers["framewise_displacement"]) <= {0, 1} and outliers["framewise_displacement"].sum() >= 1
    assert motion.columns.tolist() == ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z",
                                       "framewise_displacement"]
    assert np.allclose(motion["framewise_displacement"], censoring["framewise_displacement"])
    data = np.load(den.denoised_file)
    n_kept = int(censoring["retained"].sum())
    assert data.shape == (n_kept, 22 * 28 * 20) and data.dtype == np.float32
    qc = json.loads(open(den.qc_json).read())
    assert qc["strategy"] == {"strategy": "36P", "n_compcor": 0.5, "fd_threshold": 0.5, "std_dvars_threshold": None,
                              "min_contiguous": 5, "high_pass_s": 128, "band_pass_hz": None, "standardize": False,
                              "min_volumes": 30, "min_dof": 30, "min_time_s": None}
    assert qc["num_censored_volumes"] == N - n_kept and qc["dof_lost"] == 1 + 36 + int(2 * N * TR / 128)
    assert qc["mean_dvars_final"] < qc["mean_dvars_initial"]

    ext = ExtractROISignals(
        denoised_file=den.denoised_file, brain_mask=str(r / "mask.nii.gz"),
        labels_file=rois.labels_file, labels_tsv=rois.labels_tsv, method="mean",
    ).run().outputs
    ts = pd.read_csv(ext.timeseries, sep="\t")
    assert ext.timeseries.endswith("stat-mean_timeseries.tsv") and ext.coverage.endswith("stat-coverage_bold.tsv")
    assert ts.columns.tolist() == CIRCUIT and len(ts) == n_kept
    mask = nib.load(r / "mask.nii.gz").get_fdata() > 0
    labels = np.asanyarray(nib.load(rois.labels_file).dataobj)[mask]
    assert np.allclose(ts.to_numpy(), roi_means(data, labels, 9), atol=1e-6)

    con = Connectivity(
        timeseries=ext.timeseries, coverage=ext.coverage, denoise_qc=den.qc_json, denoised_file=den.denoised_file,
        brain_mask=str(r / "mask.nii.gz"), seeds=["amygdala_L"], connectivity_measures=["pearson", "fisher_z"],
    ).run().outputs
    assert "pearsoncorrelation" in con.measures and len(con.relmat_files) == len(con.measures)
    pearson = pd.read_csv(con.relmat_files[con.measures.index("pearsoncorrelation")], sep="\t", index_col="Node")
    assert pearson.index.tolist() == CIRCUIT
    assert np.allclose(pearson.to_numpy(), np.corrcoef(ts.to_numpy(), rowvar=False), atol=1e-8)
    assert con.relmat_files[0].endswith("_relmat.tsv")
    zmap = nib.load(con.seed_maps[0]).get_fdata()
    assert con.seed_names == ["amygdala_L"] and zmap.shape == (24, 30, 22) and np.abs(zmap).max() > 0.5
    cqc = json.loads(open(con.qc_json).read())
    assert set(cqc["roi_coverage"]) == set(CIRCUIT) and cqc["num_volumes_connectivity"] == n_kept

    task = Connectivity(
        timeseries=ext.timeseries, events_file=str(r / "events.tsv"), censoring_tsv=den.censoring_tsv, tr=TR,
        connectivity_measures=["pearson"],
    ).run().outputs
    assert json.loads(open(task.qc_json).read())["task_residual"] is True

    nifti = Denoise(
        bold_file=str(r / "bold.nii.gz"), brain_mask=str(r / "mask.nii.gz"), confounds_tsv=str(r / "confounds.tsv"),
        denoising=DENOISING, band_pass=False, tr=TR, output_format="nifti",
    ).run().outputs
    img = nib.load(nifti.denoised_file)
    assert img.shape == (24, 30, 22, n_kept)
    assert np.allclose(img.get_fdata(dtype=np.float32)[mask].T, data, atol=1e-6)


def test_denoise_too_few_volumes(run_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    strict = Denoising(strategy="24P", fd_threshold=0.05, min_volumes=30)
    with pytest.raises(TooFewVolumesError):
        Denoise(
            bold_file=str(run_files / "bold.nii.gz"), brain_mask=str(run_files / "mask.nii.gz"),
            confounds_tsv=str(run_files / "confounds.tsv"), denoising=strict, band_pass=False, tr=TR,
        ).run()


def test_settings_come_typed_from_the_configuration(run_files, tmp_path, monkeypatch):
    """The interfaces take the configuration's sections, not JSON, and hold no defaults of their own."""
    from traits.api import TraitError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(TraitError):
        Denoise(denoising={"fd_treshold": 0.3})
    with pytest.raises(ValueError, match="band_pass"):  # no silent default for the run kind
        Denoise(bold_file=str(run_files / "bold.nii.gz"), brain_mask=str(run_files / "mask.nii.gz"),
                confounds_tsv=str(run_files / "confounds.tsv"), denoising=DENOISING, tr=TR).run()


def test_exclusion_policy_defaults_are_one_value():
    from ketflow.config import load_config
    from ketflow.signal.denoise import MIN_DOF, MIN_VOLUMES

    den = load_config().denoising
    assert (den.min_volumes, den.min_dof) == (Denoising().min_volumes, Denoising().min_dof) == (MIN_VOLUMES, MIN_DOF)
    assert den.band_pass_rest is None
