//! Preparing one data set on several machines: which worker writes which
//! shards, and the part each worker leaves for `merge`.
//!
//! Every worker reads the whole input and computes the same global plan
//! (splits, patches, record ids, shards); the plan's shards are then dealt
//! out in contiguous runs of about equal record counts ([`owners`]). Worker
//! `I` of `N` writes its shards, whole, into
//! `OUTPUT/.histoshard-parts/part-I-of-N/` — an output folder of its own, with
//! its own lock and resume state — and, last, `part.json`: the plan's
//! fingerprint, every shard of the plan, the ones it wrote (size and CRC-32C),
//! and the checksums of its manifest rows (`rows.parquet`) and, for worker 0,
//! of the plan's `images.parquet`. `merge` moves the shards into `OUTPUT` and
//! writes the manifest. A record's bytes depend on its id alone, so a shard is
//! the same whichever worker writes it.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::report::{PrepareReport, RunTimings};
use crate::{
    error::{Error, IoContext, Result},
    fsutil,
    shard::writer::ShardSummary,
};

/// Folder of the parts inside an output folder.
pub const PARTS_DIR: &str = ".histoshard-parts";
/// A part's manifest, written last: its presence marks a finished part.
pub const PART_FILE: &str = "part.json";
/// A part's manifest rows.
pub const ROWS_FILE: &str = "rows.parquet";
/// Bumped whenever [`owners`] deals shards out differently.
const PARTITION_RULE: u32 = 1;

/// Worker `index` of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Partition {
    pub index: u32,
    pub count: u32,
}

impl Partition {
    pub fn new(index: u32, count: u32) -> Result<Self> {
        if count == 0 {
            return Err(Error::Config("--num-workers must be at least 1".into()));
        }
        if index >= count {
            return Err(Error::Config(format!(
                "--worker-index {index} is out of range for --num-workers {count} (workers are numbered 0..{})",
                count - 1
            )));
        }
        Ok(Self { index, count })
    }

    /// `part-I-of-N`.
    pub fn dir_name(&self) -> String {
        format!("part-{}-of-{}", self.index, self.count)
    }

    /// Reads `part-I-of-N`; `None` for any other name.
    pub fn parse_dir_name(name: &str) -> Option<Self> {
        let (i, n) = name.strip_prefix("part-")?.split_once("-of-")?;
        let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !plain(i) || !plain(n) {
            return None;
        }
        Self::new(i.parse().ok()?, n.parse().ok()?).ok()
    }

    /// The partition a `prepare` run is, from its flags and the environment
    /// (`env` looks a variable up); `None` for a one-machine run.
    ///
    /// - both flags: as given;
    /// - `--num-workers` alone: the index from Kubernetes'
    ///   `JOB_COMPLETION_INDEX`, else Slurm's `SLURM_ARRAY_TASK_ID`;
    ///   `--num-workers 1` alone is a one-machine run whatever the
    ///   environment says;
    /// - `--worker-index` alone: the count from `SLURM_ARRAY_TASK_COUNT`;
    /// - neither: a Slurm array task (`SLURM_ARRAY_TASK_ID` and
    ///   `SLURM_ARRAY_TASK_COUNT`) is a worker; anything else one machine.
    ///
    /// Slurm task ids count from `SLURM_ARRAY_TASK_MIN` and must be
    /// contiguous (`--array=0-7`, not `--array=0-14:2`).
    pub fn resolve(
        index: Option<u32>,
        count: Option<u32>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>> {
        let var = |name: &str| -> Result<Option<u32>> {
            match env(name) {
                None => Ok(None),
                Some(v) if v.trim().is_empty() => Ok(None),
                Some(v) => v.trim().parse().map(Some).map_err(|_| {
                    Error::Config(format!(
                        "{name}={v:?} in the environment is not a worker number"
                    ))
                }),
            }
        };
        let slurm_index = || -> Result<Option<u32>> {
            let Some(id) = var("SLURM_ARRAY_TASK_ID")? else {
                return Ok(None);
            };
            if let Some(step) = var("SLURM_ARRAY_TASK_STEP")?
                && step > 1
            {
                return Err(Error::Config(format!(
                    "SLURM_ARRAY_TASK_STEP={step}: the array's task ids must be contiguous (--array=0-{{N-1}}) to number the workers"
                )));
            }
            let min = var("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            id.checked_sub(min).map(Some).ok_or_else(|| {
                Error::Config(format!(
                    "SLURM_ARRAY_TASK_ID={id} is below SLURM_ARRAY_TASK_MIN={min}"
                ))
            })
        };
        let slurm_count = || var("SLURM_ARRAY_TASK_COUNT");
        let (index, count) = match (index, count) {
            (Some(i), Some(n)) => (i, n),
            (None, Some(1)) => return Ok(None),
            (None, Some(n)) => {
                let i = match var("JOB_COMPLETION_INDEX")? {
                    Some(i) => i,
                    None => slurm_index()?.ok_or_else(|| {
                        Error::Config(format!(
                            "--num-workers {n} needs --worker-index (or JOB_COMPLETION_INDEX from a Kubernetes Indexed Job, or SLURM_ARRAY_TASK_ID from a Slurm array)"
                        ))
                    })?,
                };
                (i, n)
            }
            (Some(i), None) => {
                let n = slurm_count()?.ok_or_else(|| {
                    Error::Config(format!(
                        "--worker-index {i} needs --num-workers (or SLURM_ARRAY_TASK_COUNT from a Slurm array)"
                    ))
                })?;
                (i, n)
            }
            (None, None) => match (slurm_index()?, slurm_count()?) {
                (Some(i), Some(n)) => (i, n),
                _ => return Ok(None),
            },
        };
        Self::new(index, count).map(Some)
    }
}

