//! A tiny two-class patch set written straight to shards and a manifest, for
//! the trainer's tests and timing runs: seconds to write, seconds to learn,
//! and independent of the synthetic-GlaS generator and `prepare`.
//!
//! Class 0 ("benign"): smooth pink with round pale blobs. Class 1
//! ("malignant"): noisy dark purple with small dense nuclei. Each source image
//! contributes `patches_per_image` patches, so image-level pooling can be tested.

use std::path::Path;

use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{
    error::Result,
    shard::{
        Compression,
        example::PatchRecord,
        manifest::{MANIFEST_PARQUET, ManifestRow, write_table},
        shard_file_name,
        writer::ShardWriter,
    },
};

/// How many images (per class) of each split, and their patches.
#[derive(Clone, Debug)]
pub struct ToySpec {
    pub size: u32,
    pub train_images: usize,
    pub val_images: usize,
    /// Per class and per subset (`testA`, `testB`).
    pub test_images: usize,
    pub patches_per_image: usize,
    pub shards_per_split: u32,
    pub seed: u64,
}

impl Default for ToySpec {
    fn default() -> Self {
        Self {
            size: 32,
            train_images: 8,
            val_images: 3,
            test_images: 2,
            patches_per_image: 4,
            shards_per_split: 2,
            seed: 1,
        }
    }
}

/// One patch of `label`'s texture.
pub fn toy_patch(label: i64, size: u32, rng: &mut impl Rng) -> RgbImage {
    let mut img = RgbImage::new(size, size);
    if label == 0 {
        let base = [
            rng.random_range(215..240u8),
            rng.random_range(160..190u8),
            rng.random_range(195..220u8),
        ];
        for p in img.pixels_mut() {
            *p = Rgb(base.map(|c| c.saturating_add(rng.random_range(0..6))));
        }
        for _ in 0..3 {
            let (cx, cy) = (
                rng.random_range(0..size) as i64,
                rng.random_range(0..size) as i64,
            );
            let r = (size as i64 / 6).max(2);
            for y in 0..size as i64 {
                for x in 0..size as i64 {
                    if (x - cx).pow(2) + (y - cy).pow(2) <= r * r {
                        img.put_pixel(x as u32, y as u32, Rgb([245, 225, 240]));
                    }
                }
            }
        }
    } else {
        for p in img.pixels_mut() {
            let n: i16 = rng.random_range(-40..40);
            let c = |v: i16| (v + n).clamp(0, 255) as u8;
            *p = Rgb([c(110), c(60), c(140)]);
        }
        for _ in 0..(size * size / 40) {
            let (x, y) = (rng.random_range(0..size), rng.random_range(0..size));
            img.put_pixel(x, y, Rgb([50, 20, 90]));
        }
    }
    img
}

fn encode_png(img: &RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    // Writing PNG into memory cannot fail for an RGB8 buffer.
    let _ = img.write_to(&mut out, image::ImageFormat::Png);
    out.into_inner()
}

/// Writes the toy set (shards + `manifest.parquet`) into `dir`; returns its rows.
pub fn write_toy_dataset(dir: &Path, spec: &ToySpec) -> Result<Vec<ManifestRow>> {
    std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut rows = Vec::new();
    let plan: [(&str, &str, usize); 4] = [
        ("train", "train", spec.train_images),
        ("val", "val", spec.val_images),
        ("test", "testA", spec.test_images),
        ("test", "testB", spec.test_images),
    ];
    let mut record_id = 0u64;
    let mut per_split: Vec<(&str, Vec<(PatchRecord, ManifestRow)>)> = Vec::new();
    for (split, subset, images) in plan {
        let items = match per_split.iter_mut().find(|(s, _)| *s == split) {
            Some((_, items)) => items,
            None => {
                per_split.push((split, Vec::new()));
                &mut per_split.last_mut().expect("just pushed").1
            }
        };
        for i in 0..images {
            for label in 0..2i64 {
                let source = format!("{subset}_{label}_{i}");
                for p in 0..spec.patches_per_image {
                    let img = toy_patch(label, spec.size, &mut rng);
                    let encoded = encode_png(&img);
                    let text = if label == 0 { "benign" } else { "malignant" };
                    let rec = PatchRecord {
                        encoded: encoded.clone(),
                        format: "png".into(),
                        height: spec.size as i64,
                        width: spec.size as i64,
                        channels: 3,
                        label,
                        label_text: text.into(),
                        filename: format!("{source}.png"),
                        source_id: source.clone(),
                        record_id: record_id as i64,
                        patient_id: format!("{subset}-{i}"),
                        split: split.into(),
                        subset: subset.into(),
                        x: (p as i64) * spec.size as i64,
                        y: 0,
                        size: spec.size as i64,
                        scale: 1.0,
                        augmentation: "none".into(),
                    };
                    let row = ManifestRow {
                        record_id,
                        split: split.into(),
                        subset: subset.into(),
                        fold: (split == "train").then_some((i % 2) as i32),
                        shard: String::new(),
                        index_in_shard: 0,
                        byte_offset: 0,
                        record_bytes: 0,
                        source_image: source.clone(),
                        filename: format!("{source}.png"),
                        patient: Some(format!("{subset}-{i}")),
                        label,
                        label_text: text.into(),
                        x: rec.x,
                        y: 0,
                        size: spec.size as i64,
                        scale: 1.0,
                        augmentation: "none".into(),
                        aug_index: 0,
                        seed: 0,
                        sha256: String::new(),
                        format: "png".into(),
                        encoded_bytes: encoded.len() as u64,
                    };
                    record_id += 1;
                    items.push((rec, row));
                }
            }
        }
    }
    for (split, items) in per_split {
        let count = spec.shards_per_split.max(1);
        let mut writers = (0..count)
            .map(|s| {
                let name = shard_file_name(split, s, count, Compression::None);
                ShardWriter::create(&dir.join(&name), Compression::None).map(|w| (name, w))
            })
            .collect::<Result<Vec<_>>>()?;
        for (j, (rec, mut row)) in items.into_iter().enumerate() {
            let (name, w) = &mut writers[j % count as usize];
            let bytes = rec.encode();
            row.record_bytes = bytes.len() as u64;
            let loc = w.write(&bytes)?;
            row.shard = name.clone();
            row.index_in_shard = loc.index;
            row.byte_offset = loc.offset;
            rows.push(row);
        }
        for (_, w) in writers {
            w.finish()?;
        }
    }
    let mut df =
        ManifestRow::to_dataframe(&rows).map_err(|e| crate::Error::output(dir, e.to_string()))?;
    write_table(&mut df, &dir.join(MANIFEST_PARQUET))?;
    Ok(rows)
}
