#!/usr/bin/env bash
# histoshard against the plain PyTorch script (scripts/glas_torch_reference.py)
# on the real GlaS training images, by patient-grouped cross-validation: the
# same folds (histoshard prepare --folds 5 assigns them; the script reads them
# from the manifest), several seeds, image- and patch-level accuracy and AUC
# and wall time of each. Results: docs/RESULTS.md.
#
#   bash scripts/bench_glas.sh GLAS_TRAIN_DIR [OUT]
#
# GLAS_TRAIN_DIR: the 85 training images in the download's layout
# (../shared/glas-real/make_glas_train.py rebuilds them). Environment:
#   SEEDS="1 2 3"        seeds of both tools
#   HS_MODEL=efficientnet-lite0   the model histoshard trains
#   HS_EPOCHS="--freeze-epochs 4 --epochs 3"   its epochs (the issue's pinned job)
#   HS_ARGS="..."        extra `histoshard train` options (a recipe to try)
#   PREP_ARGS="..."      extra `histoshard prepare` options
#   TOOLS="histoshard pytorch"
#   THREADS              threads of both tools (default: every core; 1 on a
#                        machine busy with other work, where 2-thread OpenMP
#                        barriers stall)
#   HISTOSHARD_BIN       the binary (default: the release build)
#   TORCH_PYTHON         Python with torch (default: scripts/setup_torch_venv.sh's)
set -euo pipefail
cd "$(dirname "$0")/.."
glas=${1:?usage: bench_glas.sh GLAS_TRAIN_DIR [OUT]}
out=${2:-bench-glas}
seeds=${SEEDS:-1 2 3}
model=${HS_MODEL:-efficientnet-lite0}
epochs=${HS_EPOCHS:---freeze-epochs 4 --epochs 3}
recipe="--model $model $epochs ${HS_ARGS:-}${PREP_ARGS:+ (prepare ${PREP_ARGS})}"
tools=${TOOLS:-histoshard pytorch}
threads=${THREADS:-$(nproc)}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/histoshard-target}
bin=${HISTOSHARD_BIN:-$CARGO_TARGET_DIR/release/histoshard}
[ -x "$bin" ] || cargo build --release --locked
py=${TORCH_PYTHON:-$(bash scripts/setup_torch_venv.sh)/bin/python}
bash scripts/fetch_weights.sh lite0 >/dev/null
mkdir -p "$out"
results=$out/results.jsonl

shards=$out/shards
# The demo's preparation (half magnification, 112-px patches, one augmented
# copy), with 5 patient-grouped folds.
# shellcheck disable=SC2086
"$bin" -q prepare -i "$glas" -o "$shards" --scale 0.5 --patch-size 112 --augment 1 \
    --folds 5 --seed 42 --overwrite ${PREP_ARGS:-}

now() { date +%s.%N; }
for seed in $seeds; do
    if [[ " $tools " == *" histoshard "* ]]; then
        run=$out/histoshard-seed$seed
        rm -rf "$run"
        t0=$(now)
        # shellcheck disable=SC2086
        "$bin" -q --threads "$threads" train --data "$shards" --output "$run" --seed "$seed" --cv 5 \
            --model "$model" $epochs ${HS_ARGS:-}
        t1=$(now)
        "$py" - "$run/cv.json" "$seed" "$t0" "$t1" "$recipe" >>"$results" <<'PY'
import json, sys
cv = json.load(open(sys.argv[1]))
seed, t0, t1, args = int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
for f in cv["folds"]:
    s = f["scores"]
    print(json.dumps({"tool": "histoshard", "args": args, "seed": seed, "fold": f["fold"],
        "images": s["images"], "patches": s["patches"],
        "image_accuracy": s["image_mean"]["accuracy"]["value"],
        "image_auc": s["image_mean"]["roc_auc"]["value"],
        "patch_accuracy": s["patch"]["accuracy"]["value"],
        "patch_auc": s["patch"]["roc_auc"]["value"],
        "kept_epoch": f["kept"]["epoch"],
        "seconds": (t1 - t0) / len(cv["folds"])}))
PY
    fi
    if [[ " $tools " == *" pytorch "* ]]; then
        for fold in 0 1 2 3 4; do
            "$py" scripts/glas_torch_reference.py --glas "$glas" --folds-from "$shards" \
                --fold "$fold" --seed "$seed" --threads "$threads" >>"$results"
        done
    fi
done
"$py" scripts/glas_cv_summary.py "$results" | tee "$out/summary.md"
