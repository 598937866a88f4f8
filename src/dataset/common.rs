//! Helpers shared by the loaders: reading CSV tables with real line numbers,
//! keeping paths from inside files within the input root, checking image
//! headers, and assembling the final [`Dataset`]. Listing and walking folders
//! is [`super::walk`] (which also holds the file-name tests re-exported here).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Component, Path, PathBuf};

use rayon::prelude::*;

pub use super::walk::{IMAGE_EXTENSIONS, ext_lower, is_image_file_name};
use super::{BBox, Dataset, Layout, Sample, Skipped, image_io};
use crate::error::{Error, IoContext, Result};

/// `path`'s file name as UTF-8, or an error naming it (displayed lossily).
pub fn utf8_name(path: &Path) -> Result<&str> {
    path.file_name()
        .unwrap_or(path.as_os_str())
        .to_str()
        .ok_or_else(|| {
            Error::input(
                path,
                "file name is not valid UTF-8; rename it (names become record fields)",
            )
        })
}

/// The folder a file-derived root stands for: `Path::new("x.csv").parent()` is
/// `""`, which we turn into `.`.
pub fn parent_or_dot(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Errors unless `dir` exists and is a folder.
pub fn require_dir(dir: &Path, what: &str) -> Result<()> {
    let md = fs::metadata(dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::input(dir, "not found")
        } else {
            Error::io(dir, e)
        }
    })?;
    if !md.is_dir() {
        return Err(Error::input(dir, format!("not a folder ({what})")));
    }
    Ok(())
}

/// `path` relative to `root`, `/`-separated; errors on non-UTF-8 components.
pub fn rel_string(root: &Path, path: &Path) -> Result<String> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str().ok_or_else(|| {
                Error::input(
                    path,
                    "file name is not valid UTF-8; rename it (names become record fields)",
                )
            })?),
            Component::CurDir => {}
            _ => {
                return Err(Error::input(
                    path,
                    format!("cannot express relative to {}", root.display()),
                ));
            }
        }
    }
    Ok(parts.join("/"))
}

/// `rel` (a `/`-separated path) without its extension: `a/b.png` → `a/b`.
pub fn strip_ext(rel: &str) -> &str {
    let file_start = rel.rfind('/').map_or(0, |i| i + 1);
    match rel[file_start..].rfind('.') {
        Some(dot) if dot > 0 => &rel[..file_start + dot],
        _ => rel,
    }
}

/// An image path read from inside a file (a VOC `<filename>`, a CSV cell),
/// resolved and checked to stay inside the input root.
pub struct Resolved {
    pub image_path: PathBuf,
    pub rel_path: String,
}

/// Resolves `value` (found in `source`, at `place` such as `line 4` or
/// `<filename>`) relative to `base` (a folder inside `root`, given relative to
/// it as `base_rel`, `/`-separated, empty for the root itself).
///
/// Rejected: empty values, absolute paths (`/x`, `\x`, `C:\x`), `..`
/// components, anything not found, not a regular file, or whose canonical path
/// (symlinks resolved) lies outside the canonical root or in the excluded
/// output folder.
pub fn resolve_inside(
    root: &Path,
    root_canon: &Path,
    ex: &super::walk::Exclude,
    base_rel: &str,
    value: &str,
    source: &Path,
    place: &str,
) -> Result<Resolved> {
    let trimmed = value.trim();
    let bad = |why: &str| Error::input(source, format!("{place}: {why}"));
    if trimmed.is_empty() {
        return Err(bad("empty file name"));
    }
    // Windows-style separators are treated as separators, so `..\x` is caught too.
    let normalized = trimmed.replace('\\', "/");
    let looks_absolute = normalized.starts_with('/')
        || (normalized.len() >= 2
            && normalized.as_bytes()[1] == b':'
            && normalized.as_bytes()[0].is_ascii_alphabetic());
    if looks_absolute {
        return Err(bad(&format!(
            "\"{trimmed}\" is an absolute path; image paths must be relative to {} and stay inside it",
            root.display()
        )));
    }
    let mut parts: Vec<&str> = base_rel.split('/').filter(|p| !p.is_empty()).collect();
    for part in normalized.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(bad(&format!(
                    "\"{trimmed}\" contains \"..\"; image paths must stay inside {}",
                    root.display()
                )));
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(bad(&format!("\"{trimmed}\" is not a file name")));
    }
    let rel_path = parts.join("/");
    let image_path = root.join(&rel_path);
    let canon = match fs::canonicalize(&image_path) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(bad(&format!(
                "image \"{trimmed}\" not found (looked for {})",
                image_path.display()
            )));
        }
        Err(e) => return Err(bad(&format!("image \"{trimmed}\": {e}"))),
    };
    if !canon.starts_with(root_canon) {
        return Err(bad(&format!(
            "\"{trimmed}\" resolves to {}, outside {}; image paths must stay inside the input folder",
            canon.display(),
            root.display()
        )));
    }
    if ex.holds(&canon) {
        return Err(bad(&format!(
            "\"{trimmed}\" lies in the output folder, which is never read as input (what prepare wrote there would come back as data)"
        )));
    }
    let md = fs::metadata(&canon).map_err(|e| bad(&format!("image \"{trimmed}\": {e}")))?;
    if !md.is_file() {
        return Err(bad(&format!(
            "\"{trimmed}\" is not a regular file ({})",
            crate::fsutil::kind_name(md.file_type())
        )));
    }
    Ok(Resolved {
        image_path,
        rel_path,
    })
}

