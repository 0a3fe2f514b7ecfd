"""Collection of participant-level activation tables: session-level fixed effects preferred over runs."""

import pandas as pd

from ketflow.config import load_config
from ketflow.io.collect import collect_measures

PREFIX = "sub-01_ses-pre_task-faces"
SUFFIX = "space-MNI152NLin2009cAsym_atlas-circuit_stat-effect_contrasts.tsv"


def _write(folder, name, effect):
    pd.DataFrame({"contrast": ["faces-gt-shapes"], "roi": ["dACC"], "effect": [effect]}).to_csv(
        folder / name, sep="\t", index=False)


def _config():
    config = load_config()
    for measure in ("ppi", "connectivity", "dcm"):
        setattr(config.measures, measure, False)
    return config


def test_session_level_fixed_effects_replace_the_runs(tmp_path):
    folder = tmp_path / "sub-01" / "ses-pre" / "func"
    folder.mkdir(parents=True)
    _write(folder, f"{PREFIX}_run-1_{SUFFIX}", 1.0)
    _write(folder, f"{PREFIX}_run-2_{SUFFIX}", 3.0)
    _write(folder, f"{PREFIX}_{SUFFIX}", 2.5)  # precision-weighted: not the plain mean 2.0
    row = collect_measures(tmp_path, _config()).set_index("measure").loc["activation_faces_faces-gt-shapes_dACC"]
    assert row["value"] == 2.5 and row["n_runs"] == 2


def test_runs_are_averaged_without_a_session_level_table(tmp_path):
    folder = tmp_path / "sub-01" / "ses-pre" / "func"
    folder.mkdir(parents=True)
    _write(folder, f"{PREFIX}_run-1_{SUFFIX}", 1.0)
    _write(folder, f"{PREFIX}_run-2_{SUFFIX}", 3.0)
    row = collect_measures(tmp_path, _config()).set_index("measure").loc["activation_faces_faces-gt-shapes_dACC"]
    assert row["value"] == 2.0 and row["n_runs"] == 2
