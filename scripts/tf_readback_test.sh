#!/usr/bin/env bash
# CI check that TensorFlow reads histoshard's shards unmodified.
#
#   scripts/tf_readback_test.sh
#
# Runs the Python fixture tests, then makes a synthetic GlaS set with the Rust
# binary, prepares it twice (PNG, uncompressed; JPEG, gzip), and checks every
# record with TF (scripts/tf_readback.py) against the manifest and the Rust
# reader's pixel digests.
#
# Environment:
#   HISTOSHARD_VENV      Python venv with TensorFlow (default ~/.cache/histoshard-venv;
#                        created with the pinned packages below when missing)
#   HISTOSHARD_BIN       the binary (default ${CARGO_TARGET_DIR:-target}/release/histoshard)
#   HISTOSHARD_KEEP_TMP  set to keep the temporary folder for inspection
set -euo pipefail

# ---- The Rust CLI as this test uses it: change flags here only. ----
SYNTH=(synth --images 30 --seed 7)                      # + --output DIR
PREPARE=(prepare --augment 1 --shards 2 --quiet)        # + --input DIR --output DIR
PREPARE_GZ=(--compression gzip --format jpeg --quality 90)
VERIFY=(verify)                                         # + DIR --pixel-digests FILE
# ---- Python packages of the venv (the versions tested). ----
PIP_PACKAGES=(tensorflow-cpu==2.21.0 numpy==2.4.6 pillow==13.0.0)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
cd "$root"

venv=${HISTOSHARD_VENV:-$HOME/.cache/histoshard-venv}
py=$venv/bin/python
if ! [ -x "$py" ] || ! "$py" -c 'import tensorflow, numpy, PIL' >/dev/null 2>&1; then
    echo "tf_readback_test: creating $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "${PIP_PACKAGES[@]}"
fi

bin=${HISTOSHARD_BIN:-${CARGO_TARGET_DIR:-target}/release/histoshard}
if ! [ -x "$bin" ]; then
    echo "tf_readback_test: no histoshard binary at $bin (cargo build --release, or set HISTOSHARD_BIN)" >&2
    exit 1
fi

export TF_CPP_MIN_LOG_LEVEL=2
echo "tf_readback_test: fixture tests" >&2
"$py" scripts/test_histoshard_tf.py

tmp=$(mktemp -d "${TMPDIR:-/tmp}/histoshard-tf.XXXXXX")
if [ -z "${HISTOSHARD_KEEP_TMP:-}" ]; then
    trap 'rm -rf "$tmp"' EXIT
else
    echo "tf_readback_test: keeping $tmp" >&2
fi

"$bin" "${SYNTH[@]}" --output "$tmp/glas"

run_case() {  # NAME [extra prepare flags...]
    local name=$1
    shift
    echo "tf_readback_test: $name" >&2
    "$bin" "${PREPARE[@]}" "$@" --input "$tmp/glas" --output "$tmp/$name"
    "$bin" "${VERIFY[@]}" "$tmp/$name" --pixel-digests "$tmp/$name.digests.csv"
    "$py" scripts/tf_readback.py "$tmp/$name" --pixel-digests "$tmp/$name.digests.csv"
}

run_case png
run_case gz "${PREPARE_GZ[@]}"
echo "tf_readback_test: ok" >&2
