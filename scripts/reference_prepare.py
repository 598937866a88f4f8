#!/usr/bin/env python3
"""The Python reference for benchmarking ``histoshard prepare`` (GlaS input).

Does the same job in ONE process with PIL + numpy + ``tf.io.TFRecordWriter``:
reads ``Grade.csv`` and the ``<name>.bmp`` images of a Warwick-QU (GlaS)
folder, tiles each image into ``--patch-size`` squares at stride
``--patch-size`` (edge remainders dropped), keeps the patches whose tissue
fraction is at least ``--min-tissue`` (histoshard's rule, ported exactly from
src/patch/tissue.rs: per pixel the Euclidean norm over RGB of the optical
density -ln((I+1)/256); tissue where it exceeds the image's Otsu threshold on
a 256-bin histogram over [0, 3], clamped to [0.15, 0.35]), adds ``--augment`` augmented copies of every
train patch (random flips / rot90 + HED stain jitter), encodes PNG or JPEG,
and writes shards, features.json, prepare.json and manifest.csv in the
histoshard layout (so ``tf_readback.py`` can check the result).

Splits: ``testA_*``/``testB_*`` -> test; ``train_*`` -> train, with about
``--val-fraction`` of them (whole patients) moved to val, which is not
augmented (``--val-fraction 0`` augments every ``train_*`` image).

Prints one JSON line: records, seconds (wall time of the whole job from
argument parsing on, TensorFlow's import included), records_per_s,
mean_bytes_per_record (of image/encoded, as in histoshard's prepare.json),
encode_only_seconds (PIL encode alone, measured around each encode call).
``--floor`` instead times only BMP decoding and PNG encoding of the same
(unaugmented) patches, without TF, as a lower bound for context.
``--encode-shards DIR`` instead times PIL's encoding (``--format``,
``--compress-level``) of exactly the pixels of every record of a folder
``histoshard prepare`` wrote (augmented copies included), so sizes and
speeds compare on identical pixels.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import sys
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA_PATH = os.path.join(HERE, "..", "schemas", "features.json")

# skimage.color's stain matrix (Ruifrok & Johnston): rows are the RGB absorbance of H, E, DAB.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)
LOG_ADJUST = np.log(1e-6)


@dataclass
class Sample:
    name: str
    path: str
    patient: str
    grade: str
    subset: str
    split: str = ""


def parse_grades(text: str) -> list[tuple[str, str, str]]:
    """Grade.csv text (CR line endings, spaces after commas) -> ``(name, patient, grade)`` rows."""
    lines = [[c.strip() for c in line.split(",")] for line in text.splitlines() if line.strip()]
    header = [h.lower() for h in lines[0]]
    col = [
        next((i for i, h in enumerate(header) if h.startswith(k)), d)
        for k, d in (("name", 0), ("patient", 1), ("grade (glas)", 2))
    ]
    return [(cells[col[0]], cells[col[1]], cells[col[2]].lower()) for cells in lines[1:]]


def read_grades(folder: str) -> list[Sample]:
    """The samples of Grade.csv whose ``<name>.bmp`` exists, sorted by name."""
    with open(os.path.join(folder, "Grade.csv"), encoding="utf-8-sig", newline="") as f:
        rows = parse_grades(f.read())
    samples = []
    for name, patient, grade in rows:
        path = os.path.join(folder, f"{name}.bmp")
        if not os.path.exists(path):
            print(f"warning: {path} is missing, skipped", file=sys.stderr)
            continue
        samples.append(Sample(name, path, patient, grade, name.split("_")[0]))
    return sorted(samples, key=lambda s: s.name)


def assign_splits(samples: list[Sample], val_fraction: float, seed: int) -> None:
    """test* -> test; train -> train, with whole patients moved to val until val_fraction of train images."""
    train = [s for s in samples if not s.subset.startswith("test")]
    patients = sorted({s.patient for s in train})
    np.random.default_rng(seed).shuffle(patients)
    val: set[str] = set()
    for p in patients:
        if sum(s.patient in val for s in train) >= val_fraction * len(train):
            break
        val.add(p)
    for s in samples:
        s.split = "test" if s.subset.startswith("test") else ("val" if s.patient in val else "train")


# histoshard's tissue rule (src/patch/tissue.rs), ported operation for operation
# (float32 like the Rust code) so both keep exactly the same patches.
OD_LUT = (-np.log((np.arange(256, dtype=np.float64) + 1.0) / 256.0)).astype(np.float32)
MIN_OD_THRESHOLD = np.float32(0.15)
MAX_OD_THRESHOLD = np.float32(0.35)
OD_BINS = 256
OD_HIST_SCALE = np.float32(OD_BINS) / np.float32(3.0)  # 256 bins over OD norm 0..3 (f32, as in Rust)


def od_norm(img: np.ndarray) -> np.ndarray:
    """Euclidean norm over RGB of the optical density -ln((I+1)/256), float32."""
    r, g, b = (OD_LUT[img[..., c]] for c in range(3))
    return np.sqrt(r * r + g * g + b * b)


def otsu_bin(hist: np.ndarray) -> int | None:
    """Bin index t maximising the between-class variance of bins[..=t] vs bins[t+1..] (first maximum);
    None when fewer than two bins are occupied. The same float64 operations in the same order as Rust."""
    counts = [int(c) for c in hist]
    total = sum(counts)
    if total == 0 or sum(c > 0 for c in counts) < 2:
        return None
    sum_all = float(sum(i * c for i, c in enumerate(counts)))
    w0 = sum0 = 0.0
    best, best_t = -sys.float_info.max, 0
    for t, c in enumerate(counts[:-1]):
        w0 += float(c)
        sum0 += float(t) * float(c)
        w1 = float(total) - w0
        if w0 == 0.0 or w1 == 0.0:
            continue
        m0 = sum0 / w0
        m1 = (sum_all - sum0) / w1
        between = w0 * w1 * (m0 - m1) * (m0 - m1)
        if between > best:
            best, best_t = between, t
    return best_t


def tissue_threshold(od: np.ndarray) -> np.float32:
    """Otsu on a 256-bin histogram of the OD norm over [0, 3] (larger values in the last bin),
    the upper edge of the last background bin, clamped to [0.15, 0.35]."""
    bins = np.minimum((od * OD_HIST_SCALE).astype(np.int64), OD_BINS - 1)
    t = otsu_bin(np.bincount(bins.ravel(), minlength=OD_BINS))
    otsu = MIN_OD_THRESHOLD if t is None else np.float32(t + 1) / OD_HIST_SCALE
    return np.float32(min(max(otsu, MIN_OD_THRESHOLD), MAX_OD_THRESHOLD))


def tissue_mask(img: np.ndarray) -> np.ndarray:
    """True where the OD norm of a pixel exceeds the image's tissue threshold (histoshard's rule)."""
    od = od_norm(img)
    return od > tissue_threshold(od)


def tiles(mask: np.ndarray, size: int, min_tissue: float) -> list[tuple[int, int]]:
    """Top-left corners of the kept patches (grid at stride ``size``, remainders dropped), row by row;
    kept when the tissue fraction, compared in float32 as in Rust, is at least ``min_tissue``."""
    h, w = mask.shape
    area = float(size) * float(size)
    return [
        (x, y)
        for y in range(0, h - size + 1, size)
        for x in range(0, w - size + 1, size)
        if np.float32(int(np.count_nonzero(mask[y : y + size, x : x + size])) / area) >= np.float32(min_tissue)
    ]


def hed_jitter(patch: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Scales and shifts each H, E, D concentration by U(1±sigma), U(±sigma) (skimage rgb2hed/hed2rgb)."""
    rgb = np.maximum(patch.astype(np.float32) / 255.0, 1e-6)
    stains = np.maximum((np.log(rgb) / LOG_ADJUST) @ HED_FROM_RGB.astype(np.float32), 0)
    stains = stains * rng.uniform(1 - sigma, 1 + sigma, 3).astype(np.float32) + rng.uniform(-sigma, sigma, 3).astype(
        np.float32
    )
    out = np.exp((stains * LOG_ADJUST) @ RGB_FROM_HED.astype(np.float32))
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


