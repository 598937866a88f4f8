//! Train-time augmentations, deterministic given the random number generator.
//!
//! [`augment`] first draws every decision and parameter from the generator (in a
//! fixed order), then applies the drawn operations in this order:
//!
//! | name | operation | drawn with probability |
//! |---|---|---|
//! | `flip_h`, `flip_v` | horizontal / vertical flip | ½ each (`flips`) |
//! | `rot90`, `rot180`, `rot270` | counter-clockwise quarter turns (like `np.rot90`) | ¾, k uniform in 0..4 (`rot90`; non-square patches only `rot180`) |
//! | `rotate` | rotation by U(−max, max)° about the centre | ½ (`max_rotate_degrees`) |
//! | `scale` | zoom by U(1−j, 1+j) about the centre | ½ (`scale_jitter`) |
//! | `hed` | HED stain jitter (Tellez et al. 2018) | 1 (`hed_sigma`) |
//! | `brightness` | multiply by U(1−b, 1+b) | ½ (`brightness`) |
//! | `contrast` | stretch about the mean luma by U(1−c, 1+c) | ½ (`contrast`) |
//! | `blur` | Gaussian blur, σ ~ U(0.1, max) | `blur_probability` (`blur_max_sigma`) |
//! | `jpeg` | JPEG round trip at quality ~ U{min..=95} | `jpeg_probability` (`jpeg_min_quality`) |
//!
//! Flips and quarter turns are one exact pixel permutation; rotation and scale are
//! one inverse-mapped bilinear warp with reflected borders. If nothing at all was
//! drawn, one enabled operation is forced (a flip if flips are on, else a quarter
//! turn, else the first enabled one), so every copy differs from the original.

use image::{ImageFormat, RgbImage};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::tiling::reflect101;
use super::tissue::{OD_TABLE_STEPS, od_lut, od_to_u8_table};
use super::warp::warp;
use crate::error::{Error, Result};

/// Strengths of each augmentation; 0 turns one off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Random horizontal and vertical flips.
    pub flips: bool,
    /// Random multiples of 90°.
    pub rot90: bool,
    /// Small-angle rotation up to ± this many degrees.
    pub max_rotate_degrees: f32,
    /// Zoom by a factor in [1 − j, 1 + j].
    pub scale_jitter: f32,
    /// HED jitter: α ~ U(1 − σ, 1 + σ), β ~ U(−σ, σ) per stain channel (β in OD units).
    pub hed_sigma: f32,
    /// Brightness factor in [1 − b, 1 + b].
    pub brightness: f32,
    /// Contrast factor in [1 − c, 1 + c].
    pub contrast: f32,
    pub blur_probability: f32,
    pub blur_max_sigma: f32,
    pub jpeg_probability: f32,
    /// Lowest JPEG quality; the quality is drawn from `jpeg_min_quality..=95`.
    pub jpeg_min_quality: u8,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            flips: true,
            rot90: true,
            max_rotate_degrees: 15.0,
            scale_jitter: 0.1,
            hed_sigma: 0.05,
            brightness: 0.1,
            contrast: 0.1,
            blur_probability: 0.2,
            blur_max_sigma: 1.0,
            jpeg_probability: 0.2,
            jpeg_min_quality: 60,
        }
    }
}

impl AugmentConfig {
    /// The default's geometry with three times its HED stain jitter and
    /// two and a half times its brightness and contrast jitter: what the
    /// from-scratch models train with by default. Stain and exposure differ
    /// from patient to patient, so a model that never saw them vary learns
    /// the colour of the training patients instead of their tissue
    /// (chosen by patient-grouped CV on the real GlaS images,
    /// docs/RESULTS.md §1).
    pub fn strong_stain() -> Self {
        AugmentConfig {
            hed_sigma: 0.15,
            brightness: 0.25,
            contrast: 0.25,
            ..Self::default()
        }
    }

    /// No augmentation at all: every operation off.
    pub fn none() -> Self {
        AugmentConfig {
            flips: false,
            rot90: false,
            max_rotate_degrees: 0.0,
            scale_jitter: 0.0,
            hed_sigma: 0.0,
            brightness: 0.0,
            contrast: 0.0,
            blur_probability: 0.0,
            blur_max_sigma: 0.0,
            jpeg_probability: 0.0,
            jpeg_min_quality: 0,
        }
    }

