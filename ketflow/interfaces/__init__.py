"""ketflow.interfaces: Nipype interfaces that load files, call a numerical core and write files."""

from __future__ import annotations

from pathlib import Path

__all__ = ["run_in"]


def run_in(interface, directory: Path | str):
    """Run a Nipype interface outside a workflow, in ``directory`` (created), and return its outputs.

    ketflow's interfaces write their outputs to the working directory, as Nipype nodes do; this
    is for scripts and tests that call them one by one.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return interface.run(cwd=str(directory)).outputs
