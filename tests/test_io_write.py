"""Atomic, deterministic writers and BIDS derivative names."""

import hashlib
import time

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from ketflow.io.derivatives import bids_uri, dataset_description
from ketflow.io.names import bids_label, build_name, build_path
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


def _pair_state(data, sidecar, old, new):
    """('old'|'new'|None, 'old'|'new'|None): which version of the data file and sidecar exist."""
    def version(path, versions):
        if not path.exists():
            return None
        return next(name for name, text in versions.items() if path.read_text() == text)
    return version(data, {"old": old[0], "new": new[0]}), version(sidecar, {"old": old[1], "new": new[1]})


@pytest.mark.parametrize("interrupted", ["copy", "sidecar", None])
def test_copy_with_sidecar_never_pairs_data_with_another_sidecar(interrupted, tmp_path, monkeypatch):
    """Interrupted at any step, a sidecar only ever sits next to the data it describes."""
    import ketflow.io.write as write

    data, sidecar, source = tmp_path / "x_bold.tsv", tmp_path / "x_bold.json", tmp_path / "new.tsv"
    old, new = ("old data\n", write.to_json_text({"v": "old"})), ("new data\n", write.to_json_text({"v": "new"}))
    data.write_text(old[0])
    sidecar.write_text(old[1])
    source.write_text(new[0])

    def killed(*args, **kwargs):
        raise SystemExit("killed")

    if interrupted:
        monkeypatch.setattr(write, {"copy": "copy_file", "sidecar": "write_json"}[interrupted], killed)
    try:
        write.copy_with_sidecar(source, data, sidecar, {"v": "new"})
    except SystemExit:
        pass
    state = _pair_state(data, sidecar, old, new)
    assert state in {("old", None), ("new", None), ("new", "new")}
    assert state == {"copy": ("old", None), "sidecar": ("new", None), None: ("new", "new")}[interrupted]


def test_remove_partial_files_touches_only_the_given_subjects(tmp_path):
    from ketflow.io.write import remove_partial_files

    mine = [tmp_path / "sub-01" / "ses-pre" / "func" / ".sub-01_bold.nii.gz.ab12.part",
            tmp_path / "sub-01" / "figures" / ".sub-01_design.svg.cd34.part",
            tmp_path / ".sub-01.html.ef56.part"]
    others = [tmp_path / "sub-010" / ".sub-010_bold.tsv.aa.part", tmp_path / ".sub-010.html.bb.part",
              tmp_path / "logs" / ".CITATION.md.cc.part", tmp_path / "sub-01" / "sub-01_exclusions.tsv"]
    for path in mine + others:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    assert remove_partial_files(tmp_path, ["01"]) == sorted(mine)
    assert all(p.exists() for p in others) and not any(p.exists() for p in mine)


def test_figure_to_svg_is_reproducible():
    import matplotlib.pyplot as plt

    from ketflow.io.svg import figure_to_svg

    def figure():
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.imshow(np.arange(12.0).reshape(3, 4))  # images and axes get clip paths with hashed ids
        ax.plot([0, 1, 2], [1, 0, 2], marker="o")  # markers get hashed ids too
        return fig

    first, second = figure(), figure()
    try:
        text = figure_to_svg(first)
        assert text == figure_to_svg(second) == figure_to_svg(first, bbox_inches=None)
        assert "<dc:date>" not in text and "clipPath" in text
    finally:
        plt.close(first)
        plt.close(second)
