//! `histoshard inspect DIR`: what a prepared output folder holds — count tables
//! from its manifest, and a contact sheet PNG of a few patches per class read
//! back from the shards (which also proves those shards decode).

pub(crate) mod sheet;
pub mod text;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use polars::prelude::*;

use crate::{
    error::{Error, Result},
    shard::manifest::{MANIFEST_PARQUET, ManifestRow, read_manifest},
};

pub use text::{draw_text, line_height, render_text, text_width};

pub use crate::dataset::SHEET_FILE;

/// What `inspect` draws.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InspectOptions {
    /// Thumbnails per class (1..=256).
    pub per_class: usize,
    /// Thumbnail side in pixels (8..=1024); augmented copies are drawn at 2/3 of it.
    pub thumb: u32,
    /// Where to write the contact sheet; `None` is `DIR/contact_sheet.png`.
    pub sheet: Option<PathBuf>,
}

impl Default for InspectOptions {
    fn default() -> Self {
        Self {
            per_class: 8,
            thumb: 112,
            sheet: None,
        }
    }
}

/// The result of inspecting a folder.
#[derive(Debug)]
pub struct Inspection {
    /// Titled tables, in print order.
    pub tables: Vec<(String, DataFrame)>,
    /// Where the contact sheet was written.
    pub sheet_path: PathBuf,
}

/// Reads `dir`'s manifest, builds the count tables and writes the contact sheet.
pub fn inspect(dir: &Path, opts: &InspectOptions) -> Result<Inspection> {
    if !(1..=256).contains(&opts.per_class) {
        return Err(Error::Config(format!(
            "--per-class must be between 1 and 256, got {}",
            opts.per_class
        )));
    }
    if !(8..=1024).contains(&opts.thumb) {
        return Err(Error::Config(format!(
            "--thumb must be between 8 and 1024 pixels, got {}",
            opts.thumb
        )));
    }
    let manifest = dir.join(MANIFEST_PARQUET);
    if !manifest.exists() {
        return Err(Error::input(
            manifest,
            "not found: not a complete histoshard data set (run prepare, or rerun an interrupted one to resume)",
        ));
    }
    let rows = read_manifest(dir)?;
    let tables =
        tables(&rows).map_err(|e| Error::output(&manifest, format!("table error: {e}")))?;

    let sheet_path = opts.sheet.clone().unwrap_or_else(|| dir.join(SHEET_FILE));
    crate::atomic::check_target(&sheet_path)?;
    let picks = sheet::pick(&rows, opts.per_class);
    let thumbs = sheet::read_thumbnails(dir, &picks, opts.thumb)?;
    let img = sheet::render(&picks, &thumbs, opts.per_class, opts.thumb);
    let png = sheet::encode_png(&img, &sheet_path, "inspect")?;
    crate::atomic::write(&sheet_path, &png)?;
    Ok(Inspection { tables, sheet_path })
}

/// The three count tables.
pub fn tables(rows: &[ManifestRow]) -> PolarsResult<Vec<(String, DataFrame)>> {
    Ok(vec![
        (
            "records per split and class".to_string(),
            per_split_class(rows)?,
        ),
        (
            "records per patient and split".to_string(),
            per_patient(rows)?,
        ),
        (
            "source images per split and class".to_string(),
            images_per_class(rows)?,
        ),
    ])
}

/// Split names present, train/val/test first.
fn splits(rows: &[ManifestRow]) -> Vec<String> {
    let mut s: Vec<String> = rows
        .iter()
        .map(|r| r.split.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    s.sort_by(|a, b| sheet::split_rank(a).cmp(&sheet::split_rank(b)));
    s
}

/// Class labels with their (first) name, by label.
fn classes(rows: &[ManifestRow]) -> BTreeMap<i64, String> {
    let mut c: BTreeMap<i64, String> = BTreeMap::new();
    for r in rows {
        let name = c.entry(r.label).or_insert_with(|| r.label_text.clone());
        if r.label_text < *name {
            *name = r.label_text.clone();
        }
    }
    c
}

fn df(columns: Vec<Column>) -> PolarsResult<DataFrame> {
    let height = columns.first().map_or(0, Column::len);
    DataFrame::new(height, columns)
}

fn col<T>(name: &str, values: Vec<T>) -> Column
where
    Series: NamedFrom<Vec<T>, [T]>,
{
    Column::new(name.into(), values)
}

#[derive(Default)]
struct Tally<'a> {
    records: u64,
    original: u64,
    images: BTreeSet<&'a str>,
    patients: BTreeSet<&'a str>,
}

impl<'a> Tally<'a> {
    fn add(&mut self, r: &'a ManifestRow) {
        self.records += 1;
        self.original += u64::from(r.aug_index == 0);
        self.images.insert(&r.source_image);
        if let Some(p) = &r.patient {
            self.patients.insert(p);
        }
    }
}

