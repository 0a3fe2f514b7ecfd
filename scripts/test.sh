#!/usr/bin/env bash
# Install ketflow with its test extra into ./.venv (pinned versions) and run the test suite.
#
# Some tests need system programs: a local SLURM cluster (Debian's slurm-wlm and munge, for
# tests/test_cli_slurm.py) and a headless browser (chromium, for the report test).  When they are
# missing and apt-get is usable as root, they are installed first (quietly, non-interactively);
# otherwise, or if apt-get fails, the run goes on and those tests skip, saying why.
# Set KETFLOW_NO_APT=1 to never call apt-get.  Arguments are passed to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export NIPYPE_NO_ET=1 MPLBACKEND=Agg
# One BLAS/OpenMP thread per process: the suite runs two pytest-xdist workers on two cores, and
# threaded BLAS in each oversubscribed them (a 2 s DCM test took 170 s under load).
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
PYTHON=${PYTHON:-python3}

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

install_system_packages() {
    local missing=()
    { have slurmctld && have slurmd && have sbatch; } || missing+=(slurm-wlm)
    { have munged && have mungekey; } || missing+=(munge)
    have chromium || missing+=(chromium)
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ -n "${KETFLOW_NO_APT:-}" ] || [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "test.sh: ${missing[*]} not installed (installing needs root and apt-get); the tests using them will skip"
        return 0
    fi
    echo "test.sh: installing ${missing[*]} with apt-get"
    local log
    log=$(mktemp)
    # Install from the package lists on disk; update them only when that fails.
    if DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 "${missing[@]}" >"$log" 2>&1 \
        || { DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$log" 2>&1 \
             && DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 "${missing[@]}" >>"$log" 2>&1; }; then
        rm -f "$log"
    else
        echo "test.sh: apt-get could not install ${missing[*]} (see $log); the tests using them will skip"
    fi
}

install_system_packages
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c requirements/constraints.txt -e ".[test]"
# --dist loadfile: each test file runs on one worker, so its expensive fixtures (a simulated
# study, a participant run, the local SLURM cluster) are built once. (With pytest 9.2 and
# pytest-xdist 3.8, --dist loadgroup ignored xdist_group marks: tests of one group were split.)
.venv/bin/python -m pytest -n 2 --dist loadfile --durations=15 "$@"
