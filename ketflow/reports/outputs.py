"""The processed runs of one subject, found in a ketflow output directory.

Reports and their figures are built from the participant-level outputs (and the inputs those
outputs name in their sidecars), never from the work directory, so ``--reports-only`` can
rebuild them at any time.  A run is identified by its denoising QC file
(``*_desc-denoise_qc.json``, written for every processed run); its other outputs share its
identifying entities (:data:`~ketflow.io.names.RUN_ENTITIES`: ``sub`` ... ``space``, ``res``, ``den``).
Inputs are resolved from the ``Sources`` BIDS URIs through ``DatasetLinks`` of the output's
``dataset_description.json``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd

from ..io.names import ROI_SERIES_STATS, ROI_SERIES_SUFFIX, RUN_ENTITIES, build_path, parse_name

#: Input roles recognised in ``Sources`` by the end of the file name (fMRIPrep / raw BIDS names).
_SOURCE_ROLES = {
    "bold": re.compile(r"_desc-preproc_bold\.nii(\.gz)?$"),
    "mask": re.compile(r"_desc-brain_mask\.nii(\.gz)?$"),
    "confounds": re.compile(r"_desc-confounds_(timeseries|regressors)\.tsv$"),
    "events": re.compile(r"_events\.tsv$"),
}


def resolve_uri(uri: str, links: dict[str, str]) -> Path | None:
    """Local path of a ``bids:<dataset>:<path>`` or ``file://`` URI (None if it cannot be resolved)."""
    if uri.startswith("bids:"):
        _, dataset, rel = uri.split(":", 2)
        root = links.get(dataset)
        return None if root is None else resolve_uri(root, {}) / rel
    if uri.startswith("file:"):
        return Path(unquote(urlparse(uri).path))
    return Path(uri)


def dataset_links(out_dir: Path) -> dict[str, str]:
    """``DatasetLinks`` of the output's ``dataset_description.json`` (empty if absent).

    Links given as relative paths (as ketflow writes them) are resolved against ``out_dir``.
    """
    path = Path(out_dir) / "dataset_description.json"
    try:
        links = dict(json.loads(path.read_text()).get("DatasetLinks", {}))
    except (OSError, ValueError):
        return {}
    return {name: link if ":" in link else str((Path(out_dir) / link).resolve())
            for name, link in links.items()}


@dataclass
class RunOutputs:
    """The outputs of one processed run and the inputs they came from."""

    entities: dict[str, str]
    folder: Path
    qc: dict
    source_uris: dict[str, str] = field(default_factory=dict)
    sources: dict[str, Path] = field(default_factory=dict)
    tr: float | None = None
    config_hash: str | None = None
    bold_cache: str | None = None  #: the run's in-mask BOLD cache in the work directory, if known

    @property
    def label(self) -> str:
        """Human-readable run label, e.g. ``ses-pre task-faces run-1``."""
        return " ".join(f"{k}-{v}" for k, v in self.entities.items() if k in ("ses", "task", "run"))

    def files(self, suffix: str, extension: str, **entities) -> list[Path]:
        """This run's output files with ``suffix``/``extension`` and the given derivative entities.

        An entity given as ``None`` must be absent, ``"*"`` must be present (any value).
        """
        found = []
        for path in sorted(self.folder.glob(f"*_{suffix}{extension}")):
            ents, suf, ext = parse_name(path)
            if suf != suffix or ext != extension:
                continue
            if any(ents.get(k) != self.entities.get(k) for k in RUN_ENTITIES):
                continue
            if all((ents.get(k) is None) if v is None else (k in ents) if v == "*" else ents.get(k) == v
                   for k, v in entities.items()):
                found.append(path)
        return found

    def file(self, suffix: str, extension: str, **entities) -> Path | None:
        """The single output matching (see :meth:`files`), or None."""
        found = self.files(suffix, extension, **entities)
        return found[0] if len(found) == 1 else None

    def figure_path(self, out_dir: Path, suffix: str, **entities) -> Path:
        """``out/sub-X/figures/<run entities>_<entities>_<suffix>.svg``."""
        return build_path(out_dir, {**self.entities, **entities}, suffix, ".svg", datatype="figures")

    def censoring(self) -> pd.DataFrame | None:
        """The run's per-volume censoring table (columns ``framewise_displacement`` in mm, ``dummy``,
        ``motion_censored``, ``retained``) from its ``_motion.tsv`` and ``_outliers.tsv``, or None."""
        motion, outliers = self.file("motion", ".tsv"), self.file("outliers", ".tsv")
        if motion is None or outliers is None:
            return None
        flags = pd.read_csv(outliers, sep="\t")
        return pd.DataFrame({"framewise_displacement": pd.read_csv(motion, sep="\t")["framewise_displacement"],
                             "dummy": flags["dummy_scan"], "motion_censored": flags["motion_outlier"],
                             "retained": ((flags["dummy_scan"] == 0) & (flags["motion_outlier"] == 0)).astype(int)})

    def roi_series(self) -> list[Path]:
        """The run's ROI signal series (``atlas-*_stat-<mean|eigenvariate>_bold.tsv``, not the DCM VOIs)."""
        return [p for p in self.files(ROI_SERIES_SUFFIX, ".tsv", atlas="*", stat="*", desc=None)
                if parse_name(p)[0]["stat"] in ROI_SERIES_STATS]


