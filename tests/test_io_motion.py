"""XCP-D-compatible motion outputs: the outlier flags and the motion table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ketflow.io.confounds import censoring
from ketflow.io.motion import MOTION_PARAMETERS, motion_sidecar, motion_table, outliers_sidecar, outliers_table


def test_outlier_flags_follow_the_censoring():
    fd = np.array([0.0, 0.1, 0.9, 0.1, 0.1, 0.2, 0.7, 0.1, 0.1, 0.1, 0.1, 0.1])
    dummy = np.zeros(12, bool)
    dummy[0] = True
    keep, motion = censoring(fd, dummy, fd_threshold=0.5, min_segment=3)
    table = outliers_table(fd, 0.5, motion, dummy)
    assert table["framewise_displacement"].tolist() == [0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0]  # XCP-D's 0/1 flag
    # volumes 3-5 form a 3-volume segment (kept); nothing else is censored but the FD outliers
    assert table["motion_outlier"].tolist() == motion.astype(int).tolist()
    retained = (table["motion_outlier"] == 0) & (table["dummy_scan"] == 0)
    assert retained.tolist() == keep.tolist()
    assert outliers_table(fd, None, np.zeros(12, bool), dummy)["framewise_displacement"].sum() == 0
    with pytest.raises(ValueError, match="differ in length"):
        outliers_table(fd, 0.5, motion[:-1], dummy)
    assert set(outliers_sidecar(0.5, 5)) >= set(table.columns) and outliers_sidecar(0.5, 5)[
        "framewise_displacement"]["Threshold"] == 0.5


def test_motion_table_has_xcpd_columns_and_fd_in_mm():
    rng = np.random.default_rng(0)
    confounds = pd.DataFrame(rng.normal(size=(5, 8)), columns=[*MOTION_PARAMETERS, "csf", "white_matter"])
    fd = np.array([0.0, 0.2, 0.3, 0.1, 0.4])
    table = motion_table(confounds, fd)
    assert table.columns.tolist() == [*MOTION_PARAMETERS, "framewise_displacement"]
    assert np.allclose(table["framewise_displacement"], fd) and np.allclose(table["rot_z"], confounds["rot_z"])
    assert motion_sidecar()["framewise_displacement"]["Units"] == "mm"
    with pytest.raises(ValueError, match=r"conf.tsv: no motion parameter column\(s\) \['rot_z'\]"):
        motion_table(confounds.drop(columns="rot_z"), fd, "conf.tsv")
