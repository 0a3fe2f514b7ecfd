"""Trial inference at the group level: configuration, planning, the interface, figures, report.

A synthetic feature table with the packaged configuration's measure names (activation, gPPI,
resting FC, DCM) and a planted arm x session effect goes through the planner, the Nipype
interface and the report section; bad analyses are skipped with the configuration key named
while the others run.  (The whole group level through the command line: tests/test_group_cli.py.)
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from ketflow.config import ConfigError, load_config, packaged_file, roi_names, sloppy_config
from ketflow.group.features import build_feature_table
from ketflow.group.roi_matrices import edge_matrices, parse_edge
from ketflow.interfaces.inference import TrialInference
from ketflow.io.write import write_json, write_tsv
from ketflow.reports.group import group_methods_text, group_report
from ketflow.reports.group_inference import ranked_results
from ketflow.workflows.group_inference import plan_inference

ROIS = roi_names(load_config())
EFFECT_EDGE = "fc_rest_vmPFC-amygdala_L"


def _measures(rng, n: int = 16) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    names = [f"activation_conflict_incongruent-gt-congruent_{r}" for r in ROIS[:4]]
    names += [f"ppi_faces_fearful-gt-shapes_{s}-to-{t}" for s in ("vmPFC", "amygdala_L") for t in ROIS if t != s][:10]
    names += [f"fc_rest_{a}-{b}" for i, a in enumerate(ROIS[:5]) for b in ROIS[i + 1:5]]
    names += ["dcm_faces_B_amygdala_L-to-vmPFC_fearful", "dcm_faces_A_vmPFC-to-amygdala_L"]
    if EFFECT_EDGE not in names:
        names.append(EFFECT_EDGE)
    rows, clinical, participants = [], [], []
    for i in range(n):
        arm = ("ketamine", "midazolam")[i % 2]
        participants.append({"participant_id": f"sub-{i:02d}", "group": arm, "age": 30.0 + i})
        trait = rng.normal(size=len(names))
        for ses in ("pre", "post"):
            clinical.append({"subject": f"{i:02d}", "session": ses, "caps5_total": 40.0, "madrs_total": 20.0})
            for j, name in enumerate(names):
                effect = 3.0 if (name == EFFECT_EDGE and ses == "post" and arm == "ketamine") else 0.0
                rows.append({"subject": f"{i:02d}", "session": ses, "task": name.split("_")[1], "measure": name,
                             "value": trait[j] + effect + rng.normal(scale=0.5)})
    return pd.DataFrame(rows), pd.DataFrame(clinical), pd.DataFrame(participants)


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    """(features.tsv, features.json) of the synthetic study in a work folder."""
    work = tmp_path_factory.mktemp("inference_work")
    measures, clinical, participants = _measures(np.random.default_rng(0))
    table = build_feature_table(measures, clinical, participants, arm="group", covariates=["age"])
    return str(write_tsv(work / "features.tsv", table.table)), str(write_json(work / "features.json", table.dictionary))


def _config(tmp_path, inference: dict, covariates=("age",)):
    raw = yaml.safe_load(packaged_file("default_config.yml").read_text())
    raw["clinical"]["covariates"] = list(covariates)
    raw["group"]["inference"].update(inference)
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def test_bad_analyses_are_skipped_naming_the_key_while_the_others_run(features, tmp_path):
    config = _config(tmp_path, {"apriori": {"fc": ["fc_rest_vmPFC-nowhere"]}, "n_permutations": 50})
    plan, runnable = plan_inference(*features, config, tmp_path)
    status = plan.set_index(["family", "model"]).sort_index()
    assert status.loc[("fc", "ancova"), "status"] == "skipped"
    assert status.loc[("fc", "lmm"), "reason"].startswith("group.inference.apriori.fc: names measure(s)")
    # the synthetic study has no beta-series measures: that family is skipped, saying so
    assert status.loc[("betaseries", "ancova"), "reason"].startswith("group.inference.families: the feature table "
                                                                      "has no beta-series connectivity")
    assert (status.drop(index=["fc", "betaseries"])["status"] == "run").all() and len(runnable) == 6
    # a covariate equal to the arm: rank-deficient everywhere
    table = pd.read_csv(features[0], sep="\t")
    table["age"] = (table["group"] == "ketamine").astype(float)
    bad = str(write_tsv(tmp_path / "bad.tsv", table))
    measured = ["activation", "ppi", "fc", "dcm"]  # the families the synthetic study has
    plan, runnable = plan_inference(bad, features[1], _config(tmp_path, {"families": measured}), tmp_path)
    assert not runnable and plan["reason"].str.startswith("group.inference.covariates: the design").all()
    # too few subjects per arm
    plan, _ = plan_inference(*features, _config(tmp_path, {"min_per_arm": 9, "families": measured}), tmp_path)
    assert plan["reason"].str.startswith("group.inference.min_per_arm: no a-priori").all()


def test_interface_writes_the_table_sidecar_and_matrix_figures(features, tmp_path, monkeypatch):
    config = _config(tmp_path, {"n_permutations": 200, "families": ["fc", "ppi", "dcm"]})
    plan, runnable = plan_inference(*features, config, tmp_path)
    assert (plan["status"] == "run").all() and runnable[("dcm", "lmm")]["figures"] is False
    monkeypatch.chdir(tmp_path)
    outputs = {}
    for (family, model), spec in runnable.items():
        node_dir = tmp_path / f"{family}_{model}"
        node_dir.mkdir()
        monkeypatch.chdir(node_dir)
        result = TrialInference(features_tsv=features[0], dictionary_json=features[1],
                                analysis_json=spec["analysis_json"]).run()
        outputs[(family, model)] = result.outputs
    table = pd.read_csv(outputs[("fc", "ancova")].table_tsv, sep="\t", keep_default_na=False, na_values=["n/a"])
    meta = json.loads(open(outputs[("fc", "ancova")].metadata_json).read())
    assert meta["Formula"] == "post ~ pre + arm + age" and meta["MultipleComparisons"]["FWE"]["NPermutations"] == 200
    assert meta["Counts"]["SubjectsPerArmAndSession"] == {"ketamine": {"pre": 8, "post": 8},
                                                          "midazolam": {"pre": 8, "post": 8}}
    hit = table[(table["measure"] == EFFECT_EDGE) & (table["effect"] == "arm_by_session")].iloc[0]
    assert hit["estimate"] > 2 and hit["significant_fwe"] and hit["significant_fdr"]
    lmm = json.loads(open(outputs[("fc", "lmm")].metadata_json).read())
    assert lmm["Formula"] == "value ~ session * arm + age + (1 | subject)"
    assert _names(outputs[("ppi", "lmm")].figures) == ["desc-ppiFacesFearfulGtShapes_figure.svg"]
    assert _names(outputs[("fc", "lmm")].figures) == ["desc-fcRest_figure.svg"]
    assert not outputs[("dcm", "ancova")].figures


def _names(files) -> list[str]:
    """File names of a Nipype multi-output (a single file comes back as a string)."""
    return [p.split("/")[-1] for p in ([files] if isinstance(files, str) else files)]


def test_edge_matrices_are_directed_for_gppi_and_symmetric_for_fc():
    assert parse_edge("ppi_faces_fearful-gt-shapes_amygdala_L-to-vmPFC", "faces", ROIS) == \
        ("ppi_faces_fearful-gt-shapes", "amygdala_L", "vmPFC")
    assert parse_edge("fc_rest_vmPFC-amygdala_L", "rest", ROIS) == ("fc_rest", "vmPFC", "amygdala_L")
    assert parse_edge("activation_faces_x_dACC", "faces", ROIS) is None
    assert parse_edge("betaseries_conflict_incongruent-gt-congruent_amygdala_L-vmPFC", "conflict", ROIS) == \
        ("betaseries_conflict_incongruent-gt-congruent", "amygdala_L", "vmPFC")
    rows = pd.DataFrame({"measure": ["fc_rest_vmPFC-amygdala_L", "ppi_faces_c_vmPFC-to-dACC"],
                         "task": ["rest", "faces"], "effect": "arm_by_session", "arm": "k - m", "t": [2.0, -1.0],
                         "significant_fdr": [True, False], "significant_fwe": ["False", "True"]})
    fc, ppi = sorted(edge_matrices(rows, "arm_by_session", "k - m", ROIS), key=lambda m: m.label)
    assert not fc.directed and fc.sources == fc.targets == ["vmPFC", "amygdala_L"]
    assert fc.values[0, 1] == fc.values[1, 0] == 2.0 and fc.fdr[1, 0] and not fc.fwe.any()
    assert ppi.directed and ppi.sources == ["vmPFC"] and ppi.targets == ["dACC"] and ppi.fwe[0, 0]


def test_config_section_validation_and_sloppy(tmp_path):
    for inference, message in (({"apriori": {"fc": ["ppi_faces_x"]}}, "not fc_\\* measures"),
                               ({"families": ["fc"], "apriori": {"dcm": ["dcm_x"]}}, "not in inference.families"),
                               ({"families": ["fc", "voxels"]}, "group.inference.families"),
                               ({"covariates": ["height"]}, "group.inference.covariates names \\['height'\\]"),
                               ({"n_permutations": -1}, "group.inference.n_permutations")):
        with pytest.raises(ConfigError, match=message):
            _config(tmp_path, inference)
    config = load_config()
    assert config.group.inference.n_permutations == 5000 and config.group.inference.enabled
    assert sloppy_config(config).group.inference.n_permutations == 200


def test_report_section_lists_significant_results_first(features, tmp_path, monkeypatch):
    config = _config(tmp_path, {"n_permutations": 100, "families": ["fc"], "models": ["ancova"]})
    plan, runnable = plan_inference(*features, config, tmp_path)
    monkeypatch.chdir(tmp_path)
    result = TrialInference(features_tsv=features[0], dictionary_json=features[1],
                            analysis_json=runnable[("fc", "ancova")]["analysis_json"]).run()
    out = tmp_path / "out"
    (out / "group" / "figures").mkdir(parents=True)
    write_tsv(out / "group" / "inference.tsv", plan)
    shutil.copy(result.outputs.table_tsv, out / "group" / "model-ancova_desc-fc_inference.tsv")
    shutil.copy(result.outputs.metadata_json, out / "group" / "model-ancova_desc-fc_inference.json")
    shutil.copy(result.outputs.figures, out / "group" / "figures" / "model-ancova_desc-fcRest_figure.svg")
    text = group_report(out, config)
    assert "Trial inference on the circuit measures" in text and "model-ancova_desc-fcRest_figure.svg" in text
    assert "as low as --sloppy" in group_report(out, sloppy_config(config))
    shown, n_significant = ranked_results(pd.read_csv(result.outputs.table_tsv, sep="\t"))
    assert n_significant >= 1 and shown.iloc[0]["measure"] == EFFECT_EDGE
    methods = group_methods_text(config)
    assert "Benjamini-Hochberg" in methods and "100 permutations" in methods and "Winkler AM" in methods