    /// Checks the ranges: rotation 0..=180°, scale jitter 0..1, HED σ,
    /// brightness, contrast and probabilities 0..=1, blur σ 0..=10, JPEG quality
    /// 0..=100. ([`augment`] clamps rather than fails on bad values.)
    pub fn validate(&self) -> Result<()> {
        let check = |name: &str, v: f32, lo: f32, hi: f32, hi_inclusive: bool| -> Result<()> {
            let ok = v.is_finite() && v >= lo && if hi_inclusive { v <= hi } else { v < hi };
            if ok {
                Ok(())
            } else {
                let close = if hi_inclusive { ']' } else { ')' };
                Err(Error::Config(format!(
                    "[augmentation] {name} = {v} is outside [{lo}, {hi}{close}"
                )))
            }
        };
        check(
            "max_rotate_degrees",
            self.max_rotate_degrees,
            0.0,
            180.0,
            true,
        )?;
        check("scale_jitter", self.scale_jitter, 0.0, 1.0, false)?;
        check("hed_sigma", self.hed_sigma, 0.0, 1.0, true)?;
        check("brightness", self.brightness, 0.0, 1.0, true)?;
        check("contrast", self.contrast, 0.0, 1.0, true)?;
        check("blur_probability", self.blur_probability, 0.0, 1.0, true)?;
        check("blur_max_sigma", self.blur_max_sigma, 0.0, 10.0, true)?;
        check("jpeg_probability", self.jpeg_probability, 0.0, 1.0, true)?;
        if self.jpeg_min_quality > 100 {
            return Err(Error::Config(format!(
                "[augmentation] jpeg_min_quality = {} is above 100",
                self.jpeg_min_quality
            )));
        }
        Ok(())
    }

    /// Whether any operation is on (with the rules of [`augment`]).
    pub fn is_enabled(&self) -> bool {
        Enabled::of(self).any()
    }
}

/// Every name [`augment`] can return, in the order operations are applied.
pub const OP_NAMES: [&str; 12] = [
    "flip_h",
    "flip_v",
    "rot90",
    "rot180",
    "rot270",
    "rotate",
    "scale",
    "hed",
    "brightness",
    "contrast",
    "blur",
    "jpeg",
];

/// Ruifrok & Johnston stain OD vectors (rows: haematoxylin, eosin, DAB), as in
/// scikit-image's `rgb_from_hed`.
const RGB_FROM_HED: [[f32; 3]; 3] = [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]];
/// Its inverse, scikit-image's `hed_from_rgb`: `hed = od · HED_FROM_RGB` (row vectors).
const HED_FROM_RGB: [[f32; 3]; 3] = [
    [1.877_982_7, -1.007_678_7, -0.556_115_8],
    [-0.065_908_06, 1.134_730_4, -0.135_521_8],
    [-0.601_907_4, -0.480_414_2, 1.573_588_1],
];

/// Finite, clamped strengths: what is actually on.
#[derive(Clone, Copy, Debug)]
struct Enabled {
    flips: bool,
    rot90: bool,
    rotate: f32,
    scale: f32,
    hed: f32,
    brightness: f32,
    contrast: f32,
    blur_p: f32,
    blur_max: f32,
    jpeg_p: f32,
    jpeg_min: u8,
}

fn strength(v: f32, max: f32) -> f32 {
    if v.is_finite() && v > 0.0 {
        v.min(max)
    } else {
        0.0
    }
}

impl Enabled {
    fn of(cfg: &AugmentConfig) -> Self {
        let blur_p = strength(cfg.blur_probability, 1.0);
        let blur_max = strength(cfg.blur_max_sigma, 10.0);
        let jpeg_p = strength(cfg.jpeg_probability, 1.0);
        Enabled {
            flips: cfg.flips,
            rot90: cfg.rot90,
            rotate: strength(cfg.max_rotate_degrees, 180.0),
            scale: strength(cfg.scale_jitter, 0.9),
            hed: strength(cfg.hed_sigma, 1.0),
            brightness: strength(cfg.brightness, 1.0),
            contrast: strength(cfg.contrast, 1.0),
            blur_p: if blur_max > 0.0 { blur_p } else { 0.0 },
            blur_max,
            jpeg_p: if cfg.jpeg_min_quality > 0 {
                jpeg_p
            } else {
                0.0
            },
            jpeg_min: cfg.jpeg_min_quality.clamp(1, 100),
        }
    }

    fn any(&self) -> bool {
        self.flips
            || self.rot90
            || self.rotate > 0.0
            || self.scale > 0.0
            || self.hed > 0.0
            || self.brightness > 0.0
            || self.contrast > 0.0
            || self.blur_p > 0.0
            || self.jpeg_p > 0.0
    }
}

/// Every decision and parameter of one augmentation, drawn before any pixel is touched.
#[derive(Clone, Debug, Default, PartialEq)]
struct Plan {
    flip_h: bool,
    flip_v: bool,
    /// Counter-clockwise quarter turns, 0..4.
    quarter_turns: u8,
    rotate_degrees: Option<f32>,
    scale: Option<f32>,
    /// Per stain channel (H, E, D): α and β.
    hed: Option<([f32; 3], [f32; 3])>,
    brightness: Option<f32>,
    contrast: Option<f32>,
    blur_sigma: Option<f32>,
    jpeg_quality: Option<u8>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        *self == Plan::default()
    }
}

/// U(lo, hi) without panicking on an empty range.
#[inline]
fn uniform<R: Rng>(rng: &mut R, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}

#[inline]
fn coin<R: Rng>(rng: &mut R, p: f32) -> bool {
    p > 0.0 && rng.random::<f32>() < p
}