/// The worker of each shard, given the shards' record counts in plan order:
/// contiguous runs, a shard going to the worker whose equal share of all
/// records holds the shard's middle record. More workers than shards leaves
/// some workers without any.
pub fn owners(records: &[u64], workers: u32) -> Vec<u32> {
    let total: u128 = records.iter().map(|&r| u128::from(r)).sum();
    let n = u128::from(workers.max(1));
    let mut before = 0u128;
    records
        .iter()
        .map(|&r| {
            let middle = 2 * before + u128::from(r);
            before += u128::from(r);
            let w = (middle * n).checked_div(2 * total).unwrap_or(0);
            w.min(n - 1) as u32
        })
        .collect()
}

/// One shard of the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedShard {
    pub file: String,
    pub records: u64,
}

/// `part.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartManifest {
    pub tool: String,
    pub version: String,
    pub partition: Partition,
    /// Hash of options and inputs: `prepare.json`'s fingerprint.
    pub fingerprint: String,
    /// Hash of the fingerprint and the whole plan (see `prepare::plan_fingerprint`).
    pub plan: String,
    /// Every shard of the plan, in order.
    pub plan_shards: Vec<PlannedShard>,
    /// The shards this worker wrote, in plan order.
    pub shards: Vec<ShardSummary>,
    /// sha256 of [`ROWS_FILE`], and how many rows it holds.
    pub rows_sha256: String,
    pub rows: u64,
    /// sha256 of the plan's `images.parquet` (worker 0 only writes it).
    pub images_sha256: Option<String>,
    /// `prepare.json` before any record is counted (`PrepareReport::with_rows` completes it).
    pub report: PrepareReport,
    /// Whether the worker was told `--overwrite` (then `merge` replaces
    /// another data set in the output folder).
    pub overwrite: bool,
    pub host: String,
    pub timings: RunTimings,
}

impl PartManifest {
    /// The shards this worker must have written, by the partition rule.
    pub fn expected_shards(&self) -> Vec<&PlannedShard> {
        let records: Vec<u64> = self.plan_shards.iter().map(|s| s.records).collect();
        owners(&records, self.partition.count)
            .into_iter()
            .zip(&self.plan_shards)
            .filter(|(w, _)| *w == self.partition.index)
            .map(|(_, s)| s)
            .collect()
    }
}

/// `OUTPUT/.histoshard-parts/part-I-of-N`.
pub fn part_dir(output: &Path, part: Partition) -> PathBuf {
    output.join(PARTS_DIR).join(part.dir_name())
}

/// Reads a part's `part.json`.
pub fn read_part(dir: &Path) -> Result<PartManifest> {
    let path = dir.join(PART_FILE);
    let text = fsutil::read_text_limited(&path, super::MAX_REPORT_BYTES, "a part.json")?;
    serde_json::from_str(&text)
        .map_err(|e| Error::input(&path, format!("not a histoshard part.json: {e}")))
}

