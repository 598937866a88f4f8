//! Writing files so that a file with its final name is always complete: write
//! to a hidden temporary name beside it, sync, rename.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
};

use crate::error::{IoContext, Result};

/// Suffix of files being written; a file with it is never complete.
pub const TMP_SUFFIX: &str = ".tmp";

/// `dir/.name{suffix}` for `dir/name`: hidden, so globs for the final names never match it.
pub fn hidden_sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}{suffix}"))
}

/// `dir/.name.tmp` for `dir/name`.
pub fn tmp_path(path: &Path) -> PathBuf {
    hidden_sibling(path, TMP_SUFFIX)
}

/// Whether `name` is a leftover of an interrupted atomic write.
pub fn is_leftover(name: &str) -> bool {
    name.starts_with('.')
        && (name.ends_with(TMP_SUFFIX) || name.ends_with(crate::shard::writer::PARTIAL_SUFFIX))
}

/// Syncs the temporary file and renames it into place.
pub fn commit(tmp: &Path, path: &Path) -> Result<()> {
    File::open(tmp).and_then(|f| f.sync_all()).at(tmp)?;
    fs::rename(tmp, path).at(path)
}

/// Writes `bytes` to `path` atomically.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    fs::write(&tmp, bytes).at(&tmp)?;
    commit(&tmp, path)
}
