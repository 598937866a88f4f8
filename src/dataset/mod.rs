//! Reading the labelled images users have. Every layout produces the same
//! [`Sample`]s, so nothing downstream knows where the labels came from.

mod bmp24;
mod common;
pub mod csv_labels;
pub mod folders;
pub mod image_io;
pub mod voc;
mod walk;
pub mod warwick;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use common::{IMAGE_EXTENSIONS, is_image_file_name};
pub use walk::SHEET_FILE;

/// How the input folder is organised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Warwick,
    Voc,
    Csv,
    Folders,
}

crate::choices!(Layout {
    Warwick = "warwick": "The Warwick-QU (GlaS) download: `<name>.bmp`, `<name>_anno.bmp`, `Grade.csv`",
    Voc = "voc": "labelImg Pascal-VOC: one `.xml` per image with `<object><name>` and `<bndbox>`",
    Csv = "csv": "A CSV: `filename,label[,patient][,split]` or the TF object-detection `filename,width,height,class,xmin,ymin,xmax,ymax`",
    Folders = "folders": "One sub-folder per class: `root/<class>/*.{png,jpg,bmp,tif}`",
});

/// A region of a source image, in source pixels; `xmax`/`ymax` are exclusive.
/// Patches are only cut where they lie inside a box, when a sample has boxes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BBox {
    pub xmin: u32,
    pub ymin: u32,
    pub xmax: u32,
    pub ymax: u32,
}

/// One labelled source image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Unique, stable name (GlaS: `train_12`); becomes `image/source_id`.
    pub name: String,
    /// Where the image is on disk (input root joined with `rel_path`).
    pub image_path: PathBuf,
    /// The image path relative to the input root, `/`-separated; becomes `image/filename`.
    pub rel_path: String,
    /// The gland/instance mask (8-bit, 0 = background), when the layout has one.
    pub mask_path: Option<PathBuf>,
    /// Class name (GlaS: `benign` / `malignant`).
    pub class: String,
    /// Patient identifier, when the source gives one.
    pub patient: Option<String>,
    /// The source's own split (GlaS: `train`, `testA`, `testB`; CSV: its split column).
    pub subset: Option<String>,
    /// Regions that restrict where patches are cut; empty means the whole image.
    pub boxes: Vec<BBox>,
}

/// An input read and validated: samples sorted by name, classes sorted.
#[derive(Clone, Debug, Serialize)]
pub struct Dataset {
    pub layout: Layout,
    pub root: PathBuf,
    /// Class names; a sample's label is its class's index here.
    pub classes: Vec<String>,
    pub samples: Vec<Sample>,
    /// Files ignored with a warning (not an error), reported in `prepare.json`.
    pub skipped: Vec<Skipped>,
}

/// A file left out, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub file: PathBuf,
    pub reason: String,
}

impl Dataset {
    /// Index of `class` in [`Dataset::classes`].
    pub fn label_of(&self, class: &str) -> Option<usize> {
        self.classes.iter().position(|c| c == class)
    }
}

/// Guesses the layout of `input`, checking in this order:
/// 1. a file ending in `.csv` → CSV;
/// 2. a folder holding `Grade.csv` (any case) → Warwick;
/// 3. a folder with `.xml` files at its top level (or in `Annotations/`) → VOC;
/// 4. a folder with exactly one `.csv` at its top level → CSV;
/// 5. a folder with sub-folders holding images → folders.
///
/// Hidden entries (leading `.`) and `output`, when it lies inside `input`,
/// are ignored. Files are told by name: a FIFO or device called `Grade.csv`
/// is detected as such, and reading it refuses it by name. Anything else is
/// an error that lists what was looked for.
pub fn detect_layout(input: &Path, output: Option<&Path>) -> Result<Layout> {
    let md = std::fs::metadata(input).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::input(input, "not found"),
        _ => Error::io(input, e),
    })?;
    if !md.is_dir() {
        return if common::ext_lower(input).as_deref() == Some("csv") {
            Ok(Layout::Csv)
        } else {
            Err(Error::input(
                input,
                "not a folder or a .csv file; pass the data set's folder (or its labels .csv)",
            ))
        };
    }
    let ex = walk::Exclude::for_root(output, input)?;
    let entries = walk::list_dir(input, &ex)?;
    let is_file = |p: &&PathBuf| !p.is_dir();
    let name_lower = |p: &PathBuf| {
        p.file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default()
    };
    if entries
        .iter()
        .filter(is_file)
        .any(|p| name_lower(p) == "grade.csv")
    {
        return Ok(Layout::Warwick);
    }
    let has_xml = |dir: &Path| {
        walk::list_dir(dir, &ex).is_ok_and(|es| {
            es.iter()
                .any(|p| !p.is_dir() && common::ext_lower(p).as_deref() == Some("xml"))
        })
    };
    // Top-level .xml files, or the classic VOC tree's `Annotations/` folder.
    if has_xml(input)
        || entries
            .iter()
            .any(|p| p.is_dir() && name_lower(p) == "annotations" && has_xml(p))
    {
        return Ok(Layout::Voc);
    }
    let csvs: Vec<&PathBuf> = entries
        .iter()
        .filter(is_file)
        .filter(|p| common::ext_lower(p).as_deref() == Some("csv"))
        .collect();
    if csvs.len() == 1 {
        return Ok(Layout::Csv);
    }
    if entries
        .iter()
        .any(|p| p.is_dir() && walk::holds_images(p, &ex))
    {
        return Ok(Layout::Folders);
    }
    if csvs.len() > 1 {
        let names: Vec<String> = csvs
            .iter()
            .map(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        return Err(Error::input(
            input,
            format!(
                "holds {} .csv files ({}); pass the one to use",
                csvs.len(),
                names.join(", ")
            ),
        ));
    }
    Err(Error::input(
        input,
        "cannot tell the layout: found no Grade.csv (Warwick-QU/GlaS), no .xml files (Pascal-VOC), \
         no .csv file (CSV labels) and no sub-folders holding images (a folder per class); \
         check the path or pass --layout",
    ))
}

