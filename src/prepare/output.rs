//! The output folder: one writer at a time (a lock file), no mixing with
//! another data set, the state that lets an interrupted run resume, and a
//! record of every file histoshard writes there, so that nothing else is
//! ever deleted.
//!
//! What histoshard wrote is known from its own records, never guessed from a
//! name: a complete data set's `prepare.json` lists its shards (the other
//! files have fixed names), and a run in progress first writes
//! `.histoshard-state/journal.json` — its fingerprint and the name of every
//! file it will write — before it writes any of them, so a killed run's files
//! are recorded too. A temporary file counts as recorded when its final name
//! is (`.NAME.tmp`, `.NAME.partial`). Files in the folder that histoshard
//! did not record are left alone; if one has a name this run would write (or
//! is a shard `verify` would trip over), the run is refused naming it,
//! `--overwrite` or not. A refused run changes nothing: the lock file it
//! created is removed again.
//!
//! A finished shard's manifest rows and file checksum go to `.histoshard-state/`
//! when the shard is renamed into place; a rerun with the same fingerprint
//! skips every shard whose file still has the recorded size and CRC-32C.

use std::{
    collections::BTreeSet,
    fs::{self, File, TryLockError},
    path::{Path, PathBuf},
};

use super::report::MAX_REPORT_BYTES;
pub use super::report::{REPORT_FILE, TIMINGS_FILE};
use crate::{
    atomic,
    error::{Error, IoContext, Result},
    fsutil,
    shard::{
        manifest::{IMAGES_PARQUET, MANIFEST_CSV, MANIFEST_PARQUET, ManifestRow},
        writer::{PARTIAL_SUFFIX, ShardSummary},
    },
};

pub const LOCK_FILE: &str = ".histoshard.lock";
pub const STATE_DIR: &str = ".histoshard-state";
pub const SCHEMA_FILE: &str = "features.json";
const JOURNAL_FILE: &str = "journal.json";
/// Every file of a data set besides its shards.
pub const FIXED_FILES: [&str; 6] = [
    SCHEMA_FILE,
    IMAGES_PARQUET,
    MANIFEST_CSV,
    REPORT_FILE,
    TIMINGS_FILE,
    MANIFEST_PARQUET,
];
/// How many names a refusal lists before "and N more".
const LISTED: usize = 8;

/// What the folder held when we opened it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    Nothing,
    /// An interrupted run with the same options: finished shards can be kept.
    Resumable,
    /// A complete data set made with the same options.
    Complete,
}

/// An output folder held for writing.
pub struct OutputDir {
    pub path: PathBuf,
    lock: Lock,
    fingerprint: String,
    pub existing: Existing,
}

/// `.histoshard-state/journal.json`: written before any file of a run.
#[derive(serde::Serialize, serde::Deserialize)]
struct Journal {
    fingerprint: String,
    /// Final names of every file the run (or one it replaces) writes here.
    files: Vec<String>,
}

/// A shard's record in the resume state.
#[derive(serde::Serialize, serde::Deserialize)]
struct ShardState {
    /// The run it was written by: a shard of another run is never kept.
    #[serde(default)]
    fingerprint: String,
    summary: ShardSummary,
    rows: Vec<ManifestRow>,
}

/// A bare file name: nothing read from a record may point out of the folder.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

fn is_shard_name(name: &str) -> bool {
    name.ends_with(".tfrecord") || name.ends_with(".tfrecord.gz")
}

/// The temporary names a file of this name is written under.
fn temporaries(name: &str) -> [String; 2] {
    [
        format!(".{name}{}", atomic::TMP_SUFFIX),
        format!(".{name}{PARTIAL_SUFFIX}"),
    ]
}

