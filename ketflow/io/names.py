"""ketflow's output names: the one place that builds and reads them.

The entities a ketflow file name may carry, and their order, are those of
``ketflow/data/bids_config.json`` (a pybids configuration, so the outputs can be indexed with
``BIDSLayout(out, config=[...])``): the order of the current BIDS schema
(``src/schema/rules/entities.yaml``: ``sub``, ``ses``, ``cohort``, ``task``, ``acq``, ``ce``,
``rec``, ``dir``, ``run``, ``echo``, ``part``, ``space``, ``atlas``, ``seg``, ``res``, ``den``,
...), then the statistical-model and connectivity entities of XCP-D and the BIDS Stats Models
derivatives (``roi``, ``model``, ``contrast``, ``stat``) before ``desc``, which comes last.

Every module that names or reads an output uses these functions: the derivatives sink
(:class:`ketflow.interfaces.bids.DerivativesDataSink`), the group-level collector
(:mod:`ketflow.io.collect`) and the reports (:mod:`ketflow.reports.outputs`).

Entity values must be alphanumeric; :func:`bids_label` turns configuration names such as
``amygdala_L`` or ``faces-gt-shapes`` into labels (``amygdalaL``, ``facesGtShapes``).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

from ..config import packaged_file

#: The naming configuration of ketflow's outputs (entity names are the file-name keys), read by
#: the sink (niworkflows' format).
BIDS_CONFIG = "bids_config.json"
#: The pybids configuration for users, to be given after pybids' own (as XCP-D ships
#: ``xcp_d_bids_config.json``): ``BIDSLayout(out, config=["bids", "derivatives", pybids_config()])``.
#: It holds only the entities pybids' ``bids`` and ``derivatives`` configurations lack
#: (``cohort``, ``contrast``, ``stat``): pybids refuses a configuration that defines an entity twice.
PYBIDS_CONFIG = "ketflow_bids_config.json"
#: Suffix of ROI signal series (``atlas-<label>_stat-<mean|eigenvariate>_bold.tsv``, beside XCP-D's
#: ``stat-coverage_bold.tsv``), not XCP-D's ``timeseries``: pybids loads every ``*_timeseries.tsv``
#: of a derivatives dataset as model regressors (``bids.variables.io``), and ROI series are not.
ROI_SERIES_SUFFIX = "bold"
#: ``stat-`` values of ROI signal series (the ``stat-coverage_bold.tsv`` table shares their suffix).
ROI_SERIES_STATS = ("mean", "eigenvariate")
#: Entities that are not key-value parts of a name.
_NOT_IN_NAME = ("suffix", "extension", "datatype")


@lru_cache(maxsize=1)
def bids_config() -> dict:
    """ketflow's pybids configuration (``ketflow/data/bids_config.json``)."""
    return json.loads(packaged_file(BIDS_CONFIG).read_text())


def pybids_config() -> str:
    """Path of ketflow's pybids configuration (:data:`PYBIDS_CONFIG`), for ``BIDSLayout(config=[...])``."""
    return str(packaged_file(PYBIDS_CONFIG))


def _entity_order() -> tuple[str, ...]:
    return tuple(e["name"] for e in bids_config()["entities"] if e["name"] not in _NOT_IN_NAME)


#: Entity keys in file-name order.
ENTITY_ORDER: tuple[str, ...] = _entity_order()
#: Entities of the BOLD series an output carries into its own name: those that identify the
#: acquisition, and its space (everything before ``atlas``); not its ``res``/``den``.
SOURCE_ENTITIES: tuple[str, ...] = ENTITY_ORDER[: ENTITY_ORDER.index("atlas")]
#: Entities that tell one run's outputs apart from another's (another resolution is another
#: run); the others (``atlas``, ``seg``, ``roi``, ``model``, ``contrast``, ``stat``, ``desc``) tell
#: a run's outputs apart from each other.
OUTPUT_ENTITIES = ("atlas", "seg", "roi", "model", "contrast", "stat", "desc")
RUN_ENTITIES: tuple[str, ...] = tuple(key for key in ENTITY_ORDER if key not in OUTPUT_ENTITIES)


def bids_label(name: str) -> str:
    """Alphanumeric BIDS label from a free-form name (``faces-gt-shapes`` -> ``facesGtShapes``)."""
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", str(name)) if p]
    if not parts:
        raise ValueError(f"cannot make a BIDS label from {name!r}")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def build_name(entities: dict, suffix: str, extension: str) -> str:
    """File name from entities (None values skipped; values made labels), suffix and extension (with dot)."""
    unknown = sorted(set(entities) - set(ENTITY_ORDER))
    if unknown:
        raise ValueError(f"unknown BIDS entities {unknown}; known: {list(ENTITY_ORDER)}")
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


def parse_name(path: Path | str) -> tuple[dict[str, str], str, str]:
    """(entities, suffix, extension) of a BIDS-like file name.

    ``sub-01_ses-pre_task-faces_bold.nii.gz`` -> ``({'sub': '01', 'ses': 'pre', 'task': 'faces'},
    'bold', '.nii.gz')``; parts without ``-`` other than the suffix are ignored.
    """
    name = Path(path).name
    stem, dot, ext = name.partition(".")
    parts = stem.split("_")
    entities = dict(p.split("-", 1) for p in parts[:-1] if "-" in p)
    return entities, parts[-1], dot + ext


def entities_in_name(path: Path | str) -> dict[str, str]:
    """Entities a working file's name gives an output (``contrast-X_stat-Y_statmap.nii.gz``).

    Interfaces name their outputs with the derivative entities that tell them apart; a name
    without entities (``coefficients.svg``) gives its stem as ``desc``.  Raises ValueError
    for a part that is not ``key-value``.
    """
    stem = Path(path).name.split(".")[0]
    if "-" not in stem:
        return {"desc": stem}
    entities = {}
    for part in stem.split("_")[:-1]:
        key, sep, value = part.partition("-")
        if not sep or not value:
            raise ValueError(f"{Path(path).name}: cannot read entity '{part}' from the file name")
        entities[key] = value
    return entities


def path_patterns() -> list[str]:
    """pybids path patterns equivalent to :func:`build_path` (subject-level outputs and figures).

    They let pybids' ``build_path`` (and the niworkflows sink machinery) name files exactly
    as :func:`build_path` does; a test checks that the two agree.
    """
    optional = "".join(f"[_{key}-{{{key}}}]" for key in ENTITY_ORDER if key not in ("sub", "ses"))
    name = f"sub-{{sub}}[_ses-{{ses}}]{optional}_{{suffix}}{{extension}}"
    return [f"sub-{{sub}}/{{datatype<figures>}}/{name}",
            f"sub-{{sub}}[/ses-{{ses}}]/{{datatype}}/{name}"]
