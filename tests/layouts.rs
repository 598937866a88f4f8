//! Inputs other than the GlaS download: a folder per class, a CSV, labelImg
//! Pascal-VOC XML with boxes; and stain normalisation end to end.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use histoshard::shard::manifest;

/// Converts a few synthetic GlaS images to PNG files under `root/<class>/`.
fn class_folders(t: &Path) -> PathBuf {
    let glas = synth(t, 6, 31);
    let root = t.join("folders");
    let grades = std::fs::read_to_string(glas.join("Grade.csv")).unwrap();
    for line in grades.split('\r').skip(1) {
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        let dir = root.join(cols[2]);
        std::fs::create_dir_all(&dir).unwrap();
        let img = image::open(glas.join(format!("{}.bmp", cols[0]))).unwrap();
        img.save(dir.join(format!("{}.png", cols[0]))).unwrap();
    }
    std::fs::write(root.join("benign").join("notes.txt"), "not an image").unwrap();
    root
}

#[test]
fn folder_per_class_with_a_stray_file() {
    let t = tempfile::tempdir().unwrap();
    let root = class_folders(t.path());
    let out = t.path().join("out");
    ok(&[
        "prepare",
        "-i",
        s(&root),
        "-o",
        s(&out),
        "--test-fraction",
        "0.3",
        "--val-fraction",
        "0",
    ]);
    ok(&["verify", s(&out)]);
    let r = report(&out);
    assert_eq!(r["layout"], "folders");
    assert_eq!(r["classes"], serde_json::json!(["benign", "malignant"]));
    let skipped = r["skipped"].to_string();
    assert!(skipped.contains("notes.txt"), "{skipped}");
    let rows = manifest::read_manifest(&out).unwrap();
    assert!(rows.iter().any(|r| r.split == "test") && rows.iter().any(|r| r.split == "train"));
    assert!(
        rows.iter()
            .all(|r| r.filename.starts_with(&format!("{}/", r.label_text)))
    );
}

#[test]
fn csv_labels_with_patient_and_split() {
    let t = tempfile::tempdir().unwrap();
    let root = class_folders(t.path());
    let mut csv = String::from("filename,label,patient,split\n");
    let mut n = 0;
    for class in ["benign", "malignant"] {
        for e in std::fs::read_dir(root.join(class)).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".png") {
                let split = if n % 3 == 0 { "test" } else { "train" };
                csv += &format!("{class}/{name},{class},p{},{split}\n", n % 2);
                n += 1;
            }
        }
    }
    let labels = root.join("labels.csv");
    std::fs::write(&labels, csv).unwrap();
    let out = t.path().join("out");
    ok(&["prepare", "-i", s(&labels), "-o", s(&out)]);
    ok(&["verify", s(&out)]);
    let r = report(&out);
    assert_eq!(r["layout"], "csv");
    let rows = manifest::read_manifest(&out).unwrap();
    assert!(
        rows.iter()
            .all(|r| r.patient.as_deref().is_some_and(|p| p.starts_with('p')))
    );
    assert!(rows.iter().any(|r| r.split == "test"));
}

#[test]
fn voc_boxes_restrict_patches() {
    let t = tempfile::tempdir().unwrap();
    let glas = synth(t.path(), 6, 32);
    let root = t.path().join("voc");
    std::fs::create_dir_all(&root).unwrap();
    for (i, name) in ["train_1", "train_2", "train_3", "testA_1"]
        .iter()
        .enumerate()
    {
        let img = image::open(glas.join(format!("{name}.bmp"))).unwrap();
        img.save(root.join(format!("{name}.png"))).unwrap();
        let class = if i == 1 { "malignant" } else { "benign" };
        let xml = format!(
            "<annotation><folder>voc</folder><filename>{name}.png</filename><path>/home/someone/{name}.png</path>\
             <size><width>{w}</width><height>{h}</height><depth>3</depth></size>\
             <object><name>{class}</name><bndbox><xmin>300</xmin><ymin>10</ymin><xmax>600</xmax><ymax>260</ymax></bndbox></object>\
             </annotation>",
            w = img.width(),
            h = img.height()
        );
        std::fs::write(root.join(format!("{name}.xml")), xml).unwrap();
    }
    let out = t.path().join("out");
    ok(&[
        "prepare",
        "-i",
        s(&root),
        "-o",
        s(&out),
        "--min-tissue",
        "0",
        "--val-fraction",
        "0",
        "--test-fraction",
        "0.3",
    ]);
    ok(&["verify", s(&out)]);
    assert_eq!(report(&out)["layout"], "voc");
    let rows = manifest::read_manifest(&out).unwrap();
    assert!(!rows.is_empty());
    // The 300×250 box fits one 224 patch: at its corner.
    for r in &rows {
        assert!(
            r.x >= 300 && r.x + r.size <= 600 && r.y >= 10 && r.y + r.size <= 260,
            "{r:?}"
        );
    }
}

#[test]
fn stain_normalisation_runs_on_every_split() {
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 6, 33);
    let (plain, macenko, reinhard) = (
        t.path().join("plain"),
        t.path().join("macenko"),
        t.path().join("reinhard"),
    );
    ok(&["prepare", "-i", s(&input), "-o", s(&plain), "--shards", "1"]);
    ok(&[
        "prepare",
        "-i",
        s(&input),
        "-o",
        s(&macenko),
        "--shards",
        "1",
        "--stain-normalize",
        "macenko",
    ]);
    let reference = input.join("train_1.bmp");
    ok(&[
        "prepare",
        "-i",
        s(&input),
        "-o",
        s(&reinhard),
        "--shards",
        "1",
        "--stain-normalize",
        "reinhard",
        "--stain-reference",
        s(&reference),
    ]);
    for dir in [&macenko, &reinhard] {
        ok(&["verify", s(dir)]);
        let (a, b) = (
            manifest::read_manifest(&plain).unwrap(),
            manifest::read_manifest(dir).unwrap(),
        );
        assert_eq!(a.len(), b.len(), "same patches");
        let changed = a
            .iter()
            .zip(&b)
            .filter(|(x, y)| x.sha256 != y.sha256)
            .count();
        assert!(
            changed * 2 >= a.len(),
            "stain normalisation changed only {changed} of {} patches",
            a.len()
        );
    }
}
