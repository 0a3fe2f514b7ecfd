#!/usr/bin/env bash
# Install ketflow with its test extra into ./.venv (pinned versions) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export NIPYPE_NO_ET=1 MPLBACKEND=Agg
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c requirements/constraints.txt -e ".[test]"
.venv/bin/hadolint Dockerfile
.venv/bin/python -m pytest -n 2 --durations=15 "$@"
