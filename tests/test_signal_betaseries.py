"""Beta-series connectivity: LSS equal to a nilearn FirstLevelModel loop, recovery of planted
trial-by-trial coupling, correlations and contrasts, configuration and collection."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ketflow.config import ConfigError, load_config
from ketflow.io.collect import collect_measures
from ketflow.signal.betaseries import (
    beta_series_correlations,
    condition_trials,
    contrast_fisher_z,
    lss_betas,
    trial_regressors,
    trial_table,
)
from ketflow.signal.design import make_task_design
from ketflow.signal.extract import roi_means
from ketflow.signal.glm import percent_signal_change
from ketflow.signal.gppi import nuisance_columns

CONFLICT = {"conditions": ["congruent", "incongruent"],
            "derived": [{"name": "iI", "trial_type": "incongruent", "previous": "incongruent"},
                        {"name": "cI", "trial_type": "incongruent", "previous": "congruent"}]}


def _conflict_run(bids: Path):
    func = bids / "derivatives/fmriprep/sub-01/ses-pre/func"
    stem = "sub-01_ses-pre_task-conflict"
    img = nib.load(func / f"{stem}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz")
    mask = np.asanyarray(nib.load(func / f"{stem}_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz").dataobj) > 0
    events = pd.read_csv(bids / f"sub-01/ses-pre/func/{stem}_events.tsv", sep="\t")
    confounds = pd.read_csv(func / f"{stem}_desc-confounds_timeseries.tsv", sep="\t")[["trans_x", "trans_y", "rot_z"]]
    return img, mask, events, confounds


def test_lss_equals_a_nilearn_first_level_loop(tiny_bids):
    """One conflict run: ketflow's batched LSS on the ROI means of the percent-scaled data equals,
    to 1e-5, the ROI means of the trial betas of one nilearn FirstLevelModel (OLS) per trial, each
    fitted on the whole image with a design made independently for that trial."""
    from nilearn.glm.first_level import FirstLevelModel

    img, mask, events, confounds = _conflict_run(tiny_bids)
    tr, n = float(img.header.get_zooms()[3]), img.shape[3]
    design = make_task_design(events, tr, n, CONFLICT["conditions"], CONFLICT["derived"], confounds=confounds)
    trials = trial_table(events, design, CONFLICT["conditions"], CONFLICT["derived"])
    # a few irregular "ROIs" of voxels from the mask
    rng = np.random.default_rng(0)
    labels = np.where(rng.random(mask.sum()) < 0.3, rng.integers(1, 5, mask.sum()), 0)
    data = percent_signal_change(img.get_fdata(dtype=np.float32)[mask].T)
    betas = lss_betas(roi_means(data, labels, 4), trial_regressors(trials, design), list(trials["column"]),
                      design.matrix[nuisance_columns(design)].to_numpy())

    mask_img = nib.Nifti1Image(mask.astype(np.uint8), img.affine)
    reference = np.empty_like(betas)
    for i in range(len(trials)):
        events_i = trials[["onset", "duration", "modulation"]].assign(trial_type=list(trials["column"]))
        events_i.loc[i, "trial_type"] = "target"
        conditions = ["target"] + [c for c in design.columns if c in set(events_i["trial_type"])]
        matrix = make_task_design(events_i, tr, n, conditions, confounds=confounds).matrix.reset_index(drop=True)
        model = FirstLevelModel(t_r=tr, mask_img=mask_img, noise_model="ols", signal_scaling=0,
                                minimize_memory=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(img, design_matrices=[matrix])
            beta = model.compute_contrast("target", output_type="effect_size").get_fdata()[mask]
        reference[i] = [beta[labels == k].mean() for k in range(1, 5)]
    np.testing.assert_allclose(betas, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())


def _events(rng, n_per_condition: int, isi: float = 4.0) -> pd.DataFrame:
    kinds = rng.permutation(["a"] * n_per_condition + ["b"] * n_per_condition)
    onsets = 8.0 + isi * np.arange(kinds.size) + rng.uniform(0, 1.5, kinds.size)
    return pd.DataFrame({"onset": onsets, "duration": 1.0, "trial_type": kinds})


def test_trials_sum_to_their_design_column_and_lone_trials_are_estimated(tiny_bids):
    rng = np.random.default_rng(1)
    events = _events(rng, 10)
    events.loc[5, "trial_type"] = "c"  # the only trial of its condition
    n = int(events["onset"].max() / 2) + 20
    design = make_task_design(events, 2.0, n, ["a", "b", "c"])
    trials = trial_table(events, design, ["a", "b", "c"])
    x = trial_regressors(trials, design)
    for column in design.columns:
        np.testing.assert_allclose(x[:, (trials["column"] == column).to_numpy()].sum(axis=1),
                                   design.matrix[column], atol=1e-12)
    y = rng.standard_normal((n, 3))
    nuisance = design.matrix[nuisance_columns(design)].to_numpy()
    betas = lss_betas(y, x, list(trials["column"]), nuisance)
    for i in (0, 5):  # an ordinary trial and the lone one: direct least squares on the LSS design
        others = [x[:, ((trials["column"] == c) & (trials.index != i)).to_numpy()].sum(axis=1)
                  for c in design.columns]
        others = [o for o in others if np.any(o)]
        full = np.column_stack([x[:, i], *others, nuisance])
        np.testing.assert_allclose(betas[i], np.linalg.lstsq(full, y, rcond=None)[0][0], atol=1e-10)


def test_planted_trial_coupling_is_recovered():
    """Trial amplitudes correlated between ROIs 1 and 2 (r = 0.8) in condition a only (120 trials per
    condition): the beta-series correlation is high in a, near 0 in b, and the a - b contrast is
    positive for that pair only."""
    rng = np.random.default_rng(2)
    events = _events(rng, 120, isi=8.0)
    n = int(events["onset"].max() / 2) + 20
    design = make_task_design(events, 2.0, n, ["a", "b"])
    trials = trial_table(events, design, ["a", "b"])
    x = trial_regressors(trials, design)
    in_a = (trials["column"] == "a").to_numpy()
    amplitudes = rng.standard_normal((len(trials), 3)) + 2.0
    shared = rng.standard_normal(len(trials))
    amplitudes[in_a, 0] = 2.0 + shared[in_a]
    amplitudes[in_a, 1] = 2.0 + 0.8 * shared[in_a] + 0.6 * rng.standard_normal(in_a.sum())
    y = x @ amplitudes + 0.1 * rng.standard_normal((n, 3))  # trial regressors peak at ~0.2
    betas = lss_betas(y, x, list(trials["column"]), design.matrix[nuisance_columns(design)].to_numpy())
    matrices, counts = beta_series_correlations(betas, condition_trials(trials, design))
    assert counts == {"a": 120, "b": 120}
    assert matrices["a"][0, 1] > 0.6 and abs(matrices["b"][0, 1]) < 0.3
    z = contrast_fisher_z(matrices, {"a": 1, "b": -1})
    assert z[0, 1] > 0.5 and abs(z[0, 2]) < 0.4 and abs(z[1, 2]) < 0.4 and np.isnan(z[0, 0])


def test_correlations_and_contrasts_equal_numpy():
    rng = np.random.default_rng(3)
    betas = rng.standard_normal((30, 4))
    masks = {"a": np.arange(30) < 12, "b": np.arange(30) >= 12, "c": np.arange(30) < 2}
    matrices, counts = beta_series_correlations(betas, masks, min_trials=3)
    assert set(matrices) == {"a", "b"} and counts["c"] == 2
    for name in ("a", "b"):
        np.testing.assert_allclose(matrices[name], np.corrcoef(betas[masks[name]].T), atol=1e-12)
    z = contrast_fisher_z(matrices, {"a": 0.5, "b": -1})
    off = ~np.eye(4, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):  # the diagonal's arctanh(1)
        expected = 0.5 * np.arctanh(np.corrcoef(betas[masks["a"]].T)) - np.arctanh(np.corrcoef(betas[masks["b"]].T))
    np.testing.assert_allclose(z[off], expected[off], atol=1e-12)
    assert contrast_fisher_z(matrices, {"a": 1, "c": -1}) is None


def test_config_beta_series_defaults_and_errors(tmp_path):
    config = load_config(None)
    assert config.beta_series.tasks == ["conflict"] and config.measures.beta_series
    assert "betaseries" in config.group.inference.families
    bad = tmp_path / "bad.yml"
    bad.write_text("tasks: {conflict: {conditions: [a]}, rest: {type: rest}}\nbeta_series: {tasks: [rest]}\n")
    with pytest.raises(ConfigError, match="beta_series.tasks"):
        load_config(bad)
    bad.write_text("tasks: {conflict: {conditions: [a]}, rest: {type: rest}}\nbeta_series: {tasks: [stroop]}\n")
    with pytest.raises(ConfigError, match="beta_series.tasks"):
        load_config(bad)


def test_collect_reads_beta_series_contrasts(tmp_path):
    config = load_config(None)
    func = tmp_path / "sub-01" / "ses-pre" / "func"
    func.mkdir(parents=True)
    stem = "sub-01_ses-pre_task-conflict_space-MNI152NLin2009cAsym_atlas-circuit"
    matrix = pd.DataFrame([[np.nan, 0.3], [0.3, np.nan]], columns=["dACC", "amygdala_L"],
                          index=pd.Index(["dACC", "amygdala_L"], name="Node"))
    matrix.to_csv(func / f"{stem}_contrast-iIGtCI_stat-fisherz_desc-betaseries_relmat.tsv", sep="\t", na_rep="n/a")
    (matrix * 0.9).to_csv(func / f"{stem}_contrast-congruent_stat-pearsoncorrelation_desc-betaseries_relmat.tsv",
                          sep="\t", na_rep="n/a")
    table = collect_measures(tmp_path, config)
    assert table["measure"].tolist() == ["betaseries_conflict_iI-gt-cI_dACC-amygdala_L"]
    assert table["value"].tolist() == [pytest.approx(0.3)]


def test_feature_level_studies_carry_beta_series_measures_with_no_simulated_coupling():
    from ketflow.simulate.measured import measured_study

    name = "betaseries_conflict_incongruent-gt-congruent_dACC-amygdala_L"
    contrasts = {task: spec.contrasts for task, spec in load_config(None).tasks.items()}
    exact, _ = measured_study(4, 0, [name], contrasts, {"betaseries": 0.0})
    assert (exact["value"] == 0).all()  # the simulator has no trial-by-trial coupling
    noisy, _ = measured_study(40, 0, [name], contrasts, {"betaseries": 0.3})
    assert 0.2 < noisy["value"].std() < 0.4


def test_trials_on_censored_volumes_are_left_out():
    """A trial whose response falls on a censored stretch keeps almost none of its regressor and is
    not usable; with the constant alone as nuisance every trial keeps all of it."""
    from ketflow.signal.betaseries import retained_fraction, usable_trials
    from ketflow.signal.design import spike_regressors

    rng = np.random.default_rng(4)
    events = _events(rng, 15, isi=8.0)
    n = int(events["onset"].max() / 2) + 20
    design = make_task_design(events, 2.0, n, ["a", "b"])
    trials = trial_table(events, design, ["a", "b"])
    x = trial_regressors(trials, design)
    np.testing.assert_allclose(retained_fraction(x, np.ones((n, 1))), 1.0)
    peak = int(np.argmax(x[:, 10]))
    keep = np.ones(n, bool)
    keep[peak - 3: peak + 5] = False  # an 8-volume motion burst over trial 11's response
    nuisance = np.column_stack([design.matrix[nuisance_columns(design)].to_numpy(), spike_regressors(keep)])
    retained = retained_fraction(x, nuisance)
    usable = usable_trials(retained, 4.0)
    assert retained[10] < 0.1 and not usable[10]
    assert usable.sum() >= len(trials) - 3
