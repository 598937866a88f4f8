#!/usr/bin/env bash
# Object storage for real: a local S3 server (moto, from PyPI) on 127.0.0.1.
#  1. `prepare --output s3://bucket/prefix` holds, object for object, the same
#     bytes as a local `prepare` with the same options; `verify` and `inspect`
#     read it there.
#  2. A bucket that does not exist, and credentials the server refuses (a
#     second moto that checks them): one `error:` line each, exit != 0,
#     before any work.
#  3. A server that fails mid-upload (a TCP proxy in front of moto that cuts
#     every connection once it has passed N bytes, and refuses new ones): one
#     `error:` line, exit != 0, no manifest.parquet in the bucket (nothing
#     that looks complete), every object there whole; `verify` refuses the
#     prefix; the rerun without the proxy completes it, byte for byte, and
#     aborts the multipart uploads the cut run began and could not abort
#     (none left open: S3's list-multipart-uploads).
#  4. Two workers (`--worker-index I --num-workers 2 -o s3://...`) and
#     `merge s3://...`: the same objects, byte for byte, as the one-machine
#     upload of 1.; a merge with a part missing is refused naming it.
#  5. The Python reader on the URL (fsspec + s3fs): `histoshard.manifest`,
#     the pure-Python record reader and the shard list read the uploaded set
#     from the server and match the local folder's.
#
#   scripts/s3_test.sh
#
# moto comes from PyPI into a venv (MOTO_VENV, default
# ~/.cache/histoshard-moto-venv; created with `pip install s3fs polars crc32c`,
# then `pip install 'moto[server]' boto3==<s3fs's botocore>` when missing:
# aiobotocore pins botocore, and naming the matching boto3 saves pip a long
# backtrack). Skips (exit 0, saying why) when moto cannot be installed or
# started, or the binary was built without object storage.
# Environment: HISTOSHARD (the binary; default: the release build).
set -uo pipefail

name=s3_test
# shellcheck source=lib/script_test.sh
. "$(dirname "$0")/lib/script_test.sh"
venv="${MOTO_VENV:-$HOME/.cache/histoshard-moto-venv}"
install_moto() {  # VENV
    "$1/bin/pip" install -q s3fs polars crc32c || return 1
    local bv
    bv=$("$1/bin/python" -c 'import botocore; print(botocore.__version__)') || return 1
    "$1/bin/pip" install -q 'moto[server]' "boto3==$bv" || "$1/bin/pip" install -q 'moto[server]'
}
ensure_venv "$venv" 'import moto.server, boto3, s3fs, polars, crc32c' install_moto
py="$venv/bin/python"

tmp="$(mktemp -d /tmp/histoshard-s3.XXXXXX)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The S3 client side of the checks: make a bucket, list it, download it.
cat >"$tmp/s3.py" <<'EOF'
import os, sys, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
cmd, bucket = sys.argv[1], sys.argv[2]
if cmd == "mb":
    s3.create_bucket(Bucket=bucket)
elif cmd == "ls":  # names under the prefix, one a line
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=sys.argv[3] + "/")
    for page in pages:
        for o in page.get("Contents", []):
            print(o["Key"][len(sys.argv[3]) + 1:])
elif cmd == "get":  # every object under the prefix into a folder
    prefix, out = sys.argv[3], sys.argv[4]
    os.makedirs(out, exist_ok=True)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for o in page.get("Contents", []):
            s3.download_file(bucket, o["Key"], os.path.join(out, o["Key"][len(prefix) + 1:]))
elif cmd == "uploads":  # multipart uploads begun and never completed
    print(len(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])))
EOF

# A TCP proxy that forwards to PORT until it has passed LIMIT bytes from
# clients, then cuts every connection and closes new ones at once: a server
# that fails mid-upload and stays down.
cat >"$tmp/proxy.py" <<'EOF'
import socket, sys, threading
listen, target, limit = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
state = {"sent": 0, "cut": False}
lock = threading.Lock()
conns = []
def pipe(src, dst, count):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if count:
                with lock:
                    if state["cut"]:
                        break
                    room = limit - state["sent"]
                    if len(data) >= room:
                        dst.sendall(data[:max(room, 0)])
                        state["sent"] = limit
                        state["cut"] = True
                        break
                    state["sent"] += len(data)
            dst.sendall(data)
    except OSError:
        pass
    if count and state["cut"]:
        for c in list(conns):
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", listen))
srv.listen(64)
print("ready", flush=True)
while True:
    client, _ = srv.accept()
    if state["cut"]:
        client.close()
        continue
    upstream = socket.create_connection(("127.0.0.1", target))
    conns.extend([client, upstream])
    threading.Thread(target=pipe, args=(client, upstream, True), daemon=True).start()
    threading.Thread(target=pipe, args=(upstream, client, False), daemon=True).start()
