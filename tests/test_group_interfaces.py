"""Tests of the group-level Nipype interfaces and the model configuration."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ketflow.group.config import spec_from_config
from ketflow.group.features import build_feature_table
from ketflow.interfaces.group import PredictClinicalChange
from ketflow.io.write import write_json, write_tsv

MEASURES = [f"fc_rest_roi{j}-amygdala_L" for j in range(8)]


def _write_inputs(tmp_path, n=40, seed=0):
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
            rows += [(s, "ses-pre", m, pre[i, j]), (s, "ses-post", m, post[i, j])]
    long = pd.DataFrame(rows, columns=["subject", "session", "measure", "value"])
    long["source"] = np.where(long["measure"].isin(MEASURES[:4]), "m1.tsv", "m2.tsv")
    clin = pd.DataFrame({"subject": subs * 2, "session": ["pre"] * n + ["post"] * n,
                         "caps5_total": np.r_[caps_pre, caps_post]})
    clin.loc[3, "caps5_total"] = np.nan
    participants = pd.DataFrame({"participant_id": subs, "arm": ["ketamine", "midazolam"] * (n // 2),
                                 "age": rng.integers(20, 60, n)})
    return long, clin, participants


def test_build_then_predict(tmp_path, monkeypatch):
    measures, clinical, participants = _write_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = build_feature_table(measures, clinical, participants, covariates=["age"])
    assert len(result.table) == 39
    assert result.exclusions.astype(str).to_dict("records") == [
        {"subject": "03", "reason": "missing clinical score caps5_total at session pre"}]
    assert result.dictionary[f"{MEASURES[0]}__change"]["source"] == "m1.tsv"
    features_tsv = str(write_tsv(tmp_path / "features.tsv", result.table))
    dictionary_json = str(write_json(tmp_path / "features.json", result.dictionary))

    config = {"outcome": "caps5_total__change", "predictors": "change", "l1_ratios": [0.5, 1.0],
              "n_alphas": 20, "inner_folds": 5, "outer_folds": 5, "n_permutations": 20,
              "n_bootstrap": 100, "n_selection_bootstrap": 10, "covariates": ["age"], "seed": 1}
    (tmp_path / "model.json").write_text(json.dumps(config))
    res = PredictClinicalChange(features_tsv=features_tsv, dictionary_json=dictionary_json,
                                model_config=str(tmp_path / "model.json")).run()
    po = res.outputs
    perf = json.loads(Path(po.performance_json).read_text())
    assert perf["out_of_sample"]["r2"]["estimate"] > 0.3
    assert perf["out_of_sample"]["r2"]["p_permutation"] == pytest.approx(1 / 21)
    assert perf["settings"]["permutation_scheme"].startswith("Freedman-Lane")
    coefs = pd.read_csv(po.coefficients_tsv, sep="\t").set_index("predictor")
    assert coefs.loc[f"{MEASURES[0]}__change", "coef"] < 0 < coefs.loc[f"{MEASURES[1]}__change", "coef"]
    assert len(pd.read_csv(po.null_tsv, sep="\t")) == 20
    assert len(pd.read_csv(po.selection_tsv, sep="\t")) == len(MEASURES) + 1
    assert pd.read_csv(po.predictions_tsv, sep="\t").shape == (39, 3)
    assert len(po.figures) == 4 and all(Path(f).read_text().lstrip().startswith("<?xml") for f in po.figures)


def test_spec_from_config_selects_predictors():
    d = {"a__ses-pre": {"role": "imaging_session", "session": "pre"},
         "a__ses-post": {"role": "imaging_session", "session": "post"},
         "fc_x__change": {"role": "imaging_change"}, "ppi_y__change": {"role": "imaging_change"},
         "caps5_total__change": {"role": "clinical_change"}}
    spec, kw, subset = spec_from_config({"outcome": "caps5_total__change", "seed": 3}, d)
    assert spec.features == ("fc_x__change", "ppi_y__change") and kw == {"seed": 3} and subset is None
    spec, _, _ = spec_from_config({"outcome": "caps5_total__change", "predictors": "baseline"}, d)
    assert spec.features == ("a__ses-pre",)
    spec, _, _ = spec_from_config({"outcome": "caps5_total__change", "predictor_pattern": "^ppi_"}, d)
    assert spec.features == ("ppi_y__change",)
    spec, _, subset = spec_from_config({"outcome": "caps5_total__change", "arm": "arm",
                                        "arm_levels": ["m", "k"], "arm_interactions": True,
                                        "arm_subset": "k"}, d)
    assert subset == "k" and not spec.arm_interactions
    with pytest.raises(ValueError, match="unknown model configuration key"):
        spec_from_config({"outcome": "x", "alpha": 1}, d)
    with pytest.raises(ValueError, match="not in the feature table"):
        spec_from_config({"outcome": "x", "predictors": ["nope"]}, d)
