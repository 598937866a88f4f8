//! The shard reader (TFRecord framing, CRCs, gzip detection, the record size
//! limit) and `tf.train.Example` decoding into a `PatchRecord`.
//!
//! The first byte picks the mode:
//! - even: the rest is a shard file as found on disk (plain or gzip), read
//!   record by record, each record decoded as an Example;
//! - odd: the rest is one record's payload, framed here with correct CRCs, so
//!   the fuzzer reaches Example decoding without having to forge checksums.
//!
//! Contract: no panic, errors are `Err`, the first error ends the iteration,
//! and what decodes re-encodes to bytes that decode to the same record.
#![no_main]

use std::io::Cursor;
use std::path::Path;

use histoshard::shard::example::PatchRecord;
use histoshard::shard::reader::{MAX_RECORD_BYTES, ShardReader};
use histoshard::shard::writer::masked_crc32c;
use libfuzzer_sys::fuzz_target;

fn frame(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(payload.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&masked_crc32c(payload).to_le_bytes());
    out
}

fn check_example(data: &[u8]) {
    match PatchRecord::decode(data) {
        Ok(record) => {
            let encoded = record.encode();
            let again = PatchRecord::decode(&encoded).expect("a re-encoded record decodes");
            assert_eq!(again.encode(), encoded, "decode/encode is stable");
        }
        Err(message) => assert!(!message.is_empty()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let path = Path::new("fuzz.tfrecord");
    if mode % 2 == 0 {
        let Ok(mut reader) = ShardReader::from_buf_read(path, Cursor::new(rest.to_vec())) else {
            return;
        };
        let mut expect_index = 0;
        loop {
            match reader.next_record() {
                Ok(Some(record)) => {
                    assert_eq!(record.index, expect_index);
                    assert!(record.data.len() as u64 <= MAX_RECORD_BYTES);
                    expect_index += 1;
                    check_example(&record.data);
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    // The first fault ends the iteration.
                    assert!(matches!(reader.next_record(), Ok(None)));
                    break;
                }
            }
        }
    } else {
        let framed = frame(rest);
        if framed.starts_with(&[0x1f, 0x8b]) {
            // A length of 0x8b1f + 256k bytes looks like gzip's magic: not a plain shard.
            return;
        }
        let records: Vec<_> = ShardReader::from_buf_read(path, Cursor::new(framed))
            .expect("a framed record opens")
            .collect::<Result<_, _>>()
            .expect("a correctly framed record reads back");
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].data, rest);
        check_example(rest);
    }
});
