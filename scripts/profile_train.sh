#!/usr/bin/env bash
# Per-operation profile of one training step (docs/BENCHMARKS.md): burn +
# flex and burn + LibTorch under `perf record` (only the timed steps: the
# example opens perf's control FIFO), PyTorch under torch.profiler, all
# grouped into the same operations by scripts/op_profile.py.
#
#   bash scripts/profile_train.sh                 # EfficientNet-Lite0, batch 16, 224², 2 threads
#   STEPS=3 THREADS=1 bash scripts/profile_train.sh
#
# The oneDNN lines time LibTorch's convolutions and layout reorders per
# primitive (ONEDNN_VERBOSE=1; warm-up steps included, so slower than steady
# state). Needs perf, the torch venv (scripts/setup_torch_venv.sh) and a build of
# the example: cargo build --release --features tch --example bench_train.
# Prints, per backend, the bench's JSON line then the grouped profile's.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/histoshard-target}
venv=${VENV:-$HOME/.cache/histoshard-torch}
ex="$CARGO_TARGET_DIR/release/examples/bench_train"
threads=${THREADS:-2}
steps=${STEPS:-3}
warmup=${WARMUP:-1}
freq=${FREQ:-199}
common=(--model efficientnet-lite0 --batch-size 16 --size 224 --steps "$steps" --warmup "$warmup" --threads "$threads")
# The allocator settings histoshard trains with, for PyTorch too.
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647

work=$(mktemp -d "${TMPDIR:-/tmp}/histoshard-profile.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "# $(date -u +%FT%TZ) $(nproc) cores, threads $threads, steps $steps; load: $(cut -d' ' -f1-3 /proc/loadavg)"
for device in ${DEVICES:-flex cpu}; do
    mkfifo "$work/ctl"
    echo -n "burn $device: "
    # ONEDNN_JIT_PROFILE=2: oneDNN names its JIT kernels in /tmp/perf-PID.map.
    # HISTOSHARD_IN_POOL: flex's step runs on a rayon worker, so the stacks
    # of its share of every parallel kernel name the operation.
    in_pool=; [ "$device" = flex ] && in_pool=1
    HISTOSHARD_IN_POOL=$in_pool ONEDNN_JIT_PROFILE=2 HISTOSHARD_PERF_CTL="$work/ctl" \
        perf record -q -e cpu-clock -F "$freq" --call-graph dwarf,16384 \
        --control "fifo:$work/ctl" -D -1 -o "$work/$device.data" -- \
        "$ex" "${common[@]}" --device "$device"
    perf script -i "$work/$device.data" -F tid,period,ip,sym,dso --no-inline 2>/dev/null |
        python3 scripts/op_profile.py perf --steps "$steps" --unknown "${UNKNOWN:-0}"
    if [ -n "${KEEP:-}" ]; then cp "$work/$device.data" "$KEEP-$device.data"; fi
    # oneDNN's perf map of that process.
    # (head closes the pipe early: perf's SIGPIPE must not stop the script.)
    pid=$(perf script -i "$work/$device.data" -F pid 2>/dev/null | head -1 | tr -d ' ' || true)
    if [ -n "$pid" ]; then rm -f "/tmp/perf-$pid.map"; fi
    rm -f "$work/ctl"
done
echo -n "pytorch: "
OP_PROFILE_UNKNOWN=${UNKNOWN:-0} "$venv/bin/python" scripts/bench_torch_train.py "${common[@]}" --profile 2>&1 |
    grep -v gpuGetDeviceCount
# Convolutions and layout reorders as oneDNN times them (LibTorch's CPU
# convolutions are oneDNN's, in burn-tch and in PyTorch alike).
total=$((steps + warmup))
echo -n "burn cpu, oneDNN primitives: "
ONEDNN_VERBOSE=1 "$ex" "${common[@]}" --device cpu 2>/dev/null |
    python3 scripts/op_profile.py onednn --steps "$total"
echo -n "pytorch, oneDNN primitives: "
ONEDNN_VERBOSE=1 "$venv/bin/python" scripts/bench_torch_train.py "${common[@]}" 2>/dev/null |
    python3 scripts/op_profile.py onednn --steps "$total"
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
