"""The group level: feature table, prediction of clinical change, PEB over DCM, report.

Reads the participant-level derivatives in ``output_dir`` and the clinical data of the raw
dataset, and writes ``output_dir/group/`` (tables with JSON sidecars, SVG figures) and
``output_dir/group.html``.

Everything that can fail on the inputs happens first, in :func:`prepare_inputs`, and writes
only to the work directory: the feature table (every subject, ``n/a`` where missing, every
missing value explained), then, for every model, its complete cases and whether it can be
fitted.  A model with too few complete subjects is skipped with its reason (``models.tsv``,
``model-<label>_subjects.tsv``, the report) while the others run; only when no model can
run is it an input error (exit 1, nothing written to ``output_dir``).  The computations then
run as a Nipype workflow, so a rerun reuses the work directory and cluster plugins work here too.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from ..config import AnalysisConfig
from ..group.features import FeatureTable, build_feature_table, change_column
from ..group.models import select_model_data
from ..interfaces.bids import DerivativesSink
from ..interfaces.group import PredictClinicalChange
from ..interfaces.peb import CompareDCMModels
from ..io.bids import InputError
from ..io.clinical import ClinicalDataError, check_arms, read_participants, read_scores
from ..io.collect import collect_measures, output_provenance, read_exclusions
from ..io.names import bids_label
from ..io.write import write_json, write_text, write_tsv
from .execution import run_workflow
from .group_inference import add_inference
from .group_peb import add_peb_nodes, prepare_peb
from .group_voxelwise import add_voxelwise, plan_voxelwise, summary_lines

LOGGER = logging.getLogger("ketflow")

#: Columns of ``group/models.tsv``.
MODEL_COLUMNS = ["model", "label", "method", "status", "n_included", "n_excluded", "n_predictors", "reason"]
MODEL_COLUMN_DESCRIPTIONS = {
    "model": "model name (configuration group.models; per-arm models get the arm appended)",
    "label": "the model's BIDS label in output file names (model-<label>_...)",
    "method": "elastic-net prediction of clinical change, or PEB over DCM",
    "status": "'run' (fitted; see model-<label>_performance.json) or 'skipped'",
    "n_included": "subjects with complete data on the model's columns",
    "n_excluded": "subjects left out (reasons in model-<label>_subjects.tsv)",
    "n_predictors": "imaging predictor columns (elastic net) or DCM parameters (PEB: n/a until fitted)",
    "reason": "why a model was skipped",
}


def participant_subjects(out_dir: Path) -> list[str]:
    """Subjects with participant-level outputs in ``out_dir``."""
    return sorted(p.name[len("sub-"):] for p in out_dir.glob("sub-*") if p.is_dir())


def model_configs(config: AnalysisConfig) -> dict[str, dict]:
    """The group models of the configuration in the form the prediction interface reads.

    The first arm of ``clinical.arms`` is the active one (coded +0.5, the other -0.5).  A
    ``per_arm`` model becomes one model per arm, named ``<name>-<arm>``.
    """
    clinical, group = config.clinical, config.group
    models = {}
    for model in group.models:
        base = {
            "outcome": change_column(clinical.outcome),
            "predictors": model.predictors,
            "baseline_session": config.sessions.baseline,
            "measures": model.measures,
            "predictor_pattern": model.predictor_pattern,
            **({"predictor_set": {"name": model.predictor_set, "measures": group.predictor_sets[model.predictor_set]}}
               if model.predictor_set else {}),
            "covariates": list(dict.fromkeys(clinical.covariates + model.covariates)),
            "l1_ratios": group.l1_ratios,
            "n_alphas": group.n_alphas,
            "refit_inner_folds": group.refit_inner_folds,
            "inner_folds": group.inner_folds,
            "outer_folds": group.outer_folds,
            "outer_repeats": group.outer_repeats,
            "n_permutations": group.n_permutations,
            "n_selection_bootstrap": group.n_bootstrap,
            "min_subjects": group.min_subjects,
            "seed": group.seed,
        }
        if len(clinical.arms) == 2:
            base.update(arm=clinical.arm_column, arm_levels=[clinical.arms[1], clinical.arms[0]])
            if model.interaction:
                base.update(include_arm=True, arm_interactions=True)
        if model.per_arm:
            for arm in clinical.arms:
                models[f"{model.name}-{arm}"] = dict(base, arm_subset=arm, arm=clinical.arm_column,
                                                     include_arm=False, arm_interactions=False)
        else:
            models[model.name] = base
    return models


@dataclass
class GroupInputs:
    """What :func:`prepare_inputs` wrote to the work directory and decided.

    files : features, dictionary, missing, models (TSV/JSON paths).
    runnable : model name -> model configuration JSON, for the models that can be fitted.
    subjects : model name -> TSV of every subject (included, reason), for skipped models and PEB.
    peb : the runnable PEB analyses (:func:`ketflow.workflows.group_peb.prepare_peb`).
    models : the rows of ``models.tsv``.
    """

    files: dict[str, str]
    runnable: dict[str, str] = field(default_factory=dict)
    subjects: dict[str, str] = field(default_factory=dict)
    peb: dict = field(default_factory=dict)
    models: pd.DataFrame | None = None


def _clinical_inputs(opts, config: AnalysisConfig, subjects: list[str]):
    """(participants, scores) with every clinical-table problem raised as an InputError."""
    sessions = [config.sessions.baseline, config.sessions.followup]
    clinical = config.clinical
    try:
        participants = read_participants(opts.bids_dir, clinical.arm_column, clinical.covariates)
        check_arms(participants, clinical.arm_column, clinical.arms, opts.bids_dir / "participants.tsv")
        scores = read_scores(opts.bids_dir, subjects, sessions, clinical.scores)
    except ClinicalDataError as err:
        raise InputError([str(err)]) from err
    unknown = [s for s in subjects if s not in participants.index]
    if unknown:
        raise InputError([f"{opts.bids_dir / 'participants.tsv'}: no row for participant(s) "
                          f"{', '.join('sub-' + s for s in unknown)}"])
    return participants.loc[subjects, [clinical.arm_column, *clinical.covariates]], scores


def build_features(opts, config: AnalysisConfig) -> FeatureTable:
    """The feature table of every subject with participant-level outputs (``--participant-label`` applied)."""
    out_dir = opts.output_dir
    subjects = participant_subjects(out_dir)
    if opts.participant_label:
        subjects = [s for s in subjects if s in {p.removeprefix("sub-") for p in opts.participant_label}]
    if not subjects:
        raise InputError([f"{out_dir}: no participant-level outputs (sub-*/); run the participant level first"])
    measures = collect_measures(out_dir, config, subjects)
    if measures.empty:
        raise InputError([f"{out_dir}: participant-level outputs hold no measures to analyse "
                          "(activation, gPPI, connectivity or DCM)"])
    participants, scores = _clinical_inputs(opts, config, subjects)
    excluded_runs = read_exclusions(out_dir)
    excluded_runs = excluded_runs[excluded_runs["subject"].isin(subjects)][["subject", "session", "task", "reason"]]
    try:
        return build_feature_table(
            measures, scores, participants.reset_index(), baseline=config.sessions.baseline,
            followup=config.sessions.followup, arm=config.clinical.arm_column,
            covariates=config.clinical.covariates, scores=config.clinical.scores,
            sessions=[config.sessions.baseline, config.sessions.followup], excluded_runs=excluded_runs,
            max_missing_fraction=config.group.max_missing_fraction,
            sources={"measures": "participant-level derivatives (a session's runs pooled: activation and gPPI ROI "
                                 + {"precision": "estimates by inverse-variance weights",
                                    "equal": "estimates by equal weights"}[config.glm.run_pooling]
                                 + "; connectivity by the mean Fisher z; DCM by Bayesian parameter averaging)",
                     "clinical": "sessions.tsv / phenotype",
                     "participants": "participants.tsv"})
    except ValueError as err:
        raise InputError([f"{out_dir}: cannot build the group feature table: {err}"]) from err


def prepare_inputs(opts, config: AnalysisConfig, work: Path) -> GroupInputs:
    """Build the feature table and decide which models can run; writes only to ``work``.

    Raises
    ------
    InputError
        No participant-level outputs, invalid clinical tables, or no model can be fitted.
    """
    result = build_features(opts, config)
    work.mkdir(parents=True, exist_ok=True)
    rows, runnable, subject_files = [], {}, {}
    for name, model in model_configs(config).items():
        data = select_model_data(model, result.table, result.dictionary)
        for message in data.messages:
            LOGGER.warning("model %s: %s", name, message)
        label = bids_label(name)
        n_in = int(data.subjects["included"].sum())
        rows.append({"model": name, "label": label, "method": "elastic net",
                     "status": "run" if data.can_run else "skipped", "n_included": n_in,
                     "n_excluded": len(data.subjects) - n_in,
                     "n_predictors": len(data.config.spec.features) if data.config else 0,
                     "reason": data.skip_reason or ""})
        if data.can_run:
            runnable[name] = str(write_json(work / f"model-{label}.json", model))
        else:
            subject_files[name] = str(write_tsv(work / f"model-{label}_subjects.tsv", data.subjects))
    inputs = GroupInputs(files={})
    if config.measures.dcm:
        peb_rows, peb_subjects, inputs.peb = prepare_peb(opts, config, result.table, work)
        rows += peb_rows
        subject_files.update(peb_subjects)
    models = pd.DataFrame.from_records(rows, columns=MODEL_COLUMNS)
    if not (models["status"] == "run").any():
        raise InputError(["no group model can be fitted:",
                          *[f"  model {r.model}: {r.reason}" for r in models.itertuples()],
                          "Missing values and their reasons:",
                          *_missing_lines(result)])
    inputs.files = {
        "features": str(write_tsv(work / "features.tsv", result.table)),
        "dictionary": str(write_json(work / "features.json", result.dictionary)),
        "missing": str(write_tsv(work / "missing.tsv", result.missing)),
        "models": str(write_tsv(work / "models.tsv", models)),
    }
    inputs.runnable, inputs.subjects, inputs.models = runnable, subject_files, models
    return inputs


def _missing_lines(result: FeatureTable, limit: int = 30) -> list[str]:
    lines = [f"  sub-{r.subject} ses-{r.session} {r.item}: {r.reason}" for r in result.missing.itertuples()]
    return lines[:limit] + ([f"  ... and {len(lines) - limit} more"] if len(lines) > limit else [])


def _sink(workflow, group_dir: str, config_hash: str, name, node, field, suffix, extension, *, entities=None,
          metadata=None, sidecar=True, datatype="", from_filename=False):
    ds = pe.Node(DerivativesSink(out_dir=group_dir, entities=entities or {}, suffix=suffix, extension=extension,
                                 datatype=datatype, config_hash=config_hash, metadata=metadata or {},
                                 sidecar=sidecar, entities_from_filename=from_filename),
                 name=f"ds_{name}", run_without_submitting=True)
    workflow.connect(node, field, ds, "in_file")
    return ds


_SUBJECTS_META = {"Description": "every subject of the feature table: included in this model (complete on "
                                 "its columns) or the reason it was left out",
                  "subject": "participant label", "included": "true if the subject entered the model",
                  "reason": "what the subject lacks for this model"}


def init_group_wf(inputs: GroupInputs, config: AnalysisConfig, opts) -> pe.Workflow:
    """Sinks of the tables, one prediction node per runnable model, PEB when it can run."""
    workflow = pe.Workflow(name="ketflow_group_wf")
    group_dir = str(opts.output_dir / "group")
    tables = pe.Node(niu.IdentityInterface(fields=["features", "dictionary", "missing", "models"]),
                     name="tables")
    for key, path in inputs.files.items():
        setattr(tables.inputs, key, path)

    def sink(*args, **kwargs):
        return _sink(workflow, group_dir, config.digest(), *args, **kwargs)

    sink("features", tables, "features", "features", ".tsv", sidecar=False)
    sink("dictionary", tables, "dictionary", "features", ".json", sidecar=False)
    sink("missing", tables, "missing", "missing", ".tsv", metadata={
        "Description": "every missing value of the feature table, by subject, session and item, with the reason",
        "item": "measure group (<family>_<task>), clinical score, arm, covariate, participants.tsv or task-<label>",
        "n_missing": "number of feature-table values missing for this item (0: informational)",
        "MaxMissingFraction": config.group.max_missing_fraction})
    sink("models", tables, "models", "models", ".tsv",
         metadata={"Description": "group models: fitted or skipped, subjects included", **MODEL_COLUMN_DESCRIPTIONS})
    for name, path in inputs.subjects.items():
        node = pe.Node(niu.IdentityInterface(fields=["subjects"]), name=f"subjects_{bids_label(name)}")
        node.inputs.subjects = path
        sink(f"subjects_{bids_label(name)}", node, "subjects", "subjects", ".tsv",
             entities={"model": name}, metadata=_SUBJECTS_META)
    for name, model_file in inputs.runnable.items():
        _add_prediction(workflow, sink, tables, name, model_file, opts)
    add_peb_nodes(workflow, sink, inputs.peb, config, opts)
    if config.measures.dcm and config.dcm.model_space:
        _add_model_comparison(workflow, sink, tables, config, opts)
    if config.group.inference.enabled:
        add_inference(workflow, sink, tables, inputs.files, config)
    return workflow


def _add_prediction(workflow, sink, tables, name: str, model_file: str, opts) -> None:
    """One elastic-net model: the prediction node and the sinks of its outputs."""
    label = bids_label(name)
    predict = pe.Node(PredictClinicalChange(model_config=model_file, n_jobs=opts.nprocs),
                      name=f"predict_{label}", n_procs=opts.nprocs)
    workflow.connect([(tables, predict, [("features", "features_tsv"), ("dictionary", "dictionary_json")])])
    meta = {"Model": json.loads(Path(model_file).read_text())}
    ent = {"model": name}
    sink(f"subjects_{label}", predict, "subjects_tsv", "subjects", ".tsv", entities=ent, metadata=_SUBJECTS_META)
    for field_, suffix in (("coefficients_tsv", "coefficients"), ("null_tsv", "nulldistribution"),
                           ("selection_tsv", "selectionfrequencies"), ("predictions_tsv", "predictions")):
        sink(f"{suffix}_{label}", predict, field_, suffix, ".tsv", entities=ent, metadata=meta)
    sink(f"performance_{label}", predict, "performance_json", "performance", ".json", entities=ent, sidecar=False)
    sink(f"figures_{label}", predict, "figures", "figure", ".svg", entities=ent, sidecar=False,
         datatype="figures", from_filename=True)


def _add_model_comparison(workflow, sink, tables, config: AnalysisConfig, opts) -> None:
    """Fixed- and random-effects comparison of the configured DCM model space at both sessions."""
    bms = pe.Node(CompareDCMModels(out_dir=str(opts.output_dir), task=config.dcm.task,
                                   sessions=[config.sessions.baseline, config.sessions.followup]),
                  name="dcm_model_comparison")
    workflow.connect(tables, "features", bms, "features_tsv")
    sink("bms_table", bms, "comparison_tsv", "bms", ".tsv", entities={"model": "dcm"},
         metadata={"Description": "DCM model space compared over subjects: fixed effects (summed free "
                                  "energies, Penny et al. 2004) and random effects (Stephan et al. 2009; "
                                  "protected exceedance probabilities, Rigoux et al. 2014)"})
    sink("bms_json", bms, "summary_json", "bms", ".json", entities={"model": "dcm", "desc": "subjects"},
         sidecar=False)


def select_by_provenance(opts) -> list[str] | None:
    """Refuse to combine participant outputs made with different configurations or ketflow
    versions, unless ``--participant-config-hash`` / ``--participant-version`` say which to use.

    Returns the subjects to analyse when a choice left some out (None: all of them).

    Raises
    ------
    InputError
        Naming every subject with its configuration hash(es) and version(s) when they differ
        (or when no subject matches the choice).
    """
    subjects = participant_subjects(opts.output_dir)
    if opts.participant_label:
        subjects = [s for s in subjects if s in {p.removeprefix("sub-") for p in opts.participant_label}]
    made_with = {s: output_provenance(opts.output_dir, s) for s in subjects}
    made_with = {s: found for s, found in made_with.items() if found}  # subjects every run of which was excluded
    hash_prefix, version = opts.participant_config_hash, opts.participant_version

    def chosen(pair) -> bool:
        return (hash_prefix is None or pair[0].startswith(hash_prefix)) and (version is None or pair[1] == version)

    kept = [s for s, found in made_with.items() if all(chosen(pair) for pair in found)]
    pairs = {pair for s in kept for pair in made_with[s]}
    if len(pairs) <= 1 and kept:
        left_out = sorted(set(made_with) - set(kept))
        for subject in left_out:
            LOGGER.warning("sub-%s left out: its outputs were made with %s, not the one chosen", subject,
                           _describe(made_with[subject]))
        return kept if left_out else None
    lines = [f"{opts.output_dir}: the participant outputs were made with different configurations or ketflow "
             "versions, which the group level does not combine" if len(pairs) > 1 else
             f"{opts.output_dir}: no subject's outputs were made with the configuration / version chosen"]
    lines += [f"  sub-{s}: {_describe(found)}" for s, found in sorted(made_with.items())]
    lines.append("rerun the participant level of the subjects that differ with the same configuration and "
                 "version, or choose the outputs to use with --participant-config-hash HASH (a prefix of the "
                 "SHA-256) and/or --participant-version VERSION")
    raise InputError(lines)


def _describe(pairs: set[tuple[str, str]]) -> str:
    return ", ".join(f"configuration {h[:12]} (ketflow {v})" for h, v in sorted(pairs))


def run_group_level(opts, config: AnalysisConfig) -> int:
    """Run the group level; returns the exit status (0 success, 1 any failure).

    ``--boilerplate-only`` writes only ``logs/CITATION_group.md``; ``--reports-only``
    rebuilds ``group.html`` from the existing ``group/`` outputs.
    """
    from ..reports.group import build_group_report, group_methods_text

    out_dir = opts.output_dir
    citation = out_dir / "logs" / "CITATION_group.md"
    if opts.boilerplate_only:
        write_text(citation, group_methods_text(config))
        print(f"Group-level methods boilerplate written to {citation}")
        return 0
    if opts.reports_only:
        if not (out_dir / "group" / "models.tsv").is_file():
            raise InputError([f"{out_dir / 'group'}: no group-level outputs to report on (models.tsv missing); "
                              "run the group level first"])
        status = build_group_report(out_dir, config)
        print(f"Group report rebuilt: {out_dir / 'group.html'}")
        return status
    selected = select_by_provenance(opts)
    if selected is not None:
        opts.participant_label = selected
    inputs = prepare_inputs(opts, config, Path(opts.work_dir) / "ketflow_group_inputs")
    voxelwise = plan_voxelwise(opts, config, Path(opts.work_dir) / "ketflow_group_inputs" / "voxelwise")
    workflow = init_group_wf(inputs, config, opts)
    add_voxelwise(workflow, voxelwise, config, opts)
    crash_files = run_workflow(workflow, opts, out_dir / "logs" / "crash")
    write_text(citation, group_methods_text(config))
    report_failed = build_group_report(out_dir, config)
    models = inputs.models
    lines = [f"ketflow group level: {int((models['status'] == 'run').sum())} model(s) fitted, "
             f"{int((models['status'] == 'skipped').sum())} skipped."]
    lines += [f"  skipped {r.model}: {r.reason}" for r in models.itertuples() if r.status == "skipped"]
    lines += summary_lines(voxelwise)
    if crash_files:
        lines.append(f"{len(crash_files)} node(s) FAILED; crash files:")
        lines += [f"  {p}" for p in crash_files]
    lines.append(f"Outputs: {out_dir / 'group'}; report: {out_dir / 'group.html'}")
    print("\n".join(lines))
    return 1 if crash_files or report_failed else 0

