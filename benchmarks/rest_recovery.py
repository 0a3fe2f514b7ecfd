"""Benchmark: how well ketflow's denoising + ROI extraction recover the simulator's resting couplings.

Simulates resting-state runs only (``simulate_dataset(..., tasks=["rest"])``, default noise and
run length, 4 mm grid) with the simulator's artefacts switched on and off, then runs ketflow's
cores exactly as the participant workflow chains them -- confound selection
(:func:`ketflow.io.confounds.load_confounds`), one-regression denoising with censoring
(:func:`ketflow.signal.denoise.denoise`), circuit ROIs on the run's grid
(:func:`ketflow.io.rois.circuit_roiset`), ROI means
(:func:`ketflow.signal.extract.extract`) and Pearson correlation
(:func:`ketflow.signal.connectivity.pearson`) -- under several denoising settings:

* ``none``: ROI means of the preprocessed data, only the dummy scans dropped;
* ``HP``: intercept + cosine high-pass only;
* ``24P``, ``36P``, ``aCompCor`` (+ 24P), each with the 128 s cosine high-pass (``hp``) or
  the 0.01-0.1 Hz band-pass (``bp``), each without or with FD censoring at 0.5 mm (``scrub``);
* ``default``: the rest-run settings of the packaged configuration (``default_config.yml``);
* ``default, last N``: the same with all but the last N volumes censored, to show how recovery
  degrades as residual degrees of freedom shrink (the basis of the ``min_dof`` policy).

Denoising is the same projection for every voxel, so only the ROI voxels are denoised here
(identical ROI series to denoising the whole brain, much faster).

Truth (``ground_truth.json``): per run, ``noise_free_correlation`` (the realised correlation
of the noise-free ROI BOLD); per subject and session, ``coupling`` (the correlation parameter
the data were generated from).

Reported per setting and artefact condition:

* ``top``: fraction of runs whose largest estimated off-diagonal correlation is the true
  strongest pair (amygdala_L - amygdala_R);
* ``r_run``: mean over runs of the correlation between the estimated and the noise-free
  off-diagonal correlations (36 edges);
* ``bias``: mean over runs and edges of (estimated - noise-free) correlation;
* ``r_subj``: for every edge whose true coupling varies across subjects, the correlation over
  subject-sessions between estimated correlation and true coupling; the mean over such edges
  is printed (and the vmPFC - amygdala_L edge's), each edge's value is in the JSON;
* ``r_change``: correlation over subjects of the estimated and the true post - pre change of
  the vmPFC - amygdala_L coupling (the measure the group level models);
* ``excluded``: runs left with fewer than ``--min-dof`` residual degrees of freedom (not
  scored; the ``last N`` sweep is scored whatever its dof); ``dof``: median residual degrees
  of freedom;
* ``signal kept``: mean fraction of the noise-free ROI signal variance that the same
  denoising model (confounds, cosines, censoring of that run) leaves when applied to the
  noise-free signal itself -- the signal a model removes by chance (Bright & Murphy 2015,
  NeuroImage 114:158-169).

The ``noise-free`` row scores the noise-free ROI signals themselves: the ceiling set by the
finite run length (a correlation estimated from 240 volumes of slow BOLD varies around the
coupling parameter even without noise).

Run (about 25 minutes on one core for 16 subjects, most of it simulating; the datasets are
reused when the work directory already holds them)::

    NIPYPE_NO_ET=1 OMP_NUM_THREADS=1 /work/venv/bin/python benchmarks/rest_recovery.py \\
        --workdir /tmp/ketflow_rest --subjects 16 --seed 1

Prints Markdown tables and writes ``rest_recovery.json`` into the work directory.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ketflow.config import load_config
from ketflow.io.boldcache import read_masked_bold
from ketflow.io.confounds import ConfoundStrategy, denoising_record, load_confounds
from ketflow.io.rois import circuit_roiset
from ketflow.signal.connectivity import pearson
from ketflow.signal.denoise import TooFewVolumesError, denoise, filter_cutoffs
from ketflow.signal.extract import extract
from ketflow.simulate import simulate_dataset
from ketflow.simulate.bids import noise_free_timeseries, run_files

BAND = [0.01, 0.1]


def default_rest_settings() -> dict:
    """Denoising settings of rest runs under the packaged configuration, as a run's QC records them."""
    den = load_config().denoising
    return denoising_record(den, den.band_pass_rest)


