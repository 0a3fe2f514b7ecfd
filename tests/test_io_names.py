"""ketflow's output names: one entity table (ketflow/data/bids_config.json), one builder, one parser."""

from __future__ import annotations

import pytest

from ketflow.io.names import (
    ENTITY_ORDER,
    RUN_ENTITIES,
    SOURCE_ENTITIES,
    bids_config,
    build_name,
    build_path,
    entities_in_name,
    parse_name,
    path_patterns,
)


def test_entity_order_follows_the_bids_schema():
    """sub, ses, cohort, task, ..., run, ..., space, atlas, seg, res, den (schema rules/entities.yaml), then the
    statistical-model entities, desc last."""
    position = {key: k for k, key in enumerate(ENTITY_ORDER)}
    schema = ["sub", "ses", "cohort", "task", "acq", "ce", "rec", "dir", "run", "echo", "part", "space", "atlas",
              "seg", "res", "den"]
    assert [key for key in ENTITY_ORDER if key in schema] == schema
    assert position["atlas"] < position["res"] < position["den"] < position["stat"] < position["desc"]
    assert ENTITY_ORDER[-1] == "desc"
    assert SOURCE_ENTITIES[-1] == "space" and "res" in RUN_ENTITIES and "stat" not in RUN_ENTITIES


def test_names_are_built_and_read_back():
    entities = {"sub": "01", "ses": "pre", "task": "faces", "run": "2", "space": "MNI152NLin2009cAsym",
                "res": "2", "atlas": "circuit", "contrast": "faces-gt-shapes", "stat": "z"}
    name = build_name(entities, "statmap", ".nii.gz")
    assert name == ("sub-01_ses-pre_task-faces_run-2_space-MNI152NLin2009cAsym_atlas-circuit_res-2_"
                    "contrast-facesGtShapes_stat-z_statmap.nii.gz")
    parsed, suffix, extension = parse_name(f"/x/{name}")
    assert (suffix, extension) == ("statmap", ".nii.gz")
    assert parsed == {**entities, "contrast": "facesGtShapes"}
    with pytest.raises(ValueError, match="unknown BIDS entities \\['seed'\\]"):
        build_name({"seed": "x"}, "statmap", ".nii.gz")
    assert entities_in_name("desc-vmPFC_contrast-fearful_stat-effect_statmap.nii.gz") == {
        "desc": "vmPFC", "contrast": "fearful", "stat": "effect"}
    assert entities_in_name("coefficients.svg") == {"desc": "coefficients"}


def test_paths_put_figures_and_group_outputs_where_fmriprep_does(tmp_path):
    base = {"sub": "01", "ses": "pre", "task": "rest"}
    assert build_path(tmp_path, base, "bold", ".svg", "figures") == (
        tmp_path / "sub-01" / "figures" / "sub-01_ses-pre_task-rest_bold.svg")
    assert build_path(tmp_path, base, "timeseries", ".tsv") == (
        tmp_path / "sub-01" / "ses-pre" / "func" / "sub-01_ses-pre_task-rest_timeseries.tsv")
    assert build_path(tmp_path / "group", {"model": "change"}, "models", ".tsv", "") == (
        tmp_path / "group" / "model-change_models.tsv")


@pytest.mark.parametrize("entities, suffix, extension, datatype", [
    ({"sub": "01", "ses": "pre", "task": "faces", "space": "MNI152NLin2009cAsym", "atlas": "circuit",
      "stat": "mean"}, "timeseries", ".tsv", "func"),
    ({"sub": "01", "task": "rest", "run": "1", "stat": "fisherz", "desc": "vmPFC"}, "boldmap", ".nii.gz", "func"),
    ({"sub": "A2", "ses": "post", "task": "faces", "desc": "gppi"}, "ppi", ".svg", "figures"),
])
def test_pybids_builds_the_same_paths_from_the_configuration(entities, suffix, extension, datatype, tmp_path):
    """The configuration's path patterns give pybids' build_path ketflow's names (one naming authority)."""
    from bids.layout.writing import build_path as pybids_build_path

    expected = build_path(tmp_path, entities, suffix, extension, datatype).relative_to(tmp_path).as_posix()
    built = pybids_build_path({**entities, "suffix": suffix, "extension": extension, "datatype": datatype},
                              path_patterns=path_patterns())
    assert built == expected
    names = [entity["name"] for entity in bids_config()["entities"]]
    assert names[: len(ENTITY_ORDER)] == list(ENTITY_ORDER)
