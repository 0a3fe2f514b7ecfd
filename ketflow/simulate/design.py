"""Task designs of the simulated runs: emotional face matching blocks and face-word Stroop trials.

faces: blocked emotional face matching (Hariri et al. 2002, NeuroImage 17:317-323): 20 s blocks of
shapes alternating with face blocks, fearful and neutral in turn (random first type).
conflict: event-related emotional face-word Stroop (Etkin et al. 2006, Neuron 51:871-882):
congruent and incongruent trials in random order, one every 3-4 s, so that both
incongruent-after-incongruent (iI) and incongruent-after-congruent (cI) sequences occur.
All onsets are in seconds from the start of the first volume (dummy volumes included).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FACES_BLOCK_S = 20.0
FACES_LEAD_IN_S = 8.0
CONFLICT_TRIAL_S = 1.0
CONFLICT_ITI_S = (3.0, 4.0)
CONFLICT_LEAD_IN_S = 6.0
TAIL_S = 10.0


def faces_events(n_scans: int, tr: float, rng: np.random.Generator) -> pd.DataFrame:
    """Block events (onset, duration, trial_type) filling the run: shapes, face, shapes, face ...

    Face blocks alternate between fearful and neutral, starting with either at random.
    """
    run_s = n_scans * tr
    n_blocks = int((run_s - FACES_LEAD_IN_S - TAIL_S) // FACES_BLOCK_S)
    if n_blocks < 3:
        raise ValueError(f"faces run of {run_s:g} s is too short for 3 blocks of {FACES_BLOCK_S:g} s")
    n_face = n_blocks // 2
    # fearful and neutral alternate (random first type) so that the fearful-vs-neutral
    # contrast has a period of 80 s and survives the usual 128 s high-pass filter
    first = int(rng.integers(2))
    face_types = [("fearful", "neutral")[(first + k) % 2] for k in range(n_face)]
    types, k = [], 0
    for i in range(n_blocks):
        if i % 2 == 0:
            types.append("shapes")
        else:
            types.append(str(face_types[k]))
            k += 1
    onsets = FACES_LEAD_IN_S + FACES_BLOCK_S * np.arange(n_blocks)
    return pd.DataFrame(
        {"onset": onsets, "duration": np.full(n_blocks, FACES_BLOCK_S), "trial_type": types}
    )


def conflict_events(n_scans: int, tr: float, rng: np.random.Generator) -> pd.DataFrame:
    """Stroop trial events (onset, duration, trial_type, response_time), balanced random order
    starting with a congruent trial.

    Response times (s) are log-normal around 0.75 s, 80 ms slower for incongruent trials and
    40 ms faster for iI than cI trials (the conflict-adaptation effect).
    """
    run_s = n_scans * tr
    onsets = [CONFLICT_LEAD_IN_S]
    while True:
        nxt = onsets[-1] + rng.uniform(*CONFLICT_ITI_S)
        if nxt + CONFLICT_TRIAL_S > run_s - TAIL_S:
            break
        onsets.append(nxt)
    n = len(onsets)
    types = rng.permutation(np.array(["congruent", "incongruent"] * ((n + 1) // 2))[:n])
    # the first trial is congruent so that every incongruent trial is either iI or cI
    first_con = int(np.flatnonzero(types == "congruent")[0])
    types[[0, first_con]] = types[[first_con, 0]]
    rt = 0.75 * np.exp(rng.normal(0.0, 0.12, n))
    inc = types == "incongruent"
    prev_inc = np.concatenate([[False], inc[:-1]])
    rt = rt + 0.08 * inc - 0.04 * (inc & prev_inc)
    return pd.DataFrame(
        {
            "onset": np.round(np.asarray(onsets), 3),
            "duration": np.full(n, CONFLICT_TRIAL_S),
            "trial_type": types.astype(str),
            "response_time": np.round(rt, 3),
        }
    )

