//! The contact sheet: a few thumbnails per class, one row per class, read from
//! the shards with one streaming pass over each shard that holds a wanted record.
//!
//! Layout (all sizes in pixels; `t` = thumbnail side, `a` = `t * 2 / 3`, the
//! side of augmented thumbnails, `k` = thumbnails per class):
//!
//! ```text
//! PAD | label margin (M) | GAP | k cells of width t, GAP apart | PAD
//! ```
//! `M` is the widest label line (class name, "N records", "augmented") in
//! [`text::LABEL`] text (`l` = its line height). Each class block is a main row
//! `max(t + CAPTION, 2l + LINE_GAP)` high — originals captioned "split record_id"
//! in [`text::SMALL`] text — and, when that class has augmented records, `GAP`
//! lower an augmented row `max(a + CAPTION, l)` high whose cell
//! `j` holds an augmented copy of the patch above it (blank where that patch
//! has none, e.g. val/test), captioned with its augmentation ops. Blocks are
//! `BLOCK_GAP` apart with a thin rule between them, `PAD` above and below all.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
};

use image::{Rgb, RgbImage, imageops};
use rayon::prelude::*;

use super::text::{self, line_height, text_width};
use crate::{
    error::{Error, Result},
    shard::{example::PatchRecord, manifest::ManifestRow, reader::ShardReader},
};

pub(crate) const PAD: u32 = 10;
pub(crate) const GAP: u32 = 6;
pub(crate) const BLOCK_GAP: u32 = 3 * GAP;
/// Caption line under a thumbnail: 3 px space + a line of [`text::SMALL`] text.
pub(crate) const CAPTION: u32 = 3 + text::SMALL as u32;
/// Size of label text.
pub(crate) const LABEL_SIZE: f32 = text::LABEL;
/// Space between the two label lines.
pub(crate) const LINE_GAP: u32 = 4;
/// Class names longer than this many characters are cut.
pub(crate) const MAX_LABEL_CHARS: u32 = 18;

pub(crate) const BACKGROUND: Rgb<u8> = Rgb([246, 244, 238]);
const INK: Rgb<u8> = Rgb([34, 34, 34]);
const MUTED: Rgb<u8> = Rgb([110, 110, 110]);
const FRAME: Rgb<u8> = Rgb([200, 198, 192]);
const RULE: Rgb<u8> = Rgb([214, 212, 206]);

/// Side of an augmented thumbnail for thumbnails of side `thumb`.
pub(crate) fn aug_side(thumb: u32) -> u32 {
    (thumb * 2 / 3).max(1)
}

/// One class's picks: `main[j]` and, aligned below it, `augmented[j]`.
#[derive(Debug)]
pub(crate) struct ClassPicks<'a> {
    pub name: String,
    pub records: usize,
    pub main: Vec<&'a ManifestRow>,
    /// Empty when the class has no augmented records; else as long as `main`.
    pub augmented: Vec<Option<&'a ManifestRow>>,
}

/// Rank of a split name: train, val, test, then others by name.
pub(crate) fn split_rank(split: &str) -> (u8, &str) {
    match split {
        "train" => (0, ""),
        "val" => (1, ""),
        "test" => (2, ""),
        other => (3, other),
    }
}

/// `i`-th of `k` evenly spaced indices into `0..n` (distinct for `k <= n`).
fn spaced(i: usize, k: usize, n: usize) -> usize {
    (2 * i + 1) * n / (2 * k)
}

/// Picks up to `k` rows spread over `groups` (each sorted, groups in display
/// order): every group gets one before any gets two; when a round cannot give
/// every remaining group one more, the groups served are evenly spaced; within
/// a group the picks are evenly spaced too. Deterministic.
fn pick_spread<'a>(groups: &[Vec<&'a ManifestRow>], k: usize) -> Vec<&'a ManifestRow> {
    let mut quota = vec![0usize; groups.len()];
    let mut remaining = k;
    while remaining > 0 {
        let open: Vec<usize> = (0..groups.len())
            .filter(|&g| quota[g] < groups[g].len())
            .collect();
        if open.is_empty() {
            break;
        }
        if open.len() <= remaining {
            open.iter().for_each(|&g| quota[g] += 1);
            remaining -= open.len();
        } else {
            (0..remaining).for_each(|i| quota[open[spaced(i, remaining, open.len())]] += 1);
            remaining = 0;
        }
    }
    groups
        .iter()
        .zip(&quota)
        .flat_map(|(rows, &q)| (0..q).map(move |i| rows[spaced(i, q, rows.len())]))
        .collect()
}