EOF

start_moto() {  # PORT [ENV...]: a moto server on 127.0.0.1:PORT
    local port=$1
    shift
    env "$@" "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$tmp/moto-$port.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "http://127.0.0.1:$port/" && return 0
        sleep 0.1
    done
    return 1
}

port=$(free_port)
start_moto "$port" || skip "moto_server did not start (see $tmp/moto-$port.log)"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 \
    AWS_DEFAULT_REGION=us-east-1 AWS_ALLOW_HTTP=true AWS_ENDPOINT_URL="http://127.0.0.1:$port" \
    HISTOSHARD_CACHE="$tmp/cache" HISTOSHARD_STORE_RETRIES=2 HISTOSHARD_UPLOAD_PART_MB=5
unset AWS_PROFILE AWS_SESSION_TOKEN
"$bin" -q synth --output "$tmp/in" --images 24 --seed 31 || fail "synth"
# One shard per split: the train shard is larger than a 5 MiB part, so it goes up in parts.
opts=(-i "$tmp/in" --augment 1 --shards 1 --seed 4)
"$bin" -q prepare "${opts[@]}" -o "$tmp/local" || fail "local prepare"
"$bin" prepare -h | grep -q 's3://' || skip "this histoshard has no object storage (built without the object-store feature)"

# Asserts: exit != 0, exactly one `error:` line, holding every NEEDLE.
one_error() {  # ERRFILE RC NEEDLE...
    local file=$1 rc=$2 n
    shift 2
    [ "$rc" -ne 0 ] || fail "succeeded, expected a failure: $(cat "$file")"
    [ "$(grep -c '^error:' "$file")" = 1 ] || { cat "$file"; fail "not one error line"; }
    ! grep -q panicked "$file" || fail "panic: $(cat "$file")"
    for n in "$@"; do
        grep '^error:' "$file" | grep -q -- "$n" || fail "error line lacks '$n': $(grep '^error:' "$file")"
    done
    echo "  $(grep '^error:' "$file")"
}

# ---- 1. The same bytes as a local run; verify and inspect read them there.
"$py" "$tmp/s3.py" mb hs-test || fail "create bucket"
t0=$(date +%s.%N)
"$bin" prepare "${opts[@]}" -o s3://hs-test/sets/glas >"$tmp/up.out" 2>"$tmp/up.err" \
    || { cat "$tmp/up.err"; fail "prepare to s3:// failed"; }
t1=$(date +%s.%N)
cat "$tmp/up.out"
"$py" "$tmp/s3.py" get hs-test sets/glas "$tmp/fromS3" || fail "download"
same_dataset "$tmp/local" "$tmp/fromS3" || fail "the bucket's objects differ from the local run"
[ "$("$py" "$tmp/s3.py" ls hs-test sets/glas | wc -l)" = "$(ls "$tmp/local" | wc -l)" ] || fail "other objects in the bucket"
"$bin" verify s3://hs-test/sets/glas >"$tmp/verify.out" || fail "verify s3:// refused the upload"
grep -q "^ok: .*s3://hs-test/sets/glas" "$tmp/verify.out" || fail "verify said: $(cat "$tmp/verify.out")"
"$bin" inspect s3://hs-test/sets/glas --per-class 2 >"$tmp/inspect.out" || fail "inspect s3://"
grep -q "contact sheet:" "$tmp/inspect.out" || fail "inspect said: $(cat "$tmp/inspect.out")"
"$bin" prepare "${opts[@]}" -o s3://hs-test/sets/glas | grep -q "already holds this data set" \
    || fail "a rerun did not find the data set there"
echo "ok: prepare → s3:// = local bytes ($(ls "$tmp/local" | wc -l) objects); verify and inspect on s3://"

