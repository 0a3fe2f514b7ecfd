"""Task models' own confound strategy (``denoising.task_strategy``) and the beta-series stage's wiring."""

from __future__ import annotations

import yaml
from nipype.pipeline.engine.utils import generate_expanded_graph

from ketflow.cli.parser import parse_args
from ketflow.config import Denoising, load_config
from ketflow.io.bids import discover
from ketflow.io.confounds import confound_strategy, load_confounds
from ketflow.workflows.base import init_ketflow_wf
from ketflow.workflows.bold.denoise import denoise_desc
from ketflow.workflows.participant import selected_tasks, source_links

from conftest import TINY_CONFIG


def _config(tmp_path, **changes):
    raw = yaml.safe_load(TINY_CONFIG.read_text())
    for section, values in changes.items():
        raw.setdefault(section, {}).update(values)
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def _workflow(tiny_bids, tmp_path, config):
    opts = parse_args([str(tiny_bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work"),
                       "--participant-label", "01", "--session-label", "pre"])
    found = discover(opts.bids_dir, opts.derivatives["fmriprep"], selected_tasks(opts, config), opts.space,
                     participant_labels=["01"], session_labels=["pre"])
    return init_ketflow_wf(found.runs, config, opts, source_links(opts))


def test_packaged_task_strategy_differs_from_rest_and_is_what_task_models_use():
    config = load_config(None)
    denoising = config.denoising
    assert denoising.task_strategy is not None and denoising.task_strategy != "36P"  # no global signal in task models
    assert denoising.strategy == "36P"  # rest keeps its own
    task = denoising.for_task_models()
    assert task.strategy == denoising.task_strategy and task.fd_threshold == denoising.fd_threshold
    assert Denoising(strategy="24P", task_strategy=None).for_task_models().strategy == "24P"  # null: the rest one


def test_task_runs_select_their_confounds_with_the_task_strategy(tiny_bids, tmp_path):
    config = _config(tmp_path, denoising={"task_strategy": "aCompCor"}, beta_series={"tasks": ["conflict"]})
    workflow = _workflow(tiny_bids, tmp_path, config)
    graph = generate_expanded_graph(workflow._create_flat_graph())
    nodes = {n.fullname.removeprefix("ketflow_wf.single_subject_01_wf."): n for n in graph.nodes()}
    for task in ("faces", "conflict"):
        prefix = f"ses_pre_task_{task}_wf."
        assert nodes[prefix + "task_data_wf.glm_confounds"].inputs.denoising.strategy == "aCompCor"
        assert nodes[prefix + "denoise_wf.denoise"].inputs.denoising.strategy == "36P"
    assert nodes["ses_pre_task_rest_wf.denoise_wf.denoise"].inputs.denoising.strategy == "36P"
    assert "ses_pre_task_conflict_wf.beta_series_wf.beta_series" in nodes
    assert not any(name.startswith("ses_pre_task_faces_wf.beta_series_wf") for name in nodes)
    edges = {(u.fullname, v.fullname) for u, v in graph.edges()}
    prefix = "ketflow_wf.single_subject_01_wf.ses_pre_task_conflict_wf."
    assert (prefix + "task_data_wf.task_data", prefix + "beta_series_wf.beta_series") in edges


def test_task_strategy_confounds_have_no_global_signal_and_the_methods_say_so(tiny_bids):
    func = tiny_bids / "derivatives/fmriprep/sub-01/ses-pre/func"
    tsv = func / "sub-01_ses-pre_task-conflict_desc-confounds_timeseries.tsv"
    denoising = Denoising(strategy="36P", task_strategy="aCompCor")
    task = load_confounds(tsv, tsv.with_suffix(".json"), confound_strategy(denoising.for_task_models()))
    rest = load_confounds(tsv, tsv.with_suffix(".json"), confound_strategy(denoising))
    assert not any(c.startswith("global_signal") for c in task.regressors.columns)
    assert any(c.startswith("a_comp_cor") for c in task.regressors.columns)
    assert "global_signal" in rest.regressors.columns
    text = denoise_desc(denoising, describe_band_pass=False)
    assert "task models (activation, gPPI, beta series, DCM) instead included anatomical CompCor" in text
    assert "task models" not in denoise_desc(Denoising(strategy="36P", task_strategy="36P"), describe_band_pass=False)
