"""Atomic, deterministic writers for outputs.

Every file ketflow puts in the output directory is first written to a temporary file in the
same folder and then renamed over its final name (``os.replace`` is atomic on POSIX), so an
interrupted run never leaves a half-written output.  A data file and its JSON sidecar are
written in an order that keeps the pair consistent (:func:`copy_with_sidecar`), and the
temporary files a killed run leaves behind are removed by the next run
(:func:`remove_partial_files`).  TSV and JSON writers use a fixed float
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


#: Name pattern of the temporary files of :func:`atomic_path` (``.<final name>.<random>.part``).
PARTIAL_PATTERN = ".*.part"


def copy_with_sidecar(source: Path | str, destination: Path | str, sidecar: Path | str, metadata: dict) -> Path:
    """Copy a data file and write its JSON sidecar so that the pair is never inconsistent.

    The old sidecar is removed first and the new one written last, each step atomic, so a
    kill at any point leaves the old pair, a data file without sidecar (incomplete: the
    next run writes it again), or the new pair -- never a sidecar describing other data.
    """
    Path(sidecar).unlink(missing_ok=True)
    copy_file(source, destination)
    write_json(sidecar, metadata)
    return Path(destination)


def remove_partial_files(out_dir: Path | str, subjects: list[str]) -> list[Path]:
    """Remove temporary files a killed run left for these subjects; returns what was removed.

    Only the subjects' own files are touched (``sub-<label>/`` and ``.sub-<label>*`` at the top
    level), so runs of other subjects writing to the same output directory are unaffected.
    """
    out_dir = Path(out_dir)
    removed = []
    for subject in subjects:
        found = list((out_dir / f"sub-{subject}").rglob(PARTIAL_PATTERN))
        found += [p for p in out_dir.glob(f".sub-{subject}[._]*.part")]
        for path in found:
            path.unlink(missing_ok=True)
            removed.append(path)
    return sorted(removed)


def copy_file(source: Path | str, destination: Path | str) -> Path:
    """Copy a file atomically (content only; permissions set to 0644)."""
    with atomic_path(destination) as tmp:
        shutil.copyfile(source, tmp)
    return Path(destination)
