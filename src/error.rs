//! One error type for the library. Every variant that concerns a file names it, so
//! the binary can print a single line a user can act on.

use std::path::{Path, PathBuf};

/// What went wrong, with the file it went wrong in.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused a read or write. (`cause` is part of
    /// the message rather than a `source`, so `{:#}` does not repeat it.)
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// An input file is malformed or inconsistent (bad CSV row, unknown grade, ...).
    #[error("{}: {message}", path.display())]
    Input { path: PathBuf, message: String },
    /// An image could not be decoded or is unusable (truncated, too large, too small).
    #[error("{}: {message}", path.display())]
    Image { path: PathBuf, message: String },
    /// A shard record is corrupt or does not match the schema or the manifest.
    #[error("{}: record {index}: {message}", path.display())]
    Record {
        path: PathBuf,
        index: u64,
        message: String,
    },
    /// Options that contradict each other or are out of range.
    #[error("invalid option: {0}")]
    Config(String),
    /// An object store refused or failed a request (missing bucket, refused
    /// credentials, network error), or a URL cannot be used.
    #[error("{url}: {message}")]
    Remote { url: String, message: String },
    /// The output folder cannot be used as asked (holds another data set, locked, ...).
    #[error("{}: {message}", path.display())]
    Output { path: PathBuf, message: String },
}

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            cause: source,
        }
    }
    pub fn input(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::Input {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }
    pub fn image(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::Image {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }
    pub fn record(path: impl AsRef<Path>, index: u64, message: impl Into<String>) -> Self {
        Error::Record {
            path: path.as_ref().to_path_buf(),
            index,
            message: message.into(),
        }
    }
    pub fn output(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::Output {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }
}

/// Attaches a path to `std::io::Result`s.
pub trait IoContext<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
