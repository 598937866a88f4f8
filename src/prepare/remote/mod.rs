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
//! **Multipart uploads left open**: each multipart upload's id is recorded in
//! the cache before its first part is sent ([`Store::record_uploads`]); each
//! command above first aborts those an earlier, cut run of it left.
//!
//!
//! Workers and the merge at a URL: [`workers`]; reading a data set at a URL: [`fetch`].

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Instant,
};

use tracing::info;

mod fetch;
mod workers;

pub use fetch::{fetch, fetch_input};
pub use workers::{MergedAt, WorkerUploaded, merge_at, worker_to};

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
