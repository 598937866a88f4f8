//! A labelImg Pascal-VOC annotation: UTF-8 and BOM handling, XML parsing
//! (roxmltree, DTDs refused), `<annotation>` / `<filename>` / `<object>` /
//! `<bndbox>` extraction and coordinate parsing.
//!
//! Contract: no panic, errors are `Err` with a message, and what is accepted
//! satisfies what the loader relies on.
#![no_main]

use std::path::Path;

use histoshard::dataset::voc::parse_annotation;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_annotation(data, Path::new("a.xml")) {
        Ok(ann) => {
            if !ann.objects.is_empty() {
                assert!(ann.filename.as_deref().is_some_and(|f| !f.is_empty()));
            }
            for o in &ann.objects {
                assert!(!o.name.is_empty() && o.name.trim() == o.name);
                assert!(o.coords.iter().all(|c| c.is_finite() && c.fract() == 0.0));
            }
        }
        Err(e) => assert!(e.to_string().contains("a.xml")),
    }
});
