#!/usr/bin/env bash
# The test command (README): builds once in release (tests share the
# binary's profile, so dependencies compile once), runs the Rust tests, then
# checks that TensorFlow reads the shards unmodified (it installs TensorFlow
# into a venv on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/histoshard-target}
cargo build --release --locked --all-targets
cargo test --release --locked
HISTOSHARD_BIN="$CARGO_TARGET_DIR/release/histoshard" bash scripts/tf_readback_test.sh
