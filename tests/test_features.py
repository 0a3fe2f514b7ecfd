"""Tests of ketflow.group.features.build_feature_table."""

import json

import numpy as np
import pandas as pd
import pytest

from ketflow.group.features import (
    build_feature_table,
    change_column,
    columns_with_role,
    session_column,
)

MEASURES = ["activation_faces_fearful-gt-neutral_amygdala_L", "fc_rest_vmPFC-amygdala_L",
            "dcm_faces_A_amygdala_L-to-vmPFC"]


def _inputs(n=6, seed=0):
    rng = np.random.default_rng(seed)
    subs = [f"{i:02d}" for i in range(1, n + 1)]
    rows = [(s, ses, m, rng.normal()) for s in subs for ses in ("pre", "post") for m in MEASURES]
    measures = pd.DataFrame(rows, columns=["subject", "session", "measure", "value"])
    clinical = pd.DataFrame([(s, ses, rng.integers(20, 60), rng.integers(10, 40))
                             for s in subs for ses in ("pre", "post")],
                            columns=["subject", "session", "caps5_total", "madrs_total"])
    participants = pd.DataFrame({"participant_id": [f"sub-{s}" for s in subs],
                                 "arm": (["ketamine", "midazolam"] * n)[:n],
                                 "age": rng.integers(20, 60, n).astype(float),
                                 "sex": (["F", "M", "M"] * n)[:n]})
    return measures, clinical, participants


def test_table_values_changes_and_dictionary():
    measures, clinical, participants = _inputs()
    res = build_feature_table(measures, clinical, participants, covariates=["age", "sex"])
    tab = res.table
    assert list(tab["subject"]) == [f"{i:02d}" for i in range(1, 7)]
    assert res.missing.empty
    m = MEASURES[1]
    pre = measures.query("subject == '03' and session == 'pre' and measure == @m")["value"].item()
    post = measures.query("subject == '03' and session == 'post' and measure == @m")["value"].item()
    row = tab.set_index("subject").loc["03"]
    assert row[session_column(m, "pre")] == pre
    assert row[session_column(m, "post")] == post
    assert row[change_column(m)] == pytest.approx(post - pre)
    cpre = clinical.query("subject == '03' and session == 'pre'")["caps5_total"].item()
    cpost = clinical.query("subject == '03' and session == 'post'")["caps5_total"].item()
    assert row[change_column("caps5_total")] == cpost - cpre
    assert row["sex"] in (0.0, 1.0)
    # every column documented, dictionary JSON-ready
    assert set(res.dictionary) == set(tab.columns)
    json.dumps(res.dictionary)
    for meta in res.dictionary.values():
        assert {"description", "units", "source", "role", "n_subjects", "n_missing"} <= set(meta)
    assert res.dictionary["sex"]["levels"] == {"F": 0, "M": 1}
    assert res.dictionary[change_column(m)]["units"].startswith("Fisher z")
    assert len(columns_with_role(res.dictionary, "imaging_change")) == 3
    assert columns_with_role(res.dictionary, "imaging_session", "pre") == [
        session_column(x, "pre") for x in sorted(MEASURES)]
    assert columns_with_role(res.dictionary, "clinical_change") == [
        change_column("caps5_total"), change_column("madrs_total")]


def test_change_direction_is_configurable():
    measures, clinical, participants = _inputs()
    a = build_feature_table(measures, clinical, participants).table
    b = build_feature_table(measures, clinical, participants, baseline="post", followup="pre").table
    col = change_column(MEASURES[0])
    np.testing.assert_allclose(a[col], -b[col])


def test_every_subject_kept_and_every_missing_value_explained():
    measures, clinical, participants = _inputs(n=9)
    measures = measures[~((measures.subject == "02") & (measures.session == "post"))]
    measures.loc[(measures.subject == "04") & (measures.measure == MEASURES[0])
                 & (measures.session == "pre"), "value"] = np.nan
    clinical.loc[(clinical.subject == "05") & (clinical.session == "post"), "madrs_total"] = np.nan
    participants.loc[participants.participant_id == "sub-06", "arm"] = np.nan
    extra = pd.DataFrame({"subject": ["10"], "session": ["pre"], "caps5_total": [30],
                          "madrs_total": [20]})
    res = build_feature_table(measures, pd.concat([clinical, extra]), participants)
    tab = res.table.set_index("subject")
    assert list(tab.index) == [f"{i:02d}" for i in range(1, 11)]  # nobody dropped
    text = res.missing.groupby("subject")["reason"].apply(" | ".join).to_dict()
    assert set(text) == {"02", "04", "05", "06", "10"}
    assert "no imaging measures at session post" in text["02"]
    assert tab.loc["02", session_column(MEASURES[1], "pre")] == pytest.approx(
        measures.query("subject == '02' and session == 'pre' and measure == @MEASURES[1]")["value"].item())
    assert np.isnan(tab.loc["02", change_column(MEASURES[1])])
    assert "no activation measures at session pre" in text["04"] and np.isnan(tab.loc["04", change_column(MEASURES[0])])
    assert not np.isnan(tab.loc["04", change_column(MEASURES[1])])
    assert "no clinical score madrs_total at session post" in text["05"]
    assert not np.isnan(tab.loc["05", change_column("caps5_total")])
    assert "missing arm" in text["06"] and pd.isna(tab.loc["06", "arm"])
    assert "no row in the participants table" in text["10"]
    # each missing imaging value is counted once
    m = res.missing
    assert m.loc[(m.subject == "04"), "n_missing"].sum() == 1
    assert m.loc[(m.subject == "02") & (m.session == "post"), "n_missing"].sum() == len(MEASURES)
    assert res.dictionary[change_column(MEASURES[1])]["n_missing"] == 2  # 02 (post) and 10 (nothing)


