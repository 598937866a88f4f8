#!/usr/bin/env python3
"""`histoshard prepare` on a Ray cluster: N tasks, each running the binary as
worker I of N, then `histoshard merge`.

    python scripts/cluster/ray_prepare.py -n N [--cpus C] [--address auto] \
        [--histoshard PATH] -- -i INPUT -o OUTPUT [prepare options...]

Ray only schedules: each task runs the same `histoshard prepare` command
with `--worker-index I --num-workers N`; the output folder must be on a file
system every Ray node sees at the same path. A task whose binary fails is
retried (`--retries`, default 2) with the same index; the retry keeps the
shards the failed attempt finished. When every task has succeeded the merge
runs in one more task. Without `--address`, Ray starts a local cluster.
Prints one JSON line: workers, seconds of the workers and of the merge.
"""

import argparse
import json
import subprocess
import sys
import time


def output_of(prepare_args):
    """The value of -o/--output in the prepare options."""
    for i, a in enumerate(prepare_args):
        if a in ("-o", "--output") and i + 1 < len(prepare_args):
            return prepare_args[i + 1]
        if a.startswith("--output="):
            return a.split("=", 1)[1]
    return None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        print("prepare options (-i INPUT -o OUTPUT ...) follow --", file=sys.stderr)
        return 2
    cut = argv.index("--")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--workers", type=int, required=True)
    p.add_argument("--cpus", type=float, default=1, help="CPUs each worker task asks for")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local one)")
    p.add_argument("--histoshard", default="histoshard", help="the binary, on every node")
    p.add_argument("--retries", type=int, default=2)
    args = p.parse_args(argv[:cut])
    prepare = argv[cut + 1 :]
    output = output_of(prepare)
    if args.workers < 1 or output is None:
        print("-n must be ≥ 1 and the prepare options must name -o OUTPUT", file=sys.stderr)
        return 2

    import ray

    ray.init(address=args.address, log_to_driver=False)

    def run(cmd):
        started = time.monotonic()
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            # A failure raises, so Ray retries the task (retry_exceptions).
            raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip().splitlines()[-1:]}")
        return time.monotonic() - started

    worker = ray.remote(num_cpus=args.cpus, max_retries=args.retries, retry_exceptions=True)(
        lambda i: run(
            [args.histoshard, "--quiet", "prepare", *prepare,
             "--worker-index", str(i), "--num-workers", str(args.workers)]
        )
    )
    merge = ray.remote(num_cpus=1, max_retries=0)(
        lambda: run([args.histoshard, "--quiet", "merge", output])
    )
    started = time.monotonic()
    try:
        worker_s = ray.get([worker.remote(i) for i in range(args.workers)])
        workers_done = time.monotonic() - started
        merge_s = ray.get(merge.remote())
    except ray.exceptions.RayTaskError as e:
        print(f"error: {e.cause if hasattr(e, 'cause') else e}", file=sys.stderr)
        return 1
    finally:
        ray.shutdown()
    print(json.dumps({
        "workers": args.workers,
        "worker_s": [round(s, 3) for s in worker_s],
        "workers_wall_s": round(workers_done, 3),
        "merge_s": round(merge_s, 3),
        "total_s": round(time.monotonic() - started, 3),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
