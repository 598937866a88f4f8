#!/usr/bin/env bash
# Three everyday photos for checking an ImageNet classifier by eye (a cat, a
# cup of coffee, a rocket launch): scikit-image ships them inside its wheel,
# and PyPI is the only outside source our machines reach. They are free of
# copyright: chelsea.png and coffee.png are CC0 (Stefan van der Walt, Rachel
# Michetti), rocket.jpg is SpaceX's public-domain DSCOVR launch photo.
#
#   scripts/fetch_photos.sh
#
# Prints the folder, $HISTOSHARD_WEIGHTS_DIR/photos, which then holds
# chelsea.png (451×300, a tabby cat), coffee.png (600×400) and rocket.jpg
# (640×427), each sha256-pinned. Files already there with the right sha256 are
# kept (no network: idempotent, offline once cached); new ones appear
# atomically (temporary name + mv).
#
# Environment:
#   HISTOSHARD_WEIGHTS_DIR  the cache (default ~/.cache/histoshard/weights)
#   HISTOSHARD_PIP          the pip to run (default: python3 -m pip)
set -euo pipefail

# ---- Pins. The wheel is named in full (CPython 3.11, manylinux x86_64) so
# every machine downloads the same file, whatever its own Python. ----
SKIMAGE=scikit-image==0.25.2
WHEEL_TAGS=(--python-version 3.11 --implementation cp --abi cp311
    --platform manylinux_2_17_x86_64)
photo_sha256() {  # NAME -> sha256
    case $1 in
    chelsea.png) echo 596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb ;;
    coffee.png) echo cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7 ;;
    rocket.jpg) echo c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c ;;
    esac
}
PHOTOS=(chelsea.png coffee.png rocket.jpg)

SCRIPT=fetch_photos
# shellcheck source=scripts/lib/wheel.sh
. "$(dirname "$0")/lib/wheel.sh"

dir=${HISTOSHARD_WEIGHTS_DIR:-$HOME/.cache/histoshard/weights}/photos
mkdir -p "$dir" || die "cannot create $dir"

missing=()
for name in "${PHOTOS[@]}"; do
    if ! [ -f "$dir/$name" ] || [ "$(sha256 "$dir/$name")" != "$(photo_sha256 "$name")" ]; then
        missing+=("$name")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "$dir"
    exit 0
fi

tmp=$(mktemp -d "$dir/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "fetch_photos: for ${missing[*]}" >&2
wheel=$(download_wheel "$SKIMAGE" "$tmp/wheel" "${WHEEL_TAGS[@]}")

for name in "${missing[@]}"; do
    member=skimage/data/$name
    extract_member "$wheel" "$member" "$tmp/$name"
    [ "$(sha256 "$tmp/$name")" = "$(photo_sha256 "$name")" ] ||
        die "$member in $(basename "$wheel") does not have the pinned sha256 $(photo_sha256 "$name")"
    mv -f "$tmp/$name" "$dir/$name"
done
echo "$dir"