/// Reads `input` in the given (or detected) layout. `output`, the folder
/// the data set will be written to, is never read when it lies inside
/// `input`, and may not be `input` itself: a later run would read what this
/// one wrote (a contact sheet became a class).
pub fn load(input: &Path, layout: Option<Layout>, output: Option<&Path>) -> Result<Dataset> {
    let layout = match layout {
        Some(l) => l,
        None => detect_layout(input, output)?,
    };
    match layout {
        Layout::Warwick => warwick::load(input, output),
        Layout::Voc => voc::load(input, output),
        Layout::Csv => csv_labels::load(input, output),
        Layout::Folders => folders::load(input, output),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn png(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::new(4, 4).save(path).unwrap();
    }

    #[test]
    fn detects_each_layout() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();

        let csv_file = r.join("x/labels.CSV");
        fs::create_dir_all(r.join("x")).unwrap();
        fs::write(&csv_file, "filename,label\n").unwrap();
        assert_eq!(detect_layout(&csv_file, None).unwrap(), Layout::Csv);
        assert_eq!(detect_layout(&r.join("x"), None).unwrap(), Layout::Csv);

        let w = r.join("w");
        png(&w.join("train_1.bmp"));
        fs::write(w.join("Grade.csv"), "name\n").unwrap();
        fs::write(w.join("other.csv"), "").unwrap();
        fs::write(w.join("a.xml"), "").unwrap();
        assert_eq!(detect_layout(&w, None).unwrap(), Layout::Warwick);

        let v = r.join("v");
        png(&v.join("a.png"));
        fs::write(v.join("a.xml"), "").unwrap();
        fs::write(v.join("labels.csv"), "").unwrap();
        assert_eq!(detect_layout(&v, None).unwrap(), Layout::Voc);

        let t = r.join("voc_tree");
        png(&t.join("JPEGImages/1.jpg"));
        fs::create_dir_all(t.join("Annotations")).unwrap();
        fs::write(t.join("Annotations/1.xml"), "").unwrap();
        assert_eq!(detect_layout(&t, None).unwrap(), Layout::Voc);

        let f = r.join("f");
        png(&f.join("tumour/deep/a.png"));
        fs::write(f.join("a.csv"), "").unwrap();
        fs::write(f.join("b.csv"), "").unwrap();
        assert_eq!(detect_layout(&f, None).unwrap(), Layout::Folders);
    }

    #[test]
    fn detection_errors() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let e = detect_layout(&r.join("missing"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing: not found"), "{e}");

        let e = detect_layout(r, None).unwrap_err().to_string();
        assert!(e.contains("cannot tell the layout"), "{e}");
        assert!(
            e.contains("Grade.csv") && e.contains(".xml") && e.contains("--layout"),
            "{e}"
        );

        fs::write(r.join("a.csv"), "").unwrap();
        fs::write(r.join("b.csv"), "").unwrap();
        fs::create_dir_all(r.join("sub")).unwrap();
        fs::write(r.join("sub/notes.txt"), "").unwrap();
        let e = detect_layout(r, None).unwrap_err().to_string();
        assert!(
            e.contains("holds 2 .csv files (a.csv, b.csv); pass the one to use"),
            "{e}"
        );

        let txt = r.join("x.txt");
        fs::write(&txt, "").unwrap();
        let e = detect_layout(&txt, None).unwrap_err().to_string();
        assert!(e.contains("x.txt: not a folder or a .csv file"), "{e}");
    }

    #[test]
    fn load_dispatches_on_detection() {
        let d = tempfile::tempdir().unwrap();
        png(&d.path().join("a/x.png"));
        let ds = load(d.path(), None, None).unwrap();
        assert_eq!(ds.layout, Layout::Folders);
        assert_eq!(ds.label_of("a"), Some(0));
        assert_eq!(ds.label_of("b"), None);
    }
}
