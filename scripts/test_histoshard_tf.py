#!/usr/bin/env python3
"""Tests of the Python/TF side on fixtures written in Python (no Rust binary needed).

python scripts/test_histoshard_tf.py [-v]
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

import histoshard_pywriter as pw  # noqa: E402
import histoshard_tf as hs  # noqa: E402
import reference_prepare as rp  # noqa: E402
import tf_readback  # noqa: E402

SHARED_GRADES = os.path.join(HERE, "..", "..", "shared", "glas-grade-full.csv")


def readback(out: str, digests: str | None = None) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = tf_readback.run(out, digests, 1000)
    return rc, buf.getvalue()


def edit_manifest(out: str, edit) -> None:
    path = os.path.join(out, hs.MANIFEST_CSV)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    edit(rows)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, pw.MANIFEST_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def rewrite_shard(path: str, change) -> None:
    """Rewrites an uncompressed shard, passing each tf.train.Example through ``change(index, example)``."""
    records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
    with tf.io.TFRecordWriter(path) as w:
        for i, data in enumerate(records):
            ex = tf.train.Example.FromString(data)
            change(i, ex)
            w.write(ex.SerializeToString())


def make_glas(folder: str, names: list[tuple[str, str, str]], size: tuple[int, int] = (460, 580)) -> None:
    """A GlaS-layout folder: tissue-like noise on a white background, Grade.csv in the real file's format."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(1)
    h, w = size
    for name, _, _ in names:
        img = np.full((h, w, 3), 235, np.uint8)
        tissue = np.clip(np.array([180, 90, 160]) + rng.integers(-40, 40, (h, w, 3)), 0, 255).astype(np.uint8)
        img[: int(h * 0.8), : int(w * 0.6)] = tissue[: int(h * 0.8), : int(w * 0.6)]
        Image.fromarray(img).save(os.path.join(folder, f"{name}.bmp"))
    lines = ["name,patient ID, grade (GlaS), grade (Sirinukunwattana et al. 2015)"]
    lines += [f"{n},{p}, {g}, healthy" for n, p, g in names]
    with open(os.path.join(folder, "Grade.csv"), "w", newline="") as f:
        f.write("\r".join(lines))


