"""TaskModelData, FirstLevelGLM, FixedEffects and GPPI Nipype interfaces on a small synthetic run."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ketflow.config import GLM, PPI, Task
from ketflow.interfaces import run_in
from ketflow.interfaces.glm import FirstLevelGLM, FixedEffects
from ketflow.interfaces.ppi import GPPI
from ketflow.interfaces.task import TaskModelData
from ketflow.signal.design import make_task_design
from ketflow.signal.hrf import convolve_microtime, spm_canonical_hrf

TR, N, SHAPE = 2.0, 150, (6, 6, 4)
TASK = Task(conditions=["fearful", "neutral", "shapes"],
            contrasts={"fearful-gt-neutral": {"fearful": 1, "neutral": -1},
                       "faces": {"fearful": 1, "neutral": 1, "shapes": -2}})


def _events():
    return pd.DataFrame(
        {"onset": 6.0 + 16.0 * np.arange(18), "duration": 10.0, "trial_type": ["fearful", "neutral", "shapes"] * 6}
    )


@pytest.fixture(scope="module")
def run_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(0)
    events = _events()
    design = make_task_design(events, TR, N, TASK.conditions, high_pass=None)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    labels = np.zeros(SHAPE, np.int16)
    labels[:3, :, :2] = 1  # "amygdala": responds to fearful faces
    labels[3:, :, :2] = 2  # "vmPFC": coupled to amygdala during fearful blocks
    labels[:, :, 3] = 3  # "dACC": noise only
    mask = np.ones(SHAPE, bool)
    mask[0, 0, 3] = False
    hrf = spm_canonical_hrf(TR / 16)
    fear = design.microtime[:, 0] / design.microtime[:, 0].max()
    neural = np.convolve(rng.standard_normal(N * 16), np.ones(8) / 8, "same") * 3 + 2 * fear
    amy = convolve_microtime(neural, hrf, N, 16, 1)
    vmpfc = convolve_microtime(1.0 * (fear - fear.mean()) * neural, hrf, N, 16, 1)
    data = 500 + rng.standard_normal((*SHAPE, N))
    data[labels == 1] += 5 * amy
    data[labels == 2] += 5 * vmpfc
    paths = {
        "bold": root / "bold.nii.gz",
        "mask": root / "mask.nii.gz",
        "events": root / "events.tsv",
        "confounds": root / "confounds.tsv",
        "labels": root / "dseg.nii.gz",
        "labels_tsv": root / "dseg.tsv",
    }
    nib.Nifti1Image(data.astype(np.float32), affine).to_filename(paths["bold"])
    nib.Nifti1Image(mask.astype(np.uint8), affine).to_filename(paths["mask"])
    nib.Nifti1Image(labels, affine).to_filename(paths["labels"])
    events.to_csv(paths["events"], sep="\t", index=False)
    pd.DataFrame({"trans_x": rng.standard_normal(N) * 0.1}).to_csv(paths["confounds"], sep="\t", index=False)
    pd.DataFrame({"index": [1, 2, 3], "name": ["amygdala", "vmPFC", "dACC"]}).to_csv(
        paths["labels_tsv"], sep="\t", index=False)
    files = {k: str(v) for k, v in paths.items()}
    data = run_in(TaskModelData(bold_file=files["bold"], brain_mask=files["mask"], events_file=files["events"], tr=TR,
                                start_time=0.0, confounds_file=files["confounds"], task=TASK, glm=GLM()),
                  root / "task_data")
    return {**files, "percent_bold": data.percent_bold, "task_design": data.task_design}


def _glm(files, noise_model="ar1"):
    return FirstLevelGLM(percent_bold=files["percent_bold"], task_design=files["task_design"],
                         brain_mask=files["mask"], labels_file=files["labels"], labels_tsv=files["labels_tsv"],
                         task=TASK, glm=GLM(noise_model=noise_model))


def test_task_model_data_scales_once_and_builds_the_design(run_files):
    """The per-run node's percent-scaled data and design: nilearn's mean scaling, the configured design."""
    from nilearn.glm.first_level import mean_scaling

    from ketflow.io.boldcache import read_mask, read_masked_bold
    from ketflow.io.design import load_task_design

    raw = read_masked_bold(run_files["bold"], read_mask(run_files["mask"]))
    np.testing.assert_array_equal(np.load(run_files["percent_bold"]), mean_scaling(raw)[0])
    design = load_task_design(run_files["task_design"])
    assert design.columns == ["fearful", "neutral", "shapes"] and "trans_x" in design.matrix.columns
    assert any(c.startswith("drift_cosine") for c in design.matrix.columns)  # glm.high_pass_s: 128 s


def test_first_level_glm_and_fixed_effects(run_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = _glm(run_files).run().outputs
    assert out.contrast_names == ["faces", "fearful-gt-neutral"]  # by name (Task.contrasts_by_name)
    assert [p.split("/")[-1] for p in out.z_maps] == [
        "contrast-faces_stat-z_statmap.nii.gz",
        "contrast-fearfulGtNeutral_stat-z_statmap.nii.gz",
    ]
    z = np.asanyarray(nib.load(out.z_maps[1]).dataobj)
    labels = np.asanyarray(nib.load(run_files["labels"]).dataobj)
    assert np.median(z[labels == 1]) > 3 and abs(np.median(z[labels == 0])) < 1
    design = pd.read_csv(out.design_tsv, sep="\t")
    assert {"fearful", "neutral", "shapes", "trans_x", "constant"} <= set(design.columns)
    assert open(out.design_svg).read(100).lstrip().startswith("<?xml")
    rois = pd.read_csv(out.roi_tsv, sep="\t").set_index(["roi", "contrast"])
    assert rois.loc[("amygdala", "fearful-gt-neutral"), "z"] > 3
    meta = json.loads(open(out.design_json).read())
    assert meta["ConfoundColumns"] == ["trans_x"] and meta["SpikeRegressors"]["Count"] == 0
    assert meta["DesignColumns"] == list(design.columns[1:])  # the TSV adds frame_time
    assert meta["Contrasts"]["fearful-gt-neutral"] == {"fearful": 1.0, "neutral": -1.0}
    assert meta["HighPass"]["CutoffSeconds"] == 128.0 and meta["DegreesOfFreedom"] == out.dof
    assert "AR(1)" in meta["NoiseModel"] and "SPM canonical" in meta["HRF"]["Model"]
    monkeypatch.chdir(tmp_path.joinpath("fixed").mkdir() or tmp_path / "fixed")
    fx = FixedEffects(
        effect_maps=[out.effect_maps] * 2,
        variance_maps=[out.variance_maps] * 2,
        contrast_names=[out.contrast_names] * 2,
        dofs=[out.dof] * 2,
        brain_masks=[run_files["mask"]] * 2,
        roi_tables=[out.roi_tsv] * 2,
    ).run().outputs
    assert fx.contrast_names == out.contrast_names
    eff = np.asanyarray(nib.load(fx.effect_maps[1]).dataobj)
    var = np.asanyarray(nib.load(fx.variance_maps[1]).dataobj)
    np.testing.assert_allclose(eff, np.asanyarray(nib.load(out.effect_maps[1]).dataobj), rtol=1e-6)
    np.testing.assert_allclose(var, np.asanyarray(nib.load(out.variance_maps[1]).dataobj) / 2, rtol=1e-5)
    combined = pd.read_csv(fx.roi_tsv, sep="\t").set_index(["roi", "contrast"])
    np.testing.assert_allclose(combined["effect"], rois["effect"], rtol=1e-8)
    np.testing.assert_allclose(combined["variance"], rois["variance"] / 2, rtol=1e-8)
    assert (combined["dof"] == 2 * out.dof).all()
    with pytest.raises(ValueError, match="run 2 has contrasts"):
        FixedEffects(effect_maps=[out.effect_maps] * 2, variance_maps=[out.variance_maps] * 2,
                     contrast_names=[out.contrast_names, out.contrast_names[::-1]], dofs=[out.dof] * 2,
                     brain_masks=[run_files["mask"]] * 2).run()


def test_bad_events_error_names_the_file(run_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "sub-01_task-faces_events.tsv"
    _events().assign(duration=-1.0).to_csv(bad, sep="\t", index=False)
    with pytest.raises(ValueError, match="sub-01_task-faces_events.tsv: .*negative durations"):
        TaskModelData(bold_file=run_files["bold"], brain_mask=run_files["mask"], events_file=str(bad), tr=TR,
                      start_time=0.0, task=TASK, glm=GLM()).run()


def _gppi(files, seeds, noise_model="ar1", signal="mean", **ppi):
    return GPPI(percent_bold=files["percent_bold"], task_design=files["task_design"], brain_mask=files["mask"],
                labels_file=files["labels"], labels_tsv=files["labels_tsv"], signal=signal, task=TASK,
                glm=GLM(noise_model=noise_model), ppi=PPI(seeds=seeds, **ppi))


def test_gppi_interface(run_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = _gppi(run_files, ["amygdala", "vmPFC"]).run().outputs
    assert out.contrast_names == ["fearful", "neutral", "shapes", "faces", "fearful-gt-neutral"]
    mat = pd.read_csv(out.relmat_files[4], sep="\t").set_index("Node")
    assert list(mat.columns) == ["amygdala", "vmPFC", "dACC"]
    assert mat.loc["amygdala", "vmPFC"] > 0 and np.isnan(mat.loc["amygdala", "amygdala"])
    assert mat.loc["dACC"].isna().all()  # dACC was not a seed
    stats = pd.read_csv(out.stats_tsv, sep="\t").set_index(["seed", "target", "contrast"])
    assert stats.loc[("amygdala", "vmPFC", "fearful-gt-neutral"), "z"] > 3
    assert (stats["variance"] > 0).all()
    assert len(out.seed_maps) == 2 * 5 * 5  # two seeds, five conditions and contrasts, five statistics
    assert "PPI_fearful" in pd.read_csv(out.design_tsv, sep="\t").columns
    meta = json.loads(open(out.meta_json).read())
    assert "PPI_fearful" in meta["DesignColumns"] and meta["ConfoundColumns"] == ["trans_x"]
    assert meta["PPI"]["Contrasts"]["fearful-gt-neutral"] == {"PPI_fearful": 1.0, "PPI_neutral": -1.0}
    assert "Gitelman" in meta["PPI"]["Deconvolution"] and "percent" in meta["EffectUnits"]
    # the configuration names circuit ROIs only, so a seed the run lacks was excluded from it by the
    # coverage rule: skipped beside others (recorded), an error when it is the only one
    with pytest.raises(ValueError, match="every gPPI seed \\['insula'\\] was excluded from this run by the coverage"):
        _gppi(run_files, ["insula"]).run()


def test_gppi_units_roi_equals_mean_of_voxel_map(run_files, tmp_path, monkeypatch):
    """ROI-to-ROI and seed-to-voxel gPPI share units: the ROI effect is the ROI mean of the map (OLS)."""
    monkeypatch.chdir(tmp_path)
    out = _gppi(run_files, ["amygdala", "insula"], noise_model="ols").run().outputs  # insula: excluded from the run
    assert json.loads(open(out.meta_json).read())["PPI"]["SeedsExcludedByCoverage"] == ["insula"]
    stats = pd.read_csv(out.stats_tsv, sep="\t").set_index(["seed", "target", "contrast"])
    assert set(stats.index.get_level_values("seed")) == {"amygdala"}
    labels = np.asanyarray(nib.load(run_files["labels"]).dataobj)
    mask = np.asanyarray(nib.load(run_files["mask"]).dataobj) > 0
    effect_map = [p for p in out.seed_maps if "contrast-fearfulGtNeutral_stat-effect" in p][0]
    voxel_mean = np.asanyarray(nib.load(effect_map).dataobj)[(labels == 2) & mask].mean()
    np.testing.assert_allclose(stats.loc[("amygdala", "vmPFC", "fearful-gt-neutral"), "effect"], voxel_mean,
                               rtol=1e-5)
    # percent units: the simulated interaction is 1 % per unit neuronal seed signal; the raw
    # BOLD is ~500, so raw-unit fits would be 5x larger for the target and 5x smaller for the seed
    assert 0.3 < stats.loc[("amygdala", "vmPFC", "fearful"), "effect"] < 3
    eig = _gppi(run_files, ["amygdala"], signal="eigenvariate").run().outputs
    eig_stats = pd.read_csv(eig.stats_tsv, sep="\t").set_index(["seed", "target", "contrast"])
    assert eig_stats.loc[("amygdala", "vmPFC", "fearful-gt-neutral"), "z"] > 3
    assert "eigenvariate" in json.loads(open(eig.meta_json).read())["PPI"]["ROISignal"]


def test_gppi_symmetrized_bold_variant(run_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sym = _gppi(run_files, ["amygdala", "vmPFC", "dACC"], symmetrize=True, deconvolve=False).run().outputs
    smat = pd.read_csv(sym.relmat_files[0], sep="\t").set_index("Node")
    assert smat.loc["amygdala", "vmPFC"] == pytest.approx(smat.loc["vmPFC", "amygdala"])
    assert "none" in json.loads(open(sym.meta_json).read())["PPI"]["Deconvolution"]
