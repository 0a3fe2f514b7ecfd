"""Issue 12: named predictor sets, the exact-dependence check, the unpenalised arm, the arm-only
reference model with ΔR² and its Freedman–Lane p (calibrated on null data), bad predictor sets."""

import numpy as np
import pandas as pd
import pytest

from ketflow.group.models import dependent_columns, select_model_data
from ketflow.group.predict import ModelSpec, design_matrix, evaluate, fit_model
from ketflow.group.synthetic import ARMS

OUTCOME = "caps5_total__change"


def _contrast_table(n=30, seed=0):
    """ROI activation and gPPI contrasts with fearful-gt-shapes = faces-gt-shapes + ½ fearful-gt-neutral."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({"subject": [f"{i:02d}" for i in range(n)]})
    for target in ("activation_faces_{}_amygdala_L__change", "ppi_faces_{}_vmPFC-to-amygdala_L__change"):
        fearful, neutral, shapes = rng.normal(size=(3, n))
        table[target.format("faces-gt-shapes")] = (fearful + neutral) / 2 - shapes
        table[target.format("fearful-gt-neutral")] = fearful - neutral
        table[target.format("fearful-gt-shapes")] = fearful - shapes
    table["fc_rest_vmPFC-antInsula_L__change"] = rng.normal(size=n)
    table[OUTCOME] = rng.normal(size=n)
    return table


def test_dependence_check_drops_exactly_the_combinations_and_names_them():
    table = _contrast_table()
    columns = [c for c in table if c not in ("subject", OUTCOME)]
    dropped = dependent_columns(table, columns)
    assert dropped == {
        "activation_faces_fearful-gt-shapes_amygdala_L__change": [
            "activation_faces_faces-gt-shapes_amygdala_L__change",
            "activation_faces_fearful-gt-neutral_amygdala_L__change"],
        "ppi_faces_fearful-gt-shapes_vmPFC-to-amygdala_L__change": [
            "ppi_faces_faces-gt-shapes_vmPFC-to-amygdala_L__change",
            "ppi_faces_fearful-gt-neutral_vmPFC-to-amygdala_L__change"]}
    # more columns than subjects: the check runs within each contrast group, not on the rank-deficient whole
    wide = table.copy()
    rng = np.random.default_rng(1)
    for j in range(40):
        wide[f"fc_rest_x{j}-y__change"] = rng.normal(size=30)
    assert dependent_columns(wide, [c for c in wide if c not in ("subject", OUTCOME)]) == dropped
    # independent columns stay; a constant one goes
    table["fc_rest_const__change"] = 1.0
    assert dependent_columns(table, ["fc_rest_vmPFC-antInsula_L__change", "fc_rest_const__change"]) == {
        "fc_rest_const__change": []}


def _dictionary(table):
    return {c: {"role": "imaging_change" if c.endswith("__change") and c != OUTCOME else "clinical_change",
                "family": c.split("_")[0]} for c in table if c != "subject"}


def test_named_predictor_set_is_checked_and_refused_by_its_key():
    table = _contrast_table()
    measures = [c.removesuffix("__change") for c in table if c not in ("subject", OUTCOME)]
    config = {"outcome": OUTCOME, "predictor_set": {"name": "apriori", "measures": measures}}
    data = select_model_data(config, table, _dictionary(table))
    assert data.can_run and len(data.config.spec.features) == 5 and len(data.dropped) == 2
    assert data.messages[0].startswith("activation_faces_fearful-gt-shapes_amygdala_L__change dropped: an exact "
                                       "linear combination of activation_faces_faces-gt-shapes_amygdala_L__change")
    missing = dict(config, predictor_set={"name": "apriori", "measures": measures + ["dcm_faces_B_x"]})
    data = select_model_data(missing, table, _dictionary(table))
    assert not data.can_run and data.skip_reason.startswith("group.predictor_sets.apriori: measure(s) ['dcm_faces_B_x']")
    table["fc_rest_const__change"] = 2.0
    const = dict(config, predictor_set={"name": "tiny", "measures": ["fc_rest_const"]})
    data = select_model_data(const, table, _dictionary(table))
    assert not data.can_run and data.skip_reason.startswith("group.predictor_sets.tiny: no predictor left")


def _arm_table(n, imaging, seed, p=3):
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(rng.normal(size=(n, p)), columns=[f"f{j}__change" for j in range(p)])
    table.insert(0, "subject", [f"{i:03d}" for i in range(n)])
    table.insert(1, "arm", [ARMS[i % 2] for i in range(n)])
    arm = np.where(table["arm"] == ARMS[1], 0.5, -0.5)
    table[OUTCOME] = -8 * arm + imaging * table["f0__change"] + rng.normal(size=n) * 2
    return table


def _spec(table, **kw):
    return ModelSpec(OUTCOME, tuple(c for c in table if c.startswith("f")), arm="arm", arm_levels=ARMS,
                     include_arm=True, l1_ratios=(0.5, 1.0), n_alphas=10, inner_folds=3, **kw)


def test_arm_is_unpenalised_least_squares_given_the_penalised_part():
    table = _arm_table(40, imaging=1.5, seed=0)
    spec = _spec(table)
    fit = fit_model(table, spec)
    design = design_matrix(table, spec)
    coefs = fit.coefficients
    assert not coefs.loc["arm", "penalised"] and coefs.loc["arm", "retained"]
    beta = coefs["coef"].to_numpy()
    Z = np.column_stack([np.ones(40), design.X[:, design.arm_index]])
    free = [j for j in range(design.X.shape[1]) if j != design.arm_index]
    gamma = np.linalg.lstsq(Z, design.y - design.X[:, free] @ beta[free], rcond=None)[0]
    assert beta[design.arm_index] == pytest.approx(gamma[1], rel=1e-10)
    assert fit.intercept == pytest.approx(gamma[0], rel=1e-10)
    # standardised beta: coefficient x SD(predictor) / SD(outcome)
    assert coefs.loc["arm", "beta_std"] == pytest.approx(gamma[1] * 0.5 / design.y.std(), rel=1e-10)


def test_delta_r2_over_the_arm_detects_imaging_beyond_the_arm():
    report = evaluate(_arm_table(40, imaging=3.0, seed=1), _spec(_arm_table(40, 3.0, 1)), outer_folds=5,
                      n_permutations=99, n_bootstrap=10, n_selection_bootstrap=0)
    ref = report.reference
    assert ref["columns"] == ["arm"] and ref["r2"] > 0.3
    assert ref["delta_r2"] > 0.1 and ref["p_delta_r2"] <= 0.02
    assert report.null.shape == (99, 3) and "delta_r2" in report.null


def test_delta_r2_permutation_p_is_calibrated_on_null_data():
    """Arm effect, no imaging effect: the Freedman–Lane p of ΔR² is uniform (60 studies, 49 permutations)."""
    p = np.array([evaluate(t, _spec(t), outer_folds=5, n_permutations=49, n_bootstrap=2,
                           n_selection_bootstrap=0, seed=s).reference["p_delta_r2"]
                  for s, t in ((s, _arm_table(30, imaging=0.0, seed=100 + s)) for s in range(60))])
    # uniform p on the grid k/50: mean 0.51, P(p <= 0.1) = 0.1; bounds at about 3 binomial SDs
    assert 0.41 < p.mean() < 0.61
    assert np.mean(p <= 0.1) < 0.22 and np.mean(p <= 0.5) > 0.3
