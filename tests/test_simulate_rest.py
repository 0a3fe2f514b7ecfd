"""The simulator's resting-state model: subject-level couplings and rest-only datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ketflow.simulate import simulate_dataset
from ketflow.simulate.grid import roi_names
from ketflow.simulate.parameters import REST_STRONGEST_PAIR, REST_TRAIT_DOF, draw_subject

NAMES = roi_names()


def _couplings(n_subjects: int = 400):
    out = {"pre": [], "post": [], "change": [], "arm": []}
    for i in range(n_subjects):
        arm = ("ketamine", "midazolam")[i % 2]
        params = draw_subject(np.random.default_rng([9, i]), arm, NAMES, rest_rng=np.random.default_rng([9, 3, i]))
        for ses in ("pre", "post"):
            out[ses].append(np.asarray(params["sessions"][ses]["rest"]["coupling"]))
        out["change"].append(params["change"]["rest_vmPFC_amygdala_coupling"])
        out["arm"].append(arm)
    return {k: np.asarray(v) for k, v in out.items()}


def test_every_edge_varies_across_subjects_by_a_realistic_amount():
    c = _couplings()
    iu = np.triu_indices(len(NAMES), 1)
    pre = c["pre"][:, iu[0], iu[1]]
    sd_z = np.arctanh(pre).std(axis=0)
    # Wishart trait: SD of Fisher z about 1/sqrt(dof - 3) for every edge
    assert np.allclose(sd_z, 1 / np.sqrt(REST_TRAIT_DOF - 3), rtol=0.25), sd_z
    for matrix in c["pre"][:20]:
        assert np.allclose(matrix, matrix.T) and np.allclose(np.diag(matrix), 1.0)
        assert np.linalg.eigvalsh(matrix).min() > 0
        off = matrix - 2 * np.eye(len(NAMES))
        i, j = np.unravel_index(np.argmax(off), off.shape)
        assert {NAMES[i], NAMES[j]} == set(REST_STRONGEST_PAIR)


def test_treatment_changes_only_vmpfc_amygdala():
    c = _couplings(60)
    v, left, right = NAMES.index("vmPFC"), NAMES.index("amygdala_L"), NAMES.index("amygdala_R")
    delta = c["post"] - c["pre"]
    assert np.allclose(delta[:, v, left], c["change"]) and np.allclose(delta[:, v, right], c["change"])
    others = np.ones(delta.shape[1:], bool)
    others[[v, v, left, right], [left, right, v, v]] = False
    unshrunk = np.abs(delta[:, others]).max(axis=1) < 1e-12
    assert unshrunk.mean() > 0.9  # a matrix is shrunk only if the change breaks definiteness
    ketamine = c["arm"] == "ketamine"
    assert c["change"][ketamine].mean() == pytest.approx(0.20, abs=0.05)
    assert c["change"][~ketamine].mean() == pytest.approx(0.0, abs=0.05)


def test_rest_only_dataset_equals_the_rest_runs_of_the_full_dataset(tmp_path):
    """Rest runs do not depend on which other tasks are simulated (conflict stands for them:
    faces would only make the test slower)."""
    args = {"n_subjects": 2, "seed": 2, "voxel_size": 8.0, "n_volumes": {"conflict": 30, "rest": 30}}
    full = simulate_dataset(tmp_path / "full", tasks=["conflict", "rest"], **args)
    rest = simulate_dataset(tmp_path / "rest", tasks=["rest"], **args)
    files = sorted(p.relative_to(rest) for p in rest.rglob("*task-rest*") if p.is_file())
    assert len(files) == 2 * 2 * 9  # subjects x sessions x (raw BOLD + JSON, 6 derivatives, truth)
    assert list(full.rglob("*task-conflict*")) and not list(rest.rglob("*task-conflict*"))
    for name in files:
        assert (full / name).read_bytes() == (rest / name).read_bytes(), name
    truth_full, truth_rest = (json.loads((d / "ground_truth.json").read_text()) for d in (full, rest))
    assert truth_rest["arguments"]["tasks"] == ["rest"]
    for sub, subject in truth_rest["subjects"].items():
        assert set(subject["sessions"]["pre"]) == {"rest"}
        assert set(truth_full["subjects"][sub]["sessions"]["pre"]) == {"conflict", "rest"}
        assert subject["sessions"]["pre"]["rest"] == truth_full["subjects"][sub]["sessions"]["pre"]["rest"]
        assert subject["change"] == truth_full["subjects"][sub]["change"]
