"""Two independent participant-level runs (own work and output directories) on the same inputs
give byte-identical TSV/JSON (and HTML) outputs and NIfTI images with identical data."""

from __future__ import annotations

from conftest import TINY_CONFIG, run_cli
from outputs import output_files, tree_differences

#: One subject and session, a task run (GLM, gPPI, DCM) and a rest run (connectivity, seed maps).
SELECTION = ("--participant-label", "01", "--session-label", "pre", "--task", "faces", "rest")


def test_two_runs_give_identical_outputs(tiny_bids, tmp_path):
    outs = []
    for name in ("first", "second"):
        out = tmp_path / name / "out"
        proc = run_cli(tiny_bids, out, "participant", "-w", tmp_path / name / "work", "--skip-bids-validation",
                       "--config", TINY_CONFIG, "--nprocs", "2", *SELECTION)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        outs.append(out)
    files = output_files(outs[0])
    for kind in ("_dcm.json", "_bold.tsv", "_outliers.tsv", "_motion.tsv", "_relmat.tsv", "_statmap.nii.gz",
                 "_boldmap.nii.gz"):
        assert any(f.endswith(kind) for f in files), kind  # every kind of output is compared
    assert tree_differences(*outs) == []
