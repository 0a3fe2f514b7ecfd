"""The rearrangements nilearn's ``permuted_ols`` draws, so ketflow's permutation engine can be fed the same ones.

With ``n_jobs=1``, ``permuted_ols`` seeds one generator from ``random_state`` and, per
permutation, either multiplies the data by fresh random signs (cumulatively: the flips compound)
or reorders the design rows by a fresh permutation of the current order (cumulatively too).
"""

from __future__ import annotations

import numpy as np
from sklearn.utils import check_random_state

from ketflow.group.permutation import Rearrangements


def nilearn_rearrangements(n_subjects: int, n_perm: int, random_state: int, signflip: bool) -> Rearrangements:
    """The rows nilearn 0.14's ``permuted_ols(..., n_jobs=1, random_state=random_state)`` uses."""
    rng = check_random_state(random_state)
    chunk = check_random_state(rng.randint(1, np.iinfo(np.int32).max - 1))
    current = np.ones(n_subjects, dtype=np.int8) if signflip else np.arange(n_subjects)
    rows = []
    for _ in range(n_perm):
        if signflip:
            current = current * (chunk.randint(2, size=(n_subjects, 1)) * 2 - 1)[:, 0].astype(np.int8)
        else:
            current = current[chunk.permutation(n_subjects)]
        rows.append(current.copy())
    return Rearrangements("signflip" if signflip else "permutation", np.array(rows), False)
