//! The Warwick-QU (GlaS challenge) download: a flat folder of `<name>.bmp`
//! images, their `<name>_anno.bmp` gland masks, and `Grade.csv`.
//!
//! `Grade.csv` as shipped has the header
//! `name,patient ID, grade (GlaS), grade (Sirinukunwattana et al. 2015)`,
//! values with leading spaces (` benign`), CR-only line endings and no final
//! newline. We accept any line endings, a UTF-8 BOM, blank lines, surrounding
//! whitespace, any case in grades and header names, and extra columns.
//!
//! Samples are in natural order: by subset (`train`, `testA`, `testB`), then by
//! the number in the name (`train_2` before `train_10`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::{Dataset, Layout, Sample, Skipped};
use super::{common, walk};
use crate::error::{Error, Result};
use crate::fsutil;

/// The classes of a Warwick-QU data set, in label order.
pub const CLASSES: [&str; 2] = ["benign", "malignant"];

/// The GlaS subsets, in the order samples are sorted.
pub const SUBSETS: [&str; 3] = ["train", "testA", "testB"];

/// One row of `Grade.csv`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GradeRow {
    /// 1-based line in the file (the header is line 1).
    pub line: u64,
    /// `train_12`, `testA_3`, ...
    pub name: String,
    /// The patient ID as written (trimmed); an integer.
    pub patient: String,
    /// `benign` or `malignant`.
    pub class: String,
    /// `train`, `testA` or `testB`, from the name's prefix.
    pub subset: String,
    /// The number after the prefix.
    pub number: u64,
}

/// `Grade.csv` files larger than this are refused (the real one is 5 KB).
pub const MAX_GRADE_CSV_BYTES: u64 = 16 << 20;

/// `Grade.csv` in `dir` (any case), if present. Whatever has that name (a
/// folder, a FIFO, a device) is returned, for [`read_grade_csv`] to refuse
/// by what it is rather than call it missing.
pub fn find_grade_csv(dir: &Path) -> Option<PathBuf> {
    let present = |p: &Path| p.exists();
    let exact = dir.join("Grade.csv");
    if present(&exact) {
        return Some(exact);
    }
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.eq_ignore_ascii_case("grade.csv"))
                && present(p)
        })
}

/// Reads and validates `Grade.csv` without looking at any image.
pub fn read_grade_csv(path: &Path) -> Result<Vec<GradeRow>> {
    let bytes = fsutil::read_limited(path, MAX_GRADE_CSV_BYTES, "a Grade.csv")?;
    parse_grade_csv(&bytes, path)
}

/// Validates the bytes of a `Grade.csv` (see [`read_grade_csv`]); touches no
/// file, `path` only names the file in errors.
pub fn parse_grade_csv(bytes: &[u8], path: &Path) -> Result<Vec<GradeRow>> {
    let table = common::parse_csv_table(bytes, path)?;
    let err = |msg: String| Error::input(path, msg);
    let name_col = table.column(&["name"]);
    let patient_col = table.column(&["patient id", "patient_id", "patient"]);
    let grade_col = table.column(&["grade (glas)", "grade"]);
    let (Some(name_col), Some(patient_col), Some(grade_col)) = (name_col, patient_col, grade_col)
    else {
        let missing: Vec<&str> = [
            ("name", name_col),
            ("patient ID", patient_col),
            ("grade (GlaS)", grade_col),
        ]
        .iter()
        .filter(|(_, c)| c.is_none())
        .map(|(n, _)| *n)
        .collect();
        return Err(err(format!(
            "line 1: header lacks column(s) {}; expected name, patient ID, grade (GlaS) (header is: {})",
            missing.join(", "),
            table.header_list()
        )));
    };
    if table.rows.is_empty() {
        return Err(err(
            "has a header but no rows; expected one row per image".to_string()
        ));
    }
    let need = name_col.max(patient_col).max(grade_col) + 1;
    let mut rows: Vec<GradeRow> = Vec::with_capacity(table.rows.len());
    let mut first_line: HashMap<String, u64> = HashMap::new();
    for (line, fields) in &table.rows {
        let line = *line;
        if fields.len() < need {
            return Err(err(format!(
                "line {line}: {} field(s), expected at least {need} (name, patient ID, grade (GlaS))",
                fields.len()
            )));
        }
        let raw_name = fields[name_col].as_str();
        let name = strip_bmp(raw_name);
        if name.is_empty() {
            return Err(err(format!("line {line}: empty name")));
        }
        let (subset, number) = parse_name(name).ok_or_else(|| {
            err(format!(
                "line {line}: name \"{name}\" should be train_<number>, testA_<number> or testB_<number>"
            ))
        })?;
        let patient = fields[patient_col].as_str();
        if patient.parse::<i64>().is_err() {
            return Err(err(format!(
                "line {line}: patient ID \"{patient}\" is not an integer"
            )));
        }
        let grade = fields[grade_col].to_lowercase();
        let class = match grade.as_str() {
            "benign" => CLASSES[0],
            "malignant" => CLASSES[1],
            _ => {
                return Err(err(format!(
                    "line {line}: unknown grade \"{}\" (expected benign or malignant)",
                    fields[grade_col]
                )));
            }
        };
        if let Some(prev) = first_line.insert(name.to_string(), line) {
            return Err(err(format!(
                "line {line}: \"{name}\" is listed twice (first on line {prev})"
            )));
        }
        rows.push(GradeRow {
            line,
            name: name.to_string(),
            patient: patient.to_string(),
            class: class.to_string(),
            subset: subset.to_string(),
            number,
        });
    }
    Ok(rows)
}

