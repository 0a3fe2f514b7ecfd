"""Participant reports: links, sections, offline rendering in Chromium, and --reports-only.

The end-to-end tests read the report of the session-scoped ``tiny_run`` fixture (the
participant level run once on the tiny simulated dataset); the rebuild tests work on a copy.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import TINY_CONFIG, run_cli

#: (tag, attribute) pairs that load or link a resource.
LINK_ATTRIBUTES = {("img", "src"), ("object", "data"), ("link", "href"), ("script", "src"), ("a", "href")}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class _Links(HTMLParser):
    """Collects (tag, attribute, value) of resource links and the ids of the page."""

    def __init__(self):
        super().__init__()
        self.links: list[tuple[str, str, str]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if (tag, name) in LINK_ATTRIBUTES and value:
                self.links.append((tag, name, value))
            if name == "id" and value:
                self.ids.add(value)


def parse_links(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def is_local(url: str) -> bool:
    return not re.match(r"^([a-z][a-z0-9+.-]*:|#|//)", url, flags=re.I) or url.startswith("file:")


def local_target(page: Path, url: str) -> Path:
    url = url.split("#", 1)[0].split("?", 1)[0]
    return Path(url[len("file://"):]) if url.startswith("file://") else page.parent / url


def processed_runs(out: Path, subject: str) -> list[tuple[str, str]]:
    """(session, task) of every run with a denoising QC file."""
    found = []
    for qc in sorted((out / f"sub-{subject}").glob("ses-*/func/*_desc-denoise_qc.json")):
        entities = dict(part.split("-", 1) for part in qc.name.split("_")[:-1] if "-" in part)
        found.append((entities["ses"], entities["task"]))
    return found


@pytest.fixture(scope="module")
def report(tiny_run):
    proc, out, _ = tiny_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out / "sub-01.html"


def test_every_local_link_exists_and_is_not_empty(report):
    links = parse_links(report)
    local = [(tag, attr, url) for tag, attr, url in links.links if is_local(url) and not url.startswith("#")]
    assert any(tag == "img" for tag, _, _ in local) and any(tag == "link" for tag, _, _ in local)
    for tag, attr, url in local:
        target = local_target(report, url)
        assert target.is_file(), f"<{tag} {attr}={url!r}> points to a missing file"
        assert target.stat().st_size > 0, f"<{tag} {attr}={url!r}> points to an empty file"
    internal = [url[1:] for _, _, url in links.links if url.startswith("#")]
    assert internal and set(internal) <= links.ids, sorted(set(internal) - links.ids)
    remote = [url for tag, _, url in links.links if tag in ("link", "script", "img", "object") and not is_local(url)]
    assert not remote, f"the page loads remote resources (it must render offline): {remote}"


def test_report_has_every_section_and_figure(report):
    text = report.read_text(encoding="utf-8")
    ids = parse_links(report).ids
    assert {"Summary", "Exclusions", "Runs", "methods", "errors"} <= ids
    out = report.parent
    runs = processed_runs(out, "01")
    assert len(runs) == 6
    for session, task in runs:
        title = (f'session <span class="bids-entity">{session}</span>, '
                 f'task <span class="bids-entity">{task}</span>')
        assert title in text, f"no section for ses-{session} task-{task}"
    images = [url for tag, _, url in parse_links(report).links if tag == "img"]

    def shown(*parts):
        return [u for u in images if all(p in u for p in parts)]

    for session, task in runs:
        run = f"ses-{session}_task-{task}_"
        assert shown(run, "atlas-circuit_dseg.svg"), f"ROI placement of {run}"
        assert shown(run, "desc-carpetplot_bold.svg"), f"carpet plot of {run}"
        if task == "rest":
            assert shown(run, "desc-connectivity_relmat.svg") and shown(run, "stat-fisherz_desc-vmPFC_boldmap.svg")
        else:
            assert shown(run, "desc-activation_design.svg") and shown(run, "stat-z_statmap.svg")
        if task == "faces":
            assert shown(run, "desc-gppi_ppi.svg") and shown(run, "model-gppi_", "desc-vmPFC_statmap.svg")
            assert shown(run, "desc-dcm_dcm.svg")
    # the summary lists each run's inputs; the methods describe what ran, with references
    assert text.count("desc-preproc_bold.nii.gz") >= len(runs)
    assert "No run was excluded." in text
    # each run's ROI quality table (desc-rois_qc.tsv): voxels, tSNR, dropout, coverage rule
    assert text.count("ROI quality (atlas <code>circuit</code>)") == len(runs)
    methods = text[text.index('id="methods"'):text.index('id="errors"')]
    for phrase in ("Generalized PPI", "McLaren", "Dynamic causal modelling", "Ledoit", "References"):
        assert phrase in methods
    assert "Group level" not in methods  # the participant report describes the participant level
    errors = text[text.index('id="errors"'):]
    assert "No errors to report." in errors


def find_chromium() -> str | None:
    candidates = [os.environ.get("CHROMIUM", "")] + [shutil.which(name) or "" for name in CHROMIUM_NAMES]
    return next((c for c in candidates if c and Path(c).is_file()), None)


def test_report_renders_in_headless_chromium(report, tmp_path):
    from PIL import Image

    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium binary found (CHROMIUM, chromium, chromium-browser, google-chrome); "
                    "install it with `apt-get install -y chromium`")
    shot = tmp_path / "report.png"
    # the runs open on demand (<details>): a copy of the page beside it with every run open
    text = report.read_text(encoding="utf-8")
    assert text.count('<details class="run">') == len(processed_runs(report.parent, "01"))
    opened = report.with_name(f"{report.stem}-opened-{os.getpid()}.html")
    opened.write_text(text.replace('<details class="run">', '<details class="run" open>'), encoding="utf-8")
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,4000",
           "--hide-scrollbars", opened.resolve().as_uri()]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    finally:
        opened.unlink()
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape == (4000, 1280, 3)
    grey = pixels.mean(axis=2)
    assert grey.std() > 20, "the screenshot is (nearly) a single colour"
    # styled: Bootstrap's dark navbar (#212529) across the top, so the local stylesheet was applied
    assert np.abs(pixels[10, 5:400] - [33, 37, 41]).max() < 12
    # figures drawn (checked in 50x50-pixel blocks below the navbar; a page whose images fail to
    # load has none of either): solid black blocks, the background of the ROI placement panels,
    # and grey-scale noise of mid intensity, the carpet plot (text blocks are mostly white)
    blocks = _blocks(grey[100:])
    grey_only = (_blocks((pixels.max(axis=2) - pixels.min(axis=2))[100:]) < 12).mean(axis=2) > 0.95
    black = (blocks < 40).mean(axis=2) > 0.95
    mean, spread = blocks.mean(axis=2), blocks.std(axis=2)
    carpet = (mean > 70) & (mean < 190) & (spread > 35) & grey_only
    assert black.sum() >= 8, f"no ROI placement figure visible ({black.sum()} black blocks)"
    assert carpet.sum() >= 20, f"no carpet plot visible ({carpet.sum()} grey-noise blocks)"


def _blocks(image: np.ndarray, size: int = 50) -> np.ndarray:
    """(rows, columns, size*size) view of ``image`` cut into size x size blocks."""
    h, w = image.shape[0] // size * size, image.shape[1] // size * size
    return image[:h, :w].reshape(h // size, size, w // size, size).swapaxes(1, 2).reshape(h // size, w // size, -1)


@pytest.fixture(scope="module")
def rebuilt(tiny_run, tiny_bids, tmp_path_factory):
    """A copy of the fixture's outputs with sub-01's report, figures and one input table removed,
    rebuilt with --reports-only: (process, copy, original output dir, removed figures)."""
    proc, out, _ = tiny_run
    assert proc.returncode == 0
    copy = tmp_path_factory.mktemp("reports_only") / "out"
    shutil.copytree(out, copy)
    (copy / "sub-01.html").unlink()
    figures = copy / "sub-01" / "figures"
    made_by_workflow = re.compile(r"desc-(activation_design|gppi_ppi|dcm_dcm)\.svg$")
    made_by_reports = [p for p in figures.iterdir() if not made_by_workflow.search(p.name)]
    for path in made_by_reports:
        path.unlink()
    # a damaged output: the motion table of ses-post task-rest is gone, so its carpet plot fails
    damaged = next(copy.glob("sub-01/ses-post/func/*task-rest*_motion.tsv"))
    damaged.unlink()
    again = run_cli(tiny_bids, copy, "participant", "--reports-only", "--participant-label", "01", "--config",
                    TINY_CONFIG, "--skip-bids-validation", "-w", copy.parent / "work")
    return again, copy, out, [p.name for p in made_by_reports]


def test_reports_only_rebuilds_report_and_figures(rebuilt):
    proc, copy, original, removed = rebuilt
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (copy / "sub-01.html").is_file()
    assert [p.name for p in (copy.parent / "work").iterdir()] == ["ketflow_reports_wf"]  # nothing recomputed
    figures = copy / "sub-01" / "figures"
    missing = [name for name in removed if not (figures / name).is_file()]
    assert missing == [next(n for n in removed if "ses-post_task-rest" in n and "carpetplot" in n)]
    # figures are deterministic: the rebuilt ones equal those made after the workflow
    for name in removed:
        if name not in missing and name.endswith(".svg"):
            assert (figures / name).read_bytes() == (original / "sub-01" / "figures" / name).read_bytes(), name
    for link in parse_links(copy / "sub-01.html").links:
        if is_local(link[2]) and not link[2].startswith("#"):
            assert local_target(copy / "sub-01.html", link[2]).is_file(), link


def test_a_figure_that_cannot_be_made_is_reported(rebuilt):
    proc, copy, _, _ = rebuilt
    text = (copy / "sub-01.html").read_text(encoding="utf-8")
    errors = text[text.index('id="errors"'):]
    assert "carpet plot" in errors and "motion and outlier tables" in errors and "ses-post task-rest" in errors
    assert "Figures that could not be made" in text[:text.index('id="errors"')]  # in the run's summary too
    assert "report figure" in proc.stdout and "failed" in proc.stdout  # and logged as a warning


def test_reports_only_without_outputs_fails_clearly(tiny_bids, tmp_path):
    proc = run_cli(tiny_bids, tmp_path / "out", "participant", "--reports-only", "--participant-label", "01",
                   "--config", TINY_CONFIG, "--skip-bids-validation")
    assert proc.returncode == 1
    assert "no ketflow outputs" in proc.stdout + proc.stderr
    assert not (tmp_path / "out" / "sub-01.html").exists()


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.svg")}


def test_a_rerun_draws_only_the_figures_whose_inputs_changed(tiny_bids, tmp_path):
    """The figures are Nipype nodes: a rerun with nothing changed draws none and keeps the page;
    after one output changed, --reports-only draws that output's figure only and rebuilds the page."""
    out, work = tmp_path / "out", tmp_path / "work"
    args = (tiny_bids, out, "participant", "-w", work, "--participant-label", "01", "--session-label", "pre",
            "--task", "rest", "--config", TINY_CONFIG, "--skip-bids-validation", "--nprocs", "2")
    first = run_cli(*args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    drawn = re.search(r"report figures of 1 subject\(s\): (\d+) to draw, 0 up to date", first.stdout)
    assert drawn and int(drawn.group(1)) >= 3, first.stdout[-3000:]
    assert "[1/1] report sub-01 ..." in first.stdout
    figures = out / "sub-01" / "figures"
    before, page = _mtimes(figures), (out / "sub-01.html").stat().st_mtime_ns

    again = run_cli(*args)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"0 to draw, {drawn.group(1)} up to date" in again.stdout
    assert "[1/1] report sub-01: unchanged" in again.stdout
    assert _mtimes(figures) == before and (out / "sub-01.html").stat().st_mtime_ns == page

    relmat = next(out.glob("sub-01/ses-pre/func/*task-rest*_stat-pearsoncorrelation_relmat.tsv"))
    table = pd.read_csv(relmat, sep="\t", index_col=0)
    (table * 0.5).to_csv(relmat, sep="\t")  # as if the connectivity node had run again with other data
    rebuilt = run_cli(*args, "--reports-only")
    assert rebuilt.returncode == 0, rebuilt.stdout[-3000:] + rebuilt.stderr[-3000:]
    assert f"1 to draw, {int(drawn.group(1)) - 1} up to date" in rebuilt.stdout
    changed = {name for name, mtime in _mtimes(figures).items() if before.get(name) != mtime}
    assert changed == {next(n for n in before if "desc-connectivity_relmat" in n)}
    assert (out / "sub-01.html").stat().st_mtime_ns > page
