//! Bad input: one clear line naming the file and the cause, a non-zero exit,
//! and nothing written that could pass for a complete data set.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A fresh 4-image synthetic set in its own temp dir.
fn fixture() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 4, 11);
    (t, input)
}

/// The GlaS mask beside `image`: `NAME_anno.bmp`.
fn mask_of(image: &Path) -> PathBuf {
    image.with_file_name(format!(
        "{}_anno.bmp",
        image.file_stem().unwrap().to_string_lossy()
    ))
}

fn first_image(input: &Path) -> PathBuf {
    let mut v: Vec<_> = std::fs::read_dir(input)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "bmp") && !p.to_string_lossy().ends_with("_anno.bmp")
        })
        .collect();
    v.sort();
    v.remove(0)
}

/// Runs prepare and checks the failure is clean and leaves no data set behind.
fn prepare_fails(input: &Path, extra: &[&str], needles: &[&str]) {
    let out = input.parent().unwrap().join("out");
    let mut args = vec!["prepare", "-i", s(input), "-o", s(&out)];
    args.extend_from_slice(extra);
    fails_with(&args, needles);
    assert!(!out.join("manifest.parquet").exists());
    if out.exists() {
        let shards = files(&out)
            .into_keys()
            .filter(|k| k.contains(".tfrecord"))
            .count();
        assert_eq!(shards, 0, "no shard may remain");
    }
}

#[test]
fn missing_grade_csv() {
    let (_t, input) = fixture();
    std::fs::remove_file(input.join("Grade.csv")).unwrap();
    prepare_fails(
        &input,
        &["--layout", "warwick"],
        &["Grade.csv", "not found"],
    );
}

#[test]
fn unknown_grade_text() {
    let (_t, input) = fixture();
    let csv = std::fs::read_to_string(input.join("Grade.csv")).unwrap();
    let bad = csv.replacen(" benign", " benighn", 1);
    std::fs::write(input.join("Grade.csv"), bad).unwrap();
    prepare_fails(&input, &[], &["Grade.csv", "benighn"]);
}

#[test]
fn row_without_an_image() {
    let (_t, input) = fixture();
    let img = first_image(&input);
    std::fs::remove_file(&img).unwrap();
    let name = img.file_stem().unwrap().to_string_lossy().into_owned();
    prepare_fails(&input, &[], &["Grade.csv", &name]);
}

#[test]
fn image_without_a_row() {
    let (_t, input) = fixture();
    let img = first_image(&input);
    let stem = img.file_stem().unwrap().to_string_lossy().into_owned();
    std::fs::copy(&img, input.join("train_999.bmp")).unwrap();
    std::fs::copy(
        input.join(format!("{stem}_anno.bmp")),
        input.join("train_999_anno.bmp"),
    )
    .unwrap();
    prepare_fails(&input, &[], &["train_999"]);
}

#[test]
fn truncated_and_fake_images() {
    let (_t, input) = fixture();
    let img = first_image(&input);
    let bytes = std::fs::read(&img).unwrap();
    std::fs::write(&img, &bytes[..bytes.len() / 3]).unwrap();
    prepare_fails(&input, &[], &[&img.file_name().unwrap().to_string_lossy()]);

    let (_t, input) = fixture();
    let img = first_image(&input);
    std::fs::write(&img, "this is not a bitmap\n").unwrap();
    prepare_fails(&input, &[], &[&img.file_name().unwrap().to_string_lossy()]);

    let (_t, input) = fixture();
    let img = first_image(&input);
    std::fs::write(&img, b"").unwrap();
    prepare_fails(
        &input,
        &[],
        &[&img.file_name().unwrap().to_string_lossy(), "empty"],
    );
}

#[test]
fn mask_of_a_different_size() {
    let (_t, input) = fixture();
    let img = first_image(&input);
    let mask = mask_of(&img);
    image::GrayImage::new(100, 80).save(&mask).unwrap();
    prepare_fails(&input, &[], &["_anno.bmp", "100×80"]);
}

/// A mask's pixels are decoded only when `--min-gland-fraction` uses them;
/// otherwise its header is checked (it opens, and its size matches its image).
#[test]
fn truncated_mask_fails_only_where_its_pixels_are_used() {
    let (_t, input) = fixture();
    let img = first_image(&input);
    let mask = mask_of(&img);
    let bytes = std::fs::read(&mask).unwrap();
    std::fs::write(&mask, &bytes[..bytes.len() / 3]).unwrap();
    let name = mask.file_name().unwrap().to_string_lossy().into_owned();
    prepare_fails(
        &input,
        &["--min-gland-fraction", "0.1"],
        &[&name, "truncated"],
    );

    let out = input.parent().unwrap().join("out-no-gland-filter");
    ok(&["prepare", "-q", "-i", s(&input), "-o", s(&out)]);
    assert!(out.join("manifest.parquet").exists());
}

#[test]
fn image_smaller_than_a_patch() {
    let (_t, input) = fixture();
    prepare_fails(
        &input,
        &["--patch-size", "1000"],
        &["smaller than one 1000-px patch"],
    );
}

#[test]
fn decompression_bomb_is_refused() {
    let (_t, input) = fixture();
    prepare_fails(
        &input,
        &["--max-pixels", "1000"],
        &["over the", "--max-pixels"],
    );
}

#[test]
fn empty_folder() {
    let t = tempfile::tempdir().unwrap();
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    prepare_fails(&empty, &[], &["empty"]);
}

#[test]
fn output_not_writable() {
    let (t, input) = fixture();
    let blocker = t.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let out = blocker.join("out");
    fails_with(&["prepare", "-i", s(&input), "-o", s(&out)], &[s(&out)]);
}

#[test]
fn bad_options() {
    let (_t, input) = fixture();
    prepare_fails(&input, &["--val-fraction", "1.5"], &["--val-fraction"]);
    prepare_fails(&input, &["--stride", "0"], &["--stride"]);
    prepare_fails(&input, &["--folds", "50"], &["--folds"]);
}
