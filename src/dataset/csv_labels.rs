//! Labels in a CSV file. The input is the `.csv` itself (the root is its
//! folder) or a folder holding exactly one `.csv`. A header row is required;
//! header names are matched trimmed and case-insensitively. Two formats:
//!
//! 1. `filename,label[,patient][,split]` — one row per image. `class` is
//!    accepted for `label`, `patient_id` for `patient`, `subset` for `split`.
//!    Split values: `train`, `val`, `test` (any case; `training`,
//!    `validation`/`valid`, `testing` are read as those). Empty patient/split
//!    cells mean "not given". A file listed twice with the same values is one
//!    sample; with different values it is an error.
//! 2. `filename,width,height,class,xmin,ymin,xmax,ymax` — the TF
//!    object-detection tutorials' `xml_to_csv` output, one row per box (recognised
//!    by the `xmin` column). Rows are grouped by (filename, class) into samples
//!    with boxes, named as in VOC. `width`/`height` are checked to be numbers
//!    but the image header gives the size boxes are clamped to.
//!
//! Filenames are relative to the CSV's folder and must stay inside it. Sample
//! names are the file's path without extension (`imgs/a`), plus `#class` in
//! format 2 when an image has boxes of several classes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::common::{self, CsvTable, Resolved};
use super::walk;
use super::{BBox, Dataset, Layout, Sample};
use crate::error::{Error, Result};
use crate::fsutil;

/// Label CSVs larger than this are refused (a million rows is ~50 MiB).
pub const MAX_LABEL_CSV_BYTES: u64 = 64 << 20;

