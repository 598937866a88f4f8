//! `prepare.json`: the resolved configuration, what was read and written, and
//! how long it took — enough to reproduce or audit a data set. It is the
//! contract between `prepare` and the trainer: [`PrepareReport`] is written
//! by `prepare` and read back, with the same type, by `verify`, `train`
//! (which data a run saw) and `predict` (how to tile new images).

use std::{collections::BTreeMap, path::Path, time::Instant};

use serde::{Deserialize, Serialize, Serializer};

use super::{options::PrepareOptions, output, plan::ImagePlan};
use crate::{
    atomic,
    dataset::{Dataset, Skipped},
    error::{Error, Result},
    shard::{manifest::ManifestRow, schema, writer::ShardSummary},
    split::SplitReport,
};

/// The layout of `prepare.json` this version writes and reads. Files written
/// before the field existed read as version 0, which has the same fields.
pub const FORMAT_VERSION: u32 = 1;

/// Seconds spent per stage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub ingest: f64,
    pub write: f64,
    pub manifest: f64,
    pub total: f64,
}

/// The contents of `prepare.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrepareReport {
    pub tool: String,
    pub version: String,
    pub schema_version: u32,
    /// This file's layout ([`FORMAT_VERSION`]; 0 when not recorded).
    #[serde(default)]
    pub format_version: u32,
    /// Hash of options and inputs; a rerun with the same one resumes.
    pub fingerprint: String,
    #[serde(serialize_with = "as_value")]
    pub config: PrepareOptions,
    pub layout: String,
    pub classes: Vec<String>,
    pub images: usize,
    #[serde(serialize_with = "as_value")]
    pub skipped: Vec<Skipped>,
    #[serde(serialize_with = "as_value")]
    pub split: SplitReport,
    pub candidate_patches: u64,
    pub kept_patches: u64,
    /// Records per split.
    pub records: BTreeMap<String, u64>,
    /// Records per split and class.
    pub records_by_class: BTreeMap<String, BTreeMap<String, u64>>,
    pub records_total: u64,
    pub mean_bytes_per_record: f64,
    pub shards: BTreeMap<String, Vec<ShardSummary>>,
    /// Shards kept from an interrupted earlier run.
    pub resumed_shards: usize,
    /// What `prepare` warned about that a user should see (one class only, ...).
    #[serde(default)]
    pub warnings: Vec<String>,
    pub timings_s: Timings,
    pub records_per_s: f64,
}

/// What the report is made from.
pub struct Parts<'a> {
    pub opts: &'a PrepareOptions,
    pub ds: &'a Dataset,
    pub fingerprint: String,
    pub split: &'a SplitReport,
    pub plans: &'a [ImagePlan],
    pub rows: &'a [ManifestRow],
    pub shards: &'a [ShardSummary],
    pub resumed_shards: usize,
    pub warnings: Vec<String>,
    pub ingest_s: f64,
    pub write_s: f64,
    pub started: Instant,
}

fn json<T: Serialize>(v: &T) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| Error::Config(format!("cannot serialise report: {e}")))
}

/// Writes `v` through a `serde_json::Value`, as these fields were written
/// before they were typed, so that the file's bytes stay the same: an `f32`
/// reads as its `f64` widening (`0.10000000149011612`), which parses back to
/// the same `f32`.
fn as_value<T: Serialize, S: Serializer>(v: &T, s: S) -> std::result::Result<S::Ok, S::Error> {
    serde_json::to_value(v)
        .map_err(serde::ser::Error::custom)?
        .serialize(s)
}

impl PrepareReport {
    pub fn new(p: Parts) -> Result<Self> {
        let mut records: BTreeMap<String, u64> = BTreeMap::new();
        let mut records_by_class: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for r in p.rows {
            *records.entry(r.split.clone()).or_default() += 1;
            *records_by_class
                .entry(r.split.clone())
                .or_default()
                .entry(r.label_text.clone())
                .or_default() += 1;
        }
        let mut shards: BTreeMap<String, Vec<ShardSummary>> = BTreeMap::new();
        for s in p.shards {
            let split = s.file.split('-').next().unwrap_or_default().to_string();
            shards.entry(split).or_default().push(s.clone());
        }
        let total = p.rows.len() as u64;
        let encoded: u64 = p.rows.iter().map(|r| r.encoded_bytes).sum();
        let elapsed = p.started.elapsed().as_secs_f64();
        Ok(Self {
            tool: "histoshard".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            schema_version: schema::SCHEMA_VERSION,
            format_version: FORMAT_VERSION,
            fingerprint: p.fingerprint,
            config: p.opts.clone(),
            layout: json(&p.ds.layout)?.as_str().unwrap_or_default().to_string(),
            classes: p.ds.classes.clone(),
            images: p.ds.samples.len(),
            skipped: p.ds.skipped.clone(),
            split: p.split.clone(),
            candidate_patches: p.plans.iter().map(|x| x.candidates as u64).sum(),
            kept_patches: p.plans.iter().map(|x| x.patches.len() as u64).sum(),
            records,
            records_by_class,
            records_total: total,
            mean_bytes_per_record: if total > 0 {
                encoded as f64 / total as f64
            } else {
                0.0
            },
            shards,
            resumed_shards: p.resumed_shards,
            warnings: p.warnings,
            timings_s: Timings {
                ingest: p.ingest_s,
                write: p.write_s,
                manifest: 0.0,
                total: elapsed,
            },
            records_per_s: if elapsed > 0.0 {
                total as f64 / elapsed
            } else {
                0.0
            },
        })
    }

    pub fn with_manifest_time(mut self, seconds: f64) -> Self {
        self.timings_s.manifest = seconds;
        self.timings_s.total += seconds;
        self.records_per_s = self.records_total as f64 / self.timings_s.total.max(1e-9);
        self
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Config(e.to_string()))?;
        atomic::write(&dir.join(output::REPORT_FILE), text.as_bytes())
    }
}

/// `prepare.json` files larger than this are refused when read back (one is
/// ~10 KB plus a line per skipped file and shard).
pub const MAX_REPORT_BYTES: u64 = 64 << 20;

/// Reads `prepare.json` of a prepared folder; one written by a newer
/// histoshard, in a layout this one does not know, is refused by name.
pub fn read(dir: &Path) -> Result<PrepareReport> {
    let path = dir.join(output::REPORT_FILE);
    let text = crate::fsutil::read_text_limited(&path, MAX_REPORT_BYTES, "a prepare.json")?;
    let report: PrepareReport = serde_json::from_str(&text)
        .map_err(|e| Error::input(&path, format!("not a histoshard prepare.json: {e}")))?;
    if report.format_version > FORMAT_VERSION {
        return Err(Error::input(
            &path,
            format!(
                "written by histoshard {} in prepare.json format {}; this histoshard ({}) reads up to format {FORMAT_VERSION}",
                report.version,
                report.format_version,
                env!("CARGO_PKG_VERSION")
            ),
        ));
    }
    Ok(report)
}
