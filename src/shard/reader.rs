//! Reading shard files back, checking every CRC as it goes. Gzip shards are
//! recognised by their magic bytes, so callers never say which kind they have.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
};

use flate2::bufread::GzDecoder;

use crate::error::{Error, IoContext, Result};

/// Records longer than this are treated as corruption rather than allocated.
pub const MAX_RECORD_BYTES: u64 = 256 << 20;

/// One raw record and where it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecord {
    pub index: u64,
    pub offset: u64,
    pub data: Vec<u8>,
}

/// Iterates the records of one shard; the first fault ends the iteration with
/// an error naming the file and the record.
pub struct ShardReader {
    path: PathBuf,
    inner: Box<dyn Read + Send>,
    index: u64,
    offset: u64,
    failed: bool,
}

impl ShardReader {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).at(path)?;
        Self::from_buf_read(path, BufReader::with_capacity(1 << 20, file))
    }

    /// Reads the shard from `source` (plain or gzip, told by the magic bytes)
    /// rather than a file; `path` only names it in errors.
    pub fn from_buf_read(path: &Path, mut source: impl BufRead + Send + 'static) -> Result<Self> {
        let is_gzip = source.fill_buf().at(path)?.starts_with(&[0x1f, 0x8b]);
        let inner: Box<dyn Read + Send> = if is_gzip {
            Box::new(GzDecoder::new(source))
        } else {
            Box::new(source)
        };
        Ok(Self {
            path: path.to_path_buf(),
            inner,
            index: 0,
            offset: 0,
            failed: false,
        })
    }

    fn fault(&mut self, message: impl Into<String>) -> Error {
        self.failed = true;
        Error::record(&self.path, self.index, message)
    }

    /// The next record, `Ok(None)` at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<RawRecord>> {
        if self.failed {
            return Ok(None);
        }
        let len = match tfrecord::io::sync::try_read_len(&mut self.inner, true) {
            Ok(Some(len)) => len as u64,
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.fault(describe(e, "length"))),
        };
        if len > MAX_RECORD_BYTES {
            return Err(self.fault(format!(
                "record length {len} exceeds {MAX_RECORD_BYTES} bytes"
            )));
        }
        let data = tfrecord::io::sync::try_read_record_data(&mut self.inner, len as usize, true)
            .map_err(|e| self.fault(describe(e, "data")))?;
        let record = RawRecord {
            index: self.index,
            offset: self.offset,
            data,
        };
        self.index += 1;
        self.offset += 8 + 4 + len + 4;
        Ok(Some(record))
    }
}

fn describe(e: tfrecord::Error, part: &str) -> String {
    match e {
        tfrecord::Error::ChecksumMismatch { .. } => format!("{part} CRC mismatch (corrupt record)"),
        tfrecord::Error::UnexpectedEof => "truncated record (file ends mid-record)".to_string(),
        tfrecord::Error::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "truncated record (file ends mid-record)".to_string()
        }
        tfrecord::Error::IoError(io) => format!("read error: {io}"),
        other => other.to_string(),
    }
}

impl Iterator for ShardReader {
    type Item = Result<RawRecord>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::{
        Compression,
        writer::{ShardWriter, partial_path},
    };

    fn write_shard(dir: &Path, compression: Compression, n: usize) -> PathBuf {
        let path = dir.join(crate::shard::shard_file_name("train", 0, 1, compression));
        let mut w = ShardWriter::create(&path, compression).unwrap();
        for i in 0..n {
            let loc = w.write(&vec![i as u8; 10 + i]).unwrap();
            assert_eq!(loc.index, i as u64);
        }
        let summary = w.finish().unwrap();
        assert_eq!(summary.records, n as u64);
        assert_eq!(summary.bytes, std::fs::metadata(&path).unwrap().len());
        assert!(!partial_path(&path).exists());
        path
    }

