"""BEP017 sidecars of relationship matrices and ketflow's pybids configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ketflow.io.names import ENTITY_ORDER, pybids_config
from ketflow.io.relmat import CONNECTIVITY_MEASURES, connectivity_sidecars, node_files, relmat_sidecar
from ketflow.signal.connectivity import MEASURE_STATS

BOLD = "/d/sub-01/ses-pre/func/sub-01_ses-pre_task-rest_run-2_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz"
BEP017 = {"RelationshipMeasure", "Weighted", "Directed", "ValidDiagonal", "StorageFormat", "NodeFiles"}


def test_node_files_are_the_runs_atlas_image_and_table_in_the_output_dataset():
    stem = "sub-01/ses-pre/func/sub-01_ses-pre_task-rest_run-2_space-MNI152NLin2009cAsym_atlas-circuit_dseg"
    assert node_files(BOLD, "circuit") == [f"bids::{stem}.nii.gz", f"bids::{stem}.tsv"]


def test_every_connectivity_measure_has_bep017_fields():
    stats = [stat for names in MEASURE_STATS.values() for stat in names]
    assert set(stats) == set(CONNECTIVITY_MEASURES)
    fields = connectivity_sidecars(stats, ["bids::a_dseg.nii.gz"])
    assert all(BEP017 <= set(f) and f["Directed"] is False and f["StorageFormat"] == "Full" for f in fields.values())
    assert fields["ledoitwolfcovariance"]["ValidDiagonal"] and not fields["pearsoncorrelation"]["ValidDiagonal"]
    with pytest.raises(ValueError, match="no BEP017 description.*spearman"):
        connectivity_sidecars(["spearman"], ["x"])


def test_directed_matrices_say_which_axis_is_the_seed():
    fields = relmat_sidecar("gPPI", directed=True, seed_axis="row", valid_diagonal=False, node_files=["x"])
    assert fields["Directed"] is True and fields["SeedAxis"] == "row" and fields["TargetAxis"] == "column"
    with pytest.raises(ValueError, match="seed_axis"):
        relmat_sidecar("gPPI", directed=True, valid_diagonal=False, node_files=["x"])
    with pytest.raises(ValueError, match="only meaningful"):
        relmat_sidecar("r", directed=False, seed_axis="row", valid_diagonal=False, node_files=["x"])
    with pytest.raises(ValueError, match="NodeFiles"):
        relmat_sidecar("r", directed=False, valid_diagonal=False, node_files=[])


def test_pybids_configs_together_parse_every_entity_ketflow_writes():
    import bids.layout

    folder = Path(bids.layout.__file__).parent / "config"
    patterns = [e["pattern"] for name in ("bids.json", "derivatives.json") for e in
                json.loads((folder / name).read_text())["entities"]]
    ours = json.loads(Path(pybids_config()).read_text())["entities"]
    pybids_names = {e["name"] for name in ("bids.json", "derivatives.json") for e in
                    json.loads((folder / name).read_text())["entities"]}
    assert not pybids_names & {e["name"] for e in ours}  # pybids refuses an entity defined twice
    patterns += [e["pattern"] for e in ours]
    assert all(any(f"{key}-(" in p for p in patterns) for key in ENTITY_ORDER)
