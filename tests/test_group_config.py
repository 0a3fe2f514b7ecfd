"""The group section of the analysis configuration and the model configurations built from it."""

import pytest
import yaml

from ketflow.config import ConfigError, Group, load_config, packaged_file
from ketflow.group.config import spec_from_config
from ketflow.workflows.group import model_configs


def _with_group(tmp_path, group: dict):
    raw = yaml.safe_load(packaged_file("default_config.yml").read_text())
    raw["group"] = {**raw["group"], **group}
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_packaged_group_settings_are_the_documented_defaults():
    group = load_config().group
    assert group.model_dump(exclude={"models"}) == Group().model_dump(exclude={"models"})
    assert group.refit_inner_folds is None  # the reported model: leave-one-out penalty (reference)
    assert [m.name for m in group.models] == ["change", "change-by-arm", "change-madrs", "baseline", "baseline-arm"]
    assert all(m.predictor_set == "apriori" for m in group.models)  # the reference study's a-priori measures
    assert group.models[2].covariates == ["madrs_total__change"]
    assert group.models[4].per_arm and group.models[4].predictors == "baseline"
    assert (group.n_permutations, group.n_bootstrap) == (1000, 1000)


@pytest.mark.parametrize("group, message", [
    ({"outer_folds": None, "outer_repeats": 3}, "outer_repeats > 1 needs outer_folds"),
    ({"inner_folds": 1}, "group.inner_folds"),
    ({"max_missing_fraction": 1.5}, "group.max_missing_fraction"),
    ({"min_subjects": 2}, "group.min_subjects"),
    ({"permutation_early_stop": 10}, "group.permutation_early_stop"),
    ({"n_alphas": 1}, "group.n_alphas"),
    ({"models": [{"name": "x", "predictor_pattern": "(dcm"}]}, "not a valid regular expression"),
    ({"models": [{"name": "x", "measures": ["bold"]}]}, "group.models.0.measures.0"),
    ({"models": [{"name": "x", "per_arm": True, "interaction": True}]}, "per_arm model"),
    ({"models": [{"name": "x"}, {"name": "x"}]}, "must be unique"),
    ({"models": []}, "group.models"),
    ({"models": [{"name": "x", "predictor_set": "nope"}]}, "not in group.predictor_sets"),
    ({"predictor_sets": {"apriori": []}}, "list no measure"),
    ({"outer_fold": 5}, "group.outer_fold"),
])
def test_invalid_group_settings_name_the_key(tmp_path, group, message):
    path = _with_group(tmp_path, group)
    with pytest.raises(ConfigError, match="invalid analysis configuration") as err:
        load_config(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_model_configs_carry_every_setting_and_expand_per_arm(tmp_path):
    config = load_config(_with_group(tmp_path, {
        "models": [{"name": "task", "measures": ["activation", "dcm"], "predictor_pattern": "amygdala"},
                   {"name": "base", "predictors": "baseline", "per_arm": True}],
        "inner_folds": 3, "outer_folds": None, "n_permutations": 0, "n_bootstrap": 7, "seed": 4}))
    models = model_configs(config)
    assert list(models) == ["task", "base-ketamine", "base-midazolam"]
    task = models["task"]
    assert task["measures"] == ["activation", "dcm"] and task["predictor_pattern"] == "amygdala"
    assert (task["inner_folds"], task["outer_folds"], task["n_permutations"], task["n_selection_bootstrap"],
            task["seed"], task["refit_inner_folds"]) == (3, None, 0, 7, 4, None)
    assert task["arm_levels"] == ["midazolam", "ketamine"]  # (control, active): the first arm is active
    assert models["base-midazolam"]["arm_subset"] == "midazolam"
    dictionary = {"caps5_total__change": {"role": "clinical_change"},
                  "activation_faces_c_amygdala_L__change": {"role": "imaging_change", "family": "activation"},
                  "fc_rest_vmPFC-amygdala_L__change": {"role": "imaging_change", "family": "fc"},
                  "dcm_faces_A_vmPFC-to-amygdala_L__change": {"role": "imaging_change", "family": "dcm"},
                  "dcm_faces_A_vmPFC-to-vmPFC__change": {"role": "imaging_change", "family": "dcm"}}
    parsed = spec_from_config(task, dictionary)
    assert parsed.spec.features == ("activation_faces_c_amygdala_L__change", "dcm_faces_A_vmPFC-to-amygdala_L__change")
    assert parsed.spec.inner_folds is None and parsed.evaluate_kwargs["inner_folds"] == 3
    assert parsed.min_subjects == 6