class FixtureTest(unittest.TestCase):
    tmp: str

    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.mkdtemp(prefix="histoshard-tf-test-")
        cls.png = os.path.join(cls.tmp, "png")
        cls.png_digests = pw.make_fixture(cls.png)
        cls.gz = os.path.join(cls.tmp, "gz")
        cls.gz_digests = pw.make_fixture(cls.gz, compression="gzip", seed=1)
        cls.jpeg = os.path.join(cls.tmp, "jpeg")
        cls.jpeg_digests = pw.make_fixture(cls.jpeg, fmt="jpeg", compression="gzip", shards=3, size=40, seed=2)

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def copy(self, src: str) -> str:
        dst = tempfile.mkdtemp(dir=self.tmp)
        shutil.copytree(src, dst, dirs_exist_ok=True)
        return dst

    def assert_fails_with(self, out: str, *needles: str, digests: str | None = None) -> str:
        rc, text = readback(out, digests)
        if os.environ.get("SHOW_READBACK"):
            print(f"\n--- {self.id()}\n{text}")
        self.assertEqual(rc, 1, text)
        for needle in needles:
            self.assertIn(needle, text)
        self.assertRegex(text.splitlines()[-1], r"^tf_readback: \d+ passed, [1-9]\d* failed$")
        return text

    # tf_readback on good folders

    def test_png_fixture_reads_back(self) -> None:
        rc, text = readback(self.png, self.png_digests)
        self.assertEqual(rc, 0, text)
        self.assertRegex(text.splitlines()[-1], r"^tf_readback: [1-9]\d* passed, 0 failed$")
        self.assertIn("train: 11 records in 2 shards", text)

    def test_gzip_fixture_reads_back(self) -> None:
        self.assertEqual(hs.compression(self.gz), "GZIP")
        rc, text = readback(self.gz, self.gz_digests)
        self.assertEqual(rc, 0, text)

    def test_jpeg_records_are_checked_without_pixel_digests(self) -> None:
        rc, text = readback(self.jpeg, self.jpeg_digests)
        self.assertEqual(rc, 0, text)
        self.assertIn("note: 19 jpeg records checked by sha256(image/encoded) and shape", text)

    # tf_readback must catch each kind of fault

    def test_corrupt_manifest_sha256_fails(self) -> None:
        out = self.copy(self.png)
        bad = {}

        def corrupt(rows: list[dict[str, str]]) -> None:
            bad.update(rows[4])
            rows[4]["sha256"] = "0" * 64

        edit_manifest(out, corrupt)
        text = self.assert_fails_with(
            out,
            f"FAIL {bad['shard']} record {bad['index_in_shard']}: sha256(image/encoded) = {bad['sha256']}, "
            f"manifest sha256 = {'0' * 64}",
        )
        self.assertTrue(text.endswith("1 failed\n"), text)

    def test_wrong_label_and_record_order_fail(self) -> None:
        out = self.copy(self.png)

        def swap(rows: list[dict[str, str]]) -> None:
            a, b = [r for r in rows if r["shard"] == "train-00000-of-00002.tfrecord"][:2]
            a["index_in_shard"], b["index_in_shard"] = b["index_in_shard"], a["index_in_shard"]
            rows[-1]["label_text"] = "adenoma"

        edit_manifest(out, swap)
        self.assert_fails_with(
            out,
            "FAIL train-00000-of-00002.tfrecord record 0: histoshard/record_id = 0, manifest record_id = '2'",
            "image/class/text = 'benign', manifest label_text = 'adenoma'",
        )

    def test_missing_and_mistyped_keys_fail(self) -> None:
        out = self.copy(self.png)

        def change(i: int, ex: tf.train.Example) -> None:
            if i == 1:
                del ex.features.feature["histoshard/scale"]
            if i == 2:
                ex.features.feature["image/class/label"].CopyFrom(
                    tf.train.Feature(float_list=tf.train.FloatList(value=[1.0]))
                )
            if i == 3:
                ex.features.feature["extra/key"].int64_list.value.append(1)

        rewrite_shard(os.path.join(out, "train-00000-of-00002.tfrecord"), change)
        text = self.assert_fails_with(
            out,
            "record 1: features: histoshard/scale missing",
            "record 2: features: image/class/label is float_list, schema says int64",
            "record 3: features: extra/key is not in features.json",
            "make_dataset('train'): InvalidArgumentError",
        )
        self.assertNotIn("records, prepare.json says", text)  # records that do not parse are still counted as read

    def test_corrupt_shard_bytes_fail(self) -> None:
        out = self.copy(self.png)
        path = os.path.join(out, "test-00000-of-00002.tfrecord")
        data = bytearray(Path(path).read_bytes())
        data[len(data) // 2] ^= 0xFF
        Path(path).write_bytes(bytes(data))
        self.assert_fails_with(
            out,
            "FAIL test-00000-of-00002.tfrecord record 1: TF cannot read this record: DataLossError: corrupted record at",
        )

    def test_pixel_digest_mismatch_fails(self) -> None:
        out = self.copy(self.png)
        digests = os.path.join(out, "digests.csv")
        lines = Path(self.png_digests).read_text().splitlines()
        lines[3] = lines[3].split(",")[0] + "," + "f" * 64
        del lines[5]
        Path(digests).write_text("\n".join(lines) + "\n")
        self.assert_fails_with(
            out,
            "TF-decoded pixel sha256",
            "Rust reader's " + "f" * 64,
            "has no row in the pixel digests",
            digests=digests,
        )

    def test_shard_count_mismatches_fail(self) -> None:
        out = self.copy(self.png)
        with open(os.path.join(out, hs.PREPARE_FILE)) as f:
            prepare = json.load(f)
        prepare["shards"]["val"][0]["records"] += 1
        with open(os.path.join(out, hs.PREPARE_FILE), "w") as f:
            json.dump(prepare, f)
        shutil.copyfile(
            os.path.join(out, "val-00000-of-00002.tfrecord"), os.path.join(out, "val-00002-of-00002.tfrecord")
        )
        with open(os.path.join(out, "test-00001-of-00002.tfrecord"), "ab") as f:
            f.write(b"\0")  # TF ignores a partial frame header at the end: only the size check catches it
        self.assert_fails_with(
            out,
            "val-00000-of-00002.tfrecord: TF read 2 records, prepare.json says 3",
            "shard files on disk",
            "val: TF read 3 records, manifest has 3, prepare.json says 4",
            "FAIL test-00001-of-00002.tfrecord: file is ",
        )

    def test_empty_or_missing_folder_fails(self) -> None:
        out = tempfile.mkdtemp(dir=self.tmp)
        writer = pw.OutputWriter(out, pw.SCHEMA_PATH, ["a"], 1)
        writer.close()
        self.assert_fails_with(out, "FAIL tf_readback: no records read")
        rc = subprocess.run(
            [sys.executable, os.path.join(HERE, "tf_readback.py"), os.path.join(self.tmp, "nope")],
            capture_output=True,
            text=True,
        )
        self.assertEqual(rc.returncode, 1)
        self.assertIn("tf_readback: 0 passed, 2 failed", rc.stdout)

    # histoshard_tf

    def test_schema_and_folder_helpers(self) -> None:
        schema = hs.load_schema(pw.SCHEMA_PATH)
        with open(pw.SCHEMA_PATH) as f:
            keys = [feat["key"] for feat in json.load(f)["features"]]
        spec = hs.feature_spec(schema)
        self.assertEqual(list(spec), keys)
        self.assertEqual(spec["histoshard/scale"].dtype, tf.float32)
        self.assertEqual(spec["image/encoded"].dtype, tf.string)
        self.assertTrue(set(hs.MANIFEST_FEATURES.values()) <= set(keys))
        self.assertEqual(hs.class_names(self.png), ["benign", "malignant"])
        self.assertEqual([hs.count_records(self.png, s) for s in hs.SPLITS], [11, 3, 5])
        self.assertEqual(
            [os.path.basename(f) for f in hs.shard_files(self.gz, "val")],
            ["val-00000-of-00002.tfrecord.gz", "val-00001-of-00002.tfrecord.gz"],
        )
        out = self.copy(self.gz)  # without prepare.json: glob, extension, manifest
        os.remove(os.path.join(out, hs.PREPARE_FILE))
        self.assertEqual(
            hs.shard_files(out, "val"), [os.path.join(out, os.path.basename(f)) for f in hs.shard_files(self.gz, "val")]
        )
        self.assertEqual(hs.compression(out), "GZIP")
        self.assertEqual(hs.class_names(out), ["benign", "malignant"])
        self.assertEqual(sum(1 for _ in hs.make_dataset(out, "test", batch_size=None)), 5)

    def test_make_dataset_shapes_and_options(self) -> None:
        image, label = next(iter(hs.make_dataset(self.png, "train", batch_size=4)))
        self.assertEqual(
            (image.shape.as_list(), image.dtype, label.shape.as_list(), label.dtype),
            ([4, 32, 32, 3], tf.float32, [4], tf.int32),
        )
        self.assertTrue(0.0 <= float(tf.reduce_min(image)) and float(tf.reduce_max(image)) <= 1.0)

        ds = hs.make_dataset(self.gz, "train", batch_size=5, image_size=(24, 20), normalize="imagenet", one_hot=True)
        self.assertEqual(ds.element_spec[0].shape.as_list(), [None, 24, 20, 3])
        image, label = next(iter(ds))
        self.assertEqual(label.shape.as_list(), [5, 2])
        self.assertLess(float(tf.reduce_min(image)), 0.0)

        ds = hs.make_dataset(
            self.jpeg, "val", batch_size=2, image_size=64, normalize=None, with_metadata=True, shuffle=False
        )
        image, label, meta = next(iter(ds))
        self.assertEqual((image.dtype, image.shape.as_list()), (tf.uint8, [2, 64, 64, 3]))
        keys = set(hs.feature_spec(hs.load_schema(self.jpeg))) - {hs.IMAGE_KEY}
        self.assertEqual(set(meta), keys)
        self.assertEqual(meta["histoshard/split"].numpy().tolist(), [b"val", b"val"])

    def test_make_dataset_shuffle_covers_each_record_once_and_is_seeded(self) -> None:
        def ids(seed: int | None) -> list[int]:
            ds = hs.make_dataset(
                self.png, "train", batch_size=3, shuffle=True, seed=seed, shuffle_buffer=4, with_metadata=True
            )
            return [int(i) for _, _, m in ds for i in m["histoshard/record_id"].numpy()]

        with open(os.path.join(self.png, hs.MANIFEST_CSV)) as f:
            train = sorted(int(r["record_id"]) for r in csv.DictReader(f) if r["split"] == "train")
        a, b = ids(7), ids(7)
        self.assertEqual(sorted(a), train)
        self.assertEqual(a, b)
        repeated = hs.make_dataset(self.png, "train", batch_size=4, repeat=True, drop_remainder=True)
        self.assertEqual(sum(1 for _ in repeated.take(10)), 10)

    # reference_prepare.py

    def test_parse_grades_of_the_real_file(self) -> None:
        if not os.path.exists(SHARED_GRADES):
            self.skipTest("shared/glas-grade-full.csv is not there")
        rows = rp.parse_grades(Path(SHARED_GRADES).read_text())
        self.assertEqual(len(rows), 165)
        train = [g for n, _, g in rows if n.startswith("train_")]
        self.assertEqual((train.count("benign"), train.count("malignant")), (37, 48))
        self.assertTrue(all(p.isdigit() for _, p, _ in rows))

    def test_reference_prepare_writes_a_folder_tf_reads_back(self) -> None:
        glas = os.path.join(self.tmp, "glas")
        names = [(f"train_{i}", str(i // 2 + 1), ["benign", "malignant"][i % 2]) for i in range(1, 8)]
        make_glas(glas, names + [("testA_1", "9", "malignant"), ("testB_2", "9", "benign")])
        out = os.path.join(self.tmp, "ref")
        cmd = [
            sys.executable,
            os.path.join(HERE, "reference_prepare.py"),
            "--input",
            glas,
            "--output",
            out,
            "--augment",
            "2",
            "--shards",
            "2",
            "--format",
            "jpeg",
            "--compression",
            "gzip",
        ]
        result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        self.assertEqual(
            set(result), {"records", "seconds", "records_per_s", "mean_bytes_per_record", "encode_only_seconds"}
        )
        rc, text = readback(out)
        self.assertEqual(rc, 0, text)
        with open(os.path.join(out, hs.MANIFEST_CSV)) as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(len(rows), result["records"])
        by_split = {s: [r for r in rows if r["split"] == s] for s in hs.SPLITS}
        self.assertEqual(len(by_split["test"]), 2 * 4)  # 4 kept patches per 460x580 image
        self.assertTrue(by_split["val"], "some train patients move to val")
        self.assertEqual(len(by_split["train"]), 3 * 4 * len({r["source_image"] for r in by_split["train"]}))
        self.assertTrue(all(r["augmentation"] == "none" for r in by_split["val"] + by_split["test"]))
        self.assertTrue(all(r["augmentation"].endswith("hed") for r in by_split["train"] if r["aug_index"] != "0"))
        patients = {s: {r["patient"] for r in by_split[s]} for s in ("train", "val")}
        self.assertFalse(patients["train"] & patients["val"])

        floor = subprocess.run(
            [sys.executable, os.path.join(HERE, "reference_prepare.py"), "--input", glas, "--floor"],
            check=True,
            capture_output=True,
            text=True,
        )
        self.assertEqual(json.loads(floor.stdout)["records"], 9 * 4)

    def test_tissue_mask_and_tiles(self) -> None:
        img = np.full((300, 500, 3), 240, np.uint8)
        img[:, :290] = (150, 60, 140)
        mask = rp.tissue_mask(img)
        self.assertTrue(mask[:, :290].all() and not mask[:, 290:].any())
        self.assertEqual(rp.tiles(mask, 224, 0.25), [(0, 0), (224, 0)])  # 66/224 of the second, and edge dropped
        self.assertEqual(rp.tiles(mask, 224, 0.30), [(0, 0)])
        self.assertFalse(rp.tissue_mask(np.full((50, 50, 3), 245, np.uint8)).any())


if __name__ == "__main__":
    unittest.main()
