"""Recovery of the simulator's DCM parameters through ketflow's DCM path.

Simulates a dataset with :func:`ketflow.simulate.simulate_dataset` (whose faces runs come
from a bilinear DCM with known A/B/C in ``ground_truth.json``), then for every faces run
runs the participant level's DCM path with the packaged configuration, as its stage
workflows: circuit ROIs on the run's grid (``init_rois_wf``), the task models' confounds with
censoring spikes (``init_task_data_wf``), SPM-style VOIs (grand-mean scaling, adjustment for X0,
first eigenvariate) and the DCM fit (``init_dcm_wf``). For each parameter of the estimated model it reports the truth, the
bias and RMSE of the posterior means, the mean posterior SD and the coverage of the 90%
credible intervals.

As a control, the same model is also fitted to the noise-free regional BOLD the simulator
stored (``sourcedata/truth/...desc-noisefree_timeseries.tsv``), which separates what the
VOI extraction and the noise cost from what the model misspecification costs (the
simulator drives amygdala_L with unmodelled spontaneous activity, see docs/simulator.md).

Run from the repository root (about 15 s per subject at 4 mm on one core, including the
simulation)::

    NIPYPE_NO_ET=1 MPLBACKEND=Agg OMP_NUM_THREADS=1 \\
        /work/main/.venv/bin/python benchmarks/dcm_simulator_recovery.py --subjects 12 --seed 1
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np
import pandas as pd
from common import prepare_task_run, run_stage

from ketflow.config import load_config
from ketflow.dcm import DCMSpec, fit_dcm
from ketflow.dcm.spec import build_spec
from ketflow.io.tables import read_events
from ketflow.simulate.bids import noise_free_timeseries, run_files
from ketflow.simulate.truth import truth_vector, voi_agreement
from ketflow.workflows.bold.dcm import init_dcm_wf


def dcm_path(files: dict, config, work: Path) -> dict:
    """The participant level's DCM stage on one run: dcm.json as a dict, with the files of the
    VOIs (``voi``), X0 (``x0``) and the fit (``json``) under ``_files``."""
    prep = prepare_task_run(files, config, config.dcm.task, work, percent_data=False)
    workflow = init_dcm_wf(config.dcm, high_pass_s=config.glm.high_pass_s, tr=files["tr"],
                           start_time=files["start_time"])
    out = run_stage(workflow, work, bold_cache=prep["bold_cache"], brain_mask=files["mask"],
                    labels_file=prep["labels"], labels_tsv=prep["labels_tsv"], confounds_file=prep["regressors"],
                    events_file=files["events"])
    result = json.loads(Path(out["dcm"].out_json).read_text())
    result["_files"] = {"voi": out["dcm_voi"].timeseries, "x0": out["dcm_voi"].confounds_out,
                        "json": out["dcm"].out_json}
    return result


def noise_free_series(bids: Path, sub: str, ses: str, task: str) -> pd.DataFrame:
    """The simulator's noise-free regional BOLD (per cent) of a run."""
    return pd.read_csv(noise_free_timeseries(bids, sub, ses, task), sep="\t")


def noise_free_fit(bids: Path, sub: str, ses: str, files: dict, config) -> dict:
    """The same DCM fitted to the simulator's noise-free regional BOLD (control)."""
    table = noise_free_series(bids, sub, ses, config.dcm.task)
    spec: DCMSpec = build_spec(table, read_events(files["events"]), files["tr"], files["start_time"],
                               config.dcm.model_layout())
    return fit_dcm(spec).to_dict()


def label(name: str, regions, inputs) -> str:
    parts = name.split("_")
    to = regions[int(parts[1][2:]) - 1]
    if name.startswith("A_"):
        return f"A {regions[int(parts[2][4:]) - 1]} -> {to}"
    if name.startswith("B_"):
        return f"B[{inputs[int(parts[3][2:]) - 1]}] {regions[int(parts[2][4:]) - 1]} -> {to}"
    return f"C {inputs[int(parts[2][2:]) - 1]} -> {to}"


def records(result: dict, truth: dict, source: str, run: str) -> list[dict]:
    rows = []
    table = {r["name"]: r for r in result["parameters"]}
    for name, value in truth.items():
        r = table[name]
        rows.append({"source": source, "run": run, "parameter": label(name, result["region_names"],
                                                                        result["input_names"]),
                     "truth": value, "estimate": r["posterior_mean"], "sd": r["posterior_sd"],
                     "covered": r["ci90_low"] <= value <= r["ci90_high"]})
    return rows


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    err = frame["estimate"] - frame["truth"]
    frame = frame.assign(error=err, sq=err**2)
    out = frame.groupby(["source", "parameter"], sort=False).agg(
        truth=("truth", "mean"), estimate=("estimate", "mean"), bias=("error", "mean"),
        rmse=("sq", lambda s: float(np.sqrt(s.mean()))), mean_sd=("sd", "mean"), coverage=("covered", "mean"),
        n=("covered", "size"))
    return out.reset_index()


