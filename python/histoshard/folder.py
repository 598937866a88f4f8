"""What an output folder of ``histoshard prepare`` says about itself.

Pure Python (no TensorFlow, no PyTorch): ``features.json`` lists every key of
a record and its type, ``prepare.json`` the classes, the compression and the
shard files of each split with their record counts, ``manifest.csv`` one row
per record. ``histoshard.tf`` and ``histoshard.torch`` both build on this.

File access goes through a :class:`Files`: local files for a path, and for
a URL (``s3://``, ``gs://``, ``az://``, ``file://``) `fsspec
<https://filesystem-spec.readthedocs.io>`_ with the protocol's package
(``s3fs``, ``gcsfs``, ``adlfs``) when they are installed (optional: a clear
``ImportError`` names what to install otherwise). ``histoshard.tf`` passes
``tf.io.gfile``'s, so ``gs://`` folders work there without fsspec.
"""

from __future__ import annotations

import csv
import glob as _glob
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SCHEMA_FILE = "features.json"
PREPARE_FILE = "prepare.json"
MANIFEST_CSV = "manifest.csv"
MANIFEST_PARQUET = "manifest.parquet"
SPLITS = ("train", "val", "test")

IMAGE_KEY = "image/encoded"
LABEL_KEY = "image/class/label"
#: The value types of features.json.
TYPES = ("bytes", "int64", "float")

#: manifest.csv columns that repeat a record's feature (column -> feature key).
MANIFEST_FEATURES: dict[str, str] = {
    "record_id": "histoshard/record_id",
    "split": "histoshard/split",
    "subset": "histoshard/subset",
    "source_image": "image/source_id",
    "filename": "image/filename",
    "patient": "histoshard/patient_id",
    "label": "image/class/label",
    "label_text": "image/class/text",
    "x": "histoshard/patch/x",
    "y": "histoshard/patch/y",
    "size": "histoshard/patch/size",
    "scale": "histoshard/scale",
    "augmentation": "histoshard/augmentation",
    "format": "image/format",
}

Schema = dict[str, Any]


@dataclass(frozen=True)
class Files:
    """The file operations a folder needs."""

    open: Callable[[str, str], Any]
    exists: Callable[[str], bool]
    isdir: Callable[[str], bool]
    glob: Callable[[str], list[str]]


LOCAL = Files(open=lambda p, m: io.open(p, m), exists=os.path.exists, isdir=os.path.isdir, glob=_glob.glob)

#: The fsspec implementation each URL scheme needs (None: fsspec's own).
FSSPEC_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs", "file": None}


def is_url(path: str) -> bool:
    """Whether ``path`` is a URL (``scheme://...``) rather than a local path."""
    scheme, sep, _ = str(path).partition("://")
    return bool(sep) and scheme[:1].isalpha() and all(c.isalnum() or c in "+-." for c in scheme)


def url_files(url: str) -> Files:
    """:class:`Files` for ``url``'s store, through fsspec (credentials and
    endpoints as fsspec's implementation reads them, e.g. ``AWS_*`` for s3fs)."""
    scheme = str(url).partition("://")[0].lower()
    package = FSSPEC_PACKAGES.get(scheme, scheme + "fs")
    needed = "fsspec" + (f" and {package}" if package else "")
    try:
        import fsspec
    except ImportError:
        raise ImportError(f"reading {url} needs {needed}: pip install {needed.replace(' and ', ' ')}") from None
    try:
        fs = fsspec.filesystem(scheme)
    except (ImportError, ValueError) as e:
        raise ImportError(f"reading {url} needs {needed}: pip install {needed.replace(' and ', ' ')} ({e})") from None
    return Files(
        open=lambda p, m: fs.open(p, m),
        exists=fs.exists,
        isdir=fs.isdir,
        glob=lambda pattern: [fs.unstrip_protocol(p) for p in fs.glob(pattern)],
    )


def files_for(path: str, fs: Files | None = None) -> Files:
    """``fs`` if given, else the :class:`Files` for ``path``: local, or fsspec's for a URL."""
    if fs is not None:
        return fs
    return url_files(path) if is_url(path) else LOCAL


def read_json(path: str, fs: Files | None = None) -> Any:
    fs = files_for(path, fs)
    with fs.open(path, "r") as f:
        return json.load(f)


