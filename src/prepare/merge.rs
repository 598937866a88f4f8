//! `merge`: the parts that `prepare --worker-index I --num-workers N` left in
//! an output folder become one data set — the same bytes, file for file, as
//! a one-machine `prepare` with the same options writes (`prepare-timings.json`
//! aside, which says how long each worker and the merge took).
//!
//! Everything is checked before anything changes: every part `0..N` is there,
//! finished (its `part.json`), not being written (its lock), from one plan
//! (the plan fingerprint), made by this histoshard, with the shards the
//! partition rule gives it at the sizes it recorded, and rows and images
//! tables with the checksums it recorded. Then, under the output folder's
//! lock and journal (`output.rs`), the shards are renamed into place, the
//! tables and reports written, the manifest last, and the parts removed. An
//! interrupted merge is rerun as it was; shards it had moved are kept.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Instant,
};

use super::{
    PrepareOptions, PrepareReport, RunTimings,
    output::{Existing, Lock, OutputDir},
    parts::{self, PartManifest, Partition},
    report::{self, Timings, WorkerTimings},
};
use crate::{
    atomic,
    error::{Error, Result},
    shard::{
        manifest::{self, ImageRow, ManifestRow},
        writer::ShardSummary,
    },
};

/// What `merge` did.
pub struct Merged {
    pub report: PrepareReport,
    pub timings: RunTimings,
    /// How many parts were merged (0: the folder already held the data set).
    pub parts: u32,
}

/// A part, read and checked.
struct Part {
    partition: Partition,
    dir: PathBuf,
    manifest: PartManifest,
    rows: Vec<ManifestRow>,
    /// Held until the merge is done, so that no worker writes meanwhile.
    _lock: Lock,
}

/// Where `merge` finds the parts: an output folder (its
/// `.histoshard-parts/`), or — for parts on object storage
/// (`prepare::remote::merge_at`) — a local folder holding copies of the
/// parts' small files (`part.json`, rows, images), their shards staying in
/// the store.
pub struct Source<'a> {
    /// The folder holding `.histoshard-parts/part-I-of-N/`.
    pub dir: &'a Path,
    /// Set for parts on object storage: the URL that errors name instead
    /// of `dir`, and the parts' shards there (`part-I-of-N/FILE` → size).
    pub remote: Option<(&'a str, &'a BTreeMap<String, u64>)>,
}

impl Source<'_> {
    /// What an error names for `path` (inside `dir`): the path itself, or its URL.
    fn show(&self, path: &Path) -> PathBuf {
        match (self.remote, path.strip_prefix(self.dir)) {
            (Some((url, _)), Ok(rel)) => PathBuf::from(format!("{url}/{}", rel.display())),
            _ => path.to_path_buf(),
        }
    }

    /// The size of shard `file` of `part` (in `part_dir`), if it is there.
    fn shard_size(&self, part: Partition, part_dir: &Path, file: &str) -> Option<u64> {
        match self.remote {
            Some((_, shards)) => shards.get(&format!("{}/{file}", part.dir_name())).copied(),
            // Moved into place by an interrupted merge counts as there.
            None => size_of(&part_dir.join(file)).or_else(|| size_of(&self.dir.join(file))),
        }
    }
}

/// Every part read and checked, as one data set.
pub struct Checked {
    parts: Vec<Part>,
    images: Vec<ImageRow>,
    rows: Vec<ManifestRow>,
    shards: Vec<ShardSummary>,
    read_s: f64,
}

impl Checked {
    /// Part 0's `part.json` (every part has the same plan).
    pub fn first(&self) -> &PartManifest {
        &self.parts[0].manifest
    }

    /// How many parts.
    pub fn count(&self) -> u32 {
        self.parts.len() as u32
    }

    /// Every worker was told `--overwrite`.
    pub fn overwrite(&self) -> bool {
        self.parts.iter().all(|p| p.manifest.overwrite)
    }

    /// The plan's shard files, in plan order.
    pub fn shard_files(&self) -> Vec<String> {
        self.first()
            .plan_shards
            .iter()
            .map(|s| s.file.clone())
            .collect()
    }

    /// Each part's shards: (`part-I-of-N/FILE`, `FILE`).
    pub fn part_shards(&self) -> Vec<(String, String)> {
        self.parts
            .iter()
            .flat_map(|p| {
                p.manifest.shards.iter().map(|s| {
                    (
                        format!("{}/{}", p.partition.dir_name(), s.file),
                        s.file.clone(),
                    )
                })
            })
            .collect()
    }

