//! Reading the labelled images users have. Every layout produces the same
//! [`Sample`]s, so nothing downstream knows where the labels came from.

pub mod csv_labels;
pub mod folders;
pub mod image_io;
pub mod voc;
pub mod warwick;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// How the input folder is organised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// The Warwick-QU (GlaS) download: `<name>.bmp`, `<name>_anno.bmp`, `Grade.csv`.
    Warwick,
    /// labelImg Pascal-VOC: one `.xml` per image with `<object><name>` and `<bndbox>`.
    Voc,
    /// A CSV: `filename,label[,patient][,split]` or the TF object-detection
    /// `filename,width,height,class,xmin,ymin,xmax,ymax`.
    Csv,
    /// One sub-folder per class: `root/<class>/*.{png,jpg,bmp,tif}`.
    Folders,
}

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
#[derive(Clone, Debug, PartialEq, Serialize)]
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

/// Guesses the layout of `input`: a file ending in `.csv` or a folder holding
/// `Grade.csv` → Warwick; `.xml` files → VOC; one `.csv` → CSV; class
/// sub-folders → folders.
pub fn detect_layout(input: &Path) -> Result<Layout> {
    let _ = input;
    todo!("dataset helper")
}

/// Reads `input` in the given (or detected) layout.
pub fn load(input: &Path, layout: Option<Layout>) -> Result<Dataset> {
    let layout = match layout {
        Some(l) => l,
        None => detect_layout(input)?,
    };
    match layout {
        Layout::Warwick => warwick::load(input),
        Layout::Voc => voc::load(input),
        Layout::Csv => csv_labels::load(input),
        Layout::Folders => folders::load(input),
    }
}