/// The file names a complete data set's `prepare.json` accounts for, if it is
/// histoshard's; `None` for anything else with that name.
fn report_files(dir: &Path) -> Option<(String, BTreeSet<String>)> {
    let report = super::report::read(dir).ok()?;
    if report.tool != "histoshard" {
        return None;
    }
    let shards = report
        .shards
        .values()
        .flatten()
        .map(|s| s.file.clone())
        .filter(|f| is_plain_name(f) && is_shard_name(f));
    let files = FIXED_FILES.iter().map(|f| f.to_string()).chain(shards);
    Some((report.fingerprint, files.collect()))
}

fn read_journal(state: &Path) -> Option<Journal> {
    let bytes =
        fsutil::read_limited(&state.join(JOURNAL_FILE), MAX_REPORT_BYTES, "a journal").ok()?;
    let mut j: Journal = serde_json::from_slice(&bytes).ok()?;
    j.files.retain(|f| is_plain_name(f));
    Some(j)
}

/// "a, b, c and 4 more".
fn list(names: &BTreeSet<String>) -> String {
    let shown: Vec<&str> = names.iter().take(LISTED).map(String::as_str).collect();
    match names.len().saturating_sub(LISTED) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

/// Size and CRC-32C (hex, as [`ShardSummary::crc32c`]) of a file.
fn file_crc32c(path: &Path) -> Result<(u64, String)> {
    let mut f = fsutil::open_regular(path)?;
    let (mut crc, mut bytes) = (0u32, 0u64);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).at(path)?;
        if n == 0 {
            return Ok((bytes, format!("{crc:08x}")));
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        bytes += n as u64;
    }
}

/// The lock file, held. Dropped, it is removed when this run created it or
/// went on to write (a refused run leaves a lock file it found as it was).
pub(crate) struct Lock {
    path: PathBuf,
    file: Option<File>,
    remove: bool,
}

impl Lock {
    /// Takes `dir`'s lock, or fails naming the folder if another process holds it.
    pub(crate) fn acquire(dir: &Path) -> Result<Self> {
        use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
        let path = dir.join(LOCK_FILE);
        let held = || {
            Error::output(
                dir,
                "another histoshard prepare is writing here (lock held); wait for it or choose another folder",
            )
        };
        let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
        // A finishing run removes its lock file; a lock taken on a file that
        // was removed meanwhile guards nothing, so check and try again.
        for _ in 0..16 {
            let (file, created) = match File::options()
                .write(true)
                .create_new(true)
                .custom_flags(flags)
                .open(&path)
            {
                Ok(f) => (f, true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    match File::options().write(true).custom_flags(flags).open(&path) {
                        Ok(f) => (f, false),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(_) => {
                            return Err(Error::output(
                                &path,
                                "is in the way: not a lock file histoshard can use (remove it)",
                            ));
                        }
                    }
                }
                Err(e) => {
                    return Err(Error::output(
                        dir,
                        format!("output folder is not writable: {e}"),
                    ));
                }
            };
            let meta = file.metadata().at(&path)?;
            if !meta.is_file() {
                return Err(Error::output(
                    &path,
                    "is in the way: not a lock file histoshard can use (remove it)",
                ));
            }
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Err(held()),
                Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
            let current = fs::symlink_metadata(&path).ok();
            if current.is_some_and(|m| m.ino() == meta.ino() && m.dev() == meta.dev()) {
                return Ok(Self {
                    path,
                    file: Some(file),
                    remove: created,
                });
            }
        }
        Err(held())
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if self.remove {
            let _ = fs::remove_file(&self.path);
        }
        self.file.take();
    }
}

