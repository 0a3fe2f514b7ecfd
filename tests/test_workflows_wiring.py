"""How the participant workflow is put together: stages per run, and what is read once per run."""

from __future__ import annotations

from nipype.pipeline.engine.utils import generate_expanded_graph

from ketflow.cli.parser import parse_args
from ketflow.config import load_config
from ketflow.io.bids import discover
from ketflow.workflows.base import init_ketflow_wf
from ketflow.workflows.execution import executed_nodes
from ketflow.workflows.participant import selected_tasks, source_links

from conftest import TINY_CONFIG


def _workflow(tiny_bids, tmp_path):
    opts = parse_args([str(tiny_bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work"),
                       "--participant-label", "01", "--session-label", "pre"])
    config = load_config(TINY_CONFIG)
    found = discover(opts.bids_dir, opts.derivatives["fmriprep"], selected_tasks(opts, config), opts.space,
                     participant_labels=["01"], session_labels=["pre"])
    return init_ketflow_wf(found.runs, config, opts, source_links(opts)), found.runs


def test_runs_are_made_of_stage_workflows(tiny_bids, tmp_path):
    workflow, runs = _workflow(tiny_bids, tmp_path)
    subject = workflow.get_node("single_subject_01_wf")
    stages = {run.task: {n.name for n in subject.get_node(f"ses_pre_task_{run.task}_wf")._graph.nodes()}
              for run in runs}
    common = {"inputnode", "outputnode", "bold_cache_wf", "rois_wf", "denoise_wf", "derivatives_wf"}
    assert stages["rest"] == common | {"connectivity_wf"}
    assert stages["faces"] == common | {"task_data_wf", "activation_wf", "gppi_wf", "dcm_wf"}  # tiny: faces is the DCM's
    assert stages["conflict"] == common | {"task_data_wf", "activation_wf"}  # not a PPI or DCM task in the tiny config


def test_voxels_are_decompressed_and_scaled_once_per_run(tiny_bids, tmp_path):
    """Every node reading voxels reads its run's cache; the GLM and gPPI read the one percent-scaled copy."""
    workflow, runs = _workflow(tiny_bids, tmp_path)
    graph = generate_expanded_graph(workflow._create_flat_graph())  # identity nodes removed, as executed
    assert len(executed_nodes(workflow)) == len(graph.nodes())  # the progress log's count
    edges = {(u.fullname, v.fullname): [c for c in d["connect"]] for u, v, d in graph.edges(data=True)}
    for run in runs:
        prefix = f"ketflow_wf.single_subject_01_wf.ses_pre_task_{run.task}_wf."
        cache = prefix + "bold_cache_wf.bold_cache"
        readers = {prefix + name for name in ("denoise_wf.denoise", "task_data_wf.task_data", "dcm_wf.dcm_voi",
                                              "rois_wf.roi_quality")}
        from_cache = {v for (u, v), c in edges.items() if u == cache and ("bold_cache", "bold_cache") in c}
        assert from_cache == {r for r in readers if any(n.fullname == r for n in graph.nodes())}
        scaled = {v for (u, v), c in edges.items()
                  if u == prefix + "task_data_wf.task_data" and ("percent_bold", "percent_bold") in c}
        expected = {prefix + "activation_wf.activation"} | ({prefix + "gppi_wf.gppi"} if run.task == "faces" else set())
        assert scaled == (expected if run.task != "rest" else set())
        bold_readers = [n.fullname for n in graph.nodes() if n.fullname.startswith(prefix)
                        and "bold_file" in n.inputs.copyable_trait_names() and n.inputs.bold_file]
        assert bold_readers == [cache]
