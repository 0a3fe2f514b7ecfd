"""Trial inference on circuit measures (ketflow.group.inference, trial_models, permutation).

* ANCOVA and mixed-model numbers equal statsmodels' formula fits of the same table;
* the vectorised closed-form statistics equal statsmodels' fits, unpermuted and on explicitly
  permuted / sign-flipped Freedman–Lane data refitted by statsmodels;
* effect sizes, contrasts, FDR (statsmodels' multipletests) as documented;
* the max-statistic FWE controls the family-wise error on many small null studies and has
  power on a planted effect; bad analyses are refused with the setting named.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.multitest import multipletests

from ketflow.group.features import build_feature_table
from ketflow.group.inference import (AnalysisData, InferenceError, InferenceSettings, permutation_tests,
                                     prepare_analysis, run_analysis)
from ketflow.group.freedman_lane import contrast_t, induced, null_fit, rearrangements
from ketflow.group.trial_models import (ancova_contrasts, fit_ancova, fit_lmm, lmm_contrasts, morris_factor,
                                        pooled_baseline_sd)

ARMS = ("ketamine", "midazolam")


def _subjects(n: int, rng, *, subject_sd=1.0, noise_sd=0.7, effect=0.5, negative_icc=False):
    """One measure: (pre, post, active, covariates (n, 1))."""
    active = np.repeat([1.0, 0.0], n // 2)
    age = rng.normal(size=(n, 1))
    trait = rng.normal(scale=subject_sd, size=n)
    pre = trait + rng.normal(scale=noise_sd, size=n) + 0.3 * age[:, 0]
    post = trait + rng.normal(scale=noise_sd, size=n) + effect * active + 0.3 * age[:, 0]
    if negative_icc:  # between-subject variance estimate at REML's boundary
        post = -0.6 * pre + rng.normal(scale=0.4, size=n) + effect * active
    return pre, post, active, age


def _long(pre, post, active, age) -> pd.DataFrame:
    n = len(pre)
    return pd.DataFrame({"subject": np.tile(np.arange(n), 2), "session": np.repeat([0.0, 1.0], n),
                         "value": np.concatenate([pre, post]), "arm": np.tile(active, 2),
                         "age": np.tile(age[:, 0], 2)})


def test_ancova_equals_statsmodels_formula_fits():
    pre, post, active, age = _subjects(20, np.random.default_rng(0))
    table = pd.DataFrame({"pre": pre, "post": post, "arm": active, "age": age[:, 0]})
    ours = fit_ancova(pre, post, active, age)
    ref = smf.ols("post ~ pre + arm + age", table).fit()
    est = ours["arm_by_session"]
    assert est.estimate == pytest.approx(ref.params["arm"], rel=1e-10)
    assert est.se == pytest.approx(ref.bse["arm"], rel=1e-10)
    assert est.p == pytest.approx(ref.pvalues["arm"], rel=1e-8)
    assert [est.ci_low, est.ci_high] == pytest.approx(list(ref.conf_int().loc["arm"]), rel=1e-8)
    # within-arm change: each arm's mean change at the mean age (change score model, no baseline term)
    change = smf.ols("change ~ arm + age", table.assign(change=post - pre)).fit()
    for arm, key in ((1.0, "within_arm_change_active"), (0.0, "within_arm_change_control")):
        test = change.t_test(f"Intercept + {arm} * arm + {age.mean()} * age = 0")
        assert ours[key].estimate == pytest.approx(float(test.effect[0]), rel=1e-10)
        assert ours[key].se == pytest.approx(float(test.sd[0, 0]), rel=1e-10)
        assert ours[key].df == change.df_resid
    base = smf.ols("pre ~ arm + age", table).fit()
    assert ours["baseline_difference"].estimate == pytest.approx(base.params["arm"], rel=1e-10)
    assert ours["baseline_difference"].se == pytest.approx(base.bse["arm"], rel=1e-10)


def test_mixed_model_equals_statsmodels_formula_fit():
    pre, post, active, age = _subjects(24, np.random.default_rng(1))
    long = _long(pre, post, active, age).iloc[:-3]  # three subjects without follow-up
    ours = fit_lmm(long["subject"], long["session"], long["value"], long["arm"], long[["age"]])
    ref = smf.mixedlm("value ~ session * arm + age", long, groups=long["subject"]).fit(reml=True)
    cov = ref.cov_params()
    assert ours.converged
    for key, names in (("arm_by_session", ["session:arm"]), ("baseline_difference", ["arm"]),
                       ("within_arm_change_control", ["session"]),
                       ("within_arm_change_active", ["session", "session:arm"])):
        est = ours.estimates[key]
        # equal to the REML optimiser's tolerance (two runs of it from different parametrisations)
        assert est.estimate == pytest.approx(ref.params[names].sum(), abs=1e-4 * est.se)
        assert est.se == pytest.approx(np.sqrt(cov.loc[names, names].to_numpy().sum()), rel=1e-4)
    # t tests on the between-within degrees of freedom
    within = ours.estimates["arm_by_session"]
    assert within.df == len(long) - 24 - 2
    assert within.p == pytest.approx(2 * stats.t.sf(abs(within.t), within.df))
    assert ours.estimates["baseline_difference"].df == 24 - 2 - 1


@pytest.mark.parametrize("boundary", [False, True])
def test_closed_form_statistics_equal_statsmodels(boundary):
    """Identity rearrangement of the vectorised engine = statsmodels, for several measures at once."""
    rng = np.random.default_rng(2)
    measures = [_subjects(20, rng, negative_icc=boundary) for _ in range(3)]
    active, age = measures[0][2], measures[0][3]
    pre = np.vstack([m[0] for m in measures])
    post = np.vstack([m[1] for m in measures])
    identity = rearrangements("permute", 20, 0, 0)
    closed = {"ancova": ancova_contrasts(pre, post, active, age), "lmm": lmm_contrasts(pre, post, active, age)}
    for i in range(3):
        fits = {"ancova": fit_ancova(pre[i], post[i], active, age)}
        long = _long(pre[i], post[i], active, age)
        lmm = fit_lmm(long["subject"], long["session"], long["value"], long["arm"], long[["age"]])
        fits["lmm"] = lmm.estimates
        if boundary:
            assert lmm.subject_variance < 1e-6 * lmm.residual_variance
        for model, estimates in fits.items():
            for key, est in estimates.items():
                t = contrast_t(closed[model][key], "permute", identity)[i, 0]
                # OLS: to rounding; MixedLM: to its optimiser's tolerance (the closed form is REML's exact
                # optimum: its restricted log-likelihood is at least statsmodels', measured 1e-9 higher)
                assert t == pytest.approx(est.t, rel=1e-10 if model == "ancova" else 1e-4), (model, key)
                assert closed[model][key].df[i] == est.df


#: One simulated gPPI measure (benchmarks/group_inference_power.py) on which statsmodels' L-BFGS
#: reports convergence at a subject variance of 0.26 x the residual's, 1.6 nats of restricted
#: likelihood below REML's optimum on the boundary (subject variance 0).
LBFGS_STOPS_SHORT = (
    np.array([-0.5491121979601633, -0.41229502090253467, 0.8966598550445417, 1.3346717908943766, 0.3714574849524985,
              2.2221881690450087, 1.4237383012678697, -0.4240846466617377, 0.8609566556409445, -0.0061474382094540495,
              0.2001325414167396, -0.0893439384568387, 1.5872470644690388, -0.9837388692980314, 1.0822762863737445,
              0.37475560257137314, 0.25792386850832616, -0.46480216763172405, 0.25292528618930293,
              0.44810438119155194]),
    np.array([-0.47363018268433266, 0.6480457981804697, 0.9465590358068395, -0.016812809017530427,
              -1.231498968347683, -1.0906226689854361, -0.49916349664205356, 0.789389402400312, 0.27784785081253205,
              -0.9575546141596332, 0.29925685902036425, -0.8496667231328545, -0.16518104855444563,
              -0.08174660022548313, 1.8909443506510923, -2.572669723192753, 0.05511028506347396,
              -0.12375578892903903, 0.9531826710339107, -0.788036103857046]),
)


def test_mixed_model_reaches_the_boundary_optimum_where_lbfgs_stops_short():
    pre, post = LBFGS_STOPS_SHORT
    active, none = np.tile([1.0, 0.0], 10), np.zeros((20, 0))
    long = _long(pre, post, active, np.zeros((20, 1)))
    fit = fit_lmm(long["subject"], long["session"], long["value"], long["arm"], np.zeros((40, 0)))
    assert fit.converged and fit.subject_variance < 1e-6 * fit.residual_variance
    closed = lmm_contrasts(pre[None], post[None], active, none)
    for key, est in fit.estimates.items():
        assert contrast_t(closed[key], "permute", rearrangements("permute", 20, 0, 0))[0, 0] == \
            pytest.approx(est.t, rel=1e-4), key


def _refit_t(model: str, key: str, pre, post, active, age) -> float:
    if model == "ancova":
        return fit_ancova(pre, post, active, age)[key].t
    long = _long(pre, post, active, age)
    return fit_lmm(long["subject"], long["session"], long["value"], long["arm"], long[["age"]]).estimates[key].t


@pytest.mark.parametrize("model", ["ancova", "lmm"])
def test_permuted_statistics_equal_statsmodels_refits(model):
    """Freedman–Lane data rebuilt explicitly and refitted by statsmodels give the engine's t."""
    rng = np.random.default_rng(3)
    pre, post, active, age = _subjects(16, rng)
    contrasts = (ancova_contrasts if model == "ancova" else lmm_contrasts)(pre[None], post[None], active, age)
    for key, contrast in contrasts.items():
        kind = "flip" if key.startswith("within_arm") else "permute"
        transforms = rearrangements(kind, 16, 3, seed=4)
        engine = contrast_t(contrast, kind, transforms)[0]
        strata = null_fit(contrast)
        for b in range(1, 4):
            rebuilt = []
            for fitted, resid in strata:
                moved = resid[0][transforms[b]] if kind == "permute" else resid[0] * transforms[b]
                rebuilt.append(fitted[0] + moved)
            if model == "ancova" and key == "baseline_difference":
                new_pre, new_post = rebuilt[0], rebuilt[0] + (post - pre)  # only the baseline model is refitted
            elif model == "ancova":  # the stratum is the change; the baseline regressor stays
                new_pre, new_post = pre, pre + rebuilt[0]
            else:  # strata: difference and sum
                new_pre, new_post = (rebuilt[1] - rebuilt[0]) / 2, (rebuilt[1] + rebuilt[0]) / 2
            refit = _refit_t(model, key, new_pre, new_post, active, age)
            assert engine[b] == pytest.approx(refit, rel=1e-10 if model == "ancova" else 1e-4), (key, b)


