//! Listing and walking the input's folders: hidden entries left out, the
//! output folder never read when it lies inside the input ([`Exclude`]),
//! folder symlinks followed except those leading back to an enclosing folder
//! (a loop).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::Skipped;
use crate::error::{Error, IoContext, Result};

/// Image extensions every loader accepts (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff"];

/// Whether `path` ends in one of [`IMAGE_EXTENSIONS`] (case-insensitive).
pub fn is_image_file_name(path: &Path) -> bool {
    ext_lower(path).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

/// The extension of `path`, lowercased, when it has one that is UTF-8.
pub fn ext_lower(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
}

/// Whether the last component of `path` starts with a dot.
pub fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.as_encoded_bytes().first() == Some(&b'.'))
}

/// A folder the loaders never read: the output folder, when it lies inside
/// the input (`-o input/out`). What `prepare` or `inspect` wrote there (a
/// contact sheet is an image) would otherwise be read back as input by the
/// next run. Compared by canonical path, so a symlink into it is caught too.
#[derive(Clone, Debug, Default)]
pub struct Exclude {
    canon: Option<PathBuf>,
}

impl Exclude {
    /// Nothing excluded.
    pub fn none() -> Self {
        Self::default()
    }

    /// Excludes `output` (which need not exist yet) when it lies inside
    /// `root`; errors when it is `root` itself, since then every output file
    /// would sit among the inputs.
    pub fn output_within(output: &Path, root: &Path) -> Result<Self> {
        let out = crate::fsutil::canonical_lenient(output);
        let root_canon = fs::canonicalize(root).at(root)?;
        if out == root_canon {
            return Err(Error::input(
                output,
                format!(
                    "the output folder is the input folder {}: what prepare writes there would be read back as input; choose another folder (or a sub-folder, which is never read)",
                    root.display()
                ),
            ));
        }
        if !out.starts_with(&root_canon) {
            return Ok(Self::none());
        }
        if let Some(image) = input_image_in(&out) {
            return Err(Error::input(
                output,
                format!(
                    "the output folder lies inside the input and holds input images ({}); it is never read as input, so they would be left out: choose a new or empty folder",
                    image.display()
                ),
            ));
        }
        Ok(Self { canon: Some(out) })
    }

    /// [`Exclude::output_within`] `root` when there is an output folder.
    pub fn for_root(output: Option<&Path>, root: &Path) -> Result<Self> {
        match output {
            Some(o) => Self::output_within(o, root),
            None => Ok(Self::none()),
        }
    }

    /// Whether `path` is, lies in, or (a symlink) leads into the excluded
    /// folder. Only folders and symlinks can: a plain file in a folder
    /// being listed lies where that folder does.
    fn covers(&self, path: &Path, ft: fs::FileType) -> bool {
        let Some(out) = &self.canon else {
            return false;
        };
        (ft.is_dir() || ft.is_symlink()) && fs::canonicalize(path).is_ok_and(|c| c.starts_with(out))
    }

    /// Whether the canonical path `canon` lies in the excluded folder.
    pub fn holds(&self, canon: &Path) -> bool {
        self.canon
            .as_ref()
            .is_some_and(|out| canon.starts_with(out))
    }
}

/// The contact sheet `histoshard inspect` writes into an output folder (by
/// default, inside the inspected folder): an image, but never an input one.
pub const SHEET_FILE: &str = "contact_sheet.png";

/// An image under `dir` (a few levels deep) other than the contact sheet at
/// its top: `-o input/benign` would otherwise leave class `benign` out.
fn input_image_in(dir: &Path) -> Option<PathBuf> {
    fn go(dir: &Path, depth: usize, top: bool) -> Option<PathBuf> {
        if depth > 4 {
            return None;
        }
        let mut entries: Vec<fs::DirEntry> = fs::read_dir(dir).ok()?.flatten().collect();
        entries.sort_by_key(fs::DirEntry::file_name);
        let mut subdirs = Vec::new();
        for entry in entries {
            let path = entry.path();
            if is_hidden(&path) {
                continue;
            }
            match entry.file_type() {
                Ok(ft) if ft.is_dir() => subdirs.push(path),
                Ok(_)
                    if is_image_file_name(&path)
                        && !(top && path.file_name().is_some_and(|n| n == SHEET_FILE)) =>
                {
                    return Some(path);
                }
                _ => {}
            }
        }
        subdirs.iter().find_map(|d| go(d, depth + 1, false))
    }
    go(dir, 0, true)
}

