"""The output dataset's description and provenance: ``dataset_description.json`` and BIDS URIs.

Output names are built and read by :mod:`ketflow.io.names` (``bids_label`` is re-exported
here for the group level, which imports it from this module).
"""

from __future__ import annotations

import os
from pathlib import Path

from .. import __version__
from .names import bids_label

__all__ = ["BIDSIGNORE", "BIDS_VERSION", "bids_label", "bids_uri", "dataset_description"]

BIDS_VERSION = "1.9.0"


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


#: Suffixes of ketflow's outputs that the BIDS schema does not define (yet): XCP-D's and BEP017's
#: ``timeseries``/``relmat``, the statistical maps of BIDS Stats Models derivatives, design
#: matrices, contrast tables, QC and model files, XCP-D's motion tables, single-trial estimates.  ROI tables
#: (``*_stat-<coverage|mean|eigenvariate>_bold.tsv``, XCP-D's name for ROI coverage) are read
#: by the schema as BOLD series: ``*_bold.tsv`` and ``*_bold.json`` are ignored (ketflow writes no
#: BOLD image).  (bids-validator 2.x matched ``*_stat-*_bold.*`` to none of them.)
UNDEFINED_SUFFIXES = ("timeseries", "relmat", "statmap", "boldmap", "design", "contrasts", "qc", "ppi", "dcm",
                      "outliers", "motion", "exclusions", "betaseries")

#: ``.bidsignore`` of the output dataset: folders and files outside the BIDS-Derivatives
#: schema, so that ``bids-validator --datasetTypes derivative`` reports no error.
BIDSIGNORE = "\n".join(["logs", "work", "*.html", "sub-*/figures", "group",
                        *(f"*_{suffix}.*" for suffix in UNDEFINED_SUFFIXES), "*_bold.tsv", "*_bold.json", ""])