def settings_grid(last=(200, 160, 120, 90, 70, 55)) -> dict[str, dict | None]:
    """Denoising settings by label (keys of :func:`ketflow.io.confounds.denoising_record`, over the
    packaged rest-run settings); None = no denoising.

    ``keep_last`` (benchmark only) censors every volume before the last ``keep_last``.
    """
    grid: dict[str, dict | None] = {"none": None, "HP": {"strategy": None, "fd_threshold": None}}
    for strategy in ("24P", "36P", "aCompCor"):
        for filt in ("hp", "bp"):
            for scrub in (False, True):
                label = f"{strategy} {filt}" + (" scrub" if scrub else "")
                grid[label] = {
                    "strategy": strategy,
                    "fd_threshold": 0.5 if scrub else None,
                    "high_pass_s": 128.0,
                    "band_pass_hz": BAND if filt == "bp" else None,
                }
    default = default_rest_settings()
    grid["default"] = default
    for n in last:
        grid[f"default, last {n}"] = {**default, "keep_last": n}
    return grid


def simulate(workdir: Path, subjects: int, seed: int, voxel_size: float, artefacts: bool) -> Path:
    """Rest-only dataset (reused if its ground truth matches the arguments)."""
    root = workdir / f"artefacts-{'on' if artefacts else 'off'}"
    truth = root / "ground_truth.json"
    if truth.exists():
        args = json.loads(truth.read_text())["arguments"]
        if (args["n_subjects"], args["seed"], args["voxel_size"], args["artefacts"]) == (
                subjects, seed, voxel_size, artefacts):
            return root
    return simulate_dataset(root, n_subjects=subjects, seed=seed, voxel_size=voxel_size,
                            artefacts=artefacts, tasks=["rest"])


def roi_series(run: dict, names: list[str], setting: dict | None, tr: float, min_dof: int):
    """ROI mean series (kept volumes, ROIs), residual dof and the fraction of the noise-free
    ROI signal variance the same denoising model leaves (``run["noise_free_series"]``, the
    simulator's noise-free ROI BOLD, goes through the same regression) for one run."""
    setting = dict(setting or {})
    keep_last = setting.pop("keep_last", None)
    settings = {**default_rest_settings(), "strategy": "24P", **setting}
    strategy = ConfoundStrategy(name=settings["strategy"] or "24P", n_compcor=settings["n_compcor"],
                                fd_threshold=settings["fd_threshold"],
                                std_dvars_threshold=settings["std_dvars_threshold"],
                                min_segment=settings["min_contiguous"])
    confounds = load_confounds(run["confounds"], run["confounds_json"], strategy, len(run["data"]))
    data, labels = run["data"], run["labels"]
    if not setting:
        keep = ~confounds.dummy
        return extract(data[keep], labels, len(names)), int(keep.sum()) - 1, 1.0
    keep = confounds.keep.copy()
    if keep_last is not None:
        keep[: len(keep) - keep_last] = False
    regressors = confounds.regressors.to_numpy() if settings["strategy"] else np.zeros((len(data), 0))
    high_pass_s, low_pass_hz = filter_cutoffs(settings["high_pass_s"], settings["band_pass_hz"])
    args = {"keep": keep, "high_pass_s": high_pass_s, "low_pass_hz": low_pass_hz,
            "min_volumes": settings["min_volumes"], "min_dof": min_dof}
    result = denoise(data, regressors, tr, **args)
    truth = run["noise_free_series"]
    kept = denoise(truth, regressors, tr, **args).data.var(axis=0) / truth[keep].var(axis=0)
    return extract(result.data, labels, len(names)), result.dof_remaining, float(kept.mean())


