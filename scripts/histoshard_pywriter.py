"""A Python writer of the histoshard output layout, with ``tf.io.TFRecordWriter``.

Used by ``reference_prepare.py`` (the Python benchmark reference) and to make
test fixtures without the Rust binary::

    python histoshard_pywriter.py OUT [--format jpeg] [--compression gzip]

writes a small synthetic folder (shards, features.json, prepare.json,
manifest.csv, and ``OUT.digests.csv`` in the ``histoshard verify
--pixel-digests`` format, decoded with PIL). It writes no manifest.parquet
(that would need pyarrow); the TF checks read manifest.csv.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import shutil
from typing import Any

import numpy as np
import tensorflow as tf
from PIL import Image

import histoshard_tf as hs
from reference_prepare import SCHEMA_PATH, encode

MANIFEST_COLUMNS = [
    "record_id", "split", "subset", "fold", "shard", "index_in_shard", "byte_offset", "record_bytes",
    "source_image", "filename", "patient", "label", "label_text", "x", "y", "size", "scale",
    "augmentation", "aug_index", "seed", "sha256", "format", "encoded_bytes",
]  # fmt: skip

FRAME_OVERHEAD = 16  # TFRecord frame: u64 length, u32 crc(length), data, u32 crc(data)


def shard_name(split: str, index: int, count: int, compression: str) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord" + (".gz" if compression == "gzip" else "")


def to_example(values: dict[str, Any], types: dict[str, str]) -> tf.train.Example:
    """A ``tf.train.Example`` with exactly the schema's keys, each a scalar of its type."""
    if set(values) != set(types):
        raise KeyError(
            f"keys differ from the schema: missing {sorted(set(types) - set(values))}, "
            f"unknown {sorted(set(values) - set(types))}"
        )
    feature = {}
    for key, kind in types.items():
        v = values[key]
        if kind == "bytes":
            f = tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() if isinstance(v, str) else bytes(v)]))
        elif kind == "int64":
            f = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))
        else:
            f = tf.train.Feature(float_list=tf.train.FloatList(value=[float(v)]))
        feature[key] = f
    return tf.train.Example(features=tf.train.Features(feature=feature))


def pixel_sha256(encoded: bytes) -> str:
    """sha256 of the image decoded by PIL as RGB uint8, row-major HWC."""
    with Image.open(io.BytesIO(encoded)) as im:
        return hashlib.sha256(np.asarray(im.convert("RGB"), dtype=np.uint8).tobytes()).hexdigest()


class OutputWriter:
    """Streams records into ``shards`` shard files per split, round-robin, and
    writes features.json, prepare.json and manifest.csv on :meth:`close`.
    ``record_id`` is the write order (= manifest row)."""

    def __init__(
        self,
        out_dir: str,
        schema_path: str,
        classes: list[str],
        shards: int,
        compression: str = "none",
        config: dict[str, Any] | None = None,
        splits: tuple[str, ...] = hs.SPLITS,
    ) -> None:
        if compression not in ("none", "gzip"):
            raise ValueError(f"compression must be none or gzip, not {compression!r}")
        os.makedirs(out_dir, exist_ok=True)
        shutil.copyfile(schema_path, os.path.join(out_dir, hs.SCHEMA_FILE))
        self.out_dir, self.classes, self.compression = out_dir, classes, compression
        self.types = hs.feature_types(hs.load_schema(schema_path))
        self.config = {**(config or {}), "compression": compression}
        options = tf.io.TFRecordOptions(compression_type="GZIP" if compression == "gzip" else "")
        self.files = {s: [shard_name(s, i, shards, compression) for i in range(shards)] for s in splits}
        self.writers = {
            s: [tf.io.TFRecordWriter(os.path.join(out_dir, f), options) for f in fs] for s, fs in self.files.items()
        }
        self.counts = {s: [0] * shards for s in splits}
        self.offsets = {s: [0] * shards for s in splits}
        self.next_in_split = dict.fromkeys(splits, 0)
        self.rows: list[dict[str, Any]] = []
        self.encoded_bytes_total = 0

    def write(
        self, values: dict[str, Any], fold: int | None = None, aug_index: int = 0, seed: int = 0
    ) -> dict[str, Any]:
        """Writes one record; ``values`` has every schema key but ``histoshard/record_id``. Returns its manifest row."""
        split = values[hs.MANIFEST_FEATURES["split"]]
        values = {**values, hs.MANIFEST_FEATURES["record_id"]: len(self.rows)}
        data = to_example(values, self.types).SerializeToString()
        shard = self.next_in_split[split] % len(self.writers[split])
        self.next_in_split[split] += 1
        self.writers[split][shard].write(data)
        encoded = values[hs.IMAGE_KEY]
        row = {col: values[key] for col, key in hs.MANIFEST_FEATURES.items()}
        row.update(
            fold="" if fold is None else fold,
            patient=row["patient"] or "",
            shard=self.files[split][shard],
            index_in_shard=self.counts[split][shard],
            byte_offset=self.offsets[split][shard],
            record_bytes=len(data),
            aug_index=aug_index,
            seed=seed,
            sha256=hashlib.sha256(encoded).hexdigest(),
            encoded_bytes=len(encoded),
        )
        self.counts[split][shard] += 1
        self.offsets[split][shard] += len(data) + FRAME_OVERHEAD
        self.encoded_bytes_total += len(encoded)
        self.rows.append(row)
        return row

    def _shard_entry(self, file: str, records: int) -> dict[str, Any]:
        # histoshard also records each shard's CRC-32C, which only its resuming
        # reads; Python's standard library has no CRC-32C to compute it with.
        return {"file": file, "records": records, "bytes": os.path.getsize(os.path.join(self.out_dir, file))}

    def close(self) -> dict[str, Any]:
        """Closes the shards and writes prepare.json and manifest.csv; returns prepare.json's content."""
        for ws in self.writers.values():
            for w in ws:
                w.close()
        prepare = {
            "classes": self.classes,
            "config": self.config,
            "records": {s: sum(n) for s, n in self.counts.items()},
            "records_total": len(self.rows),
            "mean_bytes_per_record": self.encoded_bytes_total / max(len(self.rows), 1),
            "shards": {s: [self._shard_entry(f, n) for f, n in zip(self.files[s], self.counts[s])] for s in self.files},
        }
        with open(os.path.join(self.out_dir, hs.PREPARE_FILE), "w") as f:
            json.dump(prepare, f, indent=2)
        with open(os.path.join(self.out_dir, hs.MANIFEST_CSV), "w", newline="") as f:
            w = csv.DictWriter(f, MANIFEST_COLUMNS, lineterminator="\n")
            w.writeheader()
            w.writerows(self.rows)
        return prepare