/// Groups `rows` by source image, groups ordered by split then first record id.
fn by_source_image<'a>(rows: &[&'a ManifestRow]) -> Vec<Vec<&'a ManifestRow>> {
    let mut groups: BTreeMap<&str, Vec<&'a ManifestRow>> = BTreeMap::new();
    for r in rows {
        groups.entry(r.source_image.as_str()).or_default().push(r);
    }
    let mut groups: Vec<Vec<&ManifestRow>> = groups
        .into_values()
        .map(|mut g| {
            g.sort_by_key(|r| r.record_id);
            g
        })
        .collect();
    groups.sort_by(|a, b| {
        (split_rank(&a[0].split), a[0].record_id).cmp(&(split_rank(&b[0].split), b[0].record_id))
    });
    groups
}

/// Which records the sheet shows, per class sorted by label.
pub(crate) fn pick<'a>(rows: &'a [ManifestRow], per_class: usize) -> Vec<ClassPicks<'a>> {
    let mut classes: BTreeMap<i64, Vec<&ManifestRow>> = BTreeMap::new();
    for r in rows {
        classes.entry(r.label).or_default().push(r);
    }
    classes
        .into_values()
        .map(|rows| {
            let (originals, copies): (Vec<&ManifestRow>, Vec<&ManifestRow>) =
                rows.iter().partition(|r| r.aug_index == 0);
            let mut main = pick_spread(&by_source_image(&originals), per_class);
            if main.len() < per_class {
                // Too few originals: fill up with augmented records.
                main.extend(pick_spread(
                    &by_source_image(&copies),
                    per_class - main.len(),
                ));
            }
            main.sort_by_key(|r| (split_rank(&r.split), r.record_id));
            let augmented = augmented_row(&main, &copies);
            ClassPicks {
                name: rows
                    .iter()
                    .map(|r| r.label_text.as_str())
                    .min()
                    .unwrap_or_default()
                    .to_string(),
                records: rows.len(),
                main,
                augmented,
            }
        })
        .collect()
}

/// An augmented copy of each original in `main` (copy `1 + j mod n` of the
/// `n` it has, for variety); when none of them has one, a spread pick of all
/// copies not already shown. Empty when there are no copies at all.
fn augmented_row<'a>(
    main: &[&'a ManifestRow],
    copies: &[&'a ManifestRow],
) -> Vec<Option<&'a ManifestRow>> {
    if copies.is_empty() {
        return Vec::new();
    }
    let shown: HashSet<u64> = main.iter().map(|r| r.record_id).collect();
    let copies: Vec<&ManifestRow> = copies
        .iter()
        .copied()
        .filter(|r| !shown.contains(&r.record_id))
        .collect();
    type PatchKey<'k> = (&'k str, &'k str, i64, i64, i64);
    let key = |r: &'a ManifestRow| -> PatchKey<'a> {
        (r.split.as_str(), r.source_image.as_str(), r.x, r.y, r.size)
    };
    let mut of_patch: HashMap<PatchKey, Vec<&ManifestRow>> = HashMap::new();
    for &c in &copies {
        of_patch.entry(key(c)).or_default().push(c);
    }
    of_patch
        .values_mut()
        .for_each(|v| v.sort_by_key(|r| (r.aug_index, r.record_id)));
    let aligned: Vec<Option<&ManifestRow>> = main
        .iter()
        .enumerate()
        .map(|(j, &r)| {
            (r.aug_index == 0)
                .then(|| of_patch.get(&key(r)))
                .flatten()
                .map(|v| v[j % v.len()])
        })
        .collect();
    if aligned.iter().any(Option::is_some) {
        return aligned;
    }
    let mut picked = pick_spread(&by_source_image(&copies), main.len().max(1));
    picked.sort_by_key(|r| (split_rank(&r.split), r.record_id));
    picked.into_iter().map(Some).collect()
}

/// What to read from one shard: index in shard → (record id, thumbnail side).
type Wanted = BTreeMap<u64, (u64, u32)>;

/// Reads the wanted records, each shard streamed once up to its last wanted
/// record (shards in parallel), and returns thumbnails by record id.
pub(crate) fn read_thumbnails(
    dir: &Path,
    picks: &[ClassPicks],
    thumb: u32,
) -> Result<HashMap<u64, RgbImage>> {
    let mut by_shard: BTreeMap<&str, Wanted> = BTreeMap::new();
    for c in picks {
        let main = c.main.iter().map(|r| (*r, thumb));
        let aug = c.augmented.iter().flatten().map(|r| (*r, aug_side(thumb)));
        for (r, side) in main.chain(aug) {
            by_shard
                .entry(r.shard.as_str())
                .or_default()
                .insert(r.index_in_shard, (r.record_id, side));
        }
    }
    let shards: Vec<(PathBuf, Wanted)> = by_shard
        .into_iter()
        .map(|(name, wanted)| (dir.join(name), wanted))
        .collect();
    let per_shard: Vec<Vec<(u64, RgbImage)>> = shards
        .par_iter()
        .map(|(path, wanted)| read_shard(path, wanted))
        .collect::<Result<_>>()?;
    Ok(per_shard.into_iter().flatten().collect())
}

