"""Reportlets of one subject: figures (SVG) and HTML fragments under ``out/sub-X/figures/``.

Everything is made from the participant-level outputs and the inputs they name (see
:mod:`ketflow.reports.outputs`), so ``--reports-only`` rebuilds it.  Figures are named after
the output they show (``..._contrast-X_stat-z_statmap.nii.gz`` ->
``figures/..._contrast-X_stat-z_statmap.svg``) or, for run-level displays, with fMRIPrep's
descriptors (``desc-carpetplot_bold.svg``).  A figure that cannot be made is recorded as a
:class:`ReportletError` (shown in the report's Errors section and in the run's summary)
instead of stopping the report; a stale figure of the same name is removed first.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
import pandas as pd

from ..config import AnalysisConfig
from ..io.boldcache import open_bold_cache, read_mask, read_masked_bold
from ..io.names import bids_label, build_path, parse_name
from ..io.write import write_text
from . import figures
from .outputs import RunOutputs

LOGGER = logging.getLogger("ketflow")

#: Pairs of ``desc-denoise_qc.json`` entries shown per run: (label, first key, second key, format).
_QC_PAIRS = (
    ("Mean / max framewise displacement (mm)", "mean_fd", "max_fd", "{:.3f}"),
    ("Mean DVARS before / after denoising", "mean_dvars_initial", "mean_dvars_final", "{:.2f}"),
    ("FD-DVARS correlation before / after denoising", "fd_dvars_correlation_initial",
     "fd_dvars_correlation_final", "{:.2f}"),
)


@dataclass
class ReportletError:
    """A figure that could not be made."""

    where: str
    what: str
    figure: str
    message: str


class FigureJob(NamedTuple):
    """One figure of a run: what it shows, where it goes, how to draw it, the files it reads.

    ``inputs`` are the files whose change calls for drawing the figure again (the Nipype node
    drawing it hashes them); the BOLD cache in the work directory is not among them: it is
    remade only when the BOLD series (an input of the carpet plot) changes.
    """

    what: str
    path: Path
    make: Callable
    inputs: list[Path]


def figure_for(out_dir: Path, output: Path) -> Path:
    """The figure path of an output file: same entities and suffix, ``.svg``, in ``figures/``."""
    entities, suffix, _ = parse_name(output)
    return build_path(out_dir, entities, suffix, ".svg", datatype="figures")


def _background(run: RunOutputs):
    """The run's BOLD reference, or (in MNI152NLin2009cAsym) the offline template, or None."""
    if "boldref" in run.sources:
        return nib.load(run.sources["boldref"])
    if run.entities.get("space") == "MNI152NLin2009cAsym":
        from ..templates import get_template

        return nib.load(get_template(resolution=2))
    return None


def _roi_table(dseg_file: Path) -> pd.DataFrame:
    table = dseg_file.with_name(dseg_file.name.replace(".nii.gz", ".tsv"))
    if not table.is_file():
        raise FileNotFoundError(f"{table.name} (the ROI labels of {dseg_file.name}) is missing")
    return pd.read_csv(table, sep="\t")


def _roi_centre(run: RunOutputs, seed_label: str) -> tuple[float, float, float] | None:
    """World coordinates (mm) of the centre of the ROI whose BIDS label is ``seed_label``."""
    for dseg in run.files("dseg", ".nii.gz", atlas="*"):
        table = _roi_table(dseg)
        match = table[[bids_label(n) == seed_label for n in table["name"]]]
        if len(match):
            img = nib.load(dseg)
            voxels = np.argwhere(np.asanyarray(img.dataobj) == int(match["index"].iloc[0]))
            if len(voxels):
                return tuple(float(v) for v in nib.affines.apply_affine(img.affine, voxels.mean(axis=0)))
    return None


def _preprocessed_bold(run: RunOutputs) -> np.ndarray:
    """The run's preprocessed in-mask BOLD, (time, voxels) float32: its cache from the work
    directory when it is there (decompressing the series again takes seconds), else read
    from the BOLD file."""
    mask = read_mask(run.sources["mask"])
    if run.bold_cache and Path(run.bold_cache).is_file():
        return np.array(open_bold_cache(run.bold_cache, mask))  # checks it holds the mask's voxels
    return read_masked_bold(run.sources["bold"], mask)


