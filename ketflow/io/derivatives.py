"""BIDS-Derivatives naming, dataset description and provenance sidecars.

Output names follow BIDS entity order, with the statistical-model and connectivity
entities used by fMRIPrep, XCP-D and the BIDS Stats Models derivatives (``atlas-``,
``seg-``, ``contrast-``, ``stat-``).  Entity values must be alphanumeric; :func:`bids_label`
turns configuration names such as ``amygdala_L`` or ``faces-gt-shapes`` into labels
(``amygdalaL``, ``facesGtShapes``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .. import __version__

#: Entity order of output file names (BIDS specification, appendix "Entity table", plus the
#: derivative entities of XCP-D and BIDS Stats Models).
ENTITY_ORDER = (
    "sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "echo", "space", "res", "den",
    "cohort", "atlas", "seg", "roi", "model", "contrast", "stat", "desc",
)

BIDS_VERSION = "1.9.0"


def bids_label(name: str) -> str:
    """Alphanumeric BIDS label from a free-form name (``faces-gt-shapes`` -> ``facesGtShapes``)."""
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", str(name)) if p]
    if not parts:
        raise ValueError(f"cannot make a BIDS label from {name!r}")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def build_name(entities: dict, suffix: str, extension: str) -> str:
    """File name from entities (None values skipped), suffix and extension (with dot)."""
    unknown = sorted(set(entities) - set(ENTITY_ORDER))
    if unknown:
        raise ValueError(f"unknown BIDS entities {unknown}")
    parts = [f"{key}-{bids_label(entities[key])}" for key in ENTITY_ORDER if entities.get(key) is not None]
    return "_".join(parts + [suffix]) + extension


def build_path(out_dir: Path | str, entities: dict, suffix: str, extension: str, datatype: str = "func") -> Path:
    """Full derivative path ``out/sub-X[/ses-Y]/<datatype>/<name>``.

    Report figures (``datatype="figures"``) go to ``out/sub-X/figures/`` as in fMRIPrep;
    outputs without a subject (group level) go to ``out/<datatype>/``.
    """
    if entities.get("sub") is None:
        return Path(out_dir) / datatype / build_name(entities, suffix, extension)
    folder = Path(out_dir) / f"sub-{entities['sub']}"
    if entities.get("ses") and datatype != "figures":
        folder /= f"ses-{entities['ses']}"
    return folder / datatype / build_name(entities, suffix, extension)


def dataset_description(source_links: dict[str, Path], out_dir: Path | str | None = None,
                        name: str = "ketflow derivatives") -> dict:
    """The ``dataset_description.json`` content of ketflow's output dataset.

    ``source_links`` maps dataset names used in BIDS URIs (``raw``, ``fmriprep``) to folders.
    ``DatasetLinks`` gives them relative to ``out_dir`` (``"../.."`` for a raw dataset whose
    ``derivatives/ketflow`` this is), as the BIDS specification's own example does, so the links
    survive moving or mounting the whole study folder elsewhere; without ``out_dir`` they
    are absolute ``file://`` URIs.  No ``CodeURL`` is given: ketflow has no public repository
    yet, and a made-up address would mislead.
    """
    def link(path: Path) -> str:
        path = Path(path).resolve()
        return os.path.relpath(path, Path(out_dir).resolve()) if out_dir is not None else path.as_uri()

    return {
        "Name": name,
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [
            {
                "Name": "ketflow",
                "Version": __version__,
                "Description": "Fear/emotion-regulation circuit measures after fMRIPrep",
            }
        ],
        "SourceDatasets": [{"URL": f"bids:{key}:"} for key in sorted(source_links)],
        "DatasetLinks": {key: link(path) for key, path in sorted(source_links.items())},
    }


def bids_uri(path: Path | str, source_links: dict[str, Path]) -> str:
    """A BIDS URI (``bids:fmriprep:sub-01/...``) for a file inside one of the linked datasets.

    The most specific (deepest) linked folder containing the file wins, so files of
    ``bids/derivatives/fmriprep`` are cited from ``fmriprep`` rather than ``raw``.
    """
    path = Path(path).resolve()
    candidates = []
    for key, root in source_links.items():
        root = Path(root).resolve()
        if path == root or root in path.parents:
            candidates.append((len(root.parts), key, root))
    if not candidates:
        return path.as_uri()
    _, key, root = max(candidates)
    return f"bids:{key}:{path.relative_to(root).as_posix()}"


BIDSIGNORE = "\n".join(["logs/", "work/", "*.html", "sub-*/figures/", "group/", ""])
