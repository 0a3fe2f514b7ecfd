"""The voxelwise section of the group report and its methods paragraph.

Built from ``output_dir/group/voxelwise/`` only (so ``--reports-only`` rebuilds it): the list
of tests (``analyses.tsv``) with, for each test that ran, its subjects and the number of
FWE-significant voxels per correction (from the sidecar of its t map); for each test with a
significant result, a glass brain and orthogonal slices of its t map restricted to the
significant voxels (TFCE FWE when computed, else voxel FWE) and its cluster table. The
figures are written to ``group/voxelwise/figures/`` when the report is built.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ..config import SLOPPY_GROUP, AnalysisConfig
from .figures import plot_statmap, save_svg

#: Corrections in the order the report prefers them for figures.
FIGURE_CORRECTIONS = ("tfceFWE", "voxelFWE", "clusterMassFWE", "svcTfceFWE", "svcVoxelFWE")
#: Corrections in the order of the report's tables.
TABLE_CORRECTIONS = ("voxelFWE", "tfceFWE", "clusterMassFWE", "svcVoxelFWE", "svcTfceFWE")
#: Most tests drawn (those with the most significant voxels); the others are listed with their cluster tables.
MAX_FIGURE_TESTS = 12
#: Columns of the cluster tables shown in the report.
SHOWN_CLUSTER_COLUMNS = ["correction", "sign", "n_voxels", "volume_mm3", "x_mm", "y_mm", "z_mm", "peak_t", "p_fwe",
                         "nearest_roi", "roi_distance_mm", "anatomical_label"]


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=["n/a"])


def _html_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "<p>None.</p>"
    return table.to_html(index=False, float_format=lambda v: f"{v:.3g}", border=0, na_rep="n/a")


def _test_row(folder: Path, row) -> dict | None:
    """The report's summary of one test that ran (None when its outputs are missing)."""
    clusters = folder / row.clusters
    t_map = folder / row.clusters.replace("_clusters.tsv", "_stat-t_statmap.nii.gz")
    sidecar = t_map.with_name(t_map.name.replace(".nii.gz", ".json"))
    if not (clusters.is_file() and t_map.is_file() and sidecar.is_file()):
        return None
    meta = json.loads(sidecar.read_text())
    return {"meta": meta, "clusters": clusters, "t_map": t_map}


def _figures(out_dir: Path, info: dict, label: str, alpha: float) -> list[str]:
    """Glass brain and slices of the t map within the significant voxels of the first correction that has any."""
    folder = info["t_map"].parent
    significant = info["meta"].get("SignificantVoxels", {})
    correction = next((c for c in FIGURE_CORRECTIONS if significant.get(c)), None)
    if correction is None:
        return []
    logp = folder / info["t_map"].name.replace("_stat-t_", f"_stat-logp_desc-{correction}_")
    if not logp.is_file():
        return [f'<p class="warning">Missing: {html.escape(logp.name)}</p>']
    t_img = nib.load(info["t_map"])
    keep = np.asanyarray(nib.load(logp).dataobj) > -np.log10(alpha)
    shown = nib.Nifti1Image(np.where(keep, np.asanyarray(t_img.dataobj), 0).astype(np.float32), t_img.affine)
    values = np.abs(np.asanyarray(shown.dataobj))
    peak = np.unravel_index(np.argmax(values), values.shape)
    cut = tuple(float(c) for c in (np.asarray(peak, dtype=float) @ t_img.affine[:3, :3].T + t_img.affine[:3, 3]))
    threshold = float(values[keep].min()) * 0.999 if keep.any() else 0.0
    title = f"{label}: t where {correction} p < {alpha}"
    stem = info["t_map"].name.replace("_stat-t_statmap.nii.gz", "")
    parts = []
    for kind, glass in (("glass", True), ("slices", False)):
        path = folder / "figures" / f"{stem}_desc-{kind}{correction}_figure.svg"
        if not path.is_file() or path.stat().st_mtime < max(info["t_map"].stat().st_mtime, logp.stat().st_mtime):
            fig = plot_statmap(shown, title, threshold, glass=glass,
                               background=_background(t_img) if not glass else None,
                               cut_coords=cut if not glass else None)
            save_svg(fig, path)
        rel = path.relative_to(out_dir).as_posix()
        parts.append(f'<div class="figure"><object type="image/svg+xml" data="{rel}"></object>'
                     f'<div class="caption"><a href="{rel}">{html.escape(path.name)}</a></div></div>')
    return parts


