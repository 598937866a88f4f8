#!/usr/bin/env python3
"""Check that TensorFlow reads a histoshard output folder unmodified.

    python tf_readback.py OUT [--pixel-digests OUT.digests.csv]

Reads every record of every split with TF (through ``histoshard_tf``) and
checks it against ``manifest.csv``, ``prepare.json`` and ``features.json``:

- per record: its manifest row (by shard and index_in_shard, i.e. record
  order), every features.json key present once with its type and none other,
  TF's ``parse_single_example`` with the spec, each manifest column that repeats
  a feature (record_id, label, label_text, patch position, ...), record_bytes
  and byte_offset, sha256 and size of ``image/encoded``, the declared format
  against the bytes, ``tf.io.decode_image`` and its shape against
  image/height/width/channels, the pixel digest of ``histoshard verify
  --pixel-digests`` (PNG only: JPEG decoders may differ by a level or two, so
  JPEG records are checked by encoded sha256 and shape), and that
  ``histoshard_tf.make_dataset`` yields the same record with the same pixels
  in manifest order;
- per shard and split: record counts against prepare.json and the manifest,
  the shard files on disk against prepare.json (names and sizes).

Prints one ``FAIL ...`` line per failed check, then exactly
``tf_readback: N passed, M failed``; exits 1 on any failure or when no record
was read.
"""

from __future__ import annotations

import argparse
import collections
import csv
import hashlib
import os
import re
import sys
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import histoshard_tf as hs  # noqa: E402

MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "jpeg": b"\xff\xd8\xff"}
MANIFEST_COLUMNS = list(
    dict.fromkeys(
        ["shard", "index_in_shard", "byte_offset", "record_bytes", "sha256", "encoded_bytes", *hs.MANIFEST_FEATURES]
    )
)
KIND_FIELD = {"bytes": "bytes_list", "int64": "int64_list", "float": "float_list"}


class Report:
    """Counts checks; prints a line per failure (up to a limit)."""

    def __init__(self, max_lines: int) -> None:
        self.passed = self.failed = 0
        self.max_lines = max_lines
        self.jpeg_unhashed: list[int] = []

    def check(self, ok: bool, where: str, what: str) -> bool:
        if ok:
            self.passed += 1
        else:
            self.fail(where, what)
        return ok

    def fail(self, where: str, what: str) -> None:
        self.failed += 1
        if self.failed <= self.max_lines:
            print(f"FAIL {where}: {what}", flush=True)
        elif self.failed == self.max_lines + 1:
            print(f"FAIL ... further failures are counted but not shown (--max-fail-lines {self.max_lines})")

    def summary(self, records: int) -> int:
        """Prints the final line; the exit status."""
        self.check(records > 0, "tf_readback", "no records read")
        print(f"tf_readback: {self.passed} passed, {self.failed} failed")
        return 1 if self.failed else 0


