"""Benchmark: the whole participant level of one full-size subject vs a careful nilearn script.

Data: one subject of a simulated trial at fMRIPrep's 2 mm MNI152NLin2009cAsym grid
(97 x 115 x 97, float32 ``.nii.gz``), 2 sessions x faces, conflict and rest, 200 volumes each
(``ketflow.simulate.simulate_dataset(..., voxel_size=2, res_entity=True, n_volumes=200)``;
the simulator needs two subjects, the benchmark runs ``sub-01``). ``--bids DIR`` reuses an
existing dataset of that kind instead of simulating one into ``--workdir``.

Steps, each a separate process tree timed the same way (wall time; peak memory of the whole
process tree, sampled every 0.2 s from ``/proc``: the sum over all descendants of RSS, and of
PSS, which counts a page shared by several processes once; CPU time from the kernel; the
1-minute load average of the machine before and after):

* ``read``: read each of the subject's six BOLD series once with nibabel
  (``np.asanyarray(nib.load(path).dataobj)``), one after the other: the floor of any tool.
* ``ketflow``: ``ketflow BIDS OUT participant --participant-label 01 --nprocs 2`` with the
  default (reference-study) configuration and a fresh work directory: ROIs, denoising,
  ROI series, rest connectivity with seed maps, task GLMs, gPPI with seed maps, DCM with its
  model space, fixed effects across runs, reports.
* ``nilearn``: :func:`nilearn_reference`, a hand-written nilearn 0.14 script doing the
  reference job of docs/performance.md on the same data: each BOLD loaded once into memory
  and shared by every step of its run; ``load_confounds`` (motion + WM/CSF + global signal
  with derivatives and squares, i.e. 36P, with FD scrubbing at 0.5 mm); rest runs:
  ``NiftiSpheresMasker`` on the 9 circuit spheres (cosine high-pass 128 s as confounds) and
  ``ConnectivityMeasure`` (correlation, partial correlation); task runs: one design matrix
  (``make_first_level_design_matrix``: SPM HRF, cosine high-pass 128 s, the confounds;
  conflict trials split into congruent / iI / cI) fitted by ``FirstLevelModel`` (AR(1),
  percent signal change, scrubbed volumes left out, ``n_jobs=2``) with the task contrasts
  (effect, variance and z maps written), and a plain (not generalised, not deconvolved) PPI
  per seed in {vmPFC, amygdala_L, amygdala_R}: that design plus the seed's cleaned sphere
  signal and its product with the centred fearful-vs-neutral (faces) or
  incongruent-vs-congruent (conflict) regressor, fitted voxelwise by a second
  ``FirstLevelModel``.

Run (about 15 minutes on 2 cores; 4 GB free memory; simulating the data adds ~5 min once)::

    NIPYPE_NO_ET=1 MPLBACKEND=Agg .venv/bin/python benchmarks/participant_bench.py --workdir /tmp/ketflow-bench \\
        [--bids EXISTING_FULL_SIZE_BIDS] [--steps read ketflow nilearn] [--repeat 1]

Comparing two versions of ketflow on a loaded machine: ``--code before=/path/to/old/checkout
--code after=.`` runs the ``ketflow`` step once per version and repeat, alternating (before,
after, before, after, ...), each with ``PYTHONPATH`` set to that checkout, and prints the
medians per version; ``--quick`` uses a small dataset (4 mm, 60 volumes) for a smoke run.

Prints a Markdown table and appends every measurement to ``WORKDIR/results.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SUBJECT = "01"
SAMPLE_S = 0.2
TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- measuring


def _children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids of every process now on the machine (from /proc/<pid>/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])  # field 4; the name may hold spaces
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    children, tree, todo = _children_map(), [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def memory_of(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in bytes; (0, 0) once it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            values = {}
            for line in handle:
                parts = line.split()
                if parts[0] in ("Rss:", "Pss:"):
                    values[parts[0]] = int(parts[1]) * 1024
        return values.get("Rss:", 0), values.get("Pss:", 0)
    except (OSError, ValueError, IndexError):
        return 0, 0


def cpu_of(pid: int) -> float:
    """CPU time (user + system, s) a process has used so far; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)
    except (OSError, IndexError, ValueError):
        return 0.0


