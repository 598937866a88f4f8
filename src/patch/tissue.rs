//! Tissue detection by Otsu's threshold on optical density, and the fraction of
//! tissue under any square in O(1) by an integral image.
//!
//! The threshold is our own [`otsu_bin`], not imageproc's `otsu_level`
//! (docs/BENCHMARKS.md, "Own code against libraries", `examples/bench_libs.rs`):
//! on the 85 GlaS training images both give the same thresholds, but imageproc's
//! needs the bins as an image of their own (0.93 ms an image against 0.72 here),
//! and it sums `bin × count` in `u32`, which wraps above 4.29e9: a 100-megapixel
//! image (`prepare`'s default limit) with a tenth of pale tissue at OD norm 0.23
//! and most of the rest darker got bin 2 (threshold 0.15: the pale tenth is
//! tissue) instead of bin 20 (0.246, what Otsu's method gives: background).

use std::sync::OnceLock;

use image::{GrayImage, RgbImage};

/// Optical density of an 8-bit intensity, `-ln((I + 1) / 256)`: 0 for white (255),
/// about 5.5 for black.
pub fn optical_density(value: u8) -> f32 {
    od_lut()[value as usize]
}

/// [`optical_density`] for every byte value.
pub(crate) fn od_lut() -> &'static [f32; 256] {
    static LUT: OnceLock<[f32; 256]> = OnceLock::new();
    LUT.get_or_init(|| std::array::from_fn(|i| -((i as f64 + 1.0) / 256.0).ln() as f32))
}

/// Steps per unit OD of the [`u8_from_od`] table.
pub(crate) const OD_TABLE_STEPS: f32 = 4096.0;
/// Up to OD 6.25: beyond ln(512) ≈ 6.24 every value rounds to 0.
const OD_TABLE_LEN: usize = 25_600;

/// The 8-bit value of an optical density, `256·e^(−od) − 1` rounded and clamped
/// to 0..=255 (the inverse of [`optical_density`]), by table lookup: the table
/// holds the exact value at the middle of each 1/4096 OD step, so a result is
/// at most 1 off the exact rounding (and rarely that). Negative OD and NaN give 255.
#[inline]
pub(crate) fn u8_from_od(table: &[u8], od: f32) -> u8 {
    let i = (od * OD_TABLE_STEPS) as usize; // saturating: negative and NaN → 0
    table[i.min(table.len() - 1)]
}

/// The table for [`u8_from_od`].
pub(crate) fn od_to_u8_table() -> &'static [u8] {
    static TABLE: OnceLock<Box<[u8]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..OD_TABLE_LEN)
            .map(|i| {
                let od = (i as f64 + 0.5) / f64::from(OD_TABLE_STEPS);
                (256.0 * (-od).exp() - 0.5).clamp(0.0, 255.0) as u8
            })
            .collect()
    })
}

/// Lowest threshold on the OD norm: below it a pixel is never tissue. A blank or
/// nearly blank image (glass, paper white around 240) stays background even
/// though Otsu would split its noise in two. 0.15 is the OD norm of grey 233.
pub const MIN_OD_THRESHOLD: f32 = 0.15;
/// Highest threshold on the OD norm: above it a pixel is always tissue. Keeps an
/// image that is all tissue from being split into nuclei and "background" stroma.
/// Pale eosin (240, 180, 210) has an OD norm of about 0.4.
pub const MAX_OD_THRESHOLD: f32 = 0.35;

const BINS: usize = 256;
const HIST_MAX_OD: f32 = 3.0;

/// Otsu's threshold of a histogram, as the bin index `t` maximising the
/// between-class variance of `bins[..=t]` against `bins[t+1..]`. `None` for a
/// histogram with fewer than two occupied bins.
pub fn otsu_bin(hist: &[u64]) -> Option<usize> {
    let total: u64 = hist.iter().sum();
    let occupied = hist.iter().filter(|&&c| c > 0).count();
    if total == 0 || occupied < 2 {
        return None;
    }
    let total_f = total as f64;
    let sum_all: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, &c)| i as f64 * c as f64)
        .sum();
    let (mut w0, mut sum0) = (0f64, 0f64);
    let mut best = (f64::MIN, 0usize);
    for (t, &c) in hist.iter().enumerate().take(hist.len() - 1) {
        w0 += c as f64;
        sum0 += t as f64 * c as f64;
        let w1 = total_f - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let m0 = sum0 / w0;
        let m1 = (sum_all - sum0) / w1;
        let between = w0 * w1 * (m0 - m1) * (m0 - m1);
        if between > best.0 {
            best = (between, t);
        }
    }
    Some(best.1)
}

