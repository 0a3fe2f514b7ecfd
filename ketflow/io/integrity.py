"""Integrity checks of (gzipped) NIfTI files that reading the header alone does not catch.

nibabel reads a ``.nii.gz`` header from the first few hundred bytes, so a file cut short by an
interrupted copy, or with corrupted bytes in the middle, loads fine and fails only when a node
reads the data, half-way through the workflow.  Two checks, from cheap to thorough:

* :func:`size_problem` compares the size the header implies (``vox_offset`` + voxels x bytes
  per voxel) with the file: for an uncompressed ``.nii`` the file size, for a ``.nii.gz`` the
  gzip ``ISIZE`` trailer (uncompressed length modulo 2**32, RFC 1952 section 2.3.1), which is
  the last 4 bytes of the file.  A truncated gzip file ends mid-stream, so its last 4 bytes are
  compressed data and almost never equal the expected length.  This costs one seek and is
  done for every image.
* :func:`gzip_stream_problem` decompresses the whole stream (discarding the output) and lets
  zlib verify every member's CRC-32 and length trailer: it finds corrupted bytes anywhere.
  zlib releases the GIL while inflating, so several files can be checked in parallel threads.

A multi-member gzip file (e.g. written by ``bgzip``) carries only its last member's length in
the final trailer; :func:`check_nifti` therefore confirms any size mismatch of a ``.nii.gz``
by the full stream check before reporting it, so a valid file is never rejected.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

#: Bytes of compressed input fed to zlib per step of the stream check.
CHUNK_BYTES = 1 << 20
#: Most uncompressed bytes produced (and discarded) per step: bounds the memory used.
OUTPUT_BYTES = 1 << 23


def expected_nifti_bytes(image) -> int:
    """Uncompressed size (bytes) of a loaded single-file NIfTI image: header + extensions + data."""
    header = image.header
    n_voxels = int(np.prod(header.get_data_shape(), dtype=np.int64))
    return int(image.dataobj.offset) + n_voxels * header.get_data_dtype().itemsize


def size_problem(path: str | Path, expected: int) -> str | None:
    """Cheap length check (see module docstring); None when the length is as expected."""
    path = Path(path)
    size = path.stat().st_size
    if not path.name.endswith(".gz"):
        if size < expected:
            return f"the file is truncated ({size} bytes, the header implies {expected})"
        return None
    if size < 18:  # 10-byte gzip header + 8-byte trailer
        return f"the gzip file is truncated ({size} bytes)"
    with open(path, "rb") as handle:
        handle.seek(-4, os.SEEK_END)
        (isize,) = struct.unpack("<I", handle.read(4))
    if isize != expected % (1 << 32):
        return (f"the gzip trailer records {isize} uncompressed bytes but the header implies {expected} "
                "(truncated or corrupt file)")
    return None


def gzip_stream_problem(path: str | Path, expected: int | None = None) -> str | None:
    """Decompress every gzip member of ``path``, checking CRC-32 and lengths; None if intact.

    ``expected`` (bytes), if given, is the least total uncompressed length (data after the image
    are harmless, as in an uncompressed file).
    """
    total = 0
    with open(path, "rb") as handle:
        data = b""
        while True:
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing: checks CRC-32 and ISIZE
            try:
                while not inflater.eof:
                    if not data:
                        data = handle.read(CHUNK_BYTES)
                        if not data:
                            return (f"the gzip stream ends early, after {total} uncompressed bytes"
                                    + (f" of {expected}" if expected is not None else "") + " (truncated file)")
                    total += len(inflater.decompress(data, OUTPUT_BYTES))
                    data = inflater.unconsumed_tail
            except zlib.error as err:
                return f"the gzip data are corrupt ({str(err).split(': ', 1)[-1]}; CRC or deflate error)"
            data = inflater.unused_data or handle.read(CHUNK_BYTES)
            while data and not data.strip(b"\0"):  # zero padding after the last member is allowed
                data = handle.read(CHUNK_BYTES)
            if not data:
                break
    if expected is not None and total < expected:
        return f"the file holds {total} uncompressed bytes but the header implies {expected} (truncated image)"
    return None


def check_nifti(path: str | Path, image, full: bool) -> str | None:
    """Integrity problem of the NIfTI file ``path`` (loaded as ``image``, header only), or None.

    full : also decompress the whole gzip stream (CRC check) even when the length is right.
    """
    expected = expected_nifti_bytes(image)
    problem = size_problem(path, expected)
    if not str(path).endswith(".gz"):
        return problem
    if problem is None and not full:
        return None
    return gzip_stream_problem(path, expected)
