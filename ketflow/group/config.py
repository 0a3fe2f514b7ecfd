"""Model configuration (a JSON-ready dict) -> :class:`ModelConfig`.

Keys (all optional except ``outcome``)::

    outcome              feature-table column to predict, e.g. "caps5_total__change"
    predictors           "change" (imaging change scores, default), "baseline"
                         (imaging measures at ``baseline_session``) or a list of columns
    baseline_session     session label of "baseline" predictors (default "pre")
    measures             measure families the predictors come from, e.g. ["activation", "dcm"]
                         (default: all)
    predictor_pattern    regular expression the predictor columns must match (e.g. "^fc_")
    predictor_set        {"name": ..., "measures": [...]}: the predictors are these measures (their
                         change or baseline columns); a measure without a column is refused,
                         naming group.predictor_sets.<name>
    arm, arm_levels, arm_coding, include_arm, arm_interactions,
    covariates, penalise_covariates, l1_ratios, n_alphas, max_iter
                         as in ModelSpec
    refit_inner_folds    penalty search of the reported model (ModelSpec.inner_folds):
                         null = leave-one-out, as in the reference study
    arm_subset           fit within this arm only (per-arm model; arm terms dropped)
    min_subjects         fewest complete cases for the model to be fitted (default 6)
    inner_folds, outer_folds, outer_repeats, n_permutations,
    n_bootstrap, n_selection_bootstrap, level, seed
                         as in :func:`ketflow.group.predict.evaluate`

Predictor columns the data dictionary marks ``excluded_from_models`` (too often missing)
are never selected by "change"/"baseline"; an explicit list may name them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass

from .features import change_column, columns_with_role, measure_family, session_column
from .predict import ModelSpec

__all__ = ["ModelConfig", "NoPredictorsError", "spec_from_config", "DEFAULT_MIN_SUBJECTS"]

#: Fewest complete cases a model needs unless its configuration says otherwise.
DEFAULT_MIN_SUBJECTS = 6

_SPEC_KEYS = {"arm", "arm_levels", "arm_coding", "include_arm", "arm_interactions", "covariates",
              "penalise_covariates", "l1_ratios", "n_alphas", "max_iter"}
_EVAL_KEYS = {"inner_folds", "outer_folds", "outer_repeats", "n_permutations",
              "n_bootstrap", "n_selection_bootstrap", "level", "seed"}
_OWN_KEYS = {"outcome", "predictors", "baseline_session", "measures", "predictor_pattern", "arm_subset",
             "refit_inner_folds", "min_subjects", "predictor_set"}


class NoPredictorsError(ValueError):
    """The configuration selects no predictor column of this feature table."""


@dataclass(frozen=True)
class ModelConfig:
    """A parsed model configuration.

    spec : the model; evaluate_kwargs : keyword arguments of ``evaluate``;
    arm_subset : arm to fit within (per-arm model) or None; min_subjects : fewest complete cases;
    predictor_set : name of the configured predictor set (group.predictor_sets) or None.
    """

    spec: ModelSpec
    evaluate_kwargs: dict
    arm_subset: str | None
    min_subjects: int
    predictor_set: str | None = None

    @property
    def columns(self) -> list[str]:
        """Every feature-table column the model reads (outcome, predictors, arm, covariates)."""
        spec = self.spec
        arm = [spec.arm] if spec.arm is not None and (spec.uses_arm or self.arm_subset is not None) else []
        return list(dict.fromkeys([spec.outcome, *spec.features, *arm, *spec.covariates]))


def _set_columns(config: Mapping, dictionary: Mapping[str, Mapping]) -> list[str]:
    """The feature-table columns of a named predictor set; a measure without one is refused."""
    named = config["predictor_set"]
    predictors = config.get("predictors", "change")
    baseline = str(config.get("baseline_session", "pre"))
    columns = [change_column(m) if predictors == "change" else session_column(m, baseline) for m in named["measures"]]
    absent = [m for m, c in zip(named["measures"], columns) if c not in dictionary]
    if absent:
        raise NoPredictorsError(f"group.predictor_sets.{named['name']}: measure(s) {absent} were not produced "
                                "by the participant level (no such column in the feature table)")
    return columns


def _predictors(config: Mapping, dictionary: Mapping[str, Mapping]) -> list[str]:
    predictors = config.get("predictors", "change")
    if config.get("predictor_set") and predictors in ("change", "baseline"):
        features = _set_columns(config, dictionary)
    elif predictors == "change":
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
    if config.get("measures") is not None:
        families = set(config["measures"])
        features = [c for c in features if dictionary[c].get("family", measure_family(c)) in families]
    if config.get("predictor_pattern"):
        pattern = re.compile(config["predictor_pattern"])
        features = [c for c in features if pattern.search(c)]
    if not features:
        dropped = [c for c, m in dictionary.items() if m.get("excluded_from_models")]
        raise NoPredictorsError(
            f"no predictor column selected (predictors {predictors!r}, measures {config.get('measures')}, "
            f"pattern {config.get('predictor_pattern')!r})"
            + (f"; {len(dropped)} imaging column(s) are too often missing to be used" if dropped else ""))
    return features


def spec_from_config(config: Mapping, dictionary: Mapping[str, Mapping]) -> ModelConfig:
    """Parse a model configuration against a feature table's data dictionary.

    Raises ValueError on unknown keys or columns, :class:`NoPredictorsError` when no
    predictor column is selected.
    """
    unknown = sorted(set(config) - _SPEC_KEYS - _EVAL_KEYS - _OWN_KEYS)
    if unknown:
        raise ValueError(f"unknown model configuration key(s) {unknown}")
    if "outcome" not in config:
        raise ValueError("model configuration needs 'outcome'")
    if config["outcome"] not in dictionary:
        raise ValueError(f"outcome column {config['outcome']!r} is not in the feature table")
    kwargs = {k: config[k] for k in _SPEC_KEYS if k in config}
    for key in ("arm_levels", "covariates", "l1_ratios"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    if "refit_inner_folds" in config:
        kwargs["inner_folds"] = config["refit_inner_folds"]
    spec = ModelSpec(outcome=config["outcome"], features=tuple(_predictors(config, dictionary)), **kwargs)
    arm_subset = config.get("arm_subset")
    if arm_subset is not None:
        if spec.arm is None:
            raise ValueError("'arm_subset' needs 'arm' (the arm column) in the configuration")
        spec = dataclasses.replace(spec, include_arm=False, arm_interactions=False)
    min_subjects = int(config.get("min_subjects", DEFAULT_MIN_SUBJECTS))
    return ModelConfig(spec=spec, evaluate_kwargs={k: config[k] for k in _EVAL_KEYS if k in config},
                       arm_subset=None if arm_subset is None else str(arm_subset), min_subjects=min_subjects,
                       predictor_set=(config.get("predictor_set") or {}).get("name"))
