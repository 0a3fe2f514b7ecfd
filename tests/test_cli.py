"""The BIDS-App command line: options, exit codes, and clear errors with nothing half-written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ketflow import __version__
from ketflow.cli.parser import build_parser, parse_args

from conftest import TINY_CONFIG, run_cli

SELECT = ["--skip-bids-validation", "--config", TINY_CONFIG, "--boilerplate-only"]

REQUIRED_OPTIONS = [
    "--participant-label", "--session-label", "--task", "--derivatives", "--space", "--bids-filter-file",
    "--skip-bids-validation", "--work-dir", "--nprocs", "--omp-nthreads", "--mem-gb", "--plugin",
    "--plugin-args", "--config", "--stop-on-first-crash", "--clean-workdir", "--reports-only", "--boilerplate-only",
    "--verbose", "--version",
]


def test_help_lists_every_option():
    text = build_parser().format_help()
    for option in REQUIRED_OPTIONS:
        assert option in text, option
    assert "{participant,group}" in text


def test_version():
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert __version__ in proc.stdout


def test_defaults(tiny_bids, tmp_path):
    opts = parse_args([str(tiny_bids), str(tmp_path / "out"), "participant"])
    assert opts.space == "MNI152NLin2009cAsym"
    assert opts.derivatives["fmriprep"] == (tiny_bids / "derivatives" / "fmriprep").resolve()
    assert opts.plugin == "MultiProc"


def test_bad_bids_path_exits_2(tmp_path):
    proc = run_cli(tmp_path / "nowhere", tmp_path / "out", "participant")
    assert proc.returncode == 2
    assert "no such directory" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("output, phrase", [
    ("", "is the input dataset"), ("ketflow", "not in a folder of its own under"),
    ("derivatives", "not in a folder of its own under"), ("derivatives/fmriprep/ketflow", "overlaps the 'fmriprep'")])
def test_output_in_the_wrong_place_of_the_input_is_refused(tiny_bids, output, phrase):
    proc = run_cli(tiny_bids, tiny_bids / output, "participant")
    assert proc.returncode == 2, proc.stderr
    assert phrase in proc.stderr and "derivatives/ketflow" in proc.stderr  # says where to put them
    assert not (tiny_bids / output / "logs").exists()
    assert not (tiny_bids / "ketflow").exists()


def test_outputs_inside_the_bids_dataset(tiny_bids_copy, tmp_path):
    """``ketflow bids/ bids/derivatives/ketflow participant``: the BIDS place for derivatives.
    The outputs are not indexed as inputs (a rerun finds the same runs), and DatasetLinks point
    to ``../..`` (raw) and ``../fmriprep``."""
    out = tiny_bids_copy / "derivatives" / "ketflow"
    args = (tiny_bids_copy, out, "participant", "-w", tmp_path / "work", "--participant-label", "01",
            "--session-label", "pre", "--task", "rest", "--config", TINY_CONFIG, "--skip-bids-validation")
    for _ in range(2):  # the second run sees the first one's outputs inside the dataset
        proc = run_cli(*args)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "found 1 run(s) of 1 subject(s)" in proc.stdout
    links = json.loads((out / "dataset_description.json").read_text())["DatasetLinks"]
    assert links == {"raw": "../..", "fmriprep": "../fmriprep"}
    sidecars = [json.loads(p.read_text()) for p in sorted(out.glob("sub-01/ses-pre/func/*task-rest*.json"))]
    sources = next(meta["Sources"] for meta in sidecars if "Sources" in meta)
    assert any(s.startswith("bids:fmriprep:sub-01/ses-pre/func/") for s in sources)
    for uri in sources:  # every source resolves through the links
        name, _, rel = uri.removeprefix("bids:").partition(":")
        assert (out / links[name] / rel).is_file(), uri
    # --clean-workdir: ketflow's folders go after success, a file of another tool stays
    (tmp_path / "work" / "other-tool.txt").write_text("kept")
    proc = run_cli(*args, "--clean-workdir")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [p.name for p in (tmp_path / "work").iterdir()] == ["other-tool.txt"]
    assert "--clean-workdir: removed" in proc.stdout


def test_bad_analysis_level(tiny_bids, tmp_path):
    proc = run_cli(tiny_bids, tmp_path / "out", "session")
    assert proc.returncode == 2


def test_invalid_config_exits_2_naming_the_key(tiny_bids, tmp_path):
    config = tmp_path / "bad.yml"
    config.write_text(TINY_CONFIG.read_text().replace("seeds: [vmPFC]}", "seeds: [thalamus]}", 1))
    proc = run_cli(tiny_bids, tmp_path / "out", "participant", "--config", config, "--skip-bids-validation")
    assert proc.returncode == 2
    assert str(config) in proc.stderr and "thalamus" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_missing_fmriprep_is_a_clear_error(tiny_bids_copy, tmp_path):
    fmriprep = tiny_bids_copy / "derivatives" / "fmriprep"
    import shutil

    shutil.rmtree(fmriprep)
    out = tmp_path / "out"
    proc = run_cli(tiny_bids_copy, out, "participant", "--skip-bids-validation")
    assert proc.returncode == 1
    assert "fMRIPrep derivatives not found" in proc.stderr and str(fmriprep) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_missing_confounds_names_the_bold_file(tiny_bids_copy, tmp_path):
    victim = sorted(tiny_bids_copy.glob("derivatives/fmriprep/sub-01/ses-pre/func/*task-faces*confounds_timeseries.tsv"))[0]
    victim.unlink()
    out = tmp_path / "out"
    proc = run_cli(tiny_bids_copy, out, "participant", "--skip-bids-validation", "--config", TINY_CONFIG)
    assert proc.returncode == 1
    assert "no confounds TSV" in proc.stderr
    assert "sub-01_ses-pre_task-faces_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz" in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("option, label, named", [("--participant-label", "99", "sub-99"),
                                                  ("--participant-label", "sub-99", "sub-99"),
                                                  ("--session-label", "followup", "ses-followup")])
def test_unknown_labels_are_bad_arguments(tiny_bids, tmp_path, option, label, named):
    proc = run_cli(tiny_bids, tmp_path / "out", "participant", option, label, "--skip-bids-validation")
    assert proc.returncode == 2  # as an unknown --task: a bad argument
    assert named in proc.stderr and option in proc.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_task_filter(tiny_bids, tmp_path):
    proc = run_cli(tiny_bids, tmp_path / "out", "participant", "--task", "movie")
    assert proc.returncode == 2
    assert "movie" in proc.stderr


def test_wrong_space_is_named(tiny_bids, tmp_path):
    proc = run_cli(tiny_bids, tmp_path / "out", "participant", "--space", "MNI152NLin6Asym",
                   "--skip-bids-validation")
    assert proc.returncode == 1
    assert "MNI152NLin6Asym" in proc.stderr and "MNI152NLin2009cAsym" in proc.stderr


def test_omp_threads_above_nprocs_warns(tiny_bids, tmp_path):
    proc = run_cli(tiny_bids, tmp_path / "out", "participant", "--nprocs", "1", "--omp-nthreads", "4",
                   "--boilerplate-only", "--skip-bids-validation", "--config", TINY_CONFIG)
    assert proc.returncode == 0
    assert "--omp-nthreads (4) exceeds --nprocs (1)" in proc.stdout + proc.stderr


def test_boilerplate_only_writes_only_the_methods(tiny_bids, tmp_path):
    out = tmp_path / "out"
    proc = run_cli(tiny_bids, out, "participant", "--boilerplate-only", "--skip-bids-validation",
                   "--config", TINY_CONFIG)
    assert proc.returncode == 0, proc.stderr
    assert [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()] == ["logs/CITATION.md"]
    text = (out / "logs" / "CITATION.md").read_text()
    assert "36 parameters" in text and "Gitelman" in text and "McLaren" in text


def test_plugin_args_file_must_be_a_mapping(tiny_bids, tmp_path):
    args = tmp_path / "plugin.json"
    args.write_text(json.dumps([1, 2]))
    proc = run_cli(tiny_bids, tmp_path / "out", "participant", "--plugin-args", args)
    assert proc.returncode == 2
    assert "mapping" in proc.stderr


def test_bids_validation_errors_stop_the_run(tiny_bids_copy, tmp_path):
    (tiny_bids_copy / "dataset_description.json").write_text("{not json")
    out = tmp_path / "out"
    proc = run_cli(tiny_bids_copy, out, "participant", "--config", TINY_CONFIG)
    assert proc.returncode == 1
    assert not out.exists()


def test_participant_level_end_to_end(tiny_run, tiny_bids):
    proc, out, _ = tiny_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Outputs:" in proc.stdout
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "ketflow"
    assert (out / "logs" / "config.json").is_file() and (out / "logs" / "CITATION.md").is_file()
    assert (out / ".bidsignore").is_file()
    for subject in ("01", "02"):
        assert (out / f"sub-{subject}.html").is_file()
        assert (out / f"sub-{subject}" / f"sub-{subject}_exclusions.tsv").is_file()
    series = sorted(out.glob("sub-*/ses-*/func/*_atlas-circuit_stat-mean_bold.tsv"))
    processed = {(p.name.split("_")[0], p.name.split("_")[1], p.name.split("_")[2]) for p in series}
    assert len(processed) == len(series) == 12  # 2 subjects x 2 sessions x 3 tasks
    sidecar = json.loads(series[0].with_suffix(".json").read_text())
    assert sidecar["RepetitionTime"] == 2.0
    assert sidecar["GeneratedBy"]["Version"] == __version__
    assert all(s.startswith(("bids:raw:", "bids:fmriprep:")) for s in sidecar["Sources"])
    assert {"num_censored_volumes", "dof_lost", "strategy"} <= set(sidecar)


def test_outputs_are_a_pybids_derivatives_dataset(tiny_run):
    from bids import BIDSLayout

    _, out, _ = tiny_run
    layout = BIDSLayout(out, validate=False, is_derivative=True, config=["bids", "derivatives"])
    found = layout.get(suffix="bold", extension=".tsv", subject="01", session="pre", task="faces")
    assert any("stat-mean" in Path(f.path).name for f in found)
    assert set(layout.get_subjects()) == {"01", "02"}
    assert set(layout.get_tasks()) == {"faces", "conflict", "rest"}


def test_outputs_are_queryable_with_ketflows_pybids_config(tiny_run):
    from bids import BIDSLayout

    from ketflow.io.names import pybids_config

    _, out, _ = tiny_run
    layout = BIDSLayout(out, validate=False, config=["bids", "derivatives", pybids_config()])
    assert set(layout.get_subjects()) == {"01", "02"}
    rest = dict(subject="01", session="pre", task="rest", extension=".tsv")
    assert [Path(f).name.split("_")[-2] for f in layout.get(suffix="relmat", stat="fisherz", atlas="circuit",
                                                           return_type="filename", **rest)] == ["stat-fisherz"]
    z_maps = layout.get(suffix="statmap", stat="z", contrast="fearfulGtShapes", model="gppi", desc="vmPFC",
                        subject="01", session="pre", extension=".nii.gz")
    assert len(z_maps) == 1
    import nibabel as nib
    from scipy import stats

    maps = {stat: layout.get(suffix="statmap", stat=stat, contrast="fearfulGtShapes", model=None, subject="01",
                             session="pre", extension=".nii.gz") for stat in ("effect", "variance", "t", "z", "p")}
    assert all(len(found) == 1 for found in maps.values()), maps  # stat-t and stat-p beside effect, variance, z
    data = {stat: nib.load(found[0].path).get_fdata() for stat, found in maps.items()}
    inside = data["variance"] > 0
    assert np.allclose(data["t"][inside], data["effect"][inside] / np.sqrt(data["variance"][inside]), rtol=1e-4)
    assert np.allclose(data["p"][inside], stats.norm.sf(data["z"][inside]), atol=1e-6)


def test_pybids_models_take_no_regressors_from_ketflows_outputs(tiny_run, tiny_bids):
    """pybids loads every ``*_timeseries.tsv`` of a derivatives dataset as regressors; ketflow's ROI
    series, motion and outlier tables must not become model variables."""
    from bids import BIDSLayout

    _, out, _ = tiny_run
    fmriprep = tiny_bids / "derivatives" / "fmriprep"
    run = dict(subject="01", session="pre", task="rest")

    def variables(*derivatives):
        layout = BIDSLayout(tiny_bids, derivatives=list(derivatives), validate=False)
        collection = layout.get_collections("run", merge=True, **run)  # None: no variables at all
        return set() if collection is None else set(collection.variables)

    with_fmriprep = variables(fmriprep)
    assert {"framewise_displacement", "trans_x"} <= with_fmriprep  # fMRIPrep's confounds are loaded
    assert variables(fmriprep, out) == with_fmriprep
    rois = set(pd.read_csv(next(out.glob("sub-01/ses-pre/func/*task-rest*_stat-mean_bold.tsv")), sep="\t"))
    assert not variables(out) & (rois | {"motion_outlier", "dummy_scan", "framewise_displacement"})


def test_every_relmat_has_a_bep017_sidecar_whose_node_files_exist(tiny_run):
    _, out, _ = tiny_run
    relmats = sorted(out.rglob("*_relmat.tsv"))
    assert {"stat-ppi", "stat-fisherz", "stat-pearsoncorrelation"} <= {p.name.split("_")[-2] for p in relmats}
    for relmat in relmats:
        meta = json.loads(relmat.with_suffix(".json").read_text())
        assert meta["Weighted"] is True and meta["StorageFormat"] == "Full", relmat.name
        assert isinstance(meta["RelationshipMeasure"], str) and isinstance(meta["ValidDiagonal"], bool)
        assert [Path(uri.removeprefix("bids::")).suffix for uri in meta["NodeFiles"]] == [".gz", ".tsv"]
        assert all((out / uri.removeprefix("bids::")).is_file() for uri in meta["NodeFiles"]), meta["NodeFiles"]
        if "stat-ppi" in relmat.name:  # gPPI: seed x target, directed
            assert meta["Directed"] is True and meta["SeedAxis"] == "row"
        else:
            assert meta["Directed"] is False and "SeedAxis" not in meta


def test_outputs_pass_the_bids_validator_as_a_derivative_dataset(tiny_run):
    import shutil
    import subprocess
    import sys

    _, out, _ = tiny_run
    validator = shutil.which("bids-validator-deno", path=str(Path(sys.executable).parent)) or shutil.which(
        "bids-validator-deno")
    assert validator, "bids-validator-deno (a dependency of ketflow) is not installed"
    proc = subprocess.run([validator, "--datasetTypes", "derivative", "--json", str(out)], capture_output=True,
                          text=True, timeout=600, check=False)
    issues = json.loads(proc.stdout)["issues"]["issues"]
    errors = sorted({(i["code"], i.get("location", "")) for i in issues if i["severity"] == "error"})
    assert not errors, errors[:20]


def test_rerun_resumes_and_gives_the_same_outputs(tiny_run, tiny_bids):
    proc, out, work = tiny_run
    assert proc.returncode == 0
    before = {p: p.read_bytes() for p in out.rglob("*.tsv")}
    again = run_cli(tiny_bids, out, "participant", "-w", work, "--nprocs", "2", "--config", TINY_CONFIG,
                    "--skip-bids-validation")
    assert again.returncode == 0, again.stderr[-2000:]
    after = {p: p.read_bytes() for p in out.rglob("*.tsv")}
    assert before == after


def test_session_label_selects_sessions_and_verbose_logs_debug(tiny_bids, tmp_path):
    both = run_cli(tiny_bids, tmp_path / "a", "participant", "--participant-label", "01", *SELECT)
    pre = run_cli(tiny_bids, tmp_path / "b", "participant", "--participant-label", "01", "--session-label",
                  "ses-pre", "-v", *SELECT)
    assert both.returncode == pre.returncode == 0, pre.stderr
    assert "found 6 run(s) of 1 subject(s)" in both.stdout
    assert "found 3 run(s) of 1 subject(s)" in pre.stdout
    # -v: DEBUG messages (the resolved options), absent by default
    assert "DEBUG: ketflow" not in both.stdout
    assert "DEBUG: ketflow" in pre.stdout and "'omp_nthreads': '1'" in pre.stdout


def test_bids_filter_file_selects_bold_and_warns_on_unused_keys(tiny_bids, tmp_path):
    filters = tmp_path / "filters.json"
    filters.write_text(json.dumps({"bold": {"session": "post", "task": "rest"}, "t1w": {"acquisition": "mprage"}}))
    proc = run_cli(tiny_bids, tmp_path / "out", "participant", "--bids-filter-file", filters, *SELECT)
    assert proc.returncode == 0, proc.stderr
    # rest of ses-post, both subjects; the tasks and sessions the filter leaves out are not "absent"
    assert "found 2 run(s) of 2 subject(s); 0 excluded before processing" in proc.stdout
    assert "['t1w'] are not used" in proc.stdout


def test_bids_filter_values_must_be_mappings(tiny_bids, tmp_path):
    filters = tmp_path / "filters.yml"
    filters.write_text("bold: res-2\n")
    proc = run_cli(tiny_bids, tmp_path / "out", "participant", "--bids-filter-file", filters, *SELECT)
    assert proc.returncode == 2
    assert str(filters) in proc.stderr and "'bold'" in proc.stderr


@pytest.mark.parametrize("verbose", [False, True])
def test_unexpected_error_is_a_message_and_exit_1(tiny_bids, tmp_path, monkeypatch, capsys, verbose):
    from ketflow.cli.run import main
    from ketflow.workflows import participant

    def broken(opts, config):
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(participant, "run_participant_level", broken)
    status = main([str(tiny_bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work"),
                   *(["-v"] if verbose else [])])
    err = capsys.readouterr().err
    assert status == 1
    assert "ketflow: error: unexpected RuntimeError: something nobody foresaw" in err
    assert str(tmp_path / "work") in err
    assert ("Traceback" in err) == verbose
    assert ("rerun with -v" in err) != verbose


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"),
                                   FileNotFoundError(2, "No usable temporary directory found in ['/tmp']")])
def test_full_disk_is_named_with_how_to_resume(tiny_bids, tmp_path, monkeypatch, capsys, error):
    """A full disk (ENOSPC, or tempfile finding no writable directory) is not reported as invalid input."""
    from ketflow.cli.run import main
    from ketflow.workflows import participant

    def full(opts, config):
        raise error

    monkeypatch.setattr(participant, "run_participant_level", full)
    status = main([str(tiny_bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert status == 1
    assert "ketflow: error: no space left on the device" in err and "invalid inputs" not in err
    assert str(tmp_path / "work") in err and "rerun the same command to resume" in err


def corrupt_bold_crc(bids: Path, task: str) -> Path:
    """Rewrite the gzip CRC-32 of the preprocessed BOLD of sub-01/ses-pre/<task> (the deflate data
    and the length trailer stay intact): bit rot that the length check before the run cannot
    see. The run's BOLD cache node, which reads the stream to its end, fails; so would any node
    decompressing the whole file. Returns the BOLD path."""
    path = next(bids.glob(f"derivatives/fmriprep/sub-01/ses-pre/func/*task-{task}_*desc-preproc_bold.nii.gz"))
    payload = bytearray(path.read_bytes())
    crc = int.from_bytes(payload[-8:-4], "little")
    payload[-8:-4] = (crc ^ 0xFFFFFFFF).to_bytes(4, "little")
    path.write_bytes(bytes(payload))
    return path


def test_failed_node_exits_1_naming_run_and_crash_file(tiny_bids_copy, tmp_path):
    bold = corrupt_bold_crc(tiny_bids_copy, "rest")
    out = tmp_path / "out"
    proc = run_cli(tiny_bids_copy, out, "participant", "-w", tmp_path / "work", "--nprocs", "2",
                   "--participant-label", "01", "--session-label", "pre", "--task", "rest", "conflict",
                   "--config", TINY_CONFIG, "--skip-bids-validation")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    crash_files = sorted((out / "logs" / "crash").glob("crash-*.txt"))
    assert len(crash_files) == 1
    crash = crash_files[0].read_text()
    assert "single_subject_01_wf.ses_pre_task_rest_wf.bold_cache" in crash
    assert bold.name in crash and "CRC" in crash
    summary = proc.stdout[proc.stdout.index("ketflow participant level:"):]
    assert "1 run(s) processed, 1 failed" in summary
    assert "sub-01 ses-pre task-conflict: processed" in summary
    assert "sub-01 ses-pre task-rest: FAILED" in summary
    assert f"crash file: {crash_files[0]}" in summary
    assert "CorruptImageError" in summary and f"{bold.name}: corrupt BOLD image" in summary
    assert "FAILED sub-01 ses-pre task-rest: bold_cache" in proc.stdout  # the progress log
    assert list(out.glob("sub-01/ses-pre/func/*task-conflict*_stat-mean_bold.tsv"))
    assert not list(out.glob("sub-01/ses-pre/func/*task-rest*_stat-mean_bold.tsv"))  # nothing after the cache ran
    assert not list(out.glob("sub-01/ses-pre/func/*task-rest*_relmat.tsv"))


def test_stop_on_first_crash(tiny_bids_copy, tmp_path):
    for task in ("rest", "conflict"):
        corrupt_bold_crc(tiny_bids_copy, task)
    args = [tiny_bids_copy, tmp_path / "out", "participant", "--nprocs", "1", "--participant-label", "01",
            "--session-label", "pre", "--task", "rest", "conflict", "--config", TINY_CONFIG, "--skip-bids-validation",
            "--stop-on-first-crash"]
    proc = run_cli(*args, "-w", tmp_path / "work")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    crash_files = sorted((tmp_path / "out" / "logs" / "crash").glob("crash-*.txt"))
    assert len(crash_files) == 1  # both runs would fail; it stopped at the first
    assert ".bold_cache" in crash_files[0].read_text()
    assert f"crash file: {crash_files[0]}" in proc.stdout
    assert "unfinished (stopped at the first crash)" in proc.stdout


def test_progress_log_and_summary(tiny_run):
    proc, out, _ = tiny_run
    assert proc.returncode == 0
    assert "done   sub-01 ses-pre task-faces: denoise_wf.denoise (" in proc.stdout
    assert "ketflow participant level: 12 run(s) processed, 0 failed" in proc.stdout
    assert "sub-02 ses-post task-rest: processed" in proc.stdout
    # the first run's log (time-stamped names sort in time order; a rerun test may add another)
    logs = sorted((out / "logs").glob("ketflow-ketflow_wf-*.log"))
    assert logs and "start  sub-01 ses-pre task-faces: denoise_wf.denoise" in logs[0].read_text()


def test_config_hash_is_the_sha256_of_config_json(tiny_run):
    _, out, _ = tiny_run
    digest = hashlib.sha256((out / "logs" / "config.json").read_bytes()).hexdigest()
    sidecars = list(out.glob("sub-*/ses-*/func/*_stat-mean_bold.json"))
    assert sidecars
    assert {json.loads(p.read_text())["GeneratedBy"]["ConfigHash"] for p in sidecars} == {digest}


def test_dataset_links_are_relative_and_resolve(tiny_run, tiny_bids):
    _, out, _ = tiny_run
    links = json.loads((out / "dataset_description.json").read_text())["DatasetLinks"]
    assert not any(Path(link).is_absolute() or ":" in link for link in links.values())
    assert (out / links["raw"]).resolve() == tiny_bids.resolve()
    assert (out / links["fmriprep"]).resolve() == (tiny_bids / "derivatives" / "fmriprep").resolve()
