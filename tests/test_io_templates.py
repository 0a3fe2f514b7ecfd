"""Tests for ketflow.templates: an offline TemplateFlow home that never downloads."""

import json

import nibabel as nib
import numpy as np
import pytest

from ketflow import templates


@pytest.fixture
def ketflow_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KETFLOW_TEMPLATEFLOW_HOME", str(tmp_path / "kf_tf"))
    monkeypatch.delenv("TEMPLATEFLOW_HOME", raising=False)
    return tmp_path / "kf_tf"


def test_offline_home_has_fmriprep_res2_grid(ketflow_home):
    path = templates.get_template(resolution=2, suffix="T1w", desc="brain")
    img = nib.load(path)
    assert img.shape == (97, 115, 97)
    assert np.allclose(img.affine[:3, 3], (-96, -132, -78))
    assert np.allclose(np.diag(img.affine)[:3], 2.0)
    mask = nib.load(templates.get_template(resolution=2, suffix="mask", desc="brain"))
    assert 150_000 < (np.asanyarray(mask.dataobj) > 0).sum() < 250_000  # ~1.6 l of 8 ml voxels
    assert "Louis Collins" in (ketflow_home / "LICENSE").read_text()
    res1 = templates.template_description()["res"]["01"]
    assert res1["shape"] == [193, 229, 193]


def test_templateflow_api_reads_offline_home(ketflow_home):
    templates.activate()
    from templateflow import api

    got = api.get("MNI152NLin2009cAsym", resolution=1, desc="brain", suffix="T1w")
    assert str(got).startswith(str(ketflow_home))
    assert nib.load(got).shape == (193, 229, 193)


def test_missing_file_raises_at_once(ketflow_home):
    with pytest.raises(templates.TemplateUnavailableError, match="never downloads"):
        templates.get_template(resolution=1, suffix="T2w", desc=None)


def test_full_user_home_is_used_and_stubs_never_download(tmp_path, monkeypatch, ketflow_home):
    user = templates.populate_home(tmp_path / "user_tf")
    stub = user / "tpl-MNI152NLin2009cAsym" / "tpl-MNI152NLin2009cAsym_res-01_T1w.nii.gz"
    stub.touch()  # an empty TemplateFlow stub: would be fetched from S3 by templateflow
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(user))
    assert templates.activate() == user
    assert not ketflow_home.exists()
    with pytest.raises(templates.TemplateUnavailableError, match="empty TemplateFlow stub"):
        templates.get_template(resolution=1, suffix="T1w", desc=None)
    from templateflow import api

    # third-party code calling templateflow directly fails immediately, without network
    with pytest.raises(Exception, match="offline://"):
        api.get("MNI152NLin2009cAsym", resolution=1, desc=None, suffix="T1w")
    assert stub.stat().st_size == 0


def test_incomplete_user_home_falls_back_to_ketflow(tmp_path, monkeypatch, ketflow_home):
    (tmp_path / "partial").mkdir()
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path / "partial"))
    assert templates.select_home() == ketflow_home
    assert json.loads((ketflow_home / "tpl-MNI152NLin2009cAsym" / "template_description.json").read_text())[
        "Identifier"
    ] == "MNI152NLin2009cAsym"