def augment(patch: np.ndarray, sigma: float, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    ops = []
    if rng.random() < 0.5:
        patch, ops = patch[:, ::-1], ops + ["flip_h"]
    if rng.random() < 0.5:
        patch, ops = patch[::-1], ops + ["flip_v"]
    k = int(rng.integers(4))
    if k:
        patch, ops = np.rot90(patch, k), ops + [f"rot{90 * k}"]
    return hed_jitter(np.ascontiguousarray(patch), sigma, rng), "+".join(ops + ["hed"])


def encode(pixels: np.ndarray, fmt: str, quality: int = 90, compress_level: int = 6) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(pixels, "RGB").save(buf, "PNG", optimize=False, compress_level=compress_level)
    else:
        Image.fromarray(pixels, "RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def decode(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def floor(samples: list[Sample], a: argparse.Namespace) -> dict:
    """Times BMP decode + PNG encode of the kept patches only."""
    decode_s = encode_s = 0.0
    n = total = 0
    for s in samples:
        t = time.perf_counter()
        img = decode(s.path)
        decode_s += time.perf_counter() - t
        for x, y in tiles(tissue_mask(img), a.patch_size, a.min_tissue):
            patch = np.ascontiguousarray(img[y : y + a.patch_size, x : x + a.patch_size])
            t = time.perf_counter()
            total += len(encode(patch, "png", compress_level=a.compress_level))
            encode_s += time.perf_counter() - t
            n += 1
    seconds = decode_s + encode_s
    return {
        "mode": "floor",
        "records": n,
        "seconds": round(seconds, 4),
        "records_per_s": round(n / seconds, 2) if seconds else 0.0,
        "mean_bytes_per_record": round(total / max(n, 1), 1),
        "encode_only_seconds": round(encode_s, 4),
        "decode_seconds": round(decode_s, 4),
    }


def read_tfrecords(path: str):
    """The records of an uncompressed TFRecord file (framing only; CRCs not checked)."""
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        (n,) = struct.unpack_from("<Q", data, pos)
        yield data[pos + 12 : pos + 12 + n]
        pos += 12 + n + 4


def encode_shards(folder: str, a: argparse.Namespace) -> dict:
    """Times PIL encoding of the decoded pixels of every record in ``folder``'s shards."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    shards = sorted(f for f in os.listdir(folder) if f.endswith(".tfrecord") and not f.startswith("."))
    pixels = []
    for name in shards:
        for rec in read_tfrecords(os.path.join(folder, name)):
            ex = tf.train.Example.FromString(rec)
            encoded = ex.features.feature["image/encoded"].bytes_list.value[0]
            with Image.open(io.BytesIO(encoded)) as im:
                pixels.append(np.asarray(im.convert("RGB")))
    t = time.perf_counter()
    total = sum(len(encode(p, a.format, a.quality, a.compress_level)) for p in pixels)
    seconds = time.perf_counter() - t
    n = len(pixels)
    return {
        "mode": "encode-shards",
        "records": n,
        "seconds": round(seconds, 4),
        "records_per_s": round(n / seconds, 2) if seconds else 0.0,
        "mean_bytes_per_record": round(total / max(n, 1), 1),
    }


def prepare(samples: list[Sample], a: argparse.Namespace, start: float) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, HERE)
    import histoshard_pywriter as pw  # imports TensorFlow; its import time counts in "seconds"

    classes = sorted({s.grade for s in samples})
    config = {
        "format": a.format,
        "quality": a.quality,
        "compress_level": a.compress_level,
        "patch_size": a.patch_size,
        "stride": a.patch_size,
        "min_tissue": a.min_tissue,
        "augment": a.augment,
        "hed_sigma": a.hed_sigma,
        "val_fraction": a.val_fraction,
        "seed": a.seed,
        "shards": a.shards,
        "writer": "reference_prepare.py",
    }
    writer = pw.OutputWriter(a.output, a.schema, classes, a.shards, a.compression, config)
    encode_s = 0.0
    for i, s in enumerate(samples):
        img = decode(s.path)
        label = classes.index(s.grade)
        for j, (x, y) in enumerate(tiles(tissue_mask(img), a.patch_size, a.min_tissue)):
            patch = np.ascontiguousarray(img[y : y + a.patch_size, x : x + a.patch_size])
            for k in range(1 + (a.augment if s.split == "train" else 0)):
                seed = (a.seed * 1_000_003 + i) * 1_000_003 + j * 1009 + k
                pixels, ops = (patch, "none") if k == 0 else augment(patch, a.hed_sigma, np.random.default_rng(seed))
                t = time.perf_counter()
                encoded = encode(pixels, a.format, a.quality, a.compress_level)
                encode_s += time.perf_counter() - t
                writer.write(
                    {
                        "image/encoded": encoded,
                        "image/format": a.format,
                        "image/height": a.patch_size,
                        "image/width": a.patch_size,
                        "image/channels": 3,
                        "image/class/label": label,
                        "image/class/text": s.grade,
                        "image/filename": os.path.basename(s.path),
                        "image/source_id": s.name,
                        "histoshard/patient_id": s.patient,
                        "histoshard/split": s.split,
                        "histoshard/subset": s.subset,
                        "histoshard/patch/x": x,
                        "histoshard/patch/y": y,
                        "histoshard/patch/size": a.patch_size,
                        "histoshard/scale": 1.0,
                        "histoshard/augmentation": ops,
                    },
                    aug_index=k,
                    seed=seed,
                )
    writer.close()
    seconds = time.perf_counter() - start
    n = len(writer.rows)
    return {
        "records": n,
        "seconds": round(seconds, 4),
        "records_per_s": round(n / seconds, 2),
        "mean_bytes_per_record": round(writer.encoded_bytes_total / max(n, 1), 1),
        "encode_only_seconds": round(encode_s, 4),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", help="GlaS folder (Grade.csv + <name>.bmp); required unless --encode-shards")
    p.add_argument("--output", help="output folder (required unless --floor)")
    p.add_argument("--augment", type=int, default=2, help="augmented copies per train patch")
    p.add_argument("--format", choices=["png", "jpeg"], default="png")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality")
    p.add_argument("--compress-level", type=int, default=6, help="PNG zlib level")
    p.add_argument("--compression", choices=["none", "gzip"], default="none", help="whole-shard compression")
    p.add_argument("--shards", type=int, default=4, help="shards per split")
    p.add_argument("--patch-size", type=int, default=224)
    p.add_argument("--min-tissue", type=float, default=0.25)
    p.add_argument("--hed-sigma", type=float, default=0.05)
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--schema", default=SCHEMA_PATH, help="features.json")
    p.add_argument("--floor", action="store_true", help="time only BMP decode + PNG encode, no TF")
    p.add_argument("--encode-shards", metavar="DIR", help="time only PIL encoding of the pixels of DIR's records")
    a = p.parse_args()
    if a.encode_shards:
        print(json.dumps(encode_shards(a.encode_shards, a)))
        return 0
    if not a.input:
        p.error("--input is required")
    start = time.perf_counter()
    samples = read_grades(a.input)
    if not samples:
        sys.exit(f"{a.input}: no images listed in Grade.csv")
    if a.floor:
        result = floor(samples, a)
    else:
        if not a.output:
            p.error("--output is required")
        assign_splits(samples, a.val_fraction, a.seed)
        result = prepare(samples, a, start)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
