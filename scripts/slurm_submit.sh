#!/usr/bin/env bash
# Submit ketflow to SLURM: the participant level as a job array (one participant per task,
# scripts/slurm_array.sbatch) and the group level (scripts/slurm_group.sbatch) as a job that
# starts only once every array task has succeeded.
#
#   bash scripts/slurm_submit.sh BIDS_DIR OUT_DIR SUBJECTS_FILE [ketflow options for both levels]
#
# SUBJECTS_FILE: one participant label per line.  $KETFLOW_SBATCH_ARGS (e.g.
# "--partition=short --account=lab") is added to both submissions; $KETFLOW and
# $KETFLOW_WORK_ROOT reach the jobs through sbatch's exported environment.
# Prints the two job ids.
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: bash $0 BIDS_DIR OUT_DIR SUBJECTS_FILE [ketflow options]" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
bids=$(realpath "$1") out=$(realpath -m "$2") subjects=$(realpath "$3")
shift 3
n=$(grep -c . "$subjects" || true)
if [ "$n" -eq 0 ]; then
    echo "$subjects lists no participants" >&2
    exit 2
fi
read -r -a extra <<< "${KETFLOW_SBATCH_ARGS:-}"
array=$(sbatch --parsable --array="1-$n" "${extra[@]}" "$here/slurm_array.sbatch" "$bids" "$out" "$subjects" "$@")
array=${array%%;*}  # --parsable prints "id[;cluster]"
group=$(sbatch --parsable --dependency="afterok:$array" "${extra[@]}" "$here/slurm_group.sbatch" "$bids" "$out" "$@")
echo "participant array: job $array ($n tasks); group level: job ${group%%;*} (after every task succeeded)"
