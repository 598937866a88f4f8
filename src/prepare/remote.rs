//! A data set on object storage (`s3://bucket/prefix`, `gs://`, `az://`,
//! `file:///`), through [`crate::remote::Store`].
//!
//! **Writing** (`prepare --output URL`, [`prepare_to`]): the data set is
//! prepared into a local staging folder (`cache/staging/<hash of URL and
//! fingerprint>`, so a rerun resumes it as any output folder), then uploaded
//! file by file, each whole and atomically (one PUT, or a multipart upload
//! visible only once completed). The order makes "complete" mean the same as
//! in a local folder, where `manifest.parquet` is written last:
//! 1. `.histoshard-upload.json` (the fingerprint and every name this upload
//!    and the data set it replaces write), so a later run knows these objects
//!    are histoshard's;
//! 2. a replaced data set's `manifest.parquet` is deleted: from here on the
//!    prefix holds no complete data set;
//! 3. the shards, then `features.json`, `images.parquet`, `manifest.csv`,
//!    `prepare-timings.json`, `prepare.json`, and last `manifest.parquet`;
//! 4. the replaced set's shards this one does not have, and the journal.
//!
//! An upload cut short (a network error, a refused request, a kill) leaves
//! no `manifest.parquet`, so nothing at the prefix looks complete; readers
//! refuse it, and the rerun uploads again from the staging folder (kept when
//! the upload fails, removed once it succeeds).
//!
//! **Workers** (`prepare --worker-index I --num-workers N --output URL`,
//! [`worker_to`]): the destination is checked as above, the part is prepared
//! into a local staging folder by the local worker's code
//! ([`super::run_worker`]), then uploaded under
//! `URL/.histoshard-parts/part-I-of-N/` — its shards, each whole, then its
//! tables, and **`part.json` last** (deleted first when a rerun begins), so a
//! part is complete exactly when its `part.json` is there. A part already
//! there from the same options is not redone; a killed worker's rerun
//! resumes its staging folder.
//!
//! **Merge** (`merge URL`, [`merge_at`]): the parts' small files are
//! downloaded into a local folder and checked by the local merge's checks
//! ([`merge::check`], the shards' sizes from the listing); then the data set
//! is published by the code `prepare_to` uses ([`Publish`]): the journal, the
//! shards **copied server-side** from the parts to their final names, the
//! tables (written by [`merge::Checked::write_data_set`], the one-machine
//! code), `manifest.parquet` last; then the parts are deleted.
//!
//! Why the workers upload under the part prefix and the merge copies, rather
//! than workers uploading straight to the final names: a worker then never
//! writes a name a data set has, so a prefix holding an earlier, complete
//! data set cannot hold that set's `manifest.parquet` beside new shards (a
//! mix that looks complete) while the workers run, no worker has to delete
//! another data set's manifest on its own, and the journal has one writer.
//! The final names change only in the merge, after every check, in the order
//! that already keeps "nothing looks complete before `manifest.parquet`". The
//! cost is one server-side copy request per shard (no bytes through the
//! merging machine) and, briefly, the shards stored twice.
//!
//! **Multipart uploads left open**: each multipart upload's id is recorded in
//! the cache before its first part is sent ([`Store::record_uploads`]); each
//! command above first aborts those an earlier, cut run of it left.
//!
//! **Reading** (`verify`, `inspect`, `train --data URL`, [`fetch`]): the
//! files of the data set (those `prepare.json` lists) are downloaded into
//! `cache/datasets/<hash of URL>`, each through a temporary name; a file
//! whose size and entity tag match what was fetched before is kept.
//! The local code then reads that folder.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Instant,
};

use tracing::info;

use super::{
    PartManifest, Partition, PrepareOptions, PrepareReport, merge,
    output::{FIXED_FILES, REPORT_FILE},
    parts,
};
use crate::{
    atomic,
    error::{Error, IoContext as _, Result},
    fsutil,
    progress::Progress,
    remote::{self, Object, Store},
    shard::manifest::{IMAGES_PARQUET, MANIFEST_PARQUET},
};

