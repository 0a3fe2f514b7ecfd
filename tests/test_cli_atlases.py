"""Several atlases per run (``atlases`` / ``--atlases``, issue 15.3): found, checked before any
processing, measured beside the circuit and named ``atlas-<label>`` in every output.

Atlases of the tests: ``anat``, a BEP038 atlas dataset in MNI152NLin2009cAsym holding a copy of
the packaged circuit atlas (resampled onto each run's grid); ``halves``, a dseg + TSV pair on
the tiny dataset's own grid (left and right brain halves).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ketflow.cli.parser import build_parser
from ketflow.config import ConfigError, ExtraAtlas, Override, load_config, packaged_file, parse_atlas_option
from ketflow.io.atlases import atlas_grid_problems, resolve_atlas

from conftest import TINY_CONFIG, run_cli

SPACE = "MNI152NLin2009cAsym"


def bep038_dataset(folder: Path, label: str = "anat") -> Path:
    """A BEP038 atlas dataset holding the packaged circuit atlas under another label."""
    target = folder / f"atlas-{label}"
    target.mkdir(parents=True)
    for ext in (".nii.gz", ".tsv"):
        shutil.copy(packaged_file(f"rois/tpl-{SPACE}_atlas-circuit_dseg{ext}"),
                    target / f"tpl-{SPACE}_atlas-{label}_dseg{ext}")
    return folder


def halves_atlas(folder: Path, mask_file: Path) -> Path:
    """A dseg + TSV pair on the grid of ``mask_file``: left (x < 0) and right brain halves."""
    image = nib.load(mask_file)
    ijk = np.indices(image.shape[:3]).reshape(3, -1).T
    x = nib.affines.apply_affine(image.affine, ijk)[:, 0].reshape(image.shape[:3])
    labels = np.where(x < 0, 1, 2).astype(np.int16)
    dseg = folder / "atlas-halves_dseg.nii.gz"
    nib.Nifti1Image(labels, image.affine).to_filename(dseg)
    pd.DataFrame({"index": [1, 2], "name": ["left", "right"]}).to_csv(dseg.with_name("atlas-halves_dseg.tsv"),
                                                                      sep="\t", index=False)
    return dseg


def a_mask(bids: Path) -> Path:
    return next((bids / "derivatives" / "fmriprep").rglob("*task-rest*desc-brain_mask.nii.gz"))


def test_atlases_are_resolved_and_checked(tmp_path, tiny_bids):
    packaged = resolve_atlas(parse_atlas_option("circuit"))
    assert packaged.space == SPACE and packaged.names[:3] == ("dACC", "rACC", "vmPFC")
    dataset = resolve_atlas(parse_atlas_option(f"anat={bep038_dataset(tmp_path / 'atlases')}"))
    assert dataset.space == SPACE and dataset.names == packaged.names
    mask = a_mask(tiny_bids)
    halves = resolve_atlas(parse_atlas_option(f"halves={halves_atlas(tmp_path, mask)}"))
    assert halves.space is None and halves.names == ("left", "right")
    assert atlas_grid_problems(dataset, SPACE, str(mask)) == [] == atlas_grid_problems(halves, SPACE, str(mask))
    # another space, another grid: refused naming the file
    assert f"{dataset.dseg}: atlas 'anat' is in space {SPACE}, the run" in atlas_grid_problems(dataset, "T1w",
                                                                                               str(mask))[0]
    other = tmp_path / "other_mask.nii.gz"
    nib.Nifti1Image(np.ones((5, 5, 5), np.uint8), np.eye(4)).to_filename(other)
    assert atlas_grid_problems(halves, SPACE, str(other))[0].startswith(f"{halves.dseg}: atlas 'halves' is not on "
                                                                        "the grid of other_mask.nii.gz")
    # a label table that does not match its image
    table = Path(halves.labels)
    table.write_text("index\tname\n1\tleft\n3\tthird\n")
    with pytest.raises(ValueError, match=rf"{table}: the label table does not match atlas-halves_dseg.nii.gz: "
                                         r"label values without a row \[2\], rows whose index is not in the image \[3\]"):
        resolve_atlas(parse_atlas_option(f"halves={halves.dseg}"))


def test_atlas_options_and_configuration_are_validated(tmp_path):
    parser = build_parser()
    opts = parser.parse_args([str(tmp_path), str(tmp_path / "out"), "participant", "--atlases", "circuit",
                              "x=/data/atlases"])
    assert opts.atlases == ["circuit", "x=/data/atlases"]

    def with_atlases(*atlases, name="circuit"):
        return load_config(None, [Override("--atlases", "atlases", [a.model_dump(mode="json") for a in atlases]),
                                  Override("-", "circuit.name", name)])

    config = with_atlases(parse_atlas_option("circuit"), name="main")
    assert [a.label for a in config.atlases] == ["circuit"]
    assert config.command_line_overrides["--atlases"] == {"atlases": [
        {"label": "circuit", "dataset": None, "dseg": None, "labels": None}]}
    with pytest.raises(ConfigError, match="label 'circuit' is the circuit's"):
        with_atlases(parse_atlas_option("circuit"))
    with pytest.raises(ConfigError, match="listed more than once"):
        with_atlases(ExtraAtlas(label="circuit"), ExtraAtlas(label="circuit"), name="main")
    with pytest.raises(ConfigError, match="--atlases Schaefer: .*not a packaged atlas"):
        parse_atlas_option("Schaefer")


@pytest.fixture(scope="module")
def atlas_run(tiny_bids, tmp_path_factory):
    """The participant level on one subject's rest runs with both extra atlases."""
    root = tmp_path_factory.mktemp("atlas_run")
    dataset = bep038_dataset(root / "atlases")
    halves = halves_atlas(root, a_mask(tiny_bids))
    out = root / "out"
    proc = run_cli(tiny_bids, out, "participant", "-w", root / "work", "--skip-bids-validation", "--config",
                   TINY_CONFIG, "--participant-label", "01", "--task", "rest", "--nprocs", "2",
                   "--atlases", f"anat={dataset}", f"halves={halves}")
    return proc, out