def make_fixture(
    out_dir: str,
    fmt: str = "png",
    compression: str = "none",
    shards: int = 2,
    size: int = 32,
    counts: dict[str, int] | None = None,
    seed: int = 0,
    schema_path: str = SCHEMA_PATH,
) -> str:
    """Writes a synthetic output folder and ``{out_dir}.digests.csv``; returns the digests path."""
    counts = counts or {"train": 11, "val": 3, "test": 5}
    rng = np.random.default_rng(seed)
    classes = ["benign", "malignant"]
    config = {"format": fmt, "patch_size": size, "seed": seed, "fixture": True}
    writer = OutputWriter(out_dir, schema_path, classes, shards, compression, config)
    digests = []
    for split, n in counts.items():
        for i in range(n):
            yy, xx = np.mgrid[0:size, 0:size]
            base = np.stack([xx * 255 // size, yy * 255 // size, (xx + yy) * 127 // size], -1)
            pixels = np.clip(base + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8)
            encoded = encode(pixels, fmt)
            label = i % 2
            source = f"{split}_{i // 3 + 1}"
            values = {
                "image/encoded": encoded,
                "image/format": fmt,
                "image/height": size,
                "image/width": size,
                "image/channels": 3,
                "image/class/label": label,
                "image/class/text": classes[label],
                "image/filename": f"{source}.bmp",
                "image/source_id": source,
                "histoshard/patient_id": "" if i % 4 == 3 else str(i // 3),
                "histoshard/split": split,
                "histoshard/subset": "testA" if split == "test" else "train",
                "histoshard/patch/x": size * (i % 3),
                "histoshard/patch/y": 0,
                "histoshard/patch/size": size,
                "histoshard/scale": 0.5 if i % 2 else 1.0,
                "histoshard/augmentation": "none" if i % 3 == 0 else "flip_h+hed",
            }
            row = writer.write(values, fold=i % 3 if split == "train" else None, aug_index=int(i % 3 != 0), seed=i)
            digests.append((row["record_id"], pixel_sha256(encoded)))
    writer.close()
    path = out_dir.rstrip("/") + ".digests.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["record_id", "pixel_sha256"])
        w.writerows(digests)
    return path


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="Write a small synthetic histoshard output folder (a test fixture).")
    p.add_argument("output")
    p.add_argument("--format", choices=["png", "jpeg"], default="png")
    p.add_argument("--compression", choices=["none", "gzip"], default="none")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    print(make_fixture(a.output, a.format, a.compression, a.shards, a.size, seed=a.seed))
