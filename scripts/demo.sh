#!/usr/bin/env bash
# The main job (README): a full-size synthetic GlaS set (165 images, the
# download's exact layout) → shards of augmented patches → verify → inspect.
# Pass a real Warwick-QU folder to use it instead: scripts/demo.sh /path/to/Warwick_QU
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/histoshard-target}
cargo build --release --locked
bin="$CARGO_TARGET_DIR/release/histoshard"
out=${DEMO_OUT:-demo-out}
input=${1:-}
if [ -z "$input" ]; then
    input="$out/glas"
    [ -f "$input/Grade.csv" ] || "$bin" synth --output "$input" --images 165 --seed 42
fi
"$bin" prepare --input "$input" --output "$out/shards" --augment 2 --folds 5
"$bin" verify "$out/shards"
"$bin" inspect "$out/shards"
echo "demo: shards, manifest and contact sheet in $out/shards"
