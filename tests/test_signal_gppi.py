"""Generalized PPI: pitfalls (centring, activation leakage) and recovery of interactions."""

import numpy as np
import pandas as pd
import pytest

from ketflow.signal.design import make_task_design
from ketflow.signal.glm import compute_contrast, fit_glm
from ketflow.signal.gppi import (
    gppi_contrasts,
    gppi_design,
    nuisance_columns,
    ppi_terms,
    roi_to_roi_gppi,
    seed_to_voxel_gppi,
    symmetrize,
    task_columns,
)
from ketflow.signal.hrf import convolve_microtime, spm_canonical_hrf

TR, N, NT = 2.0, 200, 16
REPS = 12


def block_design():
    ev = pd.DataFrame({"onset": 8 + 24.0 * np.arange(16), "duration": 12.0, "trial_type": ["A", "B"] * 8})
    return make_task_design(ev, TR, N, ["A", "B"])


def event_design():
    rng = np.random.default_rng(1)
    onsets = np.sort(rng.choice(np.arange(4, N * TR - 20, 2.0), 80, replace=False))
    ev = pd.DataFrame({"onset": onsets, "duration": 1.0, "trial_type": rng.choice(["A", "B"], 80)})
    return make_task_design(ev, TR, N, ["A", "B"])


def _neural(rng):
    return np.convolve(rng.standard_normal(N * NT), np.ones(8) / 8, "same") * 3


def simulate(rng, design, coupling=0.0, interaction=0.0, activation=0.0, noise=0.3):
    """Seed and target BOLD from neuronal signals; psychological variable A (+1) vs B (-1)."""
    hrf = spm_canonical_hrf(TR / NT)
    u = design.microtime / design.microtime.max(axis=0)
    x_seed = _neural(rng) + activation * u[:, 0]
    psy = u[:, 0] - u[:, 1]
    x_target = coupling * x_seed + interaction * psy * x_seed + activation * u[:, 0] + 0.5 * _neural(rng)

    def bold(x):
        return convolve_microtime(x, hrf, N, NT, design.microtime_onset) + noise * rng.standard_normal(N)

    return bold(x_seed), bold(x_target)


def ppi_estimates(seed, target, design, deconvolve=True, center=True, drop_task=False):
    gd = gppi_design(seed, design, deconvolve, center)
    if drop_task:
        gd = gd.drop(columns=task_columns(design))
    fit = fit_glm(target[:, None], gd.to_numpy(), "ols")
    vecs = gppi_contrasts(design, gd.columns, {"A-B": "A - B"})
    return {k: compute_contrast(fit, v) for k, v in vecs.items()}


def _replicate(design, seed, **kw):
    rng = np.random.default_rng(seed)
    sims = [simulate(rng, design, **{k: v for k, v in kw.items() if k in ("coupling", "interaction",
                                                                            "activation", "noise")})
            for _ in range(REPS)]
    opts = {k: v for k, v in kw.items() if k in ("deconvolve", "center", "drop_task")}
    return [ppi_estimates(s, t, design, **opts) for s, t in sims]


def _mean(results, key, field):
    return float(np.mean([getattr(r[key], field)[0] for r in results]))


def test_uncentred_psychological_variable_biases_ppi():
    """Context-free coupling only: the centred PPI beta is ~0, the uncentred one absorbs coupling."""
    design = block_design()
    centred = _replicate(design, 10, coupling=1.0, center=True)
    uncentred = _replicate(design, 10, coupling=1.0, center=False)
    assert abs(_mean(centred, "A", "effect")) < 0.1
    assert _mean(uncentred, "A", "effect") > 0.15
    assert _mean(uncentred, "A", "effect") > _mean(centred, "A", "effect") + 0.15


def test_task_activation_does_not_leak_into_ppi():
    """Di et al. 2017: pure activation of seed and target, no interaction -> PPI beta ~ 0."""
    design = block_design()
    full = _replicate(design, 11, activation=3.0)
    assert abs(_mean(full, "A", "z")) < 0.7
    assert abs(_mean(full, "A-B", "z")) < 0.7
    assert abs(_mean(full, "A", "effect")) < 0.1
    # the same data without the task regressors in the model: activation loads on PPI
    leaky = _replicate(design, 11, activation=3.0, drop_task=True)
    assert _mean(leaky, "A", "z") > 3


@pytest.mark.parametrize("design_fn", [block_design, event_design])
def test_known_interaction_is_recovered_better_with_deconvolution(design_fn):
    design = design_fn()
    kw = {"interaction": 1.5, "noise": 0.2} if design_fn is event_design else {"interaction": 0.5}
    dec = _replicate(design, 12, deconvolve=True, **kw)
    bold = _replicate(design, 12, deconvolve=False, **kw)
    assert _mean(dec, "A", "effect") > 0 > _mean(dec, "B", "effect")
    assert _mean(dec, "A-B", "z") > 3
    assert _mean(dec, "A-B", "z") > _mean(bold, "A-B", "z")


def test_design_layout_and_bold_variant():
    design = block_design()
    rng = np.random.default_rng(3)
    seed, _ = simulate(rng, design, coupling=1.0)
    gd = gppi_design(seed, design)
    ntask = len(task_columns(design))
    assert list(gd.columns[: ntask + 3]) == ["A", "B", "seed", "PPI_A", "PPI_B"]
    assert list(gd.columns[ntask + 3 :]) == nuisance_columns(design)
    np.testing.assert_allclose(gd["seed"], seed)
    terms = ppi_terms(seed, design, deconvolve=False)
    x0 = design.matrix[nuisance_columns(design)].to_numpy()
    clean = seed - x0 @ np.linalg.lstsq(x0, seed, rcond=None)[0]
    reg = design.matrix["A"].to_numpy()
    np.testing.assert_allclose(terms["PPI_A"], (clean - clean.mean()) * (reg - reg.mean()), atol=1e-12)
    # deconvolution is scale-equivariant (seed in any units)
    np.testing.assert_allclose(ppi_terms(50 * seed + 700, design), 50 * ppi_terms(seed, design), atol=1e-8)
    with pytest.raises(ValueError, match="seed has"):
        ppi_terms(seed[:-1], design)


