"""The group level through the command line: end to end, report, missing data and bad inputs.

One simulated study (6 subjects, both sessions, 8 mm, 60 volumes) goes through the participant
level once (tests/data/tiny_group_config.yml); the group level then runs on it and on damaged
copies of its outputs and clinical tables.
"""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from conftest import TESTS, run_cli

CONFIG = TESTS / "data" / "tiny_group_config.yml"
#: Group outputs without entities: ``<name>.<ext>``; model outputs: ``model-<label>[_desc-<label>]_<suffix>.<ext>``.
NAME = re.compile(r"^(features|missing|models|inference)\.(tsv|json)$"
                  r"|^model-[A-Za-z0-9]+(_desc-[A-Za-z0-9]+)?_[A-Za-z]+\.(tsv|json)$")
FIGURE = re.compile(r"^model-[A-Za-z0-9]+_desc-[A-Za-z0-9]+_figure\.svg$")

@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """(bids, participant-level output dir) of the simulated study."""
    from ketflow.simulate import simulate_dataset

    root = tmp_path_factory.mktemp("group_study")
    bids = simulate_dataset(root / "bids", n_subjects=6, seed=3, voxel_size=8.0,
                            n_volumes={"faces": 60, "rest": 60, "conflict": 40})
    proc = run_cli(bids, root / "out", "participant", "-w", root / "work", "--nprocs", "2", "--config", CONFIG,
                   "--skip-bids-validation")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return bids, root / "out"


@pytest.fixture(scope="module")
def group_run(study, tmp_path_factory):
    """The group level on a copy of the participant outputs: (process, output dir)."""
    bids, out = study
    copy = _copy_outputs(out, tmp_path_factory.mktemp("group_run"))
    proc = run_cli(bids, copy, "group", "-w", copy.parent / "work", "--nprocs", "2", "--config", CONFIG)
    return proc, copy


def _copy_outputs(out: Path, root: Path) -> Path:
    """The participant-level outputs without images (the group level reads tables only)."""
    return Path(shutil.copytree(out, root / "out", ignore=shutil.ignore_patterns("*.nii.gz", "group", "group.html")))


def _clinical_copy(bids: Path, root: Path) -> Path:
    """The raw dataset's clinical tables only (participants.tsv, sessions files)."""
    copy = root / "bids"
    copy.mkdir()
    for name in ("participants.tsv", "participants.json", "dataset_description.json"):
        shutil.copy(bids / name, copy / name)
    for sessions in bids.glob("sub-*/sub-*_sessions.tsv"):
        (copy / sessions.parent.name).mkdir()
        shutil.copy(sessions, copy / sessions.parent.name / sessions.name)
    return copy


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        key = {"img": "src", "object": "data", "a": "href"}.get(tag)
        if key and dict(attrs).get(key):
            self.links.append((tag, dict(attrs)[key]))


def test_group_level_end_to_end(group_run):
    proc, out = group_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "model(s) fitted" in proc.stdout and "skipped baseline-arm-ketamine" in proc.stdout
    group = out / "group"
    models = pd.read_csv(group / "models.tsv", sep="\t", keep_default_na=False)
    status = dict(zip(models["model"], models["status"]))
    assert status == {"change": "run", "task": "run", "change-by-arm": "run", "baseline-arm-ketamine": "skipped",
                      "baseline-arm-midazolam": "skipped", "peb": "run", "peb-longitudinal": "run"}
    assert models.set_index("model").loc["baseline-arm-ketamine", "reason"].startswith("only 3 subject(s)")
    # BIDS-Derivatives names, a sidecar for every table (features.json is the features' data dictionary)
    for path in group.iterdir():
        if path.is_file():
            assert NAME.match(path.name), path.name
            if path.suffix == ".tsv":
                sidecar = path.with_suffix(".json")
                assert sidecar.is_file(), path.name
                meta = json.loads(sidecar.read_text())
                if path.name != "features.tsv":
                    assert meta["GeneratedBy"]["Name"] == "ketflow" and meta["GeneratedBy"]["ConfigHash"]
    for path in (group / "figures").iterdir():
        assert FIGURE.match(path.name), path.name
    features = pd.read_csv(group / "features.tsv", sep="\t", na_values=["n/a"], keep_default_na=False)
    dictionary = json.loads((group / "features.json").read_text())
    assert len(features) == 6 and set(dictionary) == set(features.columns)
    assert {"activation", "fc", "dcm"} == {m["family"] for m in dictionary.values() if "family" in m}
    for row in models[models["status"] == "run"].itertuples():
        subjects = _subjects(group, row.label)
        assert row.n_included == subjects["included"].sum() >= 4
        assert (subjects["reason"] != "").sum() == row.n_excluded  # every subject left out has a reason
    for label in ("change", "task", "changeByArm"):
        perf = json.loads((group / f"model-{label}_performance.json").read_text())
        n_included = models.set_index("label").loc[label, "n_included"]
        assert perf["settings"]["n_subjects"] == perf["subjects"]["n_included"] == n_included
        assert perf["settings"]["n_permutations"] == 10 and len(pd.read_csv(group / f"model-{label}_nulldistribution.tsv", sep="\t")) == 10
        for figure in ("coefficients", "predictedVsObserved", "permutationNull", "selectionFrequencies"):
            assert (group / "figures" / f"model-{label}_desc-{figure}_figure.svg").stat().st_size > 1000
    assert (out / "logs" / "CITATION_group.md").read_text().startswith("# Group-level methods")


