"""Collect participant-level outputs into one long table of scalar measures.

Reads ketflow's own derivatives (found with pybids' entity parsing rules, by name) and
returns rows ``subject, session, task, measure, value, n_runs`` with measure names:

* ``activation_<task>_<contrast>_<roi>``: ROI contrast estimate (``*_stat-effect_contrasts.tsv``);
* ``ppi_<task>_<contrast>_<seed>-to-<target>``: gPPI estimate of a configured contrast
  (``*_ppi.tsv``);
* ``fc_<task>_<roiA>-<roiB>``: ROI-to-ROI Fisher z (``*_stat-fisherz_relmat.tsv``, upper triangle);
* ``dcm_<task>_<matrix>_<from>-to-<to>[_<input>]``: DCM posterior means (``*_dcm.json``);
* ``betaseries_<task>_<contrast>_<roiA>-<roiB>``: beta-series connectivity contrast in Fisher z
  (``*_contrast-<label>_stat-fisherz_desc-betaseries_relmat.tsv``, upper triangle) of every configured
  contrast of the task.

Runs of the same subject, session and task are pooled and the number of runs is kept: the
activation and gPPI ROI estimates, which come with their variance, by ``glm.run_pooling`` --
``precision`` (default: inverse-variance weights, the fixed-effects estimate, as the voxelwise
fixed effects) or ``equal`` (equal-weight mean) -- connectivity by the mean of the runs' Fisher z
and the DCM by Bayesian parameter averaging.  For activation the session-level fixed-effects
table (no ``run`` entity, written when a session has several runs of a task, pooled by the same
key) is used instead of the runs' tables.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import AnalysisConfig
from ..signal.glm import precision_weights
from .names import bids_label, parse_name


def _entities(path: Path) -> dict:
    return parse_name(path)[0]


def task_outputs(out_dir: Path | str, subject: str, session: str | None, task: str, suffix: str) -> list[Path]:
    """Outputs of every run of a subject, session and task whose names end in ``suffix`` (sorted)."""
    folder = Path(out_dir) / f"sub-{subject}"
    folder = folder / f"ses-{session}" / "func" if session else folder / "func"
    prefix = "_".join([f"sub-{subject}"] + ([f"ses-{session}"] if session else []) + [f"task-{task}"])
    return sorted(folder.glob(f"{prefix}_*{suffix}"))


def find_dcm(out_dir: Path | str, subject: str, session: str | None, task: str) -> list[Path]:
    """Every run's DCM result file (``*_dcm.json``) of a subject, session and task (sorted; empty if none)."""
    return [p for p in task_outputs(out_dir, subject, session, task, "_dcm.json") if "desc" not in _entities(p)]


def find_model_spaces(out_dir: Path | str, subject: str, session: str | None, task: str) -> list[Path]:
    """Every run's model-space table (``*_desc-modelspace_dcm.tsv``) of a subject, session and task."""
    return task_outputs(out_dir, subject, session, task, "_desc-modelspace_dcm.tsv")


def _rows(path: Path, items, variances=None) -> list[dict]:
    """One row per (measure, value); ``variances`` (same length) adds each estimate's variance."""
    ent = _entities(path)
    rows = [{"subject": ent.get("sub"), "session": ent.get("ses"), "task": ent.get("task"), "measure": m,
             "value": float(v)} for m, v in items]
    for row, variance in zip(rows, variances if variances is not None else []):
        row["variance"] = float(variance)
    return rows


def _activation(path: Path, config: AnalysisConfig) -> list[dict]:
    table = pd.read_csv(path, sep="\t")
    task = _entities(path)["task"]
    return _rows(path, [(f"activation_{task}_{r.contrast}_{r.roi}", r.effect) for r in table.itertuples()],
                 table["variance"].to_numpy() if "variance" in table else None)


def _ppi(path: Path, config: AnalysisConfig) -> list[dict]:
    table = pd.read_csv(path, sep="\t")
    task = _entities(path)["task"]
    contrasts = set(config.tasks[task].contrasts) if task in config.tasks else set()
    table = table[table["contrast"].isin(contrasts) & (table["seed"] != table["target"])]
    return _rows(path, [(f"ppi_{task}_{r.contrast}_{r.seed}-to-{r.target}", r.effect) for r in table.itertuples()],
                 table["variance"].to_numpy() if "variance" in table else None)


def _connectivity(path: Path, config: AnalysisConfig) -> list[dict]:
    table = pd.read_csv(path, sep="\t", index_col=0)
    task = _entities(path)["task"]
    names = list(table.columns)
    values = table.to_numpy(dtype=float)
    items = [(f"fc_{task}_{names[i]}-{names[j]}", values[i, j])
             for i in range(len(names)) for j in range(i + 1, len(names))]
    return _rows(path, items)


