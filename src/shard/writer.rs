//! Writing one shard file. Records go to a hidden `.NAME.partial` file that is
//! renamed to its final name only once complete and flushed to disk, so a file
//! with a shard's name is always a whole shard.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use flate2::{GzBuilder, write::GzEncoder};

use super::Compression;
use crate::error::{Error, IoContext, Result};

/// Suffix of shards being written; files with it are never complete.
pub const PARTIAL_SUFFIX: &str = ".partial";

/// Where a record landed, for the manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordLocation {
    /// 0-based position in the shard.
    pub index: u64,
    /// Byte offset of the record's frame in the (uncompressed) shard stream.
    pub offset: u64,
}

/// A finished shard.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardSummary {
    pub file: String,
    pub records: u64,
    /// Size of the file on disk.
    pub bytes: u64,
    /// CRC-32C of the file on disk (hex), so a resumed run can trust a shard
    /// it skips. A checksum, not a digest: it guards against truncation and
    /// damage; the manifest's per-record sha256 is what `verify` checks.
    /// (Hashing every shard with sha256 as well cost ~5% of `prepare`'s CPU.)
    pub crc32c: String,
}

enum Sink {
    Plain(HashingWriter<BufWriter<File>>),
    Gzip(Box<GzEncoder<HashingWriter<BufWriter<File>>>>),
}

/// Checksums and counts what passes through to the file.
struct HashingWriter<W> {
    inner: W,
    crc: u32,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes TFRecord frames: length, masked CRC32C of the length, data, masked
/// CRC32C of the data. The frame is written here rather than through the
/// `tfrecord` crate because its table CRC runs at ~0.3 GB/s on the one writer
/// thread, the `crc32c` crate's SSE4.2 one at ~7 GB/s (docs/BENCHMARKS.md). The
/// reader checks length CRCs with `tfrecord`, and
/// `reader::tests::frames_are_tensorflow_masked_crc32c` reads whole shards back
/// with `tfrecord`'s own reader, so this framing is checked against an
/// independent implementation.
pub struct ShardWriter {
    final_path: PathBuf,
    partial_path: PathBuf,
    sink: Option<Sink>,
    records: u64,
    offset: u64,
    /// Set once the shard has its final name; until then `Drop` removes the partial file.
    renamed: bool,
}

/// TensorFlow's masked CRC32C.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
        .rotate_right(15)
        .wrapping_add(0xa282_ead8)
}

fn write_frame(w: &mut impl Write, record: &[u8]) -> std::io::Result<()> {
    let len = (record.len() as u64).to_le_bytes();
    w.write_all(&len)?;
    w.write_all(&masked_crc32c(&len).to_le_bytes())?;
    w.write_all(record)?;
    w.write_all(&masked_crc32c(record).to_le_bytes())
}

/// The hidden temporary name of a shard while it is written.
pub fn partial_path(final_path: &Path) -> PathBuf {
    crate::atomic::hidden_sibling(final_path, PARTIAL_SUFFIX)
}

impl ShardWriter {
    pub fn create(final_path: &Path, compression: Compression) -> Result<Self> {
        let (file, partial_path) = crate::atomic::create_hidden(final_path, PARTIAL_SUFFIX)?;
        let hashing = HashingWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            crc: 0,
            bytes: 0,
        };
        let sink = match compression {
            Compression::None => Sink::Plain(hashing),
            // mtime 0 and no file name keep the bytes deterministic.
            Compression::Gzip => Sink::Gzip(Box::new(
                GzBuilder::new()
                    .mtime(0)
                    .write(hashing, flate2::Compression::new(6)),
            )),
        };
        Ok(Self {
            final_path: final_path.to_path_buf(),
            partial_path,
            sink: Some(sink),
            records: 0,
            offset: 0,
            renamed: false,
        })
    }

    /// Appends one serialized record.
    pub fn write(&mut self, record: &[u8]) -> Result<RecordLocation> {
        let len = record.len() as u64;
        let result = match self.sink.as_mut() {
            Some(Sink::Plain(w)) => write_frame(w, record),
            Some(Sink::Gzip(w)) => write_frame(w.as_mut(), record),
            None => return Err(Error::output(&self.final_path, "shard already finished")),
        };
        result.map_err(|e| Error::io(&self.partial_path, e))?;
        let location = RecordLocation {
            index: self.records,
            offset: self.offset,
        };
        self.records += 1;
        self.offset += 8 + 4 + len + 4;
        Ok(location)
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    /// Flushes, syncs and renames the shard to its final name.
    pub fn finish(mut self) -> Result<ShardSummary> {
        let path = self.partial_path.clone();
        let hashing = match self.sink.take() {
            Some(Sink::Plain(w)) => w,
            Some(Sink::Gzip(w)) => w.finish().at(&path)?,
            None => return Err(Error::output(&self.final_path, "shard already finished")),
        };
        let HashingWriter { inner, crc, bytes } = hashing;
        let file = inner
            .into_inner()
            .map_err(|e| Error::io(&path, e.into_error()))?;
        file.sync_all().at(&path)?;
        drop(file);
        crate::atomic::check_target(&self.final_path)?;
        std::fs::rename(&path, &self.final_path).at(&self.final_path)?;
        self.renamed = true;
        Ok(ShardSummary {
            file: self
                .final_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            records: self.records,
            bytes,
            crc32c: format!("{crc:08x}"),
        })
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        // Abandoned, or `finish` failed (a full disk fails the last flush or the
        // sync): leave nothing behind.
        if !self.renamed {
            let _ = std::fs::remove_file(&self.partial_path);
        }
    }
}