/// The canonical form of `root`, for [`resolve_inside`].
pub fn canonical_root(root: &Path) -> Result<PathBuf> {
    fs::canonicalize(root).at(root)
}

/// Reads the header of each path in parallel (see [`image_io::dimensions`]);
/// the first failure in input order is returned.
pub fn header_dimensions(paths: &[&Path]) -> Result<Vec<(u32, u32)>> {
    let results: Vec<Result<(u32, u32)>> =
        paths.par_iter().map(|p| image_io::dimensions(p)).collect();
    results.into_iter().collect()
}

/// A table read from a CSV file: the header and the non-blank rows, each with
/// its 1-based line number (counting `\r`, `\n` and `\r\n` as one line end).
pub struct CsvTable {
    /// Trimmed header cells (original case).
    pub header: Vec<String>,
    /// (line, fields) for each row that has a non-blank field.
    pub rows: Vec<(u64, Vec<String>)>,
}

impl CsvTable {
    /// Index of the first header cell equal (trimmed, case-insensitive) to any of `names`.
    pub fn column(&self, names: &[&str]) -> Option<usize> {
        self.header
            .iter()
            .position(|h| names.iter().any(|n| h.eq_ignore_ascii_case(n)))
    }

    /// The header as it reads, for error messages.
    pub fn header_list(&self) -> String {
        self.header.join(", ")
    }
}

/// Parses the bytes of a CSV file: accepts any line endings, a UTF-8 BOM, blank
/// lines, and rows of varying length (checked by the caller). Errors when the
/// file is empty (no header), or a field is not UTF-8. Touches no file; `path`
/// only names it in errors.
pub fn parse_csv_table(bytes: &[u8], path: &Path) -> Result<CsvTable> {
    let data: &[u8] = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let line_starts = line_starts(data);
    // The csv crate reports a record's position before the blank lines it
    // skipped; a record never starts with a line end, so step over them.
    let line_of = |byte: u64| -> u64 {
        let mut b = byte as usize;
        while matches!(data.get(b), Some(b'\r' | b'\n')) {
            b += 1;
        }
        line_starts.partition_point(|&s| s <= b as u64) as u64
    };

    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(data);
    let mut header: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    let mut record = csv::ByteRecord::new();
    loop {
        let more = rdr.read_byte_record(&mut record).map_err(|e| {
            let line = e
                .position()
                .map(|p| format!("line {}: ", line_of(p.byte())))
                .unwrap_or_default();
            Error::input(path, format!("{line}not readable as CSV: {e}"))
        })?;
        if !more {
            break;
        }
        let line = record.position().map_or(0, |p| line_of(p.byte()));
        let mut fields = Vec::with_capacity(record.len());
        for f in record.iter() {
            let s = std::str::from_utf8(f).map_err(|_| {
                Error::input(
                    path,
                    format!("line {line}: not UTF-8 text; save the file as UTF-8"),
                )
            })?;
            fields.push(s.trim().to_string());
        }
        if fields.iter().all(|f| f.is_empty()) {
            continue;
        }
        if header.is_none() {
            header = Some(fields);
        } else {
            rows.push((line, fields));
        }
    }
    let header = header.ok_or_else(|| {
        Error::input(
            path,
            "empty file; expected a header row and one row per image",
        )
    })?;
    Ok(CsvTable { header, rows })
}

