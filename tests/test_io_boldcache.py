"""The in-mask BOLD cache: what it holds, how corrupt files fail, and its readers."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from ketflow.io.boldcache import (
    CorruptImageError,
    cache_name,
    open_bold_cache,
    read_cache,
    read_denoised,
    read_masked_bold,
    volume_means,
    voxel_chunks,
    voxel_columns,
    write_bold_cache,
)

SHAPE, N = (7, 6, 5), 40


def write_series(path, data, slope=None, inter=None, dtype=np.float32):
    img = nib.Nifti1Image(data.astype(dtype), np.diag([3.0, 3.0, 3.0, 1.0]))
    img.header.set_data_dtype(dtype)
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    img.to_filename(path)
    return path


@pytest.fixture
def mask():
    rng = np.random.default_rng(0)
    return rng.random(SHAPE) > 0.4


@pytest.mark.parametrize("name, dtype, slope, inter", [("bold.nii.gz", np.float32, None, None),
                                                       ("bold.nii", np.int16, 0.5, 10.0),
                                                       ("bold.nii.gz", ">f8", None, None)])
def test_cache_holds_the_in_mask_voxels_of_every_volume(name, dtype, slope, inter, mask, tmp_path):
    rng = np.random.default_rng(1)
    bold = write_series(tmp_path / name, rng.normal(300, 20, SHAPE + (N,)), slope, inter, dtype)
    out = write_bold_cache(bold, mask, tmp_path / "cache.npy")
    expected = np.asanyarray(nib.load(bold).dataobj, dtype=np.float64)[mask].T  # nibabel's scaling
    cache = open_bold_cache(out, mask)
    assert cache.shape == (N, int(mask.sum())) and cache.dtype == np.float32
    np.testing.assert_array_equal(cache, expected.astype(np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "cache.npy"])  # no temporary left


def test_a_wrong_crc_or_a_cut_file_fails_naming_it_and_writes_nothing(mask, tmp_path):
    rng = np.random.default_rng(2)
    bold = write_series(tmp_path / "bold.nii.gz", rng.normal(300, 20, SHAPE + (N,)))
    payload = bytearray(bold.read_bytes())
    payload[-8] ^= 0x01  # the CRC-32 of the gzip trailer; deflate data and length intact
    bad_crc = tmp_path / "crc.nii.gz"
    bad_crc.write_bytes(bytes(payload))
    with pytest.raises(CorruptImageError, match=rf"crc\.nii\.gz: corrupt BOLD image: .*after all {N} volumes.*CRC"):
        write_bold_cache(bad_crc, mask, tmp_path / "crc.npy")
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(bytes(payload[: len(payload) // 2]))
    with pytest.raises(CorruptImageError, match=r"cut\.nii\.gz: corrupt BOLD image: .*in volume \d+ of 40"):
        write_bold_cache(cut, mask, tmp_path / "cut.npy")
    raw = write_series(tmp_path / "raw.nii", rng.normal(300, 20, SHAPE + (N,)))
    raw.write_bytes(raw.read_bytes()[:-500])
    with pytest.raises(CorruptImageError, match=r"raw\.nii: .*the data end in volume 40 of 40 \(truncated"):
        write_bold_cache(raw, mask, tmp_path / "raw.npy")
    with pytest.raises(ValueError, match="not a 4-D series on the brain mask's grid"):
        write_bold_cache(bold, mask[:-1], tmp_path / "grid.npy")
    assert not list(tmp_path.glob("*.npy")) and not list(tmp_path.glob("*.part"))


def test_readers_give_back_what_was_cached(mask, tmp_path):
    rng = np.random.default_rng(3)
    bold = write_series(tmp_path / "bold.nii.gz", rng.normal(300, 20, SHAPE + (N,)))
    cache = write_bold_cache(bold, mask, tmp_path / "cache.npy")
    data = np.array(open_bold_cache(cache))
    blocks = list(voxel_chunks(cache, size=7))
    assert [b.shape[1] for _, b in blocks] == [min(7, data.shape[1] - s.start) for s, _ in blocks]
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks], axis=1), data)
    pick = np.zeros(data.shape[1], bool)
    pick[[0, 5, 11, data.shape[1] - 1]] = True
    np.testing.assert_array_equal(voxel_columns(cache, pick), data[:, pick])
    np.testing.assert_array_equal(voxel_columns(cache, np.flatnonzero(pick)), data[:, pick])
    assert np.array_equal(volume_means(cache), [row.mean() for row in data.astype(np.float64)])
    with pytest.raises(ValueError, match=r"cache\.npy: .* voxels, but the brain mask has"):
        open_bold_cache(cache, mask[::-1] & ~mask)
    np.testing.assert_array_equal(read_masked_bold(bold, mask), data)  # without a cache
    np.testing.assert_array_equal(read_cache(cache), data)
    np.testing.assert_array_equal(read_cache(cache, lambda block: 2 * block), 2 * data)  # block by block
    np.testing.assert_array_equal(read_denoised(cache, mask, np.flatnonzero(pick)), data[:, pick])
    assert cache_name("/x/sub-01_desc-preproc_bold.nii.gz") == "sub-01_desc-preproc_bold.inmask.npy"
