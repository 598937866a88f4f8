#!/usr/bin/env bash
# The Ray launcher for real: scripts/cluster/ray_prepare.py on a local Ray
# (ray.init() starts one on this machine) runs N `histoshard prepare` worker
# tasks and the merge on a `histoshard synth` set; the merged folder must hold
# the same bytes as a one-machine `prepare`, and `verify` must accept it.
# Then a worker that fails: the driver exits non-zero and no merge happens.
#
#   scripts/ray_test.sh
#
# Ray comes from PyPI into a venv (RAY_VENV, default
# ~/.cache/histoshard-ray-venv; created with `pip install ray` when missing).
# Skips (exit 0, saying why) when Ray cannot be installed or started.
# Environment: HISTOSHARD (the binary; default: the release build), N (3).
set -uo pipefail

name=ray_test
# shellcheck source=lib/script_test.sh
. "$(dirname "$0")/lib/script_test.sh"
venv="${RAY_VENV:-$HOME/.cache/histoshard-ray-venv}"
n="${N:-3}"
install_ray() { "$1/bin/pip" install -q ray; }
ensure_venv "$venv" 'import ray' install_ray
py="$venv/bin/python"

tmp="$(mktemp -d /tmp/histoshard-ray.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
"$bin" -q synth --output "$tmp/in" --images 16 --seed 17 || fail "synth"
opts=(-i "$tmp/in" --augment 1 --shards 3)
"$bin" -q prepare "${opts[@]}" -o "$tmp/one" || fail "one-machine prepare"

t0=$(date +%s.%N)
result=$(env -u SLURM_ARRAY_TASK_ID -u SLURM_ARRAY_TASK_COUNT RAY_ADDRESS= \
    "$py" "$root/scripts/cluster/ray_prepare.py" -n "$n" --histoshard "$bin" -- "${opts[@]}" -o "$tmp/ray" \
    2>"$tmp/ray.err")
rc=$?
t1=$(date +%s.%N)
if [ $rc -ne 0 ]; then
    if grep -q "ray.init\|Failed to start\|RaySystemError\|GCS" "$tmp/ray.err"; then
        tail -5 "$tmp/ray.err"
        skip "a local Ray does not start here"
    fi
    tail -20 "$tmp/ray.err"
    fail "ray_prepare.py exited $rc"
fi
echo "driver: $result"

same_dataset "$tmp/one" "$tmp/ray" || fail "the merged folder differs from the one-machine run"
"$bin" -q verify "$tmp/ray" || fail "verify refused the merged folder"

# A worker that fails (an emptied image): the driver fails, nothing merged.
cp -r "$tmp/in" "$tmp/in-bad"
: >"$tmp/in-bad/$(ls "$tmp/in-bad" | grep -m1 '\.bmp$')"
env RAY_ADDRESS= "$py" "$root/scripts/cluster/ray_prepare.py" -n 2 --retries 0 --histoshard "$bin" \
    -- -i "$tmp/in-bad" -o "$tmp/bad" >/dev/null 2>"$tmp/bad.err" \
    && fail "the driver succeeded with a failing worker"
grep -q "empty file" "$tmp/bad.err" || { tail -5 "$tmp/bad.err"; fail "the driver did not say why the worker failed"; }
[ ! -e "$tmp/bad/manifest.parquet" ] || fail "a failed worker left a folder that looks complete"

end=$(date +%s)
echo "ok ray_test: $n Ray tasks + merge = one-machine bytes; verify ok; a failed worker fails the driver"
python3 -c "import sys; print(f'timings: ray driver {float(sys.argv[2]) - float(sys.argv[1]):.1f}s, whole script {int(sys.argv[4]) - int(sys.argv[3])}s')" "$t0" "$t1" "$started" "$end"
