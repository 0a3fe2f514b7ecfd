"""The PEB interfaces and the group level's PEB preparation on synthetic participant outputs."""

import json
import os
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from ketflow.config import load_config
from ketflow.dcm.priors import dcm_fmri_priors
from ketflow.interfaces.peb import FitLongitudinalPEB, FitPEB, find_dcm, load_first_level
from ketflow.workflows.group_peb import prepare_peb

OUTCOME = "caps5_total__change"
B_NAME = "B_amygdala_L-to-vmPFC_fearful"


def _dcm_json(theta, lam, rng, pE, pC, names, layout):
    """A dcm.json-like record: exact posterior of y ~ N(θ, lam⁻¹) on the free parameters."""
    free = np.diag(pC) > 0
    qE, qC = pE.copy(), np.zeros_like(pC)
    f = np.ix_(free, free)
    y = rng.multivariate_normal(theta[free], np.linalg.inv(lam[f]))
    qC[f] = np.linalg.inv(np.linalg.inv(pC[f]) + lam[f])
    qE[free] = qC[f] @ (np.linalg.solve(pC[f], pE[free]) + lam[f] @ y)
    return {"param_names": names, "region_names": ["vmPFC", "amygdala_L"], "input_names": ["faces", "fearful"],
            "Ep_vector": qE.tolist(), "Cp": qC.tolist(), "prior_mean": pE.tolist(), "prior_cov": pC.tolist(),
            "F": float(-100 - rng.uniform()), "Ep": {k: np.asarray(v).tolist() for k, v in layout.unpack(qE).items()}}


