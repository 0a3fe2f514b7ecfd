"""Per-ROI measurement quality (voxels, tSNR, dropout, coverage rule) of every run of a dataset.

For each BOLD run of an fMRIPrep-style dataset (e.g. one written by ``ketflow-simulate``, with
or without ``--dropout``): the packaged anatomical circuit atlas on the run's grid (majority
vote), restricted to the run's brain mask and to grey matter (fMRIPrep's
``*_space-<space>[_res-N]_label-GM_probseg.nii.gz`` of the subject when present, else the
template's; probability > 0.5), then :func:`ketflow.signal.roi_quality.roi_quality` on the
steady-state volumes (fMRIPrep's ``non_steady_state_outlier`` columns dropped) and the default
coverage rule. Prints the median over runs per ROI and the exclusions; ``--tsv`` writes every
run's rows. This is the computation the participant workflow's ROI QC node is to run
(docs/rois.md).

Run::

    PYTHONPATH=. NIPYPE_NO_ET=1 MPLBACKEND=Agg OMP_NUM_THREADS=1 \\
        python benchmarks/roi_quality_demo.py --bids demo/bids [--tasks faces] [--subjects 2] [--tsv out.tsv]
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ketflow.signal import rois
from ketflow.signal.roi_quality import CoverageRule, apply_coverage_rule, roi_quality


def grey_matter(anat_dir: Path, sub: str, space: str, shape, affine) -> tuple[np.ndarray, str]:
    """Grey-matter mask on the run's grid and where it came from."""
    found = sorted(anat_dir.glob(f"sub-{sub}*_space-{space}*_label-GM_probseg.nii.gz")) if anat_dir.is_dir() else []
    if found:
        img = nib.load(found[0])
        prob, source = np.asarray(img.dataobj, dtype=np.float32), found[0].name
        prob_affine = img.affine
    else:
        (prob, prob_affine), source = rois.template_grey_matter(), "template (nilearn ICBM 2009a GM)"
    return rois.grey_matter_mask(rois.resample_probability(prob, prob_affine, shape, affine)), source


def run_quality(bold: Path, mask_file: Path, confounds: Path, grey: np.ndarray, atlas) -> pd.DataFrame:
    mask_img = nib.load(mask_file)
    mask = np.asarray(mask_img.dataobj) > 0
    labels, atlas_affine, names = atlas
    roiset = rois.anatomical_roiset(labels, atlas_affine, names, mask.shape, mask_img.affine, mask, grey)
    table = pd.read_csv(confounds, sep="\t", na_values="n/a")
    dummies = [c for c in table.columns if c.startswith("non_steady_state_outlier")]
    steady = ~table[dummies].to_numpy().any(axis=1) if dummies else np.ones(len(table), bool)
    data = np.asarray(nib.load(bold).dataobj)[mask].T[steady]
    quality = roi_quality(data, roiset.labels[mask], names)
    quality.insert(1, "n_voxels_atlas", roiset.n_voxels_unmasked)
    return quality


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bids", type=Path, required=True)
    parser.add_argument("--space", default="MNI152NLin2009cAsym")
    parser.add_argument("--tasks", default=None, help="comma-separated tasks (default all)")
    parser.add_argument("--subjects", type=int, default=None, help="first N subjects")
    parser.add_argument("--min-voxels", type=int, default=rois.MIN_VOXELS)
    parser.add_argument("--tsv", type=Path)
    args = parser.parse_args(argv)
    fmriprep = args.bids / "derivatives" / "fmriprep"
    atlas = rois.read_circuit_atlas()
    rule = CoverageRule(min_voxels=args.min_voxels)
    tasks = args.tasks.split(",") if args.tasks else None
    subjects = sorted(p.name[4:] for p in fmriprep.glob("sub-*") if p.is_dir())[: args.subjects]
    rows, sources, start = [], set(), time.process_time()
    for sub in subjects:
        for bold in sorted(fmriprep.glob(f"sub-{sub}/**/func/*_space-{args.space}*_desc-preproc_bold.nii.gz")):
            task = re.search(r"task-([^_]+)", bold.name).group(1)
            if tasks and task not in tasks:
                continue
            stem = bold.name.split(f"_space-{args.space}")[0]
            mask_file = next(bold.parent.glob(f"{stem}_space-{args.space}*_desc-brain_mask.nii.gz"))
            mask_img = nib.load(mask_file)
            grey, source = grey_matter(fmriprep / f"sub-{sub}" / "anat", sub, args.space,
                                       mask_img.shape, mask_img.affine)
            sources.add(source.split("_space")[0] if "probseg" in source else source)
            quality = run_quality(bold, mask_file, bold.parent / f"{stem}_desc-confounds_timeseries.tsv", grey, atlas)
            rows.append(apply_coverage_rule(quality, rule).assign(run=stem, task=task))
    table = pd.concat(rows, ignore_index=True)
    pd.set_option("display.width", 200)
    print(f"{args.bids}: {table['run'].nunique()} runs; grey matter from {sorted(sources)}; "
          f"{time.process_time() - start:.1f} s CPU")
    summary = table.groupby("name", sort=False).agg(
        n_voxels_atlas=("n_voxels_atlas", "median"), n_voxels=("n_voxels", "median"), tsnr=("tsnr", "median"),
        tsnr_roi_signal=("tsnr_roi_signal", "median"), mean_ratio=("mean_ratio", "median"),
        dropout_fraction=("dropout_fraction", "median"), runs_excluded=("excluded", "sum"))
    print(summary.round(3).to_string())
    excluded = table[table["excluded"]]
    if len(excluded):
        print(excluded[["run", "name", "reason"]].to_string(index=False))
    if args.tsv:
        table.to_csv(args.tsv, sep="\t", index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