def measure(cmd: list[str], log: Path, env: dict | None = None, cwd: Path | None = None) -> dict:
    """Run ``cmd`` and return its wall time, CPU time (all, and of the main process alone), peak
    process-tree memory and the load average around it."""
    load_before = os.getloadavg()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_rss = peak_pss = 0
    main_cpu = 0.0
    samples = []
    start = time.monotonic()
    with open(log, "w") as handle:
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)
        while proc.poll() is None:
            tree = process_tree(proc.pid)
            rss, pss = map(sum, zip(*(memory_of(pid) for pid in tree)))
            main_cpu = cpu_of(proc.pid) or main_cpu
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            samples.append((round(time.monotonic() - start, 2), len(tree), rss, pss, round(os.getloadavg()[0], 2)))
            time.sleep(SAMPLE_S)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    loads = [s[-1] for s in samples] or [os.getloadavg()[0]]
    return {
        "returncode": proc.returncode,
        "wall_s": round(wall, 1),
        "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
        "main_process_cpu_s": round(main_cpu, 1),
        "peak_rss_gib": round(peak_rss / 2**30, 3),
        "peak_pss_gib": round(peak_pss / 2**30, 3),
        "load_before": round(load_before[0], 2),
        "load_mean": round(sum(loads) / len(loads), 2),
        "load_after": round(os.getloadavg()[0], 2),
        "samples": samples,
    }


# --------------------------------------------------------------------------- data


def dataset(workdir: Path, bids: Path | None, quick: bool = False) -> Path:
    """The benchmark dataset: ``bids`` if given, else simulated once into ``workdir/bids``
    (``workdir/bids_quick``: 4 mm, 60 volumes, with ``quick``)."""
    if bids is not None:
        return bids
    root = workdir / ("bids_quick" if quick else "bids")
    if not (root / "dataset_description.json").exists():
        from ketflow.simulate import simulate_dataset

        simulate_dataset(root, n_subjects=2, voxel_size=4 if quick else 2, res_entity=True,
                         n_volumes=60 if quick else 200)
    return root


def subject_runs(bids: Path) -> list[dict]:
    """fMRIPrep files of every BOLD run of ``sub-01``: bold, mask, confounds, events, task, session."""
    runs = []
    for bold in sorted((bids / "derivatives" / "fmriprep" / f"sub-{SUBJECT}").glob("ses-*/func/*_desc-preproc_bold.nii.gz")):
        entities = dict(part.split("-", 1) for part in bold.name.split("_")[:-1])
        stem = f"sub-{SUBJECT}_ses-{entities['ses']}_task-{entities['task']}"
        prefix = bold.name[: bold.name.index("_desc-preproc")]
        runs.append({
            "bold": bold,
            "mask": bold.parent / f"{prefix}_desc-brain_mask.nii.gz",
            "confounds": bold.parent / f"{stem}_desc-confounds_timeseries.tsv",
            "events": bids / f"sub-{SUBJECT}" / f"ses-{entities['ses']}" / "func" / f"{stem}_events.tsv",
            "task": entities["task"],
            "session": entities["ses"],
        })
    return runs


# --------------------------------------------------------------------------- jobs (run in a child process)


def read_job(bids: Path) -> None:
    """Read every BOLD of the subject once with nibabel."""
    import nibabel as nib
    import numpy as np

    for run in subject_runs(bids):
        start = time.perf_counter()
        data = np.asanyarray(nib.load(run["bold"]).dataobj)
        print(f"{run['bold'].name}: {data.shape} {data.dtype} in {time.perf_counter() - start:.2f} s", flush=True)
        del data


#: Contrasts of the task GLMs (conflict: incongruent trials split by the previous trial, Etkin et al. 2006).
CONTRASTS = {
    "faces": {"faces-gt-shapes": "0.5*fearful + 0.5*neutral - shapes",
              "fearful-gt-neutral": "fearful - neutral", "fearful-gt-shapes": "fearful - shapes"},
    "conflict": {"incongruent-gt-congruent": "0.5*iI + 0.5*cI - congruent", "iI-gt-cI": "iI - cI"},
}
#: Psychological variable of the plain PPI: (condition weights) of the task design's columns.
PPI_TERM = {"faces": {"fearful": 1.0, "neutral": -1.0}, "conflict": {"iI": 0.5, "cI": 0.5, "congruent": -1.0}}
PPI_SEEDS = ["vmPFC", "amygdala_L", "amygdala_R"]
NILEARN_JOBS = 2


def conflict_events(events):
    """Incongruent trials relabelled iI / cI by the trial before (the first trial's stays as is)."""
    previous = events["trial_type"].shift(1)
    incongruent = events["trial_type"] == "incongruent"
    events = events.copy()
    events.loc[incongruent & (previous == "incongruent"), "trial_type"] = "iI"
    events.loc[incongruent & (previous == "congruent"), "trial_type"] = "cI"
    return events


