#!/usr/bin/env python3
"""Check that ``histoshard.torch`` reads a histoshard output folder exactly.

    python torch_readback.py OUT [--pixel-digests OUT.digests.csv] [--expect-records N]

Uses the installed ``histoshard`` package (no TensorFlow) and checks, against
``manifest.csv``, ``prepare.json`` and the Rust reader (``histoshard verify
--pixel-digests``, and its record count as ``--expect-records``):

- ``ShardDataset(OUT)`` (every split) yields every record once, in manifest
  order; each record's label, label text and every other manifest column that
  repeats a feature equal the manifest row; the image is uint8 ``[3, size,
  size]``; its pixels' sha256 equals the Rust reader's (PNG; JPEG decoders may
  differ by a level or two, so JPEG records are checked by the sha256 of
  ``image/encoded`` as ``histoshard.records`` reads it, and shape);
- per split, per fold, per subset: the records the manifest selects;
- DataLoader workers x ranks (fewer and more readers than shards): every record
  read by exactly one reader;
- ``shuffle=True``: a permutation, reproducible by seed, new with ``set_epoch``;
- two ``torch.distributed`` ranks (gloo, spawned): every record read once;
- ``dtype=torch.float32`` and ``transform``; a shard with one flipped byte or
  cut short raises ``ShardError`` naming it, the record and its offset; a
  record without a features.json key, with another type or two values is
  refused by ``records.parse_record``; an unknown split is refused;
- ``histoshard.manifest`` with each installed backend (polars, pandas).

Prints one ``FAIL ...`` line per failed check, then exactly
``torch_readback: N passed, M failed``; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import collections
import csv
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile

import torch

import histoshard
from histoshard import folder as hf
from histoshard import records
from histoshard.torch import ShardDataset


class Report:
    def __init__(self) -> None:
        self.passed = self.failed = 0

    def check(self, ok: bool, where: str, what: str) -> bool:
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            if self.failed <= 200:
                print(f"FAIL {where}: {what}", flush=True)
        return ok


def same(kind: str, value, text: str) -> bool:
    if kind == "bytes":
        return value == text
    if kind == "int64":
        return text != "" and int(value) == int(text)
    expected = float(torch.tensor(float(text), dtype=torch.float32))
    return abs(float(value) - expected) <= 1e-6 * max(1.0, abs(expected))


def manifest_order(out: str, rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Manifest rows in the order the shards hold them: split by split, shard by shard."""
    by_shard = collections.defaultdict(list)
    for row in rows:
        by_shard[row["shard"]].append(row)
    ordered = []
    for split in hf.splits(out):
        for path in hf.shard_files(out, split):
            ordered += sorted(by_shard[os.path.basename(path)], key=lambda r: int(r["index_in_shard"]))
    return ordered


def pixel_sha(image: torch.Tensor) -> str:
    """sha256 of the [H, W, 3] uint8 bytes: what `histoshard verify --pixel-digests` hashes."""
    return hashlib.sha256(image.permute(1, 2, 0).contiguous().numpy().tobytes()).hexdigest()


def ids_of(ds: ShardDataset, workers: int = 0) -> list[int]:
    ds.with_metadata = True
    if workers == 0:
        return [int(meta["histoshard/record_id"]) for _, _, meta in ds]
    loader = torch.utils.data.DataLoader(ds, batch_size=32, num_workers=workers)
    return [int(i) for _, _, meta in loader for i in meta["histoshard/record_id"]]


