"""Packaging and CI files stay consistent with each other and with the README.

No Docker engine or Apptainer runs on the development machines, so the container files are
checked here: hadolint on the Dockerfile, and the same base image and pinned ``pip install``
in the Dockerfile, ``ketflow.def``, ``scripts/demo.sh`` and ``scripts/test.sh``.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import run_cli

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
DEF_SECTIONS = {"labels", "files", "environment", "post", "runscript", "test", "help"}


def readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def code_lines(markdown: str) -> list[str]:
    """Non-empty, non-comment lines of the fenced code blocks of a Markdown text."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", markdown, flags=re.S | re.M)
    return [ln.strip() for block in blocks for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]


def pip_install(command: str) -> dict:
    """The constraints file, package spec (extras apart) and extras of a ``pip install`` command."""
    words = shlex.split(command)
    assert "install" in words, command
    words = words[words.index("install") + 1:]
    constraints, specs = None, []
    while words:
        word = words.pop(0)
        if word in ("-c", "--constraint"):
            constraints = words.pop(0)
        elif word in ("-e", "--editable"):
            specs.append(words.pop(0))
        elif not word.startswith("-"):
            specs.append(word)
    assert len(specs) == 1, command
    spec, _, extras = specs[0].partition("[")
    return {"constraints": constraints, "spec": spec, "extras": extras.rstrip("]")}


def pip_commands(text: str) -> list[str]:
    """Every ``pip install`` command of a shell script, Dockerfile or definition file."""
    joined = re.sub(r"\\\n\s*", " ", text)
    commands = []
    for line in joined.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for part in re.split(r"&&|;", line):
            if re.search(r"\bpip install\b", part) and "--upgrade pip" not in part:
                commands.append(part.strip().removeprefix("RUN").strip())
    return commands


def def_sections(text: str) -> tuple[dict, dict]:
    """(header keywords, section name -> body) of an Apptainer definition file."""
    header, sections, current = {}, {}, None
    for line in text.splitlines():
        if line.startswith("%"):
            current = line[1:].split()[0]
            sections[current] = ""
        elif current:
            sections[current] += line + "\n"
        elif ":" in line and not line.startswith("#"):
            key, value = line.split(":", 1)
            header[key.strip()] = value.strip()
    return header, sections


def test_readme_quick_start_is_two_commands():
    assert code_lines(readme_section("Quick start")) == ["bash scripts/demo.sh", "bash scripts/test.sh"]


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = code_lines(readme_section("Quick start"))[1]
    ci = [ln for ln in (REPO / ".ci" / "run").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert ci[-1] == test_command


def test_container_installs_are_the_scripts_installs():
    docker = pip_commands((REPO / "Dockerfile").read_text())
    apptainer = pip_commands(def_sections((REPO / "ketflow.def").read_text())[1]["post"])
    demo = pip_commands((REPO / "scripts" / "demo.sh").read_text())
    tests = pip_commands((REPO / "scripts" / "test.sh").read_text())
    assert len(docker) == len(apptainer) == len(demo) == len(tests) == 1
    container = pip_install(docker[0])
    assert container == pip_install(apptainer[0]) == pip_install(demo[0])
    assert container == dict(pip_install(tests[0]), extras="")
    assert pip_install(tests[0])["extras"] == "test"
    assert container["constraints"] == "requirements/constraints.txt" and container["spec"] == "."
    assert (REPO / container["constraints"]).is_file()


def test_apptainer_definition_matches_the_dockerfile():
    dockerfile = (REPO / "Dockerfile").read_text()
    header, sections = def_sections((REPO / "ketflow.def").read_text())
    assert header["Bootstrap"] == "docker"
    assert header["From"] == re.search(r"^FROM (\S+)", dockerfile, flags=re.M).group(1)
    assert set(sections) <= DEF_SECTIONS
    assert sections["runscript"].split() == ["exec", "ketflow", '"$@"']
    assert re.search(r'^ENTRYPOINT \["ketflow"\]', dockerfile, flags=re.M)
    for line in sections["files"].split("\n"):
        if line.strip():
            assert (REPO / line.split()[0]).exists(), line
    env = dict(re.findall(r"export (\w+)=(\S+)", sections["environment"]))
    for name, value in env.items():
        assert re.search(rf"\b{name}={re.escape(value)}\b", dockerfile), name


def test_container_versions_are_the_package_version():
    version = PYPROJECT["project"]["version"]
    labels = def_sections((REPO / "ketflow.def").read_text())[1]["labels"]
    assert f"org.opencontainers.image.version {version}" in labels
    assert f'org.opencontainers.image.version="{version}"' in (REPO / "Dockerfile").read_text()


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint not found: install the test extra (pip install -e '.[test]')"
    proc = subprocess.run([hadolint, "--config", str(REPO / ".hadolint.yaml"), str(REPO / "Dockerfile")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dependencies_are_pinned_in_the_constraints():
    pins = {}
    for line in (REPO / "requirements" / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    project = PYPROJECT["project"]
    requirements = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not pinned in requirements/constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{requirement.name}=={pins[name]} does not satisfy pyproject's '{requirement}'")


def test_version_is_the_pyproject_version():
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"ketflow {PYPROJECT['project']['version']}"


def test_shell_scripts_parse():
    scripts = sorted((REPO / "scripts").glob("*.sh")) + sorted((REPO / "scripts").glob("*.sbatch"))
    scripts.append(REPO / ".ci" / "run")
    for script in scripts:
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"{script}: {proc.stderr}"


def test_documented_scripts_exist():
    docs = (REPO / "README.md").read_text() + (REPO / "docs" / "clusters.md").read_text()
    named = set(re.findall(r"\bscripts/[\w.-]+", docs)) | set(re.findall(r"\bketflow\.def\b", docs))
    assert "scripts/slurm_array.sbatch" in named and "scripts/slurm_plugin_args.yml" in named
    for path in named:
        assert (REPO / path).is_file(), path