/// Entries of one folder, sorted by name, hidden ones (leading `.`) and the
/// excluded output folder left out.
pub fn list_dir(dir: &Path, ex: &Exclude) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let path = entry.path();
        if is_hidden(&path) {
            continue;
        }
        let ft = entry.file_type().at(&path)?;
        if ex.covers(&path, ft) {
            tracing::debug!("not reading {}: the output folder", path.display());
            continue;
        }
        out.push(path);
    }
    out.sort();
    Ok(out)
}

/// What [`walk_files`] found.
#[derive(Debug, Default)]
pub struct Walk {
    /// Every non-hidden entry that is not a folder (files, and special files
    /// or dangling links for the loaders to refuse), sorted.
    pub files: Vec<PathBuf>,
    /// Folder symlinks not followed because they lead back to a folder
    /// enclosing them (a loop, like `benign/loop -> ..`).
    pub skipped: Vec<Skipped>,
}

/// Every non-hidden file under `dir`, folder symlinks followed except those
/// leading to an enclosing folder (`loop -> ..`), which are reported in
/// [`Walk::skipped`]; a folder reached twice is walked once. Hidden files
/// and folders are left out silently, the excluded output folder too.
pub fn walk_files(dir: &Path, ex: &Exclude) -> Result<Walk> {
    let mut walk = Walk::default();
    let canon = fs::canonicalize(dir).at(dir)?;
    let mut seen = HashSet::from([canon.clone()]);
    walk_into(dir, &canon, ex, &mut walk, &mut seen)?;
    walk.files.sort();
    Ok(walk)
}

fn walk_into(
    dir: &Path,
    canon: &Path,
    ex: &Exclude,
    walk: &mut Walk,
    seen: &mut HashSet<PathBuf>,
) -> Result<()> {
    for path in list_dir(dir, ex)? {
        match fs::metadata(&path) {
            Ok(md) if md.is_dir() => {
                let target = fs::canonicalize(&path).at(&path)?;
                if let Some(why) = loop_reason(canon, &target) {
                    walk.skipped.push(Skipped {
                        file: path,
                        reason: why,
                    });
                } else if seen.insert(target.clone()) {
                    walk_into(&path, &target, ex, walk, seen)?;
                }
            }
            // Files; and dangling symlinks, FIFOs, sockets, ...: refused by
            // the loaders when they are images, skipped otherwise.
            _ => walk.files.push(path),
        }
    }
    Ok(())
}

/// Why a folder symlink found in the folder `within` (canonical) that leads
/// to `target` (canonical) must not be followed: it leads back to `within`
/// or a folder enclosing it, so following it would walk the same files
/// again under another name, without end.
pub fn loop_reason(within: &Path, target: &Path) -> Option<String> {
    within.starts_with(target).then(|| {
        format!(
            "links to {}, a folder enclosing it (a loop); not followed",
            target.display()
        )
    })
}

/// Whether any image file lies somewhere under `dir` (stops at the first);
/// each folder is looked at once, at most 16 deep.
pub fn holds_images(dir: &Path, ex: &Exclude) -> bool {
    fn go(dir: &Path, depth: usize, ex: &Exclude, seen: &mut HashSet<PathBuf>) -> bool {
        if depth > 16 || !fs::canonicalize(dir).is_ok_and(|c| seen.insert(c)) {
            return false;
        }
        let Ok(entries) = list_dir(dir, ex) else {
            return false;
        };
        let mut subdirs = Vec::new();
        for path in entries {
            match fs::metadata(&path) {
                Ok(md) if md.is_file() && is_image_file_name(&path) => return true,
                Ok(md) if md.is_dir() => subdirs.push(path),
                _ => {}
            }
        }
        subdirs.iter().any(|d| go(d, depth + 1, ex, seen))
    }
    go(dir, 0, ex, &mut HashSet::new())
}