def nilearn_reference(bids: Path) -> None:
    """The reference job with nilearn (see the module docstring); outputs go to the current directory."""
    import json as _json

    import nibabel as nib
    import numpy as np
    import pandas as pd
    from nilearn.connectome import ConnectivityMeasure
    from nilearn.glm.first_level import FirstLevelModel, make_first_level_design_matrix
    from nilearn.interfaces.fmriprep import load_confounds
    from nilearn.maskers import NiftiSpheresMasker

    from ketflow.signal.rois import read_sphere_table

    out = Path.cwd() / "nilearn_out"
    out.mkdir(exist_ok=True)
    spheres = read_sphere_table()
    by_radius = {}
    for sphere in spheres:  # NiftiSpheresMasker takes one radius: one masker per radius
        by_radius.setdefault(sphere.radius_mm, []).append(sphere)

    def sphere_signals(img, mask, tr, confounds, sample_mask):
        series = {}
        for radius, group in by_radius.items():
            masker = NiftiSpheresMasker([s.center for s in group], radius=radius, mask_img=mask, t_r=tr,
                                        standardize="zscore_sample", reports=False)
            values = masker.fit_transform(img, confounds=confounds, sample_mask=sample_mask)
            series.update({s.name: values[:, k] for k, s in enumerate(group)})
        return pd.DataFrame({s.name: series[s.name] for s in spheres})

    for run in subject_runs(bids):
        start = time.perf_counter()
        name = run["bold"].name.split("_space-")[0]
        source = nib.load(run["bold"])
        img = nib.Nifti1Image(source.get_fdata(dtype=np.float32), source.affine, source.header)  # read once
        mask = nib.load(run["mask"])
        sidecar = _json.loads(run["bold"].with_name(run["bold"].name.replace(".nii.gz", ".json")).read_text())
        tr, slice_time_ref = sidecar["RepetitionTime"], sidecar.get("StartTime", 0.0) / sidecar["RepetitionTime"]
        if run["task"] == "rest":
            confounds, sample_mask = load_confounds(
                str(run["bold"]), strategy=("motion", "high_pass", "wm_csf", "global_signal", "scrub"),
                motion="full", wm_csf="full", global_signal="full", scrub=5, fd_threshold=0.5,
                std_dvars_threshold=None)
            signals = sphere_signals(img, mask, tr, confounds, sample_mask)
            for kind in ("correlation", "partial correlation"):
                matrix = ConnectivityMeasure(kind=kind, standardize="zscore_sample").fit_transform([signals.to_numpy()])[0]
                pd.DataFrame(matrix, index=signals.columns, columns=signals.columns).to_csv(
                    out / f"{name}_{kind.replace(' ', '')}.tsv", sep="\t")
        else:
            confounds, sample_mask = load_confounds(
                str(run["bold"]), strategy=("motion", "wm_csf", "global_signal", "scrub"), motion="full",
                wm_csf="full", global_signal="full", scrub=5, fd_threshold=0.5, std_dvars_threshold=None)
            events = pd.read_csv(run["events"], sep="\t")
            if run["task"] == "conflict":
                events = conflict_events(events)
            n_scans = img.shape[3]
            frame_times = (np.arange(n_scans) + slice_time_ref) * tr
            design = make_first_level_design_matrix(
                frame_times, events[["onset", "duration", "trial_type"]], hrf_model="spm", drift_model="cosine",
                high_pass=1 / 128, add_regs=confounds.to_numpy(), add_reg_names=list(confounds.columns))
            glm = FirstLevelModel(t_r=tr, mask_img=mask, noise_model="ar1", signal_scaling=0, n_jobs=NILEARN_JOBS,
                                  reports=False)
            glm.fit(img, design_matrices=[design], sample_masks=sample_mask)
            for contrast, formula in CONTRASTS[run["task"]].items():
                for stat, image in glm.compute_contrast(formula, output_type="all").items():
                    if stat in ("effect_size", "effect_variance", "z_score"):
                        image.to_filename(out / f"{name}_contrast-{contrast}_{stat}.nii.gz")
            # plain PPI: cleaned, standardised seed x centred psychological regressor, one GLM per seed
            psych = sum(weight * design[column] for column, weight in PPI_TERM[run["task"]].items())
            psych = (psych - psych.mean()).to_numpy()
            with_drifts, _ = load_confounds(
                str(run["bold"]), strategy=("motion", "high_pass", "wm_csf", "global_signal", "scrub"),
                motion="full", wm_csf="full", global_signal="full", scrub=5, fd_threshold=0.5,
                std_dvars_threshold=None)
            seeds = sphere_signals(img, mask, tr, with_drifts, sample_mask)
            kept = np.arange(len(design)) if sample_mask is None else sample_mask
            for seed in PPI_SEEDS:
                signal = np.zeros(len(design))  # scrubbed volumes are left out of the fit by sample_masks
                signal[kept] = seeds[seed].to_numpy()
                ppi_design = design.copy()
                ppi_design["seed"] = signal
                ppi_design["ppi"] = signal * psych
                model = FirstLevelModel(t_r=tr, mask_img=mask, noise_model="ar1", signal_scaling=0,
                                        n_jobs=NILEARN_JOBS, reports=False)
                model.fit(img, design_matrices=[ppi_design], sample_masks=sample_mask)
                for stat, image in model.compute_contrast("ppi", output_type="all").items():
                    if stat in ("effect_size", "effect_variance", "z_score"):
                        image.to_filename(out / f"{name}_seed-{seed}_ppi_{stat}.nii.gz")
        del img
        print(f"{name}: {time.perf_counter() - start:.1f} s", flush=True)