    #[test]
    fn round_trip_plain_and_gzip() {
        let dir = tempfile::tempdir().unwrap();
        for c in [Compression::None, Compression::Gzip] {
            let path = write_shard(dir.path(), c, 5);
            let records: Vec<_> = ShardReader::open(&path)
                .unwrap()
                .collect::<Result<_>>()
                .unwrap();
            assert_eq!(records.len(), 5);
            assert_eq!(records[3].data, vec![3u8; 13]);
            // offsets are those of the uncompressed frame stream
            assert_eq!(records[1].offset, 8 + 4 + 10 + 4);
        }
    }

    #[test]
    fn frames_are_tensorflow_masked_crc32c() {
        // The CRC32C check value of "123456789" is 0xE3069283 (RFC 3720); TF masks
        // it as ((crc >> 15) | (crc << 17)) + 0xa282ead8. The length CRC is checked
        // by reading the frame back through the `tfrecord` crate.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.tfrecord");
        let mut w = ShardWriter::create(&path, Compression::None).unwrap();
        w.write(b"123456789").unwrap();
        w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let masked = 0xE306_9283u32.rotate_right(15).wrapping_add(0xa282_ead8);
        assert_eq!(bytes.len(), 8 + 4 + 9 + 4);
        assert_eq!(&bytes[0..8], &9u64.to_le_bytes());
        assert_eq!(&bytes[12..21], b"123456789");
        assert_eq!(&bytes[21..25], &masked.to_le_bytes());
        let back: Vec<_> = ShardReader::open(&path)
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(back[0].data, b"123456789");
    }

    #[test]
    fn detects_flipped_byte_length_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_shard(dir.path(), Compression::None, 3);
        let good = std::fs::read(&path).unwrap();

        let mut bad = good.clone();
        bad[12 + 26 + 5] ^= 0x40; // inside record 1's data
        std::fs::write(&path, &bad).unwrap();
        let err = ShardReader::open(&path)
            .unwrap()
            .collect::<Result<Vec<_>>>()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("record 1") && err.contains("data CRC mismatch"),
            "{err}"
        );

        let mut bad = good.clone();
        bad[26] ^= 0x01; // record 1's length field
        std::fs::write(&path, &bad).unwrap();
        let err = ShardReader::open(&path)
            .unwrap()
            .collect::<Result<Vec<_>>>()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("record 1") && err.contains("length CRC mismatch"),
            "{err}"
        );

        std::fs::write(&path, &good[..good.len() - 3]).unwrap();
        let err = ShardReader::open(&path)
            .unwrap()
            .collect::<Result<Vec<_>>>()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("record 2") && err.contains("truncated"),
            "{err}"
        );
    }

    #[test]
    fn reads_from_memory_too() {
        let dir = tempfile::tempdir().unwrap();
        for c in [Compression::None, Compression::Gzip] {
            let bytes = std::fs::read(write_shard(dir.path(), c, 4)).unwrap();
            let name = Path::new("mem.tfrecord");
            let records: Vec<_> = ShardReader::from_buf_read(name, std::io::Cursor::new(bytes))
                .unwrap()
                .collect::<Result<_>>()
                .unwrap();
            assert_eq!(records.len(), 4);
            assert_eq!(records[2].data, vec![2u8; 12]);
        }
        let err = ShardReader::from_buf_read(Path::new("mem.tfrecord"), &b"\x05\0\0"[..])
            .unwrap()
            .next()
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("mem.tfrecord: record 0: truncated"),
            "{err}"
        );
    }

    #[test]
    fn truncated_gzip_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_shard(dir.path(), Compression::Gzip, 50);
        let good = std::fs::read(&path).unwrap();
        std::fs::write(&path, &good[..good.len() / 2]).unwrap();
        assert!(
            ShardReader::open(&path)
                .unwrap()
                .collect::<Result<Vec<_>>>()
                .is_err()
        );
    }

    #[test]
    fn abandoned_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.tfrecord");
        let mut w = ShardWriter::create(&path, Compression::None).unwrap();
        w.write(&[1, 2, 3]).unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
