"""The methods text comes from the workflow that runs: each stage's ``__desc__``, gathered as fMRIPrep does."""

from __future__ import annotations

import pytest

from ketflow.cli.parser import parse_args
from ketflow.config import load_config
from ketflow.reports.boilerplate import data_sentence, methods_from_desc
from ketflow.workflows.base import init_ketflow_wf, subject_boilerplate
from ketflow.workflows.participant import citation_text, discover_inputs, source_links

from conftest import TINY_CONFIG


@pytest.fixture(scope="module")
def setting(tiny_bids, tmp_path_factory):
    root = tmp_path_factory.mktemp("boilerplate")
    opts = parse_args([str(tiny_bids), str(root / "out"), "participant", "-w", str(root / "work"),
                       "--participant-label", "01", "--config", str(TINY_CONFIG), "--skip-bids-validation"])
    config = load_config(opts.config)
    return opts, config, discover_inputs(opts, config).runs


def _methods(setting, tasks, config=None, **kwargs):
    opts, default, runs = setting
    config = config or default
    chosen = [r for r in runs if r.task in tasks]
    workflow = init_ketflow_wf(chosen, config, opts, source_links(opts))
    return methods_from_desc(subject_boilerplate(workflow, "01"), **kwargs), workflow


def test_a_subjects_methods_describe_the_stages_its_runs_went_through(setting):
    rest, _ = _methods(setting, {"rest"}, data=data_sentence([("pre", "rest", None), ("post", "rest", None)]),
                       group=False)
    text = rest.markdown()
    assert "2 BOLD runs of this participant were analysed: task 'rest' (2 runs; sessions pre, post)" in text
    assert "Functional connectivity" in text and "Ledoit" in text and "Regions of interest" in text
    for absent in ("Task activation", "Generalized PPI", "Dynamic causal", "Group level", "McLaren"):
        assert absent not in text
    every, workflow = _methods(setting, {"faces", "conflict", "rest"}, group=False)
    assert [head for head, _ in every.paragraphs] == ["", "Regions of interest", "Denoising", "Task activation",
                                                      "Generalized PPI", "Functional connectivity",
                                                      "Dynamic causal modelling"]
    full = citation_text(workflow, setting[1])  # logs/CITATION.md: the whole graph's text, the group level last
    for present in ("Task activation", "Generalized PPI", "Dynamic causal", "Etkin",
                    "iI = incongruent trials after incongruent trials"):
        assert present in full
    assert full.index("**Dynamic causal modelling.**") < full.index("**Group level.**") < full.index("## References")
    assert every.references[0].startswith("ketflow developers") and "[@" not in full


def test_task_residual_connectivity_is_cited_only_when_run(setting):
    config = setting[1]
    assert "Cole" not in _methods(setting, {"faces", "rest"})[0].markdown()
    task_fc = config.model_copy(update={"connectivity": config.connectivity.model_copy(update={"tasks": ["faces"]})})
    assert "Cole MW" in _methods(setting, {"faces", "rest"}, config=task_fc)[0].markdown()


def test_methods_html_is_escaped_and_lists_every_reference(setting):
    odd = setting[1].model_copy(update={"name": "<b>x&y</b>"})
    methods, _ = _methods(setting, {"rest"}, config=odd, group=False)
    page = methods.html()
    assert "&lt;b&gt;x&amp;y&lt;/b&gt;" in page and "<b>x" not in page
    assert page.count("<li>") == len(methods.references)


def test_unknown_citations_and_headings_are_errors():
    with pytest.raises(ValueError, match="unknown references"):
        methods_from_desc("Intro [@nobody].\n\n")
    with pytest.raises(ValueError, match="unknown heading"):
        methods_from_desc("**Results.** none.\n\n")