# ---- 2. A bucket that does not exist; credentials refused.
"$bin" prepare "${opts[@]}" -o s3://no-such-bucket/x 2>"$tmp/nb.err"
one_error "$tmp/nb.err" $? "s3://no-such-bucket/x" "does not exist"
"$bin" verify s3://no-such-bucket/x 2>"$tmp/nb2.err"
one_error "$tmp/nb2.err" $? "does not exist"
[ ! -e "$tmp/cache/staging" ] || [ -z "$(ls "$tmp/cache/staging")" ] || fail "work was staged for a missing bucket"
auth_port=$(free_port)
if start_moto "$auth_port" INITIAL_NO_AUTH_ACTION_COUNT=0; then
    AWS_ENDPOINT_URL="http://127.0.0.1:$auth_port" "$bin" prepare "${opts[@]}" -o s3://hs-test/x 2>"$tmp/cred.err"
    one_error "$tmp/cred.err" $? "s3://hs-test/x" "credentials refused"
    AWS_ENDPOINT_URL="http://127.0.0.1:$auth_port" "$bin" verify s3://hs-test/x 2>"$tmp/cred2.err"
    one_error "$tmp/cred2.err" $? "credentials refused"
else
    fail "the second moto_server (checking credentials) did not start"
fi
echo "ok: missing bucket, refused credentials: one error line, exit != 0"

