//! Writing files so that a file with its final name is always complete: write
//! to a hidden temporary name beside it, sync, rename.
//!
//! A rename replaces whatever has the final name, so before renaming (and
//! before any work, through [`check_target`]) a final name that exists and is
//! not a regular file is refused: a symbolic link would be replaced by a file
//! rather than written through (the user asked for one thing and got
//! another), and a FIFO, device node or socket is not something to replace
//! with a file at all (as root, `--sheet /dev/full` replaced the device). The
//! temporary name is opened without following a symbolic link and without
//! blocking on a FIFO, so nothing already there is written through.

use std::{
    fs::{self, File},
    io::Write as _,
    path::{Path, PathBuf},
};

use crate::error::{Error, IoContext, Result};

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

/// What a directory entry that is not a regular file is, in words.
fn kind_of(meta: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    let t = meta.file_type();
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Refuses a file to be written at `path` (a file histoshard replaces
/// atomically) when something other than a regular file is there: a symbolic
/// link (refused, not followed: the rename would replace the link itself), a
/// folder, a FIFO, a device node or a socket. Also refuses a path without a
/// file name or whose folder does not exist, so a user-named output fails
/// before any work rather than after it.
pub fn check_target(path: &Path) -> Result<()> {
    if path.file_name().is_none() {
        return Err(Error::output(path, "not a file name to write to"));
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => Ok(()),
        Ok(meta) => Err(Error::output(
            path,
            format!(
                "exists and is {}, not a regular file; refusing to replace it (name a new or regular file)",
                kind_of(&meta)
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            if parent.is_dir() {
                Ok(())
            } else {
                Err(Error::output(
                    path,
                    format!("its folder {} does not exist", parent.display()),
                ))
            }
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Refuses an output folder (created if missing, files written inside it) when
/// `path` exists and is not a folder, or is a symbolic link to nothing. A
/// symbolic link to a folder is followed: nothing replaces it, files go inside.
pub fn check_folder(path: &Path) -> Result<()> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(meta) => Err(Error::output(
            path,
            format!(
                "exists and is {}, not a folder",
                match kind_of(&meta) {
                    "not a regular file" => "a file",
                    k => k,
                }
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if fs::symlink_metadata(path).is_ok() {
                Err(Error::output(
                    path,
                    "is a symbolic link to nothing; refusing to write through it",
                ))
            } else {
                Ok(())
            }
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Opens `dir/.name{suffix}` for writing, empty, as the temporary file of
/// `path`: refused (by [`check_target`]) when `path` is not a regular file,
/// and when what has the temporary name is not a regular file (a symbolic
/// link is not followed, a FIFO does not block). A regular file there is a
/// leftover of an interrupted write of the same file, and is replaced.
pub fn create_hidden(path: &Path, suffix: &str) -> Result<(File, PathBuf)> {
    use std::os::unix::fs::OpenOptionsExt as _;
    check_target(path)?;
    let tmp = hidden_sibling(path, suffix);
    let file = File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => Error::output(
                &tmp,
                "is a symbolic link; refusing to write through it (remove it)",
            ),
            Some(libc::ENXIO) => Error::output(&tmp, "is a FIFO; refusing to write to it"),
            _ => Error::io(&tmp, e),
        })?;
    let meta = file.metadata().at(&tmp)?;
    if !meta.file_type().is_file() {
        return Err(Error::output(
            &tmp,
            format!("is {}; refusing to write to it", kind_of(&meta)),
        ));
    }
    file.set_len(0).at(&tmp)?;
    // O_NONBLOCK only mattered for opening a FIFO; regular files ignore it.
    Ok((file, tmp))
}

/// The temporary name of `path`, free for a writer that creates it itself
/// (and refuses to replace anything): checked as [`create_tmp`] checks it, a
/// leftover regular file there removed.
pub fn free_tmp(path: &Path) -> Result<PathBuf> {
    check_target(path)?;
    let tmp = tmp_path(path);
    match fs::symlink_metadata(&tmp) {
        Ok(meta) if meta.file_type().is_file() => fs::remove_file(&tmp).at(&tmp)?,
        Ok(meta) => {
            return Err(Error::output(
                &tmp,
                format!("is {}; refusing to write to it", kind_of(&meta)),
            ));
        }
        Err(_) => {}
    }
    Ok(tmp)
}

/// [`create_hidden`] with the `.tmp` suffix.
pub fn create_tmp(path: &Path) -> Result<(File, PathBuf)> {
    create_hidden(path, TMP_SUFFIX)
}

/// Syncs the temporary file and renames it into place, unless what has the
/// final name now is not a regular file; on failure (a full disk fails the
/// sync) the temporary file is removed, so nothing is left behind.
pub fn commit(tmp: &Path, path: &Path) -> Result<()> {
    let result = File::open(tmp)
        .and_then(|f| f.sync_all())
        .at(tmp)
        .and_then(|()| check_target(path))
        .and_then(|()| fs::rename(tmp, path).at(path));
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

/// Writes `bytes` to `path` atomically.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let (mut file, tmp) = create_tmp(path)?;
    if let Err(e) = file.write_all(bytes).at(&tmp) {
        drop(file);
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    drop(file);
    commit(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A non-empty folder where the file should go: refused, nothing written.
        let path = dir.path().join("taken");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inside"), b"x").unwrap();
        let err = write(&path, b"data").unwrap_err();
        assert!(err.to_string().contains("taken"), "{err}");
        assert!(err.to_string().contains("a folder"), "{err}");
        assert_eq!(names(dir.path()), ["taken"]);
    }

    #[test]
    fn only_regular_files_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.txt");
        fs::write(&target, b"theirs").unwrap();
        let link = dir.path().join("link.txt");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = write(&link, b"ours").unwrap_err().to_string();
        assert!(
            err.contains("link.txt") && err.contains("symbolic link"),
            "{err}"
        );
        assert_eq!(fs::read(&target).unwrap(), b"theirs");
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );

        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = write(&fifo, b"ours").unwrap_err().to_string();
        assert!(err.contains("a FIFO"), "{err}");

        let err = check_target(Path::new("/dev/null"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("character device"), "{err}");
        let err = check_target(&dir.path().join("no/such/dir/x.png"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");

        // A regular file is replaced; no temporary file is left.
        write(&target, b"ours").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"ours");
        assert_eq!(names(dir.path()), ["fifo", "link.txt", "target.txt"]);
    }

    #[test]
    fn a_temporary_name_that_is_a_link_or_fifo_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        let out = dir.path().join("out.csv");
        std::os::unix::fs::symlink(&victim, tmp_path(&out)).unwrap();
        let err = write(&out, b"data").unwrap_err().to_string();
        assert!(
            err.contains(".out.csv.tmp") && err.contains("symbolic link"),
            "{err}"
        );
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert!(!out.exists());

        let out2 = dir.path().join("two.csv");
        let c = std::ffi::CString::new(tmp_path(&out2).to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = write(&out2, b"data").unwrap_err().to_string();
        assert!(err.contains("FIFO"), "{err}");

        // A leftover regular temporary file is replaced.
        let out3 = dir.path().join("three.csv");
        fs::write(tmp_path(&out3), b"stale stale stale").unwrap();
        write(&out3, b"new").unwrap();
        assert_eq!(fs::read(&out3).unwrap(), b"new");
        assert!(!tmp_path(&out3).exists());

        // For a writer that creates the temporary file itself: a leftover is
        // removed, a link or FIFO refused.
        fs::write(tmp_path(&out3), b"stale").unwrap();
        assert_eq!(free_tmp(&out3).unwrap(), tmp_path(&out3));
        assert!(!tmp_path(&out3).exists());
        assert!(
            free_tmp(&out)
                .unwrap_err()
                .to_string()
                .contains("symbolic link")
        );
        assert!(free_tmp(&out2).unwrap_err().to_string().contains("FIFO"));
    }

    #[test]
    fn folders_must_be_folders() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(
            check_folder(&file)
                .unwrap_err()
                .to_string()
                .contains("a file")
        );
        let to_dir = dir.path().join("to-dir");
        std::os::unix::fs::symlink(dir.path(), &to_dir).unwrap();
        check_folder(&to_dir).unwrap();
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nothing"), &dangling).unwrap();
        assert!(
            check_folder(&dangling)
                .unwrap_err()
                .to_string()
                .contains("to nothing")
        );
        check_folder(&dir.path().join("new")).unwrap();
    }
}
