"""Analysis configuration: loading, validation and the packaged default.

The analysis configuration is a YAML or JSON file (the packaged default is
``ketflow/data/default_config.yml``) that names the circuit ROIs, the tasks with their
conditions and contrasts, the denoising strategy, the measures to compute and the group
models.  It is validated once, on load, with pydantic; every error message names the file
and the offending key.

Cross-references are checked too: PPI seeds, connectivity seeds and DCM regions must be
circuit ROIs; contrasts and DCM inputs must name conditions of their task.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .signal.denoise import MIN_DOF, MIN_VOLUMES
from .signal.glm import AUTOCORRELATION_FWHM_MM
from .signal.roi_quality import DROPOUT_FRACTION, MAX_DROPOUT_FRACTION
from .signal.rois import GM_THRESHOLD, MIN_VOXELS

DEFAULT_CONFIG = "default_config.yml"
DEFAULT_SPHERES = "rois/circuit_spheres.tsv"


class ConfigError(ValueError):
    """The analysis configuration is unreadable or invalid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Sessions(_Strict):
    baseline: str = "pre"
    followup: str = "post"

    @model_validator(mode="after")
    def _distinct(self):
        if self.baseline == self.followup:
            raise ValueError("sessions.baseline and sessions.followup must differ")
        return self


class Clinical(_Strict):
    arm_column: str = "group"
    arms: list[str] = Field(default_factory=lambda: ["ketamine", "midazolam"], min_length=1)
    scores: list[str] = Field(default_factory=lambda: ["caps5_total", "madrs_total"], min_length=1)
    outcome: str = "caps5_total"
    covariates: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _outcome_is_a_score(self):
        if self.outcome not in self.scores:
            raise ValueError(f"clinical.outcome {self.outcome!r} is not one of clinical.scores {self.scores}")
        return self


