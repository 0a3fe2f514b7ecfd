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

``--participant`` times the reports inside the participant level instead (issue 17.1): it
simulates two subjects (one per arm) and processes one (``--voxel-size``, default 4 mm, the demo's), runs ``ketflow
participant`` three times on the same work directory and prints, from the log's time stamps:
the participant workflow, the figure nodes and the page of the first run; then, for a rerun
with nothing changed, Nipype's cache check of the participant workflow and the whole rerun
(target: under 1.5x the cache check); and the time of ``--reports-only`` with nothing changed.
Targets: figures and page under 10 s per subject at 4 mm.  ``--quick`` uses 60 volumes per run.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from datetime import datetime
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


def _stamps(log: str) -> list[tuple[float, str]]:
    """(seconds since midnight, message) of every ketflow log line."""
    found = []
    for line in log.splitlines():
        match = re.match(r"^(\d\d:\d\d:\d\d) \[ketflow\] \w+: (.*)$", line)
        if match:
            clock = datetime.strptime(match.group(1), "%H:%M:%S")
            found.append((clock.hour * 3600 + clock.minute * 60 + clock.second, match.group(2)))
    return found


def _between(stamps, first: str, last: str) -> float:
    """Seconds from the first line starting with ``first`` to the last starting with ``last``."""
    start = next(t for t, m in stamps if m.startswith(first))
    end = [t for t, m in stamps if m.startswith(last)][-1]
    return end - start


def _ketflow(*args) -> tuple[str, float, float]:
    """Run the command line; (stdout, wall s, CPU s of the process and its children)."""
    env = dict(os.environ, NIPYPE_NO_ET="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    before, wall = os.times(), time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ketflow", *map(str, args)], capture_output=True, text=True,
                          env=env, check=False)
    after = os.times()
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
    return proc.stdout, time.perf_counter() - wall, after.children_user - before.children_user


def participant_bench(workdir: Path, voxel_size: float, n_volumes: int | None, nprocs: int) -> None:
    """Time the reports inside the participant level (see the module docstring)."""
    from ketflow.simulate import simulate_dataset

    root = workdir / f"reports_{voxel_size:g}mm"
    bids = root / "bids"
    if not bids.is_dir():
        simulate_dataset(bids, n_subjects=2, seed=1, voxel_size=voxel_size,
                         **({"n_volumes": n_volumes} if n_volumes else {}))
    out, work = root / "out", root / "work"
    for folder in (out, work):
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    args = (bids, out, "participant", "-w", work, "--nprocs", nprocs, "--skip-bids-validation", "--participant-label",
            "01")
    rows = []
    log, wall, cpu = _ketflow(*args)
    stamps = _stamps(log)
    rows += [("first run: participant level", wall, cpu),
             ("first run: participant workflow", _between(stamps, "running ketflow_wf", "report figures of"), None),
             ("first run: report figures (nodes)", _between(stamps, "report figures of", "[1/1] report"), None),
             ("first run: report page", _between(stamps, "[1/1] report", "[1/1] report"), None)]
    log, wall, cpu = _ketflow(*args)
    stamps = _stamps(log)
    check = _between(stamps, "running ketflow_wf", "report figures of")
    rows += [("rerun: Nipype cache check of the participant workflow", check, None),
             ("rerun: reports (figure check + page)", _between(stamps, "report figures of", "[1/1] report"), None),
             ("rerun: participant level", wall, cpu)]
    log, wall, cpu = _ketflow(*args, "--reports-only")
    rows.append(("--reports-only, nothing changed", wall, cpu))
    print(f"one subject, {voxel_size:g} mm, --nprocs {nprocs}; load: {os.getloadavg()}")
    print("| step | wall (s) | CPU (s) |\n|---|---|---|")
    for name, seconds, cpu_s in rows:
        print(f"| {name} | {seconds:.0f} | {'' if cpu_s is None else f'{cpu_s:.0f}'} |")
    print(f"rerun / cache check: {rows[6][1] / max(check, 1):.2f} (target < 1.5; log time stamps have 1 s resolution)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ketflow_bench"))
    parser.add_argument("--participant", action="store_true",
                        help="time the reports inside the participant level (one simulated subject)")
    parser.add_argument("--voxel-size", type=float, default=4.0, help="with --participant: voxel size (mm)")
    parser.add_argument("--nprocs", type=int, default=2, help="with --participant: processes")
    parser.add_argument("--quick", action="store_true", help="with --participant: 60 volumes per run")
    args = parser.parse_args(argv)
    if args.participant:
        participant_bench(args.workdir, args.voxel_size, 60 if args.quick else None, args.nprocs)
        return
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