/// The upload's journal object, present only while an upload is under way
/// (or was cut short).
pub const UPLOAD_JOURNAL: &str = ".histoshard-upload.json";
/// Beside a fetched data set: what was fetched (name → size, entity tag).
const FETCHED_FILE: &str = ".histoshard-fetched.json";
/// Shards uploaded at once.
const CONCURRENCY: usize = 4;

#[derive(serde::Serialize, serde::Deserialize)]
struct Journal {
    fingerprint: String,
    files: Vec<String>,
}

/// What [`prepare_to`] did.
pub enum Uploaded {
    /// Prepared (or found in staging) and uploaded.
    Done {
        report: Box<PrepareReport>,
        objects: usize,
        bytes: u64,
        upload_s: f64,
    },
    /// The prefix already holds this data set: nothing done.
    AlreadyThere(Box<PrepareReport>),
}

fn is_shard_name(name: &str) -> bool {
    name.ends_with(".tfrecord") || name.ends_with(".tfrecord.gz")
}

/// A bare object name: nothing read from a record may point elsewhere.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

fn shard_files(report: &PrepareReport) -> Vec<String> {
    report
        .shards
        .values()
        .flatten()
        .map(|s| s.file.clone())
        .filter(|f| is_plain_name(f) && is_shard_name(f))
        .collect()
}

/// A scratch folder for small objects read back (`prepare.json`, the journal).
fn scratch() -> Result<tempfile_dir::TempDir> {
    tempfile_dir::TempDir::new()
}

/// `prepare.json` at the prefix, if it is there and is histoshard's.
fn remote_report(store: &Store, names: &BTreeMap<String, Object>) -> Result<Option<PrepareReport>> {
    if !names.contains_key(REPORT_FILE) {
        return Ok(None);
    }
    let dir = scratch()?;
    store.download(REPORT_FILE, &dir.path().join(REPORT_FILE))?;
    Ok(super::read_report(dir.path())
        .ok()
        .filter(|r| r.tool == "histoshard"))
}

fn remote_journal(store: &Store, names: &BTreeMap<String, Object>) -> Result<Option<Journal>> {
    if !names.contains_key(UPLOAD_JOURNAL) {
        return Ok(None);
    }
    let dir = scratch()?;
    let path = dir.path().join("journal.json");
    store.download(UPLOAD_JOURNAL, &path)?;
    let bytes = fsutil::read_limited(&path, super::MAX_REPORT_BYTES, "an upload journal")?;
    Ok(serde_json::from_slice::<Journal>(&bytes).ok().map(|mut j| {
        j.files.retain(|f| is_plain_name(f));
        j
    }))
}

/// The objects under the store's prefix, by name.
fn listing(store: &Store) -> Result<BTreeMap<String, Object>> {
    Ok(store
        .list()?
        .into_iter()
        .map(|o| (o.name.clone(), o))
        .collect())
}

/// What is at the destination prefix, for a run that writes this data set there.
struct Destination {
    /// The objects directly under the prefix.
    names: BTreeMap<String, Object>,
    /// The names histoshard recorded writing there (a complete set's, an
    /// unfinished upload's journal's).
    recorded: BTreeSet<String>,
}

/// What [`survey`] found.
enum Survey {
    /// The prefix already holds this data set, complete.
    AlreadyThere(Box<PrepareReport>),
    /// Write here.
    Write(Destination),
}