def test_roi_to_roi_seed_to_voxel_and_symmetrize():
    design = block_design()
    rng = np.random.default_rng(4)
    seed, target = simulate(rng, design, interaction=0.5)
    rois = pd.DataFrame({"amygdala": seed, "vmPFC": target, "dACC": rng.standard_normal(N)})
    table = roi_to_roi_gppi(rois, design, contrasts={"A-B": {"A": 1, "B": -1}}, noise_model="ar1")
    assert set(table["contrast"]) == {"A", "B", "A-B"}
    assert len(table) == 3 * 2 * 3 and not (table["seed"] == table["target"]).any()
    row = table.set_index(["seed", "target", "contrast"]).loc[("amygdala", "vmPFC", "A-B")]
    assert row["z"] > 3
    _, maps = seed_to_voxel_gppi(rois[["vmPFC", "dACC"]].to_numpy(), seed, design,
                                 {"A-B": "A - B"}, noise_model="ar1")
    np.testing.assert_allclose(maps["A-B"].effect[0], row["effect"], rtol=1e-10)
    sym = symmetrize(table)
    assert len(sym) == 3 * 3
    pair = sym.set_index(["roi_a", "roi_b", "contrast"]).loc[("amygdala", "vmPFC", "A"), "effect"]
    both = table.set_index(["seed", "target", "contrast"])["effect"]
    assert pair == pytest.approx(0.5 * (both[("amygdala", "vmPFC", "A")] + both[("vmPFC", "amygdala", "A")]))
    one_way = symmetrize(roi_to_roi_gppi(rois, design, seeds=["amygdala"]))
    assert one_way.empty
    with pytest.raises(ValueError, match="not ROI columns"):
        roi_to_roi_gppi(rois, design, seeds=["insula"])


def test_seed_is_deconvolved_before_any_prewhitening(monkeypatch):
    """Pitfall: the seed must enter the deconvolution as acquired, not prewhitened.

    AR(1) prewhitening belongs to the GLM fit (it whitens the design, PPI terms included);
    whitening the seed first (y_t - rho y_{t-1}) high-passes it, and its deconvolution then
    no longer estimates the neuronal signal.
    """
    import ketflow.signal.gppi as gppi_module
    from ketflow.ppi import peb_deconvolve

    design = block_design()
    rng = np.random.default_rng(22)
    hrf = spm_canonical_hrf(TR / NT)
    neural = np.convolve(rng.standard_normal(N * NT), np.ones(32) / np.sqrt(32), "same")  # 4 s smoothing
    noise = np.zeros(N)
    for t in range(1, N):
        noise[t] = 0.6 * noise[t - 1] + 0.3 * rng.standard_normal()
    bold = convolve_microtime(neural, hrf, N, NT, design.microtime_onset)
    seed = bold / bold.std() + noise
    target = seed + rng.standard_normal(N)
    seen = []

    def spy(y, *args, **kw):
        seen.append(np.array(y))
        return peb_deconvolve(y, *args, **kw)

    monkeypatch.setattr(gppi_module, "peb_deconvolve", spy)
    roi_to_roi_gppi(pd.DataFrame({"amygdala": seed, "vmPFC": target}), design, seeds=["amygdala"],
                    noise_model="ar1")
    assert len(seen) == 1
    np.testing.assert_allclose(np.corrcoef(seen[0], seed)[0, 1], 1.0, atol=1e-12)
    whitened = seed.copy()
    whitened[1:] -= 0.6 * seed[:-1]
    assert np.corrcoef(seen[0], whitened)[0, 1] < 0.9
    # why it matters: deconvolving the whitened seed misses the neuronal signal
    x0 = design.matrix[nuisance_columns(design)].to_numpy()
    good = peb_deconvolve(seed / seed.std(), TR, x0, NT, design.microtime_onset)
    bad = peb_deconvolve(whitened / whitened.std(), TR, x0, NT, design.microtime_onset)
    r_good, r_bad = np.corrcoef(good, neural)[0, 1], np.corrcoef(bad, neural)[0, 1]
    assert r_good > 0.75 and r_good > r_bad + 0.1


def test_raw_unit_confounds_and_seed_give_positive_variances(tiny_bids):
    """ROI-to-ROI gPPI with the pipeline's raw-unit 36P design: no zero variances, no saturated z."""
    from test_signal_glm import pipeline_design

    design, x, y = pipeline_design(tiny_bids)
    rois = pd.DataFrame(y[:, :: y.shape[1] // 6][:, :6].astype(np.float64), columns=[f"roi{k}" for k in range(6)])
    raw = rois * 10 + 1600.0  # the same signals in raw-intensity-like units
    table = roi_to_roi_gppi(rois, design, contrasts={"fgn": "fearful - neutral"}, noise_model="ar1")
    assert (table["variance"] > 0).all() and table["z"].abs().max() < 10
    # units: raw-unit ROI series change the effects by their scale only through the seed/target ratio (1)
    raw_table = roi_to_roi_gppi(raw, design, contrasts={"fgn": "fearful - neutral"}, noise_model="ar1")
    np.testing.assert_allclose(raw_table["z"], table["z"], rtol=1e-6, atol=1e-8)