def test_null_fit_is_the_restricted_model():
    """The Freedman–Lane reduced model has the effect at zero and is the least-squares fit under it."""
    rng = np.random.default_rng(5)
    pre, post, active, age = _subjects(18, rng)
    reduced = smf.ols("change ~ pre + age", pd.DataFrame({"change": post - pre, "pre": pre, "age": age[:, 0]})).fit()
    fitted, resid = null_fit(ancova_contrasts(pre[None], post[None], active, age)["arm_by_session"])[0]
    np.testing.assert_allclose(fitted[0], reduced.fittedvalues, atol=1e-10)
    np.testing.assert_allclose(resid[0], reduced.resid, atol=1e-10)


def test_induced_permutations_are_uniform_on_a_subset():
    transforms = rearrangements("permute", 6, 6000, seed=0)
    sub = induced("permute", transforms, np.array([1, 3, 4]))
    assert (sub[0] == [0, 1, 2]).all()  # identity stays identity
    _, counts = np.unique(sub[1:], axis=0, return_counts=True)
    assert len(counts) == 6 and stats.chisquare(counts).pvalue > 0.001


def _study(n: int, rng, measures: int = 8, effect: dict | None = None, missing: float = 0.0) -> pd.DataFrame:
    """Long measures of a simulated trial: correlated measures, a covariate, optional effects."""
    rows = []
    loading = rng.normal(size=measures) * 0.5
    for i in range(n):
        arm = ARMS[i % 2]
        shared, trait = rng.normal(), rng.normal(size=measures)
        for ses in ("pre", "post"):
            common = rng.normal()
            for j in range(measures):
                if rng.random() < missing:
                    continue
                value = trait[j] + shared + loading[j] * common + rng.normal(scale=0.6)
                if ses == "post" and arm == ARMS[0]:
                    value += (effect or {}).get(j, 0.0)
                rows.append({"subject": f"{i:03d}", "session": ses, "task": "rest", "measure": f"fc_rest_r{j}-s{j}",
                             "value": value})
    return pd.DataFrame(rows)