def test_excluded_run_explains_its_missing_measures_only():
    measures, clinical, participants = _inputs(n=6)
    measures["task"] = measures["measure"].str.split("_").str[1]
    drop = (measures.subject == "03") & (measures.session == "pre") & (measures.task == "rest")
    qc = pd.DataFrame({"subject": ["sub-03", "sub-05"], "session": ["ses-pre", "ses-post"],
                       "task": ["rest", "faces"], "reason": ["FD > 0.5 mm in 40% of volumes", "too short"]})
    res = build_feature_table(measures[~drop], clinical, participants, excluded_runs=qc)
    m = res.missing.set_index(["subject", "item"])
    assert m.loc[("03", "fc_rest"), "reason"].endswith("FD > 0.5 mm in 40% of volumes")
    assert m.loc[("03", "fc_rest"), "n_missing"] == 1
    # an excluded run that removed no value (other runs remained) is still listed, with 0 missing
    assert m.loc[("05", "task-faces"), "n_missing"] == 0
    tab = res.table.set_index("subject")
    assert np.isnan(tab.loc["03", change_column(MEASURES[1])])
    assert not np.isnan(tab.loc["03", change_column(MEASURES[0])])
    assert res.dictionary[change_column(MEASURES[1])]["family"] == "fc"
    assert res.dictionary[change_column(MEASURES[1])]["task"] == "rest"


def test_too_often_missing_columns_are_marked_not_dropped():
    measures, clinical, participants = _inputs(n=8)
    gone = (measures.measure == MEASURES[1]) & measures.subject.isin(["01", "02", "03"]) & (measures.session == "post")
    res = build_feature_table(measures[~gone], clinical, participants, max_missing_fraction=0.25)
    meta = res.dictionary[change_column(MEASURES[1])]
    assert meta["n_missing"] == 3 and "3 of 8 subjects" in meta["excluded_from_models"]
    assert change_column(MEASURES[1]) in res.table.columns
    assert change_column(MEASURES[1]) not in columns_with_role(res.dictionary, "imaging_change")
    assert change_column(MEASURES[1]) in columns_with_role(res.dictionary, "imaging_change", usable_only=False)
    assert session_column(MEASURES[1], "pre") in columns_with_role(res.dictionary, "imaging_session", "pre")
    with pytest.raises(ValueError, match="max_missing_fraction"):
        build_feature_table(measures, clinical, participants, max_missing_fraction=1.5)


@pytest.mark.parametrize("which", ["measures", "clinical", "participants"])
def test_duplicate_ids_raise(which):
    measures, clinical, participants = _inputs()
    frames = {"measures": measures, "clinical": clinical, "participants": participants}
    frames[which] = pd.concat([frames[which], frames[which].iloc[[0]]])
    with pytest.raises(ValueError, match=f"{which} table has duplicate"):
        build_feature_table(frames["measures"], frames["clinical"], frames["participants"])


def test_non_numeric_clinical_score_names_column_and_subject():
    measures, clinical, participants = _inputs()
    clinical["caps5_total"] = clinical["caps5_total"].astype(object)
    clinical.loc[5, "caps5_total"] = "thirty"
    sub = clinical.loc[5, "subject"]
    with pytest.raises(ValueError, match=rf"'caps5_total'.*'thirty'.*subject {sub}"):
        build_feature_table(measures, clinical, participants)


def test_other_validation_errors():
    measures, clinical, participants = _inputs()
    with pytest.raises(ValueError, match="session 'base'"):
        build_feature_table(measures, clinical, participants, baseline="base")
    with pytest.raises(ValueError, match="lacks column"):
        build_feature_table(measures.drop(columns="value"), clinical, participants)
    participants["site"] = ["a", "b", "c"] * 2
    with pytest.raises(ValueError, match="covariate 'site'.*3 levels"):
        build_feature_table(measures, clinical, participants, covariates=["site"])
