"""Group-level Bayesian model comparison: fixed and random effects (Stephan 2009; Rigoux 2014)."""

import numpy as np
import pytest
from scipy import stats

from ketflow.dcm.compare import group_model_comparison, random_effects_bms


def test_exceedance_probabilities_match_the_dirichlet():
    rng = np.random.default_rng(0)
    F = rng.normal(0, 3, size=(12, 3))
    F[:7, 0] += 6.0  # model 1 best for most subjects
    res = random_effects_bms(F)
    samples = rng.dirichlet(res.alpha, size=400_000)
    mc = np.bincount(samples.argmax(axis=1), minlength=3) / len(samples)
    np.testing.assert_allclose(res.exceedance_probability, mc, atol=3e-3)
    two = random_effects_bms(F[:, :2])
    assert two.exceedance_probability[0] == pytest.approx(stats.beta.sf(0.5, *two.alpha), abs=1e-8)
    assert res.alpha.sum() == pytest.approx(12 + 3)  # N subjects plus the Dirichlet prior
    assert np.allclose(res.assignment.sum(axis=1), 1.0)


def test_random_effects_recover_model_frequencies_and_omnibus_risk():
    rng = np.random.default_rng(1)
    n = 40
    uses_first = rng.random(n) < 0.7  # 70% of subjects use the first model
    F = np.zeros((n, 2))
    F[np.arange(n), np.where(uses_first, 1, 0)] = -rng.uniform(3, 10, n)  # their other model is worse
    res = random_effects_bms(F)
    assert res.expected_frequency[0] == pytest.approx(uses_first.mean(), abs=0.06)
    # 28 vs 12 subjects: clearly unequal frequencies, though not overwhelmingly (binomial p ~ 0.02)
    assert res.exceedance_probability[0] > 0.95 and res.bor < 0.3
    strong = random_effects_bms(np.column_stack([np.zeros(n), -5.0 * np.ones(n)]))
    assert strong.bor < 1e-6 and strong.protected_exceedance_probability[0] > 0.999
    assert res.protected_exceedance_probability[0] == pytest.approx(
        (1 - res.bor) * res.exceedance_probability[0] + res.bor / 2)
    # no difference between models: the omnibus risk is high and pxp pulled towards 1/K
    null = random_effects_bms(np.zeros((n, 3)))
    assert null.bor > 0.8
    np.testing.assert_allclose(null.protected_exceedance_probability, 1 / 3, atol=0.06)


def test_group_model_comparison_table():
    F = np.array([[-100.0, -103.0, -110.0], [-200.0, -199.0, -215.0], [-50.0, -55.0, -60.0]])
    table = group_model_comparison(F, ["full", "no-b", "no-a"], ["01", "02", "03"])
    assert list(table["model"]) == ["full", "no-b", "no-a"]
    np.testing.assert_allclose(table["F_sum"], F.sum(axis=0))
    assert table["ffx_posterior"].sum() == pytest.approx(1.0) and table["ffx_posterior"].iloc[0] > 0.99
    assert table["n_best"].tolist() == [2, 1, 0]
    assert table["rfx_exceedance"].sum() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        group_model_comparison(F, ["a", "b"])
