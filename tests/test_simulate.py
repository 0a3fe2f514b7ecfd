"""Tests of the ground-truth simulator on a tiny dataset (2 subjects, 6 mm voxels, 40-60 volumes)."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ketflow.simulate import simulate_dataset
from ketflow.simulate.cli import main as cli_main

TINY = {"n_subjects": 2, "voxel_size": 6.0, "n_volumes": {"faces": 60, "conflict": 40, "rest": 40}}
N_VOL = TINY["n_volumes"]
SPACE = "space-MNI152NLin2009cAsym"
TASKS = ("faces", "conflict", "rest")



@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return simulate_dataset(tmp_path_factory.mktemp("a") / "ds", seed=11, **TINY)


@pytest.fixture(scope="module")
def truth(dataset) -> dict:
    return json.loads((dataset / "ground_truth.json").read_text())


def _files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_layout_and_names(dataset):
    for name in ("dataset_description.json", "README", "participants.tsv", "participants.json",
                 "sessions.json", "task-faces_events.json", "task-conflict_events.json",
                 "ground_truth.json", "derivatives/fmriprep/dataset_description.json"):
        assert (dataset / name).is_file(), name
    desc = json.loads((dataset / "dataset_description.json").read_text())
    assert desc["BIDSVersion"] == "1.9.0" and desc["DatasetType"] == "raw"
    der = json.loads((dataset / "derivatives/fmriprep/dataset_description.json").read_text())
    assert der["DatasetType"] == "derivative"
    assert der["GeneratedBy"][0] == {**der["GeneratedBy"][0], "Name": "fMRIPrep",
                                     "Version": "23.2.0"}
    assert "SIMULATED" in der["GeneratedBy"][0]["Description"]
    parts = pd.read_csv(dataset / "participants.tsv", sep="\t")
    assert list(parts.columns) == ["participant_id", "age", "sex", "group"]
    assert sorted(parts["group"]) == ["ketamine", "midazolam"]
    for sub in ("01", "02"):
        ses = pd.read_csv(dataset / f"sub-{sub}" / f"sub-{sub}_sessions.tsv", sep="\t")
        assert list(ses["session_id"]) == ["ses-pre", "ses-post"]
        assert set(ses.columns) == {"session_id", "caps5_total", "madrs_total"}
        for s in ("pre", "post"):
            raw = dataset / f"sub-{sub}" / f"ses-{s}" / "func"
            der = dataset / "derivatives/fmriprep" / f"sub-{sub}" / f"ses-{s}" / "func"
            for task in TASKS:
                p = f"sub-{sub}_ses-{s}_task-{task}"
                assert (raw / f"{p}_bold.nii.gz").is_file()
                assert (raw / f"{p}_events.tsv").is_file() == (task != "rest")
                for suffix in (f"{SPACE}_desc-preproc_bold.nii.gz", f"{SPACE}_desc-preproc_bold.json",
                               f"{SPACE}_desc-brain_mask.nii.gz", f"{SPACE}_boldref.nii.gz",
                               "desc-confounds_timeseries.tsv", "desc-confounds_timeseries.json"):
                    assert (der / f"{p}_{suffix}").is_file(), suffix


def test_bold_metadata_and_grid(dataset, truth):
    func = dataset / "sub-01/ses-pre/func"
    img = nib.load(func / "sub-01_ses-pre_task-faces_bold.nii.gz")
    meta = json.loads((func / "sub-01_ses-pre_task-faces_bold.json").read_text())
    assert meta["TaskName"] == "faces" and meta["RepetitionTime"] == 2.0
    assert len(meta["SliceTiming"]) == img.shape[2]
    assert 0.0 <= min(meta["SliceTiming"]) and max(meta["SliceTiming"]) < 2.0
    der = dataset / "derivatives/fmriprep/sub-01/ses-pre/func"
    pre = nib.load(der / f"sub-01_ses-pre_task-faces_{SPACE}_desc-preproc_bold.nii.gz")
    pmeta = json.loads((der / f"sub-01_ses-pre_task-faces_{SPACE}_desc-preproc_bold.json").read_text())
    assert pmeta["SkullStripped"] is False and pmeta["TaskName"] == "faces"
    st = meta["SliceTiming"]
    assert pmeta["StartTime"] == pytest.approx(min(st) + 0.5 * (max(st) - min(st)), abs=1e-3)
    assert pre.get_data_dtype() == np.float32 and pre.shape[3] == N_VOL["faces"]
    assert pre.header.get_zooms() == (6.0, 6.0, 6.0, 2.0)
    np.testing.assert_allclose(pre.affine[:3, 3], [-96, -132, -78])
    assert list(pre.shape[:3]) == truth["grid"]["shape"]
    # raw BOLD is the same simulated data rounded to int16
    np.testing.assert_allclose(np.asarray(img.dataobj), pre.get_fdata(), atol=0.5)
    mask = np.asarray(nib.load(der / f"sub-01_ses-pre_task-faces_{SPACE}_desc-brain_mask.nii.gz").dataobj)
    assert mask.sum() == truth["grid"]["n_brain_voxels"]
    brain_mean = pre.get_fdata()[mask > 0].mean()
    assert 800 < brain_mean < 1300


def test_gzip_headers_have_no_timestamp(dataset):
    for p in dataset.rglob("*.nii.gz"):
        head = p.read_bytes()[:10]
        assert head[:2] == b"\x1f\x8b" and head[4:8] == b"\x00\x00\x00\x00", p


def test_same_seed_is_byte_identical_and_other_seed_differs(dataset, tmp_path):
    again = simulate_dataset(tmp_path / "again", seed=11, **TINY)
    a, b = _files(dataset), _files(again)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    assert cli_main([str(tmp_path / "other"), "--subjects", "2", "--seed", "12",
                     "--voxel-size", "6", "--n-volumes", "faces=60,conflict=40,rest=40"]) == 0
    c = _files(tmp_path / "other")
    assert c.keys() == a.keys()
    bold = "derivatives/fmriprep/sub-01/ses-pre/func/" \
           f"sub-01_ses-pre_task-faces_{SPACE}_desc-preproc_bold.nii.gz"
    assert c[bold] != a[bold]
    assert c["ground_truth.json"] != a["ground_truth.json"]


def test_confounds_table(dataset, truth):
    der = dataset / "derivatives/fmriprep/sub-02/ses-post/func"
    conf = pd.read_csv(der / "sub-02_ses-post_task-faces_desc-confounds_timeseries.tsv", sep="\t",
                       na_values="n/a")
    meta = json.loads((der / "sub-02_ses-post_task-faces_desc-confounds_timeseries.json").read_text())
    n = N_VOL["faces"]
    assert len(conf) == n
    base = ["global_signal", "csf", "white_matter"] + [
        f"{m}_{a}" for m in ("trans", "rot") for a in "xyz"]
    for name in base:
        for col in (name, f"{name}_derivative1", f"{name}_power2", f"{name}_derivative1_power2"):
            assert col in conf.columns, col
        assert conf[f"{name}_derivative1"].isna().tolist() == [True] + [False] * (n - 1)
    for col in ("csf_wm", "tcompcor", "dvars", "std_dvars", "framewise_displacement", "rmsd",
                "a_comp_cor_00", "c_comp_cor_00", "w_comp_cor_00", "t_comp_cor_00", "cosine00"):
        assert col in conf.columns, col
    for col in ("dvars", "std_dvars", "framewise_displacement", "rmsd"):
        assert np.isnan(conf[col].iloc[0]) and conf[col].iloc[1:].notna().all()
    n_dummy = truth["subjects"]["sub-02"]["sessions"]["post"]["faces"]["run"]["n_dummy_volumes"]
    nss = [c for c in conf.columns if c.startswith("non_steady_state_outlier")]
    assert len(nss) == n_dummy >= 1
    assert conf[nss].sum(axis=1).iloc[:n_dummy].tolist() == [1.0] * n_dummy
    assert (conf["a_comp_cor_00"].iloc[:n_dummy] == 0).all()
    # first volume is bright: global signal well above the steady state
    assert conf["global_signal"].iloc[0] > 1.2 * conf["global_signal"].iloc[n_dummy:].mean()
    fd = conf["framewise_displacement"].to_numpy()
    motion = conf[["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]].to_numpy()
    d = np.abs(np.diff(motion, axis=0))
    np.testing.assert_allclose(fd[1:], d[:, :3].sum(1) + 50 * d[:, 3:].sum(1), rtol=1e-6)
    for prefix, mask in (("a_comp_cor", "combined"), ("c_comp_cor", "CSF"), ("w_comp_cor", "WM")):
        cols = [c for c in conf.columns if c.startswith(prefix)]
        entries = [meta[c] for c in cols]
        assert all(e["Method"] == "aCompCor" and e["Mask"] == mask and e["Retained"] for e in entries)
        assert entries[-1]["CumulativeVarianceExplained"] >= 0.5
        assert all(e["CumulativeVarianceExplained"] < 0.5 for e in entries[:-1])
    assert meta["t_comp_cor_00"]["Method"] == "tCompCor"
    dropped = [v for k, v in meta.items() if k.startswith("dropped_")]
    assert dropped and not any(v["Retained"] for v in dropped)
    keys = {"Method", "Mask", "SingularValue", "VarianceExplained", "CumulativeVarianceExplained",
            "Retained"}
    assert set(meta["a_comp_cor_00"]) == keys
    steady = conf["a_comp_cor_00"].to_numpy()[n_dummy:]
    assert np.linalg.norm(steady) == pytest.approx(1.0, abs=1e-6)


def test_nilearn_load_confounds_strategies(dataset):
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    img = dataset / "derivatives/fmriprep/sub-01/ses-pre/func" / \
        f"sub-01_ses-pre_task-rest_{SPACE}_desc-preproc_bold.nii.gz"
    for strategy in ("simple", "scrubbing", "compcor"):
        conf, sample_mask = load_confounds_strategy(str(img), denoise_strategy=strategy)
        assert len(conf) == 40 and not conf.isna().any().any(), strategy
        if strategy == "compcor":
            assert any(c.startswith("a_comp_cor") for c in conf.columns)
        assert sample_mask is not None and 0 not in sample_mask


def test_pybids_indexes_raw_and_derivatives(dataset):
    bids = pytest.importorskip("bids")
    layout = bids.BIDSLayout(dataset, derivatives=True)
    assert sorted(layout.get_subjects()) == ["01", "02"]
    assert sorted(layout.get_tasks()) == sorted(TASKS)
    preproc = layout.get(space="MNI152NLin2009cAsym", desc="preproc", suffix="bold",
                         extension=".nii.gz")
    assert len(preproc) == 2 * 2 * 3
    assert layout.get_metadata(preproc[0].path)["StartTime"] > 0
    raw = layout.get(suffix="bold", extension=".nii.gz", scope="raw")
    assert len(raw) == 12
    events = layout.get(suffix="events", extension=".tsv", task="conflict")
    assert len(events) == 4


def test_bids_validator(dataset):
    exe = shutil.which("bids-validator-deno") or str(Path(sys.executable).parent
                                                      / "bids-validator-deno")
    if not Path(exe).exists():
        pytest.skip("bids-validator-deno is not installed")
    try:
        out = subprocess.run([exe, "--format", "json", str(dataset)], capture_output=True,
                             text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"bids-validator-deno could not run: {err}")
    report = json.loads(out.stdout)
    errors = [i for i in report["issues"]["issues"] if i["severity"] == "error"]
    assert errors == []


def test_events(dataset):
    func = dataset / "sub-01/ses-pre/func"
    faces = pd.read_csv(func / "sub-01_ses-pre_task-faces_events.tsv", sep="\t")
    assert list(faces.columns) == ["onset", "duration", "trial_type"]
    assert set(faces["trial_type"]) <= {"fearful", "neutral", "shapes"}
    assert (faces["duration"] == 20).all()
    conflict = pd.read_csv(func / "sub-01_ses-pre_task-conflict_events.tsv", sep="\t")
    assert list(conflict.columns) == ["onset", "duration", "trial_type", "response_time"]
    gaps = np.diff(conflict["onset"])
    assert gaps.min() >= 3.0 - 1e-3 and gaps.max() <= 4.0 + 1e-3
    tt = conflict["trial_type"].tolist()
    pairs = set(itertools.pairwise(tt))
    assert ("incongruent", "incongruent") in pairs and ("congruent", "incongruent") in pairs


def test_ground_truth_content(dataset, truth):
    assert truth["arguments"]["seed"] == 11 and truth["seed"] == 11
    assert truth["arguments"]["n_volumes"] == N_VOL
    assert truth["generator"]["name"] == "ketflow.simulate"
    model = truth["clinical_model"]
    assert model["interaction"]["enabled"] is True
    assert {d["measure"] for d in model["drivers"]} <= set(
        truth["subjects"]["sub-01"]["change"])
    parts = pd.read_csv(dataset / "participants.tsv", sep="\t")
    for _, row in parts.iterrows():
        sub = truth["subjects"][row["participant_id"]]
        assert sub["group"] == row["group"]
        ses = pd.read_csv(dataset / row["participant_id"] / f"{row['participant_id']}_sessions.tsv",
                          sep="\t").set_index("session_id")
        for scale in ("caps5_total", "madrs_total"):
            assert sub["clinical"][scale]["pre"] == ses.loc["ses-pre", scale]
            assert sub["clinical"]["change"][scale] == (
                ses.loc["ses-post", scale] - ses.loc["ses-pre", scale])
        pre, post = sub["sessions"]["pre"], sub["sessions"]["post"]
        b_pre = np.asarray(pre["faces"]["dcm"]["B"])[1, 0, 1]
        b_post = np.asarray(post["faces"]["dcm"]["B"])[1, 0, 1]
        assert sub["change"]["faces_B_fearful_amygdala_L_to_vmPFC"] == pytest.approx(b_post - b_pre)
        dacc = [s["conflict"]["activation"]["dACC"] for s in (pre, post)]
        diff = [d["cI"] - d["congruent"] for d in dacc]
        assert sub["change"]["conflict_dACC_incongruent_minus_congruent"] == pytest.approx(
            diff[1] - diff[0])
        coupling = np.asarray(pre["rest"]["coupling"])
        assert np.allclose(coupling, coupling.T) and np.linalg.eigvalsh(coupling).min() > 0
        names = pre["rest"]["roi_order"]
        off = coupling - np.eye(len(names))
        i, j = np.unravel_index(np.argmax(off), off.shape)
        assert {names[i], names[j]} == set(truth["rest_strongest_pair"])
        assert set(pre["faces"]["run"]["ppi_noise_free"]["seeds"]) == {"amygdala_L", "amygdala_R"}
        # non-DCM ROIs: a noise-free GLM returns the true amplitudes
        for task, roi in (("faces", "antInsula_R"), ("conflict", "dACC"), ("conflict", "rACC")):
            glm = pre[task]["run"]["glm_noise_free"][roi]
            for cond, amp in pre[task]["activation"][roi].items():
                assert glm[cond] == pytest.approx(amp, abs=1e-6), (task, roi, cond)


def _detrended(y: np.ndarray, conf: pd.DataFrame) -> np.ndarray:
    """Residual of y after motion parameters and aCompCor (few regressors: 40-volume runs)."""
    cols = [c for c in conf.columns if c.startswith(("trans_", "rot_", "a_comp_cor"))
            and not c.endswith(("derivative1", "power2"))]
    x = np.column_stack([np.ones(len(y)), conf[cols].to_numpy()])
    return y - x @ np.linalg.lstsq(x, y, rcond=None)[0]


def test_roi_voxels_carry_the_true_signal(dataset, truth):
    table = pd.read_csv(dataset / "sourcedata/truth/desc-rois_dseg.tsv", sep="\t")
    labels = np.asarray(nib.load(dataset / "sourcedata/truth/desc-rois_dseg.nii.gz").dataobj)
    mask = labels == int(table.loc[table["name"] == "amygdala_L", "index"].iloc[0])
    assert mask.sum() == truth["grid"]["roi_voxels"]["amygdala_L"] > 0

    def true_series(sub, task):
        return pd.read_csv(dataset / f"sourcedata/truth/{sub}/ses-pre" /
                           f"{sub}_ses-pre_task-{task}_desc-noisefree_timeseries.tsv",
                           sep="\t")["amygdala_L"].to_numpy()

    for task in ("faces", "rest"):
        der = dataset / "derivatives/fmriprep/sub-01/ses-pre/func"
        data = nib.load(der / f"sub-01_ses-pre_task-{task}_{SPACE}_desc-preproc_bold.nii.gz").get_fdata()
        conf = pd.read_csv(der / f"sub-01_ses-pre_task-{task}_desc-confounds_timeseries.tsv",
                           sep="\t", na_values="n/a")
        n_dummy = truth["subjects"]["sub-01"]["sessions"]["pre"][task]["run"]["n_dummy_volumes"]
        keep = slice(n_dummy, None)
        roi = _detrended(data[mask].mean(axis=0)[keep], conf.iloc[keep])
        own = _detrended(true_series("sub-01", task)[keep], conf.iloc[keep])
        r = np.corrcoef(roi, own)[0, 1]
        assert r > 0.5, (task, r)
        if task == "rest":  # another subject's resting signal is independent
            other = _detrended(true_series("sub-02", task)[keep], conf.iloc[keep])
            assert abs(np.corrcoef(roi, other)[0, 1]) < r


def test_options_no_artefacts_res_entity_no_interaction(tmp_path):
    out = simulate_dataset(tmp_path / "ds", seed=5, n_subjects=2, voxel_size=8.0,
                           n_volumes={"faces": 40, "conflict": 30, "rest": 30},
                           artefacts=False, interaction=False, res_entity=True)
    truth = json.loads((out / "ground_truth.json").read_text())
    assert truth["clinical_model"]["interaction"] == {**truth["clinical_model"]["interaction"],
                                                       "enabled": False, "coefficient": 0.0}
    assert truth["artefacts"]["enabled"] is False
    der = out / "derivatives/fmriprep/sub-01/ses-pre/func"
    assert (der / "sub-01_ses-pre_task-rest_space-MNI152NLin2009cAsym_res-8_desc-preproc_bold.nii.gz"
            ).is_file()
    conf = pd.read_csv(der / "sub-01_ses-pre_task-rest_desc-confounds_timeseries.tsv", sep="\t",
                       na_values="n/a")
    assert not any(c.startswith("non_steady_state") for c in conf.columns)
    assert (conf["framewise_displacement"].iloc[1:] == 0).all()
