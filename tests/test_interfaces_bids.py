"""The derivatives sink: niworkflows' DerivativesDataSink with ketflow's names, atomic writes and provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from niworkflows.interfaces.bids import DerivativesDataSink as NiworkflowsSink

from ketflow import __version__
from ketflow.interfaces import run_in
from ketflow.interfaces.bids import DerivativesDataSink, DerivativesSink

BOLD = "sub-01_ses-pre_task-faces_run-1_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz"


@pytest.fixture
def inputs(tmp_path):
    fmriprep = tmp_path / "fmriprep" / "sub-01" / "ses-pre" / "func"
    fmriprep.mkdir(parents=True)
    (fmriprep / BOLD).write_bytes(b"bold")
    (tmp_path / "a.tsv").write_text("x\n1\n")
    (tmp_path / "b.tsv").write_text("x\n2\n")
    (tmp_path / "contrast-facesGtShapes_stat-z_statmap.tsv").write_text("z\n")
    (tmp_path / "meta.json").write_text(json.dumps({"FromNode": 1, "Shared": "node"}))
    return {"bold": str(fmriprep / BOLD), "root": tmp_path, "links": {"fmriprep": str(tmp_path / "fmriprep")}}


def _sink(inputs, **kwargs):
    return DerivativesDataSink(base_directory=str(inputs["root"] / "out"), source_file=inputs["bold"],
                               sources=[inputs["bold"]], source_links=inputs["links"], config_hash="abc", **kwargs)


def test_it_is_niworkflows_sink_with_ketflows_entities():
    sink = DerivativesDataSink(base_directory="/x", suffix="relmat", atlas="circuit", stat="pearson")
    assert isinstance(sink, NiworkflowsSink)
    assert {"atlas", "seg", "res", "den", "contrast", "stat", "model"} <= set(sink.inputs.copyable_trait_names())


def test_names_provenance_and_list_entities(inputs, tmp_path):
    out = run_in(_sink(inputs, in_file=[str(tmp_path / "a.tsv"), str(tmp_path / "b.tsv")], suffix="relmat",
                       extension=".tsv", atlas="circuit", stat=["pearson", "fisherz"],
                       metadata_file=str(tmp_path / "meta.json"), meta_dict={"Shared": "given"}), tmp_path / "w")
    names = [Path(p).name for p in out.out_file]
    stem = "sub-01_ses-pre_task-faces_run-1_space-MNI152NLin2009cAsym_atlas-circuit"  # res-/desc- of the BOLD dropped
    assert names == [f"{stem}_stat-pearson_relmat.tsv", f"{stem}_stat-fisherz_relmat.tsv"]
    assert [Path(p).read_text() for p in out.out_file] == ["x\n1\n", "x\n2\n"]
    meta = json.loads(Path(out.out_meta[0]).read_text())
    assert meta["FromNode"] == 1 and meta["Shared"] == "given"  # the given fields win over the node's
    assert meta["Sources"] == [f"bids:fmriprep:sub-01/ses-pre/func/{BOLD}"]
    assert meta["GeneratedBy"] == {"Name": "ketflow", "Version": __version__, "ConfigHash": "abc"}
    assert Path(out.out_meta[0]).read_text().endswith("}\n")  # ketflow's canonical JSON
    assert not list((tmp_path / "out").rglob("*.part"))  # written through temporary files, renamed


def test_entities_from_names_shared_sources_and_no_sidecar(inputs, tmp_path):
    second = inputs["bold"].replace("run-1", "run-2")
    Path(second).write_bytes(b"bold")
    sink = _sink(inputs, in_file=str(tmp_path / "contrast-facesGtShapes_stat-z_statmap.tsv"), suffix="statmap",
                 extension=".tsv", entities_from_filename=True, sidecar=False)
    sink.inputs.source_file = [inputs["bold"], second]  # a session-level output: the runs' shared entities
    out = run_in(sink, tmp_path / "w")
    assert [Path(p).name for p in out.out_file] == [
        "sub-01_ses-pre_task-faces_space-MNI152NLin2009cAsym_contrast-facesGtShapes_stat-z_statmap.tsv"]
    assert out.out_meta == [] and not Path(out.out_file[0]).with_suffix(".json").exists()
    with pytest.raises(ValueError, match="2 files but 1 values of entity 'stat'"):
        run_in(_sink(inputs, in_file=[str(tmp_path / "a.tsv"), str(tmp_path / "b.tsv")], suffix="relmat",
                     stat=["pearson"]), tmp_path / "w2")


def test_a_failed_write_leaves_the_previous_file(inputs, tmp_path, monkeypatch):
    import ketflow.io.write as write

    sink = _sink(inputs, in_file=str(tmp_path / "a.tsv"), suffix="timeseries", extension=".tsv", stat="mean")
    first = Path(run_in(sink, tmp_path / "w").out_file[0])

    def broken(source, destination):
        Path(destination).write_text("half")
        raise OSError("disk full")

    monkeypatch.setattr(write.shutil, "copyfile", broken)
    with pytest.raises(OSError, match="disk full"):
        run_in(_sink(inputs, in_file=str(tmp_path / "b.tsv"), suffix="timeseries", extension=".tsv", stat="mean"),
               tmp_path / "w3")
    assert first.read_text() == "x\n1\n" and not list(first.parent.glob("*.part"))


def test_the_group_levels_call_signature_is_kept(tmp_path):
    (tmp_path / "models.tsv").write_text("model\n")
    out = run_in(DerivativesSink(out_dir=str(tmp_path / "group"), entities={"model": "change"},
                                 in_file=str(tmp_path / "models.tsv"), suffix="models", extension=".tsv",
                                 datatype="", metadata={"Description": "d"}, config_hash="h"), tmp_path / "w")
    assert out.out_file == [str(tmp_path / "group" / "model-change_models.tsv")]
    assert json.loads(Path(out.out_meta[0]).read_text())["Description"] == "d"


def test_fields_by_entity_value_go_to_their_files_only(inputs, tmp_path):
    by_stat = {"pearson": {"RelationshipMeasure": "Pearson correlation"},
               "fisherz": {"RelationshipMeasure": "Fisher z"}}
    out = run_in(_sink(inputs, in_file=[str(tmp_path / "a.tsv"), str(tmp_path / "b.tsv")], suffix="relmat",
                       extension=".tsv", atlas="circuit", stat=["pearson", "fisherz"], meta_dict={"Shared": 1},
                       meta_by_entity={"stat": by_stat}), tmp_path / "w")
    metas = [json.loads(Path(p).read_text()) for p in out.out_meta]
    assert [m["RelationshipMeasure"] for m in metas] == ["Pearson correlation", "Fisher z"]
    assert all(m["Shared"] == 1 and m["GeneratedBy"]["ConfigHash"] == "abc" for m in metas)
    with pytest.raises(ValueError, match="no sidecar fields for stat-pearson"):
        run_in(_sink(inputs, in_file=str(tmp_path / "a.tsv"), suffix="relmat", extension=".tsv", stat="pearson",
                     meta_by_entity={"stat": {"fisherz": {}}}), tmp_path / "w2")
