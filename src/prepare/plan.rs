//! Stage 1: decode every image once to validate it and decide which patches it
//! yields; then lay the records out in shards. Knowing every count before the
//! first byte is written is what makes shard names, record ids and resumption
//! exact.

use std::collections::BTreeSet;

use image::{GrayImage, RgbImage};
use rand::{SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

use super::options::PrepareOptions;
use crate::{
    dataset::{BBox, Sample, image_io},
    error::{Error, Result},
    patch::{
        tiling::{self, EdgePolicy},
        tissue::Coverage,
    },
    preprocess::{self, TissueFilter},
    shard::{Compression, shard_file_name},
    split::{Assignment, Split},
};

/// The patches one image yields.
#[derive(Clone, Debug, PartialEq)]
pub struct ImagePlan {
    /// Size after `--scale`.
    pub width: u32,
    pub height: u32,
    pub candidates: u32,
    /// Top-left corners of kept patches, in scaled pixels.
    pub patches: Vec<(u32, u32)>,
}

/// A decoded source image at the working scale.
pub struct Loaded {
    pub image: RgbImage,
    pub mask: Option<GrayImage>,
}

/// Decodes `sample` and applies `--scale`. The mask's pixels are decoded only
/// when `--min-gland-fraction` uses them (decoding GlaS's palette masks cost
/// ~5% of a run); that every mask opens and matches its image's size was
/// already checked from the headers when the data set was read
/// (`dataset::warwick`).
pub fn load(sample: &Sample, opts: &PrepareOptions) -> Result<Loaded> {
    let image = load_image(sample, opts)?;
    let mask = match (&sample.mask_path, opts.min_gland_fraction) {
        (Some(p), Some(_)) => Some(image_io::decode_mask_checked(p, opts.limits(), &|w, h| {
            preprocess::fits_scaled(p, w, h, opts.scale, opts.limits())
        })?),
        _ => None,
    };
    Ok(Loaded {
        image,
        mask: mask.map(|m| {
            if preprocess::is_unit_scale(opts.scale) {
                m
            } else {
                tiling::resize_mask(&m, opts.scale)
            }
        }),
    })
}

/// The image alone at the working scale: rendering needs no mask, and the
/// planning stage has already validated it.
pub fn load_image(sample: &Sample, opts: &PrepareOptions) -> Result<RgbImage> {
    preprocess::working_image(&sample.image_path, opts.scale, opts.limits())
}

/// Candidate positions: the whole image, or only inside the sample's boxes.
fn candidates(width: u32, height: u32, boxes: &[BBox], opts: &PrepareOptions) -> Vec<(u32, u32)> {
    let size = opts.patch_size;
    if boxes.is_empty() {
        return tiling::grid(width, height, size, opts.stride, opts.edge);
    }
    let s = opts.scale;
    let mut out = BTreeSet::new();
    for b in boxes {
        let (x0, y0) = ((b.xmin as f32 * s) as u32, (b.ymin as f32 * s) as u32);
        let (x1, y1) = (
            ((b.xmax as f32 * s) as u32).min(width),
            ((b.ymax as f32 * s) as u32).min(height),
        );
        let (bw, bh) = (x1.saturating_sub(x0), y1.saturating_sub(y0));
        let inside = tiling::grid(bw, bh, size, opts.stride, opts.edge);
        if inside.is_empty() {
            // A box smaller than a patch: one patch centred on it, kept inside the image.
            let centre = |lo: u32, len: u32, full: u32| {
                (lo + len / 2)
                    .saturating_sub(size / 2)
                    .min(full.saturating_sub(size))
            };
            out.insert((centre(x0, bw, width), (centre(y0, bh, height))));
        } else {
            out.extend(inside.into_iter().map(|(x, y)| (x0 + x, y0 + y)));
        }
    }
    // BTreeSet orders by x first; patches are listed row by row everywhere else.
    let mut v: Vec<_> = out.into_iter().collect();
    v.sort_by_key(|&(x, y)| (y, x));
    v
}

/// Decides which patches of `sample` to keep; also returns the image at the
/// working scale (what [`load_image`] gives), for rendering to reuse.
pub fn plan_image(sample: &Sample, opts: &PrepareOptions) -> Result<(ImagePlan, RgbImage)> {
    let Loaded { image, mask } = load(sample, opts)?;
    let (width, height) = image.dimensions();
    if opts.edge != EdgePolicy::Pad && (width < opts.patch_size || height < opts.patch_size) {
        return Err(Error::image(
            &sample.image_path,
            format!(
                "image is {width}×{height} at scale {}, smaller than one {}-px patch (lower --patch-size or --scale, or use --edge pad)",
                opts.scale, opts.patch_size
            ),
        ));
    }
    let all = candidates(width, height, &sample.boxes, opts);
    let tissue = TissueFilter::new(&image, opts.patch_size, opts.min_tissue);
    let glands = match (opts.min_gland_fraction, &mask) {
        (Some(_), Some(m)) => Some(Coverage::new(m)),
        (Some(_), None) => {
            return Err(Error::input(
                &sample.image_path,
                "--min-gland-fraction needs a gland mask, and this image has none",
            ));
        }
        _ => None,
    };
    let size = opts.patch_size;
    let patches = all
        .iter()
        .copied()
        .filter(|&p| tissue.keeps(p))
        .filter(|&(x, y)| match (&glands, opts.min_gland_fraction) {
            (Some(g), Some(min)) => g.fraction(x, y, size) >= min,
            _ => true,
        })
        .collect();
    let plan = ImagePlan {
        width,
        height,
        candidates: all.len() as u32,
        patches,
    };
    Ok((plan, image))
}

/// Decoded images kept from planning for rendering, up to a byte budget, so
/// that an image is decoded once rather than twice when memory allows. Which
/// images are kept depends on thread timing; what is rendered does not (a
/// kept image is exactly what [`load_image`] would decode again).
pub struct ImageCache {
    images: Vec<std::sync::Mutex<Option<RgbImage>>>,
    left: std::sync::atomic::AtomicUsize,
}

impl ImageCache {
    /// Bytes of decoded images kept at most (165 GlaS images take ~200 MB).
    pub const BUDGET: usize = 256 << 20;

    pub fn new(samples: usize, budget: usize) -> Self {
        Self {
            images: (0..samples).map(|_| std::sync::Mutex::new(None)).collect(),
            left: std::sync::atomic::AtomicUsize::new(budget),
        }
    }

    /// Keeps `image` as sample `i`'s if the budget has room for it.
    pub fn offer(&self, i: usize, image: RgbImage) {
        use std::sync::atomic::Ordering;
        let size = image.as_raw().len();
        let fits = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(size)
            })
            .is_ok();
        if fits && let Ok(mut slot) = self.images[i].lock() {
            *slot = Some(image);
        }
    }

    /// Sample `i`'s image if it was kept (once: it leaves the cache).
    pub fn take(&self, i: usize) -> Option<RgbImage> {
        let image = self.images.get(i)?.lock().ok()?.take()?;
        self.left
            .fetch_add(image.as_raw().len(), std::sync::atomic::Ordering::Relaxed);
        Some(image)
    }
}

