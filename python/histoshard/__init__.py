"""histoshard for Python: the output folders of ``histoshard prepare``.

The wheel installs the ``histoshard`` command (prepare, verify, inspect,
synth) and this package:

- ``histoshard.tf``: ``tf.data`` pipelines (``make_dataset``, ``class_names``,
  the parsing spec from the folder's ``features.json``); needs TensorFlow.
- ``histoshard.torch``: ``ShardDataset``, a PyTorch ``IterableDataset``; needs
  PyTorch, numpy, Pillow and crc32c, not TensorFlow.
- ``histoshard.manifest(folder)``: the manifest as a data frame.

A folder may also be a URL (``s3://``, ``gs://``, ``az://``, ``file://``):
read through ``fsspec`` and the store's package (``s3fs``, ``gcsfs``,
``adlfs``) when installed (``histoshard.manifest``, ``histoshard.folder``,
``histoshard.records``, ``histoshard.torch``); ``histoshard.tf`` reads what
``tf.io.gfile`` reads.
- ``histoshard.folder``: what a folder says about itself (schema, splits,
  shards, classes), plain Python; ``histoshard.records``: TFRecord frames and
  ``tf.train.Example`` records without TensorFlow.

Importing ``histoshard`` imports neither TensorFlow nor PyTorch.
"""

from __future__ import annotations

import importlib.util
import io
import os
from typing import Any

from histoshard.folder import (
    MANIFEST_CSV,
    files_for,
    MANIFEST_FEATURES,
    MANIFEST_PARQUET,
    SPLITS,
    class_names,
    count_records,
    feature_types,
    load_schema,
    shard_files,
)

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("histoshard")
except PackageNotFoundError:  # a checkout's python/ on sys.path
    __version__ = "0+checkout"

__all__ = ["SPLITS", "class_names", "count_records", "manifest", "shard_files"]

#: Tried in this order when ``manifest(backend=None)``.
BACKENDS = ("polars", "pandas")

# Columns that may be empty (null) in manifest.csv; every other column is a value.
_NULLABLE = ("fold", "patient")


def manifest(folder: str, backend: str | None = None) -> Any:
    """The folder's manifest, one row per record, as a data frame.

    ``backend=None`` tries polars first (histoshard writes the manifest with
    Polars: ``manifest.parquet`` is read as written, with its types and nulls),
    then pandas (``manifest.csv``: text columns as strings, an empty ``fold``
    or ``patient`` as NaN). ``backend="polars"`` or ``"pandas"`` asks for one.
    """
    if backend not in (None, *BACKENDS):
        raise ValueError(f"backend must be one of {BACKENDS} or None, not {backend!r}")
    candidates = BACKENDS if backend is None else (backend,)
    fs = files_for(folder)
    for name in candidates:
        if importlib.util.find_spec(name) is None:
            continue
        if name == "polars":
            import polars as pl

            with fs.open(os.path.join(folder, MANIFEST_PARQUET), "rb") as f:
                return pl.read_parquet(io.BytesIO(f.read()))
        import pandas as pd

        # The text columns: those repeating a bytes feature of features.json, and the shard names and digests.
        types = feature_types(load_schema(folder))
        text = [c for c, key in MANIFEST_FEATURES.items() if types.get(key) == "bytes"] + ["shard", "sha256"]
        with fs.open(os.path.join(folder, MANIFEST_CSV), "r") as f:
            return pd.read_csv(
                f,
                dtype={c: str for c in text},
                keep_default_na=False,
                na_values={c: [""] for c in _NULLABLE},
            )
    raise ImportError(f"histoshard.manifest needs {' or '.join(candidates)}: pip install {candidates[0]}")
