//! `verify`: re-read a prepared folder and prove it is whole — every CRC, every
//! Example against the schema, every image decodable, every record where and
//! what the manifest says. Faults are collected (not stopped at), each naming
//! the shard file and record.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::{Path, PathBuf},
};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::{
    atomic,
    error::{Error, Result},
    progress::Progress,
    shard::{
        example::PatchRecord,
        manifest::{self, ManifestRow},
        reader::ShardReader,
    },
};

/// What to check beyond framing and the manifest.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Write `record_id,pixel_sha256` (sha256 of the decoded RGB pixels, HWC) here,
    /// so another reader (TensorFlow) can be checked against ours.
    pub pixel_digests: Option<PathBuf>,
}

/// The outcome: counts, and every fault found.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct VerifyReport {
    pub shards: usize,
    pub records: u64,
    pub faults: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.faults.is_empty()
    }
}

struct ShardResult {
    records: u64,
    faults: Vec<String>,
    digests: Vec<(u64, String)>,
}

/// Checks one record against its manifest row; returns the pixel digest.
fn check_record(data: &[u8], row: &ManifestRow) -> std::result::Result<String, String> {
    let rec = PatchRecord::decode(data)?;
    let mut diffs = Vec::new();
    let mut expect = |what: &str, ok: bool| {
        if !ok {
            diffs.push(what.to_string());
        }
    };
    expect("record_id", rec.record_id as u64 == row.record_id);
    expect(
        "label",
        rec.label == row.label && rec.label_text == row.label_text,
    );
    expect("split", rec.split == row.split);
    expect("source image", rec.source_id == row.source_image);
    expect(
        "position",
        rec.x == row.x && rec.y == row.y && rec.size == row.size,
    );
    expect("record length", data.len() as u64 == row.record_bytes);
    expect(
        "sha256 of image/encoded",
        hex::encode(Sha256::digest(&rec.encoded)) == row.sha256,
    );
    if !diffs.is_empty() {
        return Err(format!(
            "differs from manifest row {}: {}",
            row.record_id,
            diffs.join(", ")
        ));
    }
    let img = image::load_from_memory(&rec.encoded)
        .map_err(|e| format!("image/encoded does not decode: {e}"))?;
    if (img.width() as i64, img.height() as i64) != (rec.width, rec.height) || rec.channels != 3 {
        return Err(format!(
            "image is {}×{} but the record says {}×{}×{}",
            img.width(),
            img.height(),
            rec.width,
            rec.height,
            rec.channels
        ));
    }
    Ok(hex::encode(Sha256::digest(img.to_rgb8().as_raw())))
}

fn verify_shard(path: &Path, rows: &[&ManifestRow], want_digests: bool) -> ShardResult {
    let mut out = ShardResult {
        records: 0,
        faults: Vec::new(),
        digests: Vec::new(),
    };
    let name = path.display();
    let reader = match ShardReader::open(path) {
        Ok(r) => r,
        Err(e) => {
            out.faults.push(e.to_string());
            return out;
        }
    };
    for item in reader {
        let raw = match item {
            Ok(raw) => raw,
            Err(e) => {
                out.faults.push(e.to_string());
                break;
            }
        };
        out.records += 1;
        let Some(row) = rows.get(raw.index as usize) else {
            out.faults.push(format!(
                "{name}: record {}: not in the manifest (extra record)",
                raw.index
            ));
            continue;
        };
        if raw.offset != row.byte_offset {
            out.faults.push(format!(
                "{name}: record {}: at byte {} but the manifest says {}",
                raw.index, raw.offset, row.byte_offset
            ));
        }
        match check_record(&raw.data, row) {
            Ok(digest) if want_digests => out.digests.push((row.record_id, digest)),
            Ok(_) => {}
            Err(e) => out
                .faults
                .push(format!("{name}: record {}: {e}", raw.index)),
        }
    }
    if out.records < rows.len() as u64 {
        out.faults.push(format!(
            "{name}: holds {} records but the manifest lists {}",
            out.records,
            rows.len()
        ));
    }
    out
}