/// Checks the prefix for a run that writes the data set `fingerprint`
/// there: objects histoshard did not record writing in the way (refused,
/// `--overwrite` or not), another data set or another unfinished upload
/// (refused without `overwrite`), this very data set (nothing to do).
fn survey(store: &Store, fingerprint: &str, overwrite: bool) -> Result<Survey> {
    // The first request: a missing bucket or refused credentials fail here, before the work.
    let names = listing(store)?;
    let report = remote_report(store, &names)?;
    let journal = remote_journal(store, &names)?;
    let complete = report.is_some() && names.contains_key(MANIFEST_PARQUET);
    let mut recorded: BTreeSet<String> = BTreeSet::new();
    if let Some(j) = &journal {
        recorded.extend(j.files.iter().cloned());
    }
    if let Some(r) = &report {
        recorded.extend(FIXED_FILES.iter().map(|f| f.to_string()));
        recorded.extend(shard_files(r));
    }
    let in_the_way: Vec<&str> = names
        .keys()
        .filter(|n| {
            (FIXED_FILES.contains(&n.as_str()) || is_shard_name(n)) && !recorded.contains(*n)
        })
        .map(String::as_str)
        .collect();
    if !in_the_way.is_empty() {
        let shown: Vec<&str> = in_the_way.iter().take(8).copied().collect();
        return Err(Error::Remote {
            url: store.url().to_string(),
            message: format!(
                "holds objects histoshard did not record writing that are in the way: {}{}; move them or choose another prefix",
                shown.join(", "),
                match in_the_way.len() - shown.len() {
                    0 => String::new(),
                    more => format!(" and {more} more"),
                }
            ),
        });
    }
    if !overwrite {
        if let Some(j) = &journal
            && j.fingerprint != fingerprint
        {
            return Err(Error::Remote {
                url: store.url().to_string(),
                message: "holds an upload of another data set that did not finish; rerun that one, or pass --overwrite to replace it".into(),
            });
        }
        if let Some(r) = report
            && complete
        {
            if r.fingerprint == fingerprint && journal.is_none() {
                return Ok(Survey::AlreadyThere(Box::new(r)));
            }
            if r.fingerprint != fingerprint {
                return Err(Error::Remote {
                    url: store.url().to_string(),
                    message: "already holds a histoshard data set made with other options or inputs (prepare.json); pass --overwrite to replace it, or choose another prefix".into(),
                });
            }
        }
    }
    Ok(Survey::Write(Destination { names, recorded }))
}

/// A data set being written at a prefix: [`Publish::begin`], the shards,
/// [`Publish::finish`] (see the module's comment for the order).
struct Publish<'a> {
    store: &'a Store,
    recorded: BTreeSet<String>,
    new: BTreeSet<String>,
}

impl<'a> Publish<'a> {
    /// Uploads the journal (the data set `fingerprint`, whose shards are
    /// `shards`, and every name recorded at `dest`) and deletes a replaced
    /// data set's `manifest.parquet`: from here on the prefix holds no
    /// complete data set until [`Publish::finish`].
    fn begin(
        store: &'a Store,
        dest: Destination,
        fingerprint: &str,
        shards: &[String],
    ) -> Result<Self> {
        let new: BTreeSet<String> = FIXED_FILES
            .iter()
            .map(|f| f.to_string())
            .chain(shards.iter().cloned())
            .collect();
        let journal = Journal {
            fingerprint: fingerprint.to_string(),
            files: new.union(&dest.recorded).cloned().collect(),
        };
        let scratch = scratch()?;
        let journal_path = scratch.path().join("journal.json");
        let text = serde_json::to_vec_pretty(&journal).map_err(|e| Error::Config(e.to_string()))?;
        atomic::write(&journal_path, &text)?;
        store.upload(&journal_path, UPLOAD_JOURNAL)?;
        if dest.names.contains_key(MANIFEST_PARQUET) {
            store.delete(MANIFEST_PARQUET)?;
        }
        Ok(Self {
            store,
            recorded: dest.recorded,
            new,
        })
    }

    /// Uploads the tables from `dir` in the order a local run writes them,
    /// `manifest.parquet` last; deletes the replaced set's leftover shards
    /// and the journal. Returns the objects the data set has and the bytes
    /// uploaded here.
    fn finish(self, dir: &Path) -> Result<(usize, u64)> {
        let mut bytes = 0;
        for name in FIXED_FILES {
            if name == MANIFEST_PARQUET {
                crate::failpoint::reached("before-remote-manifest", 1);
            }
            bytes += self.store.upload(&dir.join(name), name)?;
        }
        for stale in self.recorded.difference(&self.new) {
            self.store.delete(stale)?;
        }
        self.store.delete(UPLOAD_JOURNAL)?;
        Ok((self.new.len(), bytes))
    }
}

