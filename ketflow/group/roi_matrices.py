"""ROI-to-ROI group results as matrices, as CONN shows them (Whitfield-Gabrieli & Nieto-Castanon
2012, Brain Connect 2:125): one matrix per set of edges — resting FC per task (undirected), gPPI
per task and contrast (directed, seed → target) — holding an effect's statistic per edge and
which edges survive the FDR and FWE corrections (:mod:`ketflow.group.inference` result tables).

Measure names (:mod:`ketflow.io.collect`): ``fc_<task>_<roiA>-<roiB>``,
``ppi_<task>_<contrast>_<seed>-to-<target>`` and ``betaseries_<task>_<contrast>_<roiA>-<roiB>``
(undirected, one matrix per task and contrast).  As ROI names may contain ``_`` (and atlas labels
``-``), a name is split with the list of circuit ROIs, not by its separators alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["EdgeMatrix", "parse_edge", "edge_matrices"]


@dataclass(frozen=True)
class EdgeMatrix:
    """One set of edges.

    label : ``fc_<task>``, ``ppi_<task>_<contrast>`` or ``betaseries_<task>_<contrast>``; sources,
    targets : ROI names of the rows and columns; directed : rows are seeds (gPPI) or the matrix is
    symmetric (FC, beta series); values : (rows, columns) statistic, NaN where there is no edge; fdr, fwe : (rows, columns)
    significance by each correction.
    """

    label: str
    sources: list
    targets: list
    directed: bool
    values: np.ndarray
    fdr: np.ndarray
    fwe: np.ndarray


def parse_edge(measure: str, task: str, rois: Sequence[str]) -> tuple[str, str, str] | None:
    """(edge-set label, source ROI, target ROI) of an FC, gPPI or beta-series measure, or None if it
    is none of these or names ROIs outside ``rois``."""
    prefix = f"betaseries_{task}_"
    if measure.startswith(prefix):
        rest = measure[len(prefix):]
        for a in rois:
            for b in rois:
                suffix = f"_{a}-{b}"
                if rest.endswith(suffix) and len(rest) > len(suffix):
                    return f"betaseries_{task}_{rest[: -len(suffix)]}", a, b
        return None
    rois = set(rois)
    for family in ("fc", "ppi"):
        prefix = f"{family}_{task}_"
        if not measure.startswith(prefix):
            continue
        rest = measure[len(prefix):]
        if family == "fc":
            for i, char in enumerate(rest):
                if char == "-" and rest[:i] in rois and rest[i + 1:] in rois:
                    return f"fc_{task}", rest[:i], rest[i + 1:]
            return None
        start = rest.find("-to-")
        while start >= 0:
            left, target = rest[:start], rest[start + 4:]
            seeds = [r for r in rois if left.endswith("_" + r) and len(left) > len(r) + 1]
            if target in rois and seeds:
                seed = max(seeds, key=len)
                return f"ppi_{task}_{left[: -len(seed) - 1]}", seed, target
            start = rest.find("-to-", start + 1)
    return None


def edge_matrices(results: pd.DataFrame, effect: str, arm: str, rois: Sequence[str],
                  value: str = "t") -> list[EdgeMatrix]:
    """The FC and gPPI matrices of one effect (``effect`` and ``arm`` columns) of a result table.

    rois : circuit ROI names, in the order of the rows and columns.  value : the column shown.
    """
    rows = results[(results["effect"] == effect) & (results["arm"] == arm)]
    edges: dict[str, list] = {}
    for row in rows.itertuples(index=False):
        parsed = parse_edge(str(row.measure), str(row.task), rois)
        if parsed is not None:
            edges.setdefault(parsed[0], []).append((parsed[1], parsed[2], row))
    out = []
    for label, items in edges.items():
        directed = label.startswith("ppi_")
        used_sources = {s for s, _, _ in items} | (set() if directed else {t for _, t, _ in items})
        used_targets = {t for _, t, _ in items} | (set() if directed else {s for s, _, _ in items})
        sources = [r for r in rois if r in used_sources]
        targets = [r for r in rois if r in used_targets]
        values = np.full((len(sources), len(targets)), np.nan)
        fdr = np.zeros(values.shape, bool)
        fwe = np.zeros(values.shape, bool)
        for source, target, row in items:
            pairs = [(source, target)] + ([] if directed else [(target, source)])
            for a, b in pairs:
                i, j = sources.index(a), targets.index(b)
                values[i, j] = getattr(row, value)
                fdr[i, j] = _flag(row.significant_fdr)
                fwe[i, j] = _flag(row.significant_fwe)
        out.append(EdgeMatrix(label, sources, targets, directed, values, fdr, fwe))
    return out


def _flag(value) -> bool:
    """A significance flag read back from a TSV (bool, 'True'/'False' or missing)."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value) if not pd.isna(value) else False
