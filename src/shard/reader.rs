//! Reading shard files back, checking every CRC as it goes. Gzip shards are
//! recognised by their magic bytes, so callers never say which kind they have.

use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
};

use flate2::bufread::GzDecoder;

use super::writer::masked_crc32c;
use crate::error::{Error, IoContext, Result};

/// Records longer than this are treated as corruption rather than allocated.
pub const MAX_RECORD_BYTES: u64 = 256 << 20;

/// A record's buffer is allocated whole up to this length; beyond it, memory
/// is taken only as the bytes arrive, so a corrupt length field (or a crafted
/// 15-byte file) costs no more memory than the data actually behind it.
const UPFRONT_BYTES: u64 = 8 << 20;

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
    /// Opens the shard at `path`, a regular file (a FIFO or device is
    /// refused by name rather than read without end).
    pub fn open(path: &Path) -> Result<Self> {
        let file = crate::fsutil::open_regular(path)?;
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
        let data = read_data(&mut self.inner, len).map_err(|e| self.fault(describe(e, "data")))?;
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

/// A record's `len` bytes and their masked CRC32C, checked. (The length and its
/// CRC are read by the `tfrecord` crate; the data is read here because its
/// `try_read_record_data` allocates the whole claimed length first.)
fn read_data(r: &mut impl Read, len: u64) -> std::result::Result<Vec<u8>, tfrecord::Error> {
    let mut data = Vec::with_capacity(len.min(UPFRONT_BYTES) as usize);
    r.by_ref()
        .take(len)
        .read_to_end(&mut data)
        .map_err(tfrecord::Error::IoError)?;
    if (data.len() as u64) < len {
        return Err(tfrecord::Error::UnexpectedEof);
    }
    let mut crc = [0u8; 4];
    r.read_exact(&mut crc).map_err(tfrecord::Error::IoError)?;
    let (expect, found) = (u32::from_le_bytes(crc), masked_crc32c(&data));
    if expect != found {
        return Err(tfrecord::Error::ChecksumMismatch { expect, found });
    }
    Ok(data)
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
    use std::fs::File;

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
        // it as ((crc >> 15) | (crc << 17)) + 0xa282ead8. Both CRCs are also
        // checked by reading the frames back with the `tfrecord` crate's reader.
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

        let path = write_shard(dir.path(), Compression::None, 3);
        let mut file = File::open(&path).unwrap();
        for i in 0..3 {
            let data = tfrecord::io::sync::try_read_record(&mut file, true).unwrap();
            assert_eq!(data, Some(vec![i as u8; 10 + i]));
        }
        assert!(
            tfrecord::io::sync::try_read_record(&mut file, true)
                .unwrap()
                .is_none()
        );
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
    fn forged_length_with_a_valid_crc_is_a_truncation() {
        // Found by fuzzing (tests/fuzz_regressions.rs checks its memory): a
        // 256 MiB length whose CRC is right, then three bytes. The reader used
        // to allocate all 256 MiB before finding the file ends.
        let bytes = include_bytes!("../../tests/data/fuzz/tfrecord-forged-length-256mib");
        let mut r = ShardReader::from_buf_read(Path::new("f.tfrecord"), &bytes[..]).unwrap();
        let err = r.next().unwrap().unwrap_err().to_string();
        assert_eq!(
            err,
            "f.tfrecord: record 0: truncated record (file ends mid-record)"
        );
        assert!(r.next().is_none());
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
