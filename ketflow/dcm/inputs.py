"""DCM inputs U on the micro-time grid from a BIDS events table.

Each DCM input is a group of trial types (e.g. ``faces = [fear, neutral]``,
``fear = [fear]``); groups may overlap. Events are shifted by ``start_time``
(the slice-timing reference of the first scan, BIDS ``StartTime`` or
fMRIPrep's slice-time reference) so that time 0 of U is the first scan's
acquisition reference; the micro-time grid has ``dt = TR / 16`` as in SPM12.
Boxcars have height 1 and zero-duration events are sticks of unit area
(height ``1/dt``), SPM's convention (``spm_get_ons``), via
:func:`ketflow.signal.design.microtime_regressors`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ketflow.signal.design import microtime_regressors, validate_events

__all__ = ["inputs_from_events"]


def inputs_from_events(
    events: pd.DataFrame,
    inputs: Mapping[str, Sequence[str]],
    TR: float,
    n_scans: int,
    start_time: float = 0.0,
    microtime_resolution: int = 16,
):
    """Build the DCM input matrix.

    Parameters
    ----------
    events : DataFrame
        BIDS events (``onset``, ``duration`` in s from the start of the first
        scan, ``trial_type``); ``modulation`` is ignored (DCM inputs are 0/1).
    inputs : mapping
        Input name -> trial types it contains (a string is one trial type).
    TR : float
        Repetition time (s).
    n_scans : int
    start_time : float
        Acquisition reference time of the first scan (s); subtracted from onsets.
    microtime_resolution : int
        Micro-time bins per scan.

    Returns
    -------
    U : array (n_scans * microtime_resolution, n_inputs)
    dt : float
        Micro-time step (s).
    """
    events = validate_events(events, n_scans, TR)
    events = events.assign(modulation=1.0)
    onset = events["onset"] - start_time
    end = onset + events["duration"]
    # events starting before the reference are cut at time 0 (sticks kept at 0)
    events = events.assign(onset=onset.clip(lower=0.0), duration=np.where(events["duration"] > 0,
                                                                          (end - onset.clip(lower=0.0)).clip(lower=0.0),
                                                                          0.0))
    names = list(inputs)
    known = set(events["trial_type"])
    columns = []
    for name in names:
        types = [inputs[name]] if isinstance(inputs[name], str) else list(inputs[name])
        missing = sorted(set(types) - known)
        if missing:
            raise ValueError(f"DCM input {name!r}: trial types {missing} do not occur in the events")
        columns.append(events[events["trial_type"].isin(types)].assign(column=name))
    U = np.column_stack(
        [microtime_regressors(ev, [name], n_scans, TR, microtime_resolution)[:, 0] for name, ev in zip(names, columns)]
    )
    return U, TR / microtime_resolution
