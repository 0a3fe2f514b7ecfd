"""Tests for ketflow.io.confounds against nilearn's load_confounds on real fMRIPrep files."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from nilearn.interfaces.fmriprep import load_confounds as nilearn_load_confounds

from ketflow.io.confounds import ConfoundStrategy, expansions, load_confounds, select_confounds

NILEARN_DATA = Path(__import__("nilearn").__file__).parent / "interfaces" / "fmriprep" / "data"
V21 = NILEARN_DATA / "test-v21_desc-confounds_timeseries"
OLD = NILEARN_DATA / "test_desc-confounds_regressors"


@pytest.fixture
def fmriprep_run(tmp_path):
    """fMRIPrep-named copies of nilearn's v21 fixture, so nilearn can find them from the BOLD name."""
    stem = tmp_path / "sub-01_task-rest"
    shutil.copy(V21.with_suffix(".tsv"), f"{stem}_desc-confounds_timeseries.tsv")
    shutil.copy(V21.with_suffix(".json"), f"{stem}_desc-confounds_timeseries.json")
    bold = Path(f"{stem}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz")
    bold.touch()
    return bold, Path(f"{stem}_desc-confounds_timeseries.tsv"), Path(f"{stem}_desc-confounds_timeseries.json")


def _nilearn_keep(sample_mask, n):
    keep = np.ones(n, bool)
    if sample_mask is not None:
        keep[:] = False
        keep[sample_mask] = True
    return keep


@pytest.mark.parametrize(
    ("name", "nilearn_kwargs"),
    [
        ("24P", dict(strategy=("motion",), motion="full")),
        ("36P", dict(strategy=("motion", "wm_csf", "global_signal"), motion="full", wm_csf="full", global_signal="full")),
        ("aCompCor", dict(strategy=("motion", "high_pass", "compcor"), motion="full", compcor="anat_combined", n_compcor=3)),
    ],
)
def test_regressors_match_nilearn(fmriprep_run, name, nilearn_kwargs):
    bold, tsv, js = fmriprep_run
    ours = load_confounds(tsv, js, ConfoundStrategy(name, n_compcor=3, fd_threshold=None), n_volumes=30)
    theirs, mask = nilearn_load_confounds(str(bold), demean=False, **nilearn_kwargs)
    assert sorted(ours.regressors.columns) == sorted(theirs.columns)
    assert np.allclose(ours.regressors[theirs.columns].to_numpy(), theirs.to_numpy())
    assert np.array_equal(ours.keep, _nilearn_keep(mask, 30))  # dummy scans only
    assert ours.dummy.sum() == 3 and not ours.regressors.isna().any().any()


@pytest.mark.parametrize(("fd", "segment"), [(3.0, 5), (3.0, 0), (1.2, 3), (4.0, 2)])
def test_scrubbing_matches_nilearn(fmriprep_run, fd, segment):
    bold, tsv, js = fmriprep_run
    ours = load_confounds(tsv, js, ConfoundStrategy("24P", fd_threshold=fd, min_segment=segment))
    _, mask = nilearn_load_confounds(
        str(bold), strategy=("motion", "scrub"), motion="full", scrub=segment,
        fd_threshold=fd, std_dvars_threshold=1000.0, demean=False,
    )
    assert np.array_equal(ours.keep, _nilearn_keep(mask, 30))
    assert ours.n_censored == 30 - len(mask)
    assert ours.motion_censored.sum() > 0


def test_compcor_variance_rule_uses_json():
    table = pd.read_csv(V21.with_suffix(".tsv"), sep="\t")
    meta = json.loads(V21.with_suffix(".json").read_text())
    half = select_confounds(table, meta, ConfoundStrategy("aCompCor", n_compcor=0.5, fd_threshold=None))
    comps = [c for c in half.regressors.columns if c.startswith("a_comp_cor")]
    # cumulative variance 0.20, 0.33, 0.42, 0.49, 0.54: the fifth component crosses 50%
    assert comps == [f"a_comp_cor_0{i}" for i in range(5)]
    forty = select_confounds(table, meta, ConfoundStrategy("aCompCor", n_compcor=0.4, fd_threshold=None))
    assert [c for c in forty.regressors.columns if c.startswith("a_comp")] == [f"a_comp_cor_0{i}" for i in range(3)]
    n_cosine = sum(c.startswith("cosine") for c in table.columns)
    assert n_cosine > 0 and len(half.regressors.columns) == 24 + 5 + n_cosine


def test_older_fmriprep_file_compcor_combined_mask_only():
    table = pd.read_csv(OLD.with_suffix(".tsv"), sep="\t")
    meta = json.loads(OLD.with_suffix(".json").read_text())
    conf = select_confounds(table, meta, ConfoundStrategy("aCompCor", n_compcor=6, fd_threshold=None))
    comps = [c for c in conf.regressors.columns if c.startswith("a_comp_cor")]
    assert len(comps) == 6 and all(meta[c]["Mask"] == "combined" for c in comps)


def test_errors_name_file_and_problem(tmp_path):
    table = pd.read_csv(V21.with_suffix(".tsv"), sep="\t")
    path = tmp_path / "sub-02_desc-confounds_timeseries.tsv"
    table.to_csv(path, sep="\t", index=False, na_rep="n/a")
    with pytest.raises(ValueError, match=r"sub-02_desc-confounds_timeseries.tsv: 30 rows but .* 31 volumes"):
        load_confounds(path, None, ConfoundStrategy("24P"), n_volumes=31)
    broken = table.copy()
    broken.loc[7, "csf"] = np.nan
    broken.to_csv(path, sep="\t", index=False, na_rep="n/a")
    with pytest.raises(ValueError, match=r"sub-02.*column csf has n/a on line\(s\) 9 of the TSV \(volume\(s\) 7, counting from 0\)"):
        load_confounds(path, None, ConfoundStrategy("36P"))
    load_confounds(path, None, ConfoundStrategy("24P"))  # csf is not needed by 24P
    table.drop(columns=["global_signal_power2"]).to_csv(path, sep="\t", index=False, na_rep="n/a")
    with pytest.raises(ValueError, match=r"sub-02.*36P needs columns that are missing: \['global_signal_power2'\]"):
        load_confounds(path, None, ConfoundStrategy("36P"))
    with pytest.raises(ValueError, match="needs the confounds JSON"):
        load_confounds(path, None, ConfoundStrategy("aCompCor"))
    with pytest.raises(ValueError, match="unknown confound strategy"):
        ConfoundStrategy("9P")


def test_expansions_order():
    assert expansions(("a",)) == ["a", "a_derivative1", "a_power2", "a_derivative1_power2"]