/// The local folder a run for `url` with these options stages in (`kind`:
/// one machine's output folder, or the workers' parts), and the options'
/// fingerprint.
fn staging(url: &str, opts: &PrepareOptions, kind: &str) -> Result<(PrepareOptions, String)> {
    let mut local = opts.clone();
    local.output = remote::cache_dir("staging", url);
    let fingerprint = super::options_fingerprint(&local)?;
    local.output = remote::cache_dir("staging", &format!("{url}\n{fingerprint}{kind}"));
    local.overwrite = false;
    Ok((local, fingerprint))
}

/// `prepare` with `--output URL`: checks the destination (reachable, and not
/// holding another data set unless `--overwrite`) before any work, prepares
/// into the staging folder, uploads (see the module's comment).
pub fn prepare_to(url: &str, opts: &PrepareOptions, progress: &Progress) -> Result<Uploaded> {
    let store = Store::open(url)?;
    let (local, fingerprint) = staging(url, opts, "")?;
    let dest = match survey(&store, &fingerprint, opts.overwrite)? {
        Survey::AlreadyThere(r) => {
            info!("{} already holds this data set; nothing to do", store.url());
            return Ok(Uploaded::AlreadyThere(r));
        }
        Survey::Write(dest) => dest,
    };
    // Multipart uploads a cut run of this command could not abort.
    store.record_uploads(store.url())?;

    let prepared = super::run(&local, progress)?;
    let started = Instant::now();
    let shards = shard_files(&prepared);
    let publish = Publish::begin(&store, dest, &fingerprint, &shards)?;
    let paths: Vec<PathBuf> = shards.iter().map(|f| local.output.join(f)).collect();
    let files: Vec<(&Path, &str)> = paths
        .iter()
        .zip(&shards)
        .map(|(p, f)| (p.as_path(), f.as_str()))
        .collect();
    let mut bytes = store.upload_all(&files, CONCURRENCY)?;
    let (objects, table_bytes) = publish.finish(&local.output)?;
    bytes += table_bytes;
    let upload_s = started.elapsed().as_secs_f64();
    info!(
        "uploaded {objects} objects ({:.1} MB) to {} in {upload_s:.1}s",
        bytes as f64 / 1e6,
        store.url()
    );
    std::fs::remove_dir_all(&local.output).at(&local.output)?;
    Ok(Uploaded::Done {
        report: Box::new(prepared),
        objects,
        bytes,
        upload_s,
    })
}

/// What [`worker_to`] did.
pub enum WorkerUploaded {
    /// The part was prepared (or found in staging) and uploaded to `url`.
    Part {
        url: String,
        part: Box<PartManifest>,
        bytes: u64,
        upload_s: f64,
    },
    /// The part is already at `url`, whole, from these options: nothing done.
    PartThere {
        url: String,
        part: Box<PartManifest>,
    },
    /// The prefix already holds this data set, merged: nothing done.
    AlreadyThere(Box<PrepareReport>),
}

/// `PARTS_DIR/part-I-of-N`: a part's sub-prefix.
fn part_prefix(part: Partition) -> String {
    format!("{}/{}", parts::PARTS_DIR, part.dir_name())
}

