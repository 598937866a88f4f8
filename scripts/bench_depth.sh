#!/usr/bin/env bash
# Time of one cross-validation fold of EfficientNet-Lite0 (4 head + 3
# fine-tuning epochs) by the depth of fine-tuning: every block, or the last N
# from cached activations of the blocks below (docs/BENCHMARKS.md; the
# accuracy of each depth is in docs/RESULTS.md §1).
#
#   bash scripts/bench_depth.sh SHARDS [FOLD]
#
# SHARDS: a set prepared with --folds (scripts/bench_glas.sh writes one to
# OUT/shards). Environment: DEPTHS ("all last:13 last:11 last:8"), THREADS
# (every core), SEED (1), HISTOSHARD_BIN (the release build).
set -euo pipefail
cd "$(dirname "$0")/.."
shards=${1:?usage: bench_depth.sh SHARDS [FOLD]}
fold=${2:-1}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/histoshard-target}
bin=${HISTOSHARD_BIN:-$CARGO_TARGET_DIR/release/histoshard}
threads=${THREADS:-$(nproc)}
runs=$(mktemp -d)
trap 'rm -rf "$runs"' EXIT
echo "# $(date -u +%FT%TZ) fold $fold, $threads threads, load $(cut -d' ' -f1-3 /proc/loadavg)"
for depth in ${DEPTHS:-all last:13 last:11 last:8}; do
    start=$(date +%s.%N)
    "$bin" -q --threads "$threads" train --data "$shards" --output "$runs/$depth" \
        --seed "${SEED:-1}" --fold "$fold" --model efficientnet-lite0 \
        --freeze-epochs 4 --epochs 3 --unfreeze "$depth"
    awk -v d="$depth" -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%s %.1f s\n", d, b - a }'
done
