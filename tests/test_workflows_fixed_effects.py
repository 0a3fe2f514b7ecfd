"""Session-level fixed effects: two runs of one task in a session are combined by the workflow."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import yaml

from conftest import TINY_CONFIG, run_cli

SPACE = "space-MNI152NLin2009cAsym"


def _split_into_two_runs(bids):
    """Rename sub-01 ses-pre faces files to run-1 and copy them as run-2 (raw and fMRIPrep)."""
    prefix = "sub-01_ses-pre_task-faces"
    folders = [bids / "sub-01" / "ses-pre" / "func", bids / "derivatives" / "fmriprep" / "sub-01" / "ses-pre" / "func"]
    for folder in folders:
        for path in sorted(folder.glob(f"{prefix}_*")):
            rest = path.name[len(prefix):]
            path.rename(folder / f"{prefix}_run-1{rest}")
            shutil.copyfile(folder / f"{prefix}_run-1{rest}", folder / f"{prefix}_run-2{rest}")


def test_two_runs_are_combined_per_session(tiny_bids_copy, tmp_path):
    _split_into_two_runs(tiny_bids_copy)
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["measures"] = {"timeseries": True, "activation": True, "ppi": False, "connectivity": False,
                          "dcm": False}
    config_file = tmp_path / "config.yml"
    config_file.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    proc = run_cli(tiny_bids_copy, out, "participant", "-w", tmp_path / "work", "--participant-label", "01",
                   "--session-label", "pre", "-t", "faces", "--config", config_file, "--skip-bids-validation",
                   "--nprocs", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    func = out / "sub-01" / "ses-pre" / "func"
    stem = f"sub-01_ses-pre_task-faces_{SPACE}_contrast-fearfulGtShapes_stat-"
    runs = [f"sub-01_ses-pre_task-faces_run-{k}_{SPACE}_contrast-fearfulGtShapes_stat-" for k in (1, 2)]
    for prefix in [stem] + runs:
        for stat in ("effect", "variance", "z"):
            assert (func / f"{prefix}{stat}_statmap.nii.gz").is_file(), prefix + stat
    meta = json.loads((func / f"{stem}effect_statmap.json").read_text())
    assert meta["Level"] == "session" and meta["FixedEffects"]["NumberOfRuns"] == 2
    assert meta["Runs"] == ["sub-01_ses-pre_task-faces_run-1", "sub-01_ses-pre_task-faces_run-2"]
    assert any("run-2" in s for s in meta["Sources"]) and any("run-1" in s for s in meta["Sources"])
    # run-2 is a copy of run-1: the combination keeps the effect and halves the variance
    def load(name):
        return np.asanyarray(nib.load(func / name).dataobj)

    inside = load(f"{runs[0]}variance_statmap.nii.gz") > 0
    np.testing.assert_allclose(load(f"{stem}effect_statmap.nii.gz")[inside],
                               load(f"{runs[0]}effect_statmap.nii.gz")[inside], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(load(f"{stem}variance_statmap.nii.gz")[inside],
                               load(f"{runs[0]}variance_statmap.nii.gz")[inside] / 2, rtol=1e-5)
    table = pd.read_csv(func / f"sub-01_ses-pre_task-faces_{SPACE}_atlas-circuit_stat-effect_contrasts.tsv", sep="\t")
    run_table = pd.read_csv(func / f"sub-01_ses-pre_task-faces_run-1_{SPACE}_atlas-circuit_stat-effect_contrasts.tsv",
                            sep="\t")
    np.testing.assert_allclose(table["effect"], run_table["effect"], rtol=1e-8)
    np.testing.assert_allclose(table["dof"], 2 * run_table["dof"])
    run_meta = json.loads((func / f"{runs[0]}effect_statmap.json").read_text())
    assert "FixedEffects" not in run_meta and run_meta["DesignColumns"][:3] == ["fearful", "neutral", "shapes"]