/// `train_1.bmp` → `train_1` (the shipped file has bare names; be lenient).
fn strip_bmp(name: &str) -> &str {
    let n = name.len();
    if n > 4 && name.is_char_boundary(n - 4) && name[n - 4..].eq_ignore_ascii_case(".bmp") {
        &name[..n - 4]
    } else {
        name
    }
}

/// `testA_12` → (`testA`, 12). The prefix is matched case-insensitively.
fn parse_name(name: &str) -> Option<(&'static str, u64)> {
    let (prefix, num) = name.rsplit_once('_')?;
    let subset = SUBSETS.iter().find(|s| s.eq_ignore_ascii_case(prefix))?;
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((subset, num.parse().ok()?))
}

fn subset_rank(subset: &str) -> usize {
    SUBSETS
        .iter()
        .position(|s| *s == subset)
        .unwrap_or(SUBSETS.len())
}

/// Reads `input`; `output`, when it lies inside, is never read.
pub fn load(input: &Path, output: Option<&Path>) -> Result<Dataset> {
    common::require_dir(input, "the Warwick-QU layout is a folder")?;
    let ex = walk::Exclude::for_root(output, input)?;
    let grade = find_grade_csv(input).ok_or_else(|| {
        Error::input(
            input.join("Grade.csv"),
            "not found — is this the Warwick-QU (GlaS) folder?",
        )
    })?;
    let rows = read_grade_csv(&grade)?;

    // What the folder holds: images and masks by stem, everything else skipped.
    let mut images: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut masks: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut skipped = Vec::new();
    for path in walk::list_dir(input, &ex)? {
        if path == grade {
            continue;
        }
        if path.is_dir() {
            skipped.push(Skipped {
                file: path,
                reason: "sub-folder ignored (the Warwick-QU layout is flat)".into(),
            });
            continue;
        }
        if common::ext_lower(&path).as_deref() != Some("bmp") {
            skipped.push(Skipped {
                file: path,
                reason:
                    "not part of the Warwick-QU layout (<name>.bmp, <name>_anno.bmp, Grade.csv)"
                        .into(),
            });
            continue;
        }
        let file_name = common::utf8_name(&path)?;
        let stem = &file_name[..file_name.len() - 4];
        match stem.strip_suffix("_anno") {
            Some(base) => masks.insert(base.to_string(), path),
            None => images.insert(stem.to_string(), path),
        };
    }

    let mut samples = Vec::with_capacity(rows.len());
    let mut order = Vec::with_capacity(rows.len());
    for row in &rows {
        let Some(image_path) = images.remove(&row.name) else {
            // There, but a folder (or unreadable): say what it is.
            let there = input.join(format!("{}.bmp", row.name));
            if there.exists() {
                fsutil::regular_metadata(&there)?;
            }
            return Err(Error::input(
                &grade,
                format!(
                    "line {}: image {}.bmp not found in {}",
                    row.line,
                    row.name,
                    input.display()
                ),
            ));
        };
        let Some(mask_path) = masks.remove(&row.name) else {
            let there = input.join(format!("{}_anno.bmp", row.name));
            if there.exists() {
                fsutil::regular_metadata(&there)?;
            }
            return Err(Error::input(
                input.join(format!("{}_anno.bmp", row.name)),
                format!(
                    "not found — every Warwick-QU image needs its <name>_anno.bmp mask ({}.bmp, line {} of {})",
                    row.name,
                    row.line,
                    grade.file_name().unwrap_or_default().to_string_lossy()
                ),
            ));
        };
        let rel_path = common::rel_string(input, &image_path)?;
        order.push((subset_rank(&row.subset), row.number, row.name.clone()));
        samples.push(Sample {
            name: row.name.clone(),
            image_path: input.join(&rel_path),
            rel_path,
            mask_path: Some(mask_path),
            class: row.class.clone(),
            patient: Some(row.patient.clone()),
            subset: Some(row.subset.clone()),
            boxes: Vec::new(),
        });
    }
    if !images.is_empty() {
        let names: Vec<String> = images.keys().take(5).map(|n| format!("{n}.bmp")).collect();
        let more = images.len().saturating_sub(names.len());
        return Err(Error::input(
            &grade,
            format!(
                "no row for {}{} ({} image(s) in the folder); add a row for each image or remove them",
                names.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                },
                images.len()
            ),
        ));
    }
    for (_, path) in masks {
        skipped.push(Skipped {
            file: path,
            reason: "mask without an image".into(),
        });
    }

    // Headers: every image and mask must decode, and each pair must agree.
    let mut paths: Vec<&Path> = Vec::with_capacity(samples.len() * 2);
    for s in &samples {
        paths.push(&s.image_path);
        paths.push(s.mask_path.as_deref().unwrap_or(&s.image_path));
    }
    let dims = common::header_dimensions(&paths)?;
    for (s, pair) in samples.iter().zip(dims.chunks(2)) {
        let ((iw, ih), (mw, mh)) = (pair[0], pair[1]);
        if (iw, ih) != (mw, mh) {
            return Err(Error::image(
                s.mask_path.as_deref().unwrap_or(&s.image_path),
                format!(
                    "mask is {mw}×{mh} but its image {} is {iw}×{ih}",
                    s.rel_path
                ),
            ));
        }
    }

    // Natural order: train, testA, testB; then the number.
    let mut keyed: Vec<_> = order.into_iter().zip(samples).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let samples = keyed.into_iter().map(|(_, s)| s).collect();
    common::finish(
        Layout::Warwick,
        input,
        samples,
        skipped,
        Some(CLASSES.iter().map(|c| c.to_string()).collect()),
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, Rgb, RgbImage};
    use std::fs;

    const SAMPLE: &str = "/work/shared/glas-sample";
    const FULL: &str = "/work/shared/glas-grade-full.csv";

    fn write_pair(dir: &Path, name: &str) {
        RgbImage::from_pixel(8, 6, Rgb([200, 100, 150]))
            .save(dir.join(format!("{name}.bmp")))
            .unwrap();
        GrayImage::from_fn(8, 6, |x, _| Luma([(x / 4) as u8]))
            .save(dir.join(format!("{name}_anno.bmp")))
            .unwrap();
    }

    /// A folder with images for `names` and a Grade.csv with `csv` as its text.
    fn glas(names: &[&str], csv: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for n in names {
            write_pair(d.path(), n);
        }
        fs::write(d.path().join("Grade.csv"), csv).unwrap();
        d
    }

    const HEADER: &str = "name,patient ID, grade (GlaS), grade (Sirinukunwattana et al. 2015)";

    fn err(d: &tempfile::TempDir) -> String {
        load(d.path(), None).unwrap_err().to_string()
    }

    #[test]
    fn loads_all_line_ending_variants() {
        let rows = [
            "train_10,2, malignant, moderately differentiated",
            "testA_1,4, benign, adenomatous",
            "train_2,1, Benign , healthy",
            "testB_3,3, MALIGNANT, poorly differentiated",
        ];
        let names = ["train_10", "testA_1", "train_2", "testB_3"];
        let body = |sep: &str| format!("{HEADER}{sep}{}", rows.join(sep));
        for (label, text) in [
            ("CR", body("\r")),
            ("CRLF", body("\r\n") + "\r\n"),
            ("LF", body("\n") + "\n\n\n"),
            ("BOM", format!("\u{feff}{}", body("\n"))),
        ] {
            let d = glas(&names, &text);
            let ds = load(d.path(), None).unwrap_or_else(|e| panic!("{label}: {e}"));
            assert_eq!(ds.layout, Layout::Warwick);
            assert_eq!(ds.classes, vec!["benign", "malignant"]);
            let got: Vec<&str> = ds.samples.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(
                got,
                ["train_2", "train_10", "testA_1", "testB_3"],
                "{label}"
            );
            let s = &ds.samples[1];
            assert_eq!(s.class, "malignant");
            assert_eq!(s.patient.as_deref(), Some("2"));
            assert_eq!(s.subset.as_deref(), Some("train"));
            assert_eq!(s.rel_path, "train_10.bmp");
            assert_eq!(s.image_path, d.path().join("train_10.bmp"));
            assert_eq!(
                s.mask_path.as_deref(),
                Some(&*d.path().join("train_10_anno.bmp"))
            );
            assert!(s.boxes.is_empty());
            assert_eq!(ds.samples[0].class, "benign");
            assert_eq!(ds.samples[3].subset.as_deref(), Some("testB"));
            assert!(ds.skipped.is_empty());
        }
    }

    #[test]
    fn grade_csv_parses_from_bytes() {
        let text = format!("{HEADER}\rtrain_2.bmp,1, Benign \rtestB_10,3,malignant");
        let rows = parse_grade_csv(text.as_bytes(), Path::new("G.csv")).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0],
            GradeRow {
                line: 2,
                name: "train_2".into(),
                patient: "1".into(),
                class: "benign".into(),
                subset: "train".into(),
                number: 2,
            }
        );
        assert_eq!((rows[1].subset.as_str(), rows[1].number), ("testB", 10));
        let e = parse_grade_csv(b"", Path::new("G.csv")).unwrap_err();
        assert!(e.to_string().starts_with("G.csv: empty file"), "{e}");
    }

    #[test]
    fn stray_files_are_skipped() {
        let d = glas(&["train_1"], &format!("{HEADER}\ntrain_1,1,benign,x\n"));
        fs::write(d.path().join("Thumbs.db"), b"junk").unwrap();
        fs::write(d.path().join(".DS_Store"), b"junk").unwrap();
        GrayImage::new(8, 6)
            .save(d.path().join("train_9_anno.bmp"))
            .unwrap();
        let ds = load(d.path(), None).unwrap();
        assert_eq!(ds.samples.len(), 1);
        let files: Vec<_> = ds
            .skipped
            .iter()
            .map(|s| s.file.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(files, ["Thumbs.db", "train_9_anno.bmp"]);
    }

    #[test]
    fn missing_grade_csv() {
        let d = tempfile::tempdir().unwrap();
        write_pair(d.path(), "train_1");
        let e = err(&d);
        assert!(
            e.ends_with("Grade.csv: not found — is this the Warwick-QU (GlaS) folder?"),
            "{e}"
        );
    }

    #[test]
    fn empty_and_header_only() {
        let d = glas(&["train_1"], "");
        let e = err(&d);
        assert!(e.contains("Grade.csv") && e.contains("empty file"), "{e}");
        let d = glas(&["train_1"], "\r\n\r\n");
        assert!(err(&d).contains("empty file"));
        let d = glas(&["train_1"], &format!("{HEADER}\r\r"));
        let e = err(&d);
        assert!(
            e.contains("Grade.csv") && e.contains("header but no rows"),
            "{e}"
        );
    }

    #[test]
    fn header_without_required_columns() {
        let d = glas(&["train_1"], "name,grade\ntrain_1,benign\n");
        let e = err(&d);
        assert!(
            e.contains("Grade.csv: line 1: header lacks column(s) patient ID"),
            "{e}"
        );
        assert!(e.contains("header is: name, grade"), "{e}");
    }

    #[test]
    fn row_errors_have_line_numbers() {
        let cases = [
            (
                "train_1,1,benighn,x",
                "line 3: unknown grade \"benighn\" (expected benign or malignant)",
            ),
            (
                "train_1,P7,benign,x",
                "line 3: patient ID \"P7\" is not an integer",
            ),
            ("train_1,1", "line 3: 2 field(s), expected at least 3"),
            (
                "val_1,1,benign,x",
                "line 3: name \"val_1\" should be train_<number>",
            ),
            ("train_x,1,benign,x", "name \"train_x\" should be"),
            (
                "train_2,1,benign,x",
                "line 3: \"train_2\" is listed twice (first on line 2)",
            ),
        ];
        for (row, want) in cases {
            let csv = format!("{HEADER}\rtrain_2,1,benign,x\r{row}");
            let d = glas(&["train_1", "train_2"], &csv);
            let e = err(&d);
            assert!(e.contains("Grade.csv: ") && e.contains(want), "{row}: {e}");
        }
    }

    #[test]
    fn row_without_image_and_image_without_row() {
        let d = glas(
            &["train_1"],
            &format!("{HEADER}\ntrain_1,1,benign\ntrain_3,1,benign\n"),
        );
        let e = err(&d);
        assert!(
            e.contains("Grade.csv: line 3: image train_3.bmp not found"),
            "{e}"
        );

        let d = glas(
            &["train_1", "testA_4"],
            &format!("{HEADER}\ntrain_1,1,benign\n"),
        );
        let e = err(&d);
        assert!(e.contains("Grade.csv: no row for testA_4.bmp"), "{e}");
    }

    #[test]
    fn missing_mask_and_mismatched_mask() {
        let d = glas(&["train_1"], &format!("{HEADER}\ntrain_1,1,benign\n"));
        fs::remove_file(d.path().join("train_1_anno.bmp")).unwrap();
        let e = err(&d);
        assert!(e.contains("train_1_anno.bmp: not found"), "{e}");
        assert!(e.contains("line 2"), "{e}");

        let d = glas(&["train_1"], &format!("{HEADER}\ntrain_1,1,benign\n"));
        GrayImage::new(9, 6)
            .save(d.path().join("train_1_anno.bmp"))
            .unwrap();
        let e = err(&d);
        assert!(
            e.contains("train_1_anno.bmp: mask is 9×6 but its image train_1.bmp is 8×6"),
            "{e}"
        );
    }

    #[test]
    fn undecodable_image_is_named() {
        let d = glas(&["train_1"], &format!("{HEADER}\ntrain_1,1,benign\n"));
        fs::write(d.path().join("train_1.bmp"), b"").unwrap();
        let e = err(&d);
        assert!(e.contains("train_1.bmp: empty file"), "{e}");
    }

    #[test]
    fn not_a_folder() {
        let d = tempfile::tempdir().unwrap();
        let e = load(&d.path().join("nope"), None).unwrap_err().to_string();
        assert!(e.contains("nope: not found"), "{e}");
    }

    #[test]
    fn real_sample_folder() {
        if !Path::new(SAMPLE).exists() {
            return;
        }
        let ds = load(Path::new(SAMPLE), None).unwrap();
        let names: Vec<&str> = ds.samples.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "testA_25", "testA_26", "testA_30", "testA_34", "testB_1", "testB_4"
            ]
        );
        let s = &ds.samples[1];
        assert_eq!(
            (s.class.as_str(), s.patient.as_deref(), s.subset.as_deref()),
            ("malignant", Some("7"), Some("testA"))
        );
        assert_eq!(ds.samples[0].class, "benign");
        assert!(ds.skipped.is_empty());
    }

    #[test]
    fn real_full_grade_csv() {
        if !Path::new(FULL).exists() {
            return;
        }
        let rows = read_grade_csv(Path::new(FULL)).unwrap();
        assert_eq!(rows.len(), 165);
        let count = |f: &dyn Fn(&GradeRow) -> bool| rows.iter().filter(|r| f(r)).count();
        assert_eq!(count(&|r| r.subset == "train"), 85);
        assert_eq!(count(&|r| r.subset == "testA"), 60);
        assert_eq!(count(&|r| r.subset == "testB"), 20);
        assert_eq!(count(&|r| r.subset == "train" && r.class == "benign"), 37);
        assert_eq!(
            count(&|r| r.subset == "train" && r.class == "malignant"),
            48
        );
        assert_eq!(rows[0].line, 2);
        assert_eq!(rows[164].line, 166);
        assert!(rows.iter().all(|r| !r.patient.is_empty()));
    }
}
