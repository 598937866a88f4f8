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

/// Syncs the temporary file and renames it into place; on failure (a full disk
/// fails the sync) the temporary file is removed, so nothing is left behind.
pub fn commit(tmp: &Path, path: &Path) -> Result<()> {
    let result = File::open(tmp)
        .and_then(|f| f.sync_all())
        .at(tmp)
        .and_then(|()| fs::rename(tmp, path).at(path));
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

/// Writes `bytes` to `path` atomically.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    if let Err(e) = fs::write(&tmp, bytes).at(&tmp) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    commit(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A non-empty folder where the file should go: the rename fails.
        let path = dir.path().join("taken");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inside"), b"x").unwrap();
        let err = write(&path, b"data").unwrap_err();
        assert!(err.to_string().contains("taken"), "{err}");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["taken"]);
    }
}