impl OutputDir {
    /// Creates or opens `path` for a run whose options hash to `fingerprint`
    /// and which writes `shards` (file names) besides [`FIXED_FILES`].
    pub fn open(
        path: &Path,
        fingerprint: &str,
        shards: &[String],
        overwrite: bool,
    ) -> Result<Self> {
        atomic::check_folder(path)?;
        let created = !path.exists();
        fs::create_dir_all(path)
            .map_err(|e| Error::output(path, format!("cannot create output folder: {e}")))?;
        let lock = Lock::acquire(path)?;
        let planned: BTreeSet<String> = FIXED_FILES
            .iter()
            .map(|f| f.to_string())
            .chain(shards.iter().cloned())
            .collect();
        match Self::survey(path, fingerprint, &planned, overwrite) {
            Ok(plan) => {
                let mut dir = Self {
                    path: path.to_path_buf(),
                    lock,
                    fingerprint: fingerprint.to_string(),
                    existing: plan.existing,
                };
                if dir.existing != Existing::Complete {
                    dir.lock.remove = true;
                    dir.prepare(&planned, &plan, overwrite)?;
                }
                Ok(dir)
            }
            Err(e) => {
                drop(lock);
                if created {
                    let _ = fs::remove_dir(path);
                }
                Err(e)
            }
        }
    }

