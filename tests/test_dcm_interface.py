"""DCM inputs from BIDS events and the FitDCM Nipype interface."""

import json

import numpy as np
import pandas as pd
import pytest

from ketflow.dcm import simulate_bold
from ketflow.dcm.inputs import inputs_from_events
from ketflow.interfaces.dcm import FitDCM

TR, N_SCANS = 2.0, 200


def _events():
    rows = [(on + 0.5, 20.0, "fear" if k % 2 == 0 else "neutral") for k, on in enumerate(range(10, 390, 40))]
    rows.append((5.0, 0.0, "button"))
    return pd.DataFrame(rows, columns=["onset", "duration", "trial_type"])


def test_inputs_from_events_grid_groups_and_shift():
    U, dt = inputs_from_events(_events(), {"faces": ["fear", "neutral"], "fear": "fear", "press": ["button"]},
                               TR, N_SCANS, start_time=0.5)
    assert dt == TR / 16 and U.shape == (N_SCANS * 16, 3)
    assert U[:, 0].sum() * dt == pytest.approx(200.0)  # ten 20 s blocks
    assert U[:, 1].sum() * dt == pytest.approx(100.0)
    assert np.all(U[:, 1] <= U[:, 0])  # fear blocks are faces blocks
    assert U[int(10 / dt), 0] == 1.0 and U[int(10 / dt) - 1, 0] == 0.0  # onset 10.5 s shifted by 0.5 s
    press = np.flatnonzero(U[:, 2])
    assert press.size == 1 and U[press[0], 2] == pytest.approx(1 / dt)  # unit-area stick
    assert press[0] == round(4.5 / dt)
    with pytest.raises(ValueError, match="do not occur"):
        inputs_from_events(_events(), {"x": ["missing"]}, TR, N_SCANS)


def test_fit_dcm_interface_writes_outputs(tmp_path, monkeypatch):
    events = _events()
    inputs = {"faces": ["fear", "neutral"], "fear": ["fear"]}
    U, dt = inputs_from_events(events, inputs, TR, N_SCANS, start_time=0.5)
    A = np.array([[0.0, 0.4], [-0.3, 0.0]])
    B = np.zeros((2, 2, 2))
    B[1, 0, 1] = 0.5
    C = np.array([[0.0, 0.0], [1.0, 0.0]])
    y = simulate_bold(A, B, C, U, dt, TR, N_SCANS, delays=[0.0, 0.0])
    y = y + np.random.default_rng(0).standard_normal(y.shape) * y.std(axis=0) / 3
    events.to_csv(tmp_path / "events.tsv", sep="\t", index=False)
    pd.DataFrame(y, columns=["vmPFC", "amygdala"]).to_csv(tmp_path / "ts.tsv", sep="\t", index=False)
    confounds = pd.DataFrame({"trans_x": np.r_[np.nan, np.random.default_rng(1).standard_normal(N_SCANS - 1)]})
    confounds.to_csv(tmp_path / "conf.tsv", sep="\t", index=False, na_rep="n/a")
    model = {"regions": ["vmPFC", "amygdala"], "inputs": inputs, "a": [[1, 1], [1, 1]],
             "b": (B != 0).astype(int).tolist(), "c": (C != 0).astype(int).tolist(),
             "model_space": {"no_modulation": {"b": np.zeros((2, 2, 2)).tolist()}}}
    monkeypatch.chdir(tmp_path)
    res = FitDCM(timeseries=str(tmp_path / "ts.tsv"), events=str(tmp_path / "events.tsv"), repetition_time=TR,
                 start_time=0.5, model=json.dumps(model), confounds=str(tmp_path / "conf.tsv")).run()
    out = res.outputs
    summary = json.loads((tmp_path / "dcm.json").read_text())
    assert summary["F"] == pytest.approx(out.free_energy)
    assert summary["region_names"] == ["vmPFC", "amygdala"] and summary["input_names"] == ["faces", "fear"]
    assert summary["Ep"]["B"][1][0][1] == pytest.approx(0.5, abs=0.15)
    assert summary["Pp"]["B"][1][0][1] > 0.95
    params = pd.read_csv(out.out_params, sep="\t")
    assert {"name", "posterior_mean", "posterior_sd", "ci90_low", "ci90_high", "Pp"} <= set(params.columns)
    assert (tmp_path / "dcm.svg").read_text().lstrip().startswith("<?xml")
    space = pd.read_csv(out.out_model_space, sep="\t")
    assert list(space["model"]) == ["full", "no_modulation"]
    assert space["posterior_probability"].iloc[0] > 0.99