/// split, label, class, records, original, augmented, source images, patients
/// (the last only when the manifest has patient ids); a final `all` row.
fn per_split_class(rows: &[ManifestRow]) -> PolarsResult<DataFrame> {
    let names = classes(rows);
    let mut cells: BTreeMap<((u8, &str), &str, i64), Tally> = BTreeMap::new();
    let mut all = Tally::default();
    for r in rows {
        let rank = sheet::split_rank(&r.split);
        cells.entry((rank, &r.split, r.label)).or_default().add(r);
        all.add(r);
    }
    let with_patients = rows.iter().any(|r| r.patient.is_some());
    let tallies: Vec<(&str, Option<i64>, &Tally)> = cells
        .iter()
        .map(|((_, split, label), t)| (*split, Some(*label), t))
        .chain(std::iter::once(("all", None, &all)))
        .collect();
    let mut columns = vec![
        col("split", tallies.iter().map(|t| t.0).collect::<Vec<_>>()),
        col("label", tallies.iter().map(|t| t.1).collect::<Vec<_>>()),
        col(
            "class",
            tallies
                .iter()
                .map(|t| t.1.map_or("all", |l| names[&l].as_str()))
                .collect::<Vec<_>>(),
        ),
        col(
            "records",
            tallies.iter().map(|t| t.2.records).collect::<Vec<_>>(),
        ),
        col(
            "original",
            tallies.iter().map(|t| t.2.original).collect::<Vec<_>>(),
        ),
        col(
            "augmented",
            tallies
                .iter()
                .map(|t| t.2.records - t.2.original)
                .collect::<Vec<_>>(),
        ),
        col(
            "source images",
            tallies
                .iter()
                .map(|t| t.2.images.len() as u64)
                .collect::<Vec<_>>(),
        ),
    ];
    if with_patients {
        columns.push(col(
            "patients",
            tallies
                .iter()
                .map(|t| t.2.patients.len() as u64)
                .collect::<Vec<_>>(),
        ));
    }
    df(columns)
}

/// Sort key putting numeric ids in numeric order, before other ids.
fn natural(id: &str) -> (u64, &str) {
    (id.parse().unwrap_or(u64::MAX), id)
}

/// patient, one column of record counts per split, total, shared (true when
/// the patient has records in more than one split); records without a
/// patient id in a `(none)` row, and a final `total` row (both `shared` null).
fn per_patient(rows: &[ManifestRow]) -> PolarsResult<DataFrame> {
    let split_names = splits(rows);
    let index: BTreeMap<&str, usize> = split_names
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let mut patients: BTreeMap<(u64, &str), Vec<u64>> = BTreeMap::new();
    let mut unknown = vec![0u64; split_names.len()];
    let mut total = vec![0u64; split_names.len()];
    for r in rows {
        let i = index[r.split.as_str()];
        total[i] += 1;
        match &r.patient {
            Some(p) => {
                patients
                    .entry(natural(p))
                    .or_insert_with(|| vec![0; split_names.len()])[i] += 1
            }
            None => unknown[i] += 1,
        }
    }
    let mut names: Vec<&str> = Vec::new();
    let mut counts: Vec<Vec<u64>> = Vec::new();
    let mut shared: Vec<Option<bool>> = Vec::new();
    for ((_, p), c) in &patients {
        names.push(p);
        shared.push(Some(c.iter().filter(|&&n| n > 0).count() > 1));
        counts.push(c.clone());
    }
    if unknown.iter().any(|&n| n > 0) {
        names.push("(none)");
        shared.push(None);
        counts.push(unknown);
    }
    names.push("total");
    shared.push(None);
    counts.push(total);

    let mut columns = vec![col("patient", names)];
    for (i, s) in split_names.iter().enumerate() {
        columns.push(col(s, counts.iter().map(|c| c[i]).collect::<Vec<_>>()));
    }
    columns.push(col(
        "total",
        counts
            .iter()
            .map(|c| c.iter().sum::<u64>())
            .collect::<Vec<_>>(),
    ));
    columns.push(col("shared", shared));
    df(columns)
}

/// label, class, distinct source images (with at least one record) per split,
/// total; a final `all` row.
fn images_per_class(rows: &[ManifestRow]) -> PolarsResult<DataFrame> {
    let split_names = splits(rows);
    let names = classes(rows);
    let mut sets: BTreeMap<(i64, &str), BTreeSet<&str>> = BTreeMap::new();
    for r in rows {
        sets.entry((r.label, &r.split))
            .or_default()
            .insert(&r.source_image);
    }
    let labels: Vec<Option<i64>> = names.keys().copied().map(Some).chain([None]).collect();
    let count = |label: Option<i64>, split: Option<&str>| -> u64 {
        sets.iter()
            .filter(|((l, s), _)| label.is_none_or(|x| x == *l) && split.is_none_or(|x| x == *s))
            .flat_map(|((_, s), imgs)| imgs.iter().map(move |i| (*s, *i)))
            .collect::<BTreeSet<_>>()
            .len() as u64
    };
    let mut columns = vec![
        col("label", labels.clone()),
        col(
            "class",
            labels
                .iter()
                .map(|l| l.map_or("all", |l| names[&l].as_str()))
                .collect::<Vec<_>>(),
        ),
    ];
    for s in &split_names {
        columns.push(col(
            s,
            labels
                .iter()
                .map(|&l| count(l, Some(s)))
                .collect::<Vec<_>>(),
        ));
    }
    columns.push(col(
        "total",
        labels.iter().map(|&l| count(l, None)).collect::<Vec<_>>(),
    ));
    df(columns)
}

#[cfg(test)]
mod tests;