def _carpet(run: RunOutputs) -> Callable:
    def make():
        missing = [role for role in ("bold", "mask") if role not in run.sources]
        if missing:
            raise FileNotFoundError(f"input(s) {', '.join(missing)} not found: "
                                    + "; ".join(run.source_uris.get(r, f"{r} not recorded") for r in missing))
        censoring = run.censoring()
        if censoring is None:
            raise FileNotFoundError("the motion and outlier tables (_motion.tsv, _outliers.tsv) are missing")
        if not run.tr:
            raise ValueError("no RepetitionTime in the run's sidecars")
        series = run.roi_series()
        signals = pd.read_csv(series[0], sep="\t") if series else None
        bold = _preprocessed_bold(run)
        threshold = run.qc.get("strategy", {}).get("fd_threshold")
        return figures.plot_carpet(bold, censoring, run.tr, threshold, signals, title=run.label)
    return make


def _sources(run: RunOutputs, *roles: str) -> list[Path]:
    return [run.sources[role] for role in roles if role in run.sources]


def figure_jobs(run: RunOutputs, out_dir: Path, ppi_contrasts: set[str] | None = None) -> list[FigureJob]:
    """Every figure of ``run`` (:class:`FigureJob`: description, figure path, maker returning a
    Figure, input files).

    ``ppi_contrasts`` (BIDS labels) limits the seed-to-voxel PPI maps shown to those contrasts
    (the per-condition maps stay in the outputs); None shows every map.
    """
    glass = str(run.entities.get("space", "")).startswith("MNI")
    background = _sources(run, "boldref")
    jobs: list[FigureJob] = []
    dsegs = run.files("dseg", ".nii.gz", atlas="*")
    for dseg in dsegs:
        jobs.append(FigureJob("ROI placement", figure_for(out_dir, dseg), lambda dseg=dseg: figures.plot_roi_placement(
            nib.load(dseg), _roi_table(dseg), _background(run), title=f"{run.label}: circuit ROIs on the BOLD grid"),
            [dseg, dseg.with_name(dseg.name.replace(".nii.gz", ".tsv")), *background]))
    series = run.files("timeseries", ".tsv", atlas="*", stat="*", desc=None)
    censoring = run.files("timeseries", ".tsv", desc="censoring")
    jobs.append(FigureJob("carpet plot", run.figure_path(out_dir, "bold", desc="carpetplot"), _carpet(run),
                          [*censoring, *series[:1], *_sources(run, "bold", "mask")]))
    relmats = run.files("relmat", ".tsv", atlas="*", stat="*", contrast=None)
    for atlas in sorted({parse_name(p)[0]["atlas"] for p in relmats}):
        tables = {parse_name(p)[0]["stat"]: p for p in relmats if parse_name(p)[0]["atlas"] == atlas}
        jobs.append(FigureJob("connectivity matrices", run.figure_path(out_dir, "relmat", atlas=atlas,
                                                                       desc="connectivity"),
                              lambda tables=tables: figures.plot_relmats(
                                  {stat: pd.read_csv(p, sep="\t", index_col=0) for stat, p in tables.items()},
                                  title=f"{run.label}: ROI-to-ROI connectivity"), list(tables.values())))
    for seed_map in run.files("boldmap", ".nii.gz", stat="fisherz"):
        seed = parse_name(seed_map)[0].get("desc", "")
        jobs.append(FigureJob(f"seed-to-voxel connectivity ({seed})", figure_for(out_dir, seed_map),
                              lambda m=seed_map, seed=seed: figures.plot_statmap(
                                  nib.load(m), f"{run.label}: seed {seed}, Fisher z", figures.FISHER_Z_THRESHOLD,
                                  glass=False, background=_background(run), cut_coords=_roi_centre(run, seed)),
                              [seed_map, *dsegs, *background]))
    for zmap in run.files("statmap", ".nii.gz", stat="z", model=None):
        contrast = parse_name(zmap)[0].get("contrast", "")
        jobs.append(FigureJob(f"activation z map ({contrast})", figure_for(out_dir, zmap),
                              lambda m=zmap, c=contrast: figures.plot_statmap(
                                  nib.load(m), f"{run.label}: contrast {c}, z", figures.Z_THRESHOLD, glass=glass,
                                  background=_background(run)), [zmap, *background]))
    for zmap in run.files("statmap", ".nii.gz", stat="z", model="*"):
        ents = parse_name(zmap)[0]
        if ppi_contrasts is not None and ents.get("contrast") not in ppi_contrasts:
            continue
        jobs.append(FigureJob(f"{ents['model']} seed map ({ents.get('desc')}, {ents.get('contrast')})",
                              figure_for(out_dir, zmap),
                              lambda m=zmap, e=ents: figures.plot_statmap(
                                  nib.load(m), f"{run.label}: {e['model']} seed {e.get('desc')}, {e.get('contrast')}, z",
                                  figures.Z_THRESHOLD, glass=glass, background=_background(run)), [zmap, *background]))
    return jobs