/// The part at `prefix`, if its `part.json` is there, is this histoshard's
/// and from the options `fingerprint`, and every shard it lists is there at
/// its recorded size.
fn part_there(store: &Store, prefix: &str, fingerprint: &str) -> Result<Option<PartManifest>> {
    let objects: BTreeMap<String, u64> = store
        .list_under(prefix)?
        .into_iter()
        .map(|o| (o.name, o.size))
        .collect();
    let json = format!("{prefix}/{}", parts::PART_FILE);
    if !objects.contains_key(&json) {
        return Ok(None);
    }
    let dir = scratch()?;
    store.download(&json, &dir.path().join(parts::PART_FILE))?;
    let Ok(m) = parts::read_part(dir.path()) else {
        return Ok(None);
    };
    let whole = m.tool == "histoshard"
        && m.version == env!("CARGO_PKG_VERSION")
        && m.fingerprint == fingerprint
        && m.shards
            .iter()
            .all(|s| objects.get(&format!("{prefix}/{}", s.file)) == Some(&s.bytes));
    Ok(whole.then_some(m))
}

/// `prepare --worker-index I --num-workers N --output URL`: checks the
/// destination as [`prepare_to`] does, prepares the part into a local
/// staging folder ([`super::run_worker`]), then uploads it under
/// `URL/.histoshard-parts/part-I-of-N/`: its shards (each whole, as
/// [`Store::upload`] sends any file), its tables, and last `part.json`, so
/// that a part is complete exactly when its `part.json` is there. A part
/// already there, whole, from the same options, is not redone.
pub fn worker_to(
    url: &str,
    opts: &PrepareOptions,
    part: Partition,
    progress: &Progress,
) -> Result<WorkerUploaded> {
    let store = Store::open(url)?;
    let (local, fingerprint) = staging(url, opts, "\nworkers")?;
    if let Survey::AlreadyThere(r) = survey(&store, &fingerprint, opts.overwrite)? {
        info!("{} already holds this data set; nothing to do", store.url());
        return Ok(WorkerUploaded::AlreadyThere(r));
    }
    let prefix = part_prefix(part);
    let part_url = store.url_of(&prefix);
    if let Some(m) = part_there(&store, &prefix, &fingerprint)? {
        info!("{part_url} already holds this part; nothing to do");
        return Ok(WorkerUploaded::PartThere {
            url: part_url,
            part: Box::new(m),
        });
    }
    // A part.json at the store is there only while the part there is whole.
    let json = format!("{prefix}/{}", parts::PART_FILE);
    store.delete(&json)?;
    store.record_uploads(&part_url)?;
    let (dir, manifest) = match super::run_worker(&local, part, progress)? {
        super::WorkerOutcome::Part { dir, part } => (dir, part),
        super::WorkerOutcome::Complete(_) => {
            return Err(Error::output(
                &local.output,
                "the staging folder holds a complete data set, not parts; remove it",
            ));
        }
    };
    let started = Instant::now();
    let mut names: Vec<String> = manifest.shards.iter().map(|s| s.file.clone()).collect();
    let mut bytes = {
        let paths: Vec<PathBuf> = names.iter().map(|f| dir.join(f)).collect();
        let objects: Vec<String> = names.iter().map(|f| format!("{prefix}/{f}")).collect();
        let files: Vec<(&Path, &str)> = paths
            .iter()
            .zip(&objects)
            .map(|(p, o)| (p.as_path(), o.as_str()))
            .collect();
        store.upload_all(&files, CONCURRENCY)?
    };
    names.clear();
    names.push(parts::ROWS_FILE.into());
    if manifest.images_sha256.is_some() {
        names.push(IMAGES_PARQUET.into());
    }
    for name in &names {
        bytes += store.upload(&dir.join(name), &format!("{prefix}/{name}"))?;
    }
    crate::failpoint::reached("before-remote-part", 1);
    bytes += store.upload(&dir.join(parts::PART_FILE), &json)?;
    let upload_s = started.elapsed().as_secs_f64();
    info!(
        "uploaded part {} of {} ({:.1} MB) to {part_url} in {upload_s:.1}s",
        part.index,
        part.count,
        bytes as f64 / 1e6
    );
    // Only this part's folder: other workers may stage beside it on this machine.
    std::fs::remove_dir_all(&dir).at(&dir)?;
    let _ = std::fs::remove_dir(local.output.join(parts::PARTS_DIR));
    let _ = std::fs::remove_dir(&local.output);
    Ok(WorkerUploaded::Part {
        url: part_url,
        part: manifest,
        bytes,
        upload_s,
    })
}

