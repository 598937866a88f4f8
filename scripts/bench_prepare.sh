#!/usr/bin/env bash
# The prepare benchmark (docs/BENCHMARKS.md): `histoshard prepare` against a
# one-process Python reference (PIL + numpy + tf.io.TFRecordWriter) doing the
# same job, and against the floor (decode every source image once + encode
# every record's pixels with the same encoder, examples/encode_floor.rs).
#
#   scripts/bench_prepare.sh [--images 165] [--source real|synth] [--repeats 3]
#                            [--threads N] [--json FILE] [--no-build] [--skip-reference]
#                            [--keep DIR]
#
# --source real (the default when ../shared/glas-sample exists beside the repo):
#   a Warwick-layout folder of --images images made of copies of the six real
#   sample images (775×522 BMPs + _anno.bmp masks) renamed train_1.., testA_1..,
#   testB_1.. (85/60/20 at 165), with a Grade.csv in the real file's format
#   (labels and patients from ../shared/glas-grade-full.csv when present; each
#   copy is of a sample with the same grade). Identical copies compress
#   identically, which is fine for throughput but not a size study.
# --source synth: `histoshard synth --images N`.
#
# Each repeat runs, in this order, each into a fresh output folder (repeats are
# interleaved so a run and its floor see the same background load):
#   rust-balanced  histoshard prepare --augment 2 --val-fraction 0 --shards 4 --quiet
#   floor-balanced examples/encode_floor on that output (its own timer: decode
#                  every source image once + encode every record's pixels)
#   rust-fast      the same prepare with --png-compression fast, then floor-fast
#   python         reference_prepare.py --augment 2 --val-fraction 0 --shards 4
#                  (one process, TensorFlow's import included)
# then once: PIL re-encoding every record of the Rust balanced output (sizes on
# identical pixels). Prints a markdown table on stdout (medians; progress on
# stderr): wall seconds, records/s, × Python, CPU seconds (user+sys) and cores
# used (CPU/wall: below the thread count means the machine's other load took
# the rest), mean bytes of image/encoded per record, and × its floor (median of
# run/floor over the repeats). --json FILE also writes every measurement.
# Environment: CARGO_TARGET_DIR (default ~/.cache/histoshard-target),
# HISTOSHARD_VENV (default ~/.cache/histoshard-venv: TensorFlow, numpy, pillow).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/histoshard-target}
venv=${HISTOSHARD_VENV:-$HOME/.cache/histoshard-venv}
py=$venv/bin/python
[ -x "$py" ] || py=python3

images=165
source=""
repeats=3
threads=""
json_out=""
build=1
reference=1
keep=""
while [ $# -gt 0 ]; do
    case "$1" in
    --images) images=$2; shift 2 ;;
    --source) source=$2; shift 2 ;;
    --repeats) repeats=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --json) json_out=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --skip-reference) reference=0; shift ;;
    --keep) keep=$2; shift 2 ;;
    -h | --help) sed -n '2,35p' "$0"; exit 0 ;;
    *) echo "bench_prepare: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
shared="$repo/../shared"
if [ -z "$source" ]; then
    if [ -d "$shared/glas-sample" ]; then source=real; else source=synth; fi
fi
case "$source" in real | synth) ;; *) echo "bench_prepare: --source real|synth" >&2; exit 2 ;; esac
[ "$source" = real ] && [ ! -d "$shared/glas-sample" ] && {
    echo "bench_prepare: --source real needs $shared/glas-sample" >&2
    exit 2
}
log() { echo "bench_prepare: $*" >&2; }

if [ "$build" = 1 ]; then
    log "building (release)"
    cargo build --release --locked --quiet
    cargo build --release --locked --quiet --example encode_floor
fi
bin="$CARGO_TARGET_DIR/release/histoshard"
floor_bin="$CARGO_TARGET_DIR/release/examples/encode_floor"
for b in "$bin" "$floor_bin"; do
    [ -x "$b" ] || { echo "bench_prepare: $b is missing (run without --no-build)" >&2; exit 1; }
done
nproc_=$(nproc)
floor_threads=${threads:-$nproc_}
thread_flag=()
[ -n "$threads" ] && thread_flag=(--threads "$threads")

work=${keep:-$(mktemp -d "${TMPDIR:-/tmp}/histoshard-bench.XXXXXX")}
mkdir -p "$work"
[ -z "$keep" ] && trap 'rm -rf "$work"' EXIT
input="$work/glas"
rm -rf "$input"

# ---- the input set ----
if [ "$source" = real ]; then
    log "input: $images copies of the six real sample images in $input"
    "$py" - "$shared" "$input" "$images" <<'EOF'
