//! The output folder: one writer at a time (a lock file), no mixing with
//! another data set, and the state that lets an interrupted run resume.
//!
//! A finished shard's manifest rows and file checksum go to `.histoshard-state/`
//! when the shard is renamed into place; a rerun with the same fingerprint
//! skips every shard whose file still has the recorded size and CRC-32C.

use std::{
    fs::{self, File, TryLockError},
    path::{Path, PathBuf},
};

use super::report::MAX_REPORT_BYTES;
use crate::{
    atomic,
    error::{Error, IoContext, Result},
    fsutil,
    shard::{
        manifest::{IMAGES_PARQUET, MANIFEST_CSV, MANIFEST_PARQUET, ManifestRow},
        writer::ShardSummary,
    },
};

pub const LOCK_FILE: &str = ".histoshard.lock";
pub const STATE_DIR: &str = ".histoshard-state";
pub const REPORT_FILE: &str = "prepare.json";
pub const SCHEMA_FILE: &str = "features.json";
const FINGERPRINT_FILE: &str = "fingerprint";

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
    lock: Option<File>,
    pub existing: Existing,
}

/// A shard's record in the resume state.
#[derive(serde::Serialize, serde::Deserialize)]
struct ShardState {
    summary: ShardSummary,
    rows: Vec<ManifestRow>,
}

fn is_ours(name: &str) -> bool {
    name.ends_with(".tfrecord")
        || name.ends_with(".tfrecord.gz")
        || [
            MANIFEST_PARQUET,
            MANIFEST_CSV,
            IMAGES_PARQUET,
            REPORT_FILE,
            SCHEMA_FILE,
            crate::inspect::SHEET_FILE,
        ]
        .contains(&name)
}

fn read_fingerprint(path: &Path) -> Option<String> {
    fsutil::read_text_limited(path, 4096, "a fingerprint")
        .ok()
        .map(|s| s.trim().to_string())
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

impl OutputDir {
    /// Creates or opens `path` for a run whose options hash to `fingerprint`.
    pub fn open(path: &Path, fingerprint: &str, overwrite: bool) -> Result<Self> {
        fs::create_dir_all(path)
            .map_err(|e| Error::output(path, format!("cannot create output folder: {e}")))?;
        let lock_path = path.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::output(path, format!("output folder is not writable: {e}")))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::output(
                    path,
                    "another histoshard prepare is writing here (lock held); wait for it or choose another folder",
                ));
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&lock_path, e)),
        }
        let mut dir = Self {
            path: path.to_path_buf(),
            lock: Some(lock),
            existing: Existing::Nothing,
        };
        dir.remove_partials()?;

        let state_fp = read_fingerprint(&path.join(STATE_DIR).join(FINGERPRINT_FILE));
        let complete_fp = path
            .join(MANIFEST_PARQUET)
            .exists()
            .then(|| dir.complete_fingerprint())
            .flatten();
        let has_ours = fs::read_dir(path)
            .at(path)?
            .filter_map(|e| e.ok())
            .any(|e| is_ours(&e.file_name().to_string_lossy()));
        dir.existing = if overwrite {
            dir.clear()?;
            Existing::Nothing
        } else if complete_fp.as_deref() == Some(fingerprint) {
            Existing::Complete
        } else if state_fp.as_deref() == Some(fingerprint) {
            Existing::Resumable
        } else if state_fp.is_some() {
            return Err(Error::output(
                path,
                "holds an interrupted run made with other options or inputs; rerun with the same options to resume, or pass --overwrite",
            ));
        } else if has_ours {
            return Err(Error::output(
                path,
                "already holds a data set (shards, manifest or prepare.json); pass --overwrite to replace it, or choose an empty folder",
            ));
        } else {
            Existing::Nothing
        };
        if dir.existing != Existing::Complete {
            let state = path.join(STATE_DIR);
            fs::create_dir_all(&state).at(&state)?;
            atomic::write(&state.join(FINGERPRINT_FILE), fingerprint.as_bytes())?;
        }
        Ok(dir)
    }

    fn complete_fingerprint(&self) -> Option<String> {
        let path = self.path.join(REPORT_FILE);
        let text = fsutil::read_text_limited(&path, MAX_REPORT_BYTES, "a prepare.json").ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v.get("fingerprint")?.as_str().map(str::to_string)
    }

    /// Deletes what an interrupted writer left half-written.
    fn remove_partials(&self) -> Result<()> {
        for entry in fs::read_dir(&self.path)
            .at(&self.path)?
            .filter_map(|e| e.ok())
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if atomic::is_leftover(&name) {
                fs::remove_file(entry.path()).at(entry.path())?;
            }
        }
        Ok(())
    }

    /// Removes every file a previous run wrote (and nothing else).
    fn clear(&self) -> Result<()> {
        for entry in fs::read_dir(&self.path)
            .at(&self.path)?
            .filter_map(|e| e.ok())
        {
            if is_ours(&entry.file_name().to_string_lossy()) {
                fs::remove_file(entry.path()).at(entry.path())?;
            }
        }
        let state = self.path.join(STATE_DIR);
        if state.exists() {
            fs::remove_dir_all(&state).at(&state)?;
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
        let intact = state.summary.records == expected_records
            && state.rows.len() as u64 == expected_records
            && file_crc32c(&self.path.join(shard_file)).ok()?
                == (state.summary.bytes, state.summary.crc32c.clone());
        intact.then_some((state.summary, state.rows))
    }

    /// Where finished shards are recorded for resumption.
    pub fn states(&self) -> ShardStates {
        ShardStates {
            dir: self.path.join(STATE_DIR),
        }
    }

    /// Drops the resume state and the lock: the folder now holds a complete data set.
    pub fn finish(mut self) -> Result<()> {
        let state = self.path.join(STATE_DIR);
        if state.exists() {
            fs::remove_dir_all(&state).at(&state)?;
        }
        self.lock.take();
        let _ = fs::remove_file(self.path.join(LOCK_FILE));
        Ok(())
    }
}

/// The resume state of an output folder, owned so that another thread can
/// record shards while the writer goes on.
pub struct ShardStates {
    dir: PathBuf,
}

impl ShardStates {
    fn path_of(&self, shard_file: &str) -> PathBuf {
        self.dir.join(format!("{shard_file}.json"))
    }

    /// Remembers a finished shard for resumption.
    pub fn record(&self, summary: &ShardSummary, rows: &[ManifestRow]) -> Result<()> {
        let state = ShardState {
            summary: summary.clone(),
            rows: rows.to_vec(),
        };
        let bytes =
            serde_json::to_vec(&state).map_err(|e| Error::output(&self.dir, e.to_string()))?;
        atomic::write(&self.path_of(&summary.file), &bytes)
    }
}
