#!/usr/bin/env bash
# The Slurm launcher for real: stands up a one-host Slurm (munged, slurmctld
# and slurmd on this machine, its own configuration and state in a temporary
# folder, ports 16817/16818), submits scripts/cluster/slurm_submit.sh (an
# array of N workers, at most K at a time, then the merge with
# --dependency=afterok) on a `histoshard synth` set, and checks that the
# merged folder holds the same bytes as a one-machine `prepare` and that
# `verify` accepts it. Then a worker failure: the merge must not run.
#
#   scripts/slurm_test.sh            (as root: installs slurm-wlm and munge from apt when missing)
#
# Skips (exit 0, saying why) where Slurm cannot be installed or started
# (not root, no apt, a container that forbids it). Environment: HISTOSHARD
# (the binary; default: the release build), N (3), K (2), IMAGES (24).
set -uo pipefail

name=slurm_test
# shellcheck source=lib/script_test.sh
. "$(dirname "$0")/lib/script_test.sh"
n="${N:-3}" k="${K:-2}" images="${IMAGES:-24}"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    [ "$(id -u)" = 0 ] || skip "slurm-wlm and munge are not installed and this is not root"
    command -v apt-get >/dev/null || skip "slurm-wlm and munge are not installed and there is no apt-get"
    echo "installing slurm-wlm and munge from apt..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge) \
        >/tmp/slurm_test-apt.log 2>&1 || skip "apt-get install slurm-wlm munge failed (see /tmp/slurm_test-apt.log)"
fi
[ "$(id -u)" = 0 ] || skip "slurmd must run as root here (it starts jobs as their users)"

tmp="$(mktemp -d /tmp/histoshard-slurm.XXXXXX)"
chmod 755 "$tmp"  # munged runs as munge
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    sleep 1
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT

# munge: a key of our own, a socket of our own.
mkdir -p "$tmp/munge" && chown munge:munge "$tmp/munge" && chmod 755 "$tmp/munge"
dd if=/dev/urandom bs=1 count=1024 of="$tmp/munge/munge.key" status=none
chown munge:munge "$tmp/munge/munge.key" 2>/dev/null; chmod 400 "$tmp/munge/munge.key"
sock="$tmp/munge/munge.socket"
runuser -u munge -- munged --key-file="$tmp/munge/munge.key" --socket="$sock" \
    --pid-file="$tmp/munge/munged.pid" --log-file="$tmp/munge/munged.log" --seed-file="$tmp/munge/seed" \
    || skip "munged does not start (see $tmp/munge/munged.log)"
sleep 1
pids+=("$(cat "$tmp/munge/munged.pid")")

host="$(hostname -s)"
cpus="$(nproc)"
mem="$(awk '/MemTotal/ {print int($2 / 1024 / 2)}' /proc/meminfo)"
mkdir -p "$tmp/state" "$tmp/spool"
export SLURM_CONF="$tmp/slurm.conf"
cat >"$SLURM_CONF" <<CONF
ClusterName=histoshard-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$sock
CredType=cred/munge
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool/%n
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=600
MpiDefault=none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
slurmctld -i || skip "slurmctld does not start (see $tmp/slurmctld.log)"
sleep 1
[ -f "$tmp/slurmctld.pid" ] && pids+=("$(cat "$tmp/slurmctld.pid")")
slurmd || skip "slurmd does not start (see $tmp/slurmd.log)"
sleep 1
[ -f "$tmp/slurmd.pid" ] && pids+=("$(cat "$tmp/slurmd.pid")")
for _ in $(seq 30); do
    sinfo -h -o '%T' 2>/dev/null | grep -q idle && break
    sleep 1
done
sinfo -h -o '%T' 2>/dev/null | grep -q idle \
    || { tail -5 "$tmp/slurmctld.log" "$tmp/slurmd.log"; skip "the Slurm node did not come up idle"; }
ready=$(date +%s)
echo "slurm up on $host ($cpus CPUs) in $((ready - started))s"

# Waits for job $1 to end; prints its state.
wait_job() {
    local state=""
    for _ in $(seq 600); do
        state=$(scontrol show job -o "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | head -1 | cut -d= -f2)
        case "$state" in
            COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE) echo "$state"; return ;;
        esac
        sleep 1
    done
    echo "TIMEOUT-WAITING($state)"
}

work="$tmp/work"
mkdir -p "$work"
cd "$work" || fail "cd $work"
"$bin" -q synth --output "$work/in" --images "$images" --seed 16 || fail "synth"
opts=(-i "$work/in" --augment 1 --shards 4)
t0=$(date +%s.%N)
"$bin" -q prepare "${opts[@]}" -o "$work/one" || fail "one-machine prepare"
t1=$(date +%s.%N)

ids=$(HISTOSHARD="$bin" "$root/scripts/cluster/slurm_submit.sh" -n "$n" -k "$k" -c 1 -- "${opts[@]}" -o "$work/cluster") \
    || fail "sbatch refused the jobs"
read -r array merge <<<"$ids"
state=$(wait_job "$merge")
t2=$(date +%s.%N)
[ "$state" = COMPLETED ] || { cat "$work"/histoshard-*.log 2>/dev/null | tail -20; fail "merge job $merge: $state"; }
for i in $(seq 0 $((n - 1))); do
    s=$(scontrol show job -o "${array}_$i" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | head -1)
    [ "$s" = JobState=COMPLETED ] || fail "array task $i: $s"
done

# The same bytes as one machine, prepare-timings.json aside.
same_dataset "$work/one" "$work/cluster" || fail "the merged folder differs from the one-machine run"
"$bin" -q verify "$work/cluster" || fail "verify refused the merged folder"
[ ! -e "$work/cluster/.histoshard-parts" ] || fail "parts left after the merge"
workers=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["workers"]))' "$work/cluster/prepare-timings.json")
[ "$workers" = "$n" ] || fail "prepare-timings.json lists $workers workers, not $n"

# A worker that fails (an input it cannot read): afterok keeps the merge
# from running, and nothing in the output looks complete.
bad="$work/bad"
cp -r "$work/in" "$work/in-bad"
opts_bad=(-i "$work/in-bad" --augment 1 --shards 4)
# (Root reads any file mode: the image is emptied instead.)
: >"$work/in-bad/$(ls "$work/in-bad" | grep -m1 '\.bmp$')"
ids=$(HISTOSHARD="$bin" "$root/scripts/cluster/slurm_submit.sh" -n 2 -- "${opts_bad[@]}" -o "$bad") || fail "sbatch refused"
read -r array2 merge2 <<<"$ids"
state=$(wait_job "$merge2")
case "$state" in
    CANCELLED|TIMEOUT-WAITING*) ;;  # --kill-on-invalid-dep cancels it
    *) fail "merge after a failed worker ended $state, expected CANCELLED" ;;
esac
[ ! -e "$bad/manifest.parquet" ] || fail "a failed array left a folder that looks complete"

t3=$(date +%s)
printf 'ok slurm_test: %d workers (at most %d at a time) + merge = one-machine bytes; verify ok; a failed worker stops the merge\n' "$n" "$k"
python3 - "$t0" "$t1" "$t2" "$started" "$ready" "$t3" <<'PY'
import sys
t0, t1, t2, started, ready, end = map(float, sys.argv[1:])
print(f"timings: slurm start {ready - started:.0f}s, one-machine prepare {t1 - t0:.1f}s, "
      f"array + merge through Slurm {t2 - t1:.1f}s, whole script {end - started:.0f}s")
PY