def test_group_report_links_and_figures_exist(group_run):
    proc, out = group_run
    assert proc.returncode == 0
    text = (out / "group.html").read_text()
    parser = _Links()
    parser.feed(text)
    objects = [link for tag, link in parser.links if tag == "object"]
    assert len(objects) == 3 * 4 + 2  # every fitted model's four figures and the two PEB analyses' 
    for tag, link in parser.links:
        assert not link.startswith(("http:", "https:", "/")), link
        if link.startswith("#"):  # the navigation bar: a section of the page
            assert f'id="{link[1:]}"' in text, link
            continue
        target = out / link
        assert target.is_file() and target.stat().st_size > 0, f"<{tag}> {link}"
    assert sum(link.startswith("sub-") and link.endswith(".html") for _, link in parser.links) == 6
    for section in ("Clinical scores", "Imaging change per measure family", "Missing data", "Model: change-by-arm",
                    "Model: baseline-arm-ketamine", "PEB over DCM: baseline", "PEB over DCM: both sessions"):
        assert section in text, section
    assert "Not fitted: only 3 subject(s) with complete data" in text


def test_reports_only_rebuilds_the_report_from_outputs(group_run, study, tmp_path):
    bids, _ = study
    proc, out = group_run
    assert proc.returncode == 0
    before = (out / "group.html").read_text()
    (out / "group.html").unlink()
    stamp = {p: p.stat().st_mtime_ns for p in (out / "group").rglob("*")}
    again = run_cli(bids, out, "group", "--reports-only", "-w", tmp_path / "work", "--config", CONFIG)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "group.html").read_text() == before
    assert stamp == {p: p.stat().st_mtime_ns for p in (out / "group").rglob("*")}
    assert not (tmp_path / "work").exists()  # nothing recomputed


def test_reports_only_without_group_outputs_is_an_input_error(study, tmp_path):
    bids, _ = study
    proc = run_cli(bids, tmp_path / "out", "group", "--reports-only", "--config", CONFIG)
    assert proc.returncode == 1 and "no group-level outputs" in proc.stderr
    assert not (tmp_path / "out" / "group.html").exists()


def test_boilerplate_only_writes_only_the_group_methods(study, tmp_path):
    bids, _ = study
    out = tmp_path / "out"
    proc = run_cli(bids, out, "group", "--boilerplate-only", "--config", CONFIG)
    assert proc.returncode == 0, proc.stderr
    assert [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()] == ["logs/CITATION_group.md"]
    text = (out / "logs" / "CITATION_group.md").read_text()
    assert "3-fold" in text and "10 permutations" in text and "Besag" not in text


def _subjects(group: Path, label: str) -> pd.DataFrame:
    table = pd.read_csv(group / f"model-{label}_subjects.tsv", sep="\t", dtype=str, keep_default_na=False)
    table["included"] = table["included"] == "True"
    return table


def _included(group: Path, label: str) -> set[str]:
    table = _subjects(group, label)
    return set(table.loc[table["included"], "subject"])


