"""The interfaces that read voxels give the same results from a run's BOLD cache as from its NIfTI."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ketflow.config import GLM, Denoising, Task
from ketflow.interfaces.bold import CacheBOLD
from ketflow.interfaces.dcm import ExtractVOI
from ketflow.interfaces.denoise import Denoise
from ketflow.interfaces.task import TaskModelData
from ketflow.io import boldcache
from ketflow.io.boldcache import cache_name, open_bold_cache
from ketflow.io.confounds import MOTION_6, TISSUE_3, confound_strategy, expansions, load_confounds
from ketflow.io.design import load_task_design
from ketflow.signal.denoise import denoise

from test_io_boldcache import write_series

DENOISING = Denoising(min_volumes=20, min_dof=5)


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
    files.update({k: tmp_path / f"{k}.{ext}" for k, ext in (("confounds", "tsv"), ("events", "tsv"))})
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

    den = twice(Denoise, confounds_tsv=f["confounds"], denoising=DENOISING, band_pass=False, tr=2.0)
    a, b = (np.load(r.outputs.denoised_file) for r in den)
    np.testing.assert_array_equal(a, b)
    assert json.loads(open(den[0].outputs.qc_json).read()) == json.loads(open(den[1].outputs.qc_json).read())
    # in blocks of 50 voxels as in one: every voxel is fitted on its own
    regressors = pd.read_csv(f["confounds"], sep="\t")
    data = np.asarray(open_bold_cache(cached.bold_cache))
    qc = json.loads(open(den[1].outputs.qc_json).read())
    selected = load_confounds(f["confounds"], None, confound_strategy(DENOISING), n_volumes=len(regressors))
    whole = denoise(data, selected.regressors.to_numpy(), 2.0, keep=selected.keep, min_volumes=20, min_dof=5)
    np.testing.assert_allclose(b, whole.data, rtol=0, atol=1e-4)
    assert qc["dof_remaining"] == whole.dof_remaining

    task = Task(conditions=["task"], contrasts={"task": {"task": 1}})
    data = twice(TaskModelData, events_file=f["events"], tr=2.0, start_time=0.0, task=task, glm=GLM())
    np.testing.assert_array_equal(*(np.load(r.outputs.percent_bold) for r in data))
    designs = [load_task_design(r.outputs.task_design).matrix for r in data]
    pd.testing.assert_frame_equal(*designs)

    voi = twice(ExtractVOI, labels_file=f["labels"], labels_tsv=f["labels_tsv"], regions=["vmPFC", "amygdala_L"],
                repetition_time=2.0, high_pass_s=128.0)
    assert open(voi[0].outputs.timeseries).read() == open(voi[1].outputs.timeseries).read()
    assert not list(tmp_path.glob("nifti/.*.npy"))  # the temporary cache of a NIfTI input is removed

    with pytest.raises(OSError, match="mutually exclusive"):
        Denoise(bold_file=f["bold"], bold_cache=cached.bold_cache, brain_mask=f["mask"],
                confounds_tsv=f["confounds"], denoising=DENOISING, band_pass=False, tr=2.0).run()
    with pytest.raises(ValueError, match="bold_cache|bold_file"):
        Denoise(brain_mask=f["mask"], confounds_tsv=f["confounds"], denoising=DENOISING, band_pass=False,
                tr=2.0).run()