/// `features.json` and `prepare.json`, which every complete data set has:
/// missing, the folder is refused (an error naming the file); present, they
/// must be this histoshard's schema and a report that agrees with the manifest.
fn companion_faults(dir: &Path, manifest_rows: u64) -> Result<Vec<String>> {
    use crate::prepare::output::{REPORT_FILE, SCHEMA_FILE};
    for name in [SCHEMA_FILE, REPORT_FILE] {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(Error::input(
                &path,
                "not found: not a complete histoshard data set (run prepare, or rerun an interrupted one to resume)",
            ));
        }
    }
    let mut faults = Vec::new();
    let schema_path = dir.join(SCHEMA_FILE);
    let schema = std::fs::read(&schema_path).map_err(|e| Error::io(&schema_path, e))?;
    if schema != crate::shard::schema::FEATURES_JSON.as_bytes() {
        faults.push(format!(
            "{}: differs from the schema this histoshard writes",
            schema_path.display()
        ));
    }
    match crate::prepare::read_report(dir) {
        Ok(r) if r.records_total != manifest_rows => faults.push(format!(
            "{}: says {} records, the manifest lists {manifest_rows}",
            dir.join(REPORT_FILE).display(),
            r.records_total
        )),
        Ok(_) => {}
        Err(e) => faults.push(e.to_string()),
    }
    Ok(faults)
}

/// Verifies the prepared folder `dir`.
pub fn verify(dir: &Path, opts: &VerifyOptions, progress: &Progress) -> Result<VerifyReport> {
    let manifest_path = dir.join(manifest::MANIFEST_PARQUET);
    if !manifest_path.exists() {
        return Err(Error::input(
            &manifest_path,
            "not found: not a complete histoshard data set (run prepare, or rerun an interrupted one to resume)",
        ));
    }
    if let Some(path) = &opts.pixel_digests {
        atomic::check_target(path)?;
    }
    let rows = manifest::read_manifest(dir)?;
    let mut faults = companion_faults(dir, rows.len() as u64)?;
    let mut by_shard: BTreeMap<&str, Vec<&ManifestRow>> = BTreeMap::new();
    for r in &rows {
        by_shard.entry(&r.shard).or_default().push(r);
    }
    for (shard, rs) in by_shard.iter_mut() {
        rs.sort_by_key(|r| r.index_in_shard);
        if rs
            .iter()
            .enumerate()
            .any(|(i, r)| r.index_in_shard != i as u64)
        {
            faults.push(format!(
                "{}: manifest indices of {shard} are not 0..{}",
                manifest_path.display(),
                rs.len()
            ));
        }
    }
    let listed: BTreeSet<&str> = by_shard.keys().copied().collect();
    for entry in std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok())
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if (name.ends_with(".tfrecord") || name.ends_with(".tfrecord.gz"))
            && !listed.contains(name.as_str())
        {
            faults.push(format!(
                "{}: shard not listed in the manifest",
                dir.join(&name).display()
            ));
        }
    }
    let bar = progress.bar("verify", rows.len() as u64, "records");
    let want = opts.pixel_digests.is_some();
    let results: Vec<(&str, ShardResult)> = by_shard
        .par_iter()
        .map(|(shard, rs)| {
            let path = dir.join(shard);
            let r = if path.exists() {
                verify_shard(&path, rs, want)
            } else {
                ShardResult {
                    records: 0,
                    faults: vec![format!(
                        "{}: missing (listed in the manifest with {} records)",
                        path.display(),
                        rs.len()
                    )],
                    digests: vec![],
                }
            };
            bar.inc(rs.len() as u64);
            (*shard, r)
        })
        .collect();
    bar.finish_and_clear();
    let mut report = VerifyReport {
        shards: by_shard.len(),
        ..Default::default()
    };
    let mut digests = Vec::new();
    report.faults = faults;
    for (_, r) in results {
        report.records += r.records;
        report.faults.extend(r.faults);
        digests.extend(r.digests);
    }
    if let Some(path) = &opts.pixel_digests {
        digests.sort();
        let mut csv = String::from("record_id,pixel_sha256\n");
        for (id, d) in digests {
            let _ = writeln!(csv, "{id},{d}");
        }
        atomic::write(path, csv.as_bytes())?;
    }
    Ok(report)
}
