"""The DCM section of the configuration and its model layout (what FitDCM fits, the sidecars' ``Model``)."""

import numpy as np
import pytest
import yaml

from ketflow.config import ConfigError, load_config, packaged_file
from ketflow.dcm.priors import dcm_fmri_priors


def _raw():
    return yaml.safe_load(packaged_file("default_config.yml").read_text())


def _load(tmp_path, raw):
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def test_default_model_and_model_space_in_interface_layout():
    model = load_config().dcm.model_layout()
    assert model["regions"] == ["vmPFC", "amygdala_L"] and list(model["inputs"]) == ["faces", "fearful"]
    assert model["a"] == [[1, 1], [1, 1]]
    assert model["b"] == [[[0, 0], [0, 0]], [[0, 1], [0, 0]]]  # [input][to][from]: fearful amygdala -> vmPFC
    assert model["c"] == [[0, 0], [1, 0]]  # [to][input]: faces -> amygdala_L
    assert model["delays"] == [0.0, 0.0] and "d" not in model
    assert model["options"] == {"centre": False, "hE": 6.0, "hC": 1.0, "maxit": 128, "maxnodes": 8,
                                "m_step": "newton", "noise": "ar1"}
    space = model["model_space"]
    assert set(space) == {"no-fear-modulation", "no-top-down", "no-fear-modulation-no-top-down"}
    assert space["no-fear-modulation"]["b"] == [[[0, 0], [0, 0]], [[0, 0], [0, 0]]]
    assert space["no-fear-modulation"]["a"] == model["a"] and space["no-fear-modulation"]["c"] == model["c"]
    assert space["no-top-down"]["a"] == [[1, 1], [0, 1]] and space["no-top-down"]["b"] == model["b"]
    # every nested model only switches parameters off
    full = dcm_fmri_priors(model["a"], model["b"], model["c"])[1] > 0
    for masks in space.values():
        reduced = dcm_fmri_priors(masks["a"], masks["b"], masks["c"])[1] > 0
        assert np.all(full | ~reduced) and reduced.sum() < full.sum()


def test_options_delays_and_nonlinear_terms_reach_the_model(tmp_path):
    raw = _raw()
    raw["dcm"].update(options={"hE": 4.0, "hC": 1.0, "maxit": 64, "centre": True}, delays=[0.5, 1.0],
                      d={"amygdala_L": [[0, 1], [0, 0]]},
                      model_space=[{"name": "linear", "d": {"amygdala_L": [[0, 0], [0, 0]]}}])
    model = _load(tmp_path, raw).dcm.model_layout()
    assert model["options"]["hE"] == 4.0 and model["options"]["centre"] is True and model["options"]["maxit"] == 64
    assert model["delays"] == [0.5, 1.0]
    assert model["d"] == [[[0, 0], [0, 0]], [[0, 1], [0, 0]]]  # [modulating region][to][from]
    assert model["model_space"]["linear"]["d"] == [[[0, 0], [0, 0]], [[0, 0], [0, 0]]]


@pytest.mark.parametrize("update, message", [
    ({"options": {"hC": 0}}, "hC"),
    ({"options": {"maxit": 0}}, "maxit"),
    ({"options": {"m_step": "gradient"}}, "m_step"),
    ({"options": {"noise": "ar2"}}, "noise"),
    ({"options": {"tolerance": 1}}, "tolerance"),
    ({"delays": [0.0]}, "dcm.delays must list 2"),
    ({"d": {"thalamus": [[0, 0], [0, 0]]}}, "dcm.d names regions ['thalamus']"),
    ({"b": {"fearful": [[0, 2], [0, 0]]}}, "entries must be 0 or 1"),
    ({"model_space": [{"name": "x", "b": {"angry": [[0, 0], [0, 0]]}}]}, "names ['angry']"),
    ({"model_space": [{"name": "x", "c": {"faces": [1, 1]}}]}, "switches on entries [(0, 0)]"),
    ({"model_space": [{"name": "x", "b": {"fearful": [[0, 1], [1, 0]]}}]}, "switches on entries [(1, 0)]"),
    ({"model_space": [{"name": "x"}, {"name": "x"}]}, "must be unique"),
    ({"model_space": [{"name": "full"}]}, "not 'full'"),
    ({"model_space": [{"name": "bad name"}]}, "name"),
])
def test_invalid_dcm_settings_are_refused(tmp_path, update, message):
    raw = _raw()
    raw["dcm"].update(update)
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, raw)
    assert message in str(err.value)