def markdown(frame: pd.DataFrame) -> str:
    """A Markdown table of a data frame (floats to 3 decimals)."""
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * frame.shape[1]]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--voxel-size", type=float, default=4.0)
    parser.add_argument("--bids", type=Path, help="use this simulated dataset instead of simulating one")
    parser.add_argument("--work", type=Path, help="working directory (default: a temporary one)")
    parser.add_argument("--table", type=Path, help="write the per-run estimates here (TSV)")
    parser.add_argument("--options", default="{}",
                        help='JSON overriding dcm.options of the packaged configuration, e.g. \'{"hC": 1}\'')
    args = parser.parse_args(argv)

    from ketflow.simulate import simulate_dataset

    config = load_config()
    overrides = json.loads(args.options)
    if overrides:
        config.dcm.options = config.dcm.options.model_copy(update=overrides)
        print(f"dcm.options: {config.dcm.options.model_dump()}")
    tmp = tempfile.TemporaryDirectory(prefix="ketflow_dcm_recovery_")
    work = args.work or Path(tmp.name)
    bids = args.bids
    t0 = time.perf_counter()
    if bids is None:
        bids = simulate_dataset(work / "bids", n_subjects=args.subjects, seed=args.seed, voxel_size=args.voxel_size,
                                tasks=["faces"])
    t_sim = time.perf_counter() - t0
    truth_all = json.loads((Path(bids) / "ground_truth.json").read_text())
    rows, times, iters, agreement, scales = [], [], [], [], []
    for sub, subject in sorted(truth_all["subjects"].items()):
        label_sub = sub.removeprefix("sub-")
        for ses, session in sorted(subject["sessions"].items()):
            files = run_files(Path(bids), label_sub, ses, config.dcm.task)
            t1 = time.perf_counter()
            result = dcm_path(files, config, work / "runs" / f"{sub}_ses-{ses}")
            times.append(time.perf_counter() - t1)
            iters.append(result["n_iterations"])
            truth = truth_vector(result, session[config.dcm.task]["dcm"])
            run = f"{sub}_ses-{ses}"
            scales.append(result["data_scale"])
            voi = voi_agreement(pd.read_csv(result["_files"]["voi"], sep="\t"),
                                pd.read_csv(result["_files"]["x0"], sep="\t"),
                                noise_free_series(Path(bids), label_sub, ses, config.dcm.task))
            agreement += [{"region": k, "r": v[0], "slope": v[1]} for k, v in voi.items()]
            rows += records(result, truth, "pipeline", run)
            rows += records(noise_free_fit(Path(bids), label_sub, ses, files, config), truth, "noise-free", run)
    frame = pd.DataFrame(rows)
    if args.table:
        frame.to_csv(args.table, sep="\t", index=False)
    summary = summarise(frame)
    pd.set_option("display.width", 160)
    print(f"dataset: {bids} ({len(times)} faces runs; simulation {t_sim:.0f} s)")
    print(f"DCM path per run: median {np.median(times):.2f} s wall, iterations median {np.median(iters):.0f}")
    agree = pd.DataFrame(agreement).groupby("region").agg(
        r_median=("r", "median"), r_min=("r", "min"), slope_median=("slope", "median"),
        slope_min=("slope", "min"), slope_max=("slope", "max")).reset_index()
    print("VOI vs noise-free regional signal (adjusted for X0), over runs:")
    print(markdown(agree))
    print(markdown(summary))
    for source, part in frame.groupby("source", sort=False):
        by_family = part.groupby(part["parameter"].str[0])["covered"].agg(["mean", "sum", "size"])
        total = int(part["covered"].sum())
        print(f"{source}: overall coverage {total}/{len(part)} = {total / len(part):.2f}; "
              + ", ".join(f"{k} {int(r['sum'])}/{int(r['size'])}" for k, r in by_family.iterrows()))
        for parameter, runs in part.groupby("parameter", sort=False):
            if parameter.startswith("B"):
                print(f"  {parameter}: r(posterior mean, truth) across runs "
                      f"{np.corrcoef(runs['estimate'], runs['truth'])[0, 1]:.2f}, "
                      f"sign right in {np.mean(np.sign(runs['estimate']) == np.sign(runs['truth'])):.2f}")
    print(f"data_scale: median {np.median(scales):.2f}, range {min(scales):.2f}-{max(scales):.2f}, "
          f"< 1 in {sum(s < 1 for s in scales)}/{len(scales)} runs")
    tmp.cleanup()


if __name__ == "__main__":
    main()
