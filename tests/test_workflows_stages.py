"""Every stage workflow of a run, built and run on its own on one tiny simulated run.

The stages are chained through shared fixtures (the BOLD cache, ROIs and denoising of a faces
and a rest run are made once), so each test runs only its own stage; each checks what the
stage's ``outputnode`` promises and that its methods paragraph (``__desc__``) is there.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ketflow.config import load_config
from ketflow.io.bids import discover
from ketflow.workflows.bold.activation import init_activation_wf
from ketflow.workflows.bold.connectivity import init_connectivity_wf
from ketflow.workflows.bold.data import init_bold_cache_wf, init_task_data_wf
from ketflow.workflows.bold.dcm import init_dcm_wf
from ketflow.workflows.bold.denoise import init_denoise_wf
from ketflow.workflows.bold.gppi import init_gppi_wf
from ketflow.workflows.bold.outputs import Provenance, init_bold_derivatives_wf
from ketflow.workflows.bold.resources import run_memory
from ketflow.workflows.bold.rois import init_rois_wf
from ketflow.workflows.session import init_fixed_effects_wf

from conftest import TINY_CONFIG
from stages import run_stage


@pytest.fixture(scope="module")
def config():
    return load_config(TINY_CONFIG)


@pytest.fixture(scope="module")
def runs(tiny_bids, config):
    found = discover(tiny_bids, tiny_bids / "derivatives" / "fmriprep", {"faces": "task", "rest": "rest"},
                     participant_labels=["01"], session_labels=["pre"])
    return {run.task: run for run in found.runs}


@pytest.fixture(scope="module")
def prepared(runs, config, tmp_path_factory):
    """Cache, ROIs and denoising of the faces and rest runs; task-model data of the faces run."""
    work = tmp_path_factory.mktemp("stages")
    out = {}
    for task, run in runs.items():
        memory = run_memory(run)
        cache = run_stage(init_bold_cache_wf(mem_gb=memory["bold_cache"], name=f"cache_{task}"), work,
                          bold_file=run.bold, brain_mask=run.mask)["bold_cache"]
        rois = run_stage(init_rois_wf(config.circuit, name=f"rois_{task}"), work, bold_ref=run.boldref,
                         brain_mask=run.mask, bold_cache=cache.bold_cache, confounds_tsv=run.confounds,
                         gm_probseg=run.gm_probseg)["roi_quality"]
        denoised = run_stage(
            init_denoise_wf(config.denoising, config.circuit.signal, rest=task == "rest", tr=run.tr, mem_gb=memory,
                            describe_band_pass=True, name=f"denoise_{task}"),
            work, bold_cache=cache.bold_cache, brain_mask=run.mask, confounds_tsv=run.confounds,
            labels_file=rois.labels_file, labels_tsv=rois.labels_tsv)
        out[task] = {"run": run, "cache": cache.bold_cache, "labels_file": rois.labels_file,
                     "labels_tsv": rois.labels_tsv, "quality_tsv": rois.quality_tsv, "quality_json": rois.quality_json, **denoised["denoise"].get(), **denoised["signals"].get()}
    faces = runs["faces"]
    data = run_stage(init_task_data_wf(config.tasks["faces"], config.glm, config.denoising, tr=faces.tr,
                                       start_time=faces.start_time, n_volumes=faces.n_volumes, percent_data=True,
                                       mem_gb=1.0), work, bold_cache=out["faces"]["cache"], brain_mask=faces.mask,
                     confounds_tsv=faces.confounds, events_file=faces.events)
    out["faces"].update(confounds_file=data["glm_confounds"].regressors_tsv, **data["task_data"].get())
    return out


def test_cache_rois_and_denoise_stages(prepared, runs, config):
    faces = prepared["faces"]
    mask = np.asanyarray(nib.load(runs["faces"].mask).dataobj) > 0
    assert np.load(faces["cache"], mmap_mode="r").shape == (runs["faces"].n_volumes, int(mask.sum()))
    table = pd.read_csv(faces["labels_tsv"], sep="\t")
    assert table["name"].tolist()[:3] == ["dACC", "rACC", "vmPFC"] and (table["n_voxels"] > 0).all()
    series = pd.read_csv(faces["timeseries"], sep="\t")
    assert list(series.columns) == table["name"].tolist()
    assert len(series) == pd.read_csv(faces["censoring_tsv"], sep="\t")["retained"].sum()
    qc = json.loads(Path(faces["qc_json"]).read_text())
    assert qc["strategy"]["strategy"] == config.denoising.strategy and qc["dof_remaining"] > 0
    assert "Regions of interest" in init_rois_wf(config.circuit).__desc__
    assert runs["faces"].gm_probseg.endswith("_label-GM_probseg.nii.gz")  # found by discovery
    assert "[@lindquist]" in init_denoise_wf(config.denoising, "mean", rest=False, tr=2.0, mem_gb=run_memory(
        runs["faces"]), describe_band_pass=False).__desc__


def test_task_data_stage(prepared, config):
    from ketflow.io.design import load_task_design

    design = load_task_design(prepared["faces"]["task_design"])
    assert design.columns == config.tasks["faces"].conditions
    assert any(c.startswith("censored_") for c in design.matrix.columns) or "trans_x" in design.matrix.columns
    assert np.load(prepared["faces"]["percent_bold"]).dtype == np.float32


@pytest.fixture(scope="module")
def activation(prepared, runs, config, tmp_path_factory):
    """The activation stage run on the faces run: (its workflow, the GLM node's outputs)."""
    f = prepared["faces"]
    workflow = init_activation_wf(config.tasks["faces"], config.glm, mem_gb=1.0, described_tasks=config.tasks)
    out = run_stage(workflow, tmp_path_factory.mktemp("activation"), percent_bold=f["percent_bold"],
                    task_design=f["task_design"], brain_mask=runs["faces"].mask, labels_file=f["labels_file"],
                    labels_tsv=f["labels_tsv"])
    return workflow, out["activation"]


def test_activation_stage(activation, prepared):
    workflow, glm = activation
    assert "fearful-gt-shapes" in workflow.__desc__
    assert glm.contrast_names == ["fearful-gt-shapes"] and Path(glm.z_maps).name.startswith("contrast-fearfulGtShapes")
    rois = pd.read_csv(glm.roi_tsv, sep="\t")
    assert set(rois["contrast"]) == {"fearful-gt-shapes"}
    assert len(rois) == len(pd.read_csv(prepared["faces"]["labels_tsv"], sep="\t"))


def test_fixed_effects_stage(activation, runs, config, tmp_path):
    """Two copies of one run combined: the same effect, half the variance, names without ``run``."""
    glm = activation[1]
    run = runs["faces"]
    twins = [run.__class__(**{**run.to_dict(), "run": str(k)}) for k in (1, 2)]
    provenance = Provenance.of_runs(twins, out_dir=str(tmp_path / "out"), source_links={}, config_hash="x")
    workflow = init_fixed_effects_wf(twins, config, provenance)
    inputs = {f"{field}_run{k}": getattr(glm, field)
              for field in ("effect_maps", "variance_maps", "contrast_names", "dof", "roi_tsv") for k in (1, 2)}
    out = run_stage(workflow, tmp_path, **inputs)
    fixed = out["fixed_effects"]
    np.testing.assert_allclose(nib.load(fixed.effect_maps).get_fdata(), nib.load(glm.effect_maps).get_fdata(),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(nib.load(fixed.variance_maps).get_fdata(),
                               nib.load(glm.variance_maps).get_fdata() / 2, rtol=1e-5, atol=1e-9)
    stored = out["ds_fixed_effect_maps"].out_file[0]
    assert Path(stored).name == "sub-01_ses-pre_task-faces_space-MNI152NLin2009cAsym_contrast-fearfulGtShapes" \
                                "_stat-effect_statmap.nii.gz"
    meta = json.loads(Path(stored).with_name(Path(stored).name.replace(".nii.gz", ".json")).read_text())
    assert meta["Level"] == "session" and meta["FixedEffects"]["NumberOfRuns"] == 2


def test_gppi_stage(prepared, runs, config, tmp_path):
    f = prepared["faces"]
    workflow = init_gppi_wf(config.tasks["faces"], config.glm, config.ppi, config.circuit.signal, mem_gb=1.0,
                            described_tasks=config.tasks)
    assert "[@mclaren]" in workflow.__desc__
    out = run_stage(workflow, tmp_path, percent_bold=f["percent_bold"], task_design=f["task_design"],
                    brain_mask=runs["faces"].mask, labels_file=f["labels_file"], labels_tsv=f["labels_tsv"])
    gppi = out["gppi"]
    n_contrasts = len(config.tasks["faces"].conditions) + len(config.tasks["faces"].contrasts)
    assert len(gppi.relmat_files) == n_contrasts
    assert len(gppi.seed_maps) == len(config.ppi.seeds) * n_contrasts * 5  # effect, variance, t, z, p
    assert all(Path(p).name.startswith("desc-vmPFC_contrast-") for p in gppi.seed_maps)


def test_connectivity_stage(prepared, runs, config, tmp_path):
    r = prepared["rest"]
    workflow = init_connectivity_wf(config.connectivity, task_residual=False, tr=runs["rest"].tr, mem_gb=1.0,
                                    described_tasks=config.tasks)
    assert "ROI-to-ROI connectivity" in workflow.__desc__
    out = run_stage(workflow, tmp_path, timeseries=r["timeseries"], coverage=r["coverage"], denoise_qc=r["qc_json"],
                    denoised_file=r["denoised_file"], censoring_tsv=r["censoring_tsv"], brain_mask=runs["rest"].mask)
    conn = out["connectivity"]
    assert "fisherz" in conn.measures and len(conn.relmat_files) == len(conn.measures)
    assert conn.seed_names == config.connectivity.seeds
    assert init_connectivity_wf(config.connectivity, task_residual=False, tr=2.0, mem_gb=1.0,
                                described_tasks={}).__desc__ is None  # nothing to describe


def test_dcm_stage(prepared, runs, config, tmp_path):
    f, run = prepared["faces"], runs["faces"]
    workflow = init_dcm_wf(config.dcm, high_pass_s=config.glm.high_pass_s, tr=run.tr, start_time=run.start_time)
    assert "[@friston_dcm]" in workflow.__desc__
    out = run_stage(workflow, tmp_path, bold_cache=f["cache"], brain_mask=run.mask, labels_file=f["labels_file"],
                    labels_tsv=f["labels_tsv"], confounds_file=f["confounds_file"], events_file=run.events)
    voi = pd.read_csv(out["dcm_voi"].timeseries, sep="\t")
    assert list(voi.columns) == config.dcm.regions and len(voi) == run.n_volumes
    fit = json.loads(Path(out["dcm"].out_json).read_text())
    assert fit["region_names"] == config.dcm.regions and np.isfinite(fit["F"])


def test_derivatives_stage_names_and_provenance(prepared, runs, config, tmp_path):
    """The derivatives workflow stores the base outputs under XCP-D names with provenance sidecars."""
    f, run = prepared["rest"], runs["rest"]
    provenance = Provenance.of_runs([run], out_dir=str(tmp_path / "out"),
                                    source_links={"fmriprep": str(Path(run.bold).parents[3])}, config_hash="abc")
    workflow = init_bold_derivatives_wf(run, config, provenance, connectivity=False, activation=False, ppi=False,
                                        dcm=False)
    run_stage(workflow, tmp_path, labels_file=f["labels_file"], labels_tsv=f["labels_tsv"],
              timeseries=f["timeseries"], coverage=f["coverage"], outliers_tsv=f["outliers_tsv"],
              motion_tsv=f["motion_tsv"], denoise_qc=f["qc_json"], roi_quality_tsv=f["quality_tsv"],
              roi_quality_json=f["quality_json"])
    func = tmp_path / "out" / "sub-01" / "ses-pre" / "func"
    stem = "sub-01_ses-pre_task-rest_space-MNI152NLin2009cAsym"
    assert sorted(p.name for p in func.iterdir()) == sorted(
        [f"{stem}_atlas-circuit_stat-mean_bold.tsv", f"{stem}_atlas-circuit_stat-mean_bold.json",
         f"{stem}_atlas-circuit_stat-coverage_bold.tsv", f"{stem}_atlas-circuit_stat-coverage_bold.json",
         f"{stem}_atlas-circuit_dseg.nii.gz", f"{stem}_atlas-circuit_dseg.json", f"{stem}_atlas-circuit_dseg.tsv",
         f"{stem}_outliers.tsv", f"{stem}_outliers.json", f"{stem}_motion.tsv", f"{stem}_motion.json",
         f"{stem}_desc-denoise_qc.json", f"{stem}_atlas-circuit_desc-rois_qc.tsv",
         f"{stem}_atlas-circuit_desc-rois_qc.json"])
    quality = json.loads((func / f"{stem}_atlas-circuit_desc-rois_qc.json").read_text())
    assert quality["CoverageRule"]["MinVoxels"] == config.circuit.min_voxels and "tsnr" in quality["Columns"]
    meta = json.loads((func / f"{stem}_atlas-circuit_stat-mean_bold.json").read_text())
    assert meta["GeneratedBy"]["ConfigHash"] == "abc" and meta["RepetitionTime"] == run.tr
    assert all(uri.startswith("bids:fmriprep:") or uri.startswith("file:") for uri in meta["Sources"])
    assert "strategy" in meta  # the denoising QC merged into the series' sidecar