import os, shutil, sys
shared, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
sample_dir = os.path.join(shared, "glas-sample")

def rows(path):
    """Grade.csv rows as (name, patient, glas grade, sirinukunwattana grade), cells stripped."""
    text = open(path, encoding="utf-8-sig", newline="").read()
    lines = [l for l in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if l.strip()]
    return [tuple(c.strip() for c in l.split(",")) for l in lines[1:]]

samples = rows(os.path.join(sample_dir, "Grade.csv"))
by_grade = {}
for s in samples:
    by_grade.setdefault(s[2], []).append(s)
n_train, n_testb = n * 85 // 165, n * 20 // 165
names = ([f"train_{i}" for i in range(1, n_train + 1)]
         + [f"testA_{i}" for i in range(1, n - n_train - n_testb + 1)]
         + [f"testB_{i}" for i in range(1, n_testb + 1)])
full_path = os.path.join(shared, "glas-grade-full.csv")
full = {r[0]: r for r in rows(full_path)} if os.path.exists(full_path) else {}
os.makedirs(out)
lines = ["name,patient ID, grade (GlaS), grade (Sirinukunwattana et al. 2015)"]
used = {g: 0 for g in by_grade}
for k, name in enumerate(names):
    if name in full and full[name][2] in by_grade:
        _, patient, grade, fine = full[name]
    else:  # no full Grade.csv: the sample's own labels, round-robin
        _, patient, grade, fine = samples[k % len(samples)]
    src = by_grade[grade][used[grade] % len(by_grade[grade])]
    used[grade] += 1
    for suffix in ("", "_anno"):
        shutil.copyfile(os.path.join(sample_dir, f"{src[0]}{suffix}.bmp"), os.path.join(out, f"{name}{suffix}.bmp"))
    lines.append(f"{name},{patient}, {grade}, {fine}")
with open(os.path.join(out, "Grade.csv"), "w", newline="") as f:
    f.write("\r".join(lines))  # CR line endings, no final newline, like the real file
EOF
else
    log "input: histoshard synth --images $images"
    "$bin" synth --output "$input" --images "$images" --seed 42 >/dev/null