fn read_shard(path: &Path, wanted: &Wanted) -> Result<Vec<(u64, RgbImage)>> {
    let last = wanted.keys().next_back().copied().unwrap_or_default();
    let mut out = Vec::with_capacity(wanted.len());
    let mut reader = ShardReader::open(path)?;
    for raw in reader.by_ref() {
        let raw = raw?;
        if let Some(&(record_id, side)) = wanted.get(&raw.index) {
            let rec =
                PatchRecord::decode(&raw.data).map_err(|e| Error::record(path, raw.index, e))?;
            if rec.record_id as u64 != record_id {
                return Err(Error::record(
                    path,
                    raw.index,
                    format!(
                        "holds record_id {} where manifest.parquet places record_id {record_id}; shards and manifest disagree",
                        rec.record_id
                    ),
                ));
            }
            let img = image::load_from_memory(&rec.encoded).map_err(|e| {
                Error::record(
                    path,
                    raw.index,
                    format!("image/encoded ({}): {e}", rec.format),
                )
            })?;
            out.push((record_id, fit_square(&img.to_rgb8(), side)));
        }
        if raw.index >= last {
            return Ok(out);
        }
    }
    Err(Error::record(
        path,
        last,
        format!(
            "missing: the shard ends before it, but manifest.parquet places record_id {} there",
            wanted[&last].0
        ),
    ))
}

/// `img` scaled to fit a `side`×`side` square, aspect ratio kept.
fn fit_square(img: &RgbImage, side: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let f = side as f64 / w.max(h).max(1) as f64;
    let (tw, th) = (
        ((w as f64 * f).round() as u32).clamp(1, side),
        ((h as f64 * f).round() as u32).clamp(1, side),
    );
    if (tw, th) == (w, h) {
        img.clone()
    } else {
        imageops::resize(img, tw, th, imageops::FilterType::Triangle)
    }
}

/// Fills a rectangle, clipped to the image.
pub(crate) fn fill_rect(img: &mut RgbImage, x: i64, y: i64, w: u32, h: u32, color: Rgb<u8>) {
    let (iw, ih) = (i64::from(img.width()), i64::from(img.height()));
    let (x0, y0) = (x.max(0), y.max(0));
    let (x1, y1) = ((x + i64::from(w)).min(iw), (y + i64::from(h)).min(ih));
    for py in y0..y1 {
        for px in x0..x1 {
            img.put_pixel(px as u32, py as u32, color);
        }
    }
}

/// Pixel geometry of a sheet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub margin: u32,
    pub main_h: u32,
    pub aug_h: u32,
}

impl Geometry {
    pub fn new(picks: &[ClassPicks], thumb: u32) -> Self {
        let margin = picks
            .iter()
            .flat_map(|c| [label_name(&c.name), count_line(c.records)])
            .chain(
                picks
                    .iter()
                    .any(|c| !c.augmented.is_empty())
                    .then(|| AUGMENTED.to_string()),
            )
            .map(|line| text_width(&line, LABEL_SIZE))
            .max()
            .unwrap_or(0);
        let line = line_height(LABEL_SIZE);
        Self {
            margin,
            main_h: (thumb + CAPTION).max(2 * line + LINE_GAP),
            aug_h: (aug_side(thumb) + CAPTION).max(line),
        }
    }

    fn block_h(&self, c: &ClassPicks) -> u32 {
        self.main_h
            + if c.augmented.is_empty() {
                0
            } else {
                GAP + self.aug_h
            }
    }
}

/// The row label above the augmented copies.
const AUGMENTED: &str = "augmented";

fn label_name(name: &str) -> String {
    let max = MAX_LABEL_CHARS as usize;
    if name.chars().count() > max {
        let mut s: String = name.chars().take(max - 1).collect();
        s.push('…');
        s
    } else {
        name.to_string()
    }
}

fn count_line(records: usize) -> String {
    format!("{records} record{}", if records == 1 { "" } else { "s" })
}

