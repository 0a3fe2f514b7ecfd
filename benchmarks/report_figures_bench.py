"""Benchmark: the participant report's figures of one full-size run.

Uses the synthetic full-size run of ``extract_denoise_bench.py`` (fMRIPrep's
MNI152NLin2009cAsym res-2 grid, 97 x 115 x 97, 200 volumes, float32 .nii.gz; circuit spheres
as labels), written into the work directory on first use, and times each figure that
:mod:`ketflow.reports.reportlets` draws for a run, including reading its inputs and writing
the SVG:

* ``roi_placement``: the 9 circuit ROIs over the template T1w (as the BOLD reference);
* ``carpet``: reading the in-mask BOLD once, DVARS, FD/censoring panels, carpet, ROI signals;
* ``relmats``: six 9 x 9 connectivity matrices;
* ``glass_brain``: one z map (activation or gPPI) as a glass brain;
* ``seed_map``: one seed-to-voxel map as slices over the reference.

Run from the repository root (about a minute once the synthetic run exists)::

    NIPYPE_NO_ET=1 MPLBACKEND=Agg OMP_NUM_THREADS=1 /work/main/.venv/bin/python \\
        benchmarks/report_figures_bench.py --workdir /tmp/ketflow_bench

Prints a Markdown table (wall and CPU seconds, SVG size per figure).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from common import make_inputs

from ketflow import templates
from ketflow.io.boldcache import read_mask, read_masked_bold
from ketflow.reports import figures
from ketflow.signal.rois import read_sphere_table


def timed(name, make, out_dir: Path, rows: list):
    wall, cpu = time.perf_counter(), time.process_time()
    path = figures.save_svg(make(), out_dir / f"{name}.svg")
    rows.append((name, time.perf_counter() - wall, time.process_time() - cpu, path.stat().st_size / 1e3))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ketflow_bench"))
    args = parser.parse_args(argv)
    paths = make_inputs(args.workdir, 200)
    out = args.workdir / "report_figures"
    background = nib.load(templates.get_template(resolution=2))
    labels_img = nib.load(paths["labels"])
    names = [s.name for s in read_sphere_table()]
    table = pd.DataFrame({"index": np.arange(1, len(names) + 1), "name": names})
    conf = pd.read_csv(paths["confounds"], sep="\t")
    fd = conf["framewise_displacement"].to_numpy()
    censoring = pd.DataFrame({"framewise_displacement": fd, "dummy": 0, "motion_censored": (fd > 0.5).astype(int)})
    censoring["retained"] = 1 - censoring["motion_censored"]
    rng = np.random.default_rng(0)
    signals = pd.DataFrame(rng.normal(size=(int(censoring["retained"].sum()), len(names))), columns=names)
    mask = read_mask(paths["mask"])
    zdata = np.zeros(mask.shape, np.float32)
    zdata[mask] = rng.normal(size=int(mask.sum()))
    zmap = nib.Nifti1Image(zdata, labels_img.affine)
    matrix = pd.DataFrame(np.corrcoef(rng.normal(size=(len(names), 50))), index=names, columns=names)
    rows: list = []
    timed("roi_placement", lambda: figures.plot_roi_placement(labels_img, table, background), out, rows)
    timed("carpet", lambda: figures.plot_carpet(read_masked_bold(paths["bold"], read_mask(paths["mask"])),
                                                censoring, 2.0, 0.5, signals), out, rows)
    timed("relmats", lambda: figures.plot_relmats({m: matrix for m in figures.RELMAT_ORDER}), out, rows)
    timed("glass_brain", lambda: figures.plot_statmap(zmap, "z", figures.Z_THRESHOLD, glass=True), out, rows)
    timed("seed_map", lambda: figures.plot_statmap(zmap, "seed", figures.FISHER_Z_THRESHOLD, glass=False,
                                                   background=background, cut_coords=(0, 43, -14)), out, rows)
    print("| figure | wall (s) | CPU (s) | SVG (kB) |\n|---|---|---|---|")
    for name, wall, cpu, size in rows:
        print(f"| {name} | {wall:.1f} | {cpu:.1f} | {size:.0f} |")


if __name__ == "__main__":
    main()