/// What [`merge_at`] did.
pub struct MergedAt {
    pub report: PrepareReport,
    /// How many parts were merged (0: the prefix already held the data set).
    pub parts: u32,
    pub shards: usize,
    pub total_s: f64,
}

/// `merge URL`: the parts the workers uploaded under
/// `URL/.histoshard-parts/` become one data set at `URL`, the same objects a
/// one-machine `prepare --output URL` writes. Their small files
/// (`part.json`, rows, images) are downloaded into a local folder and
/// checked by the local merge's checks ([`merge::check`]), with the shards'
/// sizes taken from the store's listing; then, as a one-machine upload
/// publishes: the journal, the shards copied server-side from the parts
/// to their final names, the tables written by the local merge's code and
/// uploaded, `manifest.parquet` last; last the parts' objects are deleted.
pub fn merge_at(url: &str, overwrite: bool) -> Result<MergedAt> {
    let started = Instant::now();
    let store = Store::open(url)?;
    let names = listing(&store)?;
    let objects = store.list_under(parts::PARTS_DIR)?;
    let complete = match remote_report(&store, &names)? {
        Some(r) if names.contains_key(MANIFEST_PARQUET) && !names.contains_key(UPLOAD_JOURNAL) => {
            Some(r)
        }
        _ => None,
    };
    if objects.is_empty()
        && let Some(report) = complete
    {
        return Ok(MergedAt {
            report,
            parts: 0,
            shards: 0,
            total_s: started.elapsed().as_secs_f64(),
        });
    }
    // part-I-of-N → (file → size), for every part prefix.
    let mut found: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for o in &objects {
        let rel = o.name.strip_prefix(parts::PARTS_DIR).unwrap_or(&o.name);
        if let Some((part, file)) = rel.trim_start_matches('/').split_once('/')
            && Partition::parse_dir_name(part).is_some()
            && is_plain_name(file)
        {
            found
                .entry(part.to_string())
                .or_default()
                .insert(file.to_string(), o.size);
        }
    }
    let local = remote::cache_dir("merging", store.url());
    if local.exists() {
        std::fs::remove_dir_all(&local).at(&local)?;
    }
    let mut shard_sizes: BTreeMap<String, u64> = BTreeMap::new();
    for (part, files) in &found {
        let dir = local.join(parts::PARTS_DIR).join(part);
        std::fs::create_dir_all(&dir).at(&dir)?;
        for (file, size) in files {
            let name = format!("{}/{part}/{file}", parts::PARTS_DIR);
            if [parts::PART_FILE, parts::ROWS_FILE, IMAGES_PARQUET].contains(&file.as_str()) {
                store.download(&name, &dir.join(file))?;
            } else {
                shard_sizes.insert(format!("{part}/{file}"), *size);
            }
        }
    }
    let result = merge_staged(
        &store,
        &local,
        &found,
        &shard_sizes,
        complete,
        overwrite,
        started,
    );
    let _ = std::fs::remove_dir_all(&local);
    result
}