def _dcm_runs(path: Path) -> list[Path]:
    """The DCM result files of every run of ``path``'s subject, session and task (same folder)."""
    ent = _entities(path)
    return find_dcm(path.parents[3 if "ses" in ent else 2], ent["sub"], ent.get("ses"), ent["task"])


def _dcm(path: Path, config: AnalysisConfig) -> list[dict]:
    """DCM posterior means of the session, combined over its runs by Bayesian parameter averaging.

    Every run of the same subject, session and task is read and the runs' posteriors are
    combined by Bayesian parameter averaging (Kasess et al. 2010, NeuroImage 49:3065;
    :func:`ketflow.dcm.average.bayesian_parameter_average`): precision-weighted, so a
    run whose parameters are poorly determined counts less, rather than a plain average of
    posterior means. Each run's file returns the same session-level values, so the
    per-measure mean in :func:`collect_measures` is that average and ``n_runs`` counts
    the runs.
    """
    from ..dcm.average import bayesian_parameter_average
    from ..dcm.model import ParameterLayout

    results = [json.loads(p.read_text()) for p in _dcm_runs(path)] or [json.loads(path.read_text())]
    first = results[0]
    if any(r["param_names"] != first["param_names"] for r in results):
        raise ValueError(f"{path.parent}: the runs of task {_entities(path)['task']} were fitted with different DCMs")
    task = _entities(path)["task"]
    regions, inputs = first["region_names"], first["input_names"]
    E, _ = bayesian_parameter_average(np.array([r["Ep_vector"] for r in results], dtype=float),
                                      np.array([r["Cp"] for r in results], dtype=float),
                                      np.array([r["prior_mean"] for r in results], dtype=float),
                                      np.array([r["prior_cov"] for r in results], dtype=float))
    layout = ParameterLayout(len(regions), len(inputs), len(first["Ep"].get("D") or []))
    ep = layout.unpack(E)
    free = layout.unpack(np.diag(np.asarray(first["prior_cov"], dtype=float)) > 0)
    items = []
    for to, row in enumerate(ep["A"]):
        for frm, value in enumerate(row):
            items.append((f"dcm_{task}_A_{regions[frm]}-to-{regions[to]}", value))
    for k, matrix in enumerate(ep["B"]):
        for to, row in enumerate(matrix):
            for frm, value in enumerate(row):
                if free["B"][k, to, frm]:
                    items.append((f"dcm_{task}_B_{regions[frm]}-to-{regions[to]}_{inputs[k]}", value))
    for to, row in enumerate(ep["C"]):
        for k, value in enumerate(row):
            if free["C"][to, k]:
                items.append((f"dcm_{task}_C_{inputs[k]}-to-{regions[to]}", value))
    return _rows(path, items)


def _beta_series(path: Path, config: AnalysisConfig) -> list[dict]:
    entities = _entities(path)
    task = entities["task"]
    by_label = {bids_label(name): name for name in (config.tasks[task].contrasts if task in config.tasks else {})}
    contrast = by_label.get(entities.get("contrast"))
    if contrast is None:  # a condition's matrix or a contrast no longer configured
        return []
    table = pd.read_csv(path, sep="\t", index_col=0)
    names = list(table.columns)
    values = table.to_numpy(dtype=float)
    return _rows(path, [(f"betaseries_{task}_{contrast}_{names[i]}-{names[j]}", values[i, j])
                        for i in range(len(names)) for j in range(i + 1, len(names))])


#: Output file patterns and their readers, keyed by the measure family.
READERS = {
    "activation": ("*_stat-effect_contrasts.tsv", _activation),
    "ppi": ("*_ppi.tsv", _ppi),
    "fc": ("*_stat-fisherz_relmat.tsv", _connectivity),
    "dcm": ("*_dcm.json", _dcm),
    "betaseries": ("*_stat-fisherz_desc-betaseries_relmat.tsv", _beta_series),
}


