#!/usr/bin/env bash
# Time to a result on the real GlaS job (the training-speed issue), histoshard
# against the plain PyTorch script (scripts/glas_torch_reference.py), side by
# side in one session: the same 85 training images, the same epochs
# (EfficientNet-Lite0, 4 head + 3 fine-tune epochs), each tool then scoring the
# same images. Every other histoshard option is at its default, with the
# default build (flex) unless HISTOSHARD_BIN names another. Reports wall time,
# CPU time and cores used (CPU / wall) of each step.
#
#   bash scripts/bench_time_to_result.sh GLAS_TRAIN_DIR SCORE_DIR [OUT]
#
# GLAS_TRAIN_DIR: the 85 training images in the download's layout
# (../shared/glas-real/make_glas_train.py); SCORE_DIR: a Warwick-QU layout
# folder of images to score (e.g. ../shared/glas-sample). The official test
# images are never used here: this measures time, and scores only to show
# each tool produced a model. Environment: SEED (1), THREADS (every core),
# TORCH_PYTHON, HISTOSHARD_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
glas=${1:?usage: bench_time_to_result.sh GLAS_TRAIN_DIR SCORE_DIR [OUT]}
score=${2:?usage: bench_time_to_result.sh GLAS_TRAIN_DIR SCORE_DIR [OUT]}
out=${3:-bench-time-to-result}
seed=${SEED:-1}
threads=${THREADS:-$(nproc)}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/histoshard-target}
bin=${HISTOSHARD_BIN:-}
if [ -z "$bin" ]; then
    # The default build: what `cargo install` gives (flex).
    cargo build --release --locked --bin histoshard
    bin=$CARGO_TARGET_DIR/release/histoshard
fi
py=${TORCH_PYTHON:-$(bash scripts/setup_torch_venv.sh)/bin/python}
bash scripts/fetch_weights.sh lite0 >/dev/null
rm -rf "$out"
mkdir -p "$out"

# Runs a step under GNU time's format: "label wall user sys".
timed() {
    local label=$1
    shift
    /usr/bin/env time -f "$label %e %U %S" -o "$out/$label.time" "$@"
}
images=$(find "$score" -maxdepth 1 -name '*.bmp' ! -name '*_anno.bmp' | sort)

echo "# $(date -u +%FT%TZ) $(nproc) cores, threads $threads, seed $seed, $($bin --version)"
# shellcheck disable=SC2086
timed hs-prepare "$bin" -q --threads "$threads" prepare -i "$glas" -o "$out/shards" \
    --scale 0.5 --patch-size 112 --augment 1 --seed 42
timed hs-train "$bin" -q --threads "$threads" train --data "$out/shards" -o "$out/run" \
    --model efficientnet-lite0 --freeze-epochs 4 --epochs 3 --seed "$seed"
# shellcheck disable=SC2086
timed hs-predict "$bin" -q --threads "$threads" predict --run "$out/run" \
    --csv "$out/histoshard-scores.csv" $images
timed pytorch "$py" scripts/glas_torch_reference.py --glas "$glas" --test-dir "$score" \
    --seed "$seed" --threads "$threads" >"$out/pytorch.json"

"$py" - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
t = {}
for f in out.glob("*.time"):
    label, wall, user, sys_ = f.read_text().split()[-4:]
    t[label] = (float(wall), float(user) + float(sys_))
torch = json.loads((out / "pytorch.json").read_text())
hs = [t[k] for k in ("hs-prepare", "hs-train", "hs-predict")]
hs_wall, hs_cpu = sum(w for w, _ in hs), sum(c for _, c in hs)
pt_wall, pt_cpu = t["pytorch"]
rows = [
    ("histoshard prepare", *t["hs-prepare"]),
    ("histoshard train", *t["hs-train"]),
    ("histoshard predict", *t["hs-predict"]),
    ("histoshard, all three", hs_wall, hs_cpu),
    ("PyTorch script (load, tile, train, score)", pt_wall, pt_cpu),
]
print("| step | wall s | CPU s | cores used |")
print("|---|---|---|---|")
for name, wall, cpu in rows:
    print(f"| {name} | {wall:.1f} | {cpu:.1f} | {cpu / max(wall, 1e-9):.2f} |")
print(f"\nhistoshard / PyTorch wall time: {hs_wall / pt_wall:.2f}×"
      f" (train alone: {t['hs-train'][0] / pt_wall:.2f}×);"
      f" PyTorch's own training part: {torch['train_seconds']} s")
PY
