"""Report building blocks without running the workflow: output discovery, crash files, figures."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ketflow.io.names import parse_name
from ketflow.reports.figures import plot_carpet, plot_relmats, plot_statmap, save_svg
from ketflow.reports.outputs import find_runs, resolve_uri
from ketflow.reports.participant import subject_crashes


def test_names_and_uris():
    assert parse_name("/a/sub-01_ses-pre_task-rest_atlas-circuit_stat-z_relmat.tsv") == (
        {"sub": "01", "ses": "pre", "task": "rest", "atlas": "circuit", "stat": "z"}, "relmat", ".tsv")
    links = {"fmriprep": "file:///data/my%20deriv", "raw": "/data/raw"}
    assert str(resolve_uri("bids:fmriprep:sub-01/x.nii.gz", links)) == "/data/my deriv/sub-01/x.nii.gz"
    assert str(resolve_uri("bids:raw:sub-01/e.tsv", links)) == "/data/raw/sub-01/e.tsv"
    assert resolve_uri("bids:other:x", links) is None


def _fake_run(out, inputs, subject="01"):
    """A minimal processed rest run: QC, motion and outlier tables with sidecar, inputs on disk."""
    func = out / f"sub-{subject}" / "ses-pre" / "func"
    func.mkdir(parents=True)
    prefix = f"sub-{subject}_ses-pre_task-rest_space-MNI152NLin2009cAsym"
    (func / f"{prefix}_desc-denoise_qc.json").write_text(json.dumps({"num_retained_volumes": 3}))
    pd.DataFrame({"framewise_displacement": [0, .1, .9, .1]}).to_csv(func / f"{prefix}_motion.tsv", sep="\t",
                                                                     index=False)
    pd.DataFrame({"framewise_displacement": [0, 0, 1, 0], "motion_outlier": [0, 0, 1, 0], "dummy_scan": [1, 0, 0, 0]}
                 ).to_csv(func / f"{prefix}_outliers.tsv", sep="\t", index=False)
    bold = inputs / f"{prefix}_desc-preproc_bold.nii.gz"
    bold.write_bytes(b"x")
    (inputs / f"{prefix}_boldref.nii.gz").write_bytes(b"x")
    (func / f"{prefix}_outliers.json").write_text(json.dumps({
        "GeneratedBy": {"ConfigHash": "abc"},
        "Sources": [f"bids:fmriprep:{bold.name}", f"bids:fmriprep:sub-{subject}_ses-pre_task-rest_desc-confounds_"
                    "timeseries.tsv"]}))
    # an output of another resolution of the same run must not be taken for this run's
    (func / f"sub-{subject}_ses-pre_task-rest_space-MNI152NLin2009cAsym_res-1_outliers.tsv").write_text("x")
    # relative to the output folder, as ketflow writes DatasetLinks
    link = os.path.relpath(inputs, out)
    (out / "dataset_description.json").write_text(json.dumps({"DatasetLinks": {"fmriprep": link}}))


def test_find_runs_reads_provenance(tmp_path):
    inputs = tmp_path / "fmriprep"
    inputs.mkdir()
    _fake_run(tmp_path / "out", inputs)
    (run,) = find_runs(tmp_path / "out", "01")
    assert run.label == "ses-pre task-rest"
    assert run.config_hash == "abc"
    assert set(run.sources) == {"bold", "boldref"}  # the confounds file does not exist
    assert run.source_uris["confounds"].endswith("desc-confounds_timeseries.tsv")
    assert len(run.files("outliers", ".tsv")) == 1
    assert run.censoring()["retained"].sum() == 2
    assert run.figure_path(tmp_path / "out", "bold", desc="carpetplot").parent == tmp_path / "out" / "sub-01" / "figures"


def test_crash_files_are_attributed_to_their_subject(tmp_path):
    crash = tmp_path / "logs" / "crash"
    crash.mkdir(parents=True)
    for subject in ("01", "02"):
        (crash / f"crash-2024-node-{subject}.txt").write_text(
            f"Node: ketflow_wf.single_subject_{subject}_wf.ses_pre_task_rest_wf.denoise\nWorking directory: /w\n\n"
            "Node inputs:\n\na = 1\n\nTraceback (most recent call last):\nValueError: boom\n")
    (found,) = subject_crashes(tmp_path, "01")
    assert found["node"].endswith("single_subject_01_wf.ses_pre_task_rest_wf.denoise")
    assert "ValueError: boom" in found["traceback"]


def test_figures_are_deterministic_and_check_their_inputs(tmp_path):
    rng = np.random.default_rng(0)
    censoring = pd.DataFrame({"framewise_displacement": rng.uniform(0, 1, 30), "dummy": [1] + [0] * 29,
                              "motion_censored": (rng.uniform(size=30) > 0.8).astype(int)})
    censoring["retained"] = ((censoring["dummy"] == 0) & (censoring["motion_censored"] == 0)).astype(int)
    bold = rng.normal(size=(30, 200)).astype(np.float32)
    signals = pd.DataFrame(rng.normal(size=(int(censoring["retained"].sum()), 3)), columns=["a", "b", "c"])
    paths = [save_svg(plot_carpet(bold, censoring, 2.0, 0.5, signals, "run"), tmp_path / f"c{i}.svg") for i in (0, 1)]
    assert paths[0].read_bytes() == paths[1].read_bytes()
    with pytest.raises(ValueError, match="censoring table has 30 rows but the BOLD series 29"):
        plot_carpet(bold[:29], censoring, 2.0, 0.5)
    with pytest.raises(ValueError, match="ROI signals have 2 rows"):
        plot_carpet(bold, censoring, 2.0, 0.5, signals.iloc[:2])
    matrix = pd.DataFrame(np.eye(3) + 0.1, index=list("abc"), columns=list("abc"))
    save_svg(plot_relmats({"pearsoncorrelation": matrix, "ledoitwolfcovariance": matrix}), tmp_path / "r.svg")
    zmap = nib.Nifti1Image(rng.normal(size=(10, 12, 10)).astype(np.float32), np.diag([6.0, 6.0, 6.0, 1.0]))
    fig = plot_statmap(zmap, "z map", 3.09, glass=False, background=None, cut_coords=(0, 0, 0))
    assert "voxels with |value| > 3.09" in fig.get_suptitle()


def test_group_report_describes_the_resampling_the_outputs_were_made_with(tmp_path):
    """--reports-only without --sloppy must not describe sloppy outputs with the configured counts."""
    from ketflow.config import load_config
    from ketflow.reports.group import _resampling_paragraph

    config = load_config()  # the packaged, publication-grade counts (1000 permutations)
    assert "1000 permutations" in _resampling_paragraph(tmp_path, config)
    assert "--sloppy" not in _resampling_paragraph(tmp_path, config)
    settings = {"n_permutations": 20, "n_selection_bootstrap": 20, "spec": {"n_alphas": 20}}
    (tmp_path / "model-change_performance.json").write_text(json.dumps({"settings": settings}))
    text = _resampling_paragraph(tmp_path, config)
    assert "20 permutations, 20 bootstraps, 20 penalties" in text and "--sloppy" in text
