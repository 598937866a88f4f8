//! Reading the files users name or folders hold: regular files only, and with a
//! byte limit that counts the bytes actually read.
//!
//! A path can name a FIFO (opening it blocks until a writer comes; reading it
//! never ends), a character device (`/dev/zero` reports 0 bytes and never
//! ends), a socket or a folder, directly or through a symlink; and a regular
//! file's reported length says nothing about what `/proc`-like files yield.
//! So every reader here:
//! 1. looks at the path's type (symlinks followed) before opening it, so a
//!    socket or device is never opened and the message names what it is;
//! 2. opens with `O_NONBLOCK`, so a FIFO swapped in after that look does not
//!    block the open, then checks the opened file's own type;
//! 3. reads at most `limit + 1` bytes and refuses the file when it got more.
//!
//! Errors are one line naming the file: `x.xml: not a regular file (FIFO)`,
//! `Grade.csv: more than 16 MiB, too large for a Grade.csv (limit 16 MiB)`.

use std::fs::{File, FileType, Metadata};
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// One mebibyte, for limits.
pub const MIB: u64 = 1 << 20;

/// What a file that is not a regular file is, for messages.
pub fn kind_name(ft: FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "FIFO";
        }
        if ft.is_socket() {
            return "socket";
        }
        if ft.is_char_device() {
            return "character device";
        }
        if ft.is_block_device() {
            return "block device";
        }
    }
    if ft.is_dir() {
        "folder"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_file() {
        "regular file"
    } else {
        "special file"
    }
}

/// `<path>: not a regular file (FIFO)`.
pub fn not_regular(path: &Path, ft: FileType) -> Error {
    Error::input(path, format!("not a regular file ({})", kind_name(ft)))
}

/// A byte count for messages: `16 MiB`, `1.5 GiB`, `300 bytes`.
pub fn bytes_text(n: u64) -> String {
    const GIB: u64 = 1 << 30;
    let fmt = |v: f64, unit: &str| {
        if v.fract() == 0.0 {
            format!("{v:.0} {unit}")
        } else {
            format!("{v:.1} {unit}")
        }
    };
    if n >= GIB {
        fmt(n as f64 / GIB as f64, "GiB")
    } else if n >= MIB {
        fmt(n as f64 / MIB as f64, "MiB")
    } else if n >= 1024 {
        fmt(n as f64 / 1024.0, "KiB")
    } else {
        format!("{n} bytes")
    }
}

fn open_error(path: &Path, e: std::io::Error) -> Error {
    if e.kind() == ErrorKind::NotFound {
        Error::input(path, "not found")
    } else {
        Error::io(path, e)
    }
}

/// The metadata of `path` (symlinks followed) when it is a regular file;
/// otherwise `not found` or `not a regular file (<what it is>)`.
pub fn regular_metadata(path: &Path) -> Result<Metadata> {
    let md = std::fs::metadata(path).map_err(|e| open_error(path, e))?;
    if !md.is_file() {
        return Err(not_regular(path, md.file_type()));
    }
    Ok(md)
}

/// Opens `path` for reading when it is a regular file (see the module doc):
/// never blocks on a FIFO, never opens a device or socket.
pub fn open_regular(path: &Path) -> Result<File> {
    regular_metadata(path)?;
    let file = open_nonblocking(path).map_err(|e| open_error(path, e))?;
    let md = file.metadata().at(path)?;
    if !md.is_file() {
        return Err(not_regular(path, md.file_type()));
    }
    blocking_again(&file).at(path)?;
    Ok(file)
}

#[cfg(unix)]
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    File::open(path)
}

/// Clears `O_NONBLOCK` again (it means nothing for regular files on Linux,
/// but other systems and file systems may differ).
#[cfg(unix)]
fn blocking_again(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a file descriptor this `File` owns; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(unix))]
fn blocking_again(_: &File) -> std::io::Result<()> {
    Ok(())
}

/// `<path>: more than 16 MiB, too large for <what> (limit 16 MiB)`.
pub fn too_large(path: &Path, limit: u64, what: &str) -> Error {
    let l = bytes_text(limit);
    Error::input(
        path,
        format!("more than {l}, too large for {what} (limit {l})"),
    )
}

/// Reads all of `path`, a regular file, refusing it once more than `limit`
/// bytes have been read (`what` names the kind of file in that message:
/// `"an annotation"`). The size the file reports is only a hint for the
/// first allocation.
pub fn read_limited(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let file = open_regular(path)?;
    read_open_limited(file, path, limit, what)
}