fn merge_staged(
    store: &Store,
    local: &Path,
    found: &BTreeMap<String, BTreeMap<String, u64>>,
    shard_sizes: &BTreeMap<String, u64>,
    complete: Option<PrepareReport>,
    overwrite: bool,
    started: Instant,
) -> Result<MergedAt> {
    let parts_url = store.url_of(parts::PARTS_DIR);
    let staged = parts::list_parts(local)?;
    // A merge interrupted while deleting the parts: the data set is there,
    // complete, and every part.json left is from it.
    if let Some(report) = &complete {
        let jsons: Vec<PartManifest> = staged
            .iter()
            .filter_map(|(_, dir)| parts::read_part(dir).ok())
            .collect();
        if !jsons.is_empty() && jsons.iter().all(|m| m.fingerprint == report.fingerprint) {
            delete_parts(store, found)?;
            return Ok(MergedAt {
                report: report.clone(),
                parts: 0,
                shards: 0,
                total_s: started.elapsed().as_secs_f64(),
            });
        }
    }
    let source = merge::Source {
        dir: local,
        remote: Some((store.url(), shard_sizes)),
    };
    let checked = merge::check(&source, staged)?;
    let n = checked.count();
    let fingerprint = checked.first().fingerprint.clone();
    let dest = match survey(store, &fingerprint, overwrite || checked.overwrite())? {
        Survey::AlreadyThere(report) => {
            delete_parts(store, found)?;
            return Ok(MergedAt {
                report: *report,
                parts: 0,
                shards: 0,
                total_s: started.elapsed().as_secs_f64(),
            });
        }
        Survey::Write(dest) => dest,
    };
    store.record_uploads(store.url())?;
    let shards = checked.shard_files();
    let publish = Publish::begin(store, dest, &fingerprint, &shards)?;
    let copy_started = Instant::now();
    let pairs: Vec<(String, String)> = checked
        .part_shards()
        .into_iter()
        .map(|(from, to)| (format!("{}/{from}", parts::PARTS_DIR), to))
        .collect();
    store.copy_all(&pairs, CONCURRENCY)?;
    let copy_s = copy_started.elapsed().as_secs_f64();
    let (report, _) = checked.write_data_set(local, started, copy_s)?;
    publish.finish(local)?;
    delete_parts(store, found)?;
    info!("merged {n} parts at {parts_url} into {}", store.url());
    Ok(MergedAt {
        report,
        parts: n,
        shards: shards.len(),
        total_s: started.elapsed().as_secs_f64(),
    })
}

/// Deletes every part's objects, its `part.json` last (a part is never
/// left looking whole with objects missing).
fn delete_parts(store: &Store, found: &BTreeMap<String, BTreeMap<String, u64>>) -> Result<()> {
    for (part, files) in found {
        let name = |f: &str| format!("{}/{part}/{f}", parts::PARTS_DIR);
        for file in files.keys().filter(|f| *f != parts::PART_FILE) {
            store.delete(&name(file))?;
        }
        store.delete(&name(parts::PART_FILE))?;
    }
    Ok(())
}

/// What a fetched folder holds: name → (size, entity tag).
type Fetched = BTreeMap<String, (u64, Option<String>)>;