def collect_measures(out_dir: Path | str, config: AnalysisConfig, subjects: list[str] | None = None) -> pd.DataFrame:
    """Long table (subject, session, task, measure, value, n_runs) of every scalar measure found."""
    out_dir = Path(out_dir)
    wanted = {
        "activation": config.measures.activation,
        "ppi": config.measures.ppi,
        "fc": config.measures.connectivity,
        "dcm": config.measures.dcm,
        "betaseries": config.measures.beta_series,
    }
    rows: list[dict] = []
    for family, (pattern, reader) in READERS.items():
        if not wanted[family]:
            continue
        paths = sorted(out_dir.glob(f"sub-*/ses-*/func/{pattern}")) + sorted(out_dir.glob(f"sub-*/func/{pattern}"))
        if family == "dcm":  # the parameter table's sidecar
            paths = [p for p in paths if "_desc-" not in p.name]
        if subjects is not None:
            paths = [p for p in paths if _entities(p).get("sub") in subjects]
        # the circuit's outputs (extra atlases, ``atlases``, are not circuit measures)
        paths = [p for p in paths if _entities(p).get("atlas", config.circuit.name) == config.circuit.name]
        if family == "activation":
            paths, runs_of = _session_level_first(paths)
        for path in paths:
            new = reader(path, config)
            if family == "activation":
                for row in new:
                    row["n_runs"] = runs_of.get(path, 1)
            rows += new
    columns = ["subject", "session", "task", "measure", "value", "n_runs"]
    if not rows:
        return pd.DataFrame(columns=columns)
    table = pd.DataFrame.from_records(rows)
    if "n_runs" not in table:
        table["n_runs"] = np.nan
    table["n_runs"] = table["n_runs"].fillna(1)
    table = table[np.isfinite(table["value"])]
    table = table.assign(weight=run_weights(table, config.glm.run_pooling))
    table = table.assign(weighted=table["weight"] * table["value"])
    grouped = table.groupby(["subject", "session", "task", "measure"], dropna=False)
    result = grouped.agg(weighted=("weighted", "sum"), weight=("weight", "sum"), n_runs=("n_runs", "sum"))
    result = result.assign(value=result["weighted"] / result["weight"]).reset_index()
    result["n_runs"] = result["n_runs"].astype(int)
    return result[columns]


def run_weights(table: pd.DataFrame, pooling: str) -> np.ndarray:
    """Weight of each row (one run's estimate) in its session's pooled value: ``1 / variance``
    for rows with a finite variance under ``precision`` pooling
    (:func:`ketflow.signal.glm.precision_weights`, the fixed-effects weights), 1 otherwise
    (equal-weight mean)."""
    if pooling not in ("precision", "equal"):
        raise ValueError(f"run pooling must be 'precision' or 'equal', got {pooling!r}")
    variance = table["variance"].to_numpy(dtype=float) if "variance" in table else np.full(len(table), np.nan)
    weighted = np.isfinite(variance) & (pooling == "precision")
    return np.where(weighted, precision_weights(np.where(weighted, variance, 1.0)), 1.0)


def _session_level_first(paths: list[Path]) -> tuple[list[Path], dict[Path, int]]:
    """Keep the session-level file of a (subject, session, task) when one exists, else its runs.

    Returns the kept paths and, for each session-level file, the number of runs it combines.
    """
    groups: dict[tuple, list[Path]] = {}
    for path in paths:
        ent = _entities(path)
        groups.setdefault((ent.get("sub"), ent.get("ses"), ent.get("task")), []).append(path)
    kept, runs_of = [], {}
    for members in groups.values():
        combined = [p for p in members if "run" not in _entities(p)]
        run_files = [p for p in members if "run" in _entities(p)]
        if combined and run_files:
            kept += combined
            runs_of.update({p: len(run_files) for p in combined})
        else:
            kept += members
    return kept, runs_of


def read_exclusions(out_dir: Path | str) -> pd.DataFrame:
    """Every ``sub-*_exclusions.tsv`` of the participant level, concatenated (subject column added)."""
    frames = []
    for path in sorted(Path(out_dir).glob("sub-*/sub-*_exclusions.tsv")):
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        table.insert(0, "subject", path.parent.name[len("sub-"):])
        frames.append(table)
    if not frames:
        return pd.DataFrame(columns=["subject", "session", "task", "run", "reason"])
    return pd.concat(frames, ignore_index=True)


def output_provenance(out_dir: Path | str, subject: str) -> set[tuple[str, str]]:
    """(configuration hash, ketflow version) pairs recorded in the ``GeneratedBy`` of the sidecars
    of ``sub-<subject>``'s participant-level outputs (empty when it has none, e.g. every run
    excluded)."""
    found = set()
    for path in Path(out_dir, f"sub-{subject}").glob("**/*.json"):
        try:
            generated = json.loads(path.read_text()).get("GeneratedBy")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(generated, dict) and generated.get("ConfigHash"):
            found.add((str(generated["ConfigHash"]), str(generated.get("Version", "unknown"))))
    return found