/// The parts in `output` (folders named `part-I-of-N`), in order.
pub fn list_parts(output: &Path) -> Result<Vec<(Partition, PathBuf)>> {
    let dir = output.join(PARTS_DIR);
    let mut parts = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(parts),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    for entry in entries {
        let entry = entry.at(&dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(p) = Partition::parse_dir_name(&name)
            && entry.file_type().is_ok_and(|t| t.is_dir())
        {
            parts.push((p, entry.path()));
        }
    }
    parts.sort();
    Ok(parts)
}

/// sha256 (hex) of a regular file.
pub fn file_sha256(path: &Path) -> Result<String> {
    let mut f = fsutil::open_regular(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).at(path)?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// Removes the file at `path`; nothing there is no error.
pub fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

/// This machine's name, for the timings (empty when unknown).
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The version of the partition rule, for the plan fingerprint.
pub fn partition_rule() -> u32 {
    PARTITION_RULE
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn resolve(i: Option<u32>, n: Option<u32>, vars: &[(&str, &str)]) -> Result<Option<Partition>> {
        Partition::resolve(i, n, &env(vars))
    }

    #[test]
    fn owners_are_contiguous_balanced_and_cover_every_worker_they_can() {
        assert_eq!(owners(&[10; 8], 4), [0, 0, 1, 1, 2, 2, 3, 3]);
        assert_eq!(owners(&[10; 8], 3), [0, 0, 0, 1, 1, 2, 2, 2]);
        assert_eq!(owners(&[10; 3], 1), [0, 0, 0]);
        // Uneven shards: a big shard weighs more.
        assert_eq!(owners(&[100, 10, 10, 10, 10, 10], 2), [0, 1, 1, 1, 1, 1]);
        // More workers than shards: some get none, none gets an index ≥ N.
        let o = owners(&[5, 5], 5);
        assert!(o.iter().all(|&w| w < 5));
        assert_eq!(o, [1, 3]);
        assert!(owners(&[], 3).is_empty());
        // Non-decreasing: every worker's shards are one run.
        let o = owners(&[7, 3, 9, 1, 1, 12, 4, 4, 4, 30], 4);
        assert!(o.windows(2).all(|w| w[0] <= w[1]), "{o:?}");
    }

    #[test]
    fn flags_win_and_are_checked() {
        assert_eq!(
            resolve(Some(2), Some(3), &[("SLURM_ARRAY_TASK_ID", "0")]).unwrap(),
            Some(Partition { index: 2, count: 3 })
        );
        let e = resolve(Some(3), Some(3), &[]).unwrap_err().to_string();
        assert!(
            e.contains("--worker-index 3 is out of range for --num-workers 3"),
            "{e}"
        );
        assert!(resolve(Some(0), Some(0), &[]).is_err());
        assert!(resolve(Some(1), None, &[]).is_err());
        assert!(resolve(None, Some(4), &[]).is_err());
        assert_eq!(resolve(None, None, &[]).unwrap(), None);
    }

    #[test]
    fn slurm_and_kubernetes_environments() {
        let slurm = [
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_MIN", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ];
        assert_eq!(
            resolve(None, None, &slurm).unwrap(),
            Some(Partition { index: 1, count: 3 })
        );
        // --num-workers 1 alone: one machine, even inside an array job.
        assert_eq!(resolve(None, Some(1), &slurm).unwrap(), None);
        let k8s = [("JOB_COMPLETION_INDEX", "7")];
        assert_eq!(
            resolve(None, Some(8), &k8s).unwrap(),
            Some(Partition { index: 7, count: 8 })
        );
        // Without --num-workers an Indexed Job cannot know the count.
        assert_eq!(resolve(None, None, &k8s).unwrap(), None);
        assert!(resolve(None, Some(7), &k8s).is_err());
        let stepped = [
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ];
        assert!(resolve(None, None, &stepped).is_err());
        let e = resolve(
            None,
            None,
            &[
                ("SLURM_ARRAY_TASK_ID", "x"),
                ("SLURM_ARRAY_TASK_COUNT", "2"),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("SLURM_ARRAY_TASK_ID"), "{e}");
    }

    #[test]
    fn part_names_round_trip() {
        let p = Partition::new(3, 12).unwrap();
        assert_eq!(p.dir_name(), "part-3-of-12");
        assert_eq!(Partition::parse_dir_name("part-3-of-12"), Some(p));
        for bad in [
            "part-3-of-3",
            "part--of-2",
            "part-1-of-2x",
            "part-+1-of-2",
            "x",
        ] {
            assert_eq!(Partition::parse_dir_name(bad), None, "{bad}");
        }
    }
}