/// Downloads the data set at `url` into its cache folder and returns the
/// folder. Refused (one line, naming the URL) when the prefix holds no
/// complete data set. With `fresh`, every file is downloaded again (what
/// `verify` checks is then the bytes in the store); otherwise a file whose
/// size and entity tag are those fetched before is kept.
pub fn fetch(url: &str, fresh: bool) -> Result<PathBuf> {
    let store = Store::open(url)?;
    let names = listing(&store)?;
    if !names.contains_key(MANIFEST_PARQUET) || !names.contains_key(REPORT_FILE) {
        return Err(Error::Remote {
            url: store.url().to_string(),
            message: format!(
                "no complete histoshard data set here (no {}): an upload that did not finish, or not a data set's prefix",
                if names.contains_key(REPORT_FILE) {
                    MANIFEST_PARQUET
                } else {
                    REPORT_FILE
                }
            ),
        });
    }
    let dir = remote::cache_dir("datasets", store.url());
    std::fs::create_dir_all(&dir).at(&dir)?;
    store.download(REPORT_FILE, &dir.join(REPORT_FILE))?;
    let report = super::read_report(&dir)?;
    let wanted: Vec<String> = FIXED_FILES
        .iter()
        .map(|f| f.to_string())
        .chain(shard_files(&report))
        .collect();
    let sidecar = dir.join(FETCHED_FILE);
    let mut fetched: Fetched =
        fsutil::read_limited(&sidecar, super::MAX_REPORT_BYTES, "a fetch record")
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
    // Files of another version of the data set go first.
    let keep: BTreeSet<&str> = wanted.iter().map(String::as_str).collect();
    for entry in std::fs::read_dir(&dir).at(&dir)? {
        let entry = entry.at(&dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if (FIXED_FILES.contains(&name.as_str()) || is_shard_name(&name))
            && !keep.contains(name.as_str())
        {
            std::fs::remove_file(entry.path()).at(entry.path())?;
            fetched.remove(&name);
        }
    }
    let (mut got, mut kept) = (0usize, 0usize);
    for name in &wanted {
        let Some(object) = names.get(name) else {
            if name == super::output::TIMINGS_FILE {
                continue;
            }
            return Err(Error::Remote {
                url: store.url_of(name),
                message: "missing: prepare.json lists it, the store does not have it (the data set is damaged; prepare it again)".into(),
            });
        };
        let path = dir.join(name);
        let same = fetched.get(name) == Some(&(object.size, object.e_tag.clone()))
            && std::fs::metadata(&path).is_ok_and(|m| m.len() == object.size);
        if name != REPORT_FILE && (fresh || !same) {
            fetched.remove(name);
            store.download(name, &path)?;
            got += 1;
        } else {
            kept += 1;
        }
        fetched.insert(name.clone(), (object.size, object.e_tag.clone()));
    }
    let text = serde_json::to_vec(&fetched).map_err(|e| Error::Config(e.to_string()))?;
    atomic::write(&sidecar, &text)?;
    info!(
        "{}: {got} files downloaded, {kept} already here → {}",
        store.url(),
        dir.display()
    );
    Ok(dir)
}

/// Downloads every object under `url` (sub-prefixes too) into a cache folder
/// for `prepare --input URL`, keeping files whose size and entity tag are
/// those fetched before; returns the folder.
pub fn fetch_input(url: &str) -> Result<PathBuf> {
    let store = Store::open(url)?;
    let objects = store.list_all()?;
    if objects.is_empty() {
        return Err(Error::Remote {
            url: store.url().to_string(),
            message: "no objects here: nothing to prepare".into(),
        });
    }
    let dir = remote::cache_dir("inputs", store.url());
    std::fs::create_dir_all(&dir).at(&dir)?;
    // Beside the folder, not in it: the input's layout sees only the objects.
    let sidecar = dir.with_extension("fetched.json");
    let mut fetched: Fetched =
        fsutil::read_limited(&sidecar, super::MAX_REPORT_BYTES, "a fetch record")
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
    // Objects removed from the store since the last fetch go here too.
    let listed: BTreeSet<&str> = objects.iter().map(|o| o.name.as_str()).collect();
    let gone: Vec<String> = fetched
        .keys()
        .filter(|n| !listed.contains(n.as_str()))
        .cloned()
        .collect();
    for name in gone {
        let path = dir.join(&name);
        if name.split('/').all(is_plain_name) && path.is_file() {
            std::fs::remove_file(&path).at(&path)?;
        }
        fetched.remove(&name);
    }
    for o in &objects {
        if o.name.split('/').any(|p| !is_plain_name(p)) {
            continue;
        }
        let path = dir.join(&o.name);
        let same = fetched.get(&o.name) == Some(&(o.size, o.e_tag.clone()))
            && std::fs::metadata(&path).is_ok_and(|m| m.len() == o.size);
        if !same {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).at(parent)?;
            }
            fetched.remove(&o.name);
            store.download(&o.name, &path)?;
        }
        fetched.insert(o.name.clone(), (o.size, o.e_tag.clone()));
    }
    let text = serde_json::to_vec(&fetched).map_err(|e| Error::Config(e.to_string()))?;
    atomic::write(&sidecar, &text)?;
    Ok(dir)
}

/// A temporary folder removed when dropped (no extra crate in the library).
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    use crate::error::{IoContext as _, Result};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> Result<Self> {
            use std::sync::atomic::{AtomicU64, Ordering};
            static N: AtomicU64 = AtomicU64::new(0);
            let path = std::env::temp_dir().join(format!(
                "histoshard-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).at(&path)?;
            Ok(Self(path))
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