def _background(img):
    """The MNI152NLin2009cAsym brain at the nearest template resolution, or None (nilearn's default)."""
    from ..templates import TemplateUnavailableError, get_template

    try:
        return str(get_template(resolution=1 if abs(img.affine[0, 0]) < 1.5 else 2))
    except TemplateUnavailableError:
        return None


def _label(meta: dict) -> str:
    first = meta["FirstLevel"]
    what = {"activation": f"activation {first['Contrast']}", "gppi": f"gPPI {first['Seed']} {first['Contrast']}",
            "fc": f"FC {first['Seed']}"}.get(first["Family"], first["Family"])
    design = meta["Model"]["Design"]
    session = f" ses-{first['Sessions'][0]}" if design == "one_sample" else ""
    return f"task-{first['Task']} {what}, {design}{session}"


def voxelwise_section(out_dir: Path, config: AnalysisConfig) -> list[str]:
    """HTML parts of the voxelwise section (empty when the voxelwise second level is off)."""
    v = config.group.voxelwise
    folder = Path(out_dir) / "group" / "voxelwise"
    if not v.enabled:
        return []
    parts = ["<h2>Voxelwise second level</h2>"]
    table_path = folder / "analyses.tsv"
    if not table_path.is_file():
        return parts + ['<p class="warning">group/voxelwise/analyses.tsv is missing: no voxelwise outputs.</p>']
    analyses = _read(table_path).fillna("")
    sloppy = v.n_permutations <= SLOPPY_GROUP["n_permutations"]
    parts.append(
        f"<p>First-level maps smoothed with a {v.smoothing_fwhm:g} mm FWHM Gaussian kernel; group mask = voxels inside "
        f"every subject's map; up to {v.n_permutations} sign flips / arm relabellings per test"
        + (" (<strong>--sloppy or a small count: for testing only, do not report these p-values</strong>)"
           if sloppy else "")
        + f"; family-wise error (α = {v.alpha:g}, {'two' if v.two_sided else 'one'}-sided) by voxel-level max |t|"
        + (", TFCE" if v.tfce else "")
        + (f", cluster mass at p &lt; {v.cluster_forming_p:g}" if v.cluster_forming_p else "")
        + (" and small-volume correction within the circuit ROIs" if v.small_volume else "")
        + ". Tests and reasons: <a href=\"group/voxelwise/analyses.tsv\">analyses.tsv</a>.</p>")
    ran = analyses[analyses["status"] == "run"]
    rows, significant = [], []
    for row in ran.itertuples(index=False):
        info = _test_row(folder, row)
        if info is None:
            rows.append({"test": row.clusters, "subjects": row.n_subjects, "status": "outputs missing (see logs/crash/)"})
            continue
        meta = info["meta"]
        counts = meta.get("SignificantVoxels", {})
        summary = {"test": _label(meta), "subjects": meta["NSubjects"],
                   "rearrangements": meta["Permutation"]["Rearrangements"]}
        summary.update({f"{c} voxels": counts[c] for c in TABLE_CORRECTIONS if c in counts})
        rows.append(summary)
        if any(counts.values()):
            significant.append((max(counts.values()), info))
    significant.sort(key=lambda item: -item[0])
    details = []
    for rank, (_, info) in enumerate(significant):
        meta, label = info["meta"], _label(info["meta"])
        clusters = _read(info["clusters"])
        details += [f"<h4>{html.escape(label)}</h4>",
                    f"<p>{meta['NSubjects']} subjects, {html.escape(meta['Model']['Formula'])}; "
                    f"<a href=\"group/voxelwise/{info['clusters'].name}\">cluster table</a>.</p>",
                    *(_figures(Path(out_dir), info, label, v.alpha) if rank < MAX_FIGURE_TESTS else []),
                    _html_table(clusters[[c for c in SHOWN_CLUSTER_COLUMNS if c in clusters.columns]])]
    parts += [f"<p>{len(ran)} test(s) run, {int((analyses['status'] == 'skipped').sum())} skipped.</p>",
              _html_table(pd.DataFrame(rows))]
    skipped = analyses[analyses["status"] == "skipped"]
    if len(skipped):
        parts.append(f"<details><summary>Tests not run and why ({len(skipped)})</summary>"
                     + _html_table(skipped[["family", "task", "contrast", "seed", "design", "session", "reason"]])
                     + "</details>")
    if details:
        parts += ["<h3>Significant results</h3>",
                  f"<p>{len(significant)} test(s) with voxels significant after FWE correction, the most extensive "
                  f"first; figures for the first {min(len(significant), MAX_FIGURE_TESTS)} (the t map where the "
                  "first available of TFCE, voxel, cluster-mass, small-volume TFCE and small-volume voxel FWE "
                  "is significant).</p>", *details]
    else:
        parts.append("<p>No voxel is significant after family-wise error correction in any test.</p>")
    return parts


