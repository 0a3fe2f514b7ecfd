"""The in-mask BOLD cache: each run's BOLD decompressed once, read many times.

fMRIPrep's BOLD series are gzipped NIfTI files; decompressing one (2 mm MNI grid, 200 volumes)
costs 2-4 s of CPU.  :func:`write_bold_cache` decompresses a run once, front to back, and
keeps only the voxels inside the brain mask: a float32 ``.npy`` of shape (time, voxels), the
voxels in C order of the mask (``data[:, k]`` is the voxel of ``np.flatnonzero(mask)[k]``).  The
mask maps the columns back to the grid.  It reads the gzip stream to its very end, so zlib
checks the CRC-32 and length trailer of every member: a file corrupted in the middle (right
length, wrong bytes), which the cheap checks of :mod:`ketflow.io.integrity` before the run
cannot see, fails here with a message naming it, before any model is fitted.

Readers open the cache memory-mapped and copy out the part they need:
:func:`open_bold_cache` (the whole matrix, lazily), :func:`voxel_chunks` (blocks of columns,
each through a fresh mapping, so the pages read are released after each block),
:func:`read_cache` (the whole matrix, optionally transformed block by block, e.g. to percent
signal change) and :func:`voxel_columns` (chosen columns, e.g. the voxels of some ROIs).
:func:`read_masked_bold` reads a 4-D NIfTI file the same way without a cache, and
:func:`read_denoised` the denoised data (a cache-like ``.npy`` or a NIfTI file).
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.volumeutils import apply_read_scaling

from .write import atomic_path

#: Voxels per block of :func:`voxel_chunks` (a multiple of ``fit_glm``'s chunk of 8192).
CHUNK_VOXELS = 16384
#: dtype of the cache (float32, little-endian).
CACHE_DTYPE = np.dtype("<f4")
#: Suffix replacing ``.nii``/``.nii.gz`` in the cache's file name.
CACHE_SUFFIX = ".inmask.npy"


def cache_name(bold: str | os.PathLike) -> str:
    """File name of the cache of ``bold``: its name with ``.inmask.npy`` for ``.nii(.gz)``."""
    name = Path(bold).name
    for extension in (".nii.gz", ".nii"):
        if name.endswith(extension):
            return name[: -len(extension)] + CACHE_SUFFIX
    return name + CACHE_SUFFIX


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Boolean 3-D brain mask."""
    return np.asanyarray(nib.load(path).dataobj) > 0


class CorruptImageError(ValueError):
    """The image data cannot be read in full: truncated file, or corrupt gzip data (CRC)."""


def mask_order(mask: np.ndarray) -> np.ndarray:
    """Offsets, within one volume as stored in a NIfTI file (Fortran order), of the voxels of
    ``mask`` (3-D bool) in C order: ``volume_on_disk[mask_order(mask)] == volume[mask]``."""
    ijk = np.unravel_index(np.flatnonzero(mask), mask.shape)
    return np.ravel_multi_index(ijk, mask.shape, order="F")


def masked_volumes(bold: str | os.PathLike, mask: np.ndarray) -> Iterator[np.ndarray]:
    """In-mask voxels (n_voxels,) float32 of each volume of a 4-D NIfTI file, in order.

    Decompresses the file once, front to back, and reads it to the end, so the gzip CRC of a
    ``.nii.gz`` is verified after the last volume.  Raises :class:`CorruptImageError` naming
    the file when the data are truncated or corrupt, ``ValueError`` when the image is not a
    4-D series on the grid of ``mask``.
    """
    path = Path(bold)
    img = nib.load(path)
    if img.ndim != 4 or img.shape[:3] != mask.shape:
        raise ValueError(f"{path.name}: shape {img.shape} is not a 4-D series on the brain mask's grid {mask.shape}")
    dtype = img.get_data_dtype()
    n_volumes = img.shape[3]
    volume_bytes = int(np.prod(img.shape[:3])) * dtype.itemsize
    offset = int(img.dataobj.offset)
    slope, inter = img.dataobj.slope, img.dataobj.inter
    scaled = (slope, inter) != (1.0, 0.0)
    index = mask_order(mask)
    buffer = bytearray(volume_bytes)
    view = memoryview(buffer)
    opener = gzip.open if path.name.endswith(".gz") else open
    done = 0
    try:
        with opener(path, "rb") as handle:
            if len(handle.read(offset)) != offset:
                raise CorruptImageError(f"{path}: corrupt BOLD image: the file ends inside the NIfTI header")
            for done in range(n_volumes):
                got = 0
                while got < volume_bytes:  # readinto may return less than asked before the end
                    n = handle.readinto(view[got:])
                    if not n:
                        raise CorruptImageError(f"{path}: corrupt BOLD image: the data end in volume {done + 1} "
                                                f"of {n_volumes} (truncated file)")
                    got += n
                values = np.frombuffer(buffer, dtype=dtype)[index]
                if scaled:
                    values = apply_read_scaling(values, slope, inter)
                yield values.astype(np.float32, copy=False)
            done = n_volumes
            while handle.read(1 << 20):  # to the end of the stream: gzip checks CRC-32 and length here
                pass
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        where = (f"after all {n_volumes} volumes, in the gzip CRC-32/length check" if done == n_volumes
                 else f"in volume {done + 1} of {n_volumes}")
        raise CorruptImageError(f"{path}: corrupt BOLD image: the gzip data are corrupt or cut short, found "
                                f"{where} ({err})") from err


