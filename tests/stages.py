"""Running one stage workflow on its own (for the workflow tests)."""

from __future__ import annotations

from pathlib import Path


def run_stage(workflow, base_dir: Path, **inputs) -> dict:
    """Run ``workflow`` with these ``inputnode`` values; node name -> its outputs."""
    for name, value in inputs.items():
        setattr(workflow.inputs.inputnode, name, value)
    workflow.base_dir = str(base_dir)
    graph = workflow.run(plugin="Linear")
    return {node.name: node.result.outputs for node in graph.nodes()}
