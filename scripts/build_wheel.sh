#!/usr/bin/env bash
# Builds the histoshard wheel: the CLI (prepare, verify, inspect, synth; the
# crate with --no-default-features, so no burn and no LibTorch) as the
# `histoshard` command, plus the pure-Python package `histoshard` (python/).
#
#   scripts/build_wheel.sh [OUT_DIR]      # default dist/; prints the wheel's path
#
# Tagged manylinux2014 (glibc 2.17): maturin links through zig against glibc
# 2.17's symbols and refuses to tag a binary that needs newer ones, so the
# wheel installs on Colab and any x86-64 Linux with glibc >= 2.17.
#
# Environment:
#   HISTOSHARD_BUILD_VENV  venv with maturin and ziglang (default
#                          ~/.cache/histoshard-build; created with the pinned
#                          versions below when missing)
#   CARGO_TARGET_DIR       cargo's target dir (default ~/.cache/histoshard-target;
#                          the wheel's objects go to its x86_64-unknown-linux-gnu/)
set -euo pipefail

# ---- Build tools from PyPI (the versions tested). ----
PIP_PACKAGES=(maturin==1.16.0 ziglang==0.15.2)

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(realpath -m "${1:-$root/dist}")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/histoshard-target}

venv=${HISTOSHARD_BUILD_VENV:-$HOME/.cache/histoshard-build}
if ! [ -x "$venv/bin/maturin" ] || ! "$venv/bin/python" -c 'import ziglang' >/dev/null 2>&1; then
    echo "build_wheel: creating $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "${PIP_PACKAGES[@]}"
fi

# zig 0.15's clang (LLVM 20) wants `evex512` beside the AVX-512 target attributes of
# libdeflate's runtime-dispatched functions; the flag only allows 512-bit vectors where
# AVX-512 is already enabled (those functions), so nothing else changes.
export CFLAGS_x86_64_unknown_linux_gnu="${CFLAGS_x86_64_unknown_linux_gnu:-} -mevex512"

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n 1)
mkdir -p "$out"
rm -f "$out/histoshard-$version-"*.whl
# Byte code of local runs would go into the wheel with the sources.
find "$root/python" -name __pycache__ -type d -prune -exec rm -rf {} +
# maturin finds zig through the venv's Python (`python -m ziglang`).
(cd "$root/python" && PATH="$venv/bin:$PATH" maturin build --release --locked --zig \
    --compatibility manylinux2014 --out "$out" >&2)
wheel=$(ls "$out/histoshard-$version-"*.whl 2>/dev/null | head -n 1) || true
[ -n "$wheel" ] || { echo "build_wheel: maturin left no wheel in $out" >&2; exit 1; }
echo "$wheel"