def _feature_table(measures: pd.DataFrame, rng):
    subjects = sorted(measures["subject"].unique())
    clinical = pd.DataFrame([{"subject": s, "session": ses, "caps5_total": 40.0} for s in subjects
                             for ses in ("pre", "post")])
    participants = pd.DataFrame({"subject": subjects, "group": [ARMS[int(s) % 2] for s in subjects],
                                 "age": rng.normal(40, 10, len(subjects))})
    return build_feature_table(measures, clinical, participants, arm="group", covariates=["age"])


SETTINGS = InferenceSettings(arm_column="group", arms=ARMS, covariates=("age",), n_permutations=400, seed=1)


@pytest.fixture(scope="module")
def analyses():
    rng = np.random.default_rng(6)
    features = _feature_table(_study(24, rng, effect={0: 1.5}, missing=0.05), rng)
    return {model: run_analysis(prepare_analysis(features.table, features.dictionary, "fc", model, SETTINGS))
            for model in ("ancova", "lmm")}, features


def test_result_table_contrasts_effect_sizes_and_fdr(analyses):
    results, features = analyses
    table = features.table
    for model, result in results.items():
        rows = result.table
        assert set(rows["effect"]) == {"arm_by_session", "within_arm_change", "baseline_difference"}
        assert len(rows) == 4 * 8 and rows["apriori"].all() and rows["p"].notna().all()
        # FDR: statsmodels' Benjamini-Hochberg over the family, per effect
        for (_, arm), part in rows.groupby(["effect", "arm"]):
            np.testing.assert_allclose(part["q_fdr"], multipletests(part["p"], method="fdr_bh")[1])
        # effect size: estimate / baseline SD pooled within arms x Morris's factor, on the fit's subjects
        row = rows[(rows["measure"] == "fc_rest_r3-s3") & (rows["effect"] == "arm_by_session")].iloc[0]
        pre, post = table["fc_rest_r3-s3__ses-pre"], table["fc_rest_r3-s3__ses-post"]
        keep = pre.notna() & (post.notna() if model == "ancova" else True)
        groups = [pre[keep & (table["group"] == arm)] for arm in ARMS]
        pooled = np.sqrt(sum(((g - g.mean()) ** 2).sum() for g in groups) / (keep.sum() - 2))
        assert row["baseline_sd"] == pytest.approx(pooled)
        assert row["effect_size"] == pytest.approx(row["estimate"] / pooled * (1 - 3 / (4 * (keep.sum() - 2) - 1)))
        assert row["effect_size_ci_low"] / row["effect_size"] == pytest.approx(row["ci_low"] / row["estimate"])
        # ANCOVA uses subjects with both sessions; the mixed model every observation
        if model == "ancova":
            assert row["n_observations"] == (pre.notna() & post.notna()).sum() == row["n_active"] + row["n_control"]
        else:
            assert row["n_observations"] == pre.notna().sum() + post.notna().sum()
        # the planted effect (active arm, measure 0) is found, family-wise
        hit = rows[(rows["measure"] == "fc_rest_r0-s0") & (rows["effect"] == "arm_by_session")].iloc[0]
        assert hit["estimate"] > 0 and hit["p_fwe"] < 0.05 and hit["significant_fwe"]
        counts = result.metadata["Counts"]
        assert counts["SubjectsPerArm"] == {"ketamine": 12, "midazolam": 12} and counts["Tested"] == 8