fn draw_rotate<R: Rng>(rng: &mut R, max: f32) -> f32 {
    uniform(rng, -max, max)
}
fn draw_scale<R: Rng>(rng: &mut R, j: f32) -> f32 {
    uniform(rng, 1.0 - j, 1.0 + j)
}
fn draw_hed<R: Rng>(rng: &mut R, s: f32) -> ([f32; 3], [f32; 3]) {
    let alpha = std::array::from_fn(|_| uniform(rng, 1.0 - s, 1.0 + s));
    let beta = std::array::from_fn(|_| uniform(rng, -s, s));
    (alpha, beta)
}
fn draw_blur<R: Rng>(rng: &mut R, max: f32) -> f32 {
    uniform(rng, 0.1, max.max(0.1))
}
fn draw_jpeg<R: Rng>(rng: &mut R, min: u8) -> u8 {
    if min >= 95 {
        min
    } else {
        rng.random_range(min..=95)
    }
}

fn draw_plan<R: Rng>(square: bool, en: &Enabled, rng: &mut R) -> Plan {
    let mut p = Plan::default();
    if en.flips {
        p.flip_h = coin(rng, 0.5);
        p.flip_v = coin(rng, 0.5);
    }
    if en.rot90 {
        p.quarter_turns = if square {
            rng.random_range(0..4u8)
        } else {
            2 * rng.random_range(0..2u8)
        };
    }
    if en.rotate > 0.0 && coin(rng, 0.5) {
        p.rotate_degrees = Some(draw_rotate(rng, en.rotate));
    }
    if en.scale > 0.0 && coin(rng, 0.5) {
        p.scale = Some(draw_scale(rng, en.scale));
    }
    if en.hed > 0.0 {
        p.hed = Some(draw_hed(rng, en.hed));
    }
    if en.brightness > 0.0 && coin(rng, 0.5) {
        p.brightness = Some(uniform(rng, 1.0 - en.brightness, 1.0 + en.brightness));
    }
    if en.contrast > 0.0 && coin(rng, 0.5) {
        p.contrast = Some(uniform(rng, 1.0 - en.contrast, 1.0 + en.contrast));
    }
    if coin(rng, en.blur_p) {
        p.blur_sigma = Some(draw_blur(rng, en.blur_max));
    }
    if coin(rng, en.jpeg_p) {
        p.jpeg_quality = Some(draw_jpeg(rng, en.jpeg_min));
    }

    if p.is_empty() {
        // Force one operation so the copy is not the original.
        if en.flips {
            if coin(rng, 0.5) {
                p.flip_h = true;
            } else {
                p.flip_v = true;
            }
        } else if en.rot90 {
            p.quarter_turns = if square { rng.random_range(1..4u8) } else { 2 };
        } else if en.rotate > 0.0 {
            p.rotate_degrees = Some(draw_rotate(rng, en.rotate));
        } else if en.scale > 0.0 {
            p.scale = Some(draw_scale(rng, en.scale));
        } else if en.brightness > 0.0 {
            p.brightness = Some(uniform(rng, 1.0 - en.brightness, 1.0 + en.brightness));
        } else if en.contrast > 0.0 {
            p.contrast = Some(uniform(rng, 1.0 - en.contrast, 1.0 + en.contrast));
        } else if en.blur_p > 0.0 {
            p.blur_sigma = Some(draw_blur(rng, en.blur_max));
        } else if en.jpeg_p > 0.0 {
            p.jpeg_quality = Some(draw_jpeg(rng, en.jpeg_min));
        }
        // (HED, when on, is always drawn, so the plan was not empty.)
    }
    p
}

/// One augmented copy of `patch` and the names of the operations applied, in order.
///
/// Same size as `patch`; deterministic given `rng`'s state. See the module
/// documentation for the operations, their order and probabilities. With every
/// operation off, returns a copy and no names.
pub fn augment<R: Rng>(
    patch: &RgbImage,
    cfg: &AugmentConfig,
    rng: &mut R,
) -> (RgbImage, Vec<&'static str>) {
    let (w, h) = patch.dimensions();
    let en = Enabled::of(cfg);
    if w == 0 || h == 0 || !en.any() {
        return (patch.clone(), Vec::new());
    }
    let plan = draw_plan(w == h, &en, rng);
    apply_plan(patch, &plan)
}

fn apply_plan(patch: &RgbImage, plan: &Plan) -> (RgbImage, Vec<&'static str>) {
    let mut names = Vec::with_capacity(6);
    let mut cur = if plan.flip_h || plan.flip_v || plan.quarter_turns != 0 {
        if plan.flip_h {
            names.push("flip_h");
        }
        if plan.flip_v {
            names.push("flip_v");
        }
        match plan.quarter_turns {
            1 => names.push("rot90"),
            2 => names.push("rot180"),
            3 => names.push("rot270"),
            _ => {}
        }
        dihedral(patch, plan.flip_h, plan.flip_v, plan.quarter_turns)
    } else {
        patch.clone()
    };

    if plan.rotate_degrees.is_some() || plan.scale.is_some() {
        if plan.rotate_degrees.is_some() {
            names.push("rotate");
        }
        if plan.scale.is_some() {
            names.push("scale");
        }
        cur = warp(
            &cur,
            plan.rotate_degrees.unwrap_or(0.0),
            plan.scale.unwrap_or(1.0),
        );
    }
    if let Some((alpha, beta)) = plan.hed {
        hed_jitter(&mut cur, alpha, beta);
        names.push("hed");
    }
    if plan.brightness.is_some() || plan.contrast.is_some() {
        brightness_contrast(&mut cur, plan.brightness, plan.contrast);
        if plan.brightness.is_some() {
            names.push("brightness");
        }
        if plan.contrast.is_some() {
            names.push("contrast");
        }
    }
    if let Some(sigma) = plan.blur_sigma {
        gaussian_blur(&mut cur, sigma);
        names.push("blur");
    }
    if let Some(q) = plan.jpeg_quality
        && let Some(img) = jpeg_round_trip(&cur, q)
    {
        cur = img;
        names.push("jpeg");
    }
    (cur, names)
}

