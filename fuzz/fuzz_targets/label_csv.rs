//! The label CSV (`filename,label[,patient][,split]` and the TF object-detection
//! `filename,width,height,class,xmin,ymin,xmax,ymax`): CSV reading and the row
//! checks that need no image.
//!
//! Contract: no panic, errors are `Err` with a message, and what is accepted
//! satisfies what the loader relies on.
#![no_main]

use std::path::Path;

use histoshard::dataset::csv_labels::{LabelTable, parse_label_csv};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_label_csv(data, Path::new("labels.csv")) {
        Ok(LabelTable::Labels(rows)) => {
            assert!(!rows.is_empty());
            for r in &rows {
                assert!(!r.label.is_empty());
                assert!(r.patient.as_deref() != Some(""));
                assert!(matches!(r.subset, None | Some("train" | "val" | "test")));
            }
        }
        Ok(LabelTable::Boxes(rows)) => {
            assert!(!rows.is_empty());
            for r in &rows {
                assert!(!r.class.is_empty());
                assert!(r.coords.iter().all(|c| c.is_finite() && c.fract() == 0.0));
            }
        }
        Err(e) => assert!(e.to_string().contains("labels.csv")),
    }
});