def read_csv(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def same(kind: str, record_value: Any, manifest_value: str) -> bool:
    """Compares a parsed feature value with its manifest.csv text."""
    if kind == "bytes":
        return record_value.decode("utf-8", "replace") == manifest_value
    if kind == "int64":
        return manifest_value != "" and int(record_value) == int(manifest_value)
    try:
        expected = float(np.float32(manifest_value))
    except ValueError:
        return False
    return abs(float(record_value) - expected) <= 1e-6 * max(1.0, abs(expected))


def short(v: Any) -> str:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def tf_message(e: tf.errors.OpError) -> str:
    """The first line of a TF error, without the function-node and op decorations."""
    text = re.sub(r"\{\{[^}]*\}\}\s*", "", e.message).splitlines()[0]
    return f"{type(e).__name__}: {text.split(' [Op:')[0]}"


def check_features(example: tf.train.Example, types: dict[str, str], where: str, r: Report) -> bool:
    """Every schema key present with its type and one value, and no other key."""
    problems = []
    feature = example.features.feature
    for key, kind in types.items():
        if key not in feature:
            problems.append(f"{key} missing")
            continue
        which = feature[key].WhichOneof("kind")
        if which != KIND_FIELD[kind]:
            problems.append(f"{key} is {which or 'empty'}, schema says {kind}")
        elif len(getattr(feature[key], which).value) != 1:
            problems.append(f"{key} has {len(getattr(feature[key], which).value)} values, not 1")
    problems += [f"{k} is not in features.json" for k in sorted(set(feature) - set(types))]
    return r.check(not problems, where, "features: " + "; ".join(problems))


def check_shard(
    split: str,
    file: str,
    rows: list[dict[str, str]],
    comp: str,
    types: dict[str, str],
    spec: dict[str, tf.io.FixedLenFeature],
    digests: dict[int, str] | None,
    r: Report,
    pixel_hashes: dict[int, str],
) -> tuple[int, list[int]]:
    """Checks each record of one shard against its manifest rows; returns how many records TF read, and
    the record ids of those that parsed, in order."""
    name = os.path.basename(file)
    by_index = {int(row["index_in_shard"]): row for row in rows}
    ids: list[int] = []
    offset = 0
    index = 0
    records = iter(hs.record_dataset([file], comp))
    while True:
        where = f"{name} record {index}"
        try:
            serialized = next(records).numpy()
        except StopIteration:
            break
        except tf.errors.OpError as e:
            r.fail(where, f"TF cannot read this record: {tf_message(e)}")
            break
        row = by_index.get(index)
        index += 1
        if not r.check(row is not None, where, "no manifest row has this shard and index_in_shard"):
            offset += len(serialized) + 16
            continue
        r.check(int(row["byte_offset"]) == offset, where, f"byte_offset {offset}, manifest says {row['byte_offset']}")
        r.check(
            int(row["record_bytes"]) == len(serialized),
            where,
            f"record is {len(serialized)} bytes, manifest record_bytes {row['record_bytes']}",
        )
        offset += len(serialized) + 16
        r.check(row["split"] == split, where, f"manifest split {row['split']!r} for a {split!r} shard")
        try:
            example = tf.train.Example.FromString(serialized)
        except Exception as e:  # noqa: BLE001 - any decode error is a finding
            r.fail(where, f"not a tf.train.Example: {e}")
            continue
        if not check_features(example, types, where, r):
            continue
        try:
            parsed = {k: v.numpy() for k, v in hs.parse(tf.constant(serialized), spec).items()}
        except tf.errors.OpError as e:
            r.fail(where, f"tf.io.parse_single_example failed: {tf_message(e)}")
            continue
        r.check(
            all(parsed[k].dtype == hs.DTYPES[t].as_numpy_dtype for k, t in types.items() if t != "bytes"),
            where,
            "parse_single_example returned a wrong dtype",
        )
        record_id = int(parsed[hs.MANIFEST_FEATURES["record_id"]])
        ids.append(record_id)
        for column, key in hs.MANIFEST_FEATURES.items():
            if key in types:
                r.check(
                    same(types[key], parsed[key], row[column]),
                    where,
                    f"{key} = {short(parsed[key])}, manifest {column} = {row[column]!r}",
                )
        encoded = parsed[hs.IMAGE_KEY]
        sha = hashlib.sha256(encoded).hexdigest()
        r.check(sha == row["sha256"], where, f"sha256(image/encoded) = {sha}, manifest sha256 = {row['sha256']}")
        r.check(
            len(encoded) == int(row["encoded_bytes"]),
            where,
            f"image/encoded is {len(encoded)} bytes, manifest encoded_bytes {row['encoded_bytes']}",
        )
        fmt = parsed["image/format"].decode("utf-8", "replace")
        r.check(
            encoded.startswith(MAGIC.get(fmt, b"\0\0no-such-format")),
            where,
            f"image/format {fmt!r} but the bytes start {encoded[:4]!r}",
        )
        try:
            image = hs.decode_image(tf.constant(encoded)).numpy()
        except tf.errors.OpError as e:
            r.fail(where, f"tf.io.decode_image failed: {tf_message(e)}")
            continue
        declared = tuple(int(parsed[k]) for k in ("image/height", "image/width", "image/channels"))
        r.check(
            image.shape == declared and declared[2] == 3,
            where,
            f"decoded shape {image.shape}, record says (height, width, channels) = {declared}",
        )
        pixel_sha = hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()
        pixel_hashes[record_id] = pixel_sha
        if digests is not None:
            if fmt == "jpeg":
                r.jpeg_unhashed.append(record_id)
            elif r.check(record_id in digests, where, f"record_id {record_id} has no row in the pixel digests"):
                r.check(
                    digests[record_id] == pixel_sha,
                    where,
                    f"TF-decoded pixel sha256 {pixel_sha} != Rust reader's {digests[record_id]}",
                )
    r.check(index == len(rows), name, f"TF read {index} records, the manifest lists {len(rows)} for this shard")
    return index, ids


def check_shard_file(path: str, entry: dict[str, Any], r: Report) -> None:
    """The file's size against prepare.json's. (prepare.json also lists each shard's
    CRC-32C, for resuming; Python's standard library cannot compute one. TF checks
    every frame's CRC-32C as it reads, and every record's sha256 is checked against
    the manifest.)"""
    name = os.path.basename(path)
    if "bytes" in entry:
        size = os.path.getsize(path)
        r.check(size == int(entry["bytes"]), name, f"file is {size} bytes, prepare.json says {entry['bytes']}")


def check_make_dataset(out: str, split: str, expected: list[int], pixel_hashes: dict[int, str], r: Report) -> None:
    """histoshard_tf.make_dataset(shuffle=False) yields the records in order, with the same pixels."""
    got: list[tuple[int, str]] = []
    try:
        ds = hs.make_dataset(out, split, batch_size=64, shuffle=False, normalize=None, with_metadata=True)
        for images, _, meta in ds:
            for image, rid in zip(images.numpy(), meta[hs.MANIFEST_FEATURES["record_id"]].numpy()):
                got.append((int(rid), hashlib.sha256(image.tobytes()).hexdigest()))
    except tf.errors.OpError as e:
        r.fail(f"make_dataset({split!r})", tf_message(e))
        return
    r.check(len(got) == len(expected), f"make_dataset({split!r})", f"{len(got)} records, shards hold {len(expected)}")
    for i, ((rid, sha), want) in enumerate(zip(got, expected)):
        where = f"make_dataset({split!r}) element {i}"
        if r.check(rid == want, where, f"record_id {rid}, expected {want} (manifest order)"):
            r.check(sha == pixel_hashes.get(rid), where, f"pixels of record {rid} differ from its per-record decode")


def run(out: str, digests_path: str | None, max_lines: int) -> int:
    r = Report(max_lines)
    schema = hs.load_schema(out)
    types, spec = hs.feature_types(schema), hs.feature_spec(schema)
    prepare = hs.load_prepare(out)
    r.check(prepare is not None and "shards" in prepare, out, f"no {hs.PREPARE_FILE} with a 'shards' list")
    manifest = read_csv(os.path.join(out, hs.MANIFEST_CSV))
    missing = [c for c in MANIFEST_COLUMNS if manifest and c not in manifest[0]]
    if not r.check(not missing, hs.MANIFEST_CSV, f"columns missing: {missing}"):
        return r.summary(0)
    digests = None
    if digests_path:
        digests = {int(row["record_id"]): row["pixel_sha256"].strip().lower() for row in read_csv(digests_path)}
    comp = hs.compression(out)
    by_shard: dict[str, list[dict[str, str]]] = collections.defaultdict(list)
    for row in manifest:
        by_shard[row["shard"]].append(row)
    ids = [int(row["record_id"]) for row in manifest]
    r.check(len(set(ids)) == len(ids), hs.MANIFEST_CSV, "record_id is not unique")

    listed_splits = set((prepare or {}).get("shards", {}))
    splits = list(hs.SPLITS) + sorted(listed_splits - set(hs.SPLITS))
    seen: set[str] = set()
    pixel_hashes: dict[int, str] = {}
    total = 0
    for split in splits:
        files = hs.shard_files(out, split)
        on_disk = [os.path.basename(f) for f in hs.glob_shards(out, split)]
        names = [os.path.basename(f) for f in files]
        r.check(sorted(on_disk) == names, split, f"shard files on disk {on_disk} != prepare.json's {names}")
        entries = {e["file"]: e for e in (prepare or {}).get("shards", {}).get(split, [])}
        listed = {f: int(e["records"]) for f, e in entries.items()}
        read_ids: list[int] = []
        read = 0
        for file, name in zip(files, names):
            seen.add(name)
            r.check(
                name.endswith(".gz") == (comp == "GZIP"),
                name,
                f"extension does not match compression {comp or 'none'!r}",
            )
            if not r.check(os.path.exists(file), name, "shard file is missing"):
                continue
            rows = sorted(by_shard.get(name, []), key=lambda row: int(row["index_in_shard"]))
            check_shard_file(file, entries.get(name, {}), r)
            count, shard_ids = check_shard(split, file, rows, comp, types, spec, digests, r, pixel_hashes)
            if name in listed:
                r.check(count == listed[name], name, f"TF read {count} records, prepare.json says {listed[name]}")
            read += count
            read_ids += shard_ids
        in_manifest = sum(1 for row in manifest if row["split"] == split)
        r.check(
            read == in_manifest == sum(listed.values()),
            split,
            f"TF read {read} records, manifest has {in_manifest}, prepare.json says {sum(listed.values())}",
        )
        if read:
            check_make_dataset(out, split, read_ids, pixel_hashes, r)
        print(f"tf_readback: {split}: {read} records in {len(files)} shards", flush=True)
        total += read

    for name in sorted(set(by_shard) - seen):
        r.fail(hs.MANIFEST_CSV, f"{len(by_shard[name])} rows name shard {name!r}, which no split lists")
    if digests is not None:
        unknown = sorted(set(digests) - set(ids))
        r.check(not unknown, digests_path, f"{len(unknown)} digest rows for unknown record_ids, e.g. {unknown[:5]}")
        if r.jpeg_unhashed:
            print(
                f"tf_readback: note: {len(r.jpeg_unhashed)} jpeg records checked by sha256(image/encoded) and shape, "
                "not by pixel digest (JPEG decoders may differ by a level or two)"
            )
    return r.summary(total)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="output folder of histoshard prepare")
    p.add_argument("--pixel-digests", help="record_id,pixel_sha256 CSV from histoshard verify --pixel-digests")
    p.add_argument("--max-fail-lines", type=int, default=200, help="print at most this many FAIL lines")
    a = p.parse_args()
    try:
        return run(a.out, a.pixel_digests, a.max_fail_lines)
    except (OSError, ValueError, KeyError, tf.errors.OpError) as e:  # an unreadable folder is a failure, not a crash
        r = Report(a.max_fail_lines)
        r.fail(a.out, f"{type(e).__name__}: {e}")
        return r.summary(0)


if __name__ == "__main__":
    sys.exit(main())
