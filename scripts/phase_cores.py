#!/usr/bin/env python3
"""Cores used per logged phase of a command (docs/BENCHMARKS.md).

    python3 scripts/phase_cores.py histoshard --threads 2 train --data SHARDS --output RUN ...

Runs the command, samples its CPU time (user + system, from /proc, Linux
only) every 0.1 s, and prints each line the command logs to stderr with the
seconds since the last line and the cores used in between ((CPU time) /
wall). The last line gives the whole run's wall and CPU time.
"""
import os
import subprocess
import sys
import threading
import time


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    start = time.monotonic()
    proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    tick = os.sysconf("SC_CLK_TCK")
    samples = []  # (seconds since start, CPU seconds)

    def cpu_seconds():
        try:
            with open(f"/proc/{proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            return None

    def poll():
        while proc.poll() is None:
            cpu = cpu_seconds()
            if cpu is not None:
                samples.append((time.monotonic() - start, cpu))
            time.sleep(0.1)

    sampler = threading.Thread(target=poll)
    sampler.start()
    lines = [(time.monotonic() - start, line.rstrip()) for line in proc.stderr]
    proc.wait()
    sampler.join()

    def sample_at(t):
        return max((s for s in samples if s[0] <= t), default=(0.0, 0.0))

    last = (0.0, 0.0)
    for t, line in lines:
        now = sample_at(t)
        wall, cpu = now[0] - last[0], now[1] - last[1]
        cores = cpu / wall if wall > 0 else 0.0
        print(f"{t:7.2f} s  +{t - last[0]:6.2f} s  {cores:4.2f} cores  {line}")
        last = now
    end = samples[-1] if samples else (0.0, 0.0)
    print(f"whole run: {time.monotonic() - start:.2f} s wall, {end[1]:.2f} s CPU "
          f"({end[1] / end[0] if end[0] else 0:.2f} cores), exit {proc.returncode}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
