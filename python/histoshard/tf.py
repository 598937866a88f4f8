"""Read histoshard output folders with ``tf.data``.

A folder written by ``histoshard prepare`` describes itself (``features.json``,
``prepare.json``; see :mod:`histoshard.folder`). This module turns that into
``tf.data`` pipelines and needs nothing but TensorFlow::

    import histoshard.tf as hs
    train = hs.make_dataset("OUT", "train", batch_size=32, image_size=224)
    val = hs.make_dataset("OUT", "val", shuffle=False, image_size=224)
    model.fit(train, validation_data=val, epochs=5)

Paths go through ``tf.io.gfile``, so ``gs://`` folders work as well as local
ones. ``python -m histoshard.tf OUT`` prints a summary of a folder.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from histoshard import folder as _folder
from histoshard.folder import (  # noqa: F401 - part of this module's interface
    IMAGE_KEY,
    LABEL_KEY,
    MANIFEST_CSV,
    MANIFEST_FEATURES,
    PREPARE_FILE,
    SCHEMA_FILE,
    SPLITS,
    Schema,
    feature_types,
)

#: features.json type name -> TF dtype of the parsed scalar.
DTYPES: dict[str, tf.DType] = {"bytes": tf.string, "int64": tf.int64, "float": tf.float32}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: File access through tf.io.gfile (local paths, gs://, ...).
GFILE = _folder.Files(open=tf.io.gfile.GFile, exists=tf.io.gfile.exists, isdir=tf.io.gfile.isdir, glob=tf.io.gfile.glob)


def load_schema(path_or_dir: str) -> Schema:
    """Loads ``features.json`` (a file, or an output folder holding one)."""
    return _folder.load_schema(path_or_dir, GFILE)


def feature_spec(schema: Schema) -> dict[str, tf.io.FixedLenFeature]:
    """The parsing spec of a record: every key is a required scalar."""
    return {key: tf.io.FixedLenFeature([], DTYPES[t]) for key, t in feature_types(schema).items()}


def load_prepare(out_dir: str) -> dict[str, Any] | None:
    """``prepare.json`` of a folder, or None when it has none."""
    return _folder.load_prepare(out_dir, GFILE)


def glob_shards(out_dir: str, split: str) -> list[str]:
    """Shard files of ``split`` present in the folder, sorted."""
    return _folder.glob_shards(out_dir, split, GFILE)


def shard_files(out_dir: str, split: str) -> list[str]:
    """Paths of the shards of ``split``, sorted; from prepare.json when present, else by glob."""
    return _folder.shard_files(out_dir, split, GFILE)


def compression(out_dir: str) -> str:
    """The ``compression_type`` for ``tf.data.TFRecordDataset``: ``"GZIP"`` or ``""``."""
    return "GZIP" if _folder.compression(out_dir, GFILE) == "gzip" else ""


def class_names(out_dir: str) -> list[str]:
    """Class names, indexed by label: from prepare.json, else from manifest.csv."""
    return _folder.class_names(out_dir, GFILE)


def count_records(out_dir: str, split: str) -> int:
    """Records in ``split``, as prepare.json reports them (no shard is read)."""
    return _folder.count_records(out_dir, split, GFILE)


def record_dataset(
    files: Sequence[str], compression_type: str = "", num_parallel_reads: int | None = None
) -> tf.data.Dataset:
    """Serialized records of ``files``; in file order, record by record, unless parallel reads are asked for."""
    return tf.data.TFRecordDataset(
        list(files), compression_type=compression_type, num_parallel_reads=num_parallel_reads
    )


def parse(serialized: tf.Tensor, spec: dict[str, tf.io.FixedLenFeature]) -> dict[str, tf.Tensor]:
    """One serialized record -> ``{key: scalar tensor}``."""
    return tf.io.parse_single_example(serialized, spec)


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """PNG/JPEG bytes -> uint8 ``[height, width, 3]``."""
    image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _size(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def make_dataset(
    out_dir: str,
    split: str = "train",
    batch_size: int | None = 32,
    image_size: int | Sequence[int] | None = None,
    shuffle: bool = True,
    shuffle_buffer: int = 2048,
    seed: int | None = None,
    repeat: bool = False,
    normalize: str | None = "unit",
    one_hot: bool = False,
    with_metadata: bool = False,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """A batched ``tf.data.Dataset`` of ``(image, label)`` or ``(image, label, meta)``.

    - ``image``: ``[batch, H, W, 3]``; float32 in [0, 1] (``normalize="unit"``),
      float32 standardised with the ImageNet mean/std (``"imagenet"``), or uint8
      in [0, 255] (``None``). ``image_size`` (int or ``(H, W)``) resizes
      bilinearly and makes the shape static.
    - ``label``: int32 class index, or float32 one-hot over ``class_names(out_dir)``.
    - ``meta``: every other key of features.json (not ``image/encoded``), e.g.
      ``meta["image/source_id"]`` to group patches by source image. Meant for
      evaluation: Keras would take a third element as sample weights.

    ``shuffle=True`` shuffles the shard order (each epoch), reads shards in
    parallel and shuffles records in a ``shuffle_buffer``; with a ``seed`` the
    order is reproducible. ``shuffle=False`` reads shards one after the other,
    in manifest order. ``repeat=True`` repeats forever (epochs stay whole).
    ``batch_size=None`` yields single examples.
    """
    if normalize not in ("unit", "imagenet", None):
        raise ValueError(f"normalize must be 'unit', 'imagenet' or None, not {normalize!r}")
    files = shard_files(out_dir, split)
    if not files:
        raise FileNotFoundError(f"{out_dir}: no shards for split {split!r}")
    spec = feature_spec(load_schema(out_dir))
    comp = compression(out_dir)
    num_classes = len(class_names(out_dir)) if one_hot else 0
    size = _size(image_size) if image_size is not None else None

    if shuffle:
        names = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed)
        ds = tf.data.TFRecordDataset(names, compression_type=comp, num_parallel_reads=tf.data.AUTOTUNE)
        ds = ds.shuffle(shuffle_buffer, seed=seed)  # serialized records: small next to decoded images
    else:
        ds = record_dataset(files, comp)
    if repeat:
        ds = ds.repeat()

    def to_example(serialized: tf.Tensor) -> tuple[tf.Tensor, ...]:
        features = parse(serialized, spec)
        image = decode_image(features[IMAGE_KEY])
        if size is not None:
            image = tf.image.resize(image, size, method="bilinear", antialias=True)
            image.set_shape([size[0], size[1], 3])
        if normalize is None:
            if image.dtype != tf.uint8:
                image = tf.saturate_cast(tf.round(image), tf.uint8)
        else:
            image = tf.cast(image, tf.float32) / 255.0
            if normalize == "imagenet":
                image = (image - IMAGENET_MEAN) / IMAGENET_STD
        label = tf.cast(features[LABEL_KEY], tf.int32)
        if one_hot:
            label = tf.one_hot(label, num_classes, dtype=tf.float32)
        if not with_metadata:
            return image, label
        meta = {k: v for k, v in features.items() if k != IMAGE_KEY}
        return image, label, meta

    ds = ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE)
    if batch_size:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def summary(out_dir: str) -> str:
    """A few lines about a folder: classes, compression, records per split, one batch's shapes."""
    prepare = load_prepare(out_dir) or {}
    lines = [
        f"folder:      {out_dir}",
        f"classes:     {class_names(out_dir)}",
        f"compression: {compression(out_dir) or 'none'}",
        f"format:      {prepare.get('config', {}).get('format', '?')}",
    ]
    first = None
    for split in SPLITS:
        files = shard_files(out_dir, split)
        count = count_records(out_dir, split) if "shards" in prepare else "?"
        lines.append(f"{split:<5}        {count} records in {len(files)} shards")
        if files and first is None:
            first = split
    if first is not None:
        image, label, meta = next(iter(make_dataset(out_dir, first, batch_size=8, shuffle=False, with_metadata=True)))
        lines.append(
            f"one {first} batch: image {image.shape} {image.dtype.name}, label {label.shape} {label.dtype.name}, "
            f"{len(meta)} metadata keys; labels {label.numpy().tolist()}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT_DIR")
    print(summary(sys.argv[1]))
