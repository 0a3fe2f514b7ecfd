"""The group level: feature table, prediction of clinical change, PEB over DCM, report.

Reads the participant-level derivatives in ``output_dir`` and the clinical data of the raw
dataset, and writes ``output_dir/group/`` (tables with JSON sidecars, SVG figures) and
``output_dir/group.html``.  Computations run as a Nipype workflow, so a rerun reuses the
work directory and cluster plugins work here too.
"""

from __future__ import annotations

import logging
from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from ..config import AnalysisConfig
from ..interfaces.bids import DerivativesSink
from ..group.features import build_feature_table
from ..interfaces.group import PredictClinicalChange
from ..interfaces.peb import CompareDCMModels, FitPEB
from ..io.bids import InputError
from ..io.clinical import ClinicalDataError, read_participants, read_scores
from ..io.collect import collect_measures, read_exclusions
from ..io.write import write_json, write_tsv
from .execution import run_workflow

LOGGER = logging.getLogger("ketflow")

#: Fewest subjects with complete data for the group models to be fitted at all.
MIN_SUBJECTS = 4


def participant_subjects(out_dir: Path) -> list[str]:
    """Subjects with participant-level outputs in ``out_dir``."""
    return sorted(p.name[len("sub-"):] for p in out_dir.glob("sub-*") if p.is_dir())