/// Byte offsets at which each line starts (line 1 at offset 0).
fn line_starts(data: &[u8]) -> Vec<u64> {
    let mut starts = vec![0u64];
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\r' => {
                if data.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                starts.push(i as u64 + 1);
            }
            b'\n' => starts.push(i as u64 + 1),
            _ => {}
        }
        i += 1;
    }
    starts
}

/// Parses a box coordinate: a number (integer or float, rounded), finite.
pub fn parse_coord(text: &str, what: &str) -> std::result::Result<f64, String> {
    let t = text.trim();
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v.round()),
        _ => Err(format!("{what} \"{t}\" is not a number")),
    }
}

/// Validates a box against an image of `width`×`height` and clamps it to it.
/// Coordinates are pixel edges: `[xmin, xmax)` × `[ymin, ymax)`.
/// Errors (as a message) when a coordinate is negative, the box is inverted or
/// empty (`xmax <= xmin`), or it lies wholly outside the image.
pub fn make_box(
    [xmin, ymin, xmax, ymax]: [f64; 4],
    (width, height): (u32, u32),
) -> std::result::Result<BBox, String> {
    if xmin < 0.0 || ymin < 0.0 || xmax < 0.0 || ymax < 0.0 {
        return Err(format!(
            "negative coordinate in box ({xmin}, {ymin})–({xmax}, {ymax})"
        ));
    }
    if xmax <= xmin || ymax <= ymin {
        return Err(format!(
            "inverted or empty box ({xmin}, {ymin})–({xmax}, {ymax}): need xmin < xmax and ymin < ymax"
        ));
    }
    if xmin >= f64::from(width) || ymin >= f64::from(height) {
        return Err(format!(
            "box ({xmin}, {ymin})–({xmax}, {ymax}) lies wholly outside the {width}×{height} image"
        ));
    }
    // Both mins are below the image size, hence fit in u32; maxes are clamped.
    Ok(BBox {
        xmin: xmin as u32,
        ymin: ymin as u32,
        xmax: xmax.min(f64::from(width)) as u32,
        ymax: ymax.min(f64::from(height)) as u32,
    })
}

/// Sample names for one image's boxes grouped by class: `<base>` when the image
/// has one class, `<base>#<class>` when several.
pub fn samples_per_class(
    base_name: &str,
    image_path: &Path,
    rel_path: &str,
    by_class: BTreeMap<String, Vec<BBox>>,
) -> Vec<Sample> {
    let several = by_class.len() > 1;
    by_class
        .into_iter()
        .map(|(class, boxes)| Sample {
            name: if several {
                format!("{base_name}#{class}")
            } else {
                base_name.to_string()
            },
            image_path: image_path.to_path_buf(),
            rel_path: rel_path.to_string(),
            mask_path: None,
            class,
            patient: None,
            subset: None,
            boxes,
        })
        .collect()
}

