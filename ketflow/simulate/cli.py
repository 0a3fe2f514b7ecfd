"""``ketflow-simulate OUT --subjects N --seed S [...]``: write a simulated dataset."""

from __future__ import annotations

import argparse
import sys

from ketflow.simulate.dataset import DEFAULT_VOLUMES, TASKS, simulate_dataset


def _volumes(text: str):
    """``150`` for every task, or ``faces=160,conflict=150,rest=120``."""
    if "=" not in text:
        return int(text)
    out = {}
    for item in text.split(","):
        task, _, n = item.partition("=")
        if task not in TASKS:
            raise argparse.ArgumentTypeError(f"unknown task {task!r}; tasks are {list(TASKS)}")
        out[task] = int(n)
    return out


def _tasks(text: str) -> list[str]:
    """``faces,rest``: the tasks to simulate."""
    tasks = [t for t in text.split(",") if t]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise argparse.ArgumentTypeError(f"unknown tasks {unknown}; tasks are {list(TASKS)}")
    return tasks


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ketflow-simulate",
        description="Write a simulated raw BIDS dataset with fMRIPrep-style derivatives and "
                    "its ground truth (ground_truth.json).",
    )
    p.add_argument("out", help="output directory (the BIDS root)")
    p.add_argument("--subjects", type=int, default=8, help="participants (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--voxel-size", type=float, default=4.0,
                   help="isotropic voxel size in mm of the MNI grid (default 4; 2 = fMRIPrep res-2)")
    p.add_argument("--tr", type=float, default=2.0, help="repetition time in s (default 2)")
    p.add_argument("--n-volumes", type=_volumes, default=DEFAULT_VOLUMES,
                   help="volumes per run: N for every task or faces=N,conflict=N,rest=N "
                        "(default " + ",".join(f"{t}={n}" for t, n in DEFAULT_VOLUMES.items()) + ")")
    p.add_argument("--noise", type=float, default=1.0,
                   help="voxel noise SD in percent signal change (default 1.0)")
    p.add_argument("--artefacts", action=argparse.BooleanOptionalAction, default=True,
                   help="motion, spikes, global signal, drift, dummy volumes (default on)")
    p.add_argument("--no-interaction", dest="interaction", action="store_false",
                   help="no arm x imaging-change interaction in the clinical model")
    p.add_argument("--effect-scale", type=float, default=1.0,
                   help="multiply the arms' mean pre -> post imaging changes (default 1; 0: no treatment "
                        "effect on the circuit, for false-positive studies)")
    p.add_argument("--res-entity", action="store_true",
                   help="add res-<voxel size> to derivative image names")
    p.add_argument("--dropout", action="store_true",
                   help="susceptibility signal loss in orbitofrontal/ventromedial PFC and the medial "
                        "temporal lobes (lower mean and tSNR there; default off)")
    p.add_argument("--tasks", type=_tasks, default=list(TASKS),
                   help="comma-separated tasks to simulate (default " + ",".join(TASKS) + ")")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    out = simulate_dataset(
        args.out, n_subjects=args.subjects, seed=args.seed, voxel_size=args.voxel_size,
        tr=args.tr, n_volumes=args.n_volumes, noise=args.noise, artefacts=args.artefacts,
        interaction=args.interaction, res_entity=args.res_entity, tasks=args.tasks,
        effect_scale=args.effect_scale,
        dropout=args.dropout,
    )
    print(f"simulated dataset written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
