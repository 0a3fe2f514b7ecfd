"""The participant-level bad-input catalogue (issue 8), each case through the real command line.

Every error case damages a private copy of the tiny simulated dataset, runs ``python -m
ketflow`` and checks:

* the exit status (1 for invalid inputs, 2 for an invalid configuration or arguments);
* that the message names the offending file (or directory) and the problem, with no traceback;
* that nothing was written: the output directory was not even created (every check runs before
  the first output is written; see docs/inputs.md).

Runs unusable for analysis (too few volumes left after censoring, an ROI without voxels in the
run's brain mask) are skipped instead, with the reason in ``sub-XX_exclusions.tsv`` and no
derivative of the skipped run; when a subject has no run left the exit status is 1.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nibabel as nb
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import TINY_CONFIG, run_cli

SPACE = "MNI152NLin2009cAsym"
FMRIPREP = Path("derivatives") / "fmriprep"
BOLD, MASK, BOLDREF = "desc-preproc_bold.nii.gz", "desc-brain_mask.nii.gz", "boldref.nii.gz"
CONFOUNDS = "desc-confounds_timeseries.tsv"


@dataclass(frozen=True)
class Run:
    sub: str = "01"
    ses: str = "pre"
    task: str = "faces"

    @property
    def prefix(self) -> str:
        return f"sub-{self.sub}_ses-{self.ses}_task-{self.task}"


FACES = Run()


def deriv(root: Path, suffix: str, run: Run = FACES, space: bool = True) -> Path:
    """A file of the run's fMRIPrep derivatives, e.g. ``deriv(root, MASK, run)``."""
    name = f"{run.prefix}_" + (f"space-{SPACE}_" if space else "") + suffix
    return root / FMRIPREP / f"sub-{run.sub}" / f"ses-{run.ses}" / "func" / name


def raw(root: Path, suffix: str, run: Run = FACES) -> Path:
    return root / f"sub-{run.sub}" / f"ses-{run.ses}" / "func" / f"{run.prefix}_{suffix}"


def read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)