/// [`optical_density`] squared, for every byte value (the same f32 products
/// the norm would compute).
fn od_squared_lut() -> &'static [f32; 256] {
    static LUT: OnceLock<[f32; 256]> = OnceLock::new();
    LUT.get_or_init(|| od_lut().map(|v| v * v))
}

/// The Euclidean norm of every pixel's RGB optical density, in order, and
/// their histogram (256 bins over 0..3), in one pass.
fn od_norms(img: &RgbImage) -> (Vec<f32>, [u64; BINS]) {
    let sq = od_squared_lut();
    let scale = BINS as f32 / HIST_MAX_OD;
    // Four histograms, so that runs of equal bins do not wait on each other's
    // increments.
    let mut hists = [[0u64; BINS]; 4];
    let mut norms = vec![0f32; img.as_raw().len() / 3];
    let row_len = img.width().max(1) as usize;
    let mut bins = vec![0u8; row_len];
    for (row, src) in norms
        .chunks_mut(row_len)
        .zip(img.as_raw().chunks(row_len * 3))
    {
        // Separate loops so that the square roots and bins vectorise; the
        // lookups cannot.
        for (n, p) in row.iter_mut().zip(src.chunks_exact(3)) {
            *n = sq[p[0] as usize] + sq[p[1] as usize] + sq[p[2] as usize];
        }
        for (n, bin) in row.iter_mut().zip(bins.iter_mut()) {
            *n = n.sqrt();
            *bin = (*n * scale).min((BINS - 1) as f32) as u8;
        }
        let bins = &bins[..row.len()];
        let mut quads = bins.chunks_exact(4);
        for q in &mut quads {
            for (h, &b) in hists.iter_mut().zip(q) {
                h[b as usize] += 1;
            }
        }
        for &b in quads.remainder() {
            hists[0][b as usize] += 1;
        }
    }
    let hist = std::array::from_fn(|i| hists.iter().map(|h| h[i]).sum());
    (norms, hist)
}

/// Otsu on a histogram of the OD norms (256 bins over 0..3), clamped.
fn threshold_of(hist: &[u64; BINS]) -> f32 {
    let scale = BINS as f32 / HIST_MAX_OD;
    let otsu = match otsu_bin(hist) {
        // Upper edge of the last background bin.
        Some(t) => (t + 1) as f32 / scale,
        None => MIN_OD_THRESHOLD,
    };
    otsu.clamp(MIN_OD_THRESHOLD, MAX_OD_THRESHOLD)
}

/// The threshold on the OD norm that [`tissue_mask`] uses for `img`: Otsu on a
/// histogram of the OD norm (256 bins over 0..3), clamped to
/// [`MIN_OD_THRESHOLD`]..=[`MAX_OD_THRESHOLD`].
pub fn tissue_threshold(img: &RgbImage) -> f32 {
    threshold_of(&od_norms(img).1)
}

/// 255 where there is tissue, 0 for background (glass, white lumen-free areas).
///
/// Per pixel the optical density OD = -ln((I+1)/256) of each channel is combined
/// as the Euclidean norm over RGB; tissue is OD norm > [`tissue_threshold`]
/// (Otsu, clamped so that an all-white image has no tissue and an all-tissue
/// image is not split in two). The norms are computed once, for both.
pub fn tissue_mask(img: &RgbImage) -> GrayImage {
    let (w, h) = img.dimensions();
    let (norms, hist) = od_norms(img);
    let threshold = threshold_of(&hist);
    let data: Vec<u8> = norms
        .iter()
        .map(|&n| if n > threshold { 255 } else { 0 })
        .collect();
    GrayImage::from_raw(w, h, data).expect("one byte per pixel")
}

