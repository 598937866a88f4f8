//! One sub-folder per class: `root/<class>/**/*.{png,jpg,jpeg,bmp,tif,tiff}`.
//!
//! The class is the top-level folder's name; images may sit in nested folders
//! inside it. A sample is named `<class>/<path inside the class folder without
//! extension>` (`tumour/a`, `tumour/slide2/b`). Hidden files and folders
//! (leading `.`) are ignored silently; other files (`notes.txt`, `Thumbs.db`,
//! files at the top level) are listed in [`Dataset::skipped`]. Class folders
//! holding no image are skipped too.

use std::path::Path;

use super::common;
use super::{Dataset, Layout, Sample, Skipped};
use crate::error::{Error, Result};

pub fn load(input: &Path) -> Result<Dataset> {
    common::require_dir(
        input,
        "the folders layout is a folder with one sub-folder per class",
    )?;
    let mut samples = Vec::new();
    let mut skipped = Vec::new();
    for entry in common::list_dir(input)? {
        if !entry.is_dir() {
            skipped.push(Skipped {
                file: entry,
                reason: "not inside a class folder".into(),
            });
            continue;
        }
        let class = common::utf8_name(&entry)?.to_string();
        let before = samples.len();
        for file in common::walk_files(&entry)? {
            if !common::is_image_file_name(&file) {
                skipped.push(Skipped {
                    file,
                    reason: format!(
                        "not an image (expected {})",
                        common::IMAGE_EXTENSIONS.join(", ")
                    ),
                });
                continue;
            }
            if !file.is_file() {
                return Err(Error::input(&file, "not a regular file (a dangling link?)"));
            }
            let rel_path = common::rel_string(input, &file)?;
            let name = common::strip_ext(&rel_path).to_string();
            samples.push(Sample {
                name,
                image_path: input.join(&rel_path),
                rel_path,
                mask_path: None,
                class: class.clone(),
                patient: None,
                subset: None,
                boxes: Vec::new(),
            });
        }
        if samples.len() == before {
            skipped.push(Skipped {
                file: entry,
                reason: "class folder holds no image".into(),
            });
        }
    }
    if samples.is_empty() {
        return Err(Error::input(
            input,
            format!(
                "no images found: expected one sub-folder per class holding images ({}), e.g. {}",
                common::IMAGE_EXTENSIONS.join(", "),
                input.join("<class>").join("image.png").display()
            ),
        ));
    }
    let paths: Vec<&Path> = samples.iter().map(|s| s.image_path.as_path()).collect();
    common::header_dimensions(&paths)?;
    common::finish(Layout::Folders, input, samples, skipped, None, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};
    use std::fs;

    fn img(path: &Path) {
        if let Some(p) = path.parent() {
            fs::create_dir_all(p).unwrap();
        }
        RgbImage::from_pixel(4, 4, Rgb([9, 9, 9]))
            .save(path)
            .unwrap();
    }

    #[test]
    fn classes_from_folders_and_stray_files_skipped() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        img(&r.join("tumour/a.png"));
        img(&r.join("tumour/deep/b.JPG"));
        img(&r.join("normal/c.bmp"));
        img(&r.join("normal/d.TIFF"));
        fs::write(r.join("normal/notes.txt"), "x").unwrap();
        fs::write(r.join("normal/.hidden.png"), "x").unwrap();
        fs::create_dir_all(r.join(".git")).unwrap();
        fs::write(r.join(".git/x.png"), "x").unwrap();
        fs::write(r.join("README.txt"), "x").unwrap();
        fs::create_dir_all(r.join("empty")).unwrap();

        let ds = load(r).unwrap();
        assert_eq!(ds.layout, Layout::Folders);
        assert_eq!(ds.classes, ["normal", "tumour"]);
        let names: Vec<&str> = ds.samples.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["normal/c", "normal/d", "tumour/a", "tumour/deep/b"]);
        let b = &ds.samples[3];
        assert_eq!(b.class, "tumour");
        assert_eq!(b.rel_path, "tumour/deep/b.JPG");
        assert_eq!(b.image_path, r.join("tumour/deep/b.JPG"));
        let skipped: Vec<(&Path, &str)> = ds
            .skipped
            .iter()
            .map(|s| (s.file.strip_prefix(r).unwrap(), s.reason.as_str()))
            .collect();
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert_eq!(
            skipped[0],
            (Path::new("README.txt"), "not inside a class folder")
        );
        assert_eq!(
            skipped[1],
            (Path::new("empty"), "class folder holds no image")
        );
        assert_eq!(skipped[2].0, Path::new("normal/notes.txt"));
        assert!(skipped[2].1.starts_with("not an image"));
    }

    #[test]
    fn errors() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let e = load(r).unwrap_err().to_string();
        assert!(e.contains("no images found"), "{e}");

        fs::create_dir_all(r.join("a")).unwrap();
        fs::write(r.join("a/notes.txt"), "x").unwrap();
        let e = load(r).unwrap_err().to_string();
        assert!(e.contains("no images found"), "{e}");

        img(&r.join("a/x.png"));
        img(&r.join("a/x.jpg"));
        let e = load(r).unwrap_err().to_string();
        assert!(e.contains("duplicate sample name \"a/x\""), "{e}");

        fs::remove_file(r.join("a/x.jpg")).unwrap();
        fs::write(r.join("a/y.png"), b"").unwrap();
        let e = load(r).unwrap_err().to_string();
        assert!(e.contains("y.png: empty file"), "{e}");

        let e = load(&r.join("a/x.png")).unwrap_err().to_string();
        assert!(e.contains("x.png: not a folder"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_names_are_errors_not_panics() {
        use std::os::unix::ffi::OsStrExt;
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let bad = std::ffi::OsStr::from_bytes(b"cl\xffass");
        img(&r.join(bad).join("a.png"));
        let e = load(r).unwrap_err().to_string();
        assert!(e.contains("not valid UTF-8"), "{e}");

        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        img(&r
            .join("ok")
            .join(std::ffi::OsStr::from_bytes(b"im\xffg.png")));
        let e = load(r).unwrap_err().to_string();
        assert!(
            e.contains("not valid UTF-8") && e.contains("im\u{fffd}g.png"),
            "{e}"
        );
    }
}