def draw(job: FigureJob, run: RunOutputs, path: Path | None = None) -> ReportletError | None:
    """Draw ``job``'s figure into ``path`` (default: its place in the figures folder), removing a
    stale file first; returns the error instead of raising when it cannot be made."""
    path = Path(path or job.path)
    path.unlink(missing_ok=True)
    try:
        figures.save_svg(job.make(), path)
    except Exception as err:  # noqa: BLE001 - any failure becomes a note in the report
        LOGGER.warning("report figure %s of sub-%s %s failed: %s", job.path.name, run.entities["sub"], run.label, err)
        return ReportletError(run.label, job.what, job.path.name, f"{type(err).__name__}: {err}")
    return None


def ppi_contrasts_of(run: RunOutputs, config: AnalysisConfig) -> set[str] | None:
    """BIDS labels of the contrasts of the run's task whose PPI maps are shown (None: all)."""
    task = config.tasks.get(run.entities["task"])
    return {bids_label(c) for c in task.contrasts} if task is not None else None


def _table(header: list[str], rows: list[list], classes: str = "table table-sm table-striped w-auto") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{classes}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _num(value, fmt: str = "{:g}") -> str:
    return "n/a" if value is None or (isinstance(value, float) and not np.isfinite(value)) else fmt.format(value)


def _volume_counts(run: RunOutputs) -> dict:
    """Volumes: total, dummy, censored for motion (not dummy), retained; residual dof."""
    censoring = run.censoring()
    counts = {"total": None, "dummy": run.qc.get("num_dummy_volumes"), "censored": None,
              "retained": run.qc.get("num_retained_volumes"), "dof": run.qc.get("dof_remaining")}
    if censoring is not None:
        dummy = censoring["dummy"].astype(bool)
        counts.update(total=len(censoring), dummy=int(dummy.sum()),
                      censored=int((censoring["motion_censored"].astype(bool) & ~dummy).sum()),
                      retained=int(censoring["retained"].astype(bool).sum()))
    return counts


def _input_cell(run: RunOutputs, role: str) -> str:
    uri = run.source_uris.get(role)
    if uri is None:
        return "&mdash;"
    found = "" if role in run.sources else ' <span class="badge text-bg-warning">not found</span>'
    return f'<code title="{html.escape(uri)}">{html.escape(uri.rsplit("/", 1)[-1])}</code>{found}'


def subject_summary(runs: list[RunOutputs], config_name: str, config_hash: str) -> str:
    """HTML: the runs processed (volumes, censoring, dof) and the input files of each."""
    if not runs:
        return '<p class="text-danger">No processed run was found in the output directory for this subject.</p>'
    rows, inputs = [], []
    for run in runs:
        n = _volume_counts(run)
        rows.append([html.escape(run.entities[k]) if k in run.entities else "&mdash;" for k in ("ses", "task", "run")] + [
            _num(run.tr), _num(n["total"]), _num(n["dummy"]), _num(n["censored"]), _num(n["retained"]),
            _num(n["dof"]), _num(run.qc.get("mean_fd"), "{:.3f}"),
            html.escape(str(run.qc.get("strategy", {}).get("strategy", "n/a")))])
        inputs.append([html.escape(run.label)] + [_input_cell(run, r) for r in ("bold", "mask", "confounds", "events")])
    hashes = sorted({r.config_hash for r in runs if r.config_hash})
    if hashes and hashes != [config_hash]:
        note = (f'<p class="text-danger">The outputs were made with configuration hash(es) '
                f'{", ".join(h[:12] for h in hashes)}, not the configuration described here '
                f"('{html.escape(config_name)}', {config_hash[:12]}).</p>")
    else:
        note = ""
    return (note + f"<h3>{len(runs)} runs processed</h3>"
            + _table(["Session", "Task", "Run", "TR (s)", "Volumes", "Dummy", "Censored (FD)", "Retained",
                      "Residual dof", "Mean FD (mm)", "ROI-series confounds"], rows)
            + "<h3>Inputs</h3>" + _table(["Run", "Preprocessed BOLD", "Brain mask", "Confounds", "Events"], inputs))


