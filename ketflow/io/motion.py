"""XCP-D-compatible motion outputs of a run: ``_outliers.tsv`` and ``_motion.tsv``.

XCP-D (Mehta et al. 2024, Imaging Neuroscience 2:1-26) writes, per run, an outlier table whose
``framewise_displacement`` column is a 0/1 flag (1 = high-motion volume, framewise
displacement above the threshold) and a motion table with the six rigid-body parameters and
the framewise displacement in mm (Power et al. 2012).  ketflow writes the same two tables, one
row per acquired volume (the rows of fMRIPrep's confounds), with two more flag columns:
``motion_outlier`` (every volume removed by motion censoring: FD or DVARS above threshold, or
left in a segment shorter than ``denoising.min_contiguous``) and ``dummy_scan`` (non-steady-state
volumes).  A volume is retained exactly when both are 0.

Neither suffix is read by pybids as regressors (``bids.variables.io`` loads ``*_timeseries.tsv``
and ``*_regressors.tsv`` only), so the FD values in mm never collide with fMRIPrep's
``framewise_displacement`` confound in a model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: fMRIPrep's six rigid-body parameters (mm, rad), the first columns of ``_motion.tsv``.
MOTION_PARAMETERS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")


def outliers_table(framewise_displacement: np.ndarray, fd_threshold: float | None, motion_censored: np.ndarray,
                   dummy: np.ndarray) -> pd.DataFrame:
    """The ``_outliers.tsv`` table, (T, 3) integer flags.

    framewise_displacement : (T,) mm; fd_threshold : mm or None (no FD flags);
    motion_censored, dummy : bool (T,) from :func:`ketflow.io.confounds.censoring`.
    """
    fd = np.nan_to_num(np.asarray(framewise_displacement, dtype=float))
    lengths = {len(fd), len(motion_censored), len(dummy)}
    if len(lengths) != 1:
        raise ValueError(f"FD, motion-censoring and dummy-scan series differ in length: {sorted(lengths)}")
    high_motion = fd > fd_threshold if fd_threshold is not None else np.zeros(len(fd), bool)
    return pd.DataFrame({"framewise_displacement": high_motion.astype(int),
                         "motion_outlier": np.asarray(motion_censored, bool).astype(int),
                         "dummy_scan": np.asarray(dummy, bool).astype(int)})


def outliers_sidecar(fd_threshold: float | None, min_contiguous: int) -> dict:
    """Column descriptions of :func:`outliers_table` (the BIDS data dictionary)."""
    return {
        "framewise_displacement": {
            "Description": "high-motion outlier: 1 if framewise displacement exceeds the threshold, else 0 "
                           "(XCP-D's outlier column)",
            "Threshold": fd_threshold, "Units": "n/a"},
        "motion_outlier": {
            "Description": "1 if the volume was removed by motion censoring: framewise displacement or DVARS above "
                           f"threshold, or left in a segment of fewer than {min_contiguous} retained volumes",
            "Units": "n/a"},
        "dummy_scan": {"Description": "1 for a non-steady-state volume (dummy scan), removed", "Units": "n/a"},
        "Rows": "one per acquired volume (the rows of fMRIPrep's confounds); a volume is retained when "
                "motion_outlier and dummy_scan are both 0",
    }


def motion_table(confounds: pd.DataFrame, framewise_displacement: np.ndarray, source: str = "") -> pd.DataFrame:
    """The ``_motion.tsv`` table: the six rigid-body parameters of fMRIPrep's ``confounds`` table
    (T rows) and ``framewise_displacement`` (T,) in mm, as censoring used it."""
    missing = [c for c in MOTION_PARAMETERS if c not in confounds.columns]
    if missing:
        raise ValueError(f"{source or 'confounds'}: no motion parameter column(s) {missing}")
    if len(confounds) != len(framewise_displacement):
        raise ValueError(f"{source or 'confounds'}: {len(confounds)} rows but {len(framewise_displacement)} FD values")
    table = confounds.loc[:, list(MOTION_PARAMETERS)].reset_index(drop=True).astype(float)
    table["framewise_displacement"] = np.asarray(framewise_displacement, dtype=float)
    return table


def motion_sidecar() -> dict:
    """Column descriptions of :func:`motion_table`."""
    fields = {c: {"Description": f"rigid-body {'translation' if c.startswith('trans') else 'rotation'} "
                                 f"along/about {c[-1]} (fMRIPrep)", "Units": "mm" if c.startswith("trans") else "rad"}
              for c in MOTION_PARAMETERS}
    fields["framewise_displacement"] = {
        "Description": "framewise displacement (Power et al. 2012; fMRIPrep's), 0 for the first volume", "Units": "mm"}
    return fields
