#!/usr/bin/env bash
# CI check of the Python side as users get it: the wheel.
#
#   scripts/wheel_test.sh
#
# 1. Builds the wheel (scripts/build_wheel.sh) and checks its platform tag
#    (manylinux2014 / glibc 2.17, also by the binary's GLIBC_ symbol versions).
# 2. Installs it into fresh venvs run with a bare environment
#    (env -i PATH=VENV/bin:/usr/bin:/bin: no cargo, no rustc on PATH).
# 3. With the installed `histoshard`: synth -> prepare (PNG with --folds;
#    JPEG + gzip without) -> verify --pixel-digests; then every record back
#    through the installed `histoshard.tf` (scripts/tf_readback.py) and `histoshard.torch`
#    (scripts/torch_readback.py): counts, labels, manifest columns, pixels
#    against the manifest and the Rust reader.
# 4. Runs both notebooks headless (scripts/run_notebook.py, nbclient), each
#    installing the wheel itself; the Colab one with the offline stand-in for
#    its TF-Hub download (HISTOSHARD_NOTEBOOK_OFFLINE=1).
#
# The venvs reuse what is installed: a fresh venv sees, through a .pth file,
# a persistent "layer" venv (notebook tools, crc32c, ...) and under it the
# TensorFlow venv of tf_readback_test.sh or the PyTorch venv of
# setup_torch_venv.sh, so neither TensorFlow nor PyTorch is installed twice.
#
# Environment:
#   HISTOSHARD_VENV        TensorFlow venv (default ~/.cache/histoshard-venv; tf_readback_test.sh makes it)
#   HISTOSHARD_TORCH_VENV  PyTorch venv (default ~/.cache/histoshard-torch; setup_torch_venv.sh makes it)
#   HISTOSHARD_WHEEL       test this wheel instead of building one
#   HISTOSHARD_KEEP_TMP    set to keep the temporary folder (executed notebooks included)
set -euo pipefail

# ---- The Rust CLI as this test uses it: change flags here only. ----
SYNTH=(synth --images 30 --seed 7)                      # + --output DIR
PREPARE=(prepare --augment 1 --shards 2 --quiet)        # + --input DIR --output DIR
PREPARE_PNG=(--folds 3)                                 # folds in one case, none in the other
PREPARE_GZ=(--compression gzip --format jpeg --quality 90)
# ---- Python packages of the layers (the versions tested). ----
# tf-keras and tensorflow-hub go in --no-deps: tf-keras asks for `tensorflow`,
# the venv has `tensorflow-cpu` of the same version.
TF_LAYER=(nbclient==0.11.0 nbformat==5.11.1 ipykernel==7.4.0 matplotlib==3.11.2 crc32c==2.9.post0 polars==2.1.0)
TF_LAYER_NODEPS=(tf-keras==2.21.0 tensorflow-hub==0.16.1)
TORCH_LAYER=(nbclient==0.11.0 nbformat==5.11.1 ipykernel==7.4.0 crc32c==2.9.post0 polars==2.1.0 pandas==3.1.1)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
cd "$root"
say() { echo "wheel_test: $*" >&2; }
t0=$SECONDS

tmp=$(mktemp -d "${TMPDIR:-/tmp}/histoshard-wheel.XXXXXX")
if [ -z "${HISTOSHARD_KEEP_TMP:-}" ]; then
    trap 'rm -rf "$tmp"' EXIT
else
    say "keeping $tmp"
fi

# ---- 1. The wheel and its tag ----
if [ -n "${HISTOSHARD_WHEEL:-}" ]; then
    wheel=$(realpath "$HISTOSHARD_WHEEL")
else
    start=$SECONDS
    wheel=$(bash scripts/build_wheel.sh "$tmp/dist")
    say "built $(basename "$wheel") in $((SECONDS - start)) s"
fi
python3 - "$wheel" <<'PY'
import re, sys, zipfile
path = sys.argv[1]
name = path.rsplit("/", 1)[-1]
with zipfile.ZipFile(path) as z:
    tags = [l.split(":", 1)[1].strip() for l in z.read(next(n for n in z.namelist() if n.endswith(".dist-info/WHEEL"))).decode().splitlines() if l.startswith("Tag:")]
    binary = z.read(next(n for n in z.namelist() if n.endswith(".data/scripts/histoshard")))
    members = z.namelist()
