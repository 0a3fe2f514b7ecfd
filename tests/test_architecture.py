"""The import graph follows the layers of docs/architecture.md: imports point down only.

cores (signal, dcm, group) <- config <- io <- interfaces <- workflows <- cli, with reports beside
workflows (reports may not import interfaces or workflows).  Checked on the source (``ast``), so
a lazy import inside a function counts too.  Benchmarks and tests do not import interfaces
(tests of the interface and workflow layers excepted).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ketflow"

#: Layer of each top-level module or package of ketflow.
LAYER = {"signal": "core", "dcm": "core", "group": "core", "ppi": "core", "config": "config", "io": "io",
         "templates": "io", "simulate": "simulate", "interfaces": "interfaces", "reports": "reports",
         "workflows": "workflows", "cli": "cli", "__main__": "cli", "docs": "base", "": "base"}
#: What each layer may import (besides itself and the base: the package root and ``ketflow.docs``).
ALLOWED = {
    "base": set(),
    "core": {"core"},
    "config": {"core"},
    "io": {"config", "core"},
    "simulate": {"core"},
    "interfaces": {"io", "config", "core"},
    "reports": {"io", "config", "core"},
    "workflows": {"interfaces", "reports", "io", "config", "core"},
    "cli": {"workflows", "reports", "interfaces", "io", "config", "core", "simulate"},
}
#: Group-level test files that import the group's interfaces; they keep their names while the
#: group level is rewritten (docs/architecture.md, "Tests").
GROUP_TESTS_WITH_INTERFACES = {"test_group_interfaces.py", "test_peb.py", "test_dcm_group.py"}
#: Benchmarks that time an interface itself (the unit the group workflow runs per model).
BENCHMARKS_TIMING_INTERFACES = {"group_speed.py"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """ketflow modules imported anywhere in the file (relative imports resolved)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found |= {target} if not node.level or node.module else {f"{target}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name == "ketflow" or name.startswith("ketflow.")}


def layer_of(module: str) -> str:
    """Layer of a ketflow module (a name imported from the package root, e.g. ``__version__``, is the base)."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    if top and not ((PACKAGE / top).is_dir() or (PACKAGE / f"{top}.py").is_file()):
        return "base"
    return LAYER[top]


def test_package_imports_point_down():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = layer_of(module_name(path))
        for target in sorted(imported(path)):
            layer = layer_of(target)
            if layer not in ALLOWED[source] | {source, "base"}:
                upward.append(f"{module_name(path)} ({source}) imports {target} ({layer})")
    assert not upward, "\n".join(upward)


@pytest.mark.parametrize("folder", ["benchmarks", "tests"])
def test_interfaces_are_imported_only_by_their_layer_and_workflows(folder):
    offenders = []
    for path in sorted((ROOT / folder).glob("*.py")):
        if folder == "tests" and (path.name.startswith(("test_interfaces_", "test_workflows_"))
                                  or path.name in GROUP_TESTS_WITH_INTERFACES):
            continue
        if folder == "benchmarks" and path.name in BENCHMARKS_TIMING_INTERFACES:
            continue
        if any(name.startswith("ketflow.interfaces") for name in imported(path)):
            offenders.append(path.name)
    assert not offenders


def test_the_layers_cover_every_module():
    tops = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in PACKAGE.rglob("*.py")}
    assert tops - {"__init__"} <= set(LAYER) and set(LAYER.values()) == set(ALLOWED)


def test_benchmarks_import_helpers_normally():
    """No benchmark loads another by file path or borrows a test's private helper."""
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        text = path.read_text()
        assert "spec_from_file_location" not in text and "sys.path.insert" not in text, path.name
        assert not any(name.startswith("test_") for name in _plain_imports(path)), path.name


def _plain_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
    return names


def test_shared_parameter_docs_are_filled():
    """Docstrings using ``%(name)s`` templates (ketflow.docs.fill_doc) are rendered: no template is left."""
    import importlib
    import inspect

    from ketflow.docs import docdict

    filled = 0
    for path in sorted((PACKAGE / "workflows").rglob("*.py")) + [PACKAGE / "io" / "design.py"]:
        module = importlib.import_module(module_name(path))
        for _, function in inspect.getmembers(module, inspect.isfunction):
            if function.__module__ != module.__name__:
                continue  # imported, e.g. fill_doc itself
            doc = function.__doc__ or ""
            assert "%(" not in doc, f"{module.__name__}.{function.__name__}"
            filled += any(entry.splitlines()[0] in doc for entry in docdict.values())
    assert filled >= 10  # the stage workflows share their parameter and input descriptions
