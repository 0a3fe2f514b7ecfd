"""Atomic, deterministic writers for outputs.

Every file ketflow puts in the output directory is first written to a temporary file in the
same folder and then renamed over its final name (``os.replace`` is atomic on POSIX), so an
interrupted run never leaves a half-written output.  TSV and JSON writers use a fixed float
format and sorted keys so that two runs on the same inputs give byte-identical files, and
gzip members carry no timestamp (``mtime=0``) for the same reason.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

#: Float format of every TSV ketflow writes (17 significant digits round-trip float64).
FLOAT_FORMAT = "%.10g"


@contextlib.contextmanager
def atomic_path(final: Path | str):
    """Yield a temporary path next to ``final``; rename it onto ``final`` on success.

    The temporary file is removed if the block raises, so ``final`` is either the complete
    new file or untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: Path | str, text: str) -> Path:
    """Write ``text`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def to_json_text(data) -> str:
    """Canonical JSON text: sorted keys, two-space indent, NumPy scalars/arrays converted."""
    return json.dumps(data, indent=2, sort_keys=True, default=_json_default, allow_nan=False) + "\n"


def write_json(path: Path | str, data) -> Path:
    """Write ``data`` as canonical JSON, atomically."""
    return write_text(path, to_json_text(data))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def write_tsv(path: Path | str, frame: pd.DataFrame, index: bool = False) -> Path:
    """Write a DataFrame as a BIDS TSV (tab-separated, ``n/a`` for missing), atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=index, na_rep="n/a", float_format=FLOAT_FORMAT, lineterminator="\n")
    return Path(path)


def write_nifti(path: Path | str, image: nb.Nifti1Image) -> Path:
    """Save a NIfTI-1 image atomically; ``.nii.gz`` is gzipped with no timestamp (deterministic)."""
    path = Path(path)
    payload = nb.Nifti1Image(np.asanyarray(image.dataobj), image.affine, image.header).to_bytes()
    with atomic_path(path) as tmp:
        if path.name.endswith(".gz"):
            with open(tmp, "wb") as handle, gzip.GzipFile(
                filename="", mode="wb", fileobj=handle, mtime=0, compresslevel=6
            ) as stream:
                stream.write(payload)
        else:
            tmp.write_bytes(payload)
    return path


def copy_file(source: Path | str, destination: Path | str) -> Path:
    """Copy a file atomically (content only; permissions set to 0644)."""
    with atomic_path(destination) as tmp:
        shutil.copyfile(source, tmp)
    return Path(destination)