def check_records(out: str, rows, digests, expect: int | None, r: Report) -> None:
    types = hf.feature_types(hf.load_schema(out))
    ordered = manifest_order(out, rows)
    encoded_sha = {}
    for split in hf.splits(out):
        for path in hf.shard_files(out, split):
            for data in records.read_frames(path, hf.compression(out)):
                fields = records.parse_record(data, types)
                encoded_sha[int(fields["histoshard/record_id"])] = hashlib.sha256(fields[hf.IMAGE_KEY]).hexdigest()
    got = list(ShardDataset(out, with_metadata=True))
    r.check(len(got) == len(rows), out, f"ShardDataset yields {len(got)} records, manifest.csv has {len(rows)}")
    if expect is not None:
        r.check(len(got) == expect, out, f"ShardDataset yields {len(got)} records, histoshard verify read {expect}")
    prepare = hf.load_prepare(out) or {}
    listed = sum(int(e["records"]) for entries in prepare.get("shards", {}).values() for e in entries)
    r.check(listed == len(got), out, f"prepare.json lists {listed} records, ShardDataset yields {len(got)}")
    jpeg = 0
    for i, ((image, label, meta), row) in enumerate(zip(got, ordered)):
        where = f"record {i} ({row['shard']} #{row['index_in_shard']})"
        rid = int(meta["histoshard/record_id"])
        if not r.check(rid == int(row["record_id"]), where, f"record_id {rid}, manifest order says {row['record_id']}"):
            continue
        r.check(label == int(row["label"]), where, f"label {label}, manifest {row['label']}")
        for column, key in hf.MANIFEST_FEATURES.items():
            if key in types and key in meta:
                r.check(same(types[key], meta[key], row[column]), where, f"{key} = {meta[key]!r}, manifest {row[column]!r}")
        size = int(row["size"])
        r.check(
            image.dtype == torch.uint8 and tuple(image.shape) == (3, size, size),
            where,
            f"image {image.dtype} {tuple(image.shape)}, expected uint8 (3, {size}, {size})",
        )
        r.check(encoded_sha.get(rid) == row["sha256"], where, "sha256(image/encoded) differs from the manifest's")
        if row["format"] == "jpeg":
            jpeg += 1
        elif digests is not None:
            r.check(pixel_sha(image) == digests.get(rid), where, "decoded pixels differ from the Rust reader's")
    if jpeg:
        print(f"torch_readback: note: {jpeg} jpeg records checked by sha256(image/encoded) and shape")


def check_filters(out: str, rows, r: Report) -> None:
    def expected(keep) -> list[int]:
        return [int(row["record_id"]) for row in manifest_order(out, rows) if keep(row)]

    for split in hf.splits(out):
        if hf.shard_files(out, split):
            want = expected(lambda row: row["split"] == split)
            r.check(ids_of(ShardDataset(out, split)) == want, f"split={split!r}", "records differ from the manifest's")
    folds = sorted({int(row["fold"]) for row in rows if row["fold"] != ""})
    for k in folds:
        want = expected(lambda row: row["fold"] == str(k))
        r.check(ShardDataset(out, fold=k).num_records == len(want), f"fold={k}", "num_records differs")
    if len(folds) > 1:
        pick = folds[:2]
        want = expected(lambda row: row["split"] == "train" and row["fold"] in {str(k) for k in pick})
        got = ids_of(ShardDataset(out, "train", fold=pick))
        r.check(got == want, f"split='train', fold={pick}", f"{len(got)} records, manifest selects {len(want)}")
    if not folds:  # prepared without --folds: no record has one
        try:
            ShardDataset(out, fold=0)
            r.check(False, "fold=0 without folds", "accepted")
        except ValueError as e:
            r.check("no record matches" in str(e), "fold=0 without folds", f"message: {e}")
    for subset in sorted({row["subset"] for row in rows}):
        want = expected(lambda row: row["subset"] == subset)
        r.check(ids_of(ShardDataset(out, subset=subset)) == want, f"subset={subset!r}", "records differ")
    try:
        ShardDataset(out, "no-such-split")
        r.check(False, "split='no-such-split'", "accepted")
    except ValueError as e:
        r.check("no split 'no-such-split'" in str(e), "split='no-such-split'", f"message: {e}")


def check_readers(out: str, rows, r: Report) -> None:
    everything = sorted(int(row["record_id"]) for row in rows)
    shards = sum(len(hf.shard_files(out, s)) for s in hf.splits(out))
    for world, workers in ((2, 2), (shards, 2)):  # fewer readers than shards, then more
        seen = []
        for rank in range(world):
            seen += ids_of(ShardDataset(out, rank=rank, world_size=world), workers)
        where = f"{world} ranks x {workers} workers ({shards} shards)"
        r.check(sorted(seen) == everything, where, f"{len(seen)} records read ({len(set(seen))} distinct), "
                f"manifest has {len(everything)}")


