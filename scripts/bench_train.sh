#!/usr/bin/env bash
# Training throughput (docs/BENCHMARKS.md): histoshard's training step on
# LibTorch (burn-tch) and on flex against PyTorch eager doing the same step
# (same network, batch, image size and thread count; one random batch held on
# the device), then the streaming loader alone on 224-px PNG shards. burn
# runs with and without the allocator settings histoshard trains with
# (src/alloc.rs); PyTorch too, with the same settings through glibc's
# MALLOC_* variables, so the comparison stays fair.
#
#   bash scripts/bench_train.sh            # THREADS=2 by default
#
# Needs the torch venv (scripts/setup_torch_venv.sh installs it). With a
# CUDA GPU visible, the LibTorch and PyTorch CUDA steps are measured too.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/histoshard-target}
venv=$(bash scripts/setup_torch_venv.sh)
export LIBTORCH_USE_PYTORCH=1 VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH"
cargo build --release --locked --features tch --example bench_train --bin histoshard
ex="$CARGO_TARGET_DIR/release/examples/bench_train"
bin="$CARGO_TARGET_DIR/release/histoshard"
threads=${THREADS:-2}

devices=(cpu)
if "$venv/bin/python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    devices+=(cuda)
fi
echo "# $(date -u +%FT%TZ) $(nproc) cores, threads $threads"
for spec in "cnn 32 224 10 2" "efficientnet-lite0 16 224 4 1"; do
    read -r model batch size steps warmup <<<"$spec"
    common=(--model "$model" --batch-size "$batch" --size "$size" --steps "$steps" --warmup "$warmup" --threads "$threads")
    for d in "${devices[@]}"; do
        echo -n "pytorch, default malloc: "
        "$venv/bin/python" scripts/bench_torch_train.py "${common[@]}" --device "$d"
        echo -n "pytorch, histoshard's malloc settings: "
        MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 \
            "$venv/bin/python" scripts/bench_torch_train.py "${common[@]}" --device "$d"
        echo -n "burn, default malloc: "
        HISTOSHARD_DEFAULT_MALLOC=1 "$ex" "${common[@]}" --device "$d"
        echo -n "burn (as histoshard trains): "
        "$ex" "${common[@]}" --device "$d"
    done
    echo -n "burn (as histoshard trains): "
    "$ex" "${common[@]}" --device flex
done

data=$(mktemp -d "${TMPDIR:-/tmp}/histoshard-bench-train.XXXXXX")
trap 'rm -rf "$data"' EXIT
"$bin" -q synth --output "$data/raw" --images 40 --seed 1
"$bin" -q prepare --input "$data/raw" --output "$data/shards" --augment 2
for w in 1 2; do
    "$ex" --loader "$data/shards" --batch-size 32 --workers "$w" --threads "$threads"
done
