"""The key numbers at the top of a participant report, one column per session.

Read from the participant-level outputs with the group level's own collector
(:func:`ketflow.io.collect.collect_measures`, the measures of the feature table, DCM
parameters under region names from :mod:`ketflow.dcm.labels`), so the page shows the very
numbers the group level analyses.  Rows, for the configuration's a-priori regions (the DCM's
regions, e.g. vmPFC and amygdala_L, with their other hemisphere):

* circuit activation: each task's first contrast, the mean over the circuit ROIs and each
  a-priori region;
* gPPI between the a-priori regions (each ``ppi.tasks`` task's first contrast, both directions);
* resting couplings between them (Fisher z of the correlation);
* every DCM parameter of the DCM task (A, B, C under region and input names).

Every other measure stays in the run sections and in the output tables.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import AnalysisConfig
from ..io.collect import collect_measures


def key_regions(config: AnalysisConfig) -> list[str]:
    """The a-priori regions: the DCM's, each with its other hemisphere (``_L`` <-> ``_R``)."""
    regions = list(config.dcm.regions)
    for name in list(regions):
        twin = re.sub(r"_L$", "_R", name) if name.endswith("_L") else re.sub(r"_R$", "_L", name)
        if twin != name and twin not in regions:
            regions.append(twin)
    return regions


def _label(measure: str) -> str:
    return measure.replace("-to-", " → ").replace("-gt-", " > ")


def _dcm_label(parameter: str) -> str:
    """``B_amygdala_L-to-vmPFC_fearful`` -> ``B amygdala_L → vmPFC, modulated by fearful``."""
    kind, _, rest = parameter.partition("_")
    if kind in ("B", "D"):
        rest, _, by = rest.rpartition("_")
        return f"{kind} {_label(rest)}, modulated by {by.removeprefix('by-')}"
    return f"{kind} {_label(rest)}"


def key_measures(measures: pd.DataFrame, config: AnalysisConfig) -> pd.DataFrame:
    """Rows (measure family, label) x sessions of the key numbers; ``measures`` as
    :func:`~ketflow.io.collect.collect_measures` returns them for one subject."""
    regions = key_regions(config)
    rows: list[tuple[str, str, pd.Series]] = []
    by_measure = measures.pivot_table(index="measure", columns="session", values="value", aggfunc="mean")
    for task_name, task in config.tasks.items():
        if task.type != "task" or not task.contrasts:
            continue
        contrast = next(iter(task.contrasts))
        prefix = f"activation_{task_name}_{contrast}_"
        found = by_measure[by_measure.index.str.startswith(prefix)]
        if found.empty:
            continue
        rows.append(("Circuit activation", f"{task_name}, {_label(contrast)}: mean of {len(found)} circuit ROIs",
                     found.mean()))
        rows += [("Circuit activation", f"{task_name}, {_label(contrast)}: {r}", found.loc[prefix + r])
                 for r in regions if prefix + r in found.index]
    for task_name in config.ppi.tasks:
        contrasts = config.tasks[task_name].contrasts
        if not contrasts:
            continue
        contrast = next(iter(contrasts))
        for a in regions:
            for b in regions:
                name = f"ppi_{task_name}_{contrast}_{a}-to-{b}"
                if a != b and name in by_measure.index:
                    rows.append(("gPPI", f"{task_name}, {_label(contrast)}: {a} → {b}", by_measure.loc[name]))
    for task_name in config.connectivity.tasks:
        for k, a in enumerate(regions):
            for b in regions[k + 1:]:
                for name in (f"fc_{task_name}_{a}-{b}", f"fc_{task_name}_{b}-{a}"):
                    if name in by_measure.index:
                        rows.append(("Resting coupling (Fisher z)", f"{task_name}: {a} – {b}", by_measure.loc[name]))
                        break
    if config.measures.dcm:
        prefix = f"dcm_{config.dcm.task}_"
        for name in by_measure.index[by_measure.index.str.startswith(prefix)]:
            rows.append(("DCM parameters", _dcm_label(name[len(prefix):]), by_measure.loc[name]))
    sessions = [s for s in (config.sessions.baseline, config.sessions.followup) if s in by_measure.columns]
    sessions += sorted(set(by_measure.columns) - set(sessions))
    table = pd.DataFrame([series.reindex(sessions) for _, _, series in rows], columns=sessions)
    table.insert(0, "measure", [label for _, label, _ in rows])
    table.insert(0, "family", [family for family, _, _ in rows])
    return table.reset_index(drop=True)


def key_numbers_html(out_dir: Path, subject: str, config: AnalysisConfig) -> str:
    """HTML of the key numbers of ``sub-<subject>`` (a table, one column per session)."""
    measures = collect_measures(Path(out_dir), config, [subject])
    if measures.empty:
        return "<p>No circuit measure was found in the outputs of this participant.</p>"
    table = key_measures(measures, config)
    if table.empty:
        return "<p>None of the key measures was found in the outputs of this participant.</p>"
    sessions = list(table.columns[2:])
    head = "".join(f"<th>ses-{html.escape(str(s))}</th>" for s in sessions)
    body, family = [], None
    for row in table.itertuples(index=False):
        if row.family != family:
            family = row.family
            body.append(f'<tr class="table-secondary"><th colspan="{len(sessions) + 1}">{html.escape(family)}</th></tr>')
        cells = "".join(f"<td>{'n/a' if not np.isfinite(v) else f'{v:.2f}'}</td>" for v in row[2:])
        body.append(f"<tr><td>{html.escape(row.measure)}</td>{cells}</tr>")
    return ('<p class="small text-body-secondary">Key numbers of the a-priori circuit (the values the group '
            "level analyses; every measure is in the run sections and the output tables).</p>"
            f'<table class="table table-sm w-auto"><thead><tr><th>Measure</th>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")