def check_shuffle(out: str, r: Report) -> None:
    plain = ids_of(ShardDataset(out, "train"))
    a = ids_of(ShardDataset(out, "train", shuffle=True, seed=3, shuffle_buffer=16))
    b = ids_of(ShardDataset(out, "train", shuffle=True, seed=3, shuffle_buffer=16))
    ds = ShardDataset(out, "train", shuffle=True, seed=3, shuffle_buffer=16)
    ds.set_epoch(1)
    c = ids_of(ds)
    r.check(sorted(a) == sorted(plain), "shuffle", "not a permutation of the split")
    r.check(a == b, "shuffle", "same seed, different order")
    r.check(a != plain and c != a, "shuffle", "order unchanged (by shuffling or by set_epoch)")


def check_dtype_transform(out: str, r: Report) -> None:
    u8 = next(iter(ShardDataset(out, "train")))[0]
    f32, label = next(iter(ShardDataset(out, "train", dtype=torch.float32, transform=lambda x: x.flip(-1),
                                        target_transform=lambda y: y + 10)))
    r.check(f32.dtype == torch.float32, "dtype=float32", f"image dtype {f32.dtype}")
    r.check(torch.allclose(f32, u8.flip(-1).float() / 255.0), "transform", "float image != flipped uint8 / 255")
    first_label = next(iter(ShardDataset(out, "train")))[1]
    r.check(label == first_label + 10, "target_transform", f"label {label}, expected {first_label + 10}")


def check_corruption(out: str, rows, r: Report) -> None:
    if hf.compression(out) is not None:
        return
    name = hf.shard_files(out, "train")[0]
    first = next(row for row in rows if row["shard"] == os.path.basename(name) and row["index_in_shard"] == "0")
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "out")
        shutil.copytree(out, copy)
        shard = os.path.join(copy, os.path.basename(name))
        with open(shard, "r+b") as f:  # one byte inside the first record's data
            f.seek(12 + int(first["record_bytes"]) // 2)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0x01]))
        last = max((row for row in rows if row["shard"] == os.path.basename(name)), key=lambda row: int(row["index_in_shard"]))
        cases = (
            ("flipped byte", "data CRC-32C mismatch", f"{shard}: record 0 at byte 0: "),
            ("cut short", "truncated record", f"{shard}: record {last['index_in_shard']} at byte {last['byte_offset']}: "),
        )
        for what, cause, where in cases:
            if what == "cut short":
                shutil.copy(os.path.join(out, os.path.basename(name)), shard)
                size = os.path.getsize(shard)
                with open(shard, "r+b") as f:
                    f.truncate(size - 5)
            try:
                list(ShardDataset(copy, "train"))
                r.check(False, what, "the shard read without an error")
            except records.ShardError as e:
                r.check(cause in str(e) and where in str(e), what, f"message: {e}")


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, body: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(body)) + body


def encode_example(features: dict[str, tuple[str, list]]) -> bytes:
    """A tf.train.Example, written the way TF writes one (packed numbers)."""
    import struct

    entries = b""
    for key, (kind, values) in features.items():
        if kind == "bytes":
            inner = _field(1, b"".join(_field(1, v) for v in values))
        elif kind == "float":
            inner = _field(2, _field(1, struct.pack(f"<{len(values)}f", *values)))
        else:
            inner = _field(3, _field(1, b"".join(_varint(v) for v in values)))
        entries += _field(1, _field(1, key.encode()) + _field(2, inner))
    return _field(1, entries)


def check_schema(out: str, r: Report) -> None:
    """parse_record against features.json: a missing key, a wrong type, two values are refused."""
    types = hf.feature_types(hf.load_schema(out))
    data = next(records.read_frames(hf.shard_files(out, "train")[0], hf.compression(out)))
    good = records.parse_example(data)
    r.check(records.parse_record(encode_example(good), types) == records.parse_record(data, types),
            "encode_example", "a re-encoded record parses differently")
    r.check(good["histoshard/patch/x"][1] == [int(good["histoshard/patch/x"][1][0])], "parse", "int64 value")
    negative = dict(good, **{"histoshard/patch/x": ("int64", [-3])})
    r.check(records.parse_record(encode_example(negative), types)["histoshard/patch/x"] == -3, "parse", "negative int64")
    bad = {
        "missing key": ({k: v for k, v in good.items() if k != "image/class/label"}, "'image/class/label' missing"),
        "wrong type": (dict(good, **{"image/class/label": ("float", [1.0])}), "is float, features.json says int64"),
        "two values": (dict(good, **{"image/class/label": ("int64", [0, 1])}), "has 2 values, not 1"),
    }
    for what, (features, message) in bad.items():
        try:
            records.parse_record(encode_example(features), types)
            r.check(False, f"parse_record, {what}", "accepted")
        except ValueError as e:
            r.check(message in str(e), f"parse_record, {what}", f"message: {e}")
    try:
        records.parse_record(data[:-7], types)
        r.check(False, "parse_record, cut record", "accepted")
    except ValueError as e:
        r.check("not a tf.train.Example" in str(e), "parse_record, cut record", f"message: {e}")