def find_runs(out_dir: Path, subject: str, session_order: list[str] = (), task_order: list[str] = ()) -> list[RunOutputs]:
    """Every processed run of ``sub-<subject>`` in ``out_dir``, in session, task, run order.

    Sessions and tasks listed in ``session_order``/``task_order`` come first, in that order.
    """
    sub_dir = Path(out_dir) / f"sub-{subject}"
    links = dataset_links(out_dir)
    runs = []
    for qc_path in sorted(sub_dir.glob("**/func/*_desc-denoise_qc.json")):
        ents, _, _ = parse_name(qc_path)
        identity = {k: ents[k] for k in RUN_ENTITIES if k in ents}
        run = RunOutputs(entities=identity, folder=qc_path.parent, qc=json.loads(qc_path.read_text()))
        _read_provenance(run, links)
        runs.append(run)

    def rank(order, value):
        order = list(order)
        return (order.index(value), "") if value in order else (len(order), value or "")

    return sorted(runs, key=lambda r: (rank(session_order, r.entities.get("ses")),
                                       rank(task_order, r.entities.get("task")),
                                       int(r.entities["run"]) if str(r.entities.get("run", "")).isdigit()
                                       else 0, r.entities.get("run") or ""))


def _read_provenance(run: RunOutputs, links: dict[str, str]) -> None:
    """Fill ``run``'s sources, TR and configuration hash from its sidecars."""
    sidecars = [p.with_suffix(".json") for p in run.roi_series()] + run.files("outliers", ".json")
    for sidecar in (p for p in sidecars if p.is_file()):
        meta = json.loads(sidecar.read_text())
        run.tr = run.tr or meta.get("RepetitionTime")
        run.config_hash = run.config_hash or meta.get("GeneratedBy", {}).get("ConfigHash")
        for uri in meta.get("Sources", []):
            for role, pattern in _SOURCE_ROLES.items():
                if pattern.search(uri) and role not in run.source_uris:
                    run.source_uris[role] = uri
    for role, uri in run.source_uris.items():
        path = resolve_uri(uri, links)
        if path is not None and path.is_file():
            run.sources[role] = path
    bold = run.sources.get("bold")
    if bold is not None:  # fMRIPrep writes the run's reference next to its preprocessed series
        boldref = bold.with_name(_SOURCE_ROLES["bold"].sub(r"_boldref.nii\1", bold.name))
        if boldref.is_file():
            run.sources["boldref"] = boldref
