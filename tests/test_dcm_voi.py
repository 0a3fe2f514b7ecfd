"""SPM-style VOI series for DCM: grand-mean scaling, confound adjustment, first eigenvariate."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ketflow.dcm.voi import grand_mean_scale, spike_volumes, voi_eigenvariates
from ketflow.interfaces.dcm import ExtractVOI
from ketflow.signal.denoise import cosine_regressors

T, TR = 120, 2.0


def _signal(rng):
    """A slow zero-mean 'response' in per cent signal change."""
    blocks = (np.arange(T) // 10) % 2 * 1.0
    kernel = np.exp(-np.arange(8) / 2.0)
    s = np.convolve(blocks, kernel / kernel.sum())[:T]
    return (s - s.mean()) / s.std() * 0.8 + 0.1 * rng.standard_normal(T)


def test_spike_volumes_and_grand_mean_scale():
    X = np.zeros((6, 3))
    X[:, 0] = np.arange(6)  # not an indicator
    X[1, 1] = 1.0
    X[4, 2] = 1.0
    assert spike_volumes(X).tolist() == [False, True, False, False, True, False]
    means = np.array([1600.0, 1000.0, 1000.0, 1000.0, 1000.0, 1000.0])
    assert grand_mean_scale(means, ~np.eye(6, dtype=bool)[0]) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="positive"):
        grand_mean_scale(-means)


def test_voi_recovers_percent_signal_change_and_is_orthogonal_to_confounds():
    rng = np.random.default_rng(0)
    s = _signal(rng)
    cos = cosine_regressors(T, TR, 128.0)
    motion = np.cumsum(rng.standard_normal(T)) * 0.05
    spikes = np.zeros((T, 2))
    spikes[[0, 57], [0, 1]] = 1.0
    confounds = np.column_stack([cos, motion, spikes])
    n_vox = 30
    baseline = 1000.0 * (1 + 0.05 * rng.standard_normal(n_vox))  # bias field
    nuisance = (cos @ rng.standard_normal(cos.shape[1]))[:, None] * 2.0 + motion[:, None] * rng.uniform(
        0.5, 1.5, n_vox)
    data = baseline * (1 + (s[:, None] + nuisance + 0.3 * rng.standard_normal((T, n_vox))) / 100)
    data[0] *= 1.6  # a bright non-steady-state volume, censored by its spike column
    data[57] += 300.0  # a motion spike
    scale = grand_mean_scale(data.mean(axis=1), ~spike_volumes(confounds))
    assert 100 / scale == pytest.approx(baseline.mean() * (1 + s.mean() / 100), rel=0.01)
    voi = voi_eigenvariates([data], confounds, scale)
    y = voi.Y[:, 0]
    basis = np.linalg.qr(np.column_stack([np.ones(T), confounds]))[0]
    np.testing.assert_allclose(basis.T @ y, 0.0, atol=1e-8)  # adjusted for X0 (and centred)
    target = s - basis @ (basis.T @ s)  # what adjustment leaves of the response
    keep = ~spike_volumes(confounds)
    assert np.corrcoef(y[keep], target[keep])[0, 1] > 0.98
    slope = np.polyfit(target[keep], y[keep], 1)[0]
    assert slope == pytest.approx(1.0, abs=0.04)  # per cent of the grand mean ~ per cent signal change
    assert voi.n_voxels.tolist() == [n_vox] and 0.3 < voi.variance_explained[0] < 1


def test_voi_refuses_confounds_without_degrees_of_freedom():
    with pytest.raises(ValueError, match="degrees of freedom"):
        voi_eigenvariates([np.ones((10, 3))], np.eye(10)[:, :9])


def _image(path, data, affine=np.eye(4)):
    nib.save(nib.Nifti1Image(data, affine), path)
    return str(path)


def test_extract_voi_interface(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    shape = (6, 6, 4)
    mask = np.zeros(shape, np.uint8)
    mask[1:5, 1:5, :] = 1
    labels = np.zeros(shape, np.int16)
    labels[1:3, 1:5, 1:3] = 1
    labels[3:5, 1:5, 1:3] = 2
    s = _signal(rng)
    data = 900.0 * (1 + 0.3 * rng.standard_normal((*shape, T)) / 100)
    data[labels == 2] *= 1 + s[None, :] / 100
    data[..., 0] *= 1.5  # dummy scan
    confounds = pd.DataFrame({"trans_x": np.r_[np.nan, rng.standard_normal(T - 1) * 0.01],
                              "censored_0000": np.eye(T)[0]})
    confounds.to_csv(tmp_path / "conf.tsv", sep="\t", index=False, na_rep="n/a")
    pd.DataFrame({"index": [1, 2], "name": ["vmPFC", "amygdala_L"]}).to_csv(tmp_path / "labels.tsv", sep="\t",
                                                                          index=False)
    monkeypatch.chdir(tmp_path)
    res = ExtractVOI(bold_file=_image(tmp_path / "bold.nii.gz", data.astype(np.float32)),
                     brain_mask=_image(tmp_path / "mask.nii.gz", mask), labels_file=_image(tmp_path / "l.nii.gz", labels),
                     labels_tsv=str(tmp_path / "labels.tsv"), regions=["amygdala_L", "vmPFC"], repetition_time=TR,
                     confounds=str(tmp_path / "conf.tsv")).run()
    voi = pd.read_csv(res.outputs.timeseries, sep="\t")
    assert list(voi.columns) == ["amygdala_L", "vmPFC"] and len(voi) == T
    assert np.corrcoef(voi["amygdala_L"][1:], s[1:])[0, 1] > 0.95
    assert voi["amygdala_L"][1:].std() == pytest.approx(s[1:].std(), rel=0.1)  # per cent units
    x0 = pd.read_csv(res.outputs.confounds_out, sep="\t")
    assert {"trans_x", "censored_0000"} <= set(x0.columns) and any(c.startswith("cosine") for c in x0.columns)
    qc = json.loads((tmp_path / "desc-voi_qc.json").read_text())
    assert qc["CensoredVolumes"] == [0] and qc["GrandMean"] == pytest.approx(900, rel=0.01)
    with pytest.raises(ValueError, match="not among the ROIs"):
        ExtractVOI(bold_file=str(tmp_path / "bold.nii.gz"), brain_mask=str(tmp_path / "mask.nii.gz"),
                   labels_file=str(tmp_path / "l.nii.gz"), labels_tsv=str(tmp_path / "labels.tsv"),
                   regions=["thalamus"], repetition_time=TR).run()