/// As [`read_limited`], for a file already opened with [`open_regular`].
pub fn read_open_limited(file: File, path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let hint = file.metadata().map(|m| m.len()).unwrap_or(0);
    // usize::MAX only where usize is narrower than u64; the read stops at `limit + 1` anyway.
    let first = usize::try_from(hint.min(limit).saturating_add(1)).unwrap_or(usize::MAX);
    let mut bytes = Vec::with_capacity(first.min(64 << 20));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .at(path)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(path, limit, what));
    }
    Ok(bytes)
}

/// As [`read_limited`], for UTF-8 text (a leading BOM is kept).
pub fn read_text_limited(path: &Path, limit: u64, what: &str) -> Result<String> {
    let bytes = read_limited(path, limit, what)?;
    String::from_utf8(bytes).map_err(|e| {
        Error::input(
            path,
            format!(
                "not UTF-8 text (invalid byte at offset {}); save it as UTF-8",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// The canonical form of `path` even when it does not exist yet: its
/// longest existing ancestor canonicalised (symlinks resolved), the rest
/// appended with `.` and `..` resolved lexically.
pub fn canonical_lenient(path: &Path) -> PathBuf {
    use std::path::Component;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let parts: Vec<Component> = abs.components().collect();
    for n in (1..=parts.len()).rev() {
        let prefix: PathBuf = parts[..n].iter().collect();
        if let Ok(mut out) = std::fs::canonicalize(&prefix) {
            for part in &parts[n..] {
                match part {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::Normal(p) => out.push(p),
                    _ => {}
                }
            }
            return out;
        }
    }
    abs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_are_read_and_limits_count_bytes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.txt");
        std::fs::write(&p, b"12345").unwrap();
        assert_eq!(read_limited(&p, 5, "a test file").unwrap(), b"12345");
        let e = read_limited(&p, 4, "a test file").unwrap_err().to_string();
        assert!(
            e.ends_with("a.txt: more than 4 bytes, too large for a test file (limit 4 bytes)"),
            "{e}"
        );
        let e = read_limited(&d.path().join("nope"), 4, "x")
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("nope: not found"), "{e}");
        let e = read_limited(d.path(), 4, "x").unwrap_err().to_string();
        assert!(e.ends_with("not a regular file (folder)"), "{e}");
        std::fs::write(&p, b"ok\xff").unwrap();
        let e = read_text_limited(&p, 10, "x").unwrap_err().to_string();
        assert!(
            e.contains("not UTF-8 text (invalid byte at offset 2)"),
            "{e}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn devices_fifos_and_sockets_are_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let zero = d.path().join("zero.xml");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let e = read_limited(&zero, 1 << 20, "x").unwrap_err().to_string();
        assert!(
            e.ends_with("zero.xml: not a regular file (character device)"),
            "{e}"
        );

        let fifo = d.path().join("pipe.csv");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_limited(&fifo, 1 << 20, "x").unwrap_err().to_string();
        assert!(e.ends_with("pipe.csv: not a regular file (FIFO)"), "{e}");
        // Opened directly (the check before the open skipped): still no block.
        let f = open_nonblocking(&fifo).unwrap();
        assert!(!f.metadata().unwrap().is_file());

        let sock = d.path().join("s.png");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let e = open_regular(&sock).unwrap_err().to_string();
        assert!(e.ends_with("s.png: not a regular file (socket)"), "{e}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn proc_files_reporting_zero_bytes_are_still_limited() {
        // /proc files say they are empty regular files; the limit counts what is read.
        let p = Path::new("/proc/self/maps");
        if std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() == 0) {
            let e = read_limited(p, 8, "x").unwrap_err().to_string();
            assert!(e.contains("more than 8 bytes"), "{e}");
        }
    }

    #[test]
    fn canonical_lenient_handles_missing_tails() {
        let d = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(d.path()).unwrap();
        assert_eq!(canonical_lenient(d.path()), root);
        assert_eq!(
            canonical_lenient(&d.path().join("new/../out/x")),
            root.join("out/x")
        );
    }

    #[test]
    fn byte_counts_read_well() {
        assert_eq!(bytes_text(16 << 20), "16 MiB");
        assert_eq!(bytes_text(3 << 29), "1.5 GiB");
        assert_eq!(bytes_text(300), "300 bytes");
    }
}