def edit_tsv(path: Path, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Path:
    edit(read_tsv(path)).to_csv(path, sep="\t", index=False, na_rep="n/a")
    return path


def edit_json(path: Path, edit: Callable[[dict], None]) -> Path:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


def edit_image(path: Path, data=None, affine=None) -> Path:
    image = nb.load(path)
    new = np.asanyarray(image.dataobj) if data is None else data(np.asanyarray(image.dataobj))
    nb.Nifti1Image(new, image.affine if affine is None else affine(image.affine.copy()), image.header).to_filename(path)
    return path


def cut_in_half(path: Path) -> Path:
    payload = path.read_bytes()
    path.write_bytes(payload[: len(payload) // 2])
    return path


def break_crc(path: Path) -> Path:
    """Flip one bit of the gzip trailer's CRC-32 (the data and length stay intact)."""
    payload = bytearray(path.read_bytes())
    payload[-8] ^= 1
    path.write_bytes(bytes(payload))
    return path


def set_cell(frame: pd.DataFrame, row: int, column: str, value) -> pd.DataFrame:
    frame = frame.astype({column: object})
    frame.loc[frame.index[row], column] = value
    return frame


def shift_x(affine: np.ndarray) -> np.ndarray:
    affine[0, 3] += 3.0
    return affine


def remove(path: Path, named: Path | None = None) -> Path:
    path.unlink()
    return named or path


def remove_tr(root: Path, run: Run) -> Path:
    for path in (deriv(root, "desc-preproc_bold.json", run), raw(root, "bold.json", run)):
        edit_json(path, lambda d: d.pop("RepetitionTime"))
    return deriv(root, BOLD, run)


def set_sidecar(root: Path, run: Run, **values) -> Path:
    edit_json(deriv(root, "desc-preproc_bold.json", run), lambda d: d.update(values))
    return deriv(root, BOLD, run)


def rename_space(root: Path, run: Run) -> Path:
    for path in deriv(root, "", run, space=False).parent.glob(f"{run.prefix}_space-{SPACE}_*"):
        path.rename(path.with_name(path.name.replace(SPACE, "T1w")))
    return deriv(root, BOLD, run).with_name(deriv(root, BOLD, run).name.replace(SPACE, "T1w"))


def remove_run_derivatives(root: Path, run: Run) -> Path:
    for path in deriv(root, "", run, space=False).parent.glob(f"{run.prefix}_*"):
        path.unlink()
    return raw(root, "bold.nii.gz", run)


def alternate_conflict_trials(root: Path, run: Run) -> Path:
    """Congruent and incongruent trials alternate: no incongruent trial follows an incongruent one."""
    assert run.task == "conflict"
    return edit_tsv(raw(root, "events.tsv", run), lambda e: e.assign(
        trial_type=(["congruent", "incongruent"] * len(e))[: len(e)]))


def config_file(tmp: Path, edit: Callable[[dict], None]) -> Path:
    config = yaml.safe_load(TINY_CONFIG.read_text())
    edit(config)
    path = tmp / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def far_roi(config: dict) -> None:
    config["circuit"]["spheres"] = [{"name": "farROI", "x": 0, "y": 0, "z": 160, "radius_mm": 6}]


#: damage(dataset root, run) -> the file the message must name; and phrases naming the problem.
#: Each group damages distinct runs of both subjects and is checked in one run of the command,
#: so every problem must be reported at once. The groups follow the order of the checks:
#: images and companions (discovery), then tables (screening, after discovery passed).
Damage = tuple[Callable[[Path, Run], Path], tuple[str, ...]]
GROUPS: dict[str, dict[str, tuple[Run, Damage]]] = {
    "images": {
        "bold-truncated": (Run("01", "pre", "faces"),
                           (lambda r, run: cut_in_half(deriv(r, BOLD, run)), ("corrupt BOLD image", "truncated"))),
        "bold-not-nifti": (Run("01", "pre", "conflict"),
                           (lambda r, run: (deriv(r, BOLD, run).write_bytes(b"not a NIfTI" * 40), deriv(r, BOLD, run))[1],
                            ("cannot read the NIfTI image",))),
        "bold-3d": (Run("01", "pre", "rest"),
                    (lambda r, run: edit_image(deriv(r, BOLD, run), data=lambda d: d[..., 0]),
                     ("expected a 4D BOLD series",))),
        "mask-bad-crc": (Run("01", "post", "faces"),
                         (lambda r, run: break_crc(deriv(r, MASK, run)), ("corrupt brain mask", "CRC"))),
        "boldref-truncated": (Run("01", "post", "conflict"),
                              (lambda r, run: cut_in_half(deriv(r, BOLDREF, run)),
                               ("corrupt BOLD reference", "truncated"))),
        "mask-grid-shape": (Run("01", "post", "rest"),
                            (lambda r, run: edit_image(deriv(r, MASK, run), data=lambda d: d[:-1]),
                             ("brain mask is not on the BOLD grid",))),
        "mask-grid-affine": (Run("02", "pre", "faces"),
                             (lambda r, run: edit_image(deriv(r, MASK, run), affine=shift_x),
                              ("brain mask is not on the BOLD grid",))),
        "boldref-grid": (Run("02", "pre", "conflict"),
                         (lambda r, run: edit_image(deriv(r, BOLDREF, run), data=lambda d: d[:, :-1]),
                          ("BOLD reference is not on the BOLD grid",))),
    },
    "companions-and-timing": {
        "fmriprep-run-missing": (Run("01", "pre", "faces"),
                                 (remove_run_derivatives, ("no preprocessed BOLD (desc-preproc) of this run",))),
        "confounds-missing": (Run("01", "pre", "conflict"),
                              (lambda r, run: remove(deriv(r, CONFOUNDS, run, space=False), deriv(r, BOLD, run)),
                               ("no confounds TSV",))),
        "mask-missing": (Run("01", "pre", "rest"),
                         (lambda r, run: remove(deriv(r, MASK, run), deriv(r, BOLD, run)), ("no brain mask",))),
        "space-other-one-run": (Run("01", "post", "faces"),
                                (rename_space, ("only in space(s) ['T1w']", f"requested space {SPACE}"))),
        "events-missing": (Run("01", "post", "conflict"),
                           (lambda r, run: remove(raw(r, "events.tsv", run), deriv(r, BOLD, run)),
                            ("needs an events.tsv in the raw dataset",))),
        "tr-missing": (Run("01", "post", "rest"), (remove_tr, ("RepetitionTime is missing",))),
        "tr-disagrees": (Run("02", "pre", "faces"),
                         (lambda r, run: set_sidecar(r, run, RepetitionTime=2.5),
                          ("RepetitionTime 2.5 s in its JSON sidecar disagrees with the NIfTI header (2 s)",))),
        "start-time-outside-tr": (Run("02", "pre", "conflict"),
                                  (lambda r, run: set_sidecar(r, run, StartTime=3.0),
                                   ("StartTime 3 s", "outside [0, TR = 2 s)"))),
        "confounds-rows": (Run("02", "pre", "rest"),
                           (lambda r, run: edit_tsv(deriv(r, CONFOUNDS, run, space=False), lambda c: c.iloc[:-1]),
                            ("has 79 rows but the BOLD series has 80 volumes",))),
    },
    "tables": {
        "events-wrong-columns": (Run("01", "pre", "faces"), (
            lambda r, run: edit_tsv(raw(r, "events.tsv", run), lambda e: e.rename(columns={"trial_type": "condition"})),
            ("lacks required column(s) ['trial_type']",))),
        "events-negative-duration": (Run("01", "pre", "conflict"), (
            lambda r, run: edit_tsv(raw(r, "events.tsv", run), lambda e: set_cell(e, 2, "duration", -5)),
            ("negative durations on line(s) 4 of the TSV",))),
        "events-onset-past-run": (Run("01", "post", "faces"), (
            lambda r, run: edit_tsv(raw(r, "events.tsv", run), lambda e: set_cell(e, 0, "onset", 1000)),
            ("onsets at or after the end of the run (160 s = 80 scans x TR 2 s) on line(s) 2",))),
        "events-non-numeric": (Run("01", "post", "conflict"), (
            lambda r, run: edit_tsv(raw(r, "events.tsv", run), lambda e: set_cell(e, 0, "onset", "soon")),
            ("column 'onset' has missing, non-numeric or infinite values on line(s) 2",))),
        "events-unreadable": (Run("02", "pre", "faces"), (
            lambda r, run: (raw(r, "events.tsv", run).write_bytes(b"\xff\xfe\x00garbage"), raw(r, "events.tsv", run))[1],
            ("cannot read the events TSV",))),
        "events-condition-absent": (Run("02", "post", "faces"), (
            lambda r, run: edit_tsv(raw(r, "events.tsv", run), lambda e: e.replace({"trial_type": {"fearful": "fear"}})),
            ("condition(s) ['fearful'] of task 'faces'", "do not occur in column trial_type"))),
        "events-derived-condition-unmatched": (Run("02", "pre", "conflict"), (
            alternate_conflict_trials, ("no event matches derived condition 'iI'",))),
        "confounds-nan": (Run("01", "pre", "rest"), (
            lambda r, run: edit_tsv(deriv(r, CONFOUNDS, run, space=False), lambda c: set_cell(c, 10, "trans_x", np.nan)),
            ("column trans_x has n/a on line(s) 12", "only the first row may be n/a"))),
        "confounds-column-missing": (Run("01", "post", "rest"), (
            lambda r, run: edit_tsv(deriv(r, CONFOUNDS, run, space=False), lambda c: c.drop(columns=["csf"])),
            ("strategy 36P needs columns that are missing: ['csf']",))),
    },
}


def invoke(bids: Path, tmp: Path, *args, config: Path = TINY_CONFIG):
    return run_cli(bids, tmp / "out", "participant", "-w", tmp / "work", "--skip-bids-validation",
                   "--config", config, *args)


def assert_clear_error(proc, status: int, named: list, phrases: list, out: Path) -> None:
    assert proc.returncode == status, proc.stdout[-2000:] + proc.stderr[-2000:]
    for text in [str(n) for n in named] + list(phrases):
        assert text in proc.stderr, f"{text!r} not in:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    assert not out.exists(), sorted(str(p) for p in out.rglob("*"))  # nothing written at all


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_every_damaged_run_is_named_at_once(group, tiny_bids_copy, tmp_path):
    cases = GROUPS[group]
    assert len({run for run, _ in cases.values()}) == len(cases)  # one damage per run
    named, phrases = [], []
    for run, (damage, problem) in cases.values():
        named.append(damage(tiny_bids_copy, run))
        phrases += problem
    proc = invoke(tiny_bids_copy, tmp_path)
    assert_clear_error(proc, 1, named, phrases, tmp_path / "out")
    assert proc.stderr.count("\n  - ") == len(cases)  # one problem per damaged run, none invented


#: Problems that stop discovery before any run is looked at, and configuration errors:
#: (damage(root) -> path to name, extra arguments, config(tmp) -> file or None, status, phrases)
SINGLE = {
    "fmriprep-missing": (lambda r: (shutil.rmtree(r / FMRIPREP), r / FMRIPREP)[1], (), None, 1,
                         ("fMRIPrep derivatives not found",)),
    "fmriprep-subject-missing": (lambda r: (shutil.rmtree(r / FMRIPREP / "sub-01"), r / FMRIPREP)[1],
                                 ("--participant-label", "01"), None, 1, ("no preprocessed BOLD", "sub-01")),
    "space-other-requested": (lambda r: r / FMRIPREP, ("--space", "MNI152NLin6Asym"), None, 1,
                              ("MNI152NLin6Asym", f"only in space(s) ['{SPACE}']")),
    "roi-outside-brain": (lambda r: deriv(r, MASK), ("--participant-label", "01"),
                          lambda t: config_file(t, far_roi), 1,
                          ("ROI(s) farROI (0 voxel(s), outside the image)", "sub-01_ses-pre_task-faces",
                           "circuit.min_voxels")),
    "config-task-absent-from-data": (lambda r: r, (), lambda t: config_file(
        t, lambda c: c["tasks"].update(movie={"type": "rest"})), 1, ("configured task(s) ['movie'] have no BOLD run",)),
    "config-unknown-roi": (None, (), lambda t: config_file(t, lambda c: c["ppi"].update(seeds=["thalamus"])), 2,
                           ("ppi.seeds names unknown ROIs ['thalamus']",)),
    "config-unknown-condition": (None, (), lambda t: config_file(t, lambda c: c["tasks"]["faces"]["contrasts"].update(
        {"happy-gt-shapes": {"happy": 1, "shapes": -1}})), 2,
        ("contrast 'happy-gt-shapes' names unknown conditions ['happy']",)),
    "cli-unknown-task": (None, ("--task", "movie"), None, 2, ("--task ['movie']: not in the configuration's tasks",)),
}


@pytest.mark.parametrize("name", sorted(SINGLE))
def test_bad_input_is_a_clear_error_with_nothing_written(name, tiny_bids_copy, tmp_path):
    damage, args, make_config, status, phrases = SINGLE[name]
    config = make_config(tmp_path) if make_config else TINY_CONFIG
    named = [damage(tiny_bids_copy)] if damage else ([config] if make_config else [])  # a CLI argument names no file
    proc = invoke(tiny_bids_copy, tmp_path, *args, config=config)
    assert_clear_error(proc, status, named, phrases, tmp_path / "out")


def derivatives_of(out: Path, run: str) -> list[Path]:
    """Derivative files of a run (``sub-01_ses-pre_task-rest``) in the output directory."""
    return sorted(p for p in out.glob("sub-*/ses-*/**/*") if p.is_file() and p.name.startswith(run + "_"))


def exclusions(out: Path, subject: str = "01") -> pd.DataFrame:
    return pd.read_csv(out / f"sub-{subject}" / f"sub-{subject}_exclusions.tsv", sep="\t", dtype=str,
                       keep_default_na=False)


def censor_every_volume(root: Path, run: Run) -> Path:
    return edit_tsv(deriv(root, CONFOUNDS, run, space=False),
                    lambda c: c.assign(framewise_displacement=[np.nan] + [2.0] * (len(c) - 1)))


def drop_roi_from_mask(root: Path, roi: str, run: Run) -> Path:
    """Remove an ROI's voxels (the default circuit's: the anatomical atlas region) from a run's
    brain mask (signal dropout)."""
    from ketflow.config import load_config
    from ketflow.io.rois import circuit_roiset

    path = deriv(root, MASK, run)
    image = nb.load(path)
    placed = circuit_roiset(load_config().circuit, image, np.ones(image.shape, bool), min_voxels=0)
    inside = placed.labels == placed.names.index(roi) + 1
    assert (np.asanyarray(image.dataobj)[inside] > 0).any()
    return edit_image(path, data=lambda d: np.where(inside, 0, d).astype(d.dtype))


def test_a_short_run_is_skipped_with_its_reason_and_the_others_processed(tiny_bids_copy, tmp_path):
    """One bad run among many: recorded, visible, and the run beside it is processed."""
    short = Run("01", "pre", "rest")
    edit_image(deriv(tiny_bids_copy, BOLD, short), data=lambda d: d[..., :15])
    edit_tsv(deriv(tiny_bids_copy, CONFOUNDS, short, space=False), lambda c: c.iloc[:15])
    out = tmp_path / "out"
    proc = invoke(tiny_bids_copy, tmp_path, "--participant-label", "01", "--task", "rest", "--nprocs", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 run(s) processed, 0 failed, 1 excluded or absent" in proc.stdout
    assert "excluded sub-01 ses-pre task-rest" in proc.stdout  # logged as a warning
    table = exclusions(out)
    assert table[["session", "task"]].values.tolist() == [["pre", "rest"]]
    assert "of 15 volumes remain after censoring; at least 20 are required" in table["reason"][0]
    assert derivatives_of(out, "sub-01_ses-pre_task-rest") == []
    assert derivatives_of(out, "sub-01_ses-post_task-rest")  # processed


def test_a_fully_excluded_subject_is_not_a_failure(tiny_bids_copy, tmp_path):
    """Exclusion is not failure: sub-01 loses every run to quality control, sub-02 is processed,
    and the status is 0 (a SLURM array task with afterok must not stop the group job)."""
    censor_every_volume(tiny_bids_copy, Run("01", "pre", "faces"))
    mask = drop_roi_from_mask(tiny_bids_copy, "amygdala_L", Run("01", "post", "faces"))
    out = tmp_path / "out"
    proc = invoke(tiny_bids_copy, tmp_path, "--task", "faces", "--nprocs", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "sub-01: EXCLUDED, every run was excluded by a quality-control rule" in proc.stdout
    assert "2 run(s) processed, 0 failed, 2 excluded or absent" in proc.stdout
    table = exclusions(out).set_index("session")
    assert "volume(s) censored at FD > 0.5 mm" in table.loc["pre", "reason"]
    assert "quality-control rule denoising.min_volumes" in table.loc["pre", "reason"]
    assert f"{mask}: ROI(s) amygdala_L (0 voxel(s) of" in table.loc["post", "reason"]
    assert derivatives_of(out, "sub-01") == []
    assert derivatives_of(out, "sub-02_ses-pre_task-faces") and derivatives_of(out, "sub-02_ses-post_task-faces")
    assert "Traceback" not in proc.stderr


def test_a_failed_node_is_still_status_1_beside_an_excluded_subject(tiny_bids_copy, tmp_path):
    """Exclusions do not hide real failures: a crashing node keeps the status at 1."""
    censor_every_volume(tiny_bids_copy, Run("01", "pre", "faces"))
    censor_every_volume(tiny_bids_copy, Run("01", "post", "faces"))
    # bit rot in sub-02's BOLD (gzip CRC-32) that only the node reading the whole stream sees
    bold = deriv(tiny_bids_copy, BOLD, Run("02", "pre", "faces"))
    payload = bytearray(bold.read_bytes())
    payload[-8:-4] = (int.from_bytes(payload[-8:-4], "little") ^ 0xFFFFFFFF).to_bytes(4, "little")
    bold.write_bytes(bytes(payload))
    proc = invoke(tiny_bids_copy, tmp_path, "--task", "faces", "--session-label", "pre")
    assert "sub-01: EXCLUDED" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "sub-02 ses-pre task-faces: FAILED" in proc.stdout


def test_exclusions_of_other_sessions_are_kept(tiny_bids_copy, tmp_path):
    """Running sessions one at a time (--session-label) accumulates their exclusion records."""
    out = tmp_path / "out"
    for ses in ("pre", "post"):
        censor_every_volume(tiny_bids_copy, Run("01", ses, "faces"))
        proc = invoke(tiny_bids_copy, tmp_path, "--participant-label", "01", "--session-label", ses,
                      "--task", "faces")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert exclusions(out)[["session", "task"]].values.tolist() == [["post", "faces"], ["pre", "faces"]]
