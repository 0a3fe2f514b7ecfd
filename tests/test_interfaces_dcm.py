"""The DCM path's Nipype interfaces: ExtractVOI (SPM-style VOIs) and FitDCM."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ketflow.config import DCM, DCMModel, DCMOptionsConfig
from ketflow.dcm import simulate_bold
from ketflow.dcm.inputs import inputs_from_events
from ketflow.interfaces.dcm import ExtractVOI, FitDCM

TR, N_SCANS = 2.0, 200


def _events():
    rows = [(on + 0.5, 20.0, "fear" if k % 2 == 0 else "neutral") for k, on in enumerate(range(10, 390, 40))]
    rows.append((5.0, 0.0, "button"))
    return pd.DataFrame(rows, columns=["onset", "duration", "trial_type"])


def test_fit_dcm_interface_writes_outputs(tmp_path, monkeypatch):
    events = _events()
    inputs = {"faces": ["fear", "neutral"], "fear": ["fear"]}
    U, dt = inputs_from_events(events, inputs, TR, N_SCANS, start_time=0.5)
    A = np.array([[0.0, 0.4], [-0.3, 0.0]])
    B = np.zeros((2, 2, 2))
    B[1, 0, 1] = 0.5
    C = np.array([[0.0, 0.0], [1.0, 0.0]])
    y = simulate_bold(A, B, C, U, dt, TR, N_SCANS, delays=[0.0, 0.0])
    y = y + np.random.default_rng(0).standard_normal(y.shape) * y.std(axis=0) / 3
    events.to_csv(tmp_path / "events.tsv", sep="\t", index=False)
    pd.DataFrame(y, columns=["vmPFC", "amygdala"]).to_csv(tmp_path / "ts.tsv", sep="\t", index=False)
    confounds = pd.DataFrame({"trans_x": np.r_[np.nan, np.random.default_rng(1).standard_normal(N_SCANS - 1)]})
    confounds.to_csv(tmp_path / "conf.tsv", sep="\t", index=False, na_rep="n/a")
    spm12 = DCMOptionsConfig(noise="iid", hC=1 / 128, m_step="fisher")  # SPM12's inversion
    dcm = DCM(task="faces", regions=["vmPFC", "amygdala"], inputs=inputs, a=[[1, 1], [1, 1]],
              b={"fear": [[0, 1], [0, 0]]}, c={"faces": [0, 1]}, options=spm12,
              model_space=[DCMModel(name="no_modulation", b={"fear": [[0, 0], [0, 0]]})])
    assert np.array_equal(dcm.model_layout()["b"], (B != 0).astype(int))
    monkeypatch.chdir(tmp_path)
    res = FitDCM(timeseries=str(tmp_path / "ts.tsv"), events=str(tmp_path / "events.tsv"), repetition_time=TR,
                 start_time=0.5, dcm=dcm, confounds=str(tmp_path / "conf.tsv")).run()
    out = res.outputs
    summary = json.loads((tmp_path / "dcm.json").read_text())
    assert summary["F"] == pytest.approx(out.free_energy)
    assert summary["region_names"] == ["vmPFC", "amygdala"] and summary["input_names"] == ["faces", "fear"]
    assert summary["Ep"]["B"][1][0][1] == pytest.approx(0.5, abs=0.15)
    assert summary["Pp"]["B"][1][0][1] > 0.95
    params = pd.read_csv(out.out_params, sep="\t")
    assert {"name", "posterior_mean", "posterior_sd", "ci90_low", "ci90_high", "Pp"} <= set(params.columns)
    assert (tmp_path / "dcm.svg").read_text().lstrip().startswith("<?xml")
    space = pd.read_csv(out.out_model_space, sep="\t")
    assert list(space["model"]) == ["full", "no_modulation"]
    assert space["posterior_probability"].iloc[0] > 0.99


T = 120


def _signal(rng):
    """A slow zero-mean 'response' in per cent signal change."""
    blocks = (np.arange(T) // 10) % 2 * 1.0
    kernel = np.exp(-np.arange(8) / 2.0)
    s = np.convolve(blocks, kernel / kernel.sum())[:T]
    return (s - s.mean()) / s.std() * 0.8 + 0.1 * rng.standard_normal(T)


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
                     high_pass_s=128.0, confounds=str(tmp_path / "conf.tsv")).run()
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
                   regions=["thalamus"], repetition_time=TR, high_pass_s=128.0).run()