fi
cat "$input"/*.bmp >/dev/null  # warm the page cache

# ---- measurements ----
results="$work/results.jsonl"
: >"$results"
load1() { cut -d' ' -f1 /proc/loadavg; }
now() { date +%s.%N; }

# time_run NAME REPEAT OUTDIR -- CMD...: wall clock and CPU time of CMD into a fresh OUTDIR.
time_run() {
    local name=$1 r=$2 out=$3
    shift 4
    {
        rm -rf "$out"
        local load t0 t1 rc=0 stdout
        load=$(load1)
        t0=$(now)
        stdout=$(/usr/bin/time -f '%U %S' -o "$work/$name.cpu" "$@" 2>"$work/$name.stderr") || rc=$?
        t1=$(now)
        if [ "$rc" != 0 ]; then
            cat "$work/$name.stderr" >&2
            echo "bench_prepare: $name failed (exit $rc)" >&2
            exit 1
        fi
        local last
        last=$(printf '%s\n' "$stdout" | tail -n 1)
        "$py" - "$name" "$r" "$t0" "$t1" "$load" "$out" "$last" "$(tail -n 1 "$work/$name.cpu")" >>"$results" <<'EOF'
import json, os, sys
name, rep, t0, t1, load, out, last, cpu = sys.argv[1:9]
rec = {"run": name, "repeat": int(rep), "wall_s": float(t1) - float(t0), "load1_before": float(load),
       "cpu_s": sum(float(x) for x in cpu.split())}
if name.startswith("rust"):
    p = json.load(open(os.path.join(out, "prepare.json")))
    t = json.load(open(os.path.join(out, "prepare-timings.json")))["timings_s"]
    rec.update(records=p["records_total"], mean_bytes_per_record=p["mean_bytes_per_record"],
               internal_s=t["total"], ingest_s=t["ingest"],
               write_s=t["write"], manifest_s=t["manifest"],
               records_by_split=p["records"], kept_patches=p["kept_patches"],
               shard_bytes=sum(s["bytes"] for v in p["shards"].values() for s in v))
else:
    j = json.loads(last)
    rec.update(records=j["records"], mean_bytes_per_record=j["mean_bytes_per_record"],
               internal_s=j["seconds"], encode_only_s=j.get("encode_only_seconds"))
    if name == "python":
        p = json.load(open(os.path.join(out, "prepare.json")))
        rec.update(records_by_split={k: v for k, v in p["records"].items() if v},
                   shard_bytes=sum(s["bytes"] for v in p["shards"].values() for s in v))
    elif name.startswith("floor"):
        rec.update(decode_s=j["decode_seconds"], encode_s=j["encode_seconds"], cpu_s=j.get("cpu_seconds"))
print(json.dumps(rec))
EOF
        log "$name #$r: $(tail -n 1 "$results")"
    }
}

common=(prepare --input "$input" --augment 2 --val-fraction 0 --shards 4 --quiet "${thread_flag[@]}")
if [ "$reference" = 1 ]; then
    # TensorFlow's import alone (part of the reference's one-process wall time), for context.
    tf_import=$("$py" -c 'import os, time; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"; t = time.perf_counter(); import tensorflow; print(round(time.perf_counter() - t, 2))' 2>/dev/null | tail -n 1)
    echo "{\"run\": \"tf-import\", \"wall_s\": $tf_import}" >>"$results"
fi
# Repeats are interleaved (each run next to its floor, the machine's other load
# affecting both alike); the floor reads the output written just before it.
for r in $(seq 1 "$repeats"); do
    time_run rust-balanced "$r" "$work/out-balanced" -- "$bin" "${common[@]}" --output "$work/out-balanced"
    time_run floor-balanced "$r" "$work/scratch" -- "$floor_bin" --prepared "$work/out-balanced" --input "$input" --threads "$floor_threads"
    time_run rust-fast "$r" "$work/out-fast" -- "$bin" "${common[@]}" --output "$work/out-fast" --png-compression fast
    time_run floor-fast "$r" "$work/scratch" -- "$floor_bin" --prepared "$work/out-fast" --input "$input" --threads "$floor_threads"
    if [ "$reference" = 1 ]; then
        time_run python "$r" "$work/out-python" -- env TF_CPP_MIN_LOG_LEVEL=2 "$py" scripts/reference_prepare.py \
            --input "$input" --output "$work/out-python" --augment 2 --val-fraction 0 --shards 4
    fi
done
if [ "$reference" = 1 ]; then
    # Sizes on identical pixels: PIL (level 6) re-encoding every record of the Rust balanced output, once.
    time_run pil-same-pixels 1 "$work/scratch" -- env TF_CPP_MIN_LOG_LEVEL=2 "$py" scripts/reference_prepare.py \
        --encode-shards "$work/out-balanced"
fi

# ---- report ----
"$py" - "$results" "$source" "$images" "$repeats" "$nproc_" "$floor_threads" "$json_out" "$work" <<'EOF'
import csv, json, os, statistics, sys
path, source, images, repeats, cores, floor_threads, json_out, work = sys.argv[1:9]
runs = {}
for line in open(path):
    r = json.loads(line)
    runs.setdefault(r["run"], []).append(r)

def med(name, key):
    vals = [r[key] for r in runs.get(name, []) if r.get(key) is not None]
    return statistics.median(vals) if vals else None

def secs(name):  # the floor is its own timed part; the others are wall clock
    return med(name, "internal_s" if name.startswith("floor") else "wall_s")

def fmt(v, spec, unit=""):
    return "—" if v is None else format(v, spec) + unit

py_s = secs("python")
py_rate = med("python", "records") / py_s if py_s else None
rows = [
    ("rust-balanced", "`histoshard prepare` (PNG balanced, the default)", "floor-balanced"),
    ("rust-fast", "`histoshard prepare --png-compression fast`", "floor-fast"),
    ("python", "Python reference (PIL + numpy + TF writer, one process)", None),
    ("floor-balanced", f"floor: decode once + encode, balanced ({floor_threads} threads)", None),
    ("floor-fast", f"floor: decode once + encode, fast ({floor_threads} threads)", None),
]
loads = [r["load1_before"] for v in runs.values() for r in v if "load1_before" in r]
out = {"source": source, "images": int(images), "repeats": int(repeats), "cores": int(cores),
       "load1_before": [min(loads), max(loads)], "runs": runs, "summary": {}}
print(f"Input: {images} images ({source}); median of {repeats} runs; {cores} cores; "
      f"1-min load average before each run: {min(loads):.2f}..{max(loads):.2f}\n")
def paired_floor_ratio(name, floor):
    """Median over repeats of run time / floor time of the same repeat."""
    f = {r["repeat"]: r["internal_s"] for r in runs.get(floor, [])}
    vals = [r["wall_s"] / f[r["repeat"]] for r in runs.get(name, []) if r["repeat"] in f]
    return statistics.median(vals) if vals else None

def cores_used(name):
    vals = [r["cpu_s"] / (r["internal_s"] if name.startswith("floor") else r["wall_s"])
            for r in runs.get(name, []) if r.get("cpu_s") is not None]
    return statistics.median(vals) if vals else None

print("| run | records | seconds | records/s | × Python | CPU s | cores used | mean bytes/record | × its floor |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for name, label, floor in rows:
    if name not in runs:
        continue
    n, s = med(name, "records"), secs(name)
    rate = n / s
    x_py = rate / py_rate if py_rate else None
    x_floor = paired_floor_ratio(name, floor) if floor else None
    print(f"| {label} | {n:.0f} | {s:.2f} | {rate:.1f} | {fmt(x_py, '.1f', '×')} "
          f"| {fmt(med(name, 'cpu_s'), '.2f')} | {fmt(cores_used(name), '.2f')} "
          f"| {med(name, 'mean_bytes_per_record'):.0f} | {fmt(x_floor, '.2f', '×')} |")
    out["summary"][name] = {"records": n, "seconds": s, "records_per_s": rate, "x_python": x_py,
                            "cpu_s": med(name, "cpu_s"), "cores_used": cores_used(name),
                            "mean_bytes_per_record": med(name, "mean_bytes_per_record"), "x_floor": x_floor}
print()
rc = {k: runs[k][-1].get("records_by_split") for k in ("rust-balanced", "python") if k in runs}
same = "python" in rc and rc["rust-balanced"] == rc["python"]
print(f"- Records per split: Rust {rc.get('rust-balanced')}, Python {rc.get('python', '(not run)')}"
      + ("" if "python" not in rc else (" (same)" if same else " (DIFFERENT)")))
def manifest(name):
    with open(os.path.join(work, name, "manifest.csv")) as f:
        return list(csv.DictReader(f))

if "python" in runs:
    rust_rows, py_rows = manifest("out-balanced"), manifest("out-python")
    key = lambda r: (r["source_image"], int(r["x"]), int(r["y"]), int(r["aug_index"]))
    same_pos = sorted(map(key, rust_rows)) == sorted(map(key, py_rows))
    orig = lambda rows: [int(r["encoded_bytes"]) for r in rows if r["aug_index"] == "0"]
    ro, po = orig(rust_rows), orig(py_rows)
    print(f"- Kept patches (image, x, y, copy) identical in Rust and Python: {'yes' if same_pos else 'NO'}; "
          f"on the {len(ro)} unaugmented records (identical pixels) Rust balanced averages "
          f"{sum(ro) / len(ro):.0f} B, PIL {sum(po) / len(po):.0f} B ({100 * (sum(ro) / sum(po) - 1):+.1f}%)")
    out["summary"]["same_patches"] = same_pos
    out["summary"]["unaugmented_mean_bytes"] = {"rust_balanced": sum(ro) / len(ro), "pil": sum(po) / len(po)}
if "pil-same-pixels" in runs:
    pil = runs["pil-same-pixels"][0]
    pb = pil["mean_bytes_per_record"]
    rb, rf = med("rust-balanced", "mean_bytes_per_record"), med("rust-fast", "mean_bytes_per_record")
    print(f"- Size on identical pixels (every record of the Rust balanced output re-encoded by PIL, level 6): "
          f"PIL {pb:.0f} B/record; Rust balanced {rb:.0f} ({100 * (rb / pb - 1):+.1f}%), "
          f"fast {rf:.0f} ({100 * (rf / pb - 1):+.1f}%); PIL encode alone {pil['records'] / pil['internal_s']:.1f} "
          f"records/s in one process")
    out["summary"]["pil_same_pixels"] = {"mean_bytes_per_record": pb,
                                         "records_per_s": pil["records"] / pil["internal_s"]}
for name in ("rust-balanced", "rust-fast"):
    if name in runs:
        print(f"- {name} stages (median s, prepare.json): ingest {med(name, 'ingest_s'):.2f}, "
              f"write {med(name, 'write_s'):.2f}, manifest {med(name, 'manifest_s'):.2f}; "
              f"in-process total {med(name, 'internal_s'):.2f}")
for name in ("floor-balanced", "floor-fast"):
    if name in runs:
        print(f"- {name} (median s): decode {med(name, 'decode_s'):.2f}, encode {med(name, 'encode_s'):.2f}")
if "python" in runs:
    tf = runs.get("tf-import", [{}])[0].get("wall_s")
    print(f"- python: in-process {med('python', 'internal_s'):.2f} s (TensorFlow import included; alone it "
          f"takes {tf} s); PIL encode calls alone {med('python', 'encode_only_s'):.2f} s")
if json_out:
    with open(json_out, "w") as f:
        json.dump(out, f, indent=2)
EOF
