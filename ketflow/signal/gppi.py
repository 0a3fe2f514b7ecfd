"""Generalized psychophysiological interaction (gPPI) designs and estimates.

McLaren, Ries, Xu & Johnson (2012), "A generalized form of context-dependent
psychophysiological interactions (gPPI): a comparison to standard approaches",
NeuroImage 61:1277-1286.  Deconvolution of the seed as Gitelman et al. (2003),
NeuroImage 19:200 (``ketflow.signal.ppi.peb_deconvolve``).

For each modelled condition ``k`` (design column, see ``ketflow.signal.design``) the
interaction term is ``PPI_k = HRF * ((u_k - mean(u_k)) * xn)`` read at the scan times,
where ``u_k`` is the condition's micro-time stimulus function and ``xn`` the seed's
neuronal signal deconvolved from its raw BOLD (before any prewhitening; the nuisance
columns of the design serve as the deconvolution's confounds; the seed is deconvolved in
units of its standard deviation, so that the fixed noise variance of the PEB model means
the same whatever the units of the series).  The gPPI design holds all
task regressors, the seed, every ``PPI_k`` and the nuisance regressors (confounds, cosine
drifts, constant), so the task activation and the seed's context-free coupling are
modelled and cannot load on the interaction terms (Di, Reynolds & Biswal 2017, Hum Brain
Mapp 38:1723-1740, "Imperfect (de)convolution may introduce spurious
psychophysiological interactions and how to avoid it").

The non-deconvolved variant forms ``PPI_k = (seed - mean) * (r_k - mean(r_k))`` with the
seed BOLD (confounds projected out) and the convolved task regressor ``r_k``: the product
of haemodynamic signals, which only approximates the neuronal interaction for slow
(block) designs.

Symmetrised ROI-to-ROI estimates average the two directions of each pair (seed a ->
target b and seed b -> target a), as CONN users do for gPPI matrices.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .design import TaskDesign, contrast_vector
from .extract import first_eigenvariate, roi_means
from .glm import ContrastResult, column_space, compute_contrast, fit_glm
from .hrf import convolve_microtime, spm_canonical_hrf
from .ppi import peb_deconvolve

__all__ = [
    "task_columns",
    "nuisance_columns",
    "ppi_terms",
    "gppi_design",
    "gppi_contrasts",
    "roi_to_roi_gppi",
    "symmetrize",
    "seed_to_voxel_gppi",
    "ppi_roi_signals",
    "ppi_matrix",
]

PPI_PREFIX = "PPI_"
SEED_COLUMN = "seed"


def task_columns(design: TaskDesign) -> list[str]:
    """Condition regressors (and their derivatives) of a task design."""
    names = []
    for col in design.columns:
        names.append(col)
        if design.derivative:
            names.append(f"{col}_derivative")
    return names


def nuisance_columns(design: TaskDesign) -> list[str]:
    """Confounds, drifts and constant of a task design."""
    task = set(task_columns(design))
    return [c for c in design.matrix.columns if c not in task]


def ppi_terms(
    seed: np.ndarray, design: TaskDesign, deconvolve: bool = True, center: bool = True
) -> pd.DataFrame:
    """Interaction regressors, one per design condition column.

    Parameters
    ----------
    seed : ndarray, shape (n_scans,)
        Seed BOLD time series (not prewhitened).
    design : TaskDesign
        Task design of the run (its nuisance columns are the deconvolution confounds).
    deconvolve : bool
        Form the interaction at the neuronal level (True) or as the product of BOLD
        signals (False, see module docstring).
    center : bool
        Mean-centre the psychological variables (always do; False only exists to show
        the bias it prevents).

    Returns
    -------
    DataFrame, shape (n_scans, n_conditions)
        Columns ``PPI_<condition column>``, index = design frame times.
    """
    y = np.asarray(seed, dtype=float).ravel()
    n = len(design.matrix)
    if y.size != n:
        raise ValueError(f"seed has {y.size} samples; the design has {n} scans")
    # Orthonormal basis of the nuisance space: with raw-unit confounds (global_signal_power2
    # ~ 1e6) next to unit-scale cosines, both a plain least-squares projection and the
    # deconvolution's "flat" prior (variance 1e6 per confound coefficient) would depend on
    # the confounds' units.
    x0 = column_space(design.matrix[nuisance_columns(design)].to_numpy())
    nt = design.microtime_resolution
    out = {}
    y_clean = y - x0 @ (x0.T @ y)
    if deconvolve:
        # SPM fixes the error variance at 1/4 of the data units (data scaled to a grand
        # mean of 100); deconvolving the seed in units of its own SD makes the result
        # scale-equivariant, whatever the units of the ROI series; the mean is removed so
        # that a large baseline does not meet the (wide but finite) confound prior.
        scale = y_clean.std() or 1.0
        xn = scale * peb_deconvolve((y - y.mean()) / scale, design.tr, x0, nt, design.microtime_onset)
        hrf = spm_canonical_hrf(design.tr / nt)
        for k, col in enumerate(design.columns):
            psy = design.microtime[:, k]
            if center:
                psy = psy - psy.mean()
            out[PPI_PREFIX + col] = convolve_microtime(psy * xn, hrf, n, nt, design.microtime_onset)
    else:
        y_clean -= y_clean.mean()
        for col in design.columns:
            psy = design.matrix[col].to_numpy()
            if center:
                psy = psy - psy.mean()
            out[PPI_PREFIX + col] = y_clean * psy
    return pd.DataFrame(out, index=design.matrix.index)


def gppi_design(
    seed: np.ndarray, design: TaskDesign, deconvolve: bool = True, center: bool = True
) -> pd.DataFrame:
    """gPPI design: task regressors, seed, interaction terms, nuisance regressors.

    Parameters
    ----------
    seed, design, deconvolve, center
        See :func:`ppi_terms`.

    Returns
    -------
    DataFrame, shape (n_scans, n_task + 1 + n_conditions + n_nuisance)
    """
    terms = ppi_terms(seed, design, deconvolve, center)
    task = design.matrix[task_columns(design)]
    seed_col = pd.DataFrame({SEED_COLUMN: np.asarray(seed, dtype=float).ravel()}, index=task.index)
    return pd.concat([task, seed_col, terms, design.matrix[nuisance_columns(design)]], axis=1)


def gppi_contrasts(
    design: TaskDesign, columns: Sequence[str], contrasts: Mapping[str, object] | None = None
) -> dict[str, np.ndarray]:
    """Contrast vectors over gPPI design columns for every condition and contrast.

    Parameters
    ----------
    design : TaskDesign
    columns : sequence of str
        Columns of the gPPI design.
    contrasts : mapping, optional
        Contrast name -> dict or expression over condition names.

    Returns
    -------
    dict
        Estimable condition names (PPI beta of that condition) and contrast names ->
        weight vector on the ``PPI_`` columns.
    """
    vectors = {
        cond: contrast_vector({cond: 1.0}, design, columns, prefix=PPI_PREFIX)
        for cond in design.members
    }
    for name, spec in (contrasts or {}).items():
        if name in vectors:
            raise ValueError(f"contrast name {name!r} duplicates a condition name")
        vectors[name] = contrast_vector(spec, design, columns, prefix=PPI_PREFIX)
    return vectors


def roi_to_roi_gppi(
    roi_signals: pd.DataFrame,
    design: TaskDesign,
    seeds: Sequence[str] | None = None,
    contrasts: Mapping[str, object] | None = None,
    deconvolve: bool = True,
    noise_model: str = "ar1",
) -> pd.DataFrame:
    """gPPI estimates for every (seed, target) pair of ROIs.

    Parameters
    ----------
    roi_signals : DataFrame, shape (n_scans, n_rois)
        ROI time series (columns = ROI names).
    design : TaskDesign
    seeds : sequence of str, optional
        Seed ROIs (default: every ROI).
    contrasts : mapping, optional
        Named contrasts over conditions.
    deconvolve : bool
    noise_model : {"ar1", "ols", "ar<p>-corrected"}

    Returns
    -------
    DataFrame
        Long table: seed, target, contrast (condition or contrast name), effect,
        variance, t, z, dof.  Seeds are not their own targets.
    """
    seeds = list(roi_signals.columns if seeds is None else seeds)
    unknown = sorted(set(seeds) - set(roi_signals.columns))
    if unknown:
        raise ValueError(f"seeds {unknown} are not ROI columns {list(roi_signals.columns)}")
    rows = []
    for seed in seeds:
        targets = [c for c in roi_signals.columns if c != seed]
        gd = gppi_design(roi_signals[seed].to_numpy(), design, deconvolve)
        fit = fit_glm(roi_signals[targets].to_numpy(dtype=float), gd.to_numpy(), noise_model)
        for name, vec in gppi_contrasts(design, gd.columns, contrasts).items():
            res = compute_contrast(fit, vec)
            for k, target in enumerate(targets):
                rows.append((seed, target, name, res.effect[k], res.variance[k], res.t[k], res.z[k], res.dof))
    return pd.DataFrame(rows, columns=["seed", "target", "contrast", "effect", "variance", "t", "z", "dof"])


def symmetrize(table: pd.DataFrame) -> pd.DataFrame:
    """Average both directions of every ROI pair estimated both ways.

    Parameters
    ----------
    table : DataFrame
        Output of :func:`roi_to_roi_gppi`.

    Returns
    -------
    DataFrame
        Columns roi_a, roi_b (in order of first appearance), contrast, effect (mean of
        a->b and b->a).  Pairs estimated in one direction only are left out.
    """
    order = {name: k for k, name in enumerate(pd.unique(table[["seed", "target"]].to_numpy().ravel()))}
    keyed = table.assign(
        roi_a=[s if order[s] < order[t] else t for s, t in zip(table["seed"], table["target"])],
        roi_b=[t if order[s] < order[t] else s for s, t in zip(table["seed"], table["target"])],
    )
    grouped = keyed.groupby(["roi_a", "roi_b", "contrast"], sort=False)["effect"]
    out = grouped.agg(["mean", "size"]).reset_index()
    out = out[out["size"] == 2].drop(columns="size").rename(columns={"mean": "effect"})
    return out.reset_index(drop=True)


def seed_to_voxel_gppi(
    voxels: np.ndarray,
    seed: np.ndarray,
    design: TaskDesign,
    contrasts: Mapping[str, object] | None = None,
    deconvolve: bool = True,
    noise_model: str = "ar1",
    smoother=None,
) -> tuple[pd.DataFrame, dict[str, ContrastResult]]:
    """Voxelwise gPPI maps for one seed.

    Parameters
    ----------
    voxels : ndarray, shape (n_scans, n_voxels)
    seed : ndarray, shape (n_scans,)
    design : TaskDesign
    contrasts : mapping, optional
    deconvolve : bool
    noise_model : {"ar1", "ols", "ar<p>-corrected"}
    smoother : callable, optional
        Spatial smoothing of the corrected autocorrelations (:func:`ketflow.signal.glm.fit_glm`).

    Returns
    -------
    design : DataFrame
        The gPPI design used.
    maps : dict
        Condition or contrast name -> ContrastResult over voxels.
    """
    gd = gppi_design(seed, design, deconvolve)
    fit = fit_glm(voxels, gd.to_numpy(), noise_model, smoother=smoother)
    return gd, {name: compute_contrast(fit, vec) for name, vec in gppi_contrasts(design, gd.columns, contrasts).items()}


def ppi_roi_signals(
    data: np.ndarray, labels: np.ndarray, names: list[str], method: str, nuisance: np.ndarray
) -> pd.DataFrame:
    """ROI signals (n_scans, n_rois) of a gPPI, from percent-scaled voxels.

    ``data`` (n_scans, n_voxels) the ROIs' voxels, ``labels`` (n_voxels,) 1..n_rois (0 =
    none), ``nuisance`` (n_scans, k) the design's nuisance columns.  ``method``: ``mean`` over
    each ROI's voxels, or its SPM-convention first ``eigenvariate`` after projecting the
    nuisance columns out of the voxels (:func:`ketflow.signal.extract.first_eigenvariate`).
    """
    if method == "mean":
        return pd.DataFrame(roi_means(data, labels, len(names)), columns=names)
    if method != "eigenvariate":
        raise ValueError(f"unknown ROI signal {method!r}; use 'mean' or 'eigenvariate'")
    q = column_space(nuisance)
    series = {}
    for k, name in enumerate(names, start=1):
        roi = np.asarray(data[:, labels == k], dtype=np.float64)
        if roi.shape[1] == 0:
            raise ValueError(f"ROI {name} has no voxels")
        series[name] = first_eigenvariate(roi - q @ (q.T @ roi))
    return pd.DataFrame(series)


def ppi_matrix(table: pd.DataFrame, contrast: str, rois: list[str], symmetric: bool) -> pd.DataFrame:
    """Seed x target matrix of one contrast's PPI effects (``Node`` column = seeds; NaN where
    not estimated), from :func:`roi_to_roi_gppi` or, when ``symmetric``, :func:`symmetrize`."""
    mat = pd.DataFrame(np.nan, index=rois, columns=rois)
    rows = table[table["contrast"] == contrast]
    if symmetric:
        for a, b, e in rows[["roi_a", "roi_b", "effect"]].itertuples(index=False):
            mat.loc[a, b] = mat.loc[b, a] = e
    else:
        for s, t, e in rows[["seed", "target", "effect"]].itertuples(index=False):
            mat.loc[s, t] = e
    return mat.rename_axis("Node").reset_index()