    /// Writes the merged data set's files but the shards into `dir` —
    /// `features.json`, `images.parquet`, `manifest.csv`,
    /// `prepare-timings.json`, `prepare.json` and last `manifest.parquet` —
    /// with the same code as a one-machine run; `started` is the merge's
    /// start, `move_s` the time taken to put the shards in place.
    pub fn write_data_set(
        &self,
        dir: &Path,
        started: Instant,
        move_s: f64,
    ) -> Result<(PrepareReport, RunTimings)> {
        let manifest_started = Instant::now();
        let report = self
            .first()
            .report
            .clone()
            .with_rows(&self.rows, &self.shards);
        let mut table = super::write_tables(dir, &self.images, &self.rows)?;
        let timings = merge_timings(
            &self.parts,
            self.rows.len() as u64,
            Timings {
                ingest: self.read_s,
                write: move_s,
                manifest: manifest_started.elapsed().as_secs_f64(),
                total: started.elapsed().as_secs_f64(),
            },
        );
        super::commit_data_set(dir, &report, &timings, &mut table)?;
        Ok((report, timings))
    }
}

/// Merges the parts in `dir` (see the module documentation). `overwrite`
/// replaces another data set there, as when every worker was told so.
pub fn merge(dir: &Path, overwrite: bool) -> Result<Merged> {
    let started = Instant::now();
    atomic::check_folder(dir)?;
    if !dir.is_dir() {
        return Err(Error::input(dir, "not found: no folder to merge"));
    }
    let found = parts::list_parts(dir)?;
    if found.is_empty()
        && let Ok(report) = report::read(dir)
        && dir.join(manifest::MANIFEST_PARQUET).is_file()
    {
        return Ok(Merged {
            report,
            timings: RunTimings::default(),
            parts: 0,
        });
    }
    let checked = check(&Source { dir, remote: None }, found)?;
    let n = checked.count();
    let overwrite = overwrite || checked.overwrite();
    let out = OutputDir::open(
        dir,
        &checked.first().fingerprint,
        &checked.shard_files(),
        overwrite,
    )?;
    if out.existing == Existing::Complete {
        // An earlier merge finished all but removing the parts.
        let report = report::read(dir)?;
        out.finish()?;
        remove_parts(dir, &checked.parts)?;
        return Ok(Merged {
            report,
            timings: RunTimings::default(),
            parts: n,
        });
    }
    let move_started = Instant::now();
    for p in &checked.parts {
        for s in &p.manifest.shards {
            let (from, to) = (p.dir.join(&s.file), dir.join(&s.file));
            if from.is_file() {
                atomic::check_target(&to)?;
                std::fs::rename(&from, &to).map_err(|e| Error::io(&to, e))?;
            } else if size_of(&to) != Some(s.bytes) {
                return Err(Error::input(
                    &from,
                    format!(
                        "missing, and not moved into place either; rerun worker {}",
                        p.partition.index
                    ),
                ));
            }
        }
    }
    let move_s = move_started.elapsed().as_secs_f64();
    let (report, timings) = checked.write_data_set(dir, started, move_s)?;
    out.finish()?;
    remove_parts(dir, &checked.parts)?;
    Ok(Merged {
        report,
        timings,
        parts: n,
    })
}

