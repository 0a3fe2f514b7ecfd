"""Tests of the group-level Nipype interface, the model configuration and per-model subject selection."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import ElasticNetCV
from sklearn.model_selection import LeaveOneOut
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ketflow.group.config import NoPredictorsError, spec_from_config
from ketflow.group.features import build_feature_table
from ketflow.group.models import select_model_data
from ketflow.interfaces.group import PredictClinicalChange
from ketflow.io.write import write_json, write_tsv

TASK_MEASURES = [f"activation_faces_c_roi{j}" for j in range(5)]
REST_MEASURES = [f"fc_rest_roi{j}-amygdala_L" for j in range(3)]
MEASURES = TASK_MEASURES + REST_MEASURES
OUTCOME = "caps5_total__change"


def _inputs(n=40, seed=0):
    """Long tables with CAPS change = -6 dA0 + 4 dA1 + noise; a few values missing."""
    rng = np.random.default_rng(seed)
    subs = [f"sub-{i:02d}" for i in range(n)]
    pre = rng.normal(size=(n, len(MEASURES)))
    post = pre + rng.normal(size=(n, len(MEASURES)))
    change = post - pre
    caps_pre = rng.normal(40, 5, n)
    caps_post = caps_pre - 10 - 6 * change[:, 0] + 4 * change[:, 1] + rng.normal(0, 3, n)
    rows = []
    for i, s in enumerate(subs):
        for j, m in enumerate(MEASURES):
            task = m.split("_")[1]
            rows += [(s, "ses-pre", task, m, pre[i, j]), (s, "ses-post", task, m, post[i, j])]
    long = pd.DataFrame(rows, columns=["subject", "session", "task", "measure", "value"])
    long["source"] = np.where(long["task"] == "faces", "faces.tsv", "rest.tsv")
    clin = pd.DataFrame({"subject": subs * 2, "session": ["pre"] * n + ["post"] * n,
                         "caps5_total": np.r_[caps_pre, caps_post]})
    participants = pd.DataFrame({"participant_id": subs, "arm": ["ketamine", "midazolam"] * (n // 2),
                                 "age": rng.integers(20, 60, n)})
    # sub-03 lost its clinical baseline; sub-05 and sub-07 their post rest run
    clin.loc[3, "caps5_total"] = np.nan
    long = long[~(long.subject.isin(["sub-05", "sub-07"]) & (long.task == "rest") & (long.session == "ses-post"))]
    excluded = pd.DataFrame({"subject": ["05", "07"], "session": ["post", "post"], "task": ["rest", "rest"],
                             "reason": ["FD", "FD"]})
    return long, clin, participants, excluded


def _write(tmp_path, config):
    measures, clinical, participants, excluded = _inputs()
    result = build_feature_table(measures, clinical, participants, covariates=["age"], excluded_runs=excluded)
    features = str(write_tsv(tmp_path / "features.tsv", result.table))
    dictionary = str(write_json(tmp_path / "features.json", result.dictionary))
    (tmp_path / "model.json").write_text(json.dumps(config))
    return result, features, dictionary, str(tmp_path / "model.json")


def test_predict_uses_complete_cases_of_its_own_columns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = {"outcome": OUTCOME, "predictors": "change", "measures": ["activation"], "l1_ratios": [0.5, 1.0],
              "n_alphas": 20, "refit_inner_folds": 5, "inner_folds": 5, "outer_folds": 5, "n_permutations": 20,
              "n_bootstrap": 100, "n_selection_bootstrap": 10, "covariates": ["age"], "seed": 1}
    result, features, dictionary, model = _write(tmp_path, config)
    assert len(result.table) == 40
    assert result.dictionary[f"{MEASURES[0]}__change"]["source"] == "faces.tsv"
    po = PredictClinicalChange(features_tsv=features, dictionary_json=dictionary, model_config=model).run().outputs
    subjects = pd.read_csv(po.subjects_tsv, sep="\t", dtype={"subject": str}, keep_default_na=False)
    left = subjects[~subjects["included"]]
    # a task-only model keeps the subjects who lost a rest run; only sub-03 (no outcome) is left out
    assert list(left["subject"]) == ["03"] and "outcome caps5_total__change" in left["reason"].item()
    perf = json.loads(Path(po.performance_json).read_text())
    assert perf["subjects"]["n_included"] == 39 and perf["subjects"]["excluded"][0]["subject"] == "03"
    assert perf["out_of_sample"]["r2"]["estimate"] > 0.3
    assert perf["out_of_sample"]["r2"]["p_permutation"] == pytest.approx(1 / 21)
    assert perf["settings"]["permutation_scheme"].startswith("Freedman-Lane")
    coefs = pd.read_csv(po.coefficients_tsv, sep="\t").set_index("predictor")
    assert coefs.loc[f"{MEASURES[0]}__change", "coef"] < 0 < coefs.loc[f"{MEASURES[1]}__change", "coef"]
    assert set(coefs.index) == {f"{m}__change" for m in TASK_MEASURES} | {"age"}
    assert len(pd.read_csv(po.null_tsv, sep="\t")) == 20
    assert len(pd.read_csv(po.selection_tsv, sep="\t")) == len(TASK_MEASURES) + 1
    assert pd.read_csv(po.predictions_tsv, sep="\t").shape == (39, 3)
    assert len(po.figures) == 4 and all(Path(f).read_text().lstrip().startswith("<?xml") for f in po.figures)


def test_coefficients_through_the_interface_equal_a_direct_sklearn_fit(tmp_path, monkeypatch):
    """features.tsv -> PredictClinicalChange -> coefficients.tsv adds no hidden transformation."""
    monkeypatch.chdir(tmp_path)
    config = {"outcome": OUTCOME, "predictors": "change", "n_permutations": 0, "n_selection_bootstrap": 0,
              "outer_folds": 3, "inner_folds": 3, "l1_ratios": [0.5, 0.9], "n_alphas": 30}
    result, features, dictionary, model = _write(tmp_path, config)
    po = PredictClinicalChange(features_tsv=features, dictionary_json=dictionary, model_config=model).run().outputs
    coefs = pd.read_csv(po.coefficients_tsv, sep="\t").set_index("predictor")
    perf = json.loads(Path(po.performance_json).read_text())
    # direct: complete cases of the same table, Pipeline(StandardScaler, ElasticNetCV(LOO)) on the columns
    table = pd.read_csv(features, sep="\t", na_values=["n/a"], keep_default_na=False)
    columns = [f"{m}__change" for m in MEASURES]
    complete = table.dropna(subset=columns + [OUTCOME])
    assert len(complete) == 37  # 03 (no outcome), 05 and 07 (no post rest run)
    direct = Pipeline([("scale", StandardScaler()),
                       ("enet", ElasticNetCV(l1_ratio=[0.5, 0.9], alphas=30, cv=LeaveOneOut(),
                                             tol=1e-13, max_iter=1_000_000))])  # converged as tightly as ours
    direct.fit(complete[columns].to_numpy(), complete[OUTCOME].to_numpy())
    np.testing.assert_allclose(coefs.loc[columns, "coef_std"], direct[-1].coef_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(coefs.loc[columns, "coef"], direct[-1].coef_ / direct[0].scale_, rtol=1e-6,
                               atol=1e-9)
    assert perf["refit"]["alpha"] == pytest.approx(direct[-1].alpha_, rel=1e-12)
    assert perf["refit"]["l1_ratio"] == direct[-1].l1_ratio_
    assert perf["refit"]["intercept"] == pytest.approx(
        direct[-1].intercept_ - float(direct[-1].coef_ / direct[0].scale_ @ direct[0].mean_), rel=1e-6)


def test_model_with_too_few_complete_subjects_is_skipped_with_reason():
    measures, clinical, participants, excluded = _inputs(n=12)
    res = build_feature_table(measures, clinical, participants, excluded_runs=excluded)
    base = {"outcome": OUTCOME, "arm": "arm", "arm_levels": ["midazolam", "ketamine"]}
    data = select_model_data(dict(base, arm_subset="midazolam", min_subjects=5), res.table, res.dictionary)
    assert not data.can_run and "only 3 subject(s)" in data.skip_reason  # 6 midazolam minus 03, 05, 07
    reasons = data.subjects.set_index("subject")["reason"]
    assert reasons["04"].startswith("in arm ketamine") and "outcome" in reasons["03"]
    assert "3 predictor(s): fc_rest_roi0-amygdala_L__change" in reasons["05"]
    data = select_model_data(dict(base, arm_subset="midazolam", measures=["activation"], min_subjects=5),
                             res.table, res.dictionary)
    assert data.can_run and len(data.table) == 5 and set(data.table["arm"]) == {"midazolam"}
    with pytest.raises(ValueError, match="unknown model configuration key"):
        select_model_data(dict(base, alpha=1), res.table, res.dictionary)
    data = select_model_data(dict(base, predictor_pattern="^dcm_"), res.table, res.dictionary)
    assert not data.can_run and "no predictor column selected" in data.skip_reason


def test_arm_terms_need_both_arms():
    measures, clinical, participants, excluded = _inputs(n=12)
    participants["arm"] = ["ketamine"] * 11 + ["midazolam"]
    res = build_feature_table(measures, clinical, participants)
    data = select_model_data({"outcome": OUTCOME, "arm": "arm", "arm_levels": ["midazolam", "ketamine"],
                              "arm_interactions": True}, res.table, res.dictionary)
    assert not data.can_run and "midazolam: 1" in data.skip_reason


def test_spec_from_config_selects_predictors():
    d = {"a__ses-pre": {"role": "imaging_session", "session": "pre", "family": "fc"},
         "a__ses-post": {"role": "imaging_session", "session": "post", "family": "fc"},
         "fc_x__change": {"role": "imaging_change", "family": "fc"},
         "ppi_y__change": {"role": "imaging_change", "family": "ppi"},
         "dcm_z__change": {"role": "imaging_change", "family": "dcm", "excluded_from_models": "too often missing"},
         "caps5_total__change": {"role": "clinical_change"}}
    model = spec_from_config({"outcome": "caps5_total__change", "seed": 3}, d)
    assert model.spec.features == ("fc_x__change", "ppi_y__change") and model.evaluate_kwargs == {"seed": 3}
    assert model.arm_subset is None and model.min_subjects == 6
    assert spec_from_config({"outcome": "caps5_total__change", "predictors": "baseline"}, d).spec.features == (
        "a__ses-pre",)
    assert spec_from_config({"outcome": "caps5_total__change", "predictor_pattern": "^ppi_"}, d).spec.features == (
        "ppi_y__change",)
    assert spec_from_config({"outcome": "caps5_total__change", "measures": ["ppi", "dcm"]}, d).spec.features == (
        "ppi_y__change",)
    model = spec_from_config({"outcome": "caps5_total__change", "arm": "arm", "arm_levels": ["m", "k"],
                              "arm_interactions": True, "arm_subset": "k", "refit_inner_folds": 4,
                              "inner_folds": 3}, d)
    assert model.arm_subset == "k" and not model.spec.arm_interactions
    assert model.spec.inner_folds == 4 and model.evaluate_kwargs == {"inner_folds": 3}
    assert model.columns == ["caps5_total__change", "fc_x__change", "ppi_y__change", "arm"]
    with pytest.raises(ValueError, match="unknown model configuration key"):
        spec_from_config({"outcome": "caps5_total__change", "alpha": 1}, d)
    with pytest.raises(ValueError, match="not in the feature table"):
        spec_from_config({"outcome": "caps5_total__change", "predictors": ["nope"]}, d)
    with pytest.raises(NoPredictorsError, match="too often missing"):
        spec_from_config({"outcome": "caps5_total__change", "measures": ["dcm"]}, d)