def load_run(root: Path, sub: str, ses: str) -> dict:
    """ROI-voxel data (time, ROI voxels) and labels of one rest run, plus its confounds files."""
    label = sub.removeprefix("sub-")
    files = run_files(root, label, ses, "rest")
    mask = np.asanyarray(nib.load(files["mask"]).dataobj) > 0
    roiset = circuit_roiset(load_config().circuit, nib.load(files["boldref"]), mask)
    labels = roiset.labels[mask]
    inside = labels > 0
    data = read_masked_bold(files["bold"], mask)[:, inside]
    noise_free = pd.read_csv(noise_free_timeseries(root, label, ses, "rest"), sep="\t")
    return {"data": data, "labels": labels[inside], "names": list(roiset.names),
            "noise_free_series": noise_free[list(roiset.names)].to_numpy(),
            "confounds": Path(files["confounds"]), "confounds_json": Path(files["confounds_json"])}


def _corr(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[ok], b[ok])[0, 1]) if ok.sum() > 2 else float("nan")


def evaluate(root: Path, grid: dict, min_dof: int) -> dict:
    """Scores of every setting (and of the noise-free signals) on one dataset."""
    truth = json.loads((root / "ground_truth.json").read_text())
    tr = truth["arguments"]["tr"]
    runs, est = [], {label: [] for label in ["noise-free", *grid]}
    extra = {label: {"dof": [], "kept": []} for label in grid}
    for sub, subject in sorted(truth["subjects"].items()):
        for ses in ("pre", "post"):
            rest = subject["sessions"][ses]["rest"]
            names = rest["roi_order"]
            run = load_run(root, sub, ses)
            if run["names"] != names:
                raise RuntimeError(f"{sub} {ses}: ROI order {run['names']} differs from the truth {names}")
            runs.append({"sub": sub, "ses": ses, "coupling": np.asarray(rest["coupling"]),
                         "noise_free": np.asarray(rest["run"]["noise_free_correlation"])})
            est["noise-free"].append(runs[-1]["noise_free"])
            for label, setting in grid.items():
                dof, kept = np.nan, np.nan
                try:  # the keep_last sweep shows recovery below the policy's min_dof too
                    series, dof, kept = roi_series(run, names, setting, tr,
                                                   1 if setting and "keep_last" in setting else min_dof)
                    est[label].append(pearson(series))
                except TooFewVolumesError:
                    est[label].append(None)
                extra[label]["dof"].append(dof)
                extra[label]["kept"].append(kept)
    scores = {label: score(mats, runs, names, set(truth["rest_strongest_pair"])) for label, mats in est.items()}
    for label, values in extra.items():
        scores[label]["dof_median"] = float(np.nanmedian(values["dof"]))
        scores[label]["signal_kept"] = float(np.nanmean(values["kept"]))
    iu = np.triu_indices(len(names), 1)
    coupling = np.array([r["coupling"][iu] for r in runs])
    varying = {f"{names[i]}-{names[j]}": float(sd) for i, j, sd in zip(*iu, coupling.std(axis=0)) if sd > 1e-6}
    return {"scores": scores, "varying_edges": varying, "n_runs": len(runs)}


