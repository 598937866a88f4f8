#!/usr/bin/env bash
# Fuzzes the parsers of untrusted input with cargo-fuzz (libFuzzer + AddressSanitizer):
# the shard reader and Example decoding, Grade.csv, the label CSV and the VOC XML
# (docs/RELIABILITY.md, "Fuzzing"). Not part of the test command.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]    # default 60 s, every target
#
# Runs on stable Rust: RUSTC_BOOTSTRAP=1 lets it take cargo-fuzz's -Z flags.
# The first build instruments every dependency (~15-20 min on 2 cores); it goes to
# its own target dir so it never invalidates the normal build. Each target starts
# from fuzz/corpus/<target>/ (the committed seed-* files plus what earlier runs
# found, which git ignores). A crash leaves its input in fuzz/artifacts/<target>/;
# the script goes on with the other targets and exits 1 at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(tfrecord grade_csv label_csv voc_xml)

export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/histoshard-fuzz-target}
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz
fi

cd fuzz
# FUZZ_SKIP_BUILD=1: use the binaries as built (e.g. while another cargo holds the lock).
[ -n "${FUZZ_SKIP_BUILD:-}" ] || cargo fuzz build --target-dir "$CARGO_TARGET_DIR"
# Run the built binaries directly (what `cargo fuzz run` does after its build),
# so a run never waits on another cargo holding the target dir's lock.
host=$(rustc -vV | sed -n 's/^host: //p')
bin_dir="$CARGO_TARGET_DIR/$host/release"

mkdir -p artifacts
failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log="artifacts/$t.log"
    echo "== $t: ${secs}s"
    # -timeout: one input running 10 s is a hang. -rss_limit_mb: 2 GiB resident is
    # a leak. -malloc_limit_mb: inputs are a few KiB, so one allocation above
    # 64 MiB is memory taken on a length field's word (the reader's largest
    # up-front buffer is 8 MiB).
    if "$bin_dir/$t" "corpus/$t" -artifact_prefix="artifacts/$t/" \
        -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=64 -timeout=10 \
        -print_final_stats=1 \
        2>&1 | tee "$log" | grep -E '^(#[0-9]+[[:space:]]+(INITED|DONE)|==[0-9]+== ?ERROR|SUMMARY|Done)' ; then
        :
    fi
    if grep -qE '^(==[0-9]+== ?ERROR|SUMMARY: libFuzzer|.*deadly signal)' "$log" \
        || ! grep -q '^Done ' "$log"; then
        failed+=("$t")
    fi
    execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo '?')
    summary+=("$t: $execs executions in ${secs}s")
done

echo
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]} (inputs in fuzz/artifacts/<target>/, logs in fuzz/artifacts/<target>.log)"
    exit 1
fi
echo "no crashes"