/// Draws the sheet.
pub(crate) fn render(
    picks: &[ClassPicks],
    thumbs: &HashMap<u64, RgbImage>,
    per_class: usize,
    thumb: u32,
) -> RgbImage {
    if picks.is_empty() {
        let text = "no records";
        let mut img = RgbImage::from_pixel(
            2 * PAD + text_width(text, LABEL_SIZE),
            2 * PAD + line_height(LABEL_SIZE),
            BACKGROUND,
        );
        text::draw_text(&mut img, PAD.into(), PAD.into(), text, LABEL_SIZE, INK);
        return img;
    }
    let g = Geometry::new(picks, thumb);
    let k = per_class as u32;
    let width = 2 * PAD + g.margin + GAP + k * thumb + k.saturating_sub(1) * GAP;
    let height = 2 * PAD
        + picks.iter().map(|c| g.block_h(c)).sum::<u32>()
        + (picks.len() as u32 - 1) * BLOCK_GAP;
    let mut img = RgbImage::from_pixel(width, height, BACKGROUND);
    let x0 = PAD + g.margin + GAP;
    let line = line_height(LABEL_SIZE);
    let mut y = PAD;
    for (ci, c) in picks.iter().enumerate() {
        if ci > 0 {
            let rule_y = y - BLOCK_GAP / 2 - 1;
            fill_rect(
                &mut img,
                PAD.into(),
                rule_y.into(),
                width - 2 * PAD,
                1,
                RULE,
            );
        }
        text::draw_text(
            &mut img,
            PAD.into(),
            y.into(),
            &label_name(&c.name),
            LABEL_SIZE,
            INK,
        );
        text::draw_text(
            &mut img,
            PAD.into(),
            (y + line + LINE_GAP).into(),
            &count_line(c.records),
            LABEL_SIZE,
            MUTED,
        );
        for (j, r) in c.main.iter().enumerate() {
            let x = x0 + j as u32 * (thumb + GAP);
            let caption = format!("{} {}", r.split, r.record_id);
            cell(
                &mut img,
                thumbs.get(&r.record_id),
                x,
                y,
                thumb,
                thumb,
                &caption,
            );
        }
        y += g.main_h;
        if !c.augmented.is_empty() {
            y += GAP;
            text::draw_text(&mut img, PAD.into(), y.into(), AUGMENTED, LABEL_SIZE, MUTED);
            let a = aug_side(thumb);
            for (j, r) in c.augmented.iter().enumerate() {
                if let Some(r) = r {
                    let x = x0 + j as u32 * (thumb + GAP);
                    let caption = &r.augmentation;
                    cell(&mut img, thumbs.get(&r.record_id), x, y, thumb, a, caption);
                }
            }
            y += g.aug_h;
        }
        y += BLOCK_GAP;
    }
    img
}

/// One thumbnail of side `side`, centred in a column `col_w` wide at (`x`, `y`),
/// framed, with `caption` (cut to the column) below it.
fn cell(
    img: &mut RgbImage,
    thumb: Option<&RgbImage>,
    x: u32,
    y: u32,
    col_w: u32,
    side: u32,
    caption: &str,
) {
    let Some(t) = thumb else { return };
    let cx = x + (col_w - side) / 2;
    fill_rect(
        img,
        i64::from(cx) - 1,
        i64::from(y) - 1,
        side + 2,
        side + 2,
        FRAME,
    );
    fill_rect(img, cx.into(), y.into(), side, side, BACKGROUND);
    let ox = cx + (side - t.width()) / 2;
    let oy = y + (side - t.height()) / 2;
    imageops::replace(img, t, ox.into(), oy.into());
    let caption = text::fit(caption, col_w, text::SMALL);
    let tx = x + col_w.saturating_sub(text_width(&caption, text::SMALL)) / 2;
    text::draw_text(
        img,
        tx.into(),
        (y + side + 3).into(),
        &caption,
        text::SMALL,
        MUTED,
    );
}

/// The `Software` text chunk of the PNGs histoshard draws: `histoshard <what>`.
pub const SOFTWARE_KEY: &str = "Software";

/// A picture as PNG bytes, with a `Software` text chunk saying which
/// histoshard command drew it (`what`, e.g. `inspect`): the record that lets
/// `prepare --overwrite` remove a contact sheet it did not write itself but
/// `inspect` did, and leave a user's file of the same name alone.
pub(crate) fn encode_png(img: &RgbImage, path: &Path, what: &str) -> Result<Vec<u8>> {
    let fail = |e: png::EncodingError| Error::output(path, format!("cannot encode PNG: {e}"));
    let mut buf = Vec::new();
    let mut enc = png::Encoder::new(&mut buf, img.width(), img.height());
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.add_text_chunk(SOFTWARE_KEY.into(), format!("histoshard {what}"))
        .map_err(fail)?;
    let mut w = enc.write_header().map_err(fail)?;
    w.write_image_data(img.as_raw()).map_err(fail)?;
    w.finish().map_err(fail)?;
    Ok(buf)
}

/// Whether the PNG at `path` was drawn by histoshard's `what` (its text chunk
/// says so). Reads the header chunks only.
pub fn drawn_by(path: &Path, what: &str) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let Ok(reader) = png::Decoder::new(std::io::BufReader::new(file)).read_info() else {
        return false;
    };
    let want = format!("histoshard {what}");
    reader
        .info()
        .uncompressed_latin1_text
        .iter()
        .any(|t| t.keyword == SOFTWARE_KEY && t.text == want)
}