/// Everything `merge` checks before it changes anything: the parts `found`
/// in `src` are all `0..N` of one N, each finished, from one plan, with the
/// shards and tables it recorded, and their rows the plan's ids.
pub fn check(src: &Source, found: Vec<(Partition, PathBuf)>) -> Result<Checked> {
    let dir = src.dir;
    let parts_dir = src.show(&dir.join(parts::PARTS_DIR));
    if found.is_empty() {
        return Err(Error::input(
            parts_dir,
            "no parts to merge: run `histoshard prepare --worker-index I --num-workers N` with this output first",
        ));
    }
    let counts: BTreeSet<u32> = found.iter().map(|(p, _)| p.count).collect();
    if counts.len() > 1 {
        let names: Vec<String> = found.iter().map(|(p, _)| p.dir_name()).collect();
        return Err(Error::input(
            parts_dir,
            format!(
                "holds parts of runs with different worker counts ({}): remove the stale ones, or rerun every worker with one --num-workers",
                names.join(", ")
            ),
        ));
    }
    let n = found[0].0.count;
    let present: BTreeSet<u32> = found.iter().map(|(p, _)| p.index).collect();
    let missing: Vec<u32> = (0..n).filter(|i| !present.contains(i)).collect();
    if let Some(&first) = missing.first() {
        let list: Vec<String> = missing.iter().map(u32::to_string).collect();
        return Err(Error::input(
            src.show(&parts::part_dir(
                dir,
                Partition {
                    index: first,
                    count: n,
                },
            )),
            format!(
                "missing: worker(s) {} of {n} have not run here; run each with --worker-index I --num-workers {n}",
                list.join(", ")
            ),
        ));
    }
    let read_started = Instant::now();
    let mut checked = Vec::with_capacity(found.len());
    for (partition, part_dir) in found {
        checked.push(read_part(src, partition, part_dir)?);
    }
    check_one_plan(src, &checked)?;
    let images = read_images(src, &checked[0])?;
    let mut rows: Vec<ManifestRow> = checked
        .iter_mut()
        .flat_map(|p| std::mem::take(&mut p.rows))
        .collect();
    rows.sort_by_key(|r| r.record_id);
    let plan_records: u64 = checked[0]
        .manifest
        .plan_shards
        .iter()
        .map(|s| s.records)
        .sum();
    if rows.len() as u64 != plan_records
        || rows
            .iter()
            .enumerate()
            .any(|(i, r)| r.record_id != i as u64)
    {
        return Err(Error::input(
            parts_dir,
            format!(
                "the parts hold {} records, not the plan's ids 0..{plan_records}; rerun the workers with --overwrite",
                rows.len()
            ),
        ));
    }
    let shards: Vec<ShardSummary> = checked
        .iter()
        .flat_map(|p| p.manifest.shards.iter().cloned())
        .collect();
    Ok(Checked {
        parts: checked,
        images,
        rows,
        shards,
        read_s: read_started.elapsed().as_secs_f64(),
    })
}

/// Locks, reads and checks one part: its `part.json`, its shards' presence
/// and sizes, its rows.
fn read_part(src: &Source, partition: Partition, dir: PathBuf) -> Result<Part> {
    let i = partition.index;
    // Held by a worker still writing: "another histoshard prepare is writing here".
    let lock = Lock::acquire(&dir)?;
    let json = dir.join(parts::PART_FILE);
    let shown = src.show(&json);
    if !json.is_file() {
        return Err(Error::input(
            &shown,
            format!(
                "not found: part {i} of {} is incomplete (its worker was killed or failed); rerun worker {i}",
                partition.count
            ),
        ));
    }
    let manifest = parts::read_part(&dir).map_err(|_| {
        Error::input(
            &shown,
            format!("not a histoshard part.json; rerun worker {i} (with --overwrite)"),
        )
    })?;
    let rerun = format!("rerun worker {i} (with --overwrite)");
    if manifest.tool != "histoshard" || manifest.partition != partition {
        return Err(Error::input(
            &shown,
            format!("is not the part.json of {}; {rerun}", partition.dir_name()),
        ));
    }
    if manifest.version != env!("CARGO_PKG_VERSION") {
        return Err(Error::input(
            &shown,
            format!(
                "was written by histoshard {}, this is {}: merge with the version the workers ran",
                manifest.version,
                env!("CARGO_PKG_VERSION")
            ),
        ));
    }
    let expected: Vec<(&str, u64)> = manifest
        .expected_shards()
        .iter()
        .map(|s| (s.file.as_str(), s.records))
        .collect();
    let listed: Vec<(&str, u64)> = manifest
        .shards
        .iter()
        .map(|s| (s.file.as_str(), s.records))
        .collect();
    if listed != expected {
        return Err(Error::input(
            &shown,
            format!("lists other shards than the plan gives worker {i}; {rerun}"),
        ));
    }
    for s in &manifest.shards {
        let path = src.show(&dir.join(&s.file));
        match src.shard_size(partition, &dir, &s.file) {
            Some(b) if b == s.bytes => {}
            Some(b) => {
                return Err(Error::input(
                    &path,
                    format!("is {b} bytes, part.json says {}; {rerun}", s.bytes),
                ));
            }
            None => {
                return Err(Error::input(
                    &path,
                    format!("missing (part {i} lists it); rerun worker {i}"),
                ));
            }
        }
    }
    let rows_path = dir.join(parts::ROWS_FILE);
    let rows_shown = src.show(&rows_path);
    if !rows_path.is_file() || parts::file_sha256(&rows_path)? != manifest.rows_sha256 {
        return Err(Error::input(
            &rows_shown,
            format!("missing or does not match its part.json (checksum); {rerun}"),
        ));
    }
    let df = manifest::read_parquet(&rows_path)?;
    let rows = ManifestRow::from_dataframe(&df)
        .map_err(|e| Error::input(&rows_shown, format!("not a histoshard rows table: {e}")))?;
    let shard_records: u64 = manifest.shards.iter().map(|s| s.records).sum();
    if rows.len() as u64 != manifest.rows || manifest.rows != shard_records {
        return Err(Error::input(
            &rows_shown,
            format!(
                "holds {} rows, its shards {shard_records} records; {rerun}",
                rows.len()
            ),
        ));
    }
    Ok(Part {
        partition,
        dir,
        manifest,
        rows,
        _lock: lock,
    })
}

