"""Atomic, deterministic writers and BIDS derivative names."""

import hashlib
import time

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from ketflow.io.derivatives import bids_label, bids_uri, build_name, build_path, dataset_description
from ketflow.io.write import atomic_path, write_json, write_nifti, write_tsv


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.tsv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_existing_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_nifti_gz_is_deterministic_and_lossless(tmp_path):
    data = np.random.default_rng(0).normal(size=(5, 4, 3, 6)).astype(np.float32)
    image = nb.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    first = write_nifti(tmp_path / "a.nii.gz", image)
    time.sleep(1.1)  # a gzip timestamp would differ now
    second = write_nifti(tmp_path / "b.nii.gz", image)
    assert digest(first) == digest(second)
    np.testing.assert_array_equal(nb.load(first).get_fdata(dtype=np.float32), data)


def test_tsv_and_json_are_canonical(tmp_path):
    frame = pd.DataFrame({"b": [0.1 + 0.2, np.nan], "a": ["x", "y"]})
    write_tsv(tmp_path / "t.tsv", frame)
    assert (tmp_path / "t.tsv").read_text() == "b\ta\n0.3\tx\nn/a\ty\n"
    write_json(tmp_path / "j.json", {"z": np.float32(1.5), "a": np.arange(2)})
    assert (tmp_path / "j.json").read_text() == '{\n  "a": [\n    0,\n    1\n  ],\n  "z": 1.5\n}\n'


def test_bids_labels_and_names():
    assert bids_label("faces-gt-shapes") == "facesGtShapes"
    assert bids_label("amygdala_L") == "amygdalaL"
    with pytest.raises(ValueError):
        bids_label("__")
    name = build_name({"sub": "01", "ses": "pre", "task": "faces", "space": "MNI152NLin2009cAsym",
                       "atlas": "circuit", "stat": "mean", "desc": None}, "timeseries", ".tsv")
    assert name == "sub-01_ses-pre_task-faces_space-MNI152NLin2009cAsym_atlas-circuit_stat-mean_timeseries.tsv"
    path = build_path("/out", {"sub": "01", "ses": "pre", "task": "rest"}, "bold", ".nii.gz")
    assert str(path) == "/out/sub-01/ses-pre/func/sub-01_ses-pre_task-rest_bold.nii.gz"
    with pytest.raises(ValueError, match="unknown BIDS entities"):
        build_name({"sub": "01", "colour": "red"}, "bold", ".nii.gz")


def test_dataset_description_and_uris(tmp_path):
    raw = tmp_path / "bids"
    fmriprep = raw / "derivatives" / "fmriprep"
    fmriprep.mkdir(parents=True)
    links = {"raw": raw, "fmriprep": fmriprep}
    desc = dataset_description(links)
    assert desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0]["Name"] == "ketflow"
    assert {d["URL"] for d in desc["SourceDatasets"]} == {"bids:raw:", "bids:fmriprep:"}
    inner = fmriprep / "sub-01" / "func" / "x_bold.nii.gz"
    assert bids_uri(inner, links) == "bids:fmriprep:sub-01/func/x_bold.nii.gz"
    assert bids_uri(raw / "sub-01" / "func" / "e_events.tsv", links) == "bids:raw:sub-01/func/e_events.tsv"