/// Flips, then `k` counter-clockwise quarter turns (`k` odd needs a square image),
/// as one exact pixel permutation.
fn dihedral(src: &RgbImage, flip_h: bool, flip_v: bool, k: u8) -> RgbImage {
    let (w, h) = src.dimensions();
    let (wm, hm) = (i64::from(w) - 1, i64::from(h) - 1);
    // Source coordinates as affine maps of the output (x, y): s = a·x + b·y + c.
    let (mut mx, mut my): ([i64; 3], [i64; 3]) = match k % 4 {
        1 => ([0, -1, wm], [1, 0, 0]),
        2 => ([-1, 0, wm], [0, -1, hm]),
        3 => ([0, 1, 0], [-1, 0, hm]),
        _ => ([1, 0, 0], [0, 1, 0]),
    };
    if flip_h {
        mx = [-mx[0], -mx[1], wm - mx[2]];
    }
    if flip_v {
        my = [-my[0], -my[1], hm - my[2]];
    }
    let raw = src.as_raw();
    let stride = w as i64 * 3;
    let mut out = RgbImage::new(w, h);
    for (y, row) in out.chunks_exact_mut(w as usize * 3).enumerate() {
        let y = y as i64;
        // Source x and y at output x = 0, and their steps along the row.
        let (mut sx, mut sy) = (mx[1] * y + mx[2], my[1] * y + my[2]);
        for d in row.chunks_exact_mut(3) {
            let i = (sy * stride + sx * 3) as usize;
            d.copy_from_slice(&raw[i..i + 3]);
            sx += mx[0];
            sy += my[0];
        }
    }
    out
}

/// HED jitter after Tellez et al. 2018: RGB → OD → HED (Ruifrok & Johnston,
/// scikit-image's matrices), h' = α·h + β per stain channel, back to RGB.
///
/// The round trip is linear in OD, so it folds into one 3×3 matrix and offset
/// per call: od' = A·od + b with A = Rᵀ·diag(α)·Mᵀ, b = Rᵀ·β. (Unlike
/// scikit-image's `rgb2hed`, negative stain amounts are not clipped, so α = 1,
/// β = 0 is the identity; and the stain amounts are in natural OD units, not
/// divided by ln 10⁻⁶, so β = σ shifts each stain by σ optical density.)
fn hed_jitter(img: &mut RgbImage, alpha: [f32; 3], beta: [f32; 3]) {
    let r = &RGB_FROM_HED;
    let m = &HED_FROM_RGB;
    let a: [[f32; 3]; 3] = std::array::from_fn(|k| {
        std::array::from_fn(|i| (0..3).map(|j| r[j][k] * alpha[j] * m[i][j]).sum())
    });
    let b: [f32; 3] = std::array::from_fn(|k| (0..3).map(|j| r[j][k] * beta[j]).sum());
    // od'_k = Σ_j a[k][j]·od(p_j) + b[k] as three table lookups per channel, in
    // fixed point (1/256 of a step of the `u8_from_od` table): integer adds and
    // a clamp per value instead of float arithmetic and conversions.
    const SUB_BITS: u32 = 8;
    let scale = OD_TABLE_STEPS * (1u32 << SUB_BITS) as f32;
    let lut = od_lut();
    let tables: [[[i32; 256]; 3]; 3] = std::array::from_fn(|k| {
        std::array::from_fn(|j| {
            let offset = if j == 0 { b[k] } else { 0.0 };
            std::array::from_fn(|v| ((a[k][j] * lut[v] + offset) * scale).round() as i32)
        })
    });
    let back = od_to_u8_table();
    let last = back.len() as i32 - 1;
    for p in img.chunks_exact_mut(3) {
        let (r, g, b) = (p[0] as usize, p[1] as usize, p[2] as usize);
        for (k, t) in tables.iter().enumerate() {
            let sum = t[0][r] + t[1][g] + t[2][b];
            // Floor to a table step; negative OD (brighter than white) → 255.
            p[k] = back[(sum >> SUB_BITS).clamp(0, last) as usize];
        }
    }
}

