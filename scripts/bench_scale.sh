#!/usr/bin/env bash
# Measured scaling of `prepare` over workers: a `histoshard synth` set
# prepared on one machine, then by N = 1, 2, 4 workers and merged.
#
#   scripts/bench_scale.sh [OUT.json]     (default: bench_scale.json here)
#
# The workers run one after another, each with THREADS threads, as if each
# had a machine of its own: a cluster's wall time is then the slowest
# worker plus the merge (the workers' own timings, from their part.json).
# Running them side by side on one small machine would measure its cores,
# not the partition. Two clocks: wall (the whole process, with its start:
# loading LibTorch's libraries takes ~1 s here) and internal (what
# prepare-timings.json says, from reading the input to the manifest). Every merge is checked byte for byte against the
# one-machine run. Environment: HISTOSHARD (binary; default: the release
# build), IMAGES (60), THREADS (1), REPEAT (3; the fastest of REPEAT runs is
# kept), WORKERS ("1 2 4").
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
bin="${HISTOSHARD:-${CARGO_TARGET_DIR:-$root/target}/release/histoshard}"
images="${IMAGES:-60}" threads="${THREADS:-1}" repeat="${REPEAT:-3}" workers="${WORKERS:-1 2 4}"
out_json="${1:-bench_scale.json}"
[ -x "$bin" ] || { echo "no histoshard binary at $bin" >&2; exit 1; }
# shellcheck source=lib/same_dataset.sh
. "$here/lib/same_dataset.sh"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

"$bin" -q synth --output "$tmp/in" --images "$images" --seed 1
opts=(-i "$tmp/in" --augment 1 --shards 8)
hs() { env -u SLURM_ARRAY_TASK_ID -u SLURM_ARRAY_TASK_COUNT -u JOB_COMPLETION_INDEX "$bin" -q --threads "$threads" "$@"; }
now() { date +%s.%N; }

lines="$tmp/lines.jsonl"
for r in $(seq "$repeat"); do
    rm -rf "$tmp/one"
    t0=$(now); hs prepare "${opts[@]}" -o "$tmp/one"; t1=$(now)
    python3 - "$tmp/one" "$t0" "$t1" >>"$lines" <<'PY'
import json, sys
d, t0, t1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
t = json.load(open(f"{d}/prepare-timings.json"))
r = json.load(open(f"{d}/prepare.json"))
print(json.dumps({"workers": 0, "records": r["records_total"], "wall_s": t1 - t0,
                  "internal_s": t["timings_s"]["total"], "ingest_s": t["timings_s"]["ingest"],
                  "write_s": t["timings_s"]["write"]}))
PY
    for n in $workers; do
        d="$tmp/w$n"
        rm -rf "$d"
        walls=()
        for i in $(seq 0 $((n - 1))); do
            a=$(now); hs prepare "${opts[@]}" -o "$d" --worker-index "$i" --num-workers "$n"; b=$(now)
            walls+=("$(python3 -c "print($b - $a)")")
        done
        a=$(now); hs merge "$d"; b=$(now)
        same_dataset "$tmp/one" "$d" >&2 || { echo "merge of $n workers differs from one machine" >&2; exit 1; }
        python3 - "$d" "$n" "$a" "$b" "${walls[@]}" >>"$lines" <<'PY'
import json, sys
d, n, a, b = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
walls = [float(w) for w in sys.argv[5:]]
t = json.load(open(f"{d}/prepare-timings.json"))
ws = t["workers"]
print(json.dumps({"workers": n, "records": sum(w["records"] for w in ws),
                  "worker_wall_s": walls, "slowest_worker_s": max(walls), "merge_s": b - a,
                  "cluster_wall_s": max(walls) + (b - a),
                  "worker_internal_s": [w["timings_s"]["total"] for w in ws],
                  "merge_internal_s": t["timings_s"]["total"],
                  "cluster_internal_s": max(w["timings_s"]["total"] for w in ws) + t["timings_s"]["total"],
                  "worker_ingest_s": [w["timings_s"]["ingest"] for w in ws],
                  "worker_write_s": [w["timings_s"]["write"] for w in ws],
                  "worker_records": [w["records"] for w in ws]}))
PY
    done
done

python3 - "$lines" "$out_json" "$images" "$threads" "$repeat" <<'PY'
import json, sys
lines, out, images, threads, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rows = [json.loads(l) for l in open(lines)]
best = {}
for r in rows:
    key = r["workers"]
    t = r["internal_s"] if key == 0 else r["cluster_internal_s"]
    if key not in best or t < best[key][0]:
        best[key] = (t, r)
one = best[0][0]
one_wall = best[0][1]["wall_s"]
summary = {"images": images, "threads_per_worker": threads, "repeat": repeat,
           "records": best[0][1]["records"], "one_machine_internal_s": round(one, 3),
           "one_machine_wall_s": round(one_wall, 3), "runs": []}
print(f"{summary['records']} records from {images} images, {threads} thread(s) per worker, best of {repeat} (by internal time)")
print(f"| workers | internal s | speed-up | efficiency | slowest worker: ingest s (every image) | write s | merge s | wall s (with process starts) |")
print(f"|---|---|---|---|---|---|---|---|")
print(f"| one machine | {one:.2f} | 1.00 | 1.00 | {best[0][1]['ingest_s']:.2f} | {best[0][1]['write_s']:.2f} | – | {one_wall:.2f} |")
for n in sorted(k for k in best if k):
    t, r = best[n]
    slow = r["worker_internal_s"].index(max(r["worker_internal_s"]))
    summary["runs"].append({"workers": n, "cluster_internal_s": round(t, 3), "speedup": round(one / t, 2),
                            "efficiency": round(one / t / n, 2), **{k: r[k] for k in r if k != "workers"}})
    print(f"| {n} | {t:.2f} | {one / t:.2f} | {one / t / n:.2f} | {r['worker_ingest_s'][slow]:.2f} | "
          f"{r['worker_write_s'][slow]:.2f} | {r['merge_internal_s']:.2f} | {r['cluster_wall_s']:.2f} |")
json.dump(summary, open(out, "w"), indent=1)
print(f"→ {out}")
PY