def _participant_outputs(out_dir, n_sub=24, arm_effect=0.6, change_by_arm=0.8, seed=0, sessions=("pre", "post")):
    """DCM outputs of n_sub subjects (the last without any): B amygdala → vmPFC differs between the
    arms by ``arm_effect`` at baseline and its post − pre change by ``change_by_arm``."""
    rng = np.random.default_rng(seed)
    a, b, c = np.ones((2, 2)), np.zeros((2, 2, 2)), np.array([[0, 0], [1, 0]])
    b[1, 0, 1] = 1
    pE, pV, layout = dcm_fmri_priors(a, b, c)
    pC = np.diag(pV)
    names = layout.names()
    ib = names.index("B_to1_from2_in2")
    arms = np.array(["ketamine", "midazolam"] * (n_sub // 2))
    change = rng.normal(-10, 5, n_sub)
    subjects = [f"{i + 1:02d}" for i in range(n_sub)]
    lam = np.diag(np.where(pV > 0, 400.0, 0.0))
    for i, sub in enumerate(subjects[:-1]):
        sign = 0.5 if arms[i] == "ketamine" else -0.5
        theta = pE + rng.multivariate_normal(np.zeros(pE.size), pC / 16) * (pV > 0)
        theta[ib] += 0.4 + sign * arm_effect
        for session in sessions:
            shift = sign * change_by_arm + rng.normal(0, 0.1) if session == "post" else 0.0
            folder = out_dir / f"sub-{sub}" / f"ses-{session}" / "func"
            folder.mkdir(parents=True)
            runs = ["run-1_", "run-2_"] if i % 4 == 0 else [""]
            for run in runs:
                value = theta.copy()
                value[ib] += shift
                record = _dcm_json(value, lam, rng, pE, pC, names, layout)
                (folder / f"sub-{sub}_ses-{session}_task-faces_{run}atlas-circuit_dcm.json").write_text(json.dumps(record))
    features = pd.DataFrame({"subject": subjects, "group": arms, OUTCOME: change})
    features.to_csv(out_dir / "features.tsv", sep="\t", index=False)
    return subjects


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    out = tmp_path_factory.mktemp("peb_outputs") / "out"
    return out, _participant_outputs(out, n_sub=16)


@pytest.fixture(scope="module")
def longitudinal(outputs, tmp_path_factory):
    """FitLongitudinalPEB run once on the synthetic outputs: (its results, its folder)."""
    out, _ = outputs
    folder = tmp_path_factory.mktemp("longitudinal")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        res = FitLongitudinalPEB(out_dir=str(out), features_tsv=str(out / "features.tsv"), task="faces",
                                 sessions=["pre", "post"], arm_column="group", arms=["ketamine", "midazolam"],
                                 outcome=OUTCOME, settings_json=str(_settings(folder))).run()
    finally:
        os.chdir(cwd)
    return res, folder


def _settings(tmp_path, **changes):
    settings = load_config().peb.model_dump(mode="json")
    settings.update(changes)
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    return path


def test_fit_peb_baseline_end_to_end(outputs, tmp_path, monkeypatch):
    out, subjects = outputs
    monkeypatch.chdir(tmp_path)
    res = FitPEB(out_dir=str(out), features_tsv=str(out / "features.tsv"), task="faces", sessions=["pre"],
                 arm_column="group", arms=["ketamine", "midazolam"], outcome=OUTCOME,
                 settings_json=str(_settings(tmp_path, greedy="subsets"))).run()
    table = pd.read_csv(res.outputs.parameters_tsv, sep="\t")
    summary = json.loads(open(res.outputs.summary_json).read())
    sidecar = json.loads(open(res.outputs.sidecar_json).read())
    assert summary["subjects_without_dcm"] == [subjects[-1]] and len(summary["subjects"]) == len(subjects) - 1
    assert sorted({n for runs in summary["runs_per_subject"] for n in runs}) == [1, 2]
    assert summary["design_columns"] == ["mean", "arm", "clinical", "arm:clinical"]
    assert sidecar["NSubjects"] == 15 and sidecar["NSubjectsPerArm"] == {"ketamine": 8, "midazolam": 7}
    # only connectivity parameters with prior variance reach the second level (A 4, B 1, C 1)
    assert set(table["parameter"]) == {"A_vmPFC-to-vmPFC", "A_vmPFC-to-amygdala_L", "A_amygdala_L-to-vmPFC",
                                       "A_amygdala_L-to-amygdala_L", B_NAME, "C_faces-to-amygdala_L"}
    row = table.set_index(["effect", "parameter"])
    arm_b = row.loc[("arm", B_NAME)]
    assert arm_b["Pp"] > 0.95 and arm_b["ci90_low"] < 0.6 < arm_b["ci90_high"]
    assert row.loc[("mean", B_NAME), "Pp"] > 0.95
    assert (row.xs("arm:clinical", level="effect")["Pp"] < 0.95).all()  # none present
    predictions = pd.read_csv(res.outputs.predictions_tsv, sep="\t", dtype={"subject": str})
    assert list(predictions["subject"]) == summary["subjects"] and summary["leave_one_out"]["df"] == 13
    contrasts = pd.read_csv(res.outputs.contrasts_tsv, sep="\t")
    assert list(contrasts["name"]) == ["baseline-top-down-predicts-ketamine-response"]
    families = pd.read_csv(res.outputs.families_tsv, sep="\t").set_index("family")
    assert families.loc["fear-modulation", "p_with"] > 0.95
    assert open(res.outputs.figure).read().lstrip().startswith("<?xml")


def test_fit_longitudinal_peb_detects_the_planted_change(longitudinal):
    res, _ = longitudinal
    table = pd.read_csv(res.outputs.parameters_tsv, sep="\t").set_index(["effect", "parameter"])
    change = table.loc[("session:arm", B_NAME)]
    assert change["Pp"] > 0.95 and change["ci90_low"] < 0.8 < change["ci90_high"]
    assert table.loc[("arm", B_NAME), "posterior_mean"] > 0  # the baseline arm difference, averaged over sessions
    summary = json.loads(open(res.outputs.summary_json).read())
    assert summary["sessions"] == ["pre", "post"] and summary["longitudinal"]["within"] == "saturated"
    contrasts = pd.read_csv(res.outputs.contrasts_tsv, sep="\t")
    assert list(contrasts["name"]) == ["improvement-with-less-fear-modulation",
                                       "ketamine-improvers-more-top-down-inhibition",
                                       "top-down-inhibition-ketamine-vs-midazolam"]
    assert contrasts["p_expected"].between(0, 1).all()
    models = pd.read_csv(res.outputs.models_tsv, sep="\t")
    assert len(models) == 4 and models["posterior"].sum() == pytest.approx(1.0)


def test_load_first_level_averages_runs_and_keeps_subject_priors(tmp_path):
    out = tmp_path / "out"
    _participant_outputs(out, n_sub=4)
    runs = find_dcm(out, "01", "pre", "faces")
    assert [p.name.split("_")[3] for p in runs] == ["run-1", "run-2"]
    # give subject 02 a different prior on one free parameter, as a data-dependent prior would be
    path = find_dcm(out, "02", "pre", "faces")[0]
    record = json.loads(path.read_text())
    cov = np.asarray(record["prior_cov"])
    cov[0, 0] /= 2
    record["prior_cov"] = cov.tolist()
    path.write_text(json.dumps(record))
    paths = [[find_dcm(out, s, "pre", "faces")] for s in ("01", "02", "03")]
    data = load_first_level(paths)
    assert data.qE.shape == (3, 1, 6) and data.pC.shape == (3, 1, 6, 6) and data.F.shape == (3, 1)
    assert data.pC[1, 0, 0, 0] == pytest.approx(data.pC[0, 0, 0, 0] / 2)
    single = [json.loads(p.read_text()) for p in paths[0][0]]
    assert data.F[0, 0] == pytest.approx(sum(r["F"] for r in single))  # runs' free energies summed
    precision = sum(np.linalg.inv(np.asarray(r["Cp"])[np.ix_([0], [0])]) for r in single) - 1 / data.pC[0, 0, 0, 0]
    assert data.qC[0, 0, 0, 0] == pytest.approx(1 / precision[0, 0], rel=0.05)  # two runs: about half the variance


# --- the group level's preparation: what runs, and the reasons naming the configuration key -------------

def _prepare(out, tmp_path, table=None, **peb):
    config = load_config()
    config = config.model_copy(update={"peb": config.peb.model_copy(update=peb)})
    table = pd.read_csv(out / "features.tsv", sep="\t", dtype={"subject": str}) if table is None else table
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    rows, subjects, runnable = prepare_peb(SimpleNamespace(output_dir=out), config, table, work)
    return {r["model"]: r for r in rows}, subjects, runnable


def test_prepare_peb_runs_both_analyses(outputs, tmp_path):
    out, subjects = outputs
    rows, files, runnable = _prepare(out, tmp_path)
    assert {m: r["status"] for m, r in rows.items()} == {"peb": "run", "peb-longitudinal": "run"}
    assert rows["peb"]["n_included"] == 15 and rows["peb"]["n_excluded"] == 1
    table = pd.read_csv(files["peb-longitudinal"], sep="\t", dtype={"subject": str}).set_index("subject")
    assert table.loc[subjects[-1], "reason"] == "no task-faces DCM at session(s) pre, post"
    assert runnable["longitudinal"]["sessions"] == ["pre", "post"]


def test_contrast_naming_an_unknown_parameter_skips_that_analysis_only(outputs, tmp_path):
    out, _ = outputs
    config = load_config()
    bad = config.peb.contrasts[0].model_copy(update={"weights": {"session:clinical": {"B_vmPFC-to-insula": 1}}})
    rows, _, runnable = _prepare(out, tmp_path, contrasts=[bad, *config.peb.contrasts[1:]])
    assert rows["peb-longitudinal"]["status"] == "skipped" and rows["peb"]["status"] == "run"
    assert rows["peb-longitudinal"]["reason"].startswith(
        "peb.contrasts[improvement-with-less-fear-modulation]: parameter 'B_vmPFC-to-insula' is not a second-level")
    assert list(runnable) == ["baseline"]


def test_family_naming_an_unknown_effect_is_refused(outputs, tmp_path):
    out, _ = outputs
    family = load_config().peb.families[0].model_copy(update={"effects": ["session:age"]})
    rows, _, _ = _prepare(out, tmp_path, families=[family])
    for model in ("peb", "peb-longitudinal"):
        assert rows[model]["status"] == "skipped"
        assert rows[model]["reason"].startswith("peb.families[top-down]: effect 'session:age' is not in the design")


def test_too_few_subjects_per_arm_and_rank_deficient_design_are_refused(outputs, tmp_path):
    out, _ = outputs
    rows, _, runnable = _prepare(out, tmp_path, min_subjects_per_arm=8)
    assert rows["peb"]["status"] == "skipped" and "peb.min_subjects_per_arm is 8" in rows["peb"]["reason"]
    assert "midazolam: 7" in rows["peb"]["reason"] and not runnable
    table = pd.read_csv(out / "features.tsv", sep="\t", dtype={"subject": str})
    table[OUTCOME] = 5.0  # the same clinical change for everyone: no clinical column
    rows, _, _ = _prepare(out, tmp_path, table=table)
    assert rows["peb"]["status"] == "skipped" and rows["peb"]["reason"].startswith("peb.baseline: ")
    assert "clinical.outcome 'caps5_total'" in rows["peb"]["reason"]


def test_report_section_and_methods(longitudinal, tmp_path):
    """The group report's PEB section from the stored outputs, and the methods text."""
    import shutil
    from collections import namedtuple

    from ketflow.reports.group_peb import peb_methods_text, peb_section

    res, _ = longitudinal
    report = tmp_path / "report"
    (report / "group" / "figures").mkdir(parents=True)
    for field, suffix in (("parameters_tsv", "parameters"), ("contrasts_tsv", "contrasts"),
                          ("families_tsv", "families"), ("models_tsv", "familymodels")):
        shutil.copy(getattr(res.outputs, field), report / "group" / f"model-pebLongitudinal_{suffix}.tsv")
    shutil.copy(res.outputs.summary_json, report / "group" / "model-pebLongitudinal_summary.json")
    shutil.copy(res.outputs.figure, report / "group" / "figures" / "model-pebLongitudinal_desc-parameters_figure.svg")
    Row = namedtuple("Row", "label status reason")
    text = "\n".join(peb_section(report, Row("pebLongitudinal", "run", "")))
    for expected in ("both sessions (longitudinal)", "improvement-with-less-fear-modulation", "top-down",
                     "Every parameter × effect", "session:arm:clinical", "desc-parameters_figure.svg"):
        assert expected in text, expected
    skipped = "\n".join(peb_section(report, Row("peb", "skipped", "peb.min_subjects_per_arm is 3")))
    assert "Not fitted: peb.min_subjects_per_arm is 3" in skipped
    methods = peb_methods_text(load_config())
    assert "PEB of PEBs" in methods and "*top-down*" in methods and "session × arm" in methods