def exclusions_html(sub_dir: Path, subject: str) -> str:
    """HTML of ``sub-X_exclusions.tsv`` (runs skipped or excluded, with the reason)."""
    path = sub_dir / f"sub-{subject}_exclusions.tsv"
    if not path.is_file():
        return f'<p class="text-warning">No exclusion record ({path.name}) was found.</p>'
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if table.empty:
        return "<p>No run was excluded.</p>"
    return _table(list(table.columns), [[html.escape(v) for v in row] for row in table.itertuples(index=False)])


def roi_quality_html(run: RunOutputs) -> str:
    """A small table per atlas of the run's ROI quality (``desc-rois_qc.tsv``): voxels, tSNR,
    dropout and the coverage rule's decision; empty when the run has none."""
    out = ""
    for path in run.files("qc", ".tsv", atlas="*", desc="rois"):
        table = pd.read_csv(path, sep="\t", keep_default_na=False, na_values=["n/a", "NaN", "nan"])
        rows = [[html.escape(str(r.name)), _num(r.n_voxels), _num(r.tsnr, "{:.1f}"),
                 _num(100 * r.dropout_fraction, "{:.0f}"),
                 f'<span class="text-danger">excluded: {html.escape(str(r.reason))}</span>' if r.excluded else "kept"]
                for r in table.itertuples()]
        out += (f'<p class="small mb-0">ROI quality (atlas <code>{html.escape(parse_name(path)[0]["atlas"])}</code>)'
                "</p>" + _table(["ROI", "voxels", "tSNR (median)", "dropout %", "coverage rule"], rows))
    return out


def run_summary(run: RunOutputs, errors: list[ReportletError]) -> str:
    """HTML summary of one run: inputs, volumes, censoring, QC and the figures that failed."""
    n = _volume_counts(run)
    qc = run.qc
    items = [("Inputs", "<br>".join(f"{role}: {_input_cell(run, role)}" for role in ("bold", "mask", "confounds",
                                                                                       "events")
                                    if role in run.source_uris)),
             ("Repetition time", f"{_num(run.tr)} s"),
             ("Volumes", f"{_num(n['total'])} ({_num(n['dummy'])} dummy, {_num(n['censored'])} censored, "
                         f"{_num(n['retained'])} retained); residual degrees of freedom {_num(n['dof'])}"),
             ("Confounds", f"{html.escape(str(qc.get('strategy', {}).get('strategy', 'n/a')))}, "
                           f"{len(qc.get('confound_columns', []))} columns")]
    items += [(label, f"{_num(qc.get(first), fmt)} / {_num(qc.get(second), fmt)}")
              for label, first, second, fmt in _QC_PAIRS]
    for dseg in run.files("dseg", ".tsv", atlas="*"):
        table = pd.read_csv(dseg, sep="\t")
        if "n_voxels" in table:
            items.append((f"ROI voxels ({parse_name(dseg)[0]['atlas']})", ", ".join(
                f"{html.escape(str(r.name))} {int(r.n_voxels)}" for r in table.itertuples())))
    body = "".join(f"<dt class=\"col-sm-3\">{html.escape(k)}</dt><dd class=\"col-sm-9\">{v}</dd>" for k, v in items)
    out = f'<dl class="row small mb-1">{body}</dl>' + roi_quality_html(run)
    if errors:
        out += ('<div class="alert alert-warning py-1 small">Figures that could not be made: '
                + "; ".join(f"{html.escape(e.what)} ({html.escape(e.message)})" for e in errors) + "</div>")
    return out


def write_subject_fragments(out_dir: Path, subject: str, runs: list[RunOutputs], config: AnalysisConfig,
                            errors: list[ReportletError]) -> None:
    """The HTML fragments of ``sub-<subject>`` (subject and run summaries, exclusions), given the
    figures that failed; a fragment whose text is unchanged is not rewritten."""
    for run in runs:
        write_if_changed(run.figure_path(out_dir, "bold", desc="summary").with_suffix(".html"),
                         run_summary(run, [e for e in errors if e.where == run.label]))
    fig_dir = Path(out_dir) / f"sub-{subject}" / "figures"
    write_if_changed(fig_dir / f"sub-{subject}_desc-summary_bold.html",
                     subject_summary(runs, config.name, config.digest()))
    write_if_changed(fig_dir / f"sub-{subject}_desc-exclusions_bold.html",
                     exclusions_html(Path(out_dir) / f"sub-{subject}", subject))


def write_if_changed(path: Path, text: str) -> Path:
    """Write ``text`` unless ``path`` holds it already (so its time stamp tells when it changed)."""
    path = Path(path)
    if not path.is_file() or path.read_text() != text:
        write_text(path, text)
    return path