/// Fraction of non-zero mask pixels in any square, in O(1) per query.
///
/// Holds the integral image `(w+1)×(h+1)` of "pixel is non-zero" in `u32` with
/// wrapping arithmetic: a rectangle's count comes out exact whenever it is below
/// 2³², whatever the image size.
pub struct Coverage {
    width: u32,
    height: u32,
    /// `sums[y·(w+1) + x]` = non-zero pixels in `[0, x) × [0, y)`, modulo 2³².
    sums: Vec<u32>,
}

impl Coverage {
    pub fn new(mask: &GrayImage) -> Self {
        let (w, h) = mask.dimensions();
        let stride = w as usize + 1;
        let mut sums = vec![0u32; stride * (h as usize + 1)];
        for (y, row) in mask
            .as_raw()
            .chunks_exact(w.max(1) as usize)
            .enumerate()
            .take(h as usize)
        {
            let (prev, cur) = sums[y * stride..(y + 2) * stride].split_at_mut(stride);
            let mut run = 0u32;
            cur[0] = 0;
            for (x, &v) in row.iter().enumerate() {
                run = run.wrapping_add(u32::from(v != 0));
                cur[x + 1] = prev[x + 1].wrapping_add(run);
            }
        }
        Coverage {
            width: w,
            height: h,
            sums,
        }
    }

    /// Number of non-zero pixels in the `size`×`size` square at (`x`, `y`),
    /// clipped to the image.
    pub fn count(&self, x: u32, y: u32, size: u32) -> u64 {
        let clip = |a: u32, n: u32| a.min(n) as usize;
        let x0 = clip(x, self.width);
        let y0 = clip(y, self.height);
        let x1 = (u64::from(x) + u64::from(size)).min(u64::from(self.width)) as usize;
        let y1 = (u64::from(y) + u64::from(size)).min(u64::from(self.height)) as usize;
        if x1 <= x0 || y1 <= y0 {
            return 0;
        }
        let stride = self.width as usize + 1;
        let s = |xx: usize, yy: usize| self.sums[yy * stride + xx];
        let c = s(x1, y1)
            .wrapping_sub(s(x0, y1))
            .wrapping_sub(s(x1, y0))
            .wrapping_add(s(x0, y0));
        u64::from(c)
    }

    /// Fraction of the `size`×`size` square at (`x`, `y`) that is non-zero; pixels
    /// outside the image count as zero.
    pub fn fraction(&self, x: u32, y: u32, size: u32) -> f32 {
        if size == 0 {
            return 0.0;
        }
        let area = f64::from(size) * f64::from(size);
        (self.count(x, y, size) as f64 / area) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Luma, Rgb};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Left half white-ish glass with noise, right half H&E-like pink/purple.
    fn half_tissue(w: u32, h: u32, seed: u64) -> RgbImage {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        RgbImage::from_fn(w, h, |x, _| {
            if x < w / 2 {
                let n = rng.random_range(0..8u8);
                Rgb([247 + n, 246 + n, 248 + n / 2])
            } else if rng.random_bool(0.3) {
                // nuclei: purple
                Rgb([
                    rng.random_range(70..120),
                    rng.random_range(40..80),
                    rng.random_range(120..170),
                ])
            } else {
                // stroma/cytoplasm: pink
                Rgb([
                    rng.random_range(200..240),
                    rng.random_range(120..170),
                    rng.random_range(170..210),
                ])
            }
        })
    }