def model_configs(config: AnalysisConfig) -> dict[str, dict]:
    """The group models of the configuration in the form the prediction interface reads.

    The first arm of ``clinical.arms`` is the active one (coded +0.5, the other -0.5).
    """
    clinical, group = config.clinical, config.group
    models = {}
    for model in group.models:
        base = {
            "outcome": f"{clinical.outcome}__change",
            "predictors": model.predictors,
            "baseline_session": config.sessions.baseline,
            "covariates": list(dict.fromkeys(clinical.covariates + model.covariates)),
            "l1_ratios": group.l1_ratios,
            "n_permutations": group.n_permutations,
            "n_selection_bootstrap": group.n_bootstrap,
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


def prepare_inputs(opts, config: AnalysisConfig, work: Path) -> dict[str, str]:
    """Gather measures, clinical scores, participants and exclusions into TSVs in ``work``.

    Raises
    ------
    InputError
        When there are no participant-level outputs, or clinical tables are invalid.
    """
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
    sessions = [config.sessions.baseline, config.sessions.followup]
    try:
        participants = read_participants(opts.bids_dir, config.clinical.arm_column, config.clinical.covariates)
        scores = read_scores(opts.bids_dir, subjects, sessions, config.clinical.scores)
    except ClinicalDataError as err:
        raise InputError([str(err)]) from err
    unknown = [s for s in subjects if s not in participants.index]
    if unknown:
        raise InputError([f"{opts.bids_dir / 'participants.tsv'}: no row for participant(s) "
                          f"{', '.join('sub-' + s for s in unknown)}"])
    participants = participants.loc[subjects, [config.clinical.arm_column, *config.clinical.covariates]]
    excluded_runs = read_exclusions(out_dir)[["subject", "session", "task", "reason"]]
    result = build_feature_table(
        measures, scores, participants.reset_index(), baseline=config.sessions.baseline,
        followup=config.sessions.followup, arm=config.clinical.arm_column, covariates=config.clinical.covariates,
        scores=config.clinical.scores, sessions=sessions, excluded_runs=excluded_runs,
        sources={"measures": "participant-level derivatives", "clinical": "sessions.tsv / phenotype",
                 "participants": "participants.tsv"})
    if len(result.table) < MIN_SUBJECTS:
        reasons = [f"sub-{r.subject}: {r.reason}" for r in result.exclusions.itertuples()]
        raise InputError([f"only {len(result.table)} subject(s) have every measure and score at both sessions "
                          f"({config.sessions.baseline}, {config.sessions.followup}); the group models need at "
                          f"least {MIN_SUBJECTS}. Excluded:", *reasons])
    files = {
        "features": write_tsv(work / "features.tsv", result.table),
        "dictionary": write_json(work / "features.json", result.dictionary),
        "exclusions": write_tsv(work / "exclusions.tsv", result.exclusions),
    }
    return {k: str(v) for k, v in files.items()}


def init_group_wf(files: dict[str, str], config: AnalysisConfig, opts) -> pe.Workflow:
    """One prediction node per model (+ PEB when DCMs were estimated) -> sinks."""
    workflow = pe.Workflow(name="ketflow_group_wf")
    group_dir = str(opts.output_dir / "group")
    features = pe.Node(niu.IdentityInterface(fields=["features_tsv", "dictionary_json", "exclusions_tsv"]),
                       name="features")
    features.inputs.features_tsv = files["features"]
    features.inputs.dictionary_json = files["dictionary"]
    features.inputs.exclusions_tsv = files["exclusions"]
    hash_ = config.digest()

    def sink(name, node, field, suffix, extension, entities=None, metadata=None, sidecar=True, datatype="",
             from_filename=False):
        ds = pe.Node(DerivativesSink(out_dir=group_dir, entities=entities or {}, suffix=suffix,
                                     extension=extension, datatype=datatype, config_hash=hash_,
                                     metadata=metadata or {}, sidecar=sidecar,
                                     entities_from_filename=from_filename),
                     name=f"ds_{name}", run_without_submitting=True)
        workflow.connect(node, field, ds, "in_file")
        return ds

    sink("features", features, "features_tsv", "features", ".tsv", sidecar=False)
    sink("dictionary", features, "dictionary_json", "features", ".json", sidecar=False)
    sink("exclusions", features, "exclusions_tsv", "exclusions", ".tsv",
         metadata={"Description": "subjects left out of the group models, with every reason"})
    work = Path(files["features"]).parent
    for name, model in model_configs(config).items():
        model_file = write_json(work / f"model-{name}.json", model)
        predict = pe.Node(PredictClinicalChange(model_config=str(model_file), n_jobs=opts.nprocs),
                          name=f"predict_{name.replace('-', '_')}", n_procs=opts.nprocs)
        workflow.connect([(features, predict, [("features_tsv", "features_tsv"),
                                               ("dictionary_json", "dictionary_json")])])
        meta = {"Model": model}
        ent = {"model": name}
        for field, suffix in (("coefficients_tsv", "coefficients"), ("null_tsv", "nulldistribution"),
                              ("selection_tsv", "selectionfrequencies"), ("predictions_tsv", "predictions")):
            sink(f"{suffix}_{name}", predict, field, suffix, ".tsv", entities=ent, metadata=meta)
        sink(f"performance_{name}", predict, "performance_json", "performance", ".json", entities=ent,
             sidecar=False)
        sink(f"figures_{name}", predict, "figures", "figure", ".svg", entities=ent, sidecar=False,
             datatype="figures", from_filename=True)
    if config.measures.dcm:
        peb = pe.Node(FitPEB(out_dir=str(opts.output_dir), task=config.dcm.task, session=config.sessions.baseline,
                             arm_column=config.clinical.arm_column, arms=config.clinical.arms[:2],
                             outcome=f"{config.clinical.outcome}__change"), name="peb")
        workflow.connect(features, "features_tsv", peb, "features_tsv")
        ent = {"model": "peb"}
        sink("peb_params", peb, "parameters_tsv", "parameters", ".tsv", entities=ent,
             metadata={"Description": "Parametric Empirical Bayes over baseline DCM connectivity "
                                      "(Friston et al. 2016): effects of each design column"})
        sink("peb_json", peb, "result_json", "summary", ".json", entities=ent, sidecar=False)
        sink("peb_figure", peb, "figure", "figure", ".svg", entities=dict(ent, desc="parameters"), sidecar=False,
             datatype="figures")
    if config.measures.dcm and config.dcm.model_space:
        bms = pe.Node(CompareDCMModels(out_dir=str(opts.output_dir), task=config.dcm.task,
                                       sessions=[config.sessions.baseline, config.sessions.followup]),
                      name="dcm_model_comparison")
        workflow.connect(features, "features_tsv", bms, "features_tsv")
        sink("bms_table", bms, "comparison_tsv", "bms", ".tsv", entities={"model": "dcm"},
             metadata={"Description": "DCM model space compared over subjects: fixed effects (summed free "
                                      "energies, Penny et al. 2004) and random effects (Stephan et al. 2009; "
                                      "protected exceedance probabilities, Rigoux et al. 2014)"})
        sink("bms_json", bms, "summary_json", "bms", ".json", entities={"model": "dcm", "desc": "subjects"},
             sidecar=False)
    return workflow


def run_group_level(opts, config: AnalysisConfig) -> int:
    """Run the group level; returns the exit status (0 success, 1 any failure)."""
    work = Path(opts.work_dir) / "ketflow_group_inputs"
    files = prepare_inputs(opts, config, work)
    workflow = init_group_wf(files, config, opts)
    crash_files = run_workflow(workflow, opts, opts.output_dir / "logs" / "crash")
    from ..reports.group import build_group_report

    report_failed = build_group_report(opts.output_dir, config)
    lines = [f"ketflow group level: {len(model_configs(config))} model(s)."]
    if crash_files:
        lines.append(f"{len(crash_files)} node(s) FAILED; crash files:")
        lines += [f"  {p}" for p in crash_files]
    lines.append(f"Outputs: {opts.output_dir / 'group'}; report: {opts.output_dir / 'group.html'}")
    print("\n".join(lines))
    return 1 if crash_files or report_failed else 0