/// The `.csv` to read for `input` (the file itself, or the only `.csv` in a folder).
pub fn find_csv(input: &Path, ex: &walk::Exclude) -> Result<PathBuf> {
    let md = std::fs::metadata(input).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::input(input, "not found"),
        _ => Error::io(input, e),
    })?;
    if !md.is_dir() {
        // A file, or a FIFO or device that reading refuses by name.
        return Ok(input.to_path_buf());
    }
    let csvs: Vec<PathBuf> = walk::list_dir(input, ex)?
        .into_iter()
        .filter(|p| !p.is_dir() && common::ext_lower(p).as_deref() == Some("csv"))
        .collect();
    match csvs.len() {
        0 => Err(Error::input(
            input,
            "no .csv file here; expected a CSV with a filename,label header",
        )),
        1 => Ok(csvs.into_iter().next().unwrap_or_default()),
        n => Err(Error::input(
            input,
            format!(
                "holds {n} .csv files ({}); pass the one to use",
                csvs.iter()
                    .map(|p| p.file_name().unwrap_or_default().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// Reads `input`; `output`, when it lies inside, is never read.
pub fn load(input: &Path, output: Option<&Path>) -> Result<Dataset> {
    // A folder input is listed without its output sub-folder (its manifest.csv).
    let listing = match std::fs::metadata(input) {
        Ok(md) if md.is_dir() => walk::Exclude::for_root(output, input)?,
        _ => walk::Exclude::none(),
    };
    let csv_path = find_csv(input, &listing)?;
    let root = common::parent_or_dot(&csv_path);
    let root_canon = common::canonical_root(&root)?;
    let ex = walk::Exclude::for_root(output, &root)?;
    let bytes = fsutil::read_limited(&csv_path, MAX_LABEL_CSV_BYTES, "a label CSV")?;
    let table = parse_label_csv(&bytes, &csv_path)?;
    let ctx = Ctx {
        csv: &csv_path,
        root: &root,
        root_canon: &root_canon,
        ex: &ex,
    };
    let samples = match table {
        LabelTable::Labels(rows) => ctx.label_samples(rows)?,
        LabelTable::Boxes(rows) => ctx.box_samples(rows)?,
    };
    common::finish(Layout::Csv, &root, samples, Vec::new(), None, false)
}

/// A label CSV checked row by row, before any file it names is looked up.
#[derive(Clone, Debug, PartialEq)]
pub enum LabelTable {
    /// Format 1: `filename,label[,patient][,split]`.
    Labels(Vec<LabelRow>),
    /// Format 2: `filename,width,height,class,xmin,ymin,xmax,ymax`.
    Boxes(Vec<BoxRow>),
}

/// One row of format 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelRow {
    /// 1-based line in the file (the header is line 1 or later).
    pub line: u64,
    /// The filename cell as written (trimmed), not yet resolved.
    pub file: String,
    /// Not empty.
    pub label: String,
    /// `None` when there is no patient column or the cell is empty.
    pub patient: Option<String>,
    /// `train`, `val` or `test`; `None` when not given.
    pub subset: Option<&'static str>,
}

/// One row of format 2: one box.
#[derive(Clone, Debug, PartialEq)]
pub struct BoxRow {
    pub line: u64,
    /// The filename cell as written (trimmed), not yet resolved.
    pub file: String,
    /// Not empty.
    pub class: String,
    /// `xmin, ymin, xmax, ymax`, finite and rounded, not yet checked against the image.
    pub coords: [f64; 4],
}

/// Parses and checks the bytes of a label CSV: the header, which format it is,
/// and every cell that can be checked without the images. Touches no file;
/// `csv` only names the file in errors.
pub fn parse_label_csv(bytes: &[u8], csv: &Path) -> Result<LabelTable> {
    let table = common::parse_csv_table(bytes, csv)?;
    let p = Parse { csv, table: &table };
    if table.column(&["xmin"]).is_some() {
        p.boxes().map(LabelTable::Boxes)
    } else {
        p.labels().map(LabelTable::Labels)
    }
}

const FORMATS: &str = "expected filename,label[,patient][,split] or \
                       filename,width,height,class,xmin,ymin,xmax,ymax";

/// The file-free half: a CSV table to rows.
struct Parse<'a> {
    csv: &'a Path,
    table: &'a CsvTable,
}

impl Parse<'_> {
    fn err(&self, msg: String) -> Error {
        Error::input(self.csv, msg)
    }

    /// Index of a required column, or an error naming it.
    fn required(&self, names: &[&str]) -> Result<usize> {
        self.table.column(names).ok_or_else(|| {
            self.err(format!(
                "line 1: no \"{}\" column (header is: {}); {FORMATS}",
                names[0],
                self.table.header_list()
            ))
        })
    }

    /// The fields of each row, checked to reach column `need - 1`.
    fn rows(&self, need: usize) -> Result<impl Iterator<Item = (u64, &[String])>> {
        if self.table.rows.is_empty() {
            return Err(self.err("has a header but no rows".to_string()));
        }
        if let Some((line, f)) = self.table.rows.iter().find(|(_, f)| f.len() < need) {
            return Err(self.err(format!(
                "line {line}: {} field(s), expected at least {need} (header is: {})",
                f.len(),
                self.table.header_list()
            )));
        }
        Ok(self.table.rows.iter().map(|(l, f)| (*l, f.as_slice())))
    }

    /// Format 1: `filename,label[,patient][,split]`.
    fn labels(&self) -> Result<Vec<LabelRow>> {
        let file_col = self.required(&["filename"])?;
        let label_col = self.required(&["label", "class"])?;
        let patient_col = self.table.column(&["patient", "patient_id", "patient id"]);
        let split_col = self.table.column(&["split", "subset"]);
        let need = [Some(file_col), Some(label_col), patient_col, split_col]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(0)
            + 1;
        let get =
            |f: &[String], c: Option<usize>| c.map(|c| f[c].clone()).filter(|v| !v.is_empty());

        let mut out = Vec::with_capacity(self.table.rows.len());
        for (line, f) in self.rows(need)? {
            let label = f[label_col].as_str();
            if label.is_empty() {
                return Err(self.err(format!("line {line}: empty label")));
            }
            let subset = match get(f, split_col) {
                None => None,
                Some(v) => Some(normalize_split(&v).ok_or_else(|| {
                    self.err(format!(
                        "line {line}: unknown split \"{v}\" (expected train, val or test)"
                    ))
                })?),
            };
            out.push(LabelRow {
                line,
                file: f[file_col].clone(),
                label: label.to_string(),
                patient: get(f, patient_col),
                subset,
            });
        }
        Ok(out)
    }

    /// Format 2: one row per box.
    fn boxes(&self) -> Result<Vec<BoxRow>> {
        let file_col = self.required(&["filename"])?;
        let class_col = self.required(&["class", "label"])?;
        let coord_cols = [
            self.required(&["xmin"])?,
            self.required(&["ymin"])?,
            self.required(&["xmax"])?,
            self.required(&["ymax"])?,
        ];
        let size_cols = [
            self.table.column(&["width"]),
            self.table.column(&["height"]),
        ];
        let need = coord_cols
            .iter()
            .copied()
            .chain([file_col, class_col])
            .chain(size_cols.iter().flatten().copied())
            .max()
            .unwrap_or(0)
            + 1;

        let mut out = Vec::with_capacity(self.table.rows.len());
        for (line, f) in self.rows(need)? {
            let class = f[class_col].as_str();
            if class.is_empty() {
                return Err(self.err(format!("line {line}: empty class")));
            }
            for (col, what) in size_cols.iter().zip(["width", "height"]) {
                if let Some(c) = col
                    && f[*c].parse::<u32>().is_err()
                {
                    return Err(self.err(format!(
                        "line {line}: {what} \"{}\" is not a whole number",
                        f[*c]
                    )));
                }
            }
            let mut coords = [0.0; 4];
            for ((slot, col), what) in coords
                .iter_mut()
                .zip(coord_cols)
                .zip(["xmin", "ymin", "xmax", "ymax"])
            {
                *slot = common::parse_coord(&f[col], what)
                    .map_err(|m| self.err(format!("line {line}: {m}")))?;
            }
            out.push(BoxRow {
                line,
                file: f[file_col].clone(),
                class: class.to_string(),
                coords,
            });
        }
        Ok(out)
    }
}

/// The half that looks at files: rows to samples.
struct Ctx<'a> {
    csv: &'a Path,
    root: &'a Path,
    root_canon: &'a Path,
    ex: &'a walk::Exclude,
}

impl Ctx<'_> {
    fn err(&self, msg: String) -> Error {
        Error::input(self.csv, msg)
    }

    fn resolve(&self, line: u64, value: &str) -> Result<Resolved> {
        let r = common::resolve_inside(
            self.root,
            self.root_canon,
            self.ex,
            "",
            value,
            self.csv,
            &format!("line {line}"),
        )?;
        if !common::is_image_file_name(&r.image_path) {
            return Err(self.err(format!(
                "line {line}: \"{value}\" is not an image file (expected {})",
                common::IMAGE_EXTENSIONS.join(", ")
            )));
        }
        Ok(r)
    }

    /// Format 1: a sample per file; a file listed twice must agree with itself.
    fn label_samples(&self, rows: Vec<LabelRow>) -> Result<Vec<Sample>> {
        let mut by_file: BTreeMap<String, (u64, Sample)> = BTreeMap::new();
        let mut checked: Vec<PathBuf> = Vec::new();
        for row in rows {
            let line = row.line;
            let r = self.resolve(line, &row.file)?;
            let sample = Sample {
                name: common::strip_ext(&r.rel_path).to_string(),
                image_path: r.image_path,
                rel_path: r.rel_path,
                mask_path: None,
                class: row.label,
                patient: row.patient,
                subset: row.subset.map(str::to_string),
                boxes: Vec::new(),
            };
            match by_file.get(&sample.rel_path) {
                Some((prev_line, prev)) if prev.class != sample.class => {
                    return Err(self.err(format!(
                        "line {line}: {} is labelled \"{}\" but line {prev_line} says \"{}\"",
                        sample.rel_path, sample.class, prev.class
                    )));
                }
                Some((prev_line, prev)) if *prev != sample => {
                    return Err(self.err(format!(
                        "line {line}: {} is listed again (line {prev_line}) with a different patient or split",
                        sample.rel_path
                    )));
                }
                Some(_) => {}
                None => {
                    checked.push(sample.image_path.clone());
                    by_file.insert(sample.rel_path.clone(), (line, sample));
                }
            }
        }
        let paths: Vec<&Path> = checked.iter().map(PathBuf::as_path).collect();
        common::header_dimensions(&paths)?;
        Ok(by_file.into_values().map(|(_, s)| s).collect())
    }

    /// Format 2: boxes grouped by (file, class), clamped to each image.
    fn box_samples(&self, rows: Vec<BoxRow>) -> Result<Vec<Sample>> {
        // Resolve each distinct file once.
        let mut files: BTreeMap<String, Resolved> = BTreeMap::new();
        let mut rels = Vec::with_capacity(rows.len());
        for row in &rows {
            let r = self.resolve(row.line, &row.file)?;
            let rel = r.rel_path.clone();
            files.entry(rel.clone()).or_insert(r);
            rels.push(rel);
        }

        let paths: Vec<&Path> = files.values().map(|r| r.image_path.as_path()).collect();
        let dims: HashMap<&str, (u32, u32)> = files
            .keys()
            .map(String::as_str)
            .zip(common::header_dimensions(&paths)?)
            .collect();

        let mut grouped: BTreeMap<&str, BTreeMap<String, Vec<BBox>>> = BTreeMap::new();
        for (row, rel) in rows.into_iter().zip(&rels) {
            let size = dims.get(rel.as_str()).copied().unwrap_or((0, 0));
            let b = common::make_box(row.coords, size)
                .map_err(|m| self.err(format!("line {}: {rel}: {m}", row.line)))?;
            grouped
                .entry(rel.as_str())
                .or_default()
                .entry(row.class)
                .or_default()
                .push(b);
        }
        let mut samples = Vec::new();
        for (rel, by_class) in grouped {
            let Some(r) = files.get(rel) else { continue };
            samples.extend(common::samples_per_class(
                common::strip_ext(rel),
                &r.image_path,
                rel,
                by_class,
            ));
        }
        Ok(samples)
    }
}