/// Brightness (multiply by `b`) then contrast (stretch about the mean luma by `c`),
/// as one lookup table.
fn brightness_contrast(img: &mut RgbImage, b: Option<f32>, c: Option<f32>) {
    let b = b.unwrap_or(1.0);
    let mut lut = [0u8; 256];
    let mean = if c.is_some() {
        let (mut sum, mut n) = (0f64, 0u64);
        for p in img.as_raw().chunks_exact(3) {
            sum += 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]);
            n += 1;
        }
        (sum / n.max(1) as f64) as f32 * b
    } else {
        0.0
    };
    let c = c.unwrap_or(1.0);
    for (v, out) in lut.iter_mut().enumerate() {
        let x = (v as f32 * b - mean) * c + mean;
        *out = (x + 0.5).clamp(0.0, 255.0) as u8;
    }
    for v in img.iter_mut() {
        *v = lut[*v as usize];
    }
}

/// Separable Gaussian blur with reflected borders, kernel radius ⌈3σ⌉.
///
/// Not imageproc's `gaussian_blur_f32` (docs/BENCHMARKS.md, "Own code against
/// libraries", `examples/bench_libs.rs`): on 494 GlaS tiles of 224² it took
/// 0.72–1.04 ms a tile against 0.31–0.42 here (σ 0.3–1), and its pixels differ
/// from these in 67–91% of the bytes, by up to 49 levels (kernel radius 2σ,
/// edge pixels repeated instead of reflected, a rounding to u8 between its two
/// passes): augmented patches, hence the shards, would change.
pub fn gaussian_blur(img: &mut RgbImage, sigma: f32) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let radius = (3.0 * sigma).ceil().max(1.0) as usize;
    let mut kernel: Vec<f32> = (0..=2 * radius)
        .map(|i| {
            let d = i as f32 - radius as f32;
            (-d * d / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let total: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= total);

    let stride = w * 3;
    let (wi, hi) = (w as i64, h as i64);
    // Horizontal pass into f32, through a reflect-padded copy of each row.
    let mut tmp = vec![0f32; stride * h];
    let mut padded = vec![0f32; (w + 2 * radius) * 3];
    for (src_row, dst_row) in img.chunks_exact(stride).zip(tmp.chunks_exact_mut(stride)) {
        for (i, px) in padded.chunks_exact_mut(3).enumerate() {
            let sx = reflect101(i as i64 - radius as i64, wi) as usize * 3;
            px[0] = f32::from(src_row[sx]);
            px[1] = f32::from(src_row[sx + 1]);
            px[2] = f32::from(src_row[sx + 2]);
        }
        for (k, &wk) in kernel.iter().enumerate() {
            let shifted = &padded[k * 3..k * 3 + stride];
            for (d, &s) in dst_row.iter_mut().zip(shifted) {
                *d += wk * s;
            }
        }
    }
    // Vertical pass: each output row is a weighted sum of whole rows.
    let mut acc = vec![0f32; stride];
    for (y, out_row) in img.chunks_exact_mut(stride).enumerate() {
        acc.iter_mut().for_each(|a| *a = 0.0);
        for (k, &wk) in kernel.iter().enumerate() {
            let sy = reflect101(y as i64 + k as i64 - radius as i64, hi) as usize;
            let src = &tmp[sy * stride..(sy + 1) * stride];
            for (a, &s) in acc.iter_mut().zip(src) {
                *a += wk * s;
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = (a + 0.5).clamp(0.0, 255.0) as u8;
        }
    }
}

/// Encodes as JPEG at `quality` and decodes again; `None` if either step fails.
fn jpeg_round_trip(img: &RgbImage, quality: u8) -> Option<RgbImage> {
    let buf = crate::codec::jpeg(img, quality).ok()?;
    let decoded = image::load_from_memory_with_format(&buf, ImageFormat::Jpeg)
        .ok()?
        .to_rgb8();
    (decoded.dimensions() == img.dimensions()).then_some(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// An H&E-looking patch: pink background, purple blobs, white holes, noise.
    fn patch(w: u32, h: u32, seed: u64) -> RgbImage {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        RgbImage::from_fn(w, h, |x, y| {
            let n = rng.random_range(0..20u8);
            let (fx, fy) = (x as f32 / 9.0, y as f32 / 7.0);
            let v = (fx.sin() * fy.cos() + (fx * 0.3 + fy * 0.5).sin()) * 0.5;
            if v > 0.45 {
                Rgb([90 + n, 50 + n, 140 + n])
            } else if v < -0.6 {
                Rgb([245 + n / 2, 245 + n / 2, 245 + n / 2])
            } else {
                Rgb([215 + n, 140 + n, 185 + n])
            }
        })
    }

    fn run(img: &RgbImage, cfg: &AugmentConfig, seed: u64) -> (RgbImage, Vec<&'static str>) {
        augment(img, cfg, &mut ChaCha8Rng::seed_from_u64(seed))
    }

    fn sorted_pixels(img: &RgbImage) -> Vec<[u8; 3]> {
        let mut v: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn default_config_values() {
        let c = AugmentConfig::default();
        assert!(c.flips && c.rot90);
        assert_eq!(c.max_rotate_degrees, 15.0);
        assert_eq!(c.scale_jitter, 0.1);
        assert_eq!(c.hed_sigma, 0.05);
        assert_eq!((c.brightness, c.contrast), (0.1, 0.1));
        assert_eq!((c.blur_probability, c.blur_max_sigma), (0.2, 1.0));
        assert_eq!((c.jpeg_probability, c.jpeg_min_quality), (0.2, 60));
        assert!(c.validate().is_ok());
        assert!(c.is_enabled());
        assert!(!AugmentConfig::none().is_enabled());
        let bad = AugmentConfig {
            scale_jitter: 1.5,
            ..AugmentConfig::default()
        };
        assert!(matches!(bad.validate(), Err(Error::Config(_))));
        let nan = AugmentConfig {
            hed_sigma: f32::NAN,
            ..AugmentConfig::default()
        };
        assert!(nan.validate().is_err());
    }

    #[test]
    fn strong_stain_widens_only_the_colour_jitter() {
        let strong = AugmentConfig::strong_stain();
        assert!(strong.validate().is_ok());
        assert_eq!(
            strong,
            AugmentConfig {
                hed_sigma: 0.15,
                brightness: 0.25,
                contrast: 0.25,
                ..AugmentConfig::default()
            }
        );
        // Over the same seeds, the mean colour of the copies spreads wider.
        let img = patch(48, 48, 3);
        let spread = |cfg: &AugmentConfig| {
            let means: Vec<f64> = (0..40)
                .map(|seed| {
                    let out = run(&img, cfg, seed).0;
                    out.pixels().map(|p| p.0[0] as f64).sum::<f64>() / out.pixels().len() as f64
                })
                .collect();
            let m = means.iter().sum::<f64>() / means.len() as f64;
            (means.iter().map(|v| (v - m).powi(2)).sum::<f64>() / means.len() as f64).sqrt()
        };
        let (weak, wide) = (spread(&AugmentConfig::default()), spread(&strong));
        assert!(wide > 1.5 * weak, "spread {wide} against {weak}");
    }

    #[test]
    fn serde_defaults_and_unknown_fields() {
        let c: AugmentConfig = serde_json::from_str(r#"{"flips": false}"#).unwrap();
        assert_eq!(
            c,
            AugmentConfig {
                flips: false,
                ..AugmentConfig::default()
            }
        );
        assert!(serde_json::from_str::<AugmentConfig>(r#"{"flip": false}"#).is_err());
    }

    #[test]
    fn deterministic_for_a_seed_and_different_across_seeds() {
        let img = patch(64, 64, 1);
        let cfg = AugmentConfig::default();
        for seed in 0..20 {
            assert_eq!(run(&img, &cfg, seed), run(&img, &cfg, seed));
        }
        let outs: Vec<RgbImage> = (0..20).map(|s| run(&img, &cfg, s).0).collect();
        for i in 0..outs.len() {
            for j in i + 1..outs.len() {
                assert_ne!(outs[i], outs[j], "seeds {i} and {j}");
            }
        }
    }

    #[test]
    fn output_has_input_size_and_differs_from_input() {
        let cfg = AugmentConfig {
            blur_probability: 0.5,
            jpeg_probability: 0.5,
            ..AugmentConfig::default()
        };
        for (w, h) in [(64, 64), (48, 32), (1, 1), (1, 7)] {
            let img = patch(w, h, 2);
            for seed in 0..40 {
                let (out, names) = run(&img, &cfg, seed);
                assert_eq!(out.dimensions(), (w, h));
                assert!(!names.is_empty());
                if w > 1 && h > 1 {
                    assert_ne!(out, img, "seed {seed}: {names:?}");
                }
                if w != h {
                    assert!(!names.contains(&"rot90") && !names.contains(&"rot270"));
                }
            }
        }
        let empty = RgbImage::new(0, 0);
        assert_eq!(run(&empty, &cfg, 0), (empty.clone(), vec![]));
    }

    #[test]
    fn every_op_can_be_triggered_and_named() {
        let img = patch(48, 48, 3);
        let only = |f: &dyn Fn(&mut AugmentConfig)| {
            let mut c = AugmentConfig::none();
            f(&mut c);
            c
        };
        let cases: Vec<(AugmentConfig, Vec<&str>)> = vec![
            (only(&|c| c.flips = true), vec!["flip_h", "flip_v"]),
            (only(&|c| c.rot90 = true), vec!["rot90", "rot180", "rot270"]),
            (only(&|c| c.max_rotate_degrees = 15.0), vec!["rotate"]),
            (only(&|c| c.scale_jitter = 0.1), vec!["scale"]),
            (only(&|c| c.hed_sigma = 0.05), vec!["hed"]),
            (only(&|c| c.brightness = 0.1), vec!["brightness"]),
            (only(&|c| c.contrast = 0.1), vec!["contrast"]),
            (
                only(&|c| {
                    c.blur_probability = 1.0;
                    c.blur_max_sigma = 1.0
                }),
                vec!["blur"],
            ),
            (
                only(&|c| {
                    c.jpeg_probability = 1.0;
                    c.jpeg_min_quality = 60
                }),
                vec!["jpeg"],
            ),
        ];
        for (cfg, want) in cases {
            let mut seen = std::collections::BTreeSet::new();
            for seed in 0..32 {
                let (out, names) = run(&img, &cfg, seed);
                assert!(!names.is_empty(), "{want:?}: nothing applied");
                assert_eq!(out.dimensions(), img.dimensions());
                for n in &names {
                    assert!(want.contains(n), "{want:?}: unexpected {n}");
                    seen.insert(*n);
                }
            }
            assert_eq!(seen.len(), want.len(), "{want:?}: saw only {seen:?}");
        }
    }

    #[test]
    fn names_follow_the_fixed_order_and_all_ops_combine() {
        let img = patch(40, 40, 4);
        let cfg = AugmentConfig {
            blur_probability: 0.5,
            jpeg_probability: 0.5,
            ..AugmentConfig::default()
        };
        let mut seen = std::collections::BTreeSet::new();
        let mut both_warps = false;
        for seed in 0..300 {
            let (_, names) = run(&img, &cfg, seed);
            let idx: Vec<usize> = names
                .iter()
                .map(|n| OP_NAMES.iter().position(|o| o == n).unwrap())
                .collect();
            assert!(idx.windows(2).all(|p| p[0] < p[1]), "{names:?}");
            both_warps |= names.contains(&"rotate") && names.contains(&"scale");
            seen.extend(names);
        }
        assert_eq!(seen.len(), OP_NAMES.len(), "{seen:?}");
        assert!(both_warps);
    }

    #[test]
    fn nothing_drawn_forces_one_op() {
        let img = patch(32, 32, 5);
        // Blur with a tiny probability: forced every time.
        let cfg = AugmentConfig {
            blur_probability: 1e-9,
            blur_max_sigma: 1.0,
            ..AugmentConfig::none()
        };
        for seed in 0..10 {
            assert_eq!(run(&img, &cfg, seed).1, vec!["blur"]);
        }
        // Everything off: a copy, no names.
        assert_eq!(run(&img, &AugmentConfig::none(), 0), (img.clone(), vec![]));
    }

    #[test]
    fn flips_and_quarter_turns_permute_pixels_exactly() {
        let img = patch(37, 37, 6);
        let cfg = AugmentConfig {
            flips: true,
            rot90: true,
            ..AugmentConfig::none()
        };
        let before = sorted_pixels(&img);
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let (out, names) = run(&img, &cfg, seed);
            assert_eq!(sorted_pixels(&out), before, "{names:?}");
            seen.insert(names);
        }
        assert!(seen.len() >= 8, "{seen:?}");

        // Against the definitions (np.fliplr, np.flipud, np.rot90).
        let (w, h) = (5u32, 3u32);
        let small = RgbImage::from_fn(w, h, |x, y| Rgb([x as u8, y as u8, 0]));
        let fh = dihedral(&small, true, false, 0);
        let fv = dihedral(&small, false, true, 0);
        let r2 = dihedral(&small, false, false, 2);
        for (x, y, p) in fh.enumerate_pixels() {
            assert_eq!(p, small.get_pixel(w - 1 - x, y));
            assert_eq!(fv.get_pixel(x, y), small.get_pixel(x, h - 1 - y));
            assert_eq!(r2.get_pixel(x, y), small.get_pixel(w - 1 - x, h - 1 - y));
        }
        let sq = RgbImage::from_fn(4, 4, |x, y| Rgb([x as u8, y as u8, 0]));
        let r1 = dihedral(&sq, false, false, 1);
        let r3 = dihedral(&sq, false, false, 3);
        let fh_r1 = dihedral(&sq, true, false, 1);
        for (x, y, p) in r1.enumerate_pixels() {
            // np.rot90: out[i, j] = in[j, n-1-i] (i row, j column).
            assert_eq!(p, sq.get_pixel(3 - y, x));
            assert_eq!(r3.get_pixel(x, y), sq.get_pixel(y, 3 - x));
            // Flip first, then turn.
            assert_eq!(
                fh_r1.get_pixel(x, y),
                dihedral(&sq, true, false, 0).get_pixel(3 - y, x)
            );
        }
        // The top-right corner goes to the top-left under a quarter turn counter-clockwise.
        assert_eq!(r1.get_pixel(0, 0), sq.get_pixel(3, 0));
    }

    #[test]
    fn hed_identity_within_one() {
        // α = 1, β = 0 over a lattice of colours, extremes included.
        let vals: Vec<u8> = (0..=255u16)
            .step_by(5)
            .map(|v| v as u8)
            .chain([255])
            .collect();
        let n = vals.len() as u32;
        let img = RgbImage::from_fn(n * n, n, |x, y| {
            Rgb([
                vals[(x / n) as usize],
                vals[(x % n) as usize],
                vals[y as usize],
            ])
        });
        let mut out = img.clone();
        hed_jitter(&mut out, [1.0; 3], [0.0; 3]);
        for (a, b) in img.as_raw().iter().zip(out.as_raw()) {
            assert!((i16::from(*a) - i16::from(*b)).abs() <= 1, "{a} -> {b}");
        }
        // The matrices are inverses.
        for (i, row) in HED_FROM_RGB.iter().enumerate() {
            for k in 0..3 {
                let id: f32 = row.iter().zip(&RGB_FROM_HED).map(|(m, r)| m * r[k]).sum();
                assert!((id - if i == k { 1.0 } else { 0.0 }).abs() < 1e-5);
            }
        }
        // More haematoxylin darkens red most (H absorbs red).
        let mut pink = RgbImage::from_pixel(1, 1, Rgb([220, 150, 190]));
        hed_jitter(&mut pink, [1.0; 3], [0.3, 0.0, 0.0]);
        let p = pink.get_pixel(0, 0).0;
        assert!(p[0] < 220 && p[1] < 150 && p[2] < 190, "{p:?}");
        assert!(220 - i32::from(p[0]) > 190 - i32::from(p[2]));
    }

    #[test]
    fn blur_keeps_flat_images_and_smooths_edges() {
        let mut flat = RgbImage::from_pixel(20, 10, Rgb([10, 128, 250]));
        gaussian_blur(&mut flat, 1.0);
        assert!(flat.pixels().all(|p| p.0 == [10, 128, 250]));
        let mut step = RgbImage::from_fn(
            20,
            10,
            |x, _| if x < 10 { Rgb([0; 3]) } else { Rgb([200; 3]) },
        );
        gaussian_blur(&mut step, 1.0);
        let row: Vec<u8> = (0..20).map(|x| step.get_pixel(x, 5).0[0]).collect();
        assert!(row.windows(2).all(|w| w[0] <= w[1]), "{row:?}");
        assert!(
            row[9] > 0 && row[9] < 100 && row[10] > 100 && row[10] < 200,
            "{row:?}"
        );
        assert_eq!((row[0], row[19]), (0, 200));
    }

    #[test]
    fn brightness_contrast_lut() {
        let mut img = RgbImage::from_fn(
            2,
            1,
            |x, _| if x == 0 { Rgb([100; 3]) } else { Rgb([200; 3]) },
        );
        brightness_contrast(&mut img, Some(1.1), None);
        assert_eq!(img.get_pixel(0, 0).0, [110; 3]);
        assert_eq!(img.get_pixel(1, 0).0, [220; 3]);
        brightness_contrast(&mut img, None, Some(0.5));
        // Mean 165: 110 → 137.5, 220 → 192.5.
        assert!((137..=138).contains(&img.get_pixel(0, 0).0[0]));
        assert!((192..=193).contains(&img.get_pixel(1, 0).0[0]));
    }

    /// CPU time of this thread in ns (Linux), so timings hold on a busy machine.
    fn thread_cpu_ns() -> Option<u64> {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        s.split_whitespace().next()?.parse().ok()
    }

    #[test]
    fn timing_default_config_224() {
        let img = patch(224, 224, 8);
        let cfg = AugmentConfig::default();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let n = 300;
        let (t, cpu0) = (std::time::Instant::now(), thread_cpu_ns());
        let mut checksum = 0u64;
        for _ in 0..n {
            let (out, names) = augment(&img, &cfg, &mut rng);
            checksum += u64::from(out.as_raw()[1000]) + names.len() as u64;
        }
        let wall = t.elapsed().as_secs_f64() / f64::from(n);
        let cpu = match (cpu0, thread_cpu_ns()) {
            (Some(a), Some(b)) => (b - a) as f64 * 1e-9 / f64::from(n),
            _ => wall,
        };
        println!(
            "augment 224x224 default config: {:.3} ms CPU per patch ({:.0} patches/s per core), {:.3} ms wall [checksum {checksum}]",
            cpu * 1e3,
            1.0 / cpu,
            wall * 1e3
        );
        // Per-op timings for the record.
        let ops: [(&str, Plan); 5] = [
            (
                "dihedral",
                Plan {
                    flip_h: true,
                    quarter_turns: 1,
                    ..Plan::default()
                },
            ),
            (
                "warp",
                Plan {
                    rotate_degrees: Some(7.0),
                    scale: Some(1.05),
                    ..Plan::default()
                },
            ),
            (
                "hed",
                Plan {
                    hed: Some(([1.02, 0.98, 1.0], [0.01, -0.01, 0.0])),
                    ..Plan::default()
                },
            ),
            (
                "blur",
                Plan {
                    blur_sigma: Some(1.0),
                    ..Plan::default()
                },
            ),
            (
                "jpeg",
                Plan {
                    jpeg_quality: Some(80),
                    ..Plan::default()
                },
            ),
        ];
        for (name, plan) in ops {
            let (t, cpu0) = (std::time::Instant::now(), thread_cpu_ns());
            for _ in 0..200 {
                std::hint::black_box(apply_plan(&img, &plan));
            }
            let cpu = match (cpu0, thread_cpu_ns()) {
                (Some(a), Some(b)) => (b - a) as f64 * 1e-9,
                _ => t.elapsed().as_secs_f64(),
            };
            println!("  {name}: {:.3} ms CPU", cpu / 200.0 * 1e3);
        }
    }
}