def test_pooled_sd_and_morris_factor():
    pre = np.array([1.0, 2.0, 3.0, 10.0, 12.0, np.nan])
    active = np.array([1, 1, 1, 0, 0, 0.0])
    assert pooled_baseline_sd(pre, active) == pytest.approx(np.sqrt((2.0 + 2.0) / 3))
    assert morris_factor(22) == pytest.approx(1 - 3 / 79)


def _null_study(n: int, rng, settings: InferenceSettings, model: str, missing: float = 0.05) -> AnalysisData:
    """A null study of ``n`` subjects: 8 correlated measures (subject trait, a component shared by
    the measures, a session-specific common component), a covariate, 5% values missing.  Half
    the measures have no subject trait (test-retest reliability 0, as gPPI estimates nearly do),
    where a baseline-adjusted within-arm change would suffer regression to the mean."""
    m = 8
    active = np.tile([1.0, 0.0], n // 2)
    loading = rng.normal(size=m) * 0.5
    reliable = (np.arange(m) < m // 2)[:, None]
    shared, trait = rng.normal(size=n) * reliable, rng.normal(size=(m, n)) * reliable
    pre, post = (trait + shared + loading[:, None] * rng.normal(size=n) + rng.normal(scale=0.6, size=(m, n))
                 for _ in range(2))
    pre[rng.random((m, n)) < missing] = np.nan
    post[rng.random((m, n)) < missing] = np.nan
    return AnalysisData("fc", model, settings, np.arange(n).astype(str), active, rng.normal(40, 10, (n, 1)),
                        [f"fc_rest_r{j}-s{j}" for j in range(m)], ["rest"] * m, pre, post, np.ones(m, bool))


@pytest.mark.parametrize("model", ["ancova", "lmm"])
def test_uncorrected_tests_are_calibrated_on_null_studies(model):
    """Every effect's t test rejects 5% of null measures, reliable or not (2,400 measures each;
    binomial SD 0.0044).  A baseline-adjusted within-arm change rejected 10% of the unreliable ones."""
    settings = InferenceSettings(arm_column="group", arms=ARMS, covariates=("age",), n_permutations=0)
    rng = np.random.default_rng(11)
    p = {}
    for _ in range(300):
        tests = permutation_tests(_null_study(20, rng, settings, model, missing=0.0), range(8))
        for key, t in tests.t.items():
            p.setdefault(key, []).append(2 * stats.t.sf(np.abs(t), tests.df[key]))
    rates = {key: float((np.concatenate(values) < 0.05).mean()) for key, values in p.items()}
    assert all(abs(rate - 0.05) < 3.5 * np.sqrt(0.05 * 0.95 / 2400) for rate in rates.values()), rates


@pytest.mark.parametrize("model", ["ancova", "lmm"])
def test_fwe_controls_familywise_error_on_null_studies(model):
    """600 null studies of 16 subjects: the rate of studies with any FWE-significant measure
    stays at 0.05 within simulation error (binomial SD 0.009; 3 SD allowed over the 8 rates
    of the two models x four effects), for each effect."""
    settings = InferenceSettings(arm_column="group", arms=ARMS, covariates=("age",), n_permutations=200, seed=2)
    rng = np.random.default_rng(10)
    n_studies = 600
    hits: dict[str, int] = {}
    for _ in range(n_studies):
        data = _null_study(16, rng, settings, model)
        for key, p in permutation_tests(data, range(8)).p_fwe.items():
            hits[key] = hits.get(key, 0) + (p.min() <= 0.05)
    rates = {k: v / n_studies for k, v in hits.items()}
    assert len(rates) == 4
    assert all(rate <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / n_studies) for rate in rates.values()), rates
    assert np.mean(list(rates.values())) > 0.02, rates  # not trivially conservative


def test_fwe_has_power_on_a_planted_effect():
    settings = InferenceSettings(arm_column="group", arms=ARMS, covariates=("age",), n_permutations=200, seed=3)
    rng = np.random.default_rng(8)
    found = []
    for _ in range(20):
        features = _feature_table(_study(24, rng, effect={2: 1.5}), rng)
        data = prepare_analysis(features.table, features.dictionary, "fc", "ancova", settings)
        tests = permutation_tests(data, range(len(data.measures)))
        found.append(tests.p_fwe["arm_by_session"][tests.measures.index(2)] <= 0.05)
    assert np.mean(found) >= 0.7


def _features_for_errors():
    rng = np.random.default_rng(9)
    return _feature_table(_study(12, rng), rng)


def test_unknown_apriori_measure_and_missing_family_are_refused():
    features = _features_for_errors()
    with pytest.raises(InferenceError, match="fc_rest_nope") as err:
        prepare_analysis(features.table, features.dictionary, "fc", "ancova", SETTINGS, apriori=["fc_rest_nope"])
    assert err.value.setting == "apriori"
    with pytest.raises(InferenceError, match="no gPPI") as err:
        prepare_analysis(features.table, features.dictionary, "ppi", "lmm", SETTINGS)
    assert err.value.setting == "families"


def test_rank_deficient_covariate_is_refused():
    features = _features_for_errors()
    table = features.table.assign(age=(features.table["group"] == ARMS[0]).astype(float))  # age = arm
    with pytest.raises(InferenceError, match="covariate 'age'") as err:
        prepare_analysis(table, features.dictionary, "fc", "ancova", SETTINGS)
    assert err.value.setting == "covariates"


def test_too_few_subjects_per_arm():
    features = _features_for_errors()
    strict = InferenceSettings(arm_column="group", arms=ARMS, covariates=("age",), min_per_arm=7)
    with pytest.raises(InferenceError, match="fewer than min_per_arm = 7") as err:
        prepare_analysis(features.table, features.dictionary, "fc", "lmm", strict)
    assert err.value.setting == "min_per_arm"
    # one measure short of subjects is listed, not tested; the others are
    table = features.table.copy()
    table.loc[table["group"] == ARMS[1], "fc_rest_r1-s1__ses-post"] = np.nan
    table.loc[table.index[-1], "fc_rest_r1-s1__ses-post"] = 1.0
    data = prepare_analysis(table, features.dictionary, "fc", "ancova", SETTINGS)
    result = run_analysis(data)
    rows = result.table[result.table["measure"] == "fc_rest_r1-s1"]
    assert rows["p"].isna().all() and rows["note"].str.contains("min_per_arm").all()
    assert result.table["p"].notna().sum() == 4 * 7 and result.metadata["Counts"]["Tested"] == 7


def test_subjects_without_arm_or_covariate_are_left_out():
    features = _features_for_errors()
    table = features.table.copy()
    table.loc[0, "age"] = np.nan
    table.loc[1, "group"] = np.nan
    data = prepare_analysis(table, features.dictionary, "fc", "ancova", SETTINGS)
    assert len(data.subjects) == 10 and set(data.left_out) == {"000", "001"}
    assert "age" in data.left_out["000"]

