#!/usr/bin/env bash
# histoshard on a CUDA GPU (docs/BENCHMARKS.md, "train on CUDA"): the convolution
# gradients of LibTorch (CPU and CUDA) against flex, the training step of
# burn-tch against PyTorch eager on the same GPU, then EfficientNet-Lite0's
# operations one by one (examples/bench_ops.rs against scripts/bench_torch_ops.py),
# `histoshard demo` end to end
# on CUDA, and CPU-vs-CUDA predictions of the demo's models.
#
#   bash scripts/gpu_check.sh                 # builds with cargo, against the active python's torch
#   BIN=DIR WEIGHTS=lite0.pth bash scripts/gpu_check.sh
#
# BIN: a folder with `histoshard`, `bench_train`, `bench_ops` and `libtorch_gradients`
# (the test binary of tests/libtorch_gradients.rs) built --features tch against the same
# torch version as this machine's python (see docs/BENCHMARKS.md for building
# on another machine). WEIGHTS: EfficientNet-Lite0's .pth [default: the cache
# of scripts/fetch_weights.sh]. Needs `efficientnet_lite_pytorch` importable for
# the PyTorch EfficientNet step. Everything is written to OUT [default: a temp dir].
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
out=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/histoshard-gpu.XXXXXX")}
mkdir -p "$out"
weights=${WEIGHTS:-$HOME/.cache/histoshard/weights/efficientnet-lite0.pth}
torch_lib=$("$py" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ -z "${BIN:-}" ]; then
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/histoshard-target}
    export LIBTORCH_USE_PYTORCH=1
    cargo build --release --locked --features tch --bin histoshard --example bench_train --example bench_ops
    test_bin=$(cargo test --release --locked --features tch --test libtorch_gradients --no-run 2>&1 |
        sed -n 's/.*Executable.*(\(.*\))/\1/p')
    BIN=$(mktemp -d)
    ln -s "$CARGO_TARGET_DIR/release/histoshard" "$CARGO_TARGET_DIR/release/examples/bench_train" \
        "$CARGO_TARGET_DIR/release/examples/bench_ops" "$BIN/"
    ln -s "$test_bin" "$BIN/libtorch_gradients"
fi
date -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'

echo "== convolution gradients: LibTorch CPU and CUDA against flex"
"$BIN/libtorch_gradients" --nocapture || echo "FAILED: libtorch_gradients"

echo "== training step on CUDA: PyTorch eager, then burn + LibTorch (as histoshard trains)"
for spec in "cnn 32 224 40 5" "efficientnet-lite0 32 224 40 5" "efficientnet-lite0 128 224 20 5"; do
    read -r model batch size steps warmup <<<"$spec"
    args=(--model "$model" --batch-size "$batch" --size "$size" --steps "$steps" --warmup "$warmup" --threads 8 --device cuda)
    echo -n "pytorch  $spec: "; timeout 300 "$py" scripts/bench_torch_train.py "${args[@]}"
    echo -n "burn-tch $spec: "; timeout 300 "$BIN/bench_train" "${args[@]}"
done

echo "== EfficientNet-Lite0's operations on CUDA, one by one: PyTorch eager, then burn + LibTorch"
# Same cases, shapes and JSON lines on both sides (see the header of examples/bench_ops.rs);
# dw3x3_s2_sym / effnet_lite0_s1sym against dw3x3_s2 / effnet_lite0 isolate the
# asymmetric "SAME" padding, pad_asym and full the padding itself.
ops_args=(--device cuda --batch-size 32 --threads 8 --iters 10 --warmup 2)
echo "pytorch:"
timeout 240 "$py" scripts/bench_torch_ops.py "${ops_args[@]}" | tee "$out/ops_torch.jsonl" ||
    echo "FAILED or timed out: bench_torch_ops.py"
echo "burn-tch:"
timeout 240 "$BIN/bench_ops" "${ops_args[@]}" | tee "$out/ops_burn.jsonl" ||
    echo "FAILED or timed out: bench_ops"
"$py" - "$out/ops_torch.jsonl" "$out/ops_burn.jsonl" <<'PY'
import json, sys
def load(path):
    try:
        return {r["case"]: r for r in map(json.loads, open(path)) if "error" not in r}
    except (OSError, ValueError):
        return {}
torch, burn = load(sys.argv[1]), load(sys.argv[2])
print(f"{'case':20} {'torch fwd':>10} {'burn fwd':>10} {'×':>7} {'torch f+b':>10} {'burn f+b':>10} {'×':>7}")
for case, b in burn.items():
    t = torch.get(case, {})
    cells = []
    for key in ("fwd_ms", "fwd_bwd_ms"):
        tv, bv = t.get(key), b.get(key)
        ratio = f"{bv / tv:.1f}" if tv and bv else "-"
        cells += [f"{tv if tv is not None else '-':>10}", f"{bv if bv is not None else '-':>10}", f"{ratio:>7}"]
    print(f"{case:20} " + " ".join(cells))
PY

echo "== histoshard demo on CUDA"
start=$SECONDS
"$BIN/histoshard" demo --output "$out/demo" --device cuda --weights "$weights"
echo "demo: exit $? after $((SECONDS - start)) s"

echo "== the demo's models: CPU against CUDA predictions of the same weights"
images=$(ls "$out"/demo/glas/testA_*.bmp | head -8)
for run in "$out"/demo/compare/*/; do
    model=$(basename "$run")
    for d in cuda cpu; do
        # shellcheck disable=SC2086 # one argument per image
        "$BIN/histoshard" -q predict --run "$run" --device "$d" --csv "$out/pred_${model}_$d.csv" $images >/dev/null ||
            echo "FAILED: predict $model on $d"
    done
done
"$py" - "$out" <<'PY'
import csv, glob, os, sys
for cuda in sorted(glob.glob(os.path.join(sys.argv[1], "pred_*_cuda.csv"))):
    a = list(csv.DictReader(open(cuda)))
    b = list(csv.DictReader(open(cuda.replace("_cuda.csv", "_cpu.csv"))))
    keys = [k for k in a[0] if k.startswith("p_")]
    diff = max(abs(float(x[k]) - float(y[k])) for x, y in zip(a, b) for k in keys)
    same = all(x["label"] == y["label"] for x, y in zip(a, b))
    print(f"{os.path.basename(cuda)}: {len(a)} images, max |Δp| {diff:.2g}, same labels: {same}")
PY
echo "== done in $SECONDS s; output in $out"
