#!/usr/bin/env bash
# The training step of EfficientNet-Lite0 (batch 16) side by side, in turn, for
# several rounds (docs/BENCHMARKS.md, "flex with its own training kernels"):
# burn + flex, burn + LibTorch (also with a channels-last input), PyTorch eager
# with its default allocator and with the allocator settings histoshard trains
# with, in its default layout and channels-last (the layout the plain PyTorch
# script of the real-tissue issue ends up in); optionally an older build of
# examples/bench_train as "before" (built with both backends, it runs on both).
# One JSON line per run, prefixed with the round, size and what ran.
#
#   bash scripts/bench_step_rounds.sh                     # 3 rounds, 112² and 224²
#   BEFORE=/path/to/old/bench_train ROUNDS=5 bash scripts/bench_step_rounds.sh
#
# Needs the torch venv (scripts/setup_torch_venv.sh) and a build of the example
# with both backends: cargo build --release --features tch --example bench_train.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/histoshard-target}
ex=${BENCH_TRAIN:-$CARGO_TARGET_DIR/release/examples/bench_train}
py=${TORCH_PYTHON:-$(bash scripts/setup_torch_venv.sh)/bin/python}
echo "# $(date -u +%FT%TZ) $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "${ROUNDS:-3}"); do
    for spec in "112 6" "224 3"; do
        read -r size steps <<<"$spec"
        common=(--model efficientnet-lite0 --batch-size 16 --size "$size" --steps "$steps" --warmup 1 --threads "${THREADS:-2}")
        for backend in "flex flex" "LibTorch cpu"; do
            read -r label device <<<"$backend"
            echo -n "round $round, $size², $label: "
            "$ex" "${common[@]}" --device "$device"
            if [ -n "${BEFORE:-}" ]; then
                echo -n "round $round, $size², $label before: "
                "$BEFORE" "${common[@]}" --device "$device"
            fi
        done
        echo -n "round $round, $size², PyTorch: "
        "$py" scripts/bench_torch_train.py "${common[@]}" --device cpu 2>&1 | grep -v gpuGetDeviceCount
        echo -n "round $round, $size², LibTorch, channels-last input: "
        "$ex" "${common[@]}" --device cpu --channels-last true
        echo -n "round $round, $size², PyTorch, histoshard's malloc settings: "
        MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 \
            "$py" scripts/bench_torch_train.py "${common[@]}" --device cpu 2>&1 | grep -v gpuGetDeviceCount
        # What glas_torch_reference.py runs: its tiles are NHWC arrays,
        # permuted, so PyTorch's kernels work channels-last.
        echo -n "round $round, $size², PyTorch channels-last, histoshard's malloc settings: "
        MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 \
            "$py" scripts/bench_torch_train.py "${common[@]}" --device cpu --channels-last 2>&1 | grep -v gpuGetDeviceCount
    done
done
echo "# $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
