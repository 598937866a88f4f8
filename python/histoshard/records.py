"""TFRecord shards without TensorFlow: frames with their CRC-32C checked, and
``tf.train.Example`` records parsed into ``{key: value}``.

A TFRecord frame is ``uint64 length``, ``uint32 masked_crc32c(length)``,
``data``, ``uint32 masked_crc32c(data)`` (little-endian). Both CRCs are checked;
a short or corrupt frame raises :class:`ShardError` naming the file, the record
and its byte offset. CRC-32C comes from the ``crc32c`` package (C, with
hardware support), or ``google-crc32c`` when that is the one installed.

The Example message (``schemas/example.proto``, TensorFlow's field numbers) is
decoded here with a small protobuf wire-format reader, so neither TensorFlow
nor ``protobuf`` is needed (and no second ``tensorflow.Example`` is registered
in protobuf's global pool next to TensorFlow's).
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator
from typing import IO, Any

from histoshard import folder as _folder

_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF


class ShardError(ValueError):
    """A shard or record that cannot be read: the message names the file and the cause."""


def _crc32c_function():
    try:
        from crc32c import crc32c

        return crc32c
    except ImportError:
        pass
    try:
        import google_crc32c

        return lambda data: google_crc32c.value(bytes(data))
    except ImportError:
        raise ImportError(
            "histoshard.records checks every frame's CRC-32C and needs the crc32c package: pip install crc32c"
        ) from None


crc32c = _crc32c_function()


def masked_crc32c(data: bytes | memoryview) -> int:
    """TFRecord's masked CRC-32C of ``data``."""
    crc = crc32c(data) & _U32
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _U32


def open_shard(path: str, compression: str | None) -> IO[bytes]:
    """The uncompressed byte stream of a shard (``compression``: ``"gzip"`` or None);
    a URL (``s3://``, ``gs://``, ``az://``, ``file://``) is read through fsspec."""
    if compression not in ("gzip", None):
        raise ValueError(f"compression must be 'gzip' or None, not {compression!r}")
    if not _folder.is_url(path):
        return gzip.open(path, "rb") if compression == "gzip" else open(path, "rb")
    raw = _folder.url_files(path).open(path, "rb")
    if compression is None:
        return raw
    unzipped = gzip.GzipFile(fileobj=raw, mode="rb")
    unzipped.myfileobj = raw  # closed with it
    return unzipped


def read_frames(path: str, compression: str | None = None) -> Iterator[bytes]:
    """The serialized records of one shard, in order, each frame's CRCs checked."""
    with open_shard(path, compression) as f:
        index = offset = 0
        while True:
            where = f"{path}: record {index} at byte {offset}"
            try:
                header = f.read(12)
            except (OSError, EOFError) as e:
                raise ShardError(f"{where}: {e}") from None
            if not header:
                return
            if len(header) < 12:
                raise ShardError(f"{where}: truncated frame header ({len(header)} of 12 bytes)")
            length, length_crc = struct.unpack("<QI", header)
            if masked_crc32c(header[:8]) != length_crc:
                raise ShardError(f"{where}: length CRC-32C mismatch (corrupt frame header)")
            try:
                data = f.read(length)
                footer = f.read(4)
            except (OSError, EOFError) as e:
                raise ShardError(f"{where}: {e}") from None
            if len(data) < length:
                raise ShardError(f"{where}: truncated record ({len(data)} of {length} bytes)")
            if len(footer) < 4:
                raise ShardError(f"{where}: truncated frame (its data CRC-32C is cut off)")
            if masked_crc32c(data) != struct.unpack("<I", footer)[0]:
                raise ShardError(f"{where}: data CRC-32C mismatch (corrupt record)")
            yield data
            index += 1
            offset += 16 + length


# ---- tf.train.Example, wire format ----

_KINDS = {1: "bytes", 2: "float", 3: "int64"}  # Feature's oneof field numbers


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of a message: an int for varints, bytes otherwise."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ValueError("field runs past the end of its message")
        yield number, wire, value


def _values(kind: str, body: bytes) -> list[Any]:
    """The ``value`` list of a BytesList / FloatList / Int64List (packed or not)."""
    out: list[Any] = []
    for number, wire, value in _fields(body):
        if number != 1:
            continue
        if kind == "bytes":
            out.append(bytes(value))
        elif kind == "float":
            if wire == 2:
                if len(value) % 4:
                    raise ValueError("packed floats of a length not a multiple of 4")
                out.extend(struct.unpack(f"<{len(value) // 4}f", value))
            else:
                out.append(struct.unpack("<f", value)[0])
        elif wire == 2:
            pos = 0
            while pos < len(value):
                v, pos = _varint(value, pos)
                out.append(v - (1 << 64) if v >= 1 << 63 else v)
        else:
            out.append(value - (1 << 64) if value >= 1 << 63 else value)
    return out


def parse_example(serialized: bytes) -> dict[str, tuple[str, list[Any]]]:
    """A serialized ``tf.train.Example`` -> ``{key: (kind, values)}`` (kind: bytes/float/int64)."""
    features: dict[str, tuple[str, list[Any]]] = {}
    for number, _, body in _fields(memoryview(serialized)):  # views: no copy of the image bytes
        if number != 1:  # Example.features
            continue
        for n, _, entry in _fields(body):
            if n != 1:  # Features.feature (map entry)
                continue
            key, feature = "", b""
            for m, _, v in _fields(entry):
                if m == 1:
                    key = bytes(v).decode("utf-8")
                elif m == 2:
                    feature = v
            kind, values = "none", []
            for k, _, v in _fields(feature):
                if k in _KINDS:
                    kind, values = _KINDS[k], _values(_KINDS[k], v)
            features[key] = (kind, values)
    return features


def parse_record(serialized: bytes, types: dict[str, str]) -> dict[str, Any]:
    """A record -> ``{key: scalar}`` for the keys of features.json (``types``).

    Like TF's ``FixedLenFeature([])``: every key must be present with its type
    and exactly one value; raises ValueError naming the key otherwise.
    """
    try:
        parsed = parse_example(serialized)
    except (ValueError, UnicodeDecodeError, struct.error) as e:
        raise ValueError(f"not a tf.train.Example: {e}") from None
    out: dict[str, Any] = {}
    for key, kind in types.items():
        if key not in parsed:
            raise ValueError(f"feature {key!r} missing")
        got, values = parsed[key]
        if got != kind:
            raise ValueError(f"feature {key!r} is {got}, features.json says {kind}")
        if len(values) != 1:
            raise ValueError(f"feature {key!r} has {len(values)} values, not 1")
        out[key] = values[0]
    return out
