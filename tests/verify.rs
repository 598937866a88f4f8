//! `verify` finds every kind of damage, names the shard file and record, and
//! exits non-zero.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use histoshard::shard::manifest::{self, ManifestRow};

/// A prepared folder with one uncompressed and one gzip variant.
fn prepared(t: &Path, gzip: bool) -> PathBuf {
    let input = synth(t, 4, 21);
    let out = t.join(if gzip { "gz" } else { "plain" });
    let mut args = vec!["prepare", "-i", s(&input), "-o", s(&out), "--shards", "1"];
    if gzip {
        args.extend(["--compression", "gzip"]);
    }
    ok(&args);
    ok(&["verify", s(&out)]);
    out
}

fn verify_faults(dir: &Path) -> String {
    let (success, _, err) = run(&["verify", s(dir)]);
    assert!(!success, "verify must fail");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn train_shard(dir: &Path) -> PathBuf {
    let gz = dir.join("train-00000-of-00001.tfrecord.gz");
    if gz.exists() {
        gz
    } else {
        dir.join("train-00000-of-00001.tfrecord")
    }
}

#[test]
fn flipped_byte_in_a_record() {
    let t = tempfile::tempdir().unwrap();
    let out = prepared(t.path(), false);
    let shard = train_shard(&out);
    let mut bytes = std::fs::read(&shard).unwrap();
    let rows = manifest::read_manifest(&out).unwrap();
    let second = rows
        .iter()
        .find(|r| r.split == "train" && r.index_in_shard == 1)
        .unwrap();
    bytes[(second.byte_offset + 12 + 100) as usize] ^= 0x20;
    std::fs::write(&shard, bytes).unwrap();
    let err = verify_faults(&out);
    assert!(
        err.contains("train-00000-of-00001.tfrecord: record 1: data CRC mismatch"),
        "{err}"
    );
}

#[test]
fn flipped_byte_in_a_length_field_and_truncation() {
    let t = tempfile::tempdir().unwrap();
    let out = prepared(t.path(), false);
    let shard = train_shard(&out);
    let good = std::fs::read(&shard).unwrap();
    let mut bad = good.clone();
    bad[3] ^= 0x01;
    std::fs::write(&shard, &bad).unwrap();
    let err = verify_faults(&out);
    assert!(err.contains("record 0: length CRC mismatch"), "{err}");

    std::fs::write(&shard, &good[..good.len() - 10]).unwrap();
    let err = verify_faults(&out);
    assert!(err.contains("truncated record"), "{err}");
}

#[test]
fn missing_and_unlisted_shards() {
    let t = tempfile::tempdir().unwrap();
    let out = prepared(t.path(), false);
    let shard = train_shard(&out);
    std::fs::rename(&shard, out.join("train-00000-of-00009.tfrecord")).unwrap();
    let err = verify_faults(&out);
    assert!(
        err.contains("train-00000-of-00001.tfrecord: missing"),
        "{err}"
    );
    assert!(
        err.contains("train-00000-of-00009.tfrecord: shard not listed"),
        "{err}"
    );
}

#[test]
fn manifest_row_with_another_sha256() {
    let t = tempfile::tempdir().unwrap();
    let out = prepared(t.path(), false);
    let mut rows = manifest::read_manifest(&out).unwrap();
    rows[2].sha256 = "0".repeat(64);
    let mut df = ManifestRow::to_dataframe(&rows).unwrap();
    manifest::write_table(&mut df, &out.join("manifest.parquet")).unwrap();
    let err = verify_faults(&out);
    assert!(
        err.contains(&format!(
            "record {}: differs from manifest row 2: sha256",
            rows[2].index_in_shard
        )),
        "{err}"
    );
}

#[test]
fn truncated_gzip_shard() {
    let t = tempfile::tempdir().unwrap();
    let out = prepared(t.path(), true);
    let shard = train_shard(&out);
    let good = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &good[..good.len() * 2 / 3]).unwrap();
    let err = verify_faults(&out);
    assert!(err.contains("train-00000-of-00001.tfrecord.gz"), "{err}");
}

#[test]
fn folder_without_manifest() {
    let t = tempfile::tempdir().unwrap();
    fails_with(&["verify", s(t.path())], &["manifest.parquet", "not found"]);
}

#[test]
fn pixel_digests_cover_every_record() {
    let t = tempfile::tempdir().unwrap();
    let out = prepared(t.path(), false);
    let digests = t.path().join("d.csv");
    ok(&["verify", s(&out), "--pixel-digests", s(&digests)]);
    let text = std::fs::read_to_string(&digests).unwrap();
    let rows = manifest::read_manifest(&out).unwrap();
    assert_eq!(text.lines().count(), rows.len() + 1);
    assert!(
        text.lines()
            .skip(1)
            .all(|l| l.split(',').nth(1).is_some_and(|d| d.len() == 64))
    );
}