class Sphere(_Strict):
    """A spherical ROI in MNI152NLin2009cAsym world coordinates (mm)."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    x: float
    y: float
    z: float
    radius_mm: float = Field(gt=0)
    hemisphere: str | None = None
    description: str | None = None
    source: str | None = None


class Atlas(_Strict):
    """A user atlas: an integer label image and a TSV with ``index`` and ``name`` columns."""

    dseg: Path
    labels: Path


class Coverage(_Strict):
    """When an ROI is excluded from a run (``ketflow.signal.roi_quality``, docs/rois.md): fewer
    than ``circuit.min_voxels`` voxels after the brain mask and grey matter, or more than
    ``max_dropout_fraction`` of its voxels in dropout (temporal mean below ``dropout_fraction``
    x the brain's median); null disables the dropout rule."""

    dropout_fraction: float = Field(default=DROPOUT_FRACTION, gt=0, lt=1)
    max_dropout_fraction: float | None = Field(default=MAX_DROPOUT_FRACTION, ge=0, le=1)


class Circuit(_Strict):
    name: str = Field(default="circuit", pattern=r"^[A-Za-z0-9]+$")
    # anatomical: the packaged atlas (tpl-MNI152NLin2009cAsym_atlas-circuit_dseg, docs/rois.md);
    # spheres: the sphere table; atlas: the user atlas of `atlas` (inferred when only `atlas` is given)
    rois: Literal["anatomical", "spheres", "atlas"] = "anatomical"
    spheres_file: Path | None = None
    spheres: list[Sphere] = Field(default_factory=list)
    atlas: Atlas | None = None
    # anatomical ROIs: voxels whose grey-matter probability exceeds this (fMRIPrep's GM probseg in
    # the output space, else the template's); null: no grey-matter restriction
    grey_matter_threshold: float | None = Field(default=GM_THRESHOLD, ge=0, lt=1)
    min_voxels: int = Field(default=MIN_VOXELS, ge=1)
    coverage: Coverage = Field(default_factory=Coverage)
    signal: Literal["mean", "eigenvariate"] = "mean"

    @model_validator(mode="before")
    @classmethod
    def _atlas_implies_atlas_rois(cls, data):
        if isinstance(data, dict) and data.get("atlas") is not None and "rois" not in data:
            data = {**data, "rois": "atlas"}
        return data

    @model_validator(mode="after")
    def _rois_source_given(self):
        if self.rois == "atlas" and self.atlas is None:
            raise ValueError("circuit.rois is 'atlas' but circuit.atlas (dseg, labels) is not given")
        if self.rois != "atlas" and self.atlas is not None:
            raise ValueError(f"circuit.atlas is given but circuit.rois is {self.rois!r}; set circuit.rois: atlas "
                             "(or leave it out) to use the atlas")
        return self


class ExtraAtlas(_Strict):
    """An atlas measured beside the circuit in every run (``atlases``; ``--atlases``): ROI time
    series, their QC and connectivity matrices named ``atlas-<label>`` (docs/rois.md).

    Give one of ``dataset`` (a BEP038 atlas dataset holding ``tpl-<space>_atlas-<label>[_res-<N>]
    _dseg.nii.gz`` + ``.tsv``; the atlas is resampled onto each run's grid, whose space must be
    ``<space>``) or ``dseg`` (+ ``labels``, default the dseg's ``.tsv``: an atlas on the runs'
    own grid); neither for a packaged atlas (``circuit``: the anatomical circuit atlas).
    """

    label: str = Field(pattern=r"^[A-Za-z0-9]+$")
    dataset: Path | None = None
    dseg: Path | None = None
    labels: Path | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if self.dataset is not None and self.dseg is not None:
            raise ValueError(f"atlas {self.label!r}: give a dataset or a dseg, not both")
        if self.labels is not None and self.dseg is None:
            raise ValueError(f"atlas {self.label!r}: labels needs dseg")
        if self.dataset is None and self.dseg is None and self.label not in PACKAGED_ATLASES:
            raise ValueError(f"atlas {self.label!r}: not a packaged atlas ({sorted(PACKAGED_ATLASES)}); give its "
                             "BEP038 dataset (dataset) or its dseg and labels")
        return self


#: Atlases shipped with ketflow, by label (BEP038 layout under ``ketflow/data``).
PACKAGED_ATLASES = {"circuit": "rois"}


def parse_atlas_option(entry: str) -> ExtraAtlas:
    """One ``--atlases`` entry: ``LABEL`` (a packaged atlas) or ``LABEL=PATH``, PATH a BEP038 atlas
    dataset folder or a ``*_dseg.nii.gz`` on the runs' grid (its ``.tsv`` beside it)."""
    label, _, path = entry.partition("=")
    try:
        if not path:
            return ExtraAtlas(label=label)
        source = Path(path).expanduser().resolve()
        return ExtraAtlas(label=label, **({"dataset": source} if source.is_dir() else {"dseg": source}))
    except ValidationError as err:
        raise ConfigError(f"--atlases {entry}: {_first_error(err)}") from err


class Denoising(_Strict):
    strategy: Literal["24P", "36P", "aCompCor"] = "36P"
    #: Confounds of the task models (activation GLM, gPPI, beta series, DCM); None: ``strategy``.
    #: ``strategy`` stays that of the denoised ROI signals and connectivity (rest runs).  aCompCor:
    #: no global signal in task models (docs/denoising_connectivity.md, "Task-model denoising").
    task_strategy: Literal["24P", "36P", "aCompCor"] | None = "aCompCor"
    fd_threshold: float | None = Field(default=0.5, gt=0)
    min_contiguous: int = Field(default=5, ge=1)
    high_pass_s: float | None = Field(default=128, gt=0)
    band_pass_rest: tuple[float, float] | None = None
    min_volumes: int = Field(default=MIN_VOLUMES, ge=2)
    min_dof: int = Field(default=MIN_DOF, ge=1)
    #: Least usable data after censoring, in seconds (XCP-D's ``--min-time``); None: volumes only.
    min_time_s: float | None = Field(default=None, ge=0)

    def required_volumes(self, tr: float) -> int:
        """Volumes a run of repetition time ``tr`` (s) must keep: ``min_volumes``, or more to
        cover ``min_time_s`` seconds."""
        from_time = math.ceil(self.min_time_s / tr - 1e-9) if self.min_time_s else 0
        return max(self.min_volumes, from_time)

    def for_task_models(self) -> Denoising:
        """These settings with ``task_strategy`` as the strategy: what the task models' confound
        regressors (activation, gPPI, beta series, DCM) are selected with."""
        return self.model_copy(update={"strategy": self.task_strategy or self.strategy})

    @field_validator("band_pass_rest")
    @classmethod
    def _ordered_band(cls, band):
        if band is not None and not 0 < band[0] < band[1]:
            raise ValueError(f"band_pass_rest must be [low, high] in Hz with 0 < low < high, got {list(band)}")
        return band


class DerivedCondition(_Strict):
    """A condition defined by trial history, e.g. incongruent after incongruent (Etkin 2006)."""

    name: str
    trial_type: str | list[str]
    previous: str | list[str] | None = None

    def trial_types(self) -> list[str]:
        return _as_list(self.trial_type) + _as_list(self.previous)


class Task(_Strict):
    type: Literal["task", "rest"] = "task"
    conditions: list[str] = Field(default_factory=list)
    derived_conditions: list[DerivedCondition] = Field(default_factory=list)
    contrasts: dict[str, dict[str, float]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self):
        if self.type == "task" and not self.conditions:
            raise ValueError("a task needs at least one condition")
        if self.type == "rest" and (self.conditions or self.contrasts):
            raise ValueError("a rest task has no conditions or contrasts")
        for derived in self.derived_conditions:
            unknown = sorted(set(derived.trial_types()) - set(self.conditions))
            if unknown:
                raise ValueError(f"derived condition {derived.name!r} uses unknown trial types {unknown}")
        known = self.all_conditions()
        for contrast, weights in self.contrasts.items():
            unknown = sorted(set(weights) - set(known))
            if unknown:
                raise ValueError(f"contrast {contrast!r} names unknown conditions {unknown}; known: {known}")
        return self

    def all_conditions(self) -> list[str]:
        """Conditions from trial types followed by derived conditions."""
        return list(self.conditions) + [d.name for d in self.derived_conditions]

    def contrasts_by_name(self) -> dict[str, dict[str, float]]:
        """The contrasts in name order, each one's weights in condition-name order: the order in
        which the models estimate them and their outputs list them (that of the recorded
        configuration, ``logs/config.json``, whose keys are sorted)."""
        return {name: dict(sorted(weights.items())) for name, weights in sorted(self.contrasts.items())}


class GLM(_Strict):
    hrf: Literal["spm", "spm+derivative"] = "spm"
    # ar1: nilearn's AR(1); arN-corrected: bias-corrected AR(N), autocorrelations smoothed with
    # autocorrelation_fwhm_mm in voxelwise fits (Worsley et al. 2002; docs/glm_ppi.md, "Calibration")
    noise_model: Literal["ar1-corrected", "ar2-corrected", "ar3-corrected", "ar1", "ols"] = "ar1-corrected"
    autocorrelation_fwhm_mm: float = Field(default=AUTOCORRELATION_FWHM_MM, gt=0)
    high_pass_s: float = Field(default=128, gt=0)
    # pooling of a session's run-level ROI estimates (activation, gPPI): precision (inverse-variance
    # fixed effects) | equal (equal-weight mean)
    run_pooling: Literal["precision", "equal"] = "precision"


class PPI(_Strict):
    tasks: list[str] = Field(default_factory=list)
    seeds: list[str] = Field(default_factory=list)
    deconvolve: bool = True
    symmetrize: bool = False


class BetaSeries(_Strict):
    """Beta-series connectivity of event-related tasks (:mod:`ketflow.signal.betaseries`):
    least-squares-separate single-trial estimates of every circuit ROI, their correlation
    matrix per condition and the task's contrasts over the conditions' Fisher z matrices."""

    tasks: list[str] = Field(default_factory=list)
    min_trials: int = Field(default=6, ge=3)
    #: trials whose estimate is more than this many times as variable as the run's typical trial's
    #: (regressor mostly removed by the censoring spikes) are left out (ketflow.signal.betaseries)
    max_variance_inflation: float = Field(default=4.0, gt=1)


class Connectivity(_Strict):
    tasks: list[str] = Field(default_factory=lambda: ["rest"])
    measures: list[Literal["pearson", "fisher_z", "partial", "ledoit_wolf"]] = Field(
        default_factory=lambda: ["pearson", "fisher_z", "partial", "ledoit_wolf"]
    )
    seed_to_voxel: bool = True
    seeds: list[str] = Field(default_factory=list)


class DCMModel(_Strict):
    """A nested model of the DCM: masks given here replace the full model's (b/c/d per input/region)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    a: list[list[int]] | None = None
    b: dict[str, list[list[int]]] | None = None
    c: dict[str, list[int]] | None = None
    d: dict[str, list[list[int]]] | None = None


class DCMOptionsConfig(_Strict):
    """Inversion options: see ``ketflow.dcm.spec.DCMOptions``. SPM12's priors and defaults except
    for the noise model, chosen for calibrated credible intervals (docs/dcm.md, "Noise model"):
    serially correlated noise (``noise: ar1``), a weak hyperprior on the noise log-precision
    (``hC: 1`` instead of 1/128) and noise log-precisions optimised to convergence in each
    iteration (``m_step: newton``). ``{noise: iid, hC: 0.0078125, m_step: fisher}`` is SPM12
    exactly."""

    centre: bool = False
    hE: float = 6.0
    hC: float = Field(default=1.0, gt=0)
    maxit: int = Field(default=128, ge=1)
    maxnodes: int = Field(default=8, ge=1)
    m_step: Literal["fisher", "newton"] = "newton"
    noise: Literal["iid", "ar1"] = "ar1"


def _check_mask(label: str, matrix, n: int, regions) -> None:
    if len(matrix) != n or any(len(row) != n for row in matrix):
        raise ValueError(f"dcm.{label} must be {n}x{n} (regions {regions})")
    if any(v not in (0, 1) for row in matrix for v in row):
        raise ValueError(f"dcm.{label} entries must be 0 or 1")


class DCM(_Strict):
    task: str = "faces"
    regions: list[str] = Field(default_factory=lambda: ["vmPFC", "amygdala_L"], min_length=1)
    inputs: dict[str, list[str]] = Field(default_factory=dict)
    a: list[list[int]] | None = None
    b: dict[str, list[list[int]]] = Field(default_factory=dict)
    c: dict[str, list[int]] = Field(default_factory=dict)
    d: dict[str, list[list[int]]] = Field(default_factory=dict)
    delays: list[float] | None = None
    options: DCMOptionsConfig = Field(default_factory=DCMOptionsConfig)
    model_space: list[DCMModel] = Field(default_factory=list)

    def full_masks(self) -> dict:
        """Masks of the full model: a (n x n), b {input: n x n}, c {input: n}, d {region: n x n}."""
        n = len(self.regions)
        zeros = [[0] * n for _ in range(n)]
        return {"a": self.a or [[1] * n for _ in range(n)],
                "b": {name: self.b.get(name, zeros) for name in self.inputs},
                "c": {name: self.c.get(name, [0] * n) for name in self.inputs},
                "d": {name: self.d[name] for name in self.regions if name in self.d}}

    def model_layout(self) -> dict:
        """The model as the DCM fit reads it (``ketflow.dcm.spec.build_spec``), also its sidecar's ``Model``.

        Masks are [to][from]; b is [input][to][from], c [to][input], d [region][to][from] (all
        regions when any is given); ``model_space`` maps each nested model's name to its masks
        in the same layout (masks a model does not give are the full model's), in name order.
        """
        n = len(self.regions)
        inputs = list(self.inputs)
        zeros = [[0] * n for _ in range(n)]

        def layout(a, b, c, d):
            out = {"a": a, "b": [b[name] for name in inputs],
                   "c": [[c[name][region] for name in inputs] for region in range(n)]}
            if d:
                out["d"] = [d.get(name, zeros) for name in self.regions]
            return out

        full = self.full_masks()
        model = {"regions": self.regions, "inputs": self.inputs, **layout(**full),
                 "delays": self.delays if self.delays is not None else [0.0] * n,
                 "options": self.options.model_dump()}
        if self.model_space:
            model["model_space"] = {
                m.name: layout(m.a or full["a"], {**full["b"], **(m.b or {})}, {**full["c"], **(m.c or {})},
                               {**full["d"], **(m.d or {})} if (full["d"] or m.d) else {})
                for m in sorted(self.model_space, key=lambda m: m.name)}
            if not full["d"]:  # a nested model cannot add nonlinear terms
                for masks in model["model_space"].values():
                    masks.pop("d", None)
        return model

    @model_validator(mode="after")
    def _shapes(self):
        n = len(self.regions)
        if len(set(self.regions)) != n:
            raise ValueError(f"dcm.regions has duplicates: {self.regions}")
        if self.a is not None:
            _check_mask("a", self.a, n, self.regions)
        for k, v in self.b.items():
            _check_mask(f"b.{k}", v, n, self.regions)
        for k, v in self.d.items():
            _check_mask(f"d.{k}", v, n, self.regions)
        for key, row in self.c.items():
            if len(row) != n:
                raise ValueError(f"dcm.c.{key} must have {n} entries (regions {self.regions})")
        unknown = sorted((set(self.b) | set(self.c)) - set(self.inputs))
        if unknown:
            raise ValueError(f"dcm.b/dcm.c name inputs {unknown} that are not in dcm.inputs {sorted(self.inputs)}")
        unknown = sorted(set(self.d) - set(self.regions))
        if unknown:
            raise ValueError(f"dcm.d names regions {unknown} that are not in dcm.regions {self.regions}")
        if self.delays is not None and (len(self.delays) != n or any(d < 0 for d in self.delays)):
            raise ValueError(f"dcm.delays must list {n} non-negative delays (s), one per region {self.regions}")
        self._check_model_space()
        return self

    def _check_model_space(self) -> None:
        full = self.full_masks()
        n = len(self.regions)
        names = [m.name for m in self.model_space]
        if len(set(names)) != len(names) or "full" in names:
            raise ValueError(f"dcm.model_space names must be unique and not 'full': {names}")
        for model in self.model_space:
            where = f"model_space.{model.name}"
            if model.a is not None:
                _check_mask(f"{where}.a", model.a, n, self.regions)
                self._nested(where + ".a", model.a, full["a"], off_diagonal=True)
            for field in ("b", "c", "d"):
                given = getattr(model, field) or {}
                known = self.regions if field == "d" else list(self.inputs)
                unknown = sorted(set(given) - set(known))
                if unknown:
                    raise ValueError(f"dcm.{where}.{field} names {unknown}, not among {known}")
                for key, mask in given.items():
                    if field == "c":
                        if len(mask) != n:
                            raise ValueError(f"dcm.{where}.c.{key} must have {n} entries")
                        self._nested(f"{where}.c.{key}", [mask], [full["c"][key]])
                    else:
                        _check_mask(f"{where}.{field}.{key}", mask, n, self.regions)
                        self._nested(f"{where}.{field}.{key}", mask, full[field].get(key, [[0] * n] * n))

    @staticmethod
    def _nested(label, mask, full, off_diagonal=False) -> None:
        extra = [(i, j) for i, row in enumerate(mask) for j, v in enumerate(row)
                 if v and not full[i][j] and not (off_diagonal and i == j)]
        if extra:
            raise ValueError(f"dcm.{label} switches on entries {extra} that the full model has off; "
                             "a model-space entry may only switch connections off (it is scored by reduction "
                             "of the full model)")


class Measures(_Strict):
    timeseries: bool = True
    activation: bool = True
    ppi: bool = True
    connectivity: bool = True
    dcm: bool = True
    beta_series: bool = True


#: The reference study's a-priori measures (Norbury et al. 2021): vmPFC-amygdala gPPI during face
#: viewing, dACC activation during emotional-conflict regulation, resting vmPFC-anterior insula
#: coupling, and the DCM parameters between vmPFC and amygdala (measure names of ketflow/io/collect.py).
APRIORI_MEASURES = [
    "ppi_faces_faces-gt-shapes_amygdala_L-to-vmPFC", "ppi_faces_faces-gt-shapes_vmPFC-to-amygdala_L",
    "ppi_faces_fearful-gt-neutral_amygdala_L-to-vmPFC", "ppi_faces_fearful-gt-neutral_vmPFC-to-amygdala_L",
    "activation_conflict_iI-gt-cI_dACC", "activation_conflict_incongruent-gt-congruent_dACC",
    "fc_rest_vmPFC-antInsula_L", "fc_rest_vmPFC-antInsula_R",
    "dcm_faces_A_amygdala_L-to-vmPFC", "dcm_faces_A_vmPFC-to-amygdala_L", "dcm_faces_B_amygdala_L-to-vmPFC_fearful",
]


class GroupModel(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9-]+$")
    predictors: Literal["change", "baseline"] = "change"
    predictor_set: str | None = None
    measures: list[Literal["activation", "ppi", "fc", "dcm", "betaseries"]] | None = Field(default=None,
                                                                                         min_length=1)
    predictor_pattern: str | None = None
    interaction: bool = False
    covariates: list[str] = Field(default_factory=list)
    per_arm: bool = False

    @field_validator("predictor_pattern")
    @classmethod
    def _valid_regex(cls, pattern):
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"predictor_pattern {pattern!r} is not a valid regular expression ({err})") from err
        return pattern

    @model_validator(mode="after")
    def _per_arm_has_no_arm_terms(self):
        if self.per_arm and self.interaction:
            raise ValueError(f"model {self.name!r}: a per_arm model is fitted within each arm and has no "
                             "arm interaction; set interaction: false")
        return self


#: Map families and designs of the voxelwise second level (``group.voxelwise``).
VOXELWISE_MAPS = ("activation", "gppi", "fc")
VOXELWISE_DESIGNS = ("one_sample", "paired_change", "arm_by_change")


class Voxelwise(_Strict):
    """Voxelwise second-level maps (``group.voxelwise``; docs/group.md, "Voxelwise second level").

    ``maps``, ``contrasts`` and ``seeds`` are checked against the configuration and the
    participant-level outputs when the group level plans its analyses: one that names nothing
    is refused there (listed with the reason) while the other analyses run.
    """

    enabled: bool = True
    maps: list[str] = Field(default_factory=lambda: list(VOXELWISE_MAPS))
    designs: list[Literal["one_sample", "paired_change", "arm_by_change"]] = Field(
        default_factory=lambda: list(VOXELWISE_DESIGNS), min_length=1)
    contrasts: dict[str, list[str]] | None = None
    seeds: list[str] | None = None
    smoothing_fwhm: float = Field(default=6.0, ge=0)
    n_permutations: int = Field(default=5000, ge=1)
    tfce: bool = True
    cluster_forming_p: float | None = Field(default=0.001, gt=0, lt=1)
    two_sided: bool = True
    small_volume: bool = True
    alpha: float = Field(default=0.05, gt=0, lt=1)
    min_subjects: int = Field(default=6, ge=3)
    min_per_arm: int = Field(default=3, ge=2)
    seed: int = 0

#: Measure families of the group level (the text before the first ``_`` of a measure name).
MEASURE_FAMILIES = ("activation", "ppi", "fc", "dcm", "betaseries")
_Family = Literal["activation", "ppi", "fc", "dcm", "betaseries"]


class Inference(_Strict):
    """Trial inference on every circuit measure (``ketflow.group.inference``, docs/group.md):
    arm x session, within-arm change and baseline difference per measure by ANCOVA and a linear
    mixed model, with FDR and max-statistic permutation FWE over each family's a-priori measures."""

    enabled: bool = True
    families: list[_Family] = Field(default_factory=lambda: list(MEASURE_FAMILIES), min_length=1)
    models: list[Literal["ancova", "lmm"]] = Field(default_factory=lambda: ["ancova", "lmm"], min_length=1)
    apriori: dict[_Family, list[str]] = Field(default_factory=dict)
    covariates: list[str] | None = None
    min_per_arm: int = Field(default=3, ge=2)
    n_permutations: int = Field(default=5000, ge=0)
    fdr_level: float = Field(default=0.05, gt=0, lt=1)
    fwe_level: float = Field(default=0.05, gt=0, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self):
        for key, items in (("families", self.families), ("models", self.models)):
            if len(set(items)) != len(items):
                raise ValueError(f"inference.{key} has duplicates: {items}")
        for family, names in self.apriori.items():
            if family not in self.families:
                raise ValueError(f"inference.apriori.{family}: family {family!r} is not in inference.families "
                                 f"{self.families}")
            if not names:
                raise ValueError(f"inference.apriori.{family} is empty; leave the family out to use all its "
                                 "measures")
            foreign = [n for n in names if not n.startswith(f"{family}_")]
            if foreign:
                raise ValueError(f"inference.apriori.{family} names {foreign}, which are not {family}_* measures")
        return self


class Group(_Strict):
    models: list[GroupModel] = Field(default_factory=lambda: [GroupModel(name="change", predictor_set="apriori")],
                                     min_length=1)
    predictor_sets: dict[str, list[str]] = Field(default_factory=lambda: {"apriori": list(APRIORI_MEASURES)})
    l1_ratios: list[float] = Field(default_factory=lambda: [0.1, 0.5, 0.9, 1.0], min_length=1)
    n_alphas: int = Field(default=100, ge=2)
    refit_inner_folds: int | None = Field(default=None, ge=2)
    inner_folds: int | None = Field(default=5, ge=2)
    outer_folds: int | None = Field(default=10, ge=2)
    outer_repeats: int = Field(default=1, ge=1)
    n_permutations: int = Field(default=1000, ge=0)
    n_bootstrap: int = Field(default=1000, ge=0)
    max_missing_fraction: float = Field(default=0.25, ge=0, le=1)
    min_subjects: int = Field(default=6, ge=4)
    seed: int = 0
    voxelwise: Voxelwise = Field(default_factory=Voxelwise)
    inference: Inference = Field(default_factory=Inference)

    @field_validator("l1_ratios")
    @classmethod
    def _ratios_in_range(cls, ratios):
        bad = [r for r in ratios if not 0 < r <= 1]
        if bad:
            raise ValueError(f"l1_ratios must lie in (0, 1], got {bad}")
        return ratios

    @model_validator(mode="after")
    def _consistent(self):
        if self.outer_repeats > 1 and self.outer_folds is None:
            raise ValueError("outer_repeats > 1 needs outer_folds (leave-one-out cannot be repeated)")
        unknown = [f"{m.name}: {m.predictor_set!r}" for m in self.models
                   if m.predictor_set is not None and m.predictor_set not in self.predictor_sets]
        if unknown:
            raise ValueError(f"models name predictor_set(s) not in group.predictor_sets {sorted(self.predictor_sets)}: "
                             + ", ".join(unknown))
        empty = [k for k, v in self.predictor_sets.items() if not v]
        if empty:
            raise ValueError(f"group.predictor_sets {empty} list no measure")
        names = [m.name for m in self.models]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"group model names must be unique, repeated: {duplicated}")
        return self


class PEBContrast(_Strict):
    """A named posterior quantity of a PEB: Σ weight · effect of a design column on a DCM parameter.

    weights : {effect: {parameter: weight}}; effects are the design's (``mean``, ``arm``,
    ``clinical``, ``arm:clinical`` and, for the longitudinal PEB, ``session``, ``session:arm``,
    ``session:clinical``, ``session:arm:clinical``); parameters are readable DCM parameter names
    (``A_vmPFC-to-amygdala_L``, ``B_amygdala_L-to-vmPFC_fearful``, ``C_faces-to-amygdala_L``).
    expect : the hypothesised sign; the posterior probability of that sign is reported.
    Names are checked against the fitted model at the group level (an unknown name skips that
    PEB analysis with the key in the reason; the other analyses run).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9-]+$")
    analysis: Literal["baseline", "longitudinal"] = "longitudinal"
    weights: dict[str, dict[str, float]] = Field(min_length=1)
    expect: Literal["positive", "negative"] = "positive"
    description: str = ""


class PEBFamily(_Strict):
    """A factor of the second-level model space: models with and without ``effects`` (default:
    every effect) of ``parameters``; its family probability is reported for each PEB analysis."""

    name: str = Field(pattern=r"^[A-Za-z0-9-]+$")
    parameters: list[str] = Field(min_length=1)
    effects: list[str] | None = Field(default=None, min_length=1)


class PEBSettings(_Strict):
    """PEB over the DCMs (``ketflow.dcm.peb``; docs/dcm.md and docs/group.md)."""

    fields: list[Literal["A", "B", "C", "D"]] = Field(default_factory=lambda: ["A", "B", "C"], min_length=1)
    method: Literal["spm", "exact"] = "spm"
    greedy: Literal["spm", "subsets"] = "spm"
    baseline: bool = True
    leave_one_out: bool = True
    longitudinal: bool = True
    within: Literal["saturated", "peb"] = "saturated"
    min_subjects_per_arm: int = Field(default=3, ge=2)
    contrasts: list[PEBContrast] = Field(default_factory=list)
    families: list[PEBFamily] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self):
        for key, items in (("contrasts", self.contrasts), ("families", self.families)):
            names = [item.name for item in items]
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"peb.{key} names must be unique, repeated: {repeated}")
        return self


class AnalysisConfig(_Strict):
    """The whole analysis configuration (see ``ketflow/data/default_config.yml``)."""

    name: str = "analysis"
    sessions: Sessions = Field(default_factory=Sessions)
    clinical: Clinical = Field(default_factory=Clinical)
    circuit: Circuit = Field(default_factory=Circuit)
    denoising: Denoising = Field(default_factory=Denoising)
    tasks: dict[str, Task] = Field(min_length=1)
    glm: GLM = Field(default_factory=GLM)
    ppi: PPI = Field(default_factory=PPI)
    beta_series: BetaSeries = Field(default_factory=BetaSeries)
    connectivity: Connectivity = Field(default_factory=Connectivity)
    dcm: DCM = Field(default_factory=DCM)
    measures: Measures = Field(default_factory=Measures)
    group: Group = Field(default_factory=Group)
    peb: PEBSettings = Field(default_factory=PEBSettings)
    atlases: list[ExtraAtlas] = Field(default_factory=list)
    #: Settings given on the command line for this run (:func:`load_config`): option -> the
    #: field it set and its value.  Set by ketflow, not in configuration files.
    command_line_overrides: dict[str, dict] = Field(default_factory=dict)

    @field_validator("tasks")
    @classmethod
    def _bids_task_labels(cls, tasks):
        bad = [label for label in tasks if not label.isalnum()]
        if bad:
            raise ValueError(f"task labels must be alphanumeric BIDS labels, got {bad}")
        return tasks

    @model_validator(mode="after")
    def _atlas_labels_unique(self):
        labels = [a.label for a in self.atlases]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"atlases: labels {repeated} are listed more than once")
        if self.circuit.name in labels:
            raise ValueError(f"atlases: label {self.circuit.name!r} is the circuit's (circuit.name), which names the "
                             "circuit's outputs; rename the circuit or leave that atlas out")
        return self

    @model_validator(mode="after")
    def _cross_references(self):
        rois = set(roi_names(self))
        for section, names in [
            ("ppi.seeds", self.ppi.seeds),
            ("connectivity.seeds", self.connectivity.seeds),
            ("dcm.regions", self.dcm.regions if self.measures.dcm else []),
        ]:
            unknown = [n for n in names if n not in rois]
            if unknown:
                raise ValueError(f"{section} names unknown ROIs {unknown}; circuit ROIs: {sorted(rois)}")
        for section, tasks in [("ppi.tasks", self.ppi.tasks), ("connectivity.tasks", self.connectivity.tasks),
                               ("beta_series.tasks", self.beta_series.tasks)]:
            unknown = [t for t in tasks if t not in self.tasks]
            if unknown:
                raise ValueError(f"{section} names unknown tasks {unknown}; configured tasks: {sorted(self.tasks)}")
        inference_covariates = self.group.inference.covariates or []
        unknown = [c for c in inference_covariates if c not in self.clinical.covariates]
        if unknown:
            raise ValueError(f"group.inference.covariates names {unknown}, which are not among clinical.covariates "
                             f"{self.clinical.covariates} (the participants.tsv columns that are read)")
        for task in self.ppi.tasks:
            if self.tasks[task].type != "task":
                raise ValueError(f"ppi.tasks: {task!r} is a rest task; PPI needs conditions")
        for task in self.beta_series.tasks:
            if self.tasks[task].type != "task":
                raise ValueError(f"beta_series.tasks: {task!r} is a rest task; beta series need trials")
        if self.measures.dcm:
            if self.dcm.task not in self.tasks or self.tasks[self.dcm.task].type != "task":
                raise ValueError(f"dcm.task {self.dcm.task!r} is not a configured task with conditions")
            conditions = set(self.tasks[self.dcm.task].all_conditions())
            for name, trial_types in self.dcm.inputs.items():
                unknown = sorted(set(trial_types) - conditions)
                if unknown:
                    raise ValueError(f"dcm.inputs.{name} names unknown conditions {unknown} of task {self.dcm.task!r}")
        return self

    def task_labels(self, kind: str | None = None) -> list[str]:
        """Configured task labels, optionally only those of ``kind`` ('task' or 'rest')."""
        return [label for label, task in self.tasks.items() if kind is None or task.type == kind]

    def digest(self) -> str:
        """SHA-256 of :meth:`to_json` as UTF-8, i.e. ``sha256sum logs/config.json`` (in every sidecar)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def to_json(self) -> str:
        """The resolved configuration as canonical JSON (sorted keys, final newline)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=2) + "\n"


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def packaged_file(relative: str) -> Path:
    """Path of a file shipped in ``ketflow/data``."""
    return Path(str(resources.files("ketflow") / "data" / relative))


def load_spheres(circuit: Circuit) -> list[Sphere]:
    """The circuit's spheres: the table file (packaged default unless given) then overrides.

    A sphere in ``circuit.spheres`` replaces a table row of the same name, or is appended.
    With atlas ROIs (``circuit.rois`` anatomical or atlas) and no explicit spheres file, only
    ``circuit.spheres`` are used.
    """
    if circuit.rois != "spheres" and circuit.spheres_file is None:
        table = []
    else:
        path = circuit.spheres_file or packaged_file(DEFAULT_SPHERES)
        table = read_sphere_table(path)
    by_name = {s.name: s for s in table}
    for sphere in circuit.spheres:
        by_name[sphere.name] = sphere
    return list(by_name.values())


def read_sphere_table(path: Path) -> list[Sphere]:
    """Read a TSV of spheres (columns name, x, y, z, radius_mm [, hemisphere, description, source])."""
    try:
        frame = pd.read_csv(path, sep="\t", dtype={"name": str})
    except (OSError, pd.errors.ParserError) as err:
        raise ConfigError(f"{path}: cannot read the ROI sphere table ({err})") from err
    missing = sorted({"name", "x", "y", "z", "radius_mm"} - set(frame.columns))
    if missing:
        raise ConfigError(f"{path}: ROI sphere table lacks columns {missing}")
    spheres = []
    for row in frame.to_dict("records"):
        clean = {k: v for k, v in row.items() if k in Sphere.model_fields and not pd.isna(v)}
        try:
            spheres.append(Sphere(**clean))
        except ValidationError as err:
            raise ConfigError(f"{path}: bad ROI row {row.get('name')!r}: {_first_error(err)}") from err
    return spheres


def read_atlas_labels(atlas: Atlas) -> list[str]:
    """ROI names of a user atlas, from its labels TSV (columns ``index``, ``name``)."""
    try:
        frame = pd.read_csv(atlas.labels, sep="\t")
    except (OSError, pd.errors.ParserError) as err:
        raise ConfigError(f"{atlas.labels}: cannot read the atlas labels ({err})") from err
    if not {"index", "name"} <= set(frame.columns):
        raise ConfigError(f"{atlas.labels}: atlas labels TSV needs columns 'index' and 'name'")
    return [str(n) for n in frame["name"]]


def roi_names(config: AnalysisConfig) -> list[str]:
    """Names of every circuit ROI, in the order they are extracted."""
    return circuit_roi_names(config.circuit)


def circuit_roi_names(circuit: Circuit) -> list[str]:
    """Names of the ROIs of a ``circuit`` section: its spheres, then its atlas regions."""
    names = [s.name for s in load_spheres(circuit)]
    atlas = circuit_atlas(circuit)
    if atlas is not None:
        names += [n for n in read_atlas_labels(atlas) if n not in names]
    return names


#: The packaged anatomical circuit atlas (``circuit.rois: anatomical``; docs/rois.md).
CIRCUIT_ATLAS = {"dseg": "rois/tpl-MNI152NLin2009cAsym_atlas-circuit_dseg.nii.gz",
                 "labels": "rois/tpl-MNI152NLin2009cAsym_atlas-circuit_dseg.tsv"}


def circuit_atlas(circuit: Circuit) -> Atlas | None:
    """The atlas whose regions the circuit uses: the packaged anatomical atlas, the user's, or
    None (spheres only)."""
    if circuit.rois == "anatomical":
        return Atlas(**{key: packaged_file(path) for key, path in CIRCUIT_ATLAS.items()})
    return circuit.atlas


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    return f"{where}: {first['msg']}"


def _format_errors(err: ValidationError) -> str:
    lines = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        lines.append(f"  - {where}: {item['msg']}")
    return "\n".join(lines)


#: Group-level resampling under ``--sloppy`` (upper bounds; smaller configured values are kept).
SLOPPY_GROUP = {"n_permutations": 20, "n_bootstrap": 20, "n_alphas": 20}


#: Permutations of the trial inference's FWE test under ``--sloppy`` (upper bound).
SLOPPY_INFERENCE_PERMUTATIONS = 200


def sloppy_config(config: AnalysisConfig) -> AnalysisConfig:
    """A copy of ``config`` with the group resampling cut to :data:`SLOPPY_GROUP` (testing only):
    the voxelwise permutations to its ``n_permutations``, the trial inference's permutations to
    :data:`SLOPPY_INFERENCE_PERMUTATIONS`.

    The copy has its own digest, so its outputs are told apart from the full analysis's.
    """
    group = config.group.model_copy(update={k: min(getattr(config.group, k), v) for k, v in SLOPPY_GROUP.items()})
    voxelwise = group.voxelwise.model_copy(
        update={"n_permutations": min(group.voxelwise.n_permutations, SLOPPY_GROUP["n_permutations"])})
    inference = group.inference.model_copy(
        update={"n_permutations": min(group.inference.n_permutations, SLOPPY_INFERENCE_PERMUTATIONS)})
    return config.model_copy(update={"group": group.model_copy(update={"voxelwise": voxelwise,
                                                                       "inference": inference})})


@dataclass(frozen=True)
class Override:
    """One command-line setting for one run (XCP-D-style options): ``option`` sets ``field``
    (dotted path in the configuration, e.g. ``denoising.fd_threshold``) to ``value``."""

    option: str
    field: str
    value: Any


def load_config(path: Path | str | None = None, overrides: Sequence[Override] = ()) -> AnalysisConfig:
    """Load and validate an analysis configuration (YAML or JSON); ``None`` loads the default.

    Relative paths inside the file (sphere table, atlas) are resolved against the file's folder.
    ``overrides`` set fields for this run; each is recorded in ``command_line_overrides``.  An
    override of a field that the given file sets to another value is refused (the packaged
    default configuration may be overridden freely).

    Raises
    ------
    ConfigError
        With the file name and every problem found.
    """
    path = Path(path) if path is not None else packaged_file(DEFAULT_CONFIG)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the configuration file ({err.strerror})") from err
    try:
        raw = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML/JSON ({err})") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the configuration must be a mapping of sections, got {type(raw).__name__}")
    _resolve_relative_paths(raw, path.parent)
    _apply_overrides(raw, overrides, path if path != packaged_file(DEFAULT_CONFIG) else None)
    try:
        return AnalysisConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{path}: invalid analysis configuration:\n{_format_errors(err)}") from err
    except ConfigError as err:  # raised while cross-checking ROI tables
        raise ConfigError(f"{path}: {err}") from err


def _apply_overrides(raw: dict, overrides: Sequence[Override], user_file: Path | None) -> None:
    """Set each override's field in ``raw``; ConfigError if ``user_file`` sets it otherwise."""
    recorded = {}
    for override in overrides:
        *sections, key = override.field.split(".")
        node = raw
        for section in sections:
            child = node.get(section) if isinstance(node, dict) else None
            node[section] = child = child if isinstance(child, dict) else {}
            node = child
        if user_file is not None and key in node and node[key] != override.value:
            raise ConfigError(f"{user_file}: {override.field} is {node[key]!r} in this file but {override.option} "
                              f"sets it to {override.value!r}; remove one of them")
        node[key] = override.value
        recorded.setdefault(override.option, {})[override.field] = override.value
    if recorded:
        raw["command_line_overrides"] = recorded


def _resolve_relative_paths(raw: dict, base: Path) -> None:
    for atlas in raw.get("atlases") or []:
        if isinstance(atlas, dict):
            for key in ("dataset", "dseg", "labels"):
                if isinstance(atlas.get(key), str) and atlas[key]:
                    atlas[key] = str(base / atlas[key])
    circuit = raw.get("circuit")
    if not isinstance(circuit, dict):
        return
    if isinstance(circuit.get("spheres_file"), str) and circuit["spheres_file"]:
        circuit["spheres_file"] = str(base / circuit["spheres_file"])
    atlas = circuit.get("atlas")
    if isinstance(atlas, dict):
        for key in ("dseg", "labels"):
            if isinstance(atlas.get(key), str) and atlas[key]:
                atlas[key] = str(base / atlas[key])
