//! `Grade.csv` of the Warwick-QU (GlaS) download: CSV reading (any line ends,
//! BOM, blank lines, quoting) and row validation.
//!
//! Contract: no panic, errors are `Err` with a message, and what is accepted
//! satisfies what the loader relies on.
#![no_main]

use std::collections::HashSet;
use std::path::Path;

use histoshard::dataset::warwick::{CLASSES, SUBSETS, parse_grade_csv};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_grade_csv(data, Path::new("Grade.csv")) {
        Ok(rows) => {
            assert!(!rows.is_empty());
            let mut names = HashSet::new();
            let mut last_line = 1;
            for r in &rows {
                assert!(r.line > last_line, "line numbers increase past the header");
                last_line = r.line;
                assert!(CLASSES.contains(&r.class.as_str()));
                assert!(SUBSETS.contains(&r.subset.as_str()));
                assert!(r.patient.parse::<i64>().is_ok());
                assert!(names.insert(r.name.clone()), "names are unique");
            }
        }
        Err(e) => assert!(e.to_string().contains("Grade.csv")),
    }
});
