"""Atlases measured beside the circuit (``atlases``, ``--atlases``; issue 15.3): found, checked.

An atlas is given as a BEP038 atlas dataset (a folder holding
``[atlas-<label>/]tpl-<space>_atlas-<label>[_res-<N>]_dseg.nii.gz`` and its ``.tsv``; the
packaged ``ketflow/data/rois`` is one, holding the anatomical circuit atlas), or as a dseg + TSV
pair on the runs' own grid. :func:`resolve_atlas` finds the files and checks that the label
table matches the image (every label value in the image has a row, every row's index occurs);
:func:`atlas_grid_problems` checks an atlas against a run before anything is processed: a
template atlas must be in the run's output space, a pair must lie on the run's grid.  Each
problem names the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ..config import PACKAGED_ATLASES, ExtraAtlas, packaged_file
from .names import parse_name


@dataclass(frozen=True)
class ResolvedAtlas:
    """An atlas's files: ``dseg`` and ``labels`` (paths), its template ``space`` (None for a
    dseg + TSV pair on the runs' grid) and its ROI names in label order."""

    label: str
    dseg: str
    labels: str
    space: str | None
    names: tuple[str, ...]


def _dataset_dseg(folder: Path, label: str) -> Path:
    found = sorted(p for p in folder.rglob(f"tpl-*_atlas-{label}*dseg.nii*") if parse_name(p)[0].get("atlas") == label)
    if not found:
        raise ValueError(f"{folder}: no tpl-<space>_atlas-{label}_dseg.nii.gz in this atlas dataset")
    if len(found) > 1:
        raise ValueError(f"{folder}: several dseg images of atlas {label!r}: {[p.name for p in found]}; "
                         "give the one to use as dseg")
    return found[0]


def _table_path(dseg: Path) -> Path:
    return dseg.with_name(dseg.name.split(".nii")[0] + ".tsv")


def resolve_atlas(atlas: ExtraAtlas) -> ResolvedAtlas:
    """The files of ``atlas``, checked (ValueError naming the file otherwise)."""
    if atlas.dseg is not None:
        dseg = Path(atlas.dseg)
        labels = Path(atlas.labels) if atlas.labels is not None else _table_path(dseg)
    else:
        folder = Path(atlas.dataset) if atlas.dataset is not None else packaged_file(PACKAGED_ATLASES[atlas.label])
        if not folder.is_dir():
            raise ValueError(f"{folder}: atlas dataset of {atlas.label!r} is not a folder")
        dseg = _dataset_dseg(folder, atlas.label)
        labels = _table_path(dseg)
    for path, what in ((dseg, "dseg image"), (labels, "label table")):
        if not path.is_file():
            raise ValueError(f"{path}: the {what} of atlas {atlas.label!r} does not exist")
    try:
        table = pd.read_csv(labels, sep="\t")
    except (OSError, pd.errors.ParserError) as err:
        raise ValueError(f"{labels}: cannot read the label table of atlas {atlas.label!r} ({err})") from err
    if not {"index", "name"} <= set(table.columns):
        raise ValueError(f"{labels}: an atlas label table needs columns 'index' and 'name'")
    image = nib.load(dseg)
    if len(image.shape) > 3 and any(n > 1 for n in image.shape[3:]):
        raise ValueError(f"{dseg}: a dseg image must be 3-D, got shape {image.shape}")
    values = set(np.unique(np.asanyarray(image.dataobj)).astype(int).tolist()) - {0}
    indices = set(table["index"].astype(int))
    if values != indices:
        raise ValueError(f"{labels}: the label table does not match {dseg.name}: label values without a row "
                         f"{sorted(values - indices)[:10]}, rows whose index is not in the image "
                         f"{sorted(indices - values)[:10]}")
    space = parse_name(dseg)[0].get("tpl") or parse_name(dseg)[0].get("space")
    names = tuple(str(n) for n in table.sort_values("index")["name"])
    return ResolvedAtlas(atlas.label, str(dseg), str(labels), space if atlas.dseg is None else None, names)


def resolve_atlases(atlases: list[ExtraAtlas]) -> list[ResolvedAtlas]:
    """:func:`resolve_atlas` of each atlas (cached: every run's workflow asks)."""
    return [_resolve_cached(a.label, *(str(p) if p is not None else None for p in (a.dataset, a.dseg, a.labels)))
            for a in atlases]


@lru_cache(maxsize=32)
def _resolve_cached(label, dataset, dseg, labels) -> ResolvedAtlas:
    return resolve_atlas(ExtraAtlas(label=label, dataset=dataset, dseg=dseg, labels=labels))


def atlas_grid_problems(atlas: ResolvedAtlas, run_space: str | None, mask_path: str) -> list[str]:
    """Why ``atlas`` cannot be used on a run (empty when it can): a template atlas in another
    space than the run's; a dseg + TSV pair not on the grid of the run's brain mask."""
    if atlas.space is not None:
        if run_space != atlas.space:
            return [f"{atlas.dseg}: atlas {atlas.label!r} is in space {atlas.space}, the run "
                    f"{Path(mask_path).name} in {run_space}"]
        return []
    image, mask = nib.load(atlas.dseg), nib.load(mask_path)
    if image.shape[:3] != mask.shape[:3] or not np.allclose(image.affine, mask.affine, atol=1e-3):
        return [f"{atlas.dseg}: atlas {atlas.label!r} is not on the grid of {Path(mask_path).name} (shape "
                f"{image.shape[:3]} vs {mask.shape[:3]}); give it as a BEP038 atlas dataset in the output space to "
                "have it resampled"]
    return []