def _distributed_rank(rank: int, world: int, init: str, out: str, result: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        ids = ids_of(ShardDataset(out))  # rank and world size from torch.distributed
        with open(f"{result}.{rank}", "w") as f:
            f.write(" ".join(map(str, ids)))
    finally:
        torch.distributed.destroy_process_group()


def check_distributed(out: str, rows, r: Report) -> None:
    """Two torch.distributed ranks (gloo) read every record once between them."""
    if not torch.distributed.is_available():
        r.check(False, "torch.distributed", "not available in this torch build")
        return
    world = 2
    with tempfile.TemporaryDirectory() as tmp:
        init, result = f"file://{tmp}/rendezvous", os.path.join(tmp, "ids")
        torch.multiprocessing.spawn(_distributed_rank, args=(world, init, out, result), nprocs=world)
        seen = []
        for rank in range(world):
            with open(f"{result}.{rank}") as f:
                seen += [int(i) for i in f.read().split()]
    everything = sorted(int(row["record_id"]) for row in rows)
    r.check(sorted(seen) == everything, f"torch.distributed, {world} ranks",
            f"{len(seen)} records read ({len(set(seen))} distinct), manifest has {len(everything)}")


def check_manifest(out: str, rows, r: Report) -> None:
    backends = [b for b in histoshard.BACKENDS if importlib.util.find_spec(b) is not None]
    r.check(bool(backends), "manifest()", "neither polars nor pandas is installed")
    for backend in backends:
        frame = histoshard.manifest(out, backend=backend)
        where = f"manifest(backend={backend!r})"
        r.check(type(frame).__module__.split(".")[0] == backend, where, f"returned a {type(frame)}")
        r.check(len(frame) == len(rows), where, f"{len(frame)} rows, manifest.csv has {len(rows)}")
        for column in ("record_id", "label", "index_in_shard"):
            got = [int(v) for v in frame[column].to_list()] if backend == "polars" else frame[column].astype(int).tolist()
            r.check(got == [int(row[column]) for row in rows], where, f"column {column} differs from manifest.csv")
        for column in ("source_image", "patient"):  # text, also where it looks like a number
            got = [None if v is None or v != v else str(v) for v in frame[column].to_list()]
            r.check(got == [row[column] or None for row in rows], where, f"column {column} differs from manifest.csv")
        folds = [None if v is None or v != v else int(v) for v in frame["fold"].to_list()]
        r.check(folds == [int(row["fold"]) if row["fold"] else None for row in rows], where, "column fold differs")
    print(f"torch_readback: manifest() backends checked: {', '.join(backends)}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--pixel-digests", help="record_id,pixel_sha256 CSV from histoshard verify --pixel-digests")
    p.add_argument("--expect-records", type=int, help="records the Rust reader (histoshard verify) read")
    a = p.parse_args()
    print(f"torch_readback: histoshard {histoshard.__version__} from {os.path.dirname(histoshard.__file__)}")
    r = Report()
    with open(os.path.join(a.out, hf.MANIFEST_CSV), newline="") as f:
        rows = list(csv.DictReader(f))
    digests = None
    if a.pixel_digests:
        with open(a.pixel_digests, newline="") as f:
            digests = {int(row["record_id"]): row["pixel_sha256"].strip().lower() for row in csv.DictReader(f)}
    check_records(a.out, rows, digests, a.expect_records, r)
    check_filters(a.out, rows, r)
    check_readers(a.out, rows, r)
    check_shuffle(a.out, r)
    check_dtype_transform(a.out, r)
    check_corruption(a.out, rows, r)
    check_schema(a.out, r)
    check_distributed(a.out, rows, r)
    check_manifest(a.out, rows, r)
    r.check(len(rows) > 0, a.out, "no records")
    print(f"torch_readback: {r.passed} passed, {r.failed} failed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
