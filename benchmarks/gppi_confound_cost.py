"""What the nuisance design costs gPPI recovery, by confound set, without and with noise.

For every faces run of a simulated dataset (``--bids``, e.g. the one
``glm_ppi_recovery.py`` wrote), the simulator's *noise-free* ROI signals
(``sourcedata/truth``) and the run's ROI means of the simulated images (mean of the
voxels' percent signal change, the gPPI node's ``mean`` signal) are fitted by
the deconvolved gPPI (amygdala_L -> vmPFC, ``fearful-gt-shapes``) with the run's
conditions and cosines plus one confound set at a time, taken from the run's
confound regressors (36P + FD spikes, the packaged strategy) or generated at
random; the script reports Pearson r of the estimates with the true modulation B
across runs, OLS and AR(1) (noisy signals: AR(1), the default). Without noise any
loss is the design's: what a confound set removes of the smooth task-related
signal; with noise, whether the set removes more noise than signal. Random sets
have the size of 36P (36 columns) plus the run's spikes: white noise, or random
walks (as smooth as head-motion traces).

Run (about 2 minutes for 40 runs on one core)::

    PYTHONPATH=. NIPYPE_NO_ET=1 MPLBACKEND=Agg OMP_NUM_THREADS=1 \\
        python benchmarks/gppi_confound_cost.py --bids /tmp/glm_ppi_recovery/bids --out /tmp/gppi_confounds
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from common import gppi_roi_signals, prepare_task_run

from ketflow.config import load_config
from ketflow.io.design import task_design_from_files
from ketflow.signal.gppi import roi_to_roi_gppi
from ketflow.simulate.bids import noise_free_timeseries, run_files

CONTRAST = {"fearful-gt-shapes": {"fearful": 1, "shapes": -1}}
N_RANDOM = 36


def _columns(prefixes):
    return lambda conf, rng: conf[[c for c in conf.columns if c.startswith(prefixes)]]


def _random(kind):
    def make(conf, rng):
        x = rng.standard_normal((len(conf), N_RANDOM))
        if kind == "random walk":
            x = np.cumsum(x, axis=0)
        spikes = conf[[c for c in conf.columns if c.startswith("censored")]]
        return pd.concat([pd.DataFrame(x, columns=[f"random{i:02d}" for i in range(N_RANDOM)]), spikes], axis=1)
    return make


#: confound set -> function (run's 36P+spikes table, rng) -> the columns added to the design
CONFOUND_SETS = {
    "none (conditions + cosines)": lambda conf, rng: None,
    "FD spikes": _columns(("censored",)),
    "global signal (4)": _columns(("global_signal",)),
    "tissue: GS, WM, CSF (12)": _columns(("global_signal", "white_matter", "csf")),
    "motion 24P (24)": _columns(("trans", "rot")),
    "motion + tissue, no spikes (36)": _columns(("trans", "rot", "global_signal", "white_matter", "csf")),
    "36P + spikes (the pipeline's)": lambda conf, rng: conf,
    "white noise (36) + spikes": _random("white noise"),
    "random walks (36) + spikes": _random("random walk"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bids", type=Path, required=True, help="simulated dataset with faces runs")
    parser.add_argument("--out", type=Path, default=Path("/tmp/gppi_confounds"))
    parser.add_argument("--seed", type=int, default=0, help="seed of the random confound sets")
    args = parser.parse_args(argv)
    truth = json.loads((args.bids / "ground_truth.json").read_text())
    config = load_config()
    rng = np.random.default_rng(args.seed)
    rows = []
    for sub_key, subject in sorted(truth["subjects"].items()):
        sub = sub_key.removeprefix("sub-")
        for ses, session in subject["sessions"].items():
            files = run_files(args.bids, sub, ses, "faces")
            n_volumes = session["faces"]["run"]["n_volumes"]
            work = args.out / "work" / sub_key / ses
            prep = prepare_task_run(files, config, "faces", work)
            confounds = pd.read_csv(prep["regressors"], sep="\t")
            signals = pd.read_csv(noise_free_timeseries(args.bids, sub, ses, "faces"), sep="\t")
            signals = {"noise-free": signals[["vmPFC", "amygdala_L"]],
                       "images": gppi_roi_signals(prep, "mean")[["vmPFC", "amygdala_L"]]}
            B = session["faces"]["ppi_modulation"]["seeds"]["amygdala_L"]["fearful"]
            for name, make in CONFOUND_SETS.items():
                added = make(confounds, rng)
                path = None
                if added is not None:
                    path = work / "confound_set.tsv"
                    added.to_csv(path, sep="\t", index=False)
                design = task_design_from_files(files["events"], files["tr"], n_volumes, files["start_time"],
                                                str(path) if path else None, config.tasks["faces"], config.glm)
                for data, noise_model in (("noise-free", "ols"), ("noise-free", "ar1"), ("images", "ar1")):
                    table = roi_to_roi_gppi(signals[data], design, ["amygdala_L"], CONTRAST, True, noise_model)
                    effect = table[(table["target"] == "vmPFC") & (table["contrast"] == "fearful-gt-shapes")]
                    rows.append({"confounds": name, "data": data, "noise_model": noise_model, "subject": sub,
                                 "session": ses, "columns": 0 if added is None else added.shape[1],
                                 "estimate": float(effect["effect"].iloc[0]), "B": B})
    runs = pd.DataFrame(rows)
    runs.to_csv(args.out / "runs.tsv", sep="\t", index=False)
    n_runs = runs[["subject", "session"]].drop_duplicates().shape[0]
    print(f"r with B across {n_runs} runs\n")
    print("| confounds added to conditions + cosines | columns (median) | noise-free, OLS | noise-free, AR(1) "
          "| images, AR(1) |")
    print("|---|---|---|---|---|")
    for name in CONFOUND_SETS:
        part = runs[runs["confounds"] == name]
        r = {key: np.corrcoef(g["estimate"], g["B"])[0, 1] for key, g in part.groupby(["data", "noise_model"])}
        print(f"| {name} | {int(part['columns'].median())} | {r[('noise-free', 'ols')]:.2f} | "
              f"{r[('noise-free', 'ar1')]:.2f} | {r[('images', 'ar1')]:.2f} |")


if __name__ == "__main__":
    main()