def test_every_atlas_is_measured_and_named_in_the_outputs(atlas_run):
    proc, out = atlas_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    func = out / "sub-01" / "ses-pre" / "func"
    prefix = f"sub-01_ses-pre_task-rest_space-{SPACE}"
    for atlas, names in (("circuit", None), ("anat", None), ("halves", ["left", "right"])):
        series = pd.read_csv(func / f"{prefix}_atlas-{atlas}_stat-mean_bold.tsv", sep="\t")
        quality = pd.read_csv(func / f"{prefix}_atlas-{atlas}_desc-rois_qc.tsv", sep="\t")
        assert list(series.columns) == quality.loc[~quality["excluded"], "name"].tolist()
        if names:
            assert list(series.columns) == names
        relmat = pd.read_csv(func / f"{prefix}_atlas-{atlas}_stat-pearsoncorrelation_relmat.tsv", sep="\t", index_col=0)
        assert list(relmat.columns) == list(series.columns)
        sidecar = json.loads(func.joinpath(f"{prefix}_atlas-{atlas}_stat-pearsoncorrelation_relmat.json").read_text())
        assert sidecar["NodeFiles"][0].endswith(f"_atlas-{atlas}_dseg.nii.gz")  # BEP017: the atlas used
        assert (func / f"{prefix}_atlas-{atlas}_dseg.nii.gz").is_file()
    # the circuit and its copy as an extra atlas (nearest vs majority resampling, no grey matter)
    # measure the same regions
    circuit = pd.read_csv(func / f"{prefix}_atlas-circuit_stat-mean_bold.tsv", sep="\t")
    anat = pd.read_csv(func / f"{prefix}_atlas-anat_stat-mean_bold.tsv", sep="\t")
    shared = [c for c in circuit.columns if c in anat.columns]
    assert len(shared) >= 7
    r = [np.corrcoef(circuit[c], anat[c])[0, 1] for c in shared]
    assert min(r) > 0.5, dict(zip(shared, r))
    config = (out / "logs" / "config.json").read_text()
    assert '"label": "halves"' in config  # the override is recorded
    methods = (out / "logs" / "CITATION.md").read_text()
    assert "The 2 regions of the atlas 'halves' (atlas-halves_dseg.nii.gz, on the runs' BOLD grid)" in methods
    assert f"regions of the atlas 'anat' (tpl-{SPACE}_atlas-anat_dseg.nii.gz, in {SPACE}" in methods


def test_an_atlas_on_another_grid_is_refused_before_processing(tiny_bids, tmp_path):
    dseg = tmp_path / "atlas-bad_dseg.nii.gz"
    nib.Nifti1Image(np.ones((5, 5, 5), np.int16), np.eye(4)).to_filename(dseg)
    pd.DataFrame({"index": [1], "name": ["all"]}).to_csv(tmp_path / "atlas-bad_dseg.tsv", sep="\t", index=False)
    out = tmp_path / "out"
    proc = run_cli(tiny_bids, out, "participant", "-w", tmp_path / "work", "--skip-bids-validation", "--config",
                   TINY_CONFIG, "--participant-label", "01", "--task", "rest", "--atlases", f"bad={dseg}")
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"{dseg}: atlas 'bad' is not on the grid of" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(out.rglob("*_stat-mean_bold.tsv"))