def write_bold_cache(bold: str | os.PathLike, mask: np.ndarray, out: str | os.PathLike) -> Path:
    """Write the in-mask voxels of ``bold`` as a (time, voxels) float32 ``.npy`` at ``out``.

    Written volume by volume (one volume in memory) to a temporary file renamed onto ``out``
    at the end, so ``out`` never exists half-written; see :func:`masked_volumes` for errors.
    """
    n_volumes = nib.load(bold).shape[-1]
    header = {"descr": np.lib.format.dtype_to_descr(CACHE_DTYPE), "fortran_order": False,
              "shape": (int(n_volumes), int(mask.sum()))}
    with atomic_path(out) as tmp, open(tmp, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        for values in masked_volumes(bold, mask):
            handle.write(values.astype(CACHE_DTYPE, copy=False).tobytes())
    return Path(out)


def open_bold_cache(path: str | os.PathLike, mask: np.ndarray | None = None) -> np.memmap:
    """The cache (or any in-mask (time, voxels) float32 ``.npy``, such as the denoised data) as
    a read-only memory-mapped array.

    ``mask`` (3-D bool), if given, must hold as many voxels as the cache has columns.
    """
    data = np.load(path, mmap_mode="r")
    if data.ndim != 2 or data.dtype != CACHE_DTYPE:
        raise ValueError(f"{Path(path).name}: expected a (time, voxels) float32 matrix, got {data.dtype} "
                         f"{data.shape}")
    if mask is not None and data.shape[1] != int(mask.sum()):
        raise ValueError(f"{Path(path).name}: {data.shape[1]} voxels, but the brain mask has {int(mask.sum())}")
    return data


def voxel_chunks(path: str | os.PathLike, size: int | None = None) -> Iterator[tuple[slice, np.ndarray]]:
    """(columns, data (time, columns) float32 copy) for consecutive blocks of ``size`` voxels
    (default :data:`CHUNK_VOXELS`).

    Each block is copied out of its own mapping of the file, which is closed before the next
    block: the process holds one block, not the pages of the whole file.
    """
    size = size or CHUNK_VOXELS
    n_voxels = open_bold_cache(path).shape[1]
    for start in range(0, max(n_voxels, 1), size):  # one empty block for an empty mask
        columns = slice(start, min(start + size, n_voxels))
        yield columns, _copy(path, (slice(None), columns))


def voxel_columns(path: str | os.PathLike, index: np.ndarray) -> np.ndarray:
    """Columns ``index`` (int or bool over voxels) of the cache, (time, len) float32 copy.

    Read by blocks of volumes: the voxels of a few ROIs are scattered over every page of a
    row, so reading their columns at once would keep the pages of the whole file mapped.
    """
    data = open_bold_cache(path)
    index = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index, dtype=np.intp)
    out = np.empty((data.shape[0], index.size), dtype=np.float32)
    del data
    for start, rows in volume_blocks(path):
        out[start:start + rows.shape[0]] = rows[:, index]
    return out


def volume_blocks(path: str | os.PathLike, size: int = 16) -> Iterator[tuple[int, np.ndarray]]:
    """(first volume, data (volumes, voxels) float32 copy) for consecutive blocks of ``size``
    volumes (rows are contiguous in the file; one block held at a time)."""
    n_volumes = open_bold_cache(path).shape[0]
    for start in range(0, n_volumes, size):
        yield start, _copy(path, slice(start, start + size))


def volume_means(path: str | os.PathLike) -> np.ndarray:
    """Mean over all in-mask voxels of each volume (time,), float64."""
    return np.concatenate([[row.mean() for row in rows.astype(np.float64)] for _, rows in volume_blocks(path)])


def _copy(path, key) -> np.ndarray:
    """A copy of ``cache[key]`` through a mapping that is released on return."""
    return np.array(open_bold_cache(path)[key])


def read_cache(path: str | os.PathLike, transform: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """The whole cache as a (time, voxels) float32 array, read in blocks of voxels.

    ``transform`` (optional) is applied to each (time, block) float32 block and must act on
    every voxel on its own (e.g. :func:`ketflow.signal.glm.percent_signal_change`), so the
    blocks give the whole-matrix result while one block at a time is held besides the output.
    """
    out = np.empty(open_bold_cache(path).shape, dtype=np.float32)
    for columns, block in voxel_chunks(path):
        out[:, columns] = block if transform is None else transform(block)
    return out


def read_masked_bold(path: str | os.PathLike, mask: np.ndarray) -> np.ndarray:
    """In-mask voxels of a 4-D BOLD file as a (time, voxels) float32 matrix.

    Decompresses the file once, front to back, one volume in memory besides the output
    (:func:`masked_volumes`, which also checks the gzip CRC).
    """
    shape = nib.load(path).shape
    out = np.empty((shape[-1] if len(shape) == 4 else 0, int(mask.sum())), dtype=np.float32)
    for t, values in enumerate(masked_volumes(path, mask)):  # raises first if not 4-D on the mask's grid
        out[t] = values
    return out


def read_denoised(path: str | os.PathLike, mask: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
    """Denoised (retained volumes, in-mask voxels) float32 matrix from ``.npy`` or NIfTI.

    columns : optional index over the in-mask voxels: read only those (from a ``.npy``, only
        the pages holding them are read).
    """
    if str(path).endswith(".npy"):
        data = open_bold_cache(path, mask)
        return np.array(data) if columns is None else voxel_columns(path, columns)
    data = read_masked_bold(path, mask)
    return data if columns is None else data[:, columns]


def cache_dvars(path: str | os.PathLike) -> np.ndarray:
    """:func:`~ketflow.signal.connectivity.dvars` of a cache (T-1,), read in blocks of volumes."""
    from ..signal.connectivity import dvars

    parts, previous = [], None
    for _, block in volume_blocks(path):
        parts.append(dvars(block if previous is None else np.concatenate([previous, block])))
        previous = block[-1:]
    return np.concatenate(parts)