/// `train`/`val`/`test` (and their long forms), any case.
fn normalize_split(v: &str) -> Option<&'static str> {
    match v.to_ascii_lowercase().as_str() {
        "train" | "training" => Some("train"),
        "val" | "valid" | "validation" => Some("val"),
        "test" | "testing" => Some("test"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    use crate::dataset::common::write_test_image as img;

    fn setup(csv: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        img(&d.path().join("a.png"), 40, 30);
        img(&d.path().join("imgs/b.jpg"), 20, 20);
        img(&d.path().join("c.tif"), 10, 10);
        fs::write(d.path().join("labels.csv"), csv).unwrap();
        d
    }

    fn err(d: &tempfile::TempDir) -> String {
        load(&d.path().join("labels.csv"), None)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn label_format_full() {
        let d = setup(
            "\u{feff}Filename, Class ,patient_id,Subset\r\n\
             imgs/b.jpg,tumour,P2,Validation\r\n\
             a.png,normal,P1,train\r\n\
             c.tif,tumour,,\r\n\
             a.png,normal,P1,TRAIN\r\n",
        );
        for input in [d.path().join("labels.csv"), d.path().to_path_buf()] {
            let ds = load(&input, None).unwrap();
            assert_eq!(ds.layout, Layout::Csv);
            assert_eq!(ds.root, d.path());
            assert_eq!(ds.classes, ["normal", "tumour"]);
            let names: Vec<&str> = ds.samples.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(names, ["a", "c", "imgs/b"]);
            let b = &ds.samples[2];
            assert_eq!(b.rel_path, "imgs/b.jpg");
            assert_eq!(b.image_path, d.path().join("imgs/b.jpg"));
            assert_eq!(b.patient.as_deref(), Some("P2"));
            assert_eq!(b.subset.as_deref(), Some("val"));
            assert_eq!(ds.samples[1].patient, None);
            assert_eq!(ds.samples[1].subset, None);
            assert!(b.boxes.is_empty() && b.mask_path.is_none());
        }
    }

    #[test]
    fn parsing_needs_no_files() {
        let p = Path::new("nowhere/l.csv");
        let t = parse_label_csv(b"filename,label,split\rmissing.png, x ,Training", p).unwrap();
        assert_eq!(
            t,
            LabelTable::Labels(vec![LabelRow {
                line: 2,
                file: "missing.png".into(),
                label: "x".into(),
                patient: None,
                subset: Some("train"),
            }])
        );
        let t = parse_label_csv(
            b"filename,class,xmin,ymin,xmax,ymax\nm.png,g,1,2.6,3,4\n",
            p,
        )
        .unwrap();
        assert_eq!(
            t,
            LabelTable::Boxes(vec![BoxRow {
                line: 2,
                file: "m.png".into(),
                class: "g".into(),
                coords: [1.0, 3.0, 3.0, 4.0],
            }])
        );
        let e = parse_label_csv(b"filename,label\na.png,\n", p).unwrap_err();
        assert_eq!(e.to_string(), "nowhere/l.csv: line 2: empty label");
    }

    #[test]
    fn minimal_label_format_with_cr_endings() {
        let d = setup("filename,label\ra.png,x\rc.tif,y");
        let ds = load(&d.path().join("labels.csv"), None).unwrap();
        assert_eq!(ds.samples.len(), 2);
        assert_eq!(ds.samples[0].class, "x");
    }

    #[test]
    fn label_format_errors() {
        let cases = [
            (
                "name,label\na.png,x\n",
                "labels.csv: line 1: no \"filename\" column (header is: name, label)",
            ),
            ("filename,kind\na.png,x\n", "line 1: no \"label\" column"),
            (
                "filename,label\na.png,\n",
                "labels.csv: line 2: empty label",
            ),
            (
                "filename,label,split\na.png,x,holdout\n",
                "line 2: unknown split \"holdout\" (expected train, val or test)",
            ),
            (
                "filename,label\na.png,x\n\na.png,y\n",
                "line 4: a.png is labelled \"y\" but line 2 says \"x\"",
            ),
            (
                "filename,label,patient\na.png,x,1\na.png,x,2\n",
                "line 3: a.png is listed again (line 2)",
            ),
            (
                "filename,label,split\na.png,x\n",
                "line 2: 2 field(s), expected at least 3",
            ),
            (
                "filename,label\nmissing.png,x\n",
                "line 2: image \"missing.png\" not found",
            ),
            (
                "filename,label\n../a.png,x\n",
                "line 2: \"../a.png\" contains \"..\"",
            ),
            (
                "filename,label\n/etc/passwd,x\n",
                "line 2: \"/etc/passwd\" is an absolute path",
            ),
            (
                "filename,label\nimgs,x\n",
                "line 2: \"imgs\" is not a regular file",
            ),
            (
                "filename,label\nlabels.csv,x\n",
                "line 2: \"labels.csv\" is not an image file",
            ),
            ("filename,label\n", "labels.csv: has a header but no rows"),
            ("", "labels.csv: empty file"),
        ];
        for (csv, want) in cases {
            let d = setup(csv);
            let e = err(&d);
            assert!(e.contains(want), "{csv:?}: {e}");
        }
    }

    #[test]
    fn box_format_groups_by_file_and_class() {
        let d = setup(
            "filename,width,height,class,xmin,ymin,xmax,ymax\n\
             a.png,40,30,gland,1,2,10,12\n\
             a.png,40,30,tumour,5,5,99,99\n\
             a.png,40,30,gland,20.4,3,30,9.6\n\
             imgs/b.jpg,20,20,gland,0,0,20,20\n",
        );
        let ds = load(d.path(), None).unwrap();
        let names: Vec<&str> = ds.samples.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a#gland", "a#tumour", "imgs/b"]);
        assert_eq!(
            ds.samples[0].boxes,
            [
                BBox {
                    xmin: 1,
                    ymin: 2,
                    xmax: 10,
                    ymax: 12
                },
                BBox {
                    xmin: 20,
                    ymin: 3,
                    xmax: 30,
                    ymax: 10
                }
            ]
        );
        assert_eq!(
            ds.samples[1].boxes,
            [BBox {
                xmin: 5,
                ymin: 5,
                xmax: 40,
                ymax: 30
            }]
        );
        assert_eq!(ds.samples[2].class, "gland");
        assert_eq!(ds.classes, ["gland", "tumour"]);
    }

    #[test]
    fn box_format_errors() {
        let h = "filename,width,height,class,xmin,ymin,xmax,ymax\n";
        let cases = [
            (
                "a.png,40,30,g,1,2,x,12",
                "line 2: xmax \"x\" is not a number",
            ),
            (
                "a.png,forty,30,g,1,2,3,12",
                "line 2: width \"forty\" is not a whole number",
            ),
            ("a.png,40,30,,1,2,3,12", "line 2: empty class"),
            (
                "a.png,40,30,g,10,2,3,12",
                "line 2: a.png: inverted or empty box",
            ),
            (
                "a.png,40,30,g,50,2,60,12",
                "line 2: a.png: box (50, 2)–(60, 12) lies wholly outside the 40×30 image",
            ),
            (
                "a.png,40,30,g,-1,2,3,12",
                "line 2: a.png: negative coordinate",
            ),
            ("../x.png,40,30,g,1,2,3,12", "contains \"..\""),
        ];
        for (row, want) in cases {
            let d = setup(&format!("{h}{row}\n"));
            let e = err(&d);
            assert!(e.contains("labels.csv: ") && e.contains(want), "{row}: {e}");
        }
        let d = setup("filename,class,xmin,ymin,xmax\na.png,g,1,2,3\n");
        assert!(err(&d).contains("line 1: no \"ymax\" column"));
    }

    #[test]
    fn folder_with_several_or_no_csvs() {
        let d = setup("filename,label\na.png,x\n");
        fs::write(d.path().join("other.csv"), "filename,label\n").unwrap();
        let e = load(d.path(), None).unwrap_err().to_string();
        assert!(
            e.contains("holds 2 .csv files (labels.csv, other.csv); pass the one to use"),
            "{e}"
        );
        let empty = tempfile::tempdir().unwrap();
        let e = load(empty.path(), None).unwrap_err().to_string();
        assert!(e.contains("no .csv file here"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn symlink_out_of_root_is_refused() {
        let outer = tempfile::tempdir().unwrap();
        let r = outer.path().join("data");
        fs::create_dir(&r).unwrap();
        img(&outer.path().join("secret.png"), 10, 10);
        std::os::unix::fs::symlink(outer.path().join("secret.png"), r.join("s.png")).unwrap();
        fs::write(r.join("l.csv"), "filename,label\ns.png,x\n").unwrap();
        let e = load(&r.join("l.csv"), None).unwrap_err().to_string();
        assert!(
            e.contains("l.csv: line 2: \"s.png\" resolves to") && e.contains("outside"),
            "{e}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_csv_is_an_error() {
        let d = setup("");
        fs::write(
            d.path().join("labels.csv"),
            b"filename,label\na\xff.png,x\n",
        )
        .unwrap();
        let e = err(&d);
        assert!(e.contains("labels.csv: line 2: not UTF-8"), "{e}");
    }
}
