"""Shared fixtures: tiny simulated datasets and a runner for the real command line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from threadpoolctl import threadpool_limits

os.environ.setdefault("NIPYPE_NO_ET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# one BLAS thread per test process: pytest-xdist's workers already use every core
threadpool_limits(1)

TESTS = Path(__file__).resolve().parent
TINY_CONFIG = TESTS / "data" / "tiny_config.yml"


def run_cli(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m ketflow ARGS`` as a user would; returns the completed process."""
    env = dict(os.environ, NIPYPE_NO_ET="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "ketflow", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


def simulate_tiny(path: Path, n_subjects: int = 2, seed: int = 3, n_volumes: int = 80) -> Path:
    from ketflow.simulate import simulate_dataset

    return simulate_dataset(path, n_subjects=n_subjects, seed=seed, voxel_size=6.0, n_volumes=n_volumes)


@pytest.fixture(scope="session")
def tiny_bids(tmp_path_factory) -> Path:
    """A 2-subject simulated dataset (6 mm voxels, 80 volumes per run); do not modify."""
    return simulate_tiny(tmp_path_factory.mktemp("tiny") / "bids")


@pytest.fixture
def tiny_bids_copy(tiny_bids, tmp_path) -> Path:
    """A private copy of the tiny dataset that a test may damage."""
    return Path(shutil.copytree(tiny_bids, tmp_path / "bids"))


@pytest.fixture(scope="session")
def tiny_run(tiny_bids, tmp_path_factory):
    """The participant level run once on the tiny dataset: (process, output dir, work dir)."""
    root = tmp_path_factory.mktemp("tiny_run")
    out, work = root / "out", root / "work"
    proc = run_cli(tiny_bids, out, "participant", "-w", work, "--nprocs", "2", "--config", TINY_CONFIG,
                   "--skip-bids-validation")
    return proc, out, work
