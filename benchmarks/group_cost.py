"""Time per group model with the default resampling settings, on 2 cores.

Run (a few minutes):

    NIPYPE_NO_ET=1 MPLBACKEND=Agg OMP_NUM_THREADS=1 /work/main/.venv/bin/python benchmarks/group_cost.py \\
        [--demo WORK/ketflow_group_inputs] [--nprocs 2] [--set inner_folds=3 --set n_permutations=50 ...]

Cases, each evaluated exactly as the group workflow does (``select_model_data`` then ``evaluate``
with the settings of the packaged default configuration, joblib over ``--nprocs`` workers):

* N = 60 subjects x 200 imaging change features (ketflow.group.synthetic: two drivers and an
  arm x feature interaction): the ``change`` model (200 columns) and ``change-by-arm`` (401);
* the same table with a null outcome (the sequential permutation test stops early);
* with ``--demo``: every runnable model of a group run's work directory (``features.tsv``,
  ``features.json``, ``model-*.json`` as ``prepare_inputs`` wrote them);
* the previous defaults (leave-one-out outer x leave-one-out inner x 1000 permutations, 7
  mixing values): one outer fold's fit is timed and multiplied by 60 x 1001.

``--set key=value`` overrides a model-configuration setting (keys of ketflow.group.config) in
every case.  Prints wall time, CPU time (this process and the joblib workers) and permutations run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import time
import warnings
from pathlib import Path

import numpy as np

from ketflow.config import load_config
from ketflow.group.models import select_model_data
from ketflow.group.predict import evaluate, fit_model
from ketflow.group.synthetic import ARMS, synthetic_change_table
from ketflow.io.clinical import read_bids_tsv
from ketflow.workflows.group import model_configs
from joblib.externals.loky import get_reusable_executor

OUTCOME = "caps5_total__change"


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(label: str, config: dict, table, dictionary, n_jobs: int) -> None:
    data = select_model_data(config, table, dictionary)
    start, cpu = time.monotonic(), _cpu()
    report = evaluate(data.table, data.config.spec, n_jobs=n_jobs, **data.config.evaluate_kwargs)
    get_reusable_executor().shutdown(wait=True)  # reap the workers so that their CPU time is counted
    wall, used = time.monotonic() - start, _cpu() - cpu
    s = report.settings
    print(f"{label:38s} n={s['n_subjects']:3d} columns={len(report.fit.coefficients):4d} "
          f"perms={s['n_permutations_run']:4d}/{s['n_permutations']} R2={report.scores['r2']:+.2f} "
          f"p={report.p_values.get('r2', float('nan')):.3f}  {wall:6.1f} s wall {used:7.1f} s CPU "
          f"(load {os.getloadavg()[0]:.1f})", flush=True)


def synthetic(n: int, p: int, null: bool, seed: int = 0):
    table = synthetic_change_table(n=n, p=p, seed=seed).drop(columns="age").rename(columns={"arm": "group"})
    if null:
        table[OUTCOME] = np.random.default_rng(seed).normal(size=n)
    dictionary = {"subject": {"role": "id"}, "group": {"role": "arm"}, OUTCOME: {"role": "clinical_change"}}
    dictionary.update({c: {"role": "imaging_change", "family": "fc"} for c in table.columns if c.startswith("f")})
    return table, dictionary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", type=Path, help="a group run's work/ketflow_group_inputs directory")
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a model setting, e.g. inner_folds=3 (value parsed as JSON)")
    parser.add_argument("--skip-previous", action="store_true", help="do not time the previous defaults")
    args = parser.parse_args(argv)
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    warnings.simplefilter("ignore")
    config = load_config()
    models = {name: dict(model, **overrides) for name, model in model_configs(config).items()}
    arms = {"arm": "group", "arm_levels": list(ARMS)}
    print(f"default settings: {config.group.model_dump(exclude={'models'})}; overrides: {overrides}")
    table, dictionary = synthetic(60, 200, null=False)
    timed("N=60 x 200: change", dict(models["change"], **arms), table, dictionary, args.nprocs)
    timed("N=60 x 200: change-by-arm", dict(models["change-by-arm"], **arms), table, dictionary, args.nprocs)
    null, null_dictionary = synthetic(60, 200, null=True)
    timed("N=60 x 200: change, null outcome", dict(models["change"], **arms), null, null_dictionary, args.nprocs)
    if args.demo:
        table = read_bids_tsv(args.demo / "features.tsv")
        dictionary = json.loads((args.demo / "features.json").read_text())
        for path in sorted(args.demo.glob("model-*.json")):
            timed(f"demo: {path.stem}", dict(json.loads(path.read_text()), **overrides), table, dictionary,
                  args.nprocs)
    if args.skip_previous:
        return
    # previous defaults: LOO outer x LOO inner x 1000 permutations, 7 l1_ratios: time one outer fold's fit
    table, dictionary = synthetic(60, 200, null=False)
    data = select_model_data(dict(models["change"], **arms), table, dictionary)
    spec = dataclasses.replace(data.config.spec, inner_folds=None, l1_ratios=(0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 1.0))
    cpu = _cpu()
    for left_out in range(3):
        fit_model(data.table.drop(index=left_out), spec)
    per_fit = (_cpu() - cpu) / 3
    print(f"previous defaults, N=60 x 200: one LOO-penalty fit on 59 subjects {per_fit:.1f} s CPU; "
          f"x 60 outer folds x 1001 (1000 permutations) = {per_fit * 60 * 1001 / 3600:.0f} CPU-hours")

if __name__ == "__main__":
    main()
