"""Benchmark: denoising + circuit ROI extraction on a full-size run vs reading it once.

A synthetic run on fMRIPrep's MNI152NLin2009cAsym res-2 grid (97 x 115 x 97, 200 volumes,
float32, .nii.gz; brain mask = ketflow's offline template mask) and a 36P confounds TSV are
written once into the work directory. Then, each timed in a fresh step:

1. ``read``: ``np.asanyarray(nib.load(bold).dataobj)`` -- reading the NIfTI once;
2. ``ketflow``: read in-mask voxels volume by volume into a (time, voxels) float32 matrix,
   select 36P confounds + FD censoring, one-regression denoising (cosine high-pass 128 s),
   ROI means of the 9 circuit spheres;
3. ``ketflow_eigenvariate``: the same with SPM-convention eigenvariates;
4. ``nilearn_labels``: ``NiftiLabelsMasker`` with the same confounds, sample mask and
   cosine high-pass (averages first, then cleans 9 series: less work than ketflow, which
   denoises every voxel so seed maps and eigenvariates are possible);
5. ``nilearn_voxels``: ``NiftiMasker`` doing ketflow's voxel-level job (mask + clean).

Run (about 3 minutes, ~4 GB RAM, most of it writing the synthetic file the first time)::

    NIPYPE_NO_ET=1 OMP_NUM_THREADS=1 /work/venv/bin/python benchmarks/extract_denoise_bench.py \
        --workdir /tmp/ketflow_bench

Prints a Markdown table and writes ``timings.json`` into the work directory.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from common import TR, make_inputs

from ketflow.io.boldcache import read_mask, read_masked_bold
from ketflow.io.confounds import ConfoundStrategy, load_confounds
from ketflow.signal.denoise import denoise
from ketflow.signal.extract import extract


def timed(func):
    gc.collect()
    start = time.perf_counter()
    out = func()
    return time.perf_counter() - start, out


def ketflow_job(paths, method):
    mask = read_mask(paths["mask"])
    data = read_masked_bold(paths["bold"], mask)
    strategy = ConfoundStrategy("36P", fd_threshold=0.5, min_segment=5)
    conf = load_confounds(paths["confounds"], None, strategy, n_volumes=data.shape[0])
    result = denoise(data, conf.regressors.to_numpy(), TR, keep=conf.keep, high_pass_s=128.0, min_volumes=40)
    labels = np.asanyarray(nib.load(paths["labels"]).dataobj)[mask]
    return extract(result.data, labels, int(labels.max()), method), conf


def nilearn_labels_job(paths, conf):
    from nilearn.maskers import NiftiLabelsMasker

    masker = NiftiLabelsMasker(
        str(paths["labels"]), mask_img=str(paths["mask"]), t_r=TR, high_pass=1 / 128.0,
        standardize=None, detrend=False, clean_args={"filter": "cosine"},
    )
    return masker.fit_transform(
        str(paths["bold"]), confounds=conf.regressors.to_numpy(), sample_mask=np.flatnonzero(conf.keep)
    )


def nilearn_voxels_job(paths, conf):
    from nilearn.maskers import NiftiMasker

    masker = NiftiMasker(
        str(paths["mask"]), t_r=TR, high_pass=1 / 128.0, standardize=None, detrend=False,
        clean_args={"filter": "cosine"},
    )
    return masker.fit_transform(
        str(paths["bold"]), confounds=conf.regressors.to_numpy(), sample_mask=np.flatnonzero(conf.keep)
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ketflow_bench"))
    parser.add_argument("--n-volumes", type=int, default=200)
    args = parser.parse_args(argv)
    t_make, paths = timed(lambda: make_inputs(args.workdir, args.n_volumes))
    t_read, full = timed(lambda: np.asanyarray(nib.load(paths["bold"]).dataobj))
    shape = full.shape
    del full
    t_kf, (kf_means, conf) = timed(lambda: ketflow_job(paths, "mean"))
    t_kf_eig, _ = timed(lambda: ketflow_job(paths, "eigenvariate"))
    t_nl, nl_means = timed(lambda: nilearn_labels_job(paths, conf))
    t_nv, _ = timed(lambda: nilearn_voxels_job(paths, conf))
    agreement = float(np.abs(kf_means - (nl_means - nl_means.mean(axis=0))).max())
    timings = {
        "shape": list(shape),
        "n_voxels_in_mask": int(read_mask(paths["mask"]).sum()),
        "seconds": {
            "make_inputs": t_make, "read": t_read, "ketflow": t_kf, "ketflow_eigenvariate": t_kf_eig,
            "nilearn_labels": t_nl, "nilearn_voxels": t_nv,
        },
        "ketflow_over_read": t_kf / t_read,
        "max_abs_diff_roi_means_vs_nilearn": agreement,
    }
    (args.workdir / "timings.json").write_text(json.dumps(timings, indent=2))
    print(f"grid {shape}, {timings['n_voxels_in_mask']} in-mask voxels")
    print("| step | seconds | / read |\n|---|---|---|")
    for name, sec in timings["seconds"].items():
        if name != "make_inputs":
            print(f"| {name} | {sec:.2f} | {sec / t_read:.2f} |")
    print(f"max |ketflow - nilearn| ROI means: {agreement:.2e}")


if __name__ == "__main__":
    main()