def test_missing_session_and_excluded_rest_run_are_listed_not_fatal(study, group_run, tmp_path):
    """sub-03 has only ses-pre; sub-02 lost its ses-pre rest run: task-only models keep sub-02."""
    bids, out = study
    intact = group_run[1] / "group"
    assert {"02", "03"} <= _included(intact, "change") and {"02", "03"} <= _included(intact, "task")
    copy = _copy_outputs(out, tmp_path)
    shutil.rmtree(copy / "sub-03" / "ses-post")
    for path in (copy / "sub-02" / "ses-pre" / "func").glob("*task-rest*"):
        path.unlink()
    excl = copy / "sub-02" / "sub-02_exclusions.tsv"
    excl.write_text(excl.read_text() + "pre\trest\t\tmean FD 0.8 mm > 0.5 mm\n")
    proc = run_cli(bids, copy, "group", "-w", tmp_path / "work", "--config", CONFIG)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    group = copy / "group"
    missing = pd.read_csv(group / "missing.tsv", sep="\t", dtype=str, keep_default_na=False)
    three = missing[missing["subject"] == "03"]
    assert (three["session"] == "post").all() and "no imaging measures at session post" in " ".join(three["reason"])
    two = missing[missing["subject"] == "02"].set_index("item")
    assert two.loc["fc_rest", "reason"].endswith("mean FD 0.8 mm > 0.5 mm")
    assert _included(group, "task") == _included(intact, "task") - {"03"}
    assert _included(group, "change") == _included(intact, "change") - {"02", "03"}
    reasons = _subjects(group, "task").set_index("subject")["reason"]
    assert reasons["02"] == "" and reasons["03"].startswith("missing") and "predictor(s)" in reasons["03"]
    assert "fc_rest" in _subjects(group, "change").set_index("subject").loc["02", "reason"]
    text = (copy / "group.html").read_text()
    assert "mean FD 0.8 mm &gt; 0.5 mm" in text[text.index('id="exclusions"'):]  # the excluded run, listed
    # PEB needs baseline DCMs and the clinical change only
    assert _included(group, "peb") == _included(intact, "peb") and "03" in _included(group, "peb")


def test_a_fully_excluded_subject_is_listed_and_not_fatal(study, tmp_path):
    """sub-04 lost every run to quality control at the participant level (exit 0 there): the group
    level runs on the others and its report names sub-04 as excluded, with each run's reason."""
    bids, out = study
    copy = _copy_outputs(out, tmp_path)
    sub = copy / "sub-04"
    for path in sub.iterdir():
        if path.is_dir():
            shutil.rmtree(path)
    (sub / "sub-04_exclusions.tsv").write_text(
        "session\ttask\trun\treason\n" + "".join(
            f"{ses}\t{task}\t\t12 of 60 volumes remain after censoring; quality-control rule denoising.min_volumes\n"
            for ses in ("post", "pre") for task in ("conflict", "faces", "rest")))
    proc = run_cli(bids, copy, "group", "-w", tmp_path / "work", "--config", CONFIG)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = (copy / "group.html").read_text()
    section = text[text.index('id="exclusions"'):]
    assert "1 subject(s) excluded</strong>" in section
    assert '<a href="sub-04/sub-04_exclusions.tsv">sub-04</a>' in section
    assert section.count("quality-control rule denoising.min_volumes") == 6
    assert "04" not in _included(copy / "group", "change")


def test_outputs_of_different_configurations_are_refused_unless_one_is_chosen(study, tmp_path):
    """sub-02 was rerun with another configuration: the group level names every subject's
    configuration and exits 1; --participant-config-hash chooses which outputs to use."""
    bids, out = study
    copy = _copy_outputs(out, tmp_path)
    sidecars = [json.loads(p.read_text()) for p in sorted(copy.glob("sub-01/ses-pre/func/*.json"))]
    original = next(meta["GeneratedBy"] for meta in sidecars if isinstance(meta.get("GeneratedBy"), dict))
    other = "f" * 64
    for sidecar in copy.glob("sub-02/**/*.json"):
        meta = json.loads(sidecar.read_text())
        if isinstance(meta.get("GeneratedBy"), dict):
            meta["GeneratedBy"]["ConfigHash"] = other
            sidecar.write_text(json.dumps(meta))
    proc = run_cli(bids, copy, "group", "-w", tmp_path / "work", "--config", CONFIG)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "different configurations or ketflow versions" in proc.stderr
    assert f"sub-02: configuration {other[:12]} (ketflow {original['Version']})" in proc.stderr
    assert f"sub-01: configuration {original['ConfigHash'][:12]}" in proc.stderr
    assert not (copy / "group").exists()
    proc = run_cli(bids, copy, "group", "-w", tmp_path / "work", "--config", CONFIG,
                   "--participant-config-hash", original["ConfigHash"][:12])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "sub-02 left out" in proc.stdout
    features = pd.read_csv(copy / "group" / "features.tsv", sep="\t", dtype={"subject": str})
    assert "02" not in set(features["subject"]) and len(features) == 5


