"""Group-level DCM plumbing: runs combined by BPA in the feature collection, model comparison node."""

import json

import numpy as np
import pandas as pd
import pytest

from ketflow.config import load_config
from ketflow.dcm.average import bayesian_parameter_average
from ketflow.dcm.priors import dcm_fmri_priors
from ketflow.interfaces.peb import CompareDCMModels
from ketflow.io.collect import collect_measures


def _record(rng, scale):
    a, b, c = np.ones((2, 2)), np.zeros((2, 2, 2)), np.array([[0, 0], [1, 0]])
    b[1, 0, 1] = 1
    pE, pV, layout = dcm_fmri_priors(a, b, c)
    free = pV > 0
    qE = pE + free * rng.normal(0.3, 0.1, pE.size)
    qC = np.diag(pV * scale)
    return {"param_names": layout.names(), "region_names": ["vmPFC", "amygdala_L"],
            "input_names": ["faces", "fearful"], "Ep_vector": qE.tolist(), "Cp": qC.tolist(),
            "prior_mean": pE.tolist(), "prior_cov": np.diag(pV).tolist(),
            "Ep": {k: np.asarray(v).tolist() for k, v in layout.unpack(qE).items()}}


def test_collected_dcm_measures_combine_runs_by_bayesian_parameter_averaging(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "sub-01" / "ses-pre" / "func"
    folder.mkdir(parents=True)
    runs = [_record(rng, 0.05), _record(rng, 0.5)]  # the second run is much less certain
    for k, record in enumerate(runs, 1):
        (folder / f"sub-01_ses-pre_task-faces_run-{k}_atlas-circuit_dcm.json").write_text(json.dumps(record))
    (folder / "sub-01_ses-pre_task-faces_run-1_atlas-circuit_desc-parameters_dcm.json").write_text("{}")
    config = load_config()
    for measure in ("activation", "ppi", "connectivity"):
        setattr(config.measures, measure, False)
    table = collect_measures(tmp_path, config).set_index("measure")
    E, _ = bayesian_parameter_average([r["Ep_vector"] for r in runs], [r["Cp"] for r in runs],
                                      runs[0]["prior_mean"], runs[0]["prior_cov"])
    names = runs[0]["param_names"]
    b = table.loc["dcm_faces_B_amygdala_L-to-vmPFC_fearful"]
    assert b["value"] == pytest.approx(E[names.index("B_to1_from2_in2")], rel=1e-12) and b["n_runs"] == 2
    assert table.loc["dcm_faces_C_faces-to-amygdala_L", "value"] == pytest.approx(E[names.index("C_to2_in1")])
    plain = np.mean([r["Ep_vector"][names.index("B_to1_from2_in2")] for r in runs])
    first = runs[0]["Ep_vector"][names.index("B_to1_from2_in2")]
    assert abs(b["value"] - first) < abs(plain - first)  # precision-weighted, not a plain average
    assert len(table) == 4 + 1 + 1  # A (all), B and C switched on; nothing from the desc- file


def _model_space(folder, stem, F):
    table = pd.DataFrame({"model": ["full", "no-b", "no-a"], "F": F, "dF": np.asarray(F) - F[0],
                          "posterior_probability": np.nan})
    table.to_csv(folder / f"{stem}_atlas-circuit_desc-modelspace_dcm.tsv", sep="\t", index=False)


def test_compare_dcm_models_interface(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    subjects = [f"{i:02d}" for i in range(1, 9)]
    for i, sub in enumerate(subjects):
        for ses in ("pre", "post"):
            folder = tmp_path / f"sub-{sub}" / f"ses-{ses}" / "func"
            folder.mkdir(parents=True)
            if sub == "08" and ses == "post":
                continue  # no DCM at follow-up
            best = 0 if ses == "pre" or i < 2 else 1  # at follow-up most subjects prefer "no-b"
            F = -100 - rng.uniform(3, 8, 3)
            F[best] = -100.0
            runs = ("run-1", "run-2") if i == 0 else ("run-1",)
            for run in runs:
                _model_space(folder, f"sub-{sub}_ses-{ses}_task-faces_{run}", F / len(runs))
    pd.DataFrame({"subject": subjects}).to_csv(tmp_path / "features.tsv", sep="\t", index=False)
    monkeypatch.chdir(tmp_path)
    res = CompareDCMModels(out_dir=str(tmp_path), features_tsv=str(tmp_path / "features.tsv"), task="faces",
                           sessions=["pre", "post"]).run()
    table = pd.read_csv(res.outputs.comparison_tsv, sep="\t").set_index(["session", "model"])
    assert table.loc[("pre", "full"), "n_best"] == 8 and table.loc[("pre", "full"), "rfx_exceedance"] > 0.95
    post = table.loc["post"]
    assert post["rfx_protected_exceedance"].idxmax() == "no-b" and post.loc["no-b", "n_best"] == 5
    assert (post["n_subjects"] == 7).all()
    assert table.loc[("pre", "full"), "F_sum"] == pytest.approx(-800.0)  # runs of a subject summed
    summary = json.loads((tmp_path / "model_comparison.json").read_text())
    assert summary["sessions"]["post"]["subjects_without_model_space"] == ["08"]
    with pytest.raises(ValueError, match="at least 2 subjects"):
        CompareDCMModels(out_dir=str(tmp_path), features_tsv=str(tmp_path / "features.tsv"), task="conflict",
                         sessions=["pre"]).run()
