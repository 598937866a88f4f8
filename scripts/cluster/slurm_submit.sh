#!/usr/bin/env bash
# Prepares one data set on a Slurm cluster: an array of N workers (at most K
# at a time), then `histoshard merge` once every worker has succeeded.
#
#   scripts/cluster/slurm_submit.sh -n N [-k K] [-c CPUS] -- -i INPUT -o OUTPUT [prepare options...]
#
# Every array task runs `histoshard prepare ... ` with the same options; it
# takes its worker number from SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT.
# INPUT and OUTPUT must be on a file system every node sees, at the same path.
# The merge job waits for the whole array (--dependency=afterok); if a task
# fails, the merge is never started: resubmit that task alone
#   sbatch --array=I ... (the same command)
# then the merge (or run `histoshard merge OUTPUT` by hand).
#
# Environment: HISTOSHARD (the binary; default: `histoshard` on PATH),
# SBATCH_EXTRA (more sbatch options for both jobs, e.g. "--partition=cpu --time=2:00:00").
# Prints the two job ids (array, merge) on one line.
set -euo pipefail

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
n="" k="" cpus=""
while [ $# -gt 0 ]; do
    case "$1" in
        -n) n="$2"; shift 2 ;;
        -k) k="$2"; shift 2 ;;
        -c) cpus="$2"; shift 2 ;;
        --) shift; break ;;
        -h|--help) usage ;;
        *) echo "unknown option $1" >&2; usage ;;
    esac
done
[ -n "$n" ] && [ "$n" -ge 1 ] 2>/dev/null || { echo "-n N (workers, ≥ 1) is required" >&2; usage; }
[ $# -gt 0 ] || { echo "prepare options (-i INPUT -o OUTPUT ...) follow --" >&2; usage; }
k="${k:-$n}"
bin="${HISTOSHARD:-histoshard}"

# The output folder, for the merge.
output=""
prev=""
for a in "$@"; do
    case "$prev" in -o|--output) output="$a" ;; esac
    case "$a" in --output=*) output="${a#--output=}" ;; esac
    prev="$a"
done
[ -n "$output" ] || { echo "prepare options must name the output folder (-o OUTPUT)" >&2; exit 2; }

# %q quoting survives --wrap's `sh -c`.
prepare_cmd=$(printf '%q ' "$bin" prepare "$@")
merge_cmd=$(printf '%q ' "$bin" merge "$output")
cpu_opt=()
[ -n "$cpus" ] && cpu_opt=(--cpus-per-task="$cpus")
# shellcheck disable=SC2086
array=$(sbatch --parsable ${SBATCH_EXTRA:-} "${cpu_opt[@]}" \
    --job-name=histoshard-prepare --array="0-$((n - 1))%$k" \
    --output="histoshard-prepare-%A_%a.log" --wrap="$prepare_cmd")
array="${array%%;*}"
# shellcheck disable=SC2086
merge=$(sbatch --parsable ${SBATCH_EXTRA:-} --job-name=histoshard-merge \
    --dependency="afterok:$array" --kill-on-invalid-dep=yes \
    --output="histoshard-merge-%j.log" --wrap="$merge_cmd")
merge="${merge%%;*}"
echo "$array $merge"