def score(mats: list, runs: list[dict], names: list[str], strongest: set) -> dict:
    """Recovery scores of one setting: ``mats`` are the runs' estimated correlation matrices
    (None for an excluded run), ``runs`` hold the truth (module docstring)."""
    n_roi = len(names)
    iu = np.triu_indices(n_roi, 1)
    edges = [f"{names[i]}-{names[j]}" for i, j in zip(*iu)]
    ok = np.array([m is not None for m in mats])
    est = np.array([m[iu] if m is not None else np.full(len(edges), np.nan) for m in mats])
    coupling = np.array([r["coupling"][iu] for r in runs])
    noise_free = np.array([r["noise_free"][iu] for r in runs])
    top = [{names[i], names[j]} == strongest for m in mats if m is not None
           for i, j in [np.unravel_index(np.argmax(m - 2 * np.eye(n_roi)), m.shape)]]
    per_edge = {edges[k]: _corr(est[:, k], coupling[:, k]) for k in range(len(edges)) if coupling[:, k].std() > 1e-6}
    k = edges.index("vmPFC-amygdala_L")
    by_sub: dict = {}
    for run, value, true in zip(runs, est[:, k], coupling[:, k]):
        by_sub.setdefault(run["sub"], {})[run["ses"]] = (value, true)
    change = [(v["post"][0] - v["pre"][0], v["post"][1] - v["pre"][1]) for v in by_sub.values() if len(v) == 2]
    return {
        "n_runs": int(ok.sum()),
        "excluded": int((~ok).sum()),
        "dof_median": None,
        "signal_kept": None,
        "top": float(np.mean(top)) if top else float("nan"),
        "r_run": float(np.mean([_corr(a, b) for a, b in zip(est[ok], noise_free[ok])])) if ok.any() else float("nan"),
        "bias": float(np.mean(est[ok] - noise_free[ok])) if ok.any() else float("nan"),
        "rmse": float(np.sqrt(np.mean((est[ok] - noise_free[ok]) ** 2))) if ok.any() else float("nan"),
        "r_subj_edges": per_edge,
        "r_subj": float(np.nanmean(list(per_edge.values()))) if per_edge else float("nan"),
        "r_subj_vmPFC_amygdala_L": per_edge.get("vmPFC-amygdala_L", float("nan")),
        "r_change": _corr(*zip(*change)) if len(change) > 2 else float("nan"),
    }


def table(scores: dict) -> str:
    """Markdown table of :func:`evaluate` scores."""
    head = ("| setting | runs (excl.) | median dof | signal kept | top | r_run | bias | RMSE | r_subj "
            "| r_subj vmPFC-amyg_L | r_change |")
    lines = [head, "|" + "---|" * 11]
    for label, s in scores.items():
        dof = "" if s["dof_median"] is None else f"{s['dof_median']:.0f}"
        kept = "" if s["signal_kept"] is None else f"{s['signal_kept']:.2f}"
        lines.append(f"| {label} | {s['n_runs']} ({s['excluded']}) | {dof} | {kept} | {s['top']:.2f} "
                     f"| {s['r_run']:.2f} | {s['bias']:+.3f} | {s['rmse']:.3f} | {s['r_subj']:.2f} "
                     f"| {s['r_subj_vmPFC_amygdala_L']:.2f} | {s['r_change']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/ketflow_rest"))
    p.add_argument("--subjects", type=int, default=16)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--voxel-size", type=float, default=4.0)
    p.add_argument("--min-dof", type=int, default=load_config().denoising.min_dof,
                   help="runs with fewer residual degrees of freedom are excluded")
    args = p.parse_args(argv)
    grid = settings_grid()
    results = {"arguments": {k: str(v) for k, v in vars(args).items()}, "settings": grid}
    for artefacts in (True, False):
        start = time.perf_counter()
        root = simulate(args.workdir, args.subjects, args.seed, args.voxel_size, artefacts)
        simulated = time.perf_counter()
        res = evaluate(root, grid, args.min_dof)
        res["seconds"] = {"simulate": simulated - start, "evaluate": time.perf_counter() - simulated}
        key = f"artefacts_{'on' if artefacts else 'off'}"
        results[key] = res
        print(f"\n### Artefacts {'on' if artefacts else 'off'} ({res['n_runs']} runs; varying edges: "
              + ", ".join(f"{k} (SD {v:.3f})" for k, v in res["varying_edges"].items()) + ")\n")
        print(table(res["scores"]))
    (args.workdir / "rest_recovery.json").write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