    #[test]
    fn half_white_half_tissue_is_half_tissue() {
        let img = half_tissue(200, 120, 1);
        let mask = tissue_mask(&img);
        let frac = mask.pixels().filter(|p| p.0[0] == 255).count() as f32 / (200.0 * 120.0);
        assert!((frac - 0.5).abs() < 0.02, "tissue fraction {frac}");
        assert!(mask.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
        // Left half background, right half tissue.
        assert_eq!(mask.get_pixel(10, 10).0[0], 0);
        assert_eq!(mask.get_pixel(190, 10).0[0], 255);
    }

    #[test]
    fn blank_images_have_no_tissue() {
        let white = RgbImage::from_pixel(64, 64, Rgb([255, 255, 255]));
        assert!(tissue_mask(&white).pixels().all(|p| p.0[0] == 0));
        // Slightly noisy glass: Otsu alone would call half of it tissue.
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let glass = RgbImage::from_fn(64, 64, |_, _| {
            let v = rng.random_range(236..=255u8);
            Rgb([v, v, v.saturating_add(1)])
        });
        assert!(tissue_mask(&glass).pixels().all(|p| p.0[0] == 0));
        assert_eq!(tissue_mask(&RgbImage::new(0, 0)).dimensions(), (0, 0));
    }

    #[test]
    fn all_tissue_image_is_all_tissue() {
        // Nuclei and stroma only: Otsu would split them; the cap keeps both.
        let img = half_tissue(100, 50, 3);
        let right = image::imageops::crop_imm(&img, 50, 0, 50, 50).to_image();
        let mask = tissue_mask(&right);
        let frac = mask.pixels().filter(|p| p.0[0] == 255).count() as f32 / 2500.0;
        assert!(frac > 0.99, "{frac}");
    }

    #[test]
    fn od_round_trip_is_exact_within_one() {
        let table = od_to_u8_table();
        for v in 0..=255u8 {
            let back = u8_from_od(table, optical_density(v));
            assert!((i16::from(back) - i16::from(v)).abs() <= 1, "{v} -> {back}");
        }
        assert_eq!(u8_from_od(table, 0.0), 255);
        assert_eq!(u8_from_od(table, -1.0), 255);
        assert_eq!(u8_from_od(table, f32::NAN), 255);
        assert_eq!(u8_from_od(table, 100.0), 0);
        // Against the exact formula on a fine grid.
        let mut off = 0;
        for i in 0..60_000 {
            let od = i as f32 * 1e-4;
            let exact = (256.0 * (-od).exp() - 0.5).clamp(0.0, 255.0) as u8;
            let d = (i16::from(u8_from_od(table, od)) - i16::from(exact)).abs();
            assert!(d <= 1);
            off += usize::from(d > 0);
        }
        assert!(off < 1000, "{off} of 60000 off by one");
    }

    #[test]
    fn otsu_splits_two_modes() {
        let mut hist = [0u64; 16];
        hist[2] = 100;
        hist[3] = 50;
        hist[12] = 80;
        let t = otsu_bin(&hist).unwrap();
        assert!((3..12).contains(&t), "{t}");
        assert_eq!(otsu_bin(&[0, 5, 0]), None);
    }

    fn brute(mask: &GrayImage, x: u32, y: u32, size: u32) -> f32 {
        let mut n = 0u64;
        for yy in y..y.saturating_add(size) {
            for xx in x..x.saturating_add(size) {
                if xx < mask.width() && yy < mask.height() && mask.get_pixel(xx, yy).0[0] != 0 {
                    n += 1;
                }
            }
        }
        (n as f64 / (f64::from(size) * f64::from(size))) as f32
    }

    #[test]
    fn coverage_matches_brute_force() {
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        for &(w, h) in &[(1u32, 1u32), (17, 9), (64, 80), (5, 40)] {
            let density = rng.random_range(0.0..1.0);
            let mask = GrayImage::from_fn(w, h, |_, _| {
                Luma([if rng.random_bool(density) {
                    rng.random_range(1..=255)
                } else {
                    0
                }])
            });
            let cov = Coverage::new(&mask);
            for _ in 0..200 {
                let x = rng.random_range(0..w + 10);
                let y = rng.random_range(0..h + 10);
                let size = rng.random_range(1..40);
                let (a, b) = (cov.fraction(x, y, size), brute(&mask, x, y, size));
                assert!(
                    (a - b).abs() < 1e-6,
                    "{w}x{h} at {x},{y} size {size}: {a} vs {b}"
                );
            }
            assert_eq!(cov.fraction(0, 0, 0), 0.0);
        }
    }

    #[test]
    fn coverage_clips_outside_squares() {
        let mask = GrayImage::from_pixel(10, 10, Luma([255]));
        let cov = Coverage::new(&mask);
        assert_eq!(cov.fraction(0, 0, 10), 1.0);
        assert_eq!(cov.fraction(5, 5, 10), 0.25);
        assert_eq!(cov.fraction(0, 0, 20), 0.25);
        assert_eq!(cov.fraction(10, 0, 4), 0.0);
        assert_eq!(cov.fraction(u32::MAX, u32::MAX, u32::MAX), 0.0);
        assert_eq!(cov.count(8, 8, 5), 4);
        let empty = Coverage::new(&GrayImage::new(0, 0));
        assert_eq!(empty.fraction(0, 0, 4), 0.0);
    }
}
