# The preamble shared by scripts/s3_test.sh, scripts/slurm_test.sh and
# scripts/ray_test.sh. Set `name` (the script's name in messages), then source
# this file. It sets `root` (the repository), `bin` (HISTOSHARD, default the
# release build in CARGO_TARGET_DIR or target/; made absolute, and checked),
# `started` (seconds), and defines:
#   skip REASON         prints `SKIP name: REASON`, exits 0
#   fail REASON         prints `FAIL name: REASON`, exits 1
#   same_dataset A B    (lib/same_dataset.sh) the same files, the same bytes
#   ensure_venv VENV CHECK INSTALL
#                       when VENV's python cannot run the Python line CHECK,
#                       creates VENV and runs `INSTALL VENV` (a shell function
#                       doing its pip installs), logging to /tmp/name-pip.log;
#                       skips, naming the log, when that fails.

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${HISTOSHARD:-${CARGO_TARGET_DIR:-$root/target}/release/histoshard}"
started=$(date +%s)

# shellcheck source=same_dataset.sh
. "$root/scripts/lib/same_dataset.sh"
skip() { echo "SKIP $name: $*"; exit 0; }
fail() { echo "FAIL $name: $*" >&2; exit 1; }

[ -x "$bin" ] || fail "no histoshard binary at $bin (cargo build --release, or set HISTOSHARD)"
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

ensure_venv() {  # VENV CHECK INSTALL
    local venv=$1 check=$2 install=$3 log="/tmp/$name-pip.log"
    "$venv/bin/python" -c "$check" 2>/dev/null && return 0
    echo "installing into $venv (pip, from PyPI; log: $log)..."
    { python3 -m venv "$venv" && "$install" "$venv"; } >"$log" 2>&1 \
        || skip "the pip install into $venv failed (see $log)"
    "$venv/bin/python" -c "$check" 2>/dev/null || skip "installed into $venv, but \`$check\` still fails (see $log)"
}
