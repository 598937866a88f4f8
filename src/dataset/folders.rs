//! One sub-folder per class: `root/<class>/**/*.{png,jpg,jpeg,bmp,tif,tiff}`.
//!
//! The class is the top-level folder's name; images may sit in nested folders
//! inside it. A sample is named `<class>/<path inside the class folder without
//! extension>` (`tumour/a`, `tumour/slide2/b`). Hidden files and folders
//! (leading `.`) are ignored silently; other files (`notes.txt`, `Thumbs.db`,
//! files at the top level) are listed in [`Dataset::skipped`]. Class folders
//! holding no image are skipped too.

use std::path::Path;

use super::{Dataset, Layout, Sample, Skipped};
use super::{common, walk};
use crate::error::{Error, Result};
use crate::fsutil;

/// Reads `input`; `output`, when it lies inside, is never read.
pub fn load(input: &Path, output: Option<&Path>) -> Result<Dataset> {
    common::require_dir(
        input,
        "the folders layout is a folder with one sub-folder per class",
    )?;
    let ex = walk::Exclude::for_root(output, input)?;
    let root_canon = common::canonical_root(input)?;
    let mut samples = Vec::new();
    let mut skipped = Vec::new();
    for entry in walk::list_dir(input, &ex)? {
        if !entry.is_dir() {
            skipped.push(Skipped {
                file: entry,
                reason: "not inside a class folder".into(),
            });
            continue;
        }
        let target = std::fs::canonicalize(&entry).map_err(|e| Error::io(&entry, e))?;
        if let Some(reason) = walk::loop_reason(&root_canon, &target) {
            skipped.push(Skipped {
                file: entry,
                reason,
            });
            continue;
        }
        let class = common::utf8_name(&entry)?.to_string();
        let before = samples.len();
        let walk = walk::walk_files(&entry, &ex)?;
        skipped.extend(walk.skipped);
        for file in walk.files {
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
            if let Err(e) = fsutil::regular_metadata(&file) {
                return Err(match std::fs::symlink_metadata(&file) {
                    Ok(md) if md.is_symlink() && std::fs::metadata(&file).is_err() => {
                        Error::input(&file, "a dangling symlink (its target is missing)")
                    }
                    _ => e,
                });
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

        let ds = load(r, None).unwrap();
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
        let e = load(r, None).unwrap_err().to_string();
        assert!(e.contains("no images found"), "{e}");

        fs::create_dir_all(r.join("a")).unwrap();
        fs::write(r.join("a/notes.txt"), "x").unwrap();
        let e = load(r, None).unwrap_err().to_string();
        assert!(e.contains("no images found"), "{e}");

        img(&r.join("a/x.png"));
        img(&r.join("a/x.jpg"));
        let e = load(r, None).unwrap_err().to_string();
        assert!(e.contains("duplicate sample name \"a/x\""), "{e}");

        fs::remove_file(r.join("a/x.jpg")).unwrap();
        fs::write(r.join("a/y.png"), b"").unwrap();
        let e = load(r, None).unwrap_err().to_string();
        assert!(e.contains("y.png: empty file"), "{e}");

        let e = load(&r.join("a/x.png"), None).unwrap_err().to_string();
        assert!(e.contains("x.png: not a folder"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn output_folder_loops_and_one_file_under_two_names() {
        use std::os::unix::fs::symlink;
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        img(&r.join("a/x.png"));
        img(&r.join("b/y.png"));
        img(&r.join("out/contact_sheet.png"));
        let out = r.join("out");
        // Without knowing the output folder, its contact sheet is a class.
        assert_eq!(load(r, None).unwrap().classes, ["a", "b", "out"]);
        let ds = load(r, Some(&out)).unwrap();
        assert_eq!(ds.classes, ["a", "b"]);
        assert!(ds.skipped.is_empty(), "{:?}", ds.skipped);
        // Nor through a symlink, nor when the output is spelled oddly.
        symlink("../out", r.join("a/o")).unwrap();
        assert_eq!(load(r, Some(&r.join("a/../out"))).unwrap().samples.len(), 2);
        fs::remove_file(r.join("a/o")).unwrap();
        let e = load(r, Some(&r.join("a/.."))).unwrap_err().to_string();
        assert!(e.contains("the output folder is the input folder"), "{e}");
        // A class folder as the output would leave its class out.
        let e = load(r, Some(&r.join("a"))).unwrap_err().to_string();
        assert!(
            e.contains("holds input images") && e.contains("a/x.png"),
            "{e}"
        );

        // Links back to an enclosing folder are loops: skipped, not walked.
        symlink("..", r.join("a/up")).unwrap();
        symlink(".", r.join("b/here")).unwrap();
        symlink(".", r.join("root")).unwrap();
        let ds = load(r, Some(&out)).unwrap();
        let names: Vec<&str> = ds.samples.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a/x", "b/y"]);
        let looped: Vec<&Path> = ds
            .skipped
            .iter()
            .filter(|s| s.reason.contains("a loop"))
            .map(|s| s.file.strip_prefix(r).unwrap())
            .collect();
        assert_eq!(
            looped,
            [Path::new("a/up"), Path::new("b/here"), Path::new("root")]
        );

        // One file under two classes, through a folder or a file link.
        symlink("../b", r.join("a/bb")).unwrap();
        let e = load(r, Some(&out)).unwrap_err().to_string();
        assert!(
            e.contains("b/y.png: the same file as")
                && e.contains("a/bb/y.png")
                && e.contains("in classes \"a\" and \"b\""),
            "{e}"
        );
        fs::remove_file(r.join("a/bb")).unwrap();
        symlink("x.png", r.join("a/x2.png")).unwrap();
        let e = load(r, Some(&out)).unwrap_err().to_string();
        assert!(
            e.contains("a/x2.png: the same file as") && e.contains("both in class \"a\""),
            "{e}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_names_are_errors_not_panics() {
        use std::os::unix::ffi::OsStrExt;
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let bad = std::ffi::OsStr::from_bytes(b"cl\xffass");
        img(&r.join(bad).join("a.png"));
        let e = load(r, None).unwrap_err().to_string();
        assert!(e.contains("not valid UTF-8"), "{e}");

        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        img(&r
            .join("ok")
            .join(std::ffi::OsStr::from_bytes(b"im\xffg.png")));
        let e = load(r, None).unwrap_err().to_string();
        assert!(
            e.contains("not valid UTF-8") && e.contains("im\u{fffd}g.png"),
            "{e}"
        );
    }
}