    /// Reads what the folder holds and decides; changes nothing.
    fn survey(
        path: &Path,
        fingerprint: &str,
        planned: &BTreeSet<String>,
        overwrite: bool,
    ) -> Result<Plan> {
        let state = path.join(STATE_DIR);
        let journal = read_journal(&state);
        let report = report_files(path);
        let mut recorded: BTreeSet<String> = BTreeSet::new();
        if let Some(j) = &journal {
            recorded.extend(j.files.iter().cloned());
        }
        if let Some((_, files)) = &report {
            recorded.extend(files.iter().cloned());
        }
        let ours: BTreeSet<String> = recorded
            .iter()
            .flat_map(|f| temporaries(f).into_iter().chain([f.clone()]))
            .collect();
        let written: BTreeSet<String> = planned
            .iter()
            .flat_map(|f| temporaries(f).into_iter().chain([f.clone()]))
            .collect();
        let mut in_the_way = BTreeSet::new();
        for entry in fs::read_dir(path).at(path)? {
            let entry = entry.at(path)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let foreign = !ours.contains(&name);
            if name == STATE_DIR {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    in_the_way.insert(name);
                }
            } else if foreign && (written.contains(&name) || is_shard_name(&name)) {
                in_the_way.insert(name);
            }
        }
        if !in_the_way.is_empty() {
            return Err(Error::output(
                path,
                format!(
                    "holds files histoshard did not write that are in the way: {}; move them elsewhere or choose another folder (--overwrite removes only files histoshard recorded writing)",
                    list(&in_the_way)
                ),
            ));
        }
        let same_report = report.as_ref().is_some_and(|(fp, _)| fp == fingerprint);
        let existing = match (&journal, overwrite) {
            (_, true) => Existing::Nothing,
            (Some(j), false) if j.fingerprint == fingerprint => Existing::Resumable,
            (Some(_), false) => {
                return Err(Error::output(
                    path,
                    "holds an interrupted histoshard run made with other options or inputs; rerun it with the same options to resume, or pass --overwrite to discard it",
                ));
            }
            (None, false) if same_report && path.join(MANIFEST_PARQUET).is_file() => {
                Existing::Complete
            }
            // Its manifest is gone: written again from scratch.
            (None, false) if same_report => Existing::Nothing,
            (None, false) if report.is_some() => {
                return Err(Error::output(
                    path,
                    "already holds a histoshard data set made with other options or inputs (prepare.json); pass --overwrite to replace it (only the files its prepare.json lists are removed), or choose another folder",
                ));
            }
            (None, false) => Existing::Nothing,
        };
        Ok(Plan { existing, recorded })
    }

    /// Records what this run writes, then removes what earlier runs left that
    /// is not part of it: their temporary files, files of theirs this run
    /// does not write, and with `--overwrite` every file of theirs.
    fn prepare(&self, planned: &BTreeSet<String>, plan: &Plan, overwrite: bool) -> Result<()> {
        let state = self.path.join(STATE_DIR);
        fs::create_dir_all(&state).at(&state)?;
        let journal = Journal {
            fingerprint: self.fingerprint.clone(),
            files: planned.union(&plan.recorded).cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&journal)
            .map_err(|e| Error::output(&state, e.to_string()))?;
        atomic::write(&state.join(JOURNAL_FILE), &bytes)?;
        if plan.existing == Existing::Nothing {
            // Shard states of another run (the journal file is the only other entry).
            for entry in fs::read_dir(&state).at(&state)? {
                let entry = entry.at(&state)?;
                if entry.file_name() != JOURNAL_FILE {
                    fs::remove_file(entry.path()).at(entry.path())?;
                }
            }
        }
        for name in &plan.recorded {
            let keep = !overwrite && planned.contains(name) && plan.existing == Existing::Resumable;
            let mut doomed = temporaries(name).to_vec();
            if !keep {
                doomed.push(name.clone());
            }
            for n in doomed {
                let p = self.path.join(&n);
                if fs::symlink_metadata(&p).is_ok() {
                    fs::remove_file(&p).at(&p)?;
                }
            }
        }
        if overwrite {
            // `inspect`'s sheet, recorded in the picture itself.
            let sheet = self.path.join(crate::dataset::SHEET_FILE);
            if crate::inspect::sheet::drawn_by(&sheet, "inspect") {
                fs::remove_file(&sheet).at(&sheet)?;
            }
        }
        Ok(())
    }

    /// A shard finished by an earlier run, if its file is intact.
    pub fn finished_shard(
        &self,
        shard_file: &str,
        expected_records: u64,
    ) -> Option<(ShardSummary, Vec<ManifestRow>)> {
        if self.existing != Existing::Resumable {
            return None;
        }
        let state: ShardState = serde_json::from_slice(
            &fsutil::read_limited(
                &self.states().path_of(shard_file),
                MAX_REPORT_BYTES,
                "a shard state",
            )
            .ok()?,
        )
        .ok()?;
        let intact = state.fingerprint == self.fingerprint
            && state.summary.records == expected_records
            && state.rows.len() as u64 == expected_records
            && file_crc32c(&self.path.join(shard_file)).ok()?
                == (state.summary.bytes, state.summary.crc32c.clone());
        intact.then_some((state.summary, state.rows))
    }

    /// Where finished shards are recorded for resumption.
    pub fn states(&self) -> ShardStates {
        ShardStates {
            dir: self.path.join(STATE_DIR),
            fingerprint: self.fingerprint.clone(),
        }
    }

    /// Drops the resume state and the lock: the folder now holds a complete
    /// data set, whose `prepare.json` records its files.
    pub fn finish(self) -> Result<()> {
        if self.existing != Existing::Complete {
            let state = self.path.join(STATE_DIR);
            if state.exists() {
                fs::remove_dir_all(&state).at(&state)?;
            }
        }
        Ok(())
    }
}

/// What [`OutputDir::survey`] found.
struct Plan {
    existing: Existing,
    /// Files earlier runs recorded writing here.
    recorded: BTreeSet<String>,
}

/// The resume state of an output folder, owned so that another thread can
/// record shards while the writer goes on.
pub struct ShardStates {
    dir: PathBuf,
    fingerprint: String,
}

impl ShardStates {
    fn path_of(&self, shard_file: &str) -> PathBuf {
        self.dir.join(format!("{shard_file}.json"))
    }

    /// Remembers a finished shard for resumption.
    pub fn record(&self, summary: &ShardSummary, rows: &[ManifestRow]) -> Result<()> {
        let state = ShardState {
            fingerprint: self.fingerprint.clone(),
            summary: summary.clone(),
            rows: rows.to_vec(),
        };
        let bytes =
            serde_json::to_vec(&state).map_err(|e| Error::output(&self.dir, e.to_string()))?;
        atomic::write(&self.path_of(&summary.file), &bytes)
    }
}
