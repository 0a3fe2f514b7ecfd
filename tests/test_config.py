"""Analysis configuration: the packaged default and validation errors."""

import json

import pytest
import yaml

from ketflow.config import ConfigError, load_config, packaged_file, roi_names

DEFAULT_ROIS = ["dACC", "rACC", "vmPFC", "antHippocampus_L", "antHippocampus_R",
                "antInsula_L", "antInsula_R", "amygdala_L", "amygdala_R"]


def default_raw() -> dict:
    return yaml.safe_load(packaged_file("default_config.yml").read_text())


def write_config(tmp_path, raw, name="config.yml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw) if name.endswith(".yml") else json.dumps(raw))
    return path


def test_default_describes_the_reference_study():
    config = load_config()
    assert set(config.tasks) == {"faces", "conflict", "rest"}
    assert config.tasks["faces"].conditions == ["fearful", "neutral", "shapes"]
    assert config.tasks["conflict"].conditions == ["congruent", "incongruent"]
    assert config.tasks["rest"].type == "rest"
    assert (config.sessions.baseline, config.sessions.followup) == ("pre", "post")
    assert config.clinical.arm_column == "group"
    assert config.clinical.arms == ["ketamine", "midazolam"]
    assert config.clinical.scores == ["caps5_total", "madrs_total"]
    assert roi_names(config) == DEFAULT_ROIS
    assert {"iI", "cI"} <= set(config.tasks["conflict"].all_conditions())


def test_json_and_yaml_give_the_same_config(tmp_path):
    raw = default_raw()
    from_yaml = load_config(write_config(tmp_path, raw, "c.yml"))
    from_json = load_config(write_config(tmp_path, raw, "c.json"))
    assert from_yaml.digest() == from_json.digest() == load_config().digest()


def test_every_label_is_configurable(tmp_path):
    raw = default_raw()
    raw["sessions"] = {"baseline": "week0", "followup": "week4"}
    raw["clinical"].update(arm_column="arm", arms=["drug", "placebo"], scores=["hamd"], outcome="hamd")
    raw["tasks"] = {"emo": {"type": "task", "conditions": ["angry", "calm"],
                            "contrasts": {"angry-gt-calm": {"angry": 1, "calm": -1}}}}
    raw["ppi"]["tasks"] = ["emo"]
    raw["beta_series"]["tasks"] = ["emo"]
    raw["connectivity"]["tasks"] = []
    raw["dcm"].update(task="emo", inputs={"faces": ["angry", "calm"], "anger": ["angry"]},
                      b={"anger": [[0, 1], [0, 0]]}, c={"faces": [0, 1]}, model_space=[])
    config = load_config(write_config(tmp_path, raw))
    assert config.sessions.followup == "week4" and config.task_labels("task") == ["emo"]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r["ppi"]["seeds"].append("nucleusAccumbens"), "unknown ROIs ['nucleusAccumbens']"),
        (lambda r: r["dcm"].update(regions=["vmPFC", "thalamus"]), "unknown ROIs ['thalamus']"),
        (lambda r: r["connectivity"].update(tasks=["movie"]), "unknown tasks ['movie']"),
        (lambda r: r["tasks"]["faces"]["contrasts"].update(x={"happy": 1}), "unknown conditions ['happy']"),
        (lambda r: r["dcm"]["inputs"].update(fearful=["angry"]), "unknown conditions ['angry']"),
        (lambda r: r["denoising"].update(strategy="99P"), "denoising.strategy"),
        (lambda r: r["denoising"].update(fd_threshold=-1), "denoising.fd_threshold"),
        (lambda r: r["clinical"].update(outcome="bdi"), "clinical.outcome 'bdi'"),
        (lambda r: r.update(colour="blue"), "colour"),
        (lambda r: r["tasks"]["conflict"]["derived_conditions"][0].update(previous="neutral"),
         "unknown trial types ['neutral']"),
        (lambda r: r["dcm"].update(a=[[1, 1, 1]]), "dcm.a must be 2x2"),
        (lambda r: r["tasks"].update({"bad_label": {"type": "rest"}}), "alphanumeric"),
        (lambda r: r["group"].update(l1_ratios=[0, 0.5]), "l1_ratios"),
    ],
)
def test_invalid_configs_are_refused_with_the_file_and_key(tmp_path, mutate, message):
    raw = default_raw()
    mutate(raw)
    path = write_config(tmp_path, raw)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("tasks: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yml"
    scalar.write_text("42")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar)


def test_custom_spheres_extend_and_override(tmp_path):
    table = tmp_path / "rois.tsv"
    table.write_text("name\tx\ty\tz\tradius_mm\nvmPFC\t2\t50\t-8\t10\nNAcc_L\t-10\t12\t-8\t4\n")
    raw = default_raw()
    raw["circuit"]["spheres_file"] = "rois.tsv"  # relative to the config file
    raw["circuit"]["rois"] = "spheres"  # the default is the anatomical atlas (with it, spheres are added)
    raw["circuit"]["spheres"] = [{"name": "NAcc_R", "x": 10, "y": 12, "z": -8, "radius_mm": 4}]
    raw["ppi"]["seeds"] = ["vmPFC", "NAcc_L"]
    raw["connectivity"]["seeds"] = ["NAcc_R"]
    raw["dcm"]["regions"] = ["vmPFC", "NAcc_L"]
    config = load_config(write_config(tmp_path, raw))
    assert roi_names(config) == ["vmPFC", "NAcc_L", "NAcc_R"]


def test_bad_sphere_table_is_named(tmp_path):
    table = tmp_path / "rois.tsv"
    table.write_text("name\tx\ty\nvmPFC\t2\t50\n")
    raw = default_raw()
    raw["circuit"]["spheres_file"] = str(table)
    with pytest.raises(ConfigError, match="lacks columns"):
        load_config(write_config(tmp_path, raw))


def test_digest_changes_with_content(tmp_path):
    raw = default_raw()
    raw["denoising"]["fd_threshold"] = 0.3
    assert load_config(write_config(tmp_path, raw)).digest() != load_config().digest()


def test_sloppy_caps_the_group_resampling_and_changes_the_digest():
    from ketflow.config import SLOPPY_GROUP, load_config, sloppy_config

    config = load_config()
    config.group.n_bootstrap = 5  # a smaller configured value is kept
    sloppy = sloppy_config(config)
    assert sloppy.group.n_permutations == min(config.group.n_permutations, SLOPPY_GROUP["n_permutations"])
    assert sloppy.group.n_alphas == SLOPPY_GROUP["n_alphas"] < config.group.n_alphas
    assert sloppy.group.n_bootstrap == 5
    assert sloppy.digest() != config.digest() and config.group.n_alphas == 100  # the original is untouched
    assert sloppy.tasks == config.tasks


def test_group_report_flags_sloppy_resampling(tmp_path):
    from ketflow.config import load_config, sloppy_config
    from ketflow.reports.group import group_report

    assert "--sloppy" not in group_report(tmp_path, load_config())
    assert "--sloppy sets them: for testing only" in group_report(tmp_path, sloppy_config(load_config()))