def voxelwise_methods(config: AnalysisConfig) -> str:
    """The methods paragraph of the voxelwise second level ("" when it is off)."""
    v, s, c = config.group.voxelwise, config.sessions, config.clinical
    if not v.enabled:
        return ""
    kinds = {"activation": "activation contrast estimates", "gppi": "seed-to-voxel gPPI estimates",
             "fc": "seed-to-voxel resting connectivity (Fisher z) maps"}
    maps = ", ".join(kinds[m] for m in v.maps if m in kinds)
    designs = {"one_sample": f"a one-sample test at each session ({s.baseline}, {s.followup})",
               "paired_change": f"a paired test of the change ({s.followup} − {s.baseline})",
               "arm_by_change": f"the difference between arms of that change ({c.arms[0]} +0.5, "
                                f"{c.arms[-1]} −0.5; arm × session interaction)"}
    text = f"""

Voxelwise second-level maps were computed for the {maps}. Each subject's session map was the
session-level fixed-effects map where one existed, else the average of its runs' maps. Maps were
smoothed with a {v.smoothing_fwhm:g} mm FWHM Gaussian kernel and analysed within the voxels covered by
every subject's map, with {'; '.join(designs[d] for d in v.designs)}{', with covariates ' + ', '.join(c.covariates)
if c.covariates else ''}. Parametric effect, t, z and p maps were estimated with nilearn's
SecondLevelModel (ordinary least squares). Family-wise error (FWE) was controlled by
permutation (nilearn's non_parametric_inference model and statistic; {v.n_permutations} sign flips
for one-sample and paired tests, relabellings of the arm for the arm test, all of them when
fewer exist; seed {v.seed}) with the maximum statistic over the mask (Nichols & Holmes 2002;
Winkler et al. 2014), {'two' if v.two_sided else 'one'}-sided, at the voxel level"""
    if v.tfce:
        text += ", by threshold-free cluster enhancement (TFCE, E = 0.5, H = 2; Smith & Nichols 2009)"
    if v.cluster_forming_p:
        text += (f" and by cluster mass at a cluster-forming threshold of p < {v.cluster_forming_p:g} "
                 "(Bullmore et al. 1999)")
    if v.small_volume:
        text += "; voxel-level and TFCE FWE were also corrected within the circuit mask (the union of the circuit ROIs)"
    text += (f". Clusters of voxels with FWE p < {v.alpha:g} are reported with their peak MNI coordinates, the "
             "nearest circuit ROI and the AAL2 label at the peak (Tzourio-Mazoyer et al. 2002; Rolls et al. 2015).")
    return text


def voxelwise_references(config: AnalysisConfig) -> str:
    """Reference list lines of :func:`voxelwise_methods` ("" when off)."""
    if not config.group.voxelwise.enabled:
        return ""
    return "".join(f"- {ref}\n" for ref in (
        "Bullmore ET, Suckling J, Overmeyer S, et al. (1999). Global, voxel, and cluster tests, by theory and "
        "permutation, for a difference between two groups of structural MR images of the brain. IEEE Trans Med "
        "Imaging 18:32-42.",
        "Nichols TE, Holmes AP (2002). Nonparametric permutation tests for functional neuroimaging: a primer with "
        "examples. Hum Brain Mapp 15:1-25.",
        "Rolls ET, Joliot M, Tzourio-Mazoyer N (2015). Implementation of a new parcellation of the orbitofrontal "
        "cortex in the automated anatomical labeling atlas. NeuroImage 122:1-5.",
        "Smith SM, Nichols TE (2009). Threshold-free cluster enhancement. NeuroImage 44:83-98.",
        "Tzourio-Mazoyer N, Landeau B, Papathanassiou D, et al. (2002). Automated anatomical labeling of "
        "activations in SPM. NeuroImage 15:273-289.",
        "Winkler AM, Ridgway GR, Webster MA, Smith SM, Nichols TE (2014). Permutation inference for the general "
        "linear model. NeuroImage 92:381-397.",
    ))