# --------------------------------------------------------------------------- steps


def step_command(step: str, bids: Path, workdir: Path) -> list[str]:
    if step == "ketflow":
        for name in ("out", "work"):
            shutil.rmtree(workdir / name, ignore_errors=True)
        return [sys.executable, "-m", "ketflow", str(bids), str(workdir / "out"), "participant",
                "--participant-label", SUBJECT, "--nprocs", "2", "-w", str(workdir / "work"),
                "--skip-bids-validation"]
    if step == "nilearn":
        shutil.rmtree(workdir / "nilearn_out", ignore_errors=True)
    return [sys.executable, __file__, "--job", step, "--bids", str(bids), "--workdir", str(workdir)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ketflow_participant_bench"))
    parser.add_argument("--bids", type=Path, help="existing 2 mm dataset (default: simulate one)")
    parser.add_argument("--steps", nargs="+", default=["read", "ketflow", "nilearn"],
                        choices=["read", "ketflow", "nilearn"])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--note", default="", help="free text stored with the results (e.g. the git commit)")
    parser.add_argument("--code", action="append", default=[], metavar="NAME=DIR",
                        help="a ketflow checkout to time the ketflow step with (PYTHONPATH=DIR); repeat the option "
                             "to compare versions, run alternately")
    parser.add_argument("--quick", action="store_true", help="a small dataset (4 mm, 60 volumes): a smoke run")
    parser.add_argument("--job", choices=["read", "nilearn"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job:
        {"read": read_job, "nilearn": nilearn_reference}[args.job](args.bids)
        return

    args.workdir.mkdir(parents=True, exist_ok=True)
    bids = dataset(args.workdir, args.bids, args.quick)
    env = dict(os.environ, NIPYPE_NO_ET="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    codes = [tuple(item.split("=", 1)) for item in args.code] or [("", None)]
    rows = []
    for repeat in range(args.repeat):
        for step in args.steps:
            for code, folder in codes if step == "ketflow" else [("", None)]:
                step_env = dict(env, PYTHONPATH=str(Path(folder).resolve())) if folder else env
                log = args.workdir / f"{step}{'_' + code if code else ''}.log"
                result = measure(step_command(step, bids, args.workdir), log, step_env, cwd=args.workdir)
                if result["returncode"] != 0:
                    print(f"{step} {code} failed (exit {result['returncode']}), see {log}", file=sys.stderr)
                record = {"step": step, "code": code, "code_dir": folder, "repeat": repeat,
                          "time": time.strftime("%Y-%m-%d %H:%M:%S"), "note": args.note, "bids": str(bids), **result}
                with open(args.workdir / "results.jsonl", "a") as handle:
                    handle.write(json.dumps(record) + "\n")
                rows.append(record)
    print("| step | code | wall s | CPU s (main process) | peak RSS GiB | peak PSS GiB | load before / mean / after |\n"
          "|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['step']} | {r['code']} | {r['wall_s']} | {r['cpu_s']} ({r['main_process_cpu_s']}) | "
              f"{r['peak_rss_gib']} | {r['peak_pss_gib']} | {r['load_before']} / {r['load_mean']} / "
              f"{r['load_after']} |")
    if len(codes) > 1:
        print("\nmedians of the ketflow step per version:\n\n| code | runs | wall s | CPU s | peak PSS GiB | "
              "peak RSS GiB |\n|---|---|---|---|---|---|")
        for code, _ in codes:
            mine = [r for r in rows if r["step"] == "ketflow" and r["code"] == code and r["returncode"] == 0]
            if mine:
                med = {k: float(np.median([r[k] for r in mine])) for k in ("wall_s", "cpu_s", "peak_pss_gib",
                                                                          "peak_rss_gib")}
                print(f"| {code} | {len(mine)} | {med['wall_s']:.1f} | {med['cpu_s']:.1f} | "
                      f"{med['peak_pss_gib']:.3f} | {med['peak_rss_gib']:.3f} |")


if __name__ == "__main__":
    main()