def load_schema(path_or_dir: str, fs: Files | None = None) -> Schema:
    """Loads ``features.json`` (a file, or an output folder holding one)."""
    fs = files_for(path_or_dir, fs)
    path = path_or_dir
    if fs.isdir(path):
        path = os.path.join(path, SCHEMA_FILE)
    schema = read_json(path, fs)
    for f in schema.get("features", []):
        if f.get("type") not in TYPES:
            raise ValueError(f"{path}: feature {f.get('key')!r} has unknown type {f.get('type')!r}")
    if not schema.get("features"):
        raise ValueError(f"{path}: no features")
    return schema


def feature_types(schema: Schema) -> dict[str, str]:
    """``{key: "bytes" | "int64" | "float"}``, in schema order."""
    return {f["key"]: f["type"] for f in schema["features"]}


def load_prepare(out_dir: str, fs: Files | None = None) -> dict[str, Any] | None:
    """``prepare.json`` of a folder, or None when it has none."""
    fs = files_for(out_dir, fs)
    path = os.path.join(out_dir, PREPARE_FILE)
    return read_json(path, fs) if fs.exists(path) else None


def glob_shards(out_dir: str, split: str, fs: Files | None = None) -> list[str]:
    """Shard files of ``split`` present in the folder, sorted."""
    fs = files_for(out_dir, fs)
    pattern = os.path.join(out_dir, f"{split}-?????-of-?????.tfrecord")
    return sorted(fs.glob(pattern) + fs.glob(pattern + ".gz"))


def splits(out_dir: str, fs: Files | None = None) -> list[str]:
    """The folder's splits: train, val, test, then any other prepare.json lists."""
    fs = files_for(out_dir, fs)
    prepare = load_prepare(out_dir, fs) or {}
    listed = set(prepare.get("shards", {}))
    return list(SPLITS) + sorted(listed - set(SPLITS))


def shard_files(out_dir: str, split: str, fs: Files | None = None) -> list[str]:
    """Paths of the shards of ``split``, sorted; from prepare.json when present, else by glob."""
    fs = files_for(out_dir, fs)
    prepare = load_prepare(out_dir, fs)
    if prepare is not None and "shards" in prepare:
        entries = prepare["shards"].get(split, [])
        return sorted(os.path.join(out_dir, e["file"]) for e in entries)
    return glob_shards(out_dir, split, fs)


def compression(out_dir: str, fs: Files | None = None) -> str | None:
    """``"gzip"`` or None (uncompressed shards)."""
    fs = files_for(out_dir, fs)
    prepare = load_prepare(out_dir, fs)
    if prepare is not None and "compression" in prepare.get("config", {}):
        value = str(prepare["config"]["compression"]).lower()
        if value not in ("none", "gzip"):
            raise ValueError(f"{out_dir}: unknown compression {value!r} in {PREPARE_FILE}")
        return "gzip" if value == "gzip" else None
    files = [f for split in SPLITS for f in shard_files(out_dir, split, fs)]
    return "gzip" if files and all(f.endswith(".gz") for f in files) else None


def read_manifest_csv(out_dir: str, fs: Files | None = None) -> list[dict[str, str]]:
    """``manifest.csv``, one dict of strings per record, in file order."""
    fs = files_for(out_dir, fs)
    with fs.open(os.path.join(out_dir, MANIFEST_CSV), "r") as f:
        return list(csv.DictReader(f))


def class_names(out_dir: str, fs: Files | None = None) -> list[str]:
    """Class names, indexed by label: from prepare.json, else from manifest.csv."""
    fs = files_for(out_dir, fs)
    prepare = load_prepare(out_dir, fs)
    if prepare is not None and "classes" in prepare:
        return list(prepare["classes"])
    names: dict[int, str] = {}
    for row in read_manifest_csv(out_dir, fs):
        names[int(row["label"])] = row["label_text"]
    return [names.get(i, str(i)) for i in range(max(names, default=-1) + 1)]


def count_records(out_dir: str, split: str, fs: Files | None = None) -> int:
    """Records in ``split``, as prepare.json reports them (no shard is read)."""
    fs = files_for(out_dir, fs)
    prepare = load_prepare(out_dir, fs)
    if prepare is None or "shards" not in prepare:
        raise FileNotFoundError(f"{out_dir}: no {PREPARE_FILE} with shard counts")
    return sum(int(e["records"]) for e in prepare["shards"].get(split, []))
