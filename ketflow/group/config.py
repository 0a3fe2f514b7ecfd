"""Model configuration (a JSON-ready dict) -> :class:`~ketflow.group.predict.ModelSpec`.

Keys (all optional except ``outcome``)::

    outcome              feature-table column to predict, e.g. "caps5_total__change"
    predictors           "change" (imaging change scores, default), "baseline"
                         (imaging measures at ``baseline_session``) or a list of columns
    baseline_session     session label of "baseline" predictors (default "pre")
    predictor_pattern    regular expression the predictor columns must match (e.g. "^fc_")
    arm, arm_levels, arm_coding, include_arm, arm_interactions,
    covariates, penalise_covariates, l1_ratios, n_alphas, inner_folds, max_iter
                         as in ModelSpec (inner_folds null = leave-one-out)
    arm_subset           fit within this arm only (per-arm model; arm terms dropped)
    outer_folds, outer_repeats, n_permutations, n_bootstrap,
    n_selection_bootstrap, level, seed
                         as in :func:`ketflow.group.predict.evaluate`
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from .features import columns_with_role
from .predict import ModelSpec

__all__ = ["spec_from_config"]

_SPEC_KEYS = {"arm", "arm_levels", "arm_coding", "include_arm", "arm_interactions", "covariates",
              "penalise_covariates", "l1_ratios", "n_alphas", "inner_folds", "max_iter"}
_EVAL_KEYS = {"outer_folds", "outer_repeats", "n_permutations", "n_bootstrap",
              "n_selection_bootstrap", "level", "seed"}
_OWN_KEYS = {"outcome", "predictors", "baseline_session", "predictor_pattern", "arm_subset"}


def spec_from_config(config: Mapping, dictionary: Mapping[str, Mapping]) -> tuple[ModelSpec, dict, str | None]:
    """(ModelSpec, keyword arguments for ``evaluate``, arm to subset to or None).

    dictionary : the feature table's data dictionary (selects predictors by role).
    """
    unknown = sorted(set(config) - _SPEC_KEYS - _EVAL_KEYS - _OWN_KEYS)
    if unknown:
        raise ValueError(f"unknown model configuration key(s) {unknown}")
    if "outcome" not in config:
        raise ValueError("model configuration needs 'outcome'")
    predictors = config.get("predictors", "change")
    if predictors == "change":
        features = columns_with_role(dictionary, "imaging_change")
    elif predictors == "baseline":
        features = columns_with_role(dictionary, "imaging_session", str(config.get("baseline_session", "pre")))
    elif isinstance(predictors, list):
        missing = [c for c in predictors if c not in dictionary]
        if missing:
            raise ValueError(f"predictor column(s) {missing} are not in the feature table")
        features = list(predictors)
    else:
        raise ValueError(f"'predictors' must be 'change', 'baseline' or a list, not {predictors!r}")
    if "predictor_pattern" in config:
        pattern = re.compile(config["predictor_pattern"])
        features = [c for c in features if pattern.search(c)]
    if not features:
        raise ValueError("no predictor columns selected by the model configuration")
    kwargs = {k: config[k] for k in _SPEC_KEYS if k in config}
    for key in ("arm_levels", "covariates", "l1_ratios"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    arm_subset = config.get("arm_subset")
    spec = ModelSpec(outcome=config["outcome"], features=tuple(features), **kwargs)
    if arm_subset is not None:
        spec = dataclasses.replace(spec, include_arm=False, arm_interactions=False)
    return spec, {k: config[k] for k in _EVAL_KEYS if k in config}, arm_subset