/// Assembles a [`Dataset`]: errors when there are no samples or two share a
/// name; sorts samples by name (unless `keep_order`), classes and skips.
pub fn finish(
    layout: Layout,
    root: &Path,
    mut samples: Vec<Sample>,
    mut skipped: Vec<Skipped>,
    classes: Option<Vec<String>>,
    keep_order: bool,
) -> Result<Dataset> {
    if samples.is_empty() {
        let mut msg = "no images found".to_string();
        if !skipped.is_empty() {
            msg.push_str(&format!(
                " ({} file(s) skipped, e.g. {}: {})",
                skipped.len(),
                skipped[0].file.display(),
                skipped[0].reason
            ));
        }
        return Err(Error::input(root, msg));
    }
    if !keep_order {
        samples.sort_by(|a, b| a.name.cmp(&b.name));
    }
    same_file_twice(&samples)?;
    let mut seen: BTreeMap<&str, &Sample> = BTreeMap::new();
    for s in &samples {
        if let Some(prev) = seen.insert(&s.name, s) {
            return Err(Error::input(
                &s.image_path,
                format!(
                    "duplicate sample name \"{}\" (also from {}); rename one of them",
                    s.name,
                    prev.image_path.display()
                ),
            ));
        }
    }
    let classes = classes.unwrap_or_else(|| {
        samples
            .iter()
            .map(|s| s.class.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    });
    skipped.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(Dataset {
        layout,
        root: root.to_path_buf(),
        classes,
        samples,
        skipped,
    })
}

/// Errors when one file is reached under two names (a symlink, a linked
/// folder): it would be two samples, perhaps of two classes or in two splits.
/// Samples of one image under one name (VOC's one per class) are fine.
fn same_file_twice(samples: &[Sample]) -> Result<()> {
    let mut by_file: HashMap<PathBuf, &Sample> = HashMap::with_capacity(samples.len());
    for s in samples {
        let Ok(canon) = fs::canonicalize(&s.image_path) else {
            continue;
        };
        match by_file.entry(canon) {
            Entry::Occupied(e) if e.get().rel_path != s.rel_path => {
                let prev = e.get();
                let classes = if prev.class == s.class {
                    format!("both in class \"{}\"", s.class)
                } else {
                    format!("in classes \"{}\" and \"{}\"", prev.class, s.class)
                };
                return Err(Error::input(
                    &s.image_path,
                    format!(
                        "the same file as {} (both are {}, {classes}): one image reached under two names (a symlink or linked folder?) would be two samples; remove one",
                        prev.image_path.display(),
                        e.key().display()
                    ),
                ));
            }
            Entry::Occupied(_) => {}
            Entry::Vacant(v) => {
                v.insert(s);
            }
        }
    }
    Ok(())
}

/// Writes a small solid image (format from the extension), creating its folder;
/// the readers' tests build their input trees with it.
#[cfg(test)]
pub(crate) fn write_test_image(path: &Path, w: u32, h: u32) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    image::RgbImage::from_pixel(w, h, image::Rgb([1, 2, 3]))
        .save(path)
        .unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_starts_count_every_ending() {
        assert_eq!(line_starts(b"a\rb\nc\r\nd"), vec![0, 2, 4, 7]);
        assert_eq!(line_starts(b""), vec![0]);
    }

    #[test]
    fn strip_ext_only_touches_the_file_name() {
        assert_eq!(strip_ext("a/b.png"), "a/b");
        assert_eq!(strip_ext("a.b/c"), "a.b/c");
        assert_eq!(strip_ext("x.tar.gz"), "x.tar");
        assert_eq!(strip_ext(".hidden"), ".hidden");
    }

    #[test]
    fn boxes_are_clamped_and_checked() {
        let b = make_box([10.0, 20.0, 500.0, 30.0], (100, 50)).unwrap();
        assert_eq!(
            b,
            BBox {
                xmin: 10,
                ymin: 20,
                xmax: 100,
                ymax: 30
            }
        );
        assert!(
            make_box([10.0, 5.0, 10.0, 8.0], (100, 50))
                .unwrap_err()
                .contains("inverted")
        );
        assert!(
            make_box([-1.0, 5.0, 10.0, 8.0], (100, 50))
                .unwrap_err()
                .contains("negative")
        );
        assert!(
            make_box([100.0, 5.0, 120.0, 8.0], (100, 50))
                .unwrap_err()
                .contains("wholly outside")
        );
    }

    #[test]
    fn coords_round_and_reject_garbage() {
        assert_eq!(parse_coord(" 12.6 ", "xmin"), Ok(13.0));
        assert!(parse_coord("NaN", "xmin").unwrap_err().contains("xmin"));
        assert!(parse_coord("abc", "ymax").unwrap_err().contains("\"abc\""));
    }

    #[test]
    fn csv_table_has_true_line_numbers() {
        let t = parse_csv_table(b"\xEF\xBB\xBFa, b\r\r1,2\r\n\n3,4\n", Path::new("t.csv")).unwrap();
        assert_eq!(t.header, vec!["a", "b"]);
        assert_eq!(t.rows[0].0, 3);
        assert_eq!(t.rows[1].0, 5);
        assert_eq!(t.column(&["B"]), Some(1));
    }
}