/// Refuses parts from more than one plan, naming one that differs from the
/// plan most parts share, and the options in which they differ.
fn check_one_plan(src: &Source, parts: &[Part]) -> Result<()> {
    let mut votes: BTreeMap<&str, (usize, u32)> = BTreeMap::new();
    for p in parts {
        let v = votes
            .entry(p.manifest.plan.as_str())
            .or_insert((0, p.partition.index));
        v.0 += 1;
    }
    let Some((common, _)) = votes
        .iter()
        .max_by_key(|(_, (count, first))| (*count, std::cmp::Reverse(*first)))
    else {
        return Ok(());
    };
    let Some(reference) = parts.iter().find(|p| p.manifest.plan == *common) else {
        return Ok(());
    };
    let Some(odd) = parts.iter().find(|p| p.manifest.plan != *common) else {
        return Ok(());
    };
    let why = match differing_options(
        &odd.manifest.report.config,
        &reference.manifest.report.config,
    ) {
        d if !d.is_empty() => format!("its options differ in {}", d.join(", ")),
        _ if odd.manifest.fingerprint != reference.manifest.fingerprint => {
            "its input files differ".to_string()
        }
        _ => "the same options and file names, but other input contents".to_string(),
    };
    Err(Error::input(
        src.show(&odd.dir.join(parts::PART_FILE)),
        format!(
            "from another plan than {} ({why}); rerun worker {} with the same options and input as the others (--overwrite)",
            reference.partition.dir_name(),
            odd.partition.index
        ),
    ))
}

/// The options (as flag names) whose values differ between two runs.
fn differing_options(a: &PrepareOptions, b: &PrepareOptions) -> Vec<String> {
    let (Ok(a), Ok(b)) = (serde_json::to_value(a), serde_json::to_value(b)) else {
        return Vec::new();
    };
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return Vec::new();
    };
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| k.replace('_', "-"))
        .collect()
}

/// The plan's `images.parquet`, which worker 0 wrote.
fn read_images(src: &Source, part: &Part) -> Result<Vec<ImageRow>> {
    let path = part.dir.join(manifest::IMAGES_PARQUET);
    let shown = src.show(&path);
    let rerun = "rerun worker 0 (with --overwrite)";
    let Some(sha) = &part.manifest.images_sha256 else {
        return Err(Error::input(
            src.show(&part.dir.join(parts::PART_FILE)),
            format!("lists no images table; {rerun}"),
        ));
    };
    if !path.is_file() || parts::file_sha256(&path)? != *sha {
        return Err(Error::input(
            &shown,
            format!("missing or not the one part.json lists; {rerun}"),
        ));
    }
    let df = manifest::read_parquet(&path)?;
    ImageRow::from_dataframe(&df)
        .map_err(|e| Error::input(&shown, format!("not a histoshard images table: {e}")))
}

/// The merge's own timings, and every worker's.
fn merge_timings(parts: &[Part], records: u64, own: Timings) -> RunTimings {
    let workers: Vec<WorkerTimings> = parts
        .iter()
        .map(|p| WorkerTimings {
            worker: p.partition.index,
            host: p.manifest.host.clone(),
            shards: p.manifest.shards.len(),
            records: p.manifest.rows,
            run: p.manifest.timings.clone(),
        })
        .collect();
    // As if the workers ran side by side: the slowest, then the merge.
    let slowest = workers
        .iter()
        .map(|w| w.run.timings_s.total)
        .fold(0.0, f64::max);
    RunTimings {
        resumed_shards: workers.iter().map(|w| w.run.resumed_shards).sum(),
        records_per_s: records as f64 / (slowest + own.total).max(1e-9),
        timings_s: own,
        workers,
    }
}

fn size_of(path: &Path) -> Option<u64> {
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len())
}

/// Removes the merged parts, and their folder when nothing else is left in it.
fn remove_parts(dir: &Path, parts: &[Part]) -> Result<()> {
    for p in parts {
        std::fs::remove_dir_all(&p.dir).map_err(|e| Error::io(&p.dir, e))?;
    }
    let _ = std::fs::remove_dir(dir.join(parts::PARTS_DIR));
    Ok(())
}
