"""BEP017 sidecars of relationship matrices (``*_relmat.tsv``).

BIDS Extension Proposal 17 (generic BIDS connectivity data schema,
https://bids.neuroimaging.io/bep017) describes a relationship matrix by the fields written
here: ``RelationshipMeasure`` (what a value is), ``Weighted`` (values, not 0/1 edges),
``Directed`` (whether entry (i, j) differs in meaning from (j, i)), ``ValidDiagonal``
(whether the diagonal holds meaningful values), ``StorageFormat`` (``Full``: the whole
square matrix is stored) and ``NodeFiles`` (the files that define the nodes: the atlas
image and its label table).  ketflow's relmats use XCP-D's layout: a ``Node`` column naming
the row node, then one column per node, so rows and columns follow the label table's order.

:func:`relmat_sidecar` builds the fields of one matrix; :func:`connectivity_sidecars` gives
those of every resting-state measure (keyed by the ``stat-`` value); :func:`node_files` the
``NodeFiles`` of a run's atlas as BIDS URIs into the output dataset.  Every stage that writes
a relmat (connectivity, gPPI, beta-series) uses them.
"""

from __future__ import annotations

from pathlib import Path

from .names import SOURCE_ENTITIES, build_path, parse_name

#: ``stat-`` value -> (RelationshipMeasure, ValidDiagonal) of the resting-state matrices of
#: :func:`ketflow.signal.connectivity.connectivity_matrices`.  Correlation-type matrices have a
#: unit diagonal by construction (and Fisher z an undefined one, stored as n/a): not valid.
CONNECTIVITY_MEASURES: dict[str, tuple[str, bool]] = {
    "pearsoncorrelation": ("Pearson correlation", False),
    "fisherz": ("Fisher z-transformed Pearson correlation (artanh r)", False),
    "partialcorrelation": ("partial correlation (from the inverse of the sample covariance)", False),
    "ledoitwolfcovariance": ("Ledoit-Wolf shrinkage covariance", True),
    "ledoitwolfcorrelation": ("correlation of the Ledoit-Wolf shrinkage covariance", False),
    "ledoitwolfpartialcorrelation": ("partial correlation of the Ledoit-Wolf shrinkage covariance", False),
}

#: The one storage format ketflow writes: the full square matrix.
STORAGE_FORMAT = "Full"


def relmat_sidecar(measure: str, *, directed: bool, valid_diagonal: bool, node_files: list[str],
                   seed_axis: str | None = None, description: str | None = None) -> dict:
    """BEP017 fields of one relationship matrix.

    Parameters
    ----------
    measure : str
        ``RelationshipMeasure``, in words (``"Pearson correlation"``).
    directed : bool
        Whether entry (row i, column j) means something else than (row j, column i).
    valid_diagonal : bool
        Whether the diagonal holds meaningful values.
    node_files : list of str
        The files defining the nodes (BIDS URIs), see :func:`node_files`.
    seed_axis : {"row", "column"}, optional
        For a directed matrix, the axis of the source (seed) nodes; required when ``directed``.
    description : str, optional
        Free-text description added as ``Description``.
    """
    if directed and seed_axis not in ("row", "column"):
        raise ValueError(f"a directed relmat needs seed_axis 'row' or 'column', not {seed_axis!r}")
    if not directed and seed_axis is not None:
        raise ValueError("seed_axis is only meaningful for a directed relmat")
    if not node_files:
        raise ValueError("a relmat needs NodeFiles (the atlas image and label table defining its nodes)")
    fields = {"RelationshipMeasure": measure, "Weighted": True, "Directed": bool(directed),
              "ValidDiagonal": bool(valid_diagonal), "StorageFormat": STORAGE_FORMAT, "NodeFiles": list(node_files)}
    if directed:
        other = "column" if seed_axis == "row" else "row"
        fields["SeedAxis"] = seed_axis
        fields["TargetAxis"] = other
    if description:
        fields["Description"] = description
    return fields


def connectivity_sidecars(stats: list[str], node_files: list[str]) -> dict[str, dict]:
    """``stat-`` value -> BEP017 fields of the undirected resting-state matrices ``stats``."""
    unknown = sorted(set(stats) - set(CONNECTIVITY_MEASURES))
    if unknown:
        raise ValueError(f"no BEP017 description of connectivity measure(s) {unknown}; known: "
                         f"{sorted(CONNECTIVITY_MEASURES)}")
    return {stat: relmat_sidecar(CONNECTIVITY_MEASURES[stat][0], directed=False,
                                 valid_diagonal=CONNECTIVITY_MEASURES[stat][1], node_files=node_files)
            for stat in stats}


def node_files(bold: str | Path, atlas: str) -> list[str]:
    """BIDS URIs (``bids::sub-01/...``, into the output dataset itself) of the atlas image and label
    table (``*_atlas-<atlas>_dseg.nii.gz`` / ``.tsv``) that ketflow stores for the run of ``bold``."""
    entities = {key: value for key, value in parse_name(bold)[0].items() if key in SOURCE_ENTITIES}
    entities["atlas"] = atlas
    return [f"bids::{build_path(Path(), entities, 'dseg', extension).as_posix()}" for extension in (".nii.gz", ".tsv")]
