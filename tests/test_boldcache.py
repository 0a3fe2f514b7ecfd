"""The in-mask BOLD cache: what it holds, how corrupt files fail, its readers, and that the
interfaces reading it give what they give reading the NIfTI, and every voxel reader of the
workflow reads its run's cache."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ketflow.interfaces.bold import CacheBOLD, cache_name
from ketflow.interfaces.dcm import ExtractVOI
from ketflow.interfaces.denoise import Denoise, confound_strategy, strategy_settings
from ketflow.interfaces.glm import FirstLevelGLM
from ketflow.io import boldcache
from ketflow.io.boldcache import (
    CorruptImageError,
    open_bold_cache,
    volume_means,
    voxel_chunks,
    voxel_columns,
    write_bold_cache,
)
from ketflow.io.confounds import MOTION_6, TISSUE_3, expansions, load_confounds
from ketflow.signal.denoise import denoise

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


@pytest.fixture
def run_files(tmp_path):
    """A small run: BOLD with a task effect in one patch, mask, confounds, events, labels."""
    rng = np.random.default_rng(4)
    shape, n, tr = (10, 9, 8), 60, 2.0
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    bold = 500 + rng.normal(size=shape + (n,)) * 4
    block = (np.arange(n) * tr % 40) < 20
    bold[3:6, 3:6, 3:6] += 6 * block
    files = {"bold": write_series(tmp_path / "bold.nii.gz", bold, dtype=np.float32)}
    mask = np.zeros(shape, np.uint8)
    mask[1:-1, 1:-1, 1:-1] = 1
    labels = np.zeros(shape, np.int16)
    labels[3:6, 3:6, 3:6], labels[1:3, 5:8, 2:5] = 1, 2
    for name, image in (("mask", mask), ("labels", labels)):
        nib.Nifti1Image(image, affine).to_filename(tmp_path / f"{name}.nii.gz")
        files[name] = tmp_path / f"{name}.nii.gz"
    pd.DataFrame({"index": [1, 2], "name": ["vmPFC", "amygdala_L"]}).to_csv(tmp_path / "labels.tsv", sep="\t",
                                                                          index=False)
    columns = expansions(MOTION_6) + expansions(TISSUE_3)
    confounds = pd.DataFrame(rng.normal(size=(n, len(columns))), columns=columns)
    confounds["framewise_displacement"] = np.abs(rng.normal(size=n)) * 0.1
    confounds.loc[30, "framewise_displacement"] = 1.5
    confounds.to_csv(tmp_path / "confounds.tsv", sep="\t", index=False, na_rep="n/a")
    pd.DataFrame({"onset": np.arange(0, n * tr, 40.0), "duration": 20.0, "trial_type": "task"}).to_csv(
        tmp_path / "events.tsv", sep="\t", index=False)
    (tmp_path / "strategy.json").write_text(json.dumps({"min_volumes": 20, "min_dof": 5}))
    files.update({k: tmp_path / f"{k}.{ext}" for k, ext in
                  (("confounds", "tsv"), ("events", "tsv"), ("strategy", "json"))})
    files["labels_tsv"] = tmp_path / "labels.tsv"
    return {k: str(v) for k, v in files.items()}


def _outputs(result, fields):
    return {f: getattr(result.outputs, f) for f in fields}


def test_interfaces_read_the_cache_as_they_read_the_nifti(run_files, tmp_path, monkeypatch):
    f = run_files
    monkeypatch.chdir(tmp_path)
    cached = CacheBOLD(bold_file=f["bold"], brain_mask=f["mask"]).run().outputs
    assert cached.bold_cache.endswith(cache_name(f["bold"])) and cache_name(f["bold"]) == "bold.inmask.npy"
    assert (cached.n_volumes, cached.n_voxels) == (60, 8 * 7 * 6)
    monkeypatch.setattr(boldcache, "CHUNK_VOXELS", 50)  # several blocks of voxels

    def twice(interface, **inputs):
        results = []
        for source in ({"bold_file": f["bold"]}, {"bold_cache": cached.bold_cache}):
            (tmp_path / ("nifti" if "bold_file" in source else "cache")).mkdir(exist_ok=True)
            monkeypatch.chdir(tmp_path / ("nifti" if "bold_file" in source else "cache"))
            results.append(interface(**source, brain_mask=f["mask"], **inputs).run())
        return results

    den = twice(Denoise, confounds_tsv=f["confounds"], strategy_json=f["strategy"], tr=2.0)
    a, b = (np.load(r.outputs.denoised_file) for r in den)
    np.testing.assert_array_equal(a, b)
    assert json.loads(open(den[0].outputs.qc_json).read()) == json.loads(open(den[1].outputs.qc_json).read())
    # in blocks of 50 voxels as in one: every voxel is fitted on its own
    regressors = pd.read_csv(f["confounds"], sep="\t")
    data = np.asarray(open_bold_cache(cached.bold_cache))
    qc = json.loads(open(den[1].outputs.qc_json).read())
    settings = strategy_settings(f["strategy"])
    selected = load_confounds(f["confounds"], None, confound_strategy(settings), n_volumes=len(regressors))
    whole = denoise(data, selected.regressors.to_numpy(), 2.0, keep=selected.keep, min_volumes=20, min_dof=5)
    np.testing.assert_allclose(b, whole.data, rtol=0, atol=1e-4)
    assert qc["dof_remaining"] == whole.dof_remaining

    task = json.dumps({"conditions": ["task"], "contrasts": {"task": {"task": 1}}})
    glm = twice(FirstLevelGLM, events_file=f["events"], tr=2.0, task_config=task, labels_file=f["labels"],
                labels_tsv=f["labels_tsv"])
    for stat in ("effect_maps", "variance_maps", "z_maps"):
        maps = [np.asanyarray(nib.load(getattr(r.outputs, stat)).dataobj) for r in glm]
        np.testing.assert_array_equal(*maps)
    assert open(glm[0].outputs.roi_tsv).read() == open(glm[1].outputs.roi_tsv).read()

    voi = twice(ExtractVOI, labels_file=f["labels"], labels_tsv=f["labels_tsv"], regions=["vmPFC", "amygdala_L"],
                repetition_time=2.0)
    assert open(voi[0].outputs.timeseries).read() == open(voi[1].outputs.timeseries).read()
    assert not list(tmp_path.glob("nifti/.*.npy"))  # the temporary cache of a NIfTI input is removed

    with pytest.raises(OSError, match="mutually exclusive"):
        Denoise(bold_file=f["bold"], bold_cache=cached.bold_cache, brain_mask=f["mask"],
                confounds_tsv=f["confounds"], tr=2.0).run()
    with pytest.raises(ValueError, match="bold_cache|bold_file"):
        Denoise(brain_mask=f["mask"], confounds_tsv=f["confounds"], tr=2.0).run()


def test_every_voxel_reader_reads_its_runs_cache(tiny_bids, tmp_path):
    from ketflow.cli.parser import parse_args
    from ketflow.config import load_config
    from ketflow.io.bids import discover
    from ketflow.workflows.base import init_ketflow_wf
    from ketflow.workflows.participant import selected_tasks, source_links

    from conftest import TINY_CONFIG

    opts = parse_args([str(tiny_bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work"),
                       "--participant-label", "01", "--session-label", "pre"])
    config = load_config(TINY_CONFIG)
    found = discover(opts.bids_dir, opts.derivatives["fmriprep"], selected_tasks(opts, config), opts.space,
                     participant_labels=["01"], session_labels=["pre"])
    workflow = init_ketflow_wf(found.runs, config, opts, source_links(opts))
    subject = workflow.get_node("single_subject_01_wf")
    readers = {"denoise", "activation", "gppi", "dcm_voi"}
    seen = set()
    for run in found.runs:
        run_wf = next(n for n in subject._graph.nodes() if n.name.endswith(f"task_{run.task}_wf"))
        cache = run_wf.get_node("bold_cache")
        assert cache.inputs.bold_file == run.bold and not run_wf._graph.in_edges(cache)
        for reader in readers & set(run_wf.list_node_names()):
            node = run_wf.get_node(reader)
            assert not node.inputs.bold_file or str(node.inputs.bold_file) == "<undefined>"
            assert ("bold_cache", "bold_cache") in run_wf._graph.get_edge_data(cache, node)["connect"]
            seen.add(reader)
    assert seen == readers
