#!/usr/bin/env bash
# Install ketflow into ./.venv (pinned versions), simulate the demo dataset, and run the
# participant and group levels on it. Outputs land in ./demo/out (override with DEMO_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
export NIPYPE_NO_ET=1 MPLBACKEND=Agg
PYTHON=${PYTHON:-python3}
DEMO=${DEMO_DIR:-demo}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c requirements/constraints.txt -e .
rm -rf "$DEMO/bids"
.venv/bin/ketflow-simulate "$DEMO/bids" --subjects 6 --seed 1
.venv/bin/ketflow "$DEMO/bids" "$DEMO/out" participant -w "$DEMO/work" --nprocs 2
# --sloppy: 20 permutations and bootstraps instead of the configured 1000 (a 6-subject demo; testing only)
.venv/bin/ketflow "$DEMO/bids" "$DEMO/out" group -w "$DEMO/work" --nprocs 2 --sloppy
echo
echo "Demo finished. Simulated dataset (with ground_truth.json): $DEMO/bids"
echo "Participant outputs and reports: $DEMO/out (open $DEMO/out/sub-01.html)"
echo "Group outputs and report: $DEMO/out/group (open $DEMO/out/group.html)"
