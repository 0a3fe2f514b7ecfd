"""Byte-reproducible writers for NIfTI (.nii.gz), JSON and TSV files.

NIfTI images are serialised with nibabel and compressed with ``gzip.compress(..., mtime=0)`` so
that no timestamp or file name enters the gzip header. JSON has sorted keys and floats rounded to
10 significant digits; TSVs write NaN as ``n/a`` (BIDS).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

NIFTI_COMPRESSLEVEL = 1
MNI_XFORM_CODE = 4
SCANNER_XFORM_CODE = 1


def nifti_bytes(data: np.ndarray, affine: np.ndarray, dtype, tr: float | None = None,
                xform_code: int = MNI_XFORM_CODE) -> bytes:
    """Gzipped NIfTI-1 bytes of ``data`` (3-D or 4-D) with mm/s units and both xforms set."""
    img = nib.Nifti1Image(np.asarray(data).astype(dtype, copy=False), affine)
    hdr = img.header
    hdr.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=xform_code)
    img.set_sform(affine, code=xform_code)
    if tr is not None:
        zooms = hdr.get_zooms()
        hdr.set_zooms(zooms[:3] + (float(tr),))
    return gzip.compress(img.to_bytes(), compresslevel=NIFTI_COMPRESSLEVEL, mtime=0)


def write_bytes(path: Path, payload: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def _stable(obj):
    if isinstance(obj, dict):
        return {str(k): _stable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_stable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _stable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(f"{float(obj):.10g}")
    return obj


def write_json(path: Path, obj: dict) -> Path:
    """Indented JSON with sorted keys and floats rounded to 10 significant digits."""
    text = json.dumps(_stable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"
    return write_bytes(path, text.encode())


def write_tsv(path: Path, table: pd.DataFrame, float_format: str = "%.10g") -> Path:
    """Tab-separated table, NaN as ``n/a``, no index."""
    text = table.to_csv(sep="\t", index=False, na_rep="n/a", float_format=float_format,
                        lineterminator="\n")
    return write_bytes(path, text.encode())