# ---- 3. A server that fails mid-upload.
"$py" "$tmp/s3.py" mb hs-cut || fail "create bucket"
total=$(du -cb "$tmp/local"/* | tail -1 | cut -f1)
limit=$((total / 2))
proxy_port=$(free_port)
"$py" "$tmp/proxy.py" "$proxy_port" "$port" "$limit" >"$tmp/proxy.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do grep -qs ready "$tmp/proxy.log" && break; sleep 0.1; done
AWS_ENDPOINT_URL="http://127.0.0.1:$proxy_port" "$bin" prepare "${opts[@]}" -o s3://hs-cut/glas \
    >/dev/null 2>"$tmp/cut.err"
one_error "$tmp/cut.err" $? "s3://hs-cut/glas"
"$py" "$tmp/s3.py" ls hs-cut glas >"$tmp/cut.ls"
echo "  in the bucket after the cut ($limit of $total bytes passed): $(tr '\n' ' ' <"$tmp/cut.ls")"
! grep -qx manifest.parquet "$tmp/cut.ls" || fail "a cut upload left a manifest.parquet"
"$py" "$tmp/s3.py" get hs-cut glas "$tmp/cut" || fail "download"
for f in "$tmp/cut"/*; do
    name=$(basename "$f")
    [ -e "$tmp/local/$name" ] || continue
    [ "$name" = prepare-timings.json ] || cmp -s "$f" "$tmp/local/$name" || fail "$name in the bucket is not the whole file"
done
open_uploads=$("$py" "$tmp/s3.py" uploads hs-cut)
echo "  multipart uploads left open (invisible): $open_uploads"
"$bin" verify s3://hs-cut/glas 2>"$tmp/cutv.err"
one_error "$tmp/cutv.err" $? "no complete histoshard data set"
"$bin" prepare "${opts[@]}" -o s3://hs-cut/glas >/dev/null 2>"$tmp/rerun.err" || { cat "$tmp/rerun.err"; fail "the rerun failed"; }
rm -rf "$tmp/cut2"
"$py" "$tmp/s3.py" get hs-cut glas "$tmp/cut2" || fail "download"
same_dataset "$tmp/local" "$tmp/cut2" || fail "the rerun's objects differ from the local run"
"$bin" -q verify s3://hs-cut/glas || fail "verify refused the rerun's upload"
# The rerun aborted the multipart uploads the cut run began and could not abort (it recorded their ids).
grep -q "aborted $open_uploads multipart upload" "$tmp/rerun.err" || [ "$open_uploads" = 0 ] \
    || { cat "$tmp/rerun.err"; fail "the rerun did not say it aborted the $open_uploads open multipart upload(s)"; }
left_open=$("$py" "$tmp/s3.py" uploads hs-cut)
[ "$left_open" = 0 ] || fail "$left_open multipart upload(s) still open after the rerun"
echo "  multipart uploads open after the rerun: $left_open (it aborted the $open_uploads the cut run left)"
echo "ok: a server cut mid-upload: one error line, no manifest.parquet, whole objects only; the rerun completes it"

# ---- 4. Two workers and a merge on s3:// = the one-machine upload of 1.
w0=$(date +%s.%N)
for i in 0 1; do
    "$bin" -q prepare "${opts[@]}" -o s3://hs-test/sets/workers --worker-index $i --num-workers 2 2>"$tmp/w$i.err" \
        || { cat "$tmp/w$i.err"; fail "worker $i of 2 to s3:// failed"; }
done
"$py" "$tmp/s3.py" ls hs-test sets/workers | grep -q '^manifest.parquet$' && fail "a manifest.parquet before the merge"
w1=$(date +%s.%N)
"$bin" merge s3://hs-test/sets/workers >"$tmp/merge.out" 2>"$tmp/merge.err" || { cat "$tmp/merge.err"; fail "merge s3:// failed"; }
w2=$(date +%s.%N)
cat "$tmp/merge.out"
"$py" "$tmp/s3.py" get hs-test sets/workers "$tmp/fromWorkers" || fail "download"
same_dataset "$tmp/fromS3" "$tmp/fromWorkers" || fail "workers + merge differ from the one-machine upload"
[ "$("$py" "$tmp/s3.py" ls hs-test sets/workers | wc -l)" = "$(ls "$tmp/local" | wc -l)" ] \
    || fail "other objects left after the merge: $("$py" "$tmp/s3.py" ls hs-test sets/workers | tr '\n' ' ')"
"$bin" -q verify s3://hs-test/sets/workers || fail "verify refused the merged set"
# Only worker 0 of 2 ran: the merge names the missing part, and publishes nothing.
"$bin" -q prepare "${opts[@]}" -o s3://hs-test/sets/half --worker-index 0 --num-workers 2 || fail "worker 0 of 2"
"$bin" merge s3://hs-test/sets/half 2>"$tmp/half.err"
one_error "$tmp/half.err" $? "s3://hs-test/sets/half/.histoshard-parts/part-1-of-2" "missing"
! "$py" "$tmp/s3.py" ls hs-test sets/half | grep -qx manifest.parquet || fail "a refused merge left a manifest.parquet"
echo "ok: 2 workers + merge on s3:// = the one-machine upload, byte for byte; a missing part refused"

# ---- 5. The Python reader on s3:// (fsspec + s3fs), against the local folder.
PYTHONPATH="$root/python" "$py" - "$tmp/local" s3://hs-test/sets/glas >"$tmp/py.out" 2>&1 <<'PY' || { cat "$tmp/py.out"; fail "the Python reader on s3://"; }
import sys
import histoshard
from histoshard import folder, records
local, url = sys.argv[1], sys.argv[2]
a, b = histoshard.manifest(local), histoshard.manifest(url)
assert a.equals(b), "manifest differs"
assert folder.class_names(url) == folder.class_names(local)
n = 0
for split in folder.SPLITS:
    la, lb = folder.shard_files(local, split), folder.shard_files(url, split)
    assert [p.rsplit("/", 1)[1] for p in la] == [p.rsplit("/", 1)[1] for p in lb], (la, lb)
    types = folder.feature_types(folder.load_schema(url))
    for pa, pb in zip(la, lb):
        ra = list(records.read_frames(pa, folder.compression(local)))
        rb = list(records.read_frames(pb, folder.compression(url)))
        assert ra == rb, pb
        assert [records.parse_record(r, types) for r in rb] == [records.parse_record(r, types) for r in ra]
        n += len(rb)
assert n == a.height, (n, a.height)
try:  # gcsfs is not in this venv: a clear ImportError naming it
    folder.load_prepare("gs://some-bucket/set")
    raise AssertionError("gs:// without gcsfs did not raise")
except ImportError as e:
    assert "gcsfs" in str(e) and "pip install" in str(e), e
print(f"python: {n} records and the manifest ({a.height} rows) read from {url} = the local folder")
PY
cat "$tmp/py.out"

end=$(date +%s)
echo "ok s3_test: prepare → s3:// byte-identical, verify/inspect on s3://, missing bucket, refused credentials, cut mid-upload, workers + merge on s3://, the Python reader on s3://"
python3 -c "import sys; print(f'timings: workers 2 × prepare + upload {float(sys.argv[2]) - float(sys.argv[1]):.1f}s, merge {float(sys.argv[3]) - float(sys.argv[2]):.1f}s')" "$w0" "$w1" "$w2"
python3 -c "import sys; print(f'timings: prepare + upload to moto {float(sys.argv[2]) - float(sys.argv[1]):.1f}s, whole script {int(sys.argv[4]) - int(sys.argv[3])}s')" "$t0" "$t1" "$started" "$end"
