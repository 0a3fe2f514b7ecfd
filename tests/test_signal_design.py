"""Task design matrices: regressors, derived conditions, validation, contrasts."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from nilearn.glm.first_level import make_first_level_design_matrix

from ketflow.signal.design import (
    assign_columns,
    contrast_vector,
    contrast_weights,
    make_task_design,
    validate_events,
)

REF = Path(__file__).resolve().parent / "data" / "spm" / "spm_ppi" / "ppi_amygdala_fear"

TR = 2.0
N = 120


def faces_events():
    types = ["fearful", "neutral", "shapes"] * 4
    return pd.DataFrame(
        {"onset": 10.0 + 18.0 * np.arange(12), "duration": 12.0, "trial_type": types}
    )


def conflict_events():
    seq = list("cciicicciiic")  # c: congruent, i: incongruent
    types = ["congruent" if s == "c" else "incongruent" for s in seq]
    return pd.DataFrame({"onset": 4.0 + 8.0 * np.arange(len(seq)), "duration": 0.0, "trial_type": types})


def test_block_regressor_plateau_and_nilearn_agreement():
    design = make_task_design(faces_events(), TR, N, ["fearful", "neutral", "shapes"], high_pass=None)
    assert design.columns == ["fearful", "neutral", "shapes"]
    assert list(design.matrix.columns) == ["fearful", "neutral", "shapes", "constant"]
    # a unit-sum HRF with an undershoot overshoots 1 on 12 s blocks ...
    assert 1.0 < design.matrix["fearful"].max() < 1.3
    # ... and settles at the block height on long blocks
    long = pd.DataFrame({"onset": [10.0], "duration": [100.0], "trial_type": ["fearful"]})
    plateau = make_task_design(long, TR, N, ["fearful"], high_pass=None).matrix["fearful"]
    assert plateau.loc[100.0] == pytest.approx(1.0, abs=1e-3)
    nl = make_first_level_design_matrix(
        np.arange(N) * TR, faces_events(), hrf_model="spm", drift_model=None
    )
    for cond in design.columns:
        assert np.corrcoef(nl[cond], design.matrix[cond])[0, 1] > 0.99


@pytest.mark.parametrize("start_time", [0.0, 1.0])
def test_event_timing_matches_nilearn_frame_times(start_time):
    ev = conflict_events().assign(trial_type="congruent", duration=1.0)
    frame_times = start_time + TR * np.arange(N)
    ours = make_task_design(ev, TR, N, ["congruent"], start_time=start_time, high_pass=None).matrix["congruent"]
    nl = make_first_level_design_matrix(frame_times, ev, hrf_model="spm", drift_model=None)["congruent"]
    lags = range(-2, 3)
    xcorr = [np.corrcoef(np.roll(ours.to_numpy(), lag), nl.to_numpy())[0, 1] for lag in lags]
    assert int(np.argmax(xcorr)) == 2 and xcorr[2] > 0.99


def test_stick_events_have_unit_area_and_derivative_columns():
    design = make_task_design(conflict_events(), TR, N, ["congruent", "incongruent"], derivative=True)
    dt = TR / 16
    np.testing.assert_allclose(design.microtime.sum(axis=0) * dt, [6, 6])
    assert "congruent_derivative" in design.matrix
    assert abs(design.matrix["congruent"] @ design.matrix["congruent_derivative"]) < 0.2 * (
        design.matrix["congruent"] @ design.matrix["congruent"]
    )


def test_start_time_equals_shifting_events():
    ev = faces_events()
    shifted = ev.assign(onset=ev["onset"] - 1.0)
    a = make_task_design(ev, TR, N, ["fearful"], start_time=1.0, high_pass=None)
    b = make_task_design(shifted, TR, N, ["fearful"], start_time=0.0, high_pass=None)
    np.testing.assert_allclose(a.matrix["fearful"].to_numpy(), b.matrix["fearful"].to_numpy(), atol=1e-12)
    np.testing.assert_allclose(a.matrix.index, 1.0 + TR * np.arange(N))
    assert a.microtime_onset == 9 and b.microtime_onset == 1


def test_history_derived_conditions_etkin():
    derived = [
        {"name": "iI", "trial_type": "incongruent", "previous": "incongruent"},
        {"name": "cI", "trial_type": "incongruent", "previous": "congruent"},
    ]
    ev = assign_columns(validate_events(conflict_events(), N, TR), ["congruent", "incongruent"], derived)
    # sequence c c i i c i c c i i i c: iI at 3, 9, 10; cI at 2, 5, 8
    assert ev["column"].tolist() == [
        "congruent", "congruent", "cI", "iI", "congruent", "cI",
        "congruent", "congruent", "cI", "iI", "iI", "congruent",
    ]
    design = make_task_design(conflict_events(), TR, N, ["congruent", "incongruent"], derived)
    assert design.columns == ["congruent", "iI", "cI"]
    vec = contrast_vector({"incongruent": 1, "congruent": -1}, design)
    cols = list(design.matrix.columns)
    assert vec[cols.index("iI")] == pytest.approx(0.5) and vec[cols.index("cI")] == pytest.approx(0.5)
    assert vec[cols.index("congruent")] == -1
    vec = contrast_vector("iI - cI", design)
    assert vec[cols.index("iI")] == 1 and vec[cols.index("cI")] == -1


def test_first_trial_goes_to_remainder_column():
    ev = conflict_events()
    ev.loc[0, "trial_type"] = "incongruent"  # first trial has no previous trial
    derived = [{"name": "iI", "trial_type": "incongruent", "previous": "incongruent"}]
    design = make_task_design(ev, TR, N, ["congruent", "incongruent"], derived)
    assert set(design.columns) == {"congruent", "incongruent_other", "iI"}
    assert sum(design.members["incongruent"].values()) == pytest.approx(1.0)


def test_merged_condition_and_unestimable_parts():
    merged = [{"name": "faces", "trial_type": ["fearful", "neutral"]}]
    design = make_task_design(faces_events(), TR, N, ["fearful", "neutral", "shapes"], merged)
    assert design.columns == ["shapes", "faces"]
    assert design.n_events == {"shapes": 4, "faces": 8}
    vec = contrast_vector("faces - shapes", design)
    assert vec[list(design.matrix.columns).index("faces")] == 1
    with pytest.raises(ValueError, match="not estimable.*merged"):
        contrast_vector({"fearful": 1}, design)


def test_drifts_confounds_and_spm_reference():
    conf = pd.DataFrame({"trans_x": np.linspace(0, 1, N), "csf": np.sin(np.arange(N))})
    design = make_task_design(faces_events(), TR, N, ["fearful"], confounds=conf, high_pass=128)
    cosines = [c for c in design.matrix if c.startswith("drift_cosine")]
    assert len(cosines) == int(np.floor(2 * N * TR / 128))
    assert list(design.matrix.columns[-1:]) == ["constant"]
    np.testing.assert_array_equal(design.matrix["csf"], conf["csf"])
    # SPM's 128 s DCT set for 200 scans of 2 s
    x0 = pd.read_csv(REF / "X0.csv").to_numpy()
    d200 = make_task_design(faces_events(), 2.0, 200, ["fearful"], high_pass=128)
    got = d200.matrix[[c for c in d200.matrix if c.startswith("drift_cosine")]].to_numpy()
    np.testing.assert_allclose(got, x0[:, 1:], atol=1e-12)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda e: e.drop(columns="duration"), "lacks required column"),
        (lambda e: e.assign(duration=-1.0), "negative durations"),
        (lambda e: e.assign(onset=e["onset"] + 1000), "after the end of the run"),
        (lambda e: e.assign(onset="x"), "non-numeric"),
    ],
)
def test_event_validation(mutate, message):
    with pytest.raises(ValueError, match=message):
        make_task_design(mutate(faces_events()), TR, N, ["fearful"])


def test_other_errors():
    with pytest.raises(ValueError, match="start_time"):
        make_task_design(faces_events(), TR, N, ["fearful"], start_time=2.5)
    with pytest.raises(ValueError, match="confounds have 3 rows"):
        make_task_design(faces_events(), TR, N, ["fearful"], confounds=pd.DataFrame({"a": [1, 2, 3]}))
    with pytest.raises(ValueError, match="not in conditions"):
        make_task_design(faces_events(), TR, N, ["fearful"], [{"name": "x", "trial_type": "angry"}])


def test_contrast_parsing():
    conds = ["fearful", "neutral", "shapes"]
    assert contrast_weights("fearful + neutral - 2*shapes", conds) == {
        "fearful": 1.0, "neutral": 1.0, "shapes": -2.0
    }
    assert contrast_weights({"fearful": 1, "neutral": 0}, conds) == {"fearful": 1.0}
    with pytest.raises(ValueError, match=r"unknown conditions \['angry'\]"):
        contrast_weights("fearful - angry", conds)
    with pytest.raises(ValueError, match=r"unknown conditions \['happy'\]"):
        contrast_weights({"happy": 1}, conds)
    with pytest.raises(ValueError, match="no non-zero"):
        contrast_weights({"fearful": 0}, conds)