glibc = max((tuple(map(int, m)) for m in re.findall(rb"GLIBC_(\d+)\.(\d+)", binary)), default=(0, 0))
problems = []
if "manylinux2014_x86_64" not in name and "manylinux_2_17_x86_64" not in name:
    problems.append(f"file name {name} has no manylinux2014 / manylinux_2_17 tag")
if not tags or not all(re.search(r"manylinux(2014|_2_17)_x86_64$", t) for t in tags):
    problems.append(f"WHEEL tags {tags}")
if glibc > (2, 17) or glibc == (0, 0):
    problems.append(f"binary needs GLIBC_{glibc[0]}.{glibc[1]}")
for module in ("__init__", "folder", "records", "tf", "torch"):
    if f"histoshard/{module}.py" not in members:
        problems.append(f"histoshard/{module}.py missing")
for p in problems:
    print(f"wheel_test: FAIL {p}", file=sys.stderr)
print(f"wheel_test: {name}: tags {tags}, binary needs GLIBC_{glibc[0]}.{glibc[1]} at most, "
      f"{len(members)} files", file=sys.stderr)
sys.exit(1 if problems else 0)
PY

# ---- 2. Layers and fresh venvs ----
site_of() { "$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
# A venv that sees BASE's packages (and through them BASE's own .pth files) after its own.
layered_venv() {  # DIR BASE...
    local dir=$1
    shift
    python3 -m venv "$dir"
    local line="import site"
    for base in "$@"; do line+="; site.addsitedir('$(site_of "$base")')"; done
    echo "$line" >"$(site_of "$dir")/zz_histoshard_layers.pth"
}
layer() {  # DIR BASE CHECK_IMPORTS PACKAGES... [-- NODEPS_PACKAGES...]
    local dir=$1 base=$2 check=$3
    shift 3
    if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c "import $check" >/dev/null 2>&1; then
        return
    fi
    say "creating $dir (on $base)"
    rm -rf "$dir"
    layered_venv "$dir" "$base"
    local deps=() nodeps=() target=deps
    for p in "$@"; do
        if [ "$p" = -- ]; then target=nodeps; elif [ $target = deps ]; then deps+=("$p"); else nodeps+=("$p"); fi
    done
    "$dir/bin/pip" install -q --disable-pip-version-check "${deps[@]}"
    [ ${#nodeps[@]} -eq 0 ] || "$dir/bin/pip" install -q --disable-pip-version-check --no-deps "${nodeps[@]}"
}

tf_venv=${HISTOSHARD_VENV:-$HOME/.cache/histoshard-venv}
torch_venv=${HISTOSHARD_TORCH_VENV:-$HOME/.cache/histoshard-torch}
"$tf_venv/bin/python" -c 'import tensorflow' 2>/dev/null || { say "no TensorFlow venv at $tf_venv (scripts/tf_readback_test.sh makes it)"; exit 1; }
"$torch_venv/bin/python" -c 'import torch' 2>/dev/null || { say "no PyTorch venv at $torch_venv (scripts/setup_torch_venv.sh)"; exit 1; }
tf_layer=$HOME/.cache/histoshard-wheel-tf
torch_layer=$HOME/.cache/histoshard-wheel-torch
layer "$tf_layer" "$tf_venv" "nbclient, ipykernel, matplotlib, crc32c, polars, tf_keras, tensorflow_hub" \
    "${TF_LAYER[@]}" -- "${TF_LAYER_NODEPS[@]}"
layer "$torch_layer" "$torch_venv" "nbclient, ipykernel, crc32c, polars, pandas" "${TORCH_LAYER[@]}"

# Runs a command with only VENV/bin, /usr/bin and /bin on PATH.
bare() {  # VENV CMD...
    local venv=$1
    shift
    env -i PATH="$venv/bin:/usr/bin:/bin" HOME="$tmp/home" TMPDIR="$tmp" LANG=C.UTF-8 \
        TF_CPP_MIN_LOG_LEVEL=2 MPLBACKEND=Agg PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
        ${NOTEBOOK_ENV[@]+"${NOTEBOOK_ENV[@]}"} "$@"
}
fresh_venv() {  # NAME LAYER BASE wheel|kernel: a fresh venv with the wheel installed, or a Jupyter kernel
    local dir=$tmp/$1
    layered_venv "$dir" "$2" "$3"
    if [ "$4" = wheel ]; then
        bare "$dir" python -m pip install -q --no-deps "$wheel"
    else
        bare "$dir" python -m ipykernel install --sys-prefix >/dev/null
    fi
    echo "$dir"
}
mkdir -p "$tmp/home"
NOTEBOOK_ENV=()
tf_run=$(fresh_venv run-tf "$tf_layer" "$tf_venv" wheel)
torch_run=$(fresh_venv run-torch "$torch_layer" "$torch_venv" wheel)
if bare "$tf_run" sh -c 'command -v cargo || command -v rustc' >/dev/null; then
    say "FAIL: a Rust toolchain is on the bare PATH"
    exit 1
fi
installed=$(bare "$tf_run" sh -c 'command -v histoshard')
[ "$installed" = "$tf_run/bin/histoshard" ] || { say "FAIL: histoshard resolves to $installed"; exit 1; }
if bare "$tf_run" histoshard train --help >/dev/null 2>&1; then
    say "FAIL: the wheel's histoshard has the trainer (it is built without burn)"
    exit 1
fi
say "$(bare "$tf_run" histoshard --version) installed in fresh venvs (no cargo on PATH); no train subcommand"

# ---- 3. The installed CLI, then every record through histoshard.tf and histoshard.torch ----
bare "$tf_run" histoshard "${SYNTH[@]}" --output "$tmp/glas" >/dev/null
# tf_readback.py imports `histoshard_tf`; here it must be the installed histoshard.tf.
tf_readback() {  # OUT DIGESTS
    bare "$tf_run" python - "$@" <<PY
import runpy, sys
import histoshard.tf
assert histoshard.tf.__file__.startswith("$tf_run/"), histoshard.tf.__file__
sys.modules["histoshard_tf"] = histoshard.tf
sys.argv = ["tf_readback.py", sys.argv[1], "--pixel-digests", sys.argv[2]]
runpy.run_path("$root/scripts/tf_readback.py", run_name="__main__")
PY
}
run_case() {  # NAME [extra prepare flags...]
    local name=$1 out=$tmp/$1
    shift
    say "$name: prepare, verify"
    bare "$tf_run" histoshard "${PREPARE[@]}" "$@" --input "$tmp/glas" --output "$out"
    local verified
    verified=$(bare "$tf_run" histoshard verify "$out" --pixel-digests "$out.digests.csv")
    echo "$verified" >&2
    local count
    count=$(sed -n 's/^ok: \([0-9]*\) records.*/\1/p' <<<"$verified")
    [ -n "$count" ] || { say "FAIL: no record count in verify's output"; exit 1; }
    say "$name: histoshard.tf"
    tf_readback "$out" "$out.digests.csv"
    say "$name: histoshard.torch"
    bare "$torch_run" python "$root/scripts/torch_readback.py" "$out" --pixel-digests "$out.digests.csv" \
        --expect-records "$count" 2> >(grep -v -e UserWarning -e 'warnings.warn' >&2)
}
run_case png "${PREPARE_PNG[@]}"
run_case gz "${PREPARE_GZ[@]}"

# ---- 4. The notebooks, headless; each installs the wheel itself ----
nb_tf=$(fresh_venv nb-tf "$tf_layer" "$tf_venv" kernel)
NOTEBOOK_ENV=(HISTOSHARD_WHEEL="$wheel" HISTOSHARD_NOTEBOOK_OFFLINE=1 HISTOSHARD_NOTEBOOK_EPOCHS=1
    HISTOSHARD_NOTEBOOK_SYNTH_IMAGES=30 HISTOSHARD_NOTEBOOK_DIR="$tmp/nb-colab")
mkdir -p "$tmp/nb-colab" "$tmp/nb-torch"
say "notebook: colab_transfer_learning.ipynb"
bare "$nb_tf" python scripts/run_notebook.py scripts/colab_transfer_learning.ipynb "$tmp/nb-colab/executed.ipynb"
NOTEBOOK_ENV=(HISTOSHARD_WHEEL="$wheel" HISTOSHARD_NOTEBOOK_EPOCHS=1 HISTOSHARD_NOTEBOOK_DIR="$tmp/nb-torch")
nb_torch=$(fresh_venv nb-torch "$torch_layer" "$torch_venv" kernel)
say "notebook: pytorch_reader.ipynb"
bare "$nb_torch" python scripts/run_notebook.py scripts/pytorch_reader.ipynb "$tmp/nb-torch/executed.ipynb"
say "ok ($((SECONDS - t0)) s)"