def _bad_input(study, tmp_path, damage) -> tuple:
    bids, out = study
    clinical = _clinical_copy(bids, tmp_path)
    copy = _copy_outputs(out, tmp_path)
    damage(clinical, copy)
    proc = run_cli(clinical, copy, "group", "-w", tmp_path / "work", "--config", CONFIG)
    return proc, copy


def _edit_tsv(path: Path, edit) -> None:
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    edit(table)
    table.to_csv(path, sep="\t", index=False)


@pytest.mark.parametrize("case, expected", [
    ("duplicate_id", [r"participants\.tsv: duplicated participant_id \['sub-02'\]"]),
    ("missing_id", [r"participants\.tsv: no row for participant\(s\) sub-04"]),
    ("blank_id", [r"participants\.tsv: missing participant_id on line\(s\) \[3\]"]),
    ("score_text", [r"sub-05_sessions\.tsv: column 'caps5_total' has non-numeric value 'twelve'"]),
    ("unknown_arm", [r"participants\.tsv: column 'group' has value\(s\) not among clinical\.arms", r"sub-06 \('placebo'\)"]),
    ("too_few_subjects", ["no group model can be fitted", r"model change: only \d subject", "model peb: only 3 subject",
                          "sub-01 ses-post caps5_total: no clinical score"]),
])
def test_bad_group_inputs_exit_1_and_write_nothing(study, tmp_path, case, expected):
    def damage(bids, out):
        participants = bids / "participants.tsv"
        if case == "duplicate_id":
            _edit_tsv(participants, lambda t: t.__setitem__("participant_id", t["participant_id"].replace("sub-03", "sub-02")))
        elif case == "missing_id":
            _edit_tsv(participants, lambda t: t.drop(t.index[t["participant_id"] == "sub-04"], inplace=True))
        elif case == "blank_id":
            _edit_tsv(participants, lambda t: t.__setitem__("participant_id", t["participant_id"].replace("sub-02", "n/a")))
        elif case == "score_text":
            _edit_tsv(bids / "sub-05" / "sub-05_sessions.tsv", lambda t: t.__setitem__("caps5_total", ["31", "twelve"]))
        elif case == "unknown_arm":
            _edit_tsv(participants, lambda t: t.__setitem__("group", t["group"].where(t["participant_id"] != "sub-06", "placebo")))
        elif case == "too_few_subjects":
            for sub in ("01", "02", "04"):
                _edit_tsv(bids / f"sub-{sub}" / f"sub-{sub}_sessions.tsv",
                          lambda t: t.__setitem__("caps5_total", [t["caps5_total"].iloc[0], "n/a"]))

    proc, out = _bad_input(study, tmp_path, damage)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for pattern in expected:
        assert re.search(pattern, proc.stderr), (pattern, proc.stderr[-2000:])
    assert not (out / "group").exists() and not (out / "group.html").exists()


def test_group_outputs_pass_the_bids_validator(group_run):
    """The participant and group outputs together: no error from ``bids-validator --datasetTypes derivative``
    (the group folder and ketflow's undefined suffixes are in ``.bidsignore``)."""
    import subprocess
    import sys

    _, out = group_run
    validator = shutil.which("bids-validator-deno", path=str(Path(sys.executable).parent)) or shutil.which(
        "bids-validator-deno")
    assert validator, "bids-validator-deno (a dependency of ketflow) is not installed"
    proc = subprocess.run([validator, "--datasetTypes", "derivative", "--json", str(out)], capture_output=True,
                          text=True, timeout=600, check=False)
    issues = json.loads(proc.stdout)["issues"]["issues"]
    errors = sorted({(i["code"], i.get("location", "")) for i in issues if i["severity"] == "error"})
    assert not errors, errors[:20]


def test_outputs_with_group_tables_are_queryable_as_the_readme_says(group_run):
    """The README's pybids query: ketflow's configuration, the group folder ignored (its data
    dictionaries have ``subject``/``model`` columns, which pybids reads as entities)."""
    from bids import BIDSLayout, BIDSLayoutIndexer

    from ketflow.io.names import pybids_config

    _, out = group_run
    layout = BIDSLayout(out, config=["bids", "derivatives", pybids_config()],
                        indexer=BIDSLayoutIndexer(ignore=["group"]))
    assert layout.get_subjects() == ["01", "02", "03", "04", "05", "06"]
    assert layout.get(suffix="relmat", stat="fisherz", atlas="circuit", task="rest", subject="01", session="pre",
                      extension=".tsv")
