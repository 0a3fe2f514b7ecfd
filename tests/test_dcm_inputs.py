"""DCM inputs on the micro-time grid from BIDS events."""

import numpy as np
import pandas as pd
import pytest

from ketflow.dcm.inputs import inputs_from_events

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
