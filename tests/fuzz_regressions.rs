//! Inputs found by fuzzing (`scripts/fuzz.sh`; docs/RELIABILITY.md, "Fuzzing") or by hand,
//! replayed by `cargo test` without cargo-fuzz. Each file in `tests/data/fuzz/`
//! is named after its fuzz target (`tfrecord-…`, `grade_csv-…`, `label_csv-…`,
//! `voc_xml-…`) and must give an `Err` or an `Ok`, never a panic; some also
//! have a test of their own below.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use histoshard::dataset::{csv_labels, voc, warwick};
use histoshard::shard::{example::PatchRecord, reader::ShardReader};

/// The system allocator, noting the largest single allocation made by a
/// thread while [`largest_allocation`] watches it (tests run in parallel).
struct Watching;

thread_local! {
    static LARGEST: Cell<Option<usize>> = const { Cell::new(None) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| {
        if let Some(m) = l.get() {
            l.set(Some(m.max(size)));
        }
    });
}

unsafe impl GlobalAlloc for Watching {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Watching = Watching;

/// What `f` returns, and the largest single allocation it made on this thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(Some(0)));
    let out = f();
    let largest = LARGEST.with(|l| l.replace(None)).unwrap_or(0);
    (out, largest)
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz")
}

/// Reads a shard from memory to its end or first error, decoding each record.
fn read_shard(bytes: Vec<u8>) -> Result<usize, String> {
    let mut reader = ShardReader::from_buf_read(Path::new("fuzz.tfrecord"), Cursor::new(bytes))
        .map_err(|e| e.to_string())?;
    let mut n = 0;
    for record in &mut reader {
        let record = record.map_err(|e| e.to_string())?;
        let _ = PatchRecord::decode(&record.data);
        n += 1;
    }
    Ok(n)
}

#[test]
fn every_saved_input_is_an_error_or_ok_never_a_panic() {
    let mut seen = 0;
    for entry in std::fs::read_dir(data_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let target = name.split('-').next().unwrap_or_default();
        match target {
            "tfrecord" => drop(read_shard(bytes)),
            "grade_csv" => drop(warwick::parse_grade_csv(&bytes, &path)),
            "label_csv" => drop(csv_labels::parse_label_csv(&bytes, &path)),
            "voc_xml" => drop(voc::parse_annotation(&bytes, &path)),
            _ => panic!("{name}: name it after its fuzz target"),
        }
        seen += 1;
    }
    assert!(seen > 0);
}

#[test]
fn forged_record_length_costs_only_the_bytes_present() {
    // A 256 MiB length field with a correct CRC, then three bytes: 15 bytes in
    // all. The reader used to allocate the 256 MiB (`tfrecord`'s
    // `try_read_record_data`) before finding that the file ends; where memory
    // is short that is an abort, not an error.
    let bytes = std::fs::read(data_dir().join("tfrecord-forged-length-256mib")).unwrap();
    assert_eq!(bytes.len(), 15);
    let (result, largest) = largest_allocation(|| read_shard(bytes));
    let err = result.unwrap_err();
    assert_eq!(
        err,
        "fuzz.tfrecord: record 0: truncated record (file ends mid-record)"
    );
    assert!(
        largest <= 8 << 20,
        "a 15-byte shard made a {largest}-byte allocation"
    );
}

#[test]
fn xml_nested_4000_deep_is_an_error_on_a_small_stack() {
    // The hostile tester's 28 KB annotation: `<a>` nested 4,000 deep. The XML
    // parser recurses once per level; on a rayon worker's 2 MiB stack that
    // overflowed and aborted `prepare` (exit 134). Parsed here on a thread
    // with 512 KiB of stack: the depth is refused before the parser runs.
    let path = data_dir().join("voc_xml-deep-nesting-4000");
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 27_000);
    let err = std::thread::Builder::new()
        .stack_size(512 << 10)
        .spawn(move || {
            voc::parse_annotation(&bytes, &path)
                .unwrap_err()
                .to_string()
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(
        err.ends_with("voc_xml-deep-nesting-4000: line 1: elements nested more than 64 deep (a labelImg annotation nests 4); refused before parsing"),
        "{err}"
    );
}