/// Records per kept patch for an image of `split`.
pub fn copies(split: Split, augment: u32) -> u32 {
    if split == Split::Train {
        1 + augment
    } else {
        1
    }
}

/// One shard to write.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardSpec {
    pub split: Split,
    pub file: String,
    pub records: u64,
}

/// Where everything goes: the order images are processed and written in, the
/// first record id of each image, and the shards.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// Sample indices in write order: train, val, test; shuffled within a split.
    pub order: Vec<usize>,
    /// Per sample: its first global record id and its record count.
    pub first_record: Vec<u64>,
    pub record_count: Vec<u64>,
    pub shards: Vec<ShardSpec>,
    /// Global id of each shard's first record (parallel to `shards`).
    pub shard_start: Vec<u64>,
}

impl Layout {
    pub fn new(plans: &[ImagePlan], assignments: &[Assignment], opts: &PrepareOptions) -> Self {
        let n = plans.len();
        let record_count: Vec<u64> = (0..n)
            .map(|i| {
                plans[i].patches.len() as u64 * copies(assignments[i].split, opts.augment) as u64
            })
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x0DE5_0DE5);
        let mut order = Vec::with_capacity(n);
        let mut first_record = vec![0; n];
        let mut shards = Vec::new();
        let mut shard_start = Vec::new();
        let mut next_id = 0u64;
        for split in Split::ALL {
            let mut members: Vec<usize> =
                (0..n).filter(|&i| assignments[i].split == split).collect();
            // Mixing images across shards lets tf.data's file interleave shuffle well.
            members.shuffle(&mut rng);
            let total: u64 = members.iter().map(|&i| record_count[i]).sum();
            for &i in &members {
                first_record[i] = next_id;
                next_id += record_count[i];
            }
            order.extend(members);
            if total == 0 {
                continue;
            }
            let wanted = opts
                .shards
                .map(u64::from)
                .unwrap_or_else(|| {
                    ((total as f64 * opts.estimated_record_bytes()) / (opts.shard_size_mb * 1e6))
                        .ceil() as u64
                })
                .clamp(1, total);
            let start = next_id - total;
            for k in 0..wanted {
                let (lo, hi) = (k * total / wanted, (k + 1) * total / wanted);
                shards.push(ShardSpec {
                    split,
                    file: shard_file_name(
                        split.as_str(),
                        k as u32,
                        wanted as u32,
                        opts.compression,
                    ),
                    records: hi - lo,
                });
                shard_start.push(start + lo);
            }
        }
        Self {
            order,
            first_record,
            record_count,
            shards,
            shard_start,
        }
    }

    /// Index of the shard holding global record `id`.
    pub fn shard_of(&self, id: u64) -> usize {
        self.shard_start.partition_point(|&s| s <= id) - 1
    }

    pub fn total_records(&self) -> u64 {
        self.shards.iter().map(|s| s.records).sum()
    }
}

