"""Tables of a fitted PEB analysis: every effect, the named contrasts and the family comparison.

:func:`analyse_peb` runs the second-level reduction (:func:`ketflow.dcm.peb_reduce.reduce_peb`),
the family comparison (:func:`ketflow.dcm.peb_reduce.compare_peb_models`) and the contrasts of
an analysis specification, and returns tidy tables (one row per effect × parameter, per contrast,
per family and per model). Contrasts and families name effects and parameters
(:class:`ketflow.dcm.peb_effects.EffectGrid`); :func:`check_specification` validates those names
before anything is fitted, with the configuration key in the message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm

from ketflow.dcm.peb import PEBResult
from ketflow.dcm.peb_effects import EffectGrid
from ketflow.dcm.peb_reduce import PEBReduction, compare_peb_models, contrast_posterior, reduce_peb

__all__ = ["PEBTables", "analyse_peb", "check_specification", "Z90"]

#: Half-width of a 90% interval in posterior SDs.
Z90 = float(norm.ppf(0.95))


@dataclass(frozen=True)
class PEBTables:
    """parameters, contrasts, families, models : DataFrames (see :func:`analyse_peb`);
    reduction : the second-level BMR/BMA."""

    parameters: pd.DataFrame
    contrasts: pd.DataFrame
    families: pd.DataFrame
    models: pd.DataFrame
    reduction: PEBReduction


def check_specification(grid: EffectGrid, contrasts: Sequence[dict], families: Sequence[dict], key: str = "peb") -> None:
    """ValueError naming ``key.contrasts[<name>]`` / ``key.families[<name>]`` for the first effect or
    parameter that ``grid`` does not have. contrasts: dicts with name, weights; families: name,
    parameters, effects (None: all)."""
    for c in contrasts:
        grid.weights(c["weights"], where=f"{key}.contrasts[{c['name']}]")
    for f in families:
        grid.mask(f["parameters"], f.get("effects"), where=f"{key}.families[{f['name']}]")


def _sign_probability(mean: float, sd: float, expect: str) -> float:
    p_pos = float(norm.cdf(mean / sd)) if sd > 0 else float(mean > 0)
    return p_pos if expect == "positive" else 1.0 - p_pos


def analyse_peb(peb: PEBResult, grid: EffectGrid, *, greedy: str = "spm", contrasts: Sequence[dict] = (),
                families: Sequence[dict] = ()) -> PEBTables:
    """Reduce the PEB and tabulate it.

    parameters: effect, parameter, posterior_mean, posterior_sd, ci90_low, ci90_high,
    p_positive (posterior probability of a positive effect), Pp (posterior probability that the
    effect is present, from BMR), bma_mean, bma_sd — one row per entry of the PEB, effects in
    the grid's order. contrasts: name, description, expect, mean, sd, ci90_low, ci90_high,
    p_expected (posterior probability of the expected sign), bma_mean, bma_sd, bma_p_expected.
    families: family, p_with, p_without. models: model, log_evidence (relative to the full
    PEB), posterior.
    """
    if peb.Ep.shape != grid.shape:
        raise ValueError(f"the PEB's effects {peb.Ep.shape} do not match the grid {grid.shape}")
    reduction = reduce_peb(peb, greedy=greedy)
    mean, sd = peb.Ep.ravel(), peb.Ep_sd.ravel()
    bma_mean, bma_sd = reduction.Ep.ravel(), reduction.Ep_sd.ravel()
    labels = grid.labels()
    parameters = pd.DataFrame({
        "effect": [e for e, _ in labels], "parameter": [p for _, p in labels],
        "posterior_mean": mean, "posterior_sd": sd, "ci90_low": mean - Z90 * sd, "ci90_high": mean + Z90 * sd,
        "p_positive": norm.cdf(mean / np.where(sd > 0, sd, np.inf)), "Pp": reduction.Pp.ravel(),
        "bma_mean": bma_mean, "bma_sd": bma_sd})
    rows = []
    for c in contrasts:
        w = grid.weights(c["weights"], where=f"contrast {c['name']}")
        full = contrast_posterior(peb.Ep, peb.Cp, w)
        bma = contrast_posterior(reduction.Ep, reduction.Cp, w)
        expect = c.get("expect", "positive")
        rows.append({"name": c["name"], "description": c.get("description", ""), "expect": expect,
                     "mean": full["mean"], "sd": full["sd"], "ci90_low": full["mean"] - Z90 * full["sd"],
                     "ci90_high": full["mean"] + Z90 * full["sd"],
                     "p_expected": _sign_probability(full["mean"], full["sd"], expect),
                     "bma_mean": bma["mean"], "bma_sd": bma["sd"],
                     "bma_p_expected": _sign_probability(bma["mean"], bma["sd"], expect)})
    contrast_table = pd.DataFrame(rows, columns=["name", "description", "expect", "mean", "sd", "ci90_low",
                                                 "ci90_high", "p_expected", "bma_mean", "bma_sd", "bma_p_expected"])
    family_table = pd.DataFrame(columns=["family", "p_with", "p_without"])
    model_table = pd.DataFrame(columns=["model", "log_evidence", "posterior"])
    if families:
        factors = {f["name"]: grid.mask(f["parameters"], f.get("effects"), where=f"family {f['name']}")
                   for f in families}
        space = compare_peb_models(peb, factors)
        family_table = pd.DataFrame([{"family": n, "p_with": v["with"], "p_without": v["without"]}
                                     for n, v in space.families.items()])
        model_table = pd.DataFrame({"model": space.models, "log_evidence": space.log_evidence,
                                    "posterior": space.posterior})
    return PEBTables(parameters=parameters, contrasts=contrast_table, families=family_table, models=model_table,
                     reduction=reduction)
