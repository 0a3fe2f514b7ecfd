"""Collection of participant-level tables: session-level fixed effects preferred over runs, and
the pooling of a session's runs (precision-weighted by default, equal weights as an option)."""

import pandas as pd
import pytest

from ketflow.config import load_config
from ketflow.io.collect import collect_measures
from ketflow.signal.glm import fixed_effects_table

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


PPI_SUFFIX = "space-MNI152NLin2009cAsym_atlas-circuit_model-gppi_ppi.tsv"


def _ppi_runs(tmp_path, effects, variances):
    """gPPI tables (one row: amygdala_L -> vmPFC, the faces contrast) of a session's runs."""
    folder = tmp_path / "sub-01" / "ses-pre" / "func"
    folder.mkdir(parents=True, exist_ok=True)
    for run, (effect, variance) in enumerate(zip(effects, variances), start=1):
        pd.DataFrame({"seed": ["amygdala_L"], "target": ["vmPFC"], "contrast": ["fearful-gt-shapes"],
                      "effect": [effect], "variance": [variance]}).to_csv(
            folder / f"{PREFIX}_run-{run}_{PPI_SUFFIX}", sep="\t", index=False)


def _ppi_value(tmp_path, pooling: str) -> pd.Series:
    config = load_config()
    config.measures.activation = config.measures.connectivity = config.measures.dcm = False
    config.glm.run_pooling = pooling
    table = collect_measures(tmp_path, config).set_index("measure")
    return table.loc["ppi_faces_fearful-gt-shapes_amygdala_L-to-vmPFC"]


def test_gppi_runs_are_pooled_by_precision_by_default_equal_weights_as_an_option(tmp_path):
    """Weights 1/variance: run 1 (variance 0.1) counts 4 times run 2 (0.4), run 3 (0.2) twice:
    (4 * 1 + 1 * 3 + 2 * -1) / 7 = 5/7; the equal-weight mean is 1."""
    _ppi_runs(tmp_path, [1.0, 3.0, -1.0], [0.1, 0.4, 0.2])
    assert load_config().glm.run_pooling == "precision"
    precise = _ppi_value(tmp_path, "precision")
    assert precise["value"] == pytest.approx(5 / 7) and precise["n_runs"] == 3
    assert _ppi_value(tmp_path, "equal")["value"] == pytest.approx(1.0)


def test_fixed_effects_table_pools_each_roi_over_the_runs_that_hold_it():
    """Run 2 lacks amygdala_R (excluded by the coverage rule): that ROI is run 1's estimate, the
    other is pooled by inverse-variance weights (or equal weights)."""
    run1 = pd.DataFrame({"roi": ["dACC", "amygdala_R"], "contrast": ["c", "c"], "effect": [1.0, 5.0],
                         "variance": [0.1, 0.5]})
    run2 = pd.DataFrame({"roi": ["dACC"], "contrast": ["c"], "effect": [3.0], "variance": [0.3]})
    table = fixed_effects_table([run1, run2], [100, 90]).set_index("roi")
    assert table.loc["dACC", "effect"] == pytest.approx((1.0 / 0.1 + 3.0 / 0.3) / (1 / 0.1 + 1 / 0.3))
    assert table.loc["dACC", "variance"] == pytest.approx(1 / (1 / 0.1 + 1 / 0.3))
    assert table.loc["dACC", "dof"] == 190 and table.loc["dACC", "n_runs"] == 2
    assert table.loc["amygdala_R", ["effect", "variance", "dof", "n_runs"]].tolist() == [5.0, 0.5, 100, 1]
    assert table.index.tolist() == ["dACC", "amygdala_R"]  # run 1's order
    equal = fixed_effects_table([run1, run2], [100, 90], precision_weighted=False).set_index("roi")
    assert equal.loc["dACC", "effect"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="contrasts differ"):
        fixed_effects_table([run1, run2.assign(contrast="d")], [100, 90])