/// The compression a shard name implies (used when resuming).
pub fn compression_of(file: &str) -> Compression {
    if file.ends_with(".gz") {
        Compression::Gzip
    } else {
        Compression::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(n: usize) -> ImagePlan {
        ImagePlan {
            width: 775,
            height: 522,
            candidates: 6,
            patches: vec![(0, 0); n],
        }
    }

    fn assignment(split: Split) -> Assignment {
        Assignment {
            split,
            subset: split.as_str().into(),
            fold: None,
        }
    }

    #[test]
    fn layout_counts_ids_and_shards() {
        let plans = vec![plan(6), plan(4), plan(5), plan(3), plan(6)];
        let a = vec![
            assignment(Split::Train),
            assignment(Split::Test),
            assignment(Split::Train),
            assignment(Split::Val),
            assignment(Split::Test),
        ];
        let mut opts = PrepareOptions::new("in", "out");
        opts.augment = 2;
        opts.shards = Some(2);
        let l = Layout::new(&plans, &a, &opts);
        // train: (6 + 5) × 3 = 33; val 3 (one shard: only... still 2 asked, 3 records); test 10
        assert_eq!(l.total_records(), 33 + 3 + 10);
        let files: Vec<_> = l.shards.iter().map(|s| s.file.as_str()).collect();
        assert_eq!(
            files,
            [
                "train-00000-of-00002.tfrecord",
                "train-00001-of-00002.tfrecord",
                "val-00000-of-00002.tfrecord",
                "val-00001-of-00002.tfrecord",
                "test-00000-of-00002.tfrecord",
                "test-00001-of-00002.tfrecord"
            ]
        );
        assert_eq!(
            l.shards.iter().map(|s| s.records).collect::<Vec<_>>(),
            [16, 17, 1, 2, 5, 5]
        );
        // ids are contiguous per image, train first
        let train_ids: Vec<u64> = [0, 2].iter().map(|&i| l.first_record[i]).collect();
        assert!(train_ids.contains(&0));
        assert_eq!(l.first_record[3], 33);
        assert_eq!(l.shard_of(0), 0);
        assert_eq!(l.shard_of(16), 1);
        assert_eq!(l.shard_of(33), 2);
        assert_eq!(l.shard_of(45), 5);
    }

    #[test]
    fn shard_count_never_exceeds_records_and_empty_splits_have_none() {
        let plans = vec![plan(1), plan(0)];
        let a = vec![assignment(Split::Train), assignment(Split::Test)];
        let mut opts = PrepareOptions::new("in", "out");
        opts.shards = Some(8);
        let l = Layout::new(&plans, &a, &opts);
        assert_eq!(l.shards.len(), 1);
        assert_eq!(l.shards[0].file, "train-00000-of-00001.tfrecord");
    }

    #[test]
    fn shard_size_target_sets_the_shard_count() {
        let plans = vec![plan(6); 40];
        let a = vec![assignment(Split::Train); 40];
        let mut opts = PrepareOptions::new("in", "out");
        // 240 PNG patches of ~98 KB (the estimate) ≈ 23.5 MB: 3 shards of ≤ 8 MB
        opts.shard_size_mb = 8.0;
        let l = Layout::new(&plans, &a, &opts);
        assert_eq!(l.shards.len(), 3);
        opts.shard_size_mb = 1000.0;
        assert_eq!(Layout::new(&plans, &a, &opts).shards.len(), 1);
    }

    #[test]
    fn boxes_restrict_candidates() {
        let opts = PrepareOptions::new("in", "out");
        let boxes = [
            BBox {
                xmin: 300,
                ymin: 0,
                xmax: 775,
                ymax: 230,
            },
            BBox {
                xmin: 10,
                ymin: 300,
                xmax: 60,
                ymax: 350,
            },
        ];
        let c = candidates(775, 522, &boxes, &opts);
        // box 1 fits two patches side by side (475 px wide); box 2 is small: one centred patch
        assert_eq!(c, vec![(300, 0), (524, 0), (0, 213)]);
    }
}
