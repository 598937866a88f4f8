//! Stain normalisation: mapping the colours of any H&E image to those of a target.
//!
//! - Reinhard et al. 2001 ("Color transfer between images"): match the mean and
//!   standard deviation of each channel in Ruderman's lαβ space, computed over
//!   tissue pixels only. The lαβ conversion is HistomicsTK's (RGB in 0..=255,
//!   natural log), so the built-in target can be HistomicsTK's published one.
//! - Macenko et al. 2009 ("A method for normalizing histology slides for
//!   quantitative analysis"): estimate the H and E stain vectors in optical-density
//!   space from the plane of the two largest principal components, express every
//!   pixel as H and E concentrations, rescale them to the target's 99th-percentile
//!   concentrations, and rebuild the pixel with the target's stain vectors.
//!
//! Optical density throughout is OD = -ln((I+1)/256) (see
//! [`tissue::optical_density`](super::tissue::optical_density)), so white (255)
//! has OD 0 and is rebuilt as 255 exactly.

use image::RgbImage;
use nalgebra::{Matrix3, SymmetricEigen, Vector3};
use serde::{Deserialize, Serialize};

use super::tissue::{od_lut, od_to_u8_table, tissue_mask, u8_from_od};
use crate::error::{Error, Result};

/// Stain normalisation method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StainMethod {
    Reinhard,
    Macenko,
}

crate::choices!(StainMethod {
    Reinhard = "reinhard",
    Macenko = "macenko",
});

/// What a [`StainNormalizer`] maps images to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase", deny_unknown_fields)]
pub enum StainTarget {
    /// Mean and standard deviation of l, α, β over tissue pixels (HistomicsTK lαβ:
    /// RGB 0..=255, natural log).
    Reinhard { mean: [f32; 3], std: [f32; 3] },
    /// Unit OD vectors of haematoxylin (`stains[0]`) and eosin (`stains[1]`), and
    /// the 99th percentile of each stain's concentration.
    Macenko {
        stains: [[f32; 3]; 2],
        max_concentrations: [f32; 2],
    },
}

/// A fitted normaliser: maps any H&E image to the target's colours.
#[derive(Clone, Debug, PartialEq)]
pub struct StainNormalizer {
    target: StainTarget,
}

/// Fewest tissue pixels an image needs for its statistics to be estimated.
pub const MIN_STAIN_PIXELS: usize = 100;

/// Macenko's transparency threshold: pixels with OD below it in any channel are
/// left out of the stain-vector estimate.
const MACENKO_BETA: f32 = 0.15;
/// Macenko's angle percentile α (and 100 − α).
const MACENKO_ALPHA: f32 = 1.0;
/// At most this many pixels (an even subsample) go into an estimate.
const MAX_SAMPLES: usize = 1 << 20;
/// Reinhard: no channel's spread is scaled up more than this.
const MAX_STD_RATIO: f32 = 10.0;
/// Reinhard: below this OD norm a pixel keeps its colour, above
/// [`BLEND_FULL_OD`] it is fully normalised; linear in between. Glass stays glass.
const BLEND_START_OD: f32 = 0.05;
const BLEND_FULL_OD: f32 = 0.25;

/// HistomicsTK's / Reinhard's RGB → LMS (rows L, M, S).
const RGB2LMS: [[f32; 3]; 3] = [
    [0.3811, 0.5783, 0.0402],
    [0.1967, 0.7244, 0.0782],
    [0.0241, 0.1288, 0.8444],
];
const INV_SQRT3: f32 = 0.577_350_26;
const INV_SQRT6: f32 = 0.408_248_3;
const INV_SQRT2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// ln LMS → lαβ: diag(1/√3, 1/√6, 1/√2) · [[1,1,1],[1,1,−2],[1,−1,0]].
const LMS2LAB: [[f32; 3]; 3] = [
    [INV_SQRT3, INV_SQRT3, INV_SQRT3],
    [INV_SQRT6, INV_SQRT6, -2.0 * INV_SQRT6],
    [INV_SQRT2, -INV_SQRT2, 0.0],
];
/// lαβ → ln LMS: [[1,1,1],[1,1,−1],[1,−2,0]] · diag(1/√3, 1/√6, 1/√2).
const LAB2LMS: [[f32; 3]; 3] = [
    [INV_SQRT3, INV_SQRT6, INV_SQRT2],
    [INV_SQRT3, INV_SQRT6, -INV_SQRT2],
    [INV_SQRT3, -2.0 * INV_SQRT6, 0.0],
];

/// Built-in Reinhard target: the default `reference_mu_lab` / `reference_std_lab`
/// of HistomicsTK's nuclei-detection CLI (lαβ statistics of its H&E reference
/// tile), in the same lαβ convention as here.
const BUILTIN_REINHARD_MEAN: [f32; 3] = [8.632_344, -0.115_019_64, 0.038_684_33];
const BUILTIN_REINHARD_STD: [f32; 3] = [0.575_060_2, 0.104_033_29, 0.013_640_62];
/// Built-in Macenko target: the reference stain matrix and maximum concentrations
/// used by the widely copied Macenko implementation of M. Schau
/// (`HERef`, `maxCRef`), estimated there from a typical H&E slide.
const BUILTIN_MACENKO_STAINS: [[f32; 3]; 2] = [[0.5626, 0.7201, 0.4062], [0.2159, 0.8012, 0.5581]];
const BUILTIN_MACENKO_MAX_CONC: [f32; 2] = [1.9705, 1.0308];

#[inline]
fn mul3(m: &[[f32; 3]; 3], v: [f32; 3]) -> [f32; 3] {
    [
        m[0][0] * v[0] + m[0][1] * v[1] + m[0][2] * v[2],
        m[1][0] * v[0] + m[1][1] * v[1] + m[1][2] * v[2],
        m[2][0] * v[0] + m[2][1] * v[1] + m[2][2] * v[2],
    ]
}

/// 8-bit value from an optical density: `256·e^(−od) − 1`, rounded and clamped.
#[cfg(test)]
fn od_to_u8(od: f32) -> u8 {
    (256.0 * (-od).exp() - 0.5).clamp(0.0, 255.0) as u8
}

#[inline]
fn rgb_to_lab(p: &[u8]) -> [f32; 3] {
    let lms = mul3(
        &RGB2LMS,
        [f32::from(p[0]), f32::from(p[1]), f32::from(p[2])],
    );
    // Darker than 1/255 in a cone is treated as 1/255 (ln 0 is −∞).
    let ln = [
        lms[0].max(1.0).ln(),
        lms[1].max(1.0).ln(),
        lms[2].max(1.0).ln(),
    ];
    mul3(&LMS2LAB, ln)
}

fn lms2rgb() -> [[f32; 3]; 3] {
    let m = Matrix3::from_fn(|r, c| f64::from(RGB2LMS[r][c]));
    let inv = m.try_inverse().expect("RGB2LMS is invertible");
    std::array::from_fn(|r| std::array::from_fn(|c| inv[(r, c)] as f32))
}

/// The p-th percentile (0..=100) with linear interpolation, like numpy's default.
/// Reorders `v`. `v` must not be empty.
fn percentile(v: &mut [f32], p: f32) -> f32 {
    let n = v.len();
    let pos = (p / 100.0).clamp(0.0, 1.0) * (n - 1) as f32;
    let lo = (pos.floor() as usize).min(n - 1);
    let frac = pos - lo as f32;
    let (_, &mut a, upper) = v.select_nth_unstable_by(lo, f32::total_cmp);
    match upper.iter().copied().min_by(f32::total_cmp) {
        Some(b) if frac > 0.0 => a + (b - a) * frac,
        _ => a,
    }
}

fn sample_step(n: usize) -> usize {
    n.div_ceil(MAX_SAMPLES).max(1)
}

/// Mean and standard deviation of lαβ over the tissue pixels of `img`, or `None`
/// when it has fewer than [`MIN_STAIN_PIXELS`] of them.
fn reinhard_stats(img: &RgbImage) -> Option<([f32; 3], [f32; 3])> {
    let mask = tissue_mask(img);
    let mut n = 0usize;
    let mut sum = [0f64; 3];
    let mut sq = [0f64; 3];
    for (p, m) in img.as_raw().chunks_exact(3).zip(mask.as_raw()) {
        if *m == 0 {
            continue;
        }
        let lab = rgb_to_lab(p);
        for c in 0..3 {
            sum[c] += f64::from(lab[c]);
            sq[c] += f64::from(lab[c]) * f64::from(lab[c]);
        }
        n += 1;
    }
    if n < MIN_STAIN_PIXELS {
        return None;
    }
    let nf = n as f64;
    let mean: [f32; 3] = std::array::from_fn(|c| (sum[c] / nf) as f32);
    let std: [f32; 3] = std::array::from_fn(|c| {
        let m = sum[c] / nf;
        ((sq[c] / nf - m * m).max(0.0)).sqrt() as f32
    });
    Some((mean, std))
}

/// Macenko's estimate for `img`: unit H and E vectors in OD space and the 99th
/// percentile of their concentrations, or `None` when too few pixels are stained
/// or the estimate degenerates.
fn macenko_estimate(img: &RgbImage) -> Option<([[f32; 3]; 2], [f32; 2])> {
    let lut = od_lut();
    let raw = img.as_raw();
    let n = raw.len() / 3;
    if n == 0 {
        return None;
    }
    let step = sample_step(n);
    let od = |i: usize| -> [f32; 3] {
        let p = &raw[i * 3..i * 3 + 3];
        [lut[p[0] as usize], lut[p[1] as usize], lut[p[2] as usize]]
    };

    // Stained (non-transparent) pixels: OD at least β in every channel.
    let stained: Vec<[f32; 3]> = (0..n)
        .step_by(step)
        .map(od)
        .filter(|o| o.iter().all(|&v| v >= MACENKO_BETA))
        .collect();
    if stained.len() < MIN_STAIN_PIXELS {
        return None;
    }

    // Covariance of the stained ODs.
    let m = stained.len() as f64;
    let mut mean = Vector3::<f64>::zeros();
    for o in &stained {
        mean += Vector3::new(f64::from(o[0]), f64::from(o[1]), f64::from(o[2]));
    }
    mean /= m;
    let mut cov = Matrix3::<f64>::zeros();
    for o in &stained {
        let d = Vector3::new(f64::from(o[0]), f64::from(o[1]), f64::from(o[2])) - mean;
        cov += d * d.transpose();
    }
    cov /= (m - 1.0).max(1.0);

    // The plane of the two largest eigenvectors.
    let eig = SymmetricEigen::new(cov);
    let mut order = [0usize, 1, 2];
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    let mut v1: Vector3<f64> = eig.eigenvectors.column(order[0]).into();
    let v2: Vector3<f64> = eig.eigenvectors.column(order[1]).into();
    if v1.dot(&mean) < 0.0 {
        v1 = -v1; // point into the data, so angles stay within (−π/2, π/2)
    }
    if !(v1.iter().chain(v2.iter()).all(|x| x.is_finite())) {
        return None;
    }

    // Angles of the stained ODs in that plane; the extremes are the stains.
    let (a1, a2) = (v1.cast::<f32>(), v2.cast::<f32>());
    let mut phi: Vec<f32> = stained
        .iter()
        .map(|o| {
            let t1 = a1[0] * o[0] + a1[1] * o[1] + a1[2] * o[2];
            let t2 = a2[0] * o[0] + a2[1] * o[1] + a2[2] * o[2];
            t2.atan2(t1)
        })
        .collect();
    let phi_min = f64::from(percentile(&mut phi, MACENKO_ALPHA));
    let phi_max = f64::from(percentile(&mut phi, 100.0 - MACENKO_ALPHA));
    let orient = |v: Vector3<f64>| {
        let v = v.normalize();
        if v.sum() < 0.0 { -v } else { v }
    };
    let v_min = orient(v1 * phi_min.cos() + v2 * phi_min.sin());
    let v_max = orient(v1 * phi_max.cos() + v2 * phi_max.sin());
    // Haematoxylin absorbs more red than eosin does.
    let (h, e) = if v_min[0] > v_max[0] {
        (v_min, v_max)
    } else {
        (v_max, v_min)
    };
    if h.dot(&e).abs() > 0.9999 {
        return None; // one stain only: concentrations are not identifiable
    }
    let stains = [
        [h[0] as f32, h[1] as f32, h[2] as f32],
        [e[0] as f32, e[1] as f32, e[2] as f32],
    ];

    // 99th percentile of the concentrations over all (sampled) pixels.
    let pinv = pseudo_inverse(&stains)?;
    let mut ch = Vec::with_capacity(n / step + 1);
    let mut ce = Vec::with_capacity(n / step + 1);
    for i in (0..n).step_by(step) {
        let o = od(i);
        ch.push(pinv[0][0] * o[0] + pinv[0][1] * o[1] + pinv[0][2] * o[2]);
        ce.push(pinv[1][0] * o[0] + pinv[1][1] * o[1] + pinv[1][2] * o[2]);
    }
    let max_conc = [percentile(&mut ch, 99.0), percentile(&mut ce, 99.0)];
    if !max_conc.iter().all(|&c| c.is_finite() && c > 1e-3) {
        return None;
    }
    Some((stains, max_conc))
}

/// Least-squares inverse `(SᵀS)⁻¹Sᵀ` (2×3) of the 3×2 matrix whose columns are
/// the two stain vectors.
fn pseudo_inverse(stains: &[[f32; 3]; 2]) -> Option<[[f32; 3]; 2]> {
    let s = nalgebra::Matrix3x2::from_fn(|r, c| f64::from(stains[c][r]));
    let gram = s.transpose() * s;
    let inv = gram.try_inverse()?;
    let p = inv * s.transpose();
    Some(std::array::from_fn(|r| {
        std::array::from_fn(|c| p[(r, c)] as f32)
    }))
}

impl StainNormalizer {
    /// The target of a typical H&E slide, built in, for when no reference is given.
    ///
    /// Reinhard: HistomicsTK's default reference lαβ statistics. Macenko: the
    /// reference stain matrix H = (0.5626, 0.7201, 0.4062), E = (0.2159, 0.8012,
    /// 0.5581) and maximum concentrations (1.9705, 1.0308).
    pub fn builtin(method: StainMethod) -> Self {
        let target = match method {
            StainMethod::Reinhard => StainTarget::Reinhard {
                mean: BUILTIN_REINHARD_MEAN,
                std: BUILTIN_REINHARD_STD,
            },
            StainMethod::Macenko => StainTarget::Macenko {
                stains: BUILTIN_MACENKO_STAINS,
                max_concentrations: BUILTIN_MACENKO_MAX_CONC,
            },
        };
        StainNormalizer { target }
    }

    /// Fits the target to a reference image.
    ///
    /// Fails with [`Error::Config`] when the reference has fewer than
    /// [`MIN_STAIN_PIXELS`] tissue (Reinhard) or stained (Macenko) pixels, or its
    /// stains cannot be told apart.
    pub fn fit(method: StainMethod, reference: &RgbImage) -> Result<Self> {
        let target = match method {
            StainMethod::Reinhard => {
                let (mean, std) = reinhard_stats(reference).ok_or_else(|| {
                    Error::Config(format!(
                        "stain reference has too little tissue to fit (fewer than {MIN_STAIN_PIXELS} tissue pixels)"
                    ))
                })?;
                StainTarget::Reinhard { mean, std }
            }
            StainMethod::Macenko => {
                let (stains, max_concentrations) = macenko_estimate(reference).ok_or_else(|| {
                    Error::Config(
                        "stain reference has too little stained tissue, or only one stain, to fit Macenko stain vectors"
                            .to_string(),
                    )
                })?;
                StainTarget::Macenko {
                    stains,
                    max_concentrations,
                }
            }
        };
        Ok(StainNormalizer { target })
    }

    /// A normaliser to an explicit target (for example one read back from a manifest).
    pub fn from_target(target: StainTarget) -> Self {
        StainNormalizer { target }
    }

    /// The target this normaliser maps to.
    pub fn target(&self) -> &StainTarget {
        &self.target
    }

    pub fn method(&self) -> StainMethod {
        match self.target {
            StainTarget::Reinhard { .. } => StainMethod::Reinhard,
            StainTarget::Macenko { .. } => StainMethod::Macenko,
        }
    }

    /// Maps `img` to the target's colours; same size. An image whose own
    /// statistics cannot be estimated (blank, tiny, a single stain) comes back
    /// unchanged. Background stays (near) white.
    pub fn apply(&self, img: &RgbImage) -> RgbImage {
        match &self.target {
            StainTarget::Reinhard { mean, std } => apply_reinhard(img, mean, std),
            StainTarget::Macenko {
                stains,
                max_concentrations,
            } => apply_macenko(img, stains, max_concentrations),
        }
    }
}

fn apply_reinhard(img: &RgbImage, t_mean: &[f32; 3], t_std: &[f32; 3]) -> RgbImage {
    let Some((s_mean, s_std)) = reinhard_stats(img) else {
        return img.clone();
    };
    let ratio: [f32; 3] = std::array::from_fn(|c| {
        if s_std[c] > 0.0 {
            (t_std[c] / s_std[c]).min(MAX_STD_RATIO)
        } else {
            1.0
        }
    });
    let to_rgb = lms2rgb();
    let lut = od_lut();
    let mut out = img.clone();
    for p in out.chunks_exact_mut(3) {
        let (r, g, b) = (lut[p[0] as usize], lut[p[1] as usize], lut[p[2] as usize]);
        let od_norm = (r * r + g * g + b * b).sqrt();
        let w = ((od_norm - BLEND_START_OD) / (BLEND_FULL_OD - BLEND_START_OD)).clamp(0.0, 1.0);
        if w == 0.0 {
            continue;
        }
        let lab = rgb_to_lab(p);
        let mapped: [f32; 3] = std::array::from_fn(|c| (lab[c] - s_mean[c]) * ratio[c] + t_mean[c]);
        let ln_lms = mul3(&LAB2LMS, mapped);
        let rgb = mul3(&to_rgb, [ln_lms[0].exp(), ln_lms[1].exp(), ln_lms[2].exp()]);
        for c in 0..3 {
            let orig = f32::from(p[c]);
            let v = orig + w * (rgb[c].clamp(0.0, 255.0) - orig);
            p[c] = (v + 0.5).clamp(0.0, 255.0) as u8;
        }
    }
    out
}

fn apply_macenko(img: &RgbImage, t_stains: &[[f32; 3]; 2], t_max: &[f32; 2]) -> RgbImage {
    let Some((s_stains, s_max)) = macenko_estimate(img) else {
        return img.clone();
    };
    let Some(pinv) = pseudo_inverse(&s_stains) else {
        return img.clone();
    };
    // od' = T · diag(t_max / s_max) · P · od, one 3×3 matrix for the whole image.
    let scale = [t_max[0] / s_max[0], t_max[1] / s_max[1]];
    let m: [[f32; 3]; 3] = std::array::from_fn(|r| {
        std::array::from_fn(|c| {
            t_stains[0][r] * scale[0] * pinv[0][c] + t_stains[1][r] * scale[1] * pinv[1][c]
        })
    });
    let lut = od_lut();
    let back = od_to_u8_table();
    let mut out = img.clone();
    for p in out.chunks_exact_mut(3) {
        if p == [255, 255, 255] {
            continue; // OD 0 maps to OD 0
        }
        let od = [lut[p[0] as usize], lut[p[1] as usize], lut[p[2] as usize]];
        let o = mul3(&m, od);
        p[0] = u8_from_od(back, o[0]);
        p[1] = u8_from_od(back, o[1]);
        p[2] = u8_from_od(back, o[2]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn unit(v: [f32; 3]) -> [f32; 3] {
        let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        [v[0] / n, v[1] / n, v[2] / n]
    }

    /// A synthetic H&E image rendered from two stain vectors (Beer–Lambert):
    /// 15% white glass, 30% nuclei (mostly H), 55% stroma (mostly E).
    fn synthetic(w: u32, h: u32, stains: [[f32; 3]; 2], conc_scale: f32, seed: u64) -> RgbImage {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        RgbImage::from_fn(w, h, |x, y| {
            let region = ((x / 8) * 7 + (y / 8) * 13) % 20;
            let (ch, ce) = if region < 3 {
                (0.0, 0.0)
            } else if region < 9 {
                (rng.random_range(0.6..1.8f32), rng.random_range(0.0..0.3f32))
            } else {
                (
                    rng.random_range(0.0..0.25f32),
                    rng.random_range(0.3..1.0f32),
                )
            };
            let (ch, ce) = (ch * conc_scale, ce * conc_scale);
            let px: [u8; 3] =
                std::array::from_fn(|c| od_to_u8(ch * stains[0][c] + ce * stains[1][c]));
            Rgb(px)
        })
    }

    fn stain_error(a: &[[f32; 3]; 2], b: &[[f32; 3]; 2]) -> f32 {
        (0..2)
            .map(|i| {
                let d: f32 = (0..3).map(|c| a[i][c] * b[i][c]).sum();
                d.clamp(-1.0, 1.0).acos()
            })
            .sum()
    }

    fn stains_of(img: &RgbImage) -> [[f32; 3]; 2] {
        match StainNormalizer::fit(StainMethod::Macenko, img)
            .unwrap()
            .target()
        {
            StainTarget::Macenko { stains, .. } => *stains,
            t => panic!("{t:?}"),
        }
    }

    const REF_STAINS: [[f32; 3]; 2] = BUILTIN_MACENKO_STAINS;
    fn shifted_stains() -> [[f32; 3]; 2] {
        // A bluer haematoxylin and a redder eosin than the reference.
        [unit([0.45, 0.75, 0.50]), unit([0.10, 0.90, 0.40])]
    }

    #[test]
    fn colour_matrices_are_inverse() {
        let inv = lms2rgb();
        for r in 0..3 {
            for c in 0..3 {
                let id: f32 = (0..3).map(|k| RGB2LMS[r][k] * inv[k][c]).sum();
                assert!((id - if r == c { 1.0 } else { 0.0 }).abs() < 1e-4);
                let id2: f32 = (0..3).map(|k| LMS2LAB[r][k] * LAB2LMS[k][c]).sum();
                assert!((id2 - if r == c { 1.0 } else { 0.0 }).abs() < 1e-5);
            }
        }
        // White is neutral in lαβ: α = β ≈ 0.
        let lab = rgb_to_lab(&[255, 255, 255]);
        assert!(lab[1].abs() < 1e-2 && lab[2].abs() < 1e-2, "{lab:?}");
    }

    #[test]
    fn percentile_like_numpy() {
        let mut v: Vec<f32> = (0..=100).rev().map(|i| i as f32).collect();
        assert_eq!(percentile(&mut v, 99.0), 99.0);
        let mut v = vec![1.0, 2.0, 3.0, 4.0];
        assert!((percentile(&mut v, 50.0) - 2.5).abs() < 1e-6);
        let mut v = vec![7.0];
        assert_eq!(percentile(&mut v, 1.0), 7.0);
    }

    #[test]
    fn macenko_recovers_known_stains() {
        let img = synthetic(128, 128, REF_STAINS, 1.0, 1);
        let est = stains_of(&img);
        assert!(stain_error(&est, &REF_STAINS) < 0.12, "{est:?}");
    }

    #[test]
    fn macenko_brings_stains_closer_to_reference() {
        let reference = synthetic(128, 128, REF_STAINS, 1.0, 1);
        let source = synthetic(128, 128, shifted_stains(), 1.4, 2);
        for norm in [
            StainNormalizer::fit(StainMethod::Macenko, &reference).unwrap(),
            StainNormalizer::builtin(StainMethod::Macenko),
        ] {
            let target = match norm.target() {
                StainTarget::Macenko { stains, .. } => *stains,
                _ => unreachable!(),
            };
            let before = stain_error(&stains_of(&source), &target);
            let out = norm.apply(&source);
            assert_eq!(out.dimensions(), source.dimensions());
            let after = stain_error(&stains_of(&out), &target);
            assert!(after < before * 0.5, "before {before}, after {after}");
            assert!(after < 0.1, "after {after}");
        }
    }

    fn lab_distance(a: ([f32; 3], [f32; 3]), mean: &[f32; 3], std: &[f32; 3]) -> f32 {
        (0..3)
            .map(|c| ((a.0[c] - mean[c]) / std[c]).abs() + ((a.1[c] - std[c]) / std[c]).abs())
            .sum()
    }

    /// A colour cast of the kind one lab's stain or scanner gives another's.
    fn cast(img: &RgbImage) -> RgbImage {
        let mut out = img.clone();
        for p in out.pixels_mut() {
            if p.0 == [255, 255, 255] {
                continue;
            }
            p.0 = [
                (f32::from(p.0[0]) * 0.8) as u8,
                (f32::from(p.0[1]) * 0.95 + 5.0) as u8,
                (f32::from(p.0[2]) * 0.7 + 60.0).min(255.0) as u8,
            ];
        }
        out
    }

    #[test]
    fn reinhard_brings_statistics_closer_to_target() {
        let reference = synthetic(128, 128, REF_STAINS, 1.0, 3);
        let source = cast(&synthetic(128, 128, REF_STAINS, 1.3, 4));
        for norm in [
            StainNormalizer::fit(StainMethod::Reinhard, &reference).unwrap(),
            StainNormalizer::builtin(StainMethod::Reinhard),
        ] {
            let StainTarget::Reinhard { mean, std } = norm.target().clone() else {
                unreachable!()
            };
            let before = lab_distance(reinhard_stats(&source).unwrap(), &mean, &std);
            let out = norm.apply(&source);
            let after = lab_distance(reinhard_stats(&out).unwrap(), &mean, &std);
            assert!(after < before * 0.5, "before {before}, after {after}");
        }
        // Fitting to itself changes little.
        let own = StainNormalizer::fit(StainMethod::Reinhard, &reference).unwrap();
        let same = own.apply(&reference);
        let mad: f64 = same
            .as_raw()
            .iter()
            .zip(reference.as_raw())
            .map(|(&a, &b)| f64::from((i16::from(a) - i16::from(b)).abs()))
            .sum::<f64>()
            / same.as_raw().len() as f64;
        assert!(mad < 3.0, "mean abs diff {mad}");
    }

    #[test]
    fn white_stays_white() {
        let source = cast(&synthetic(96, 96, shifted_stains(), 1.2, 5));
        for method in [StainMethod::Reinhard, StainMethod::Macenko] {
            let norm = StainNormalizer::builtin(method);
            let out = norm.apply(&source);
            let mut whites = 0;
            for (a, b) in source.pixels().zip(out.pixels()) {
                if a.0 == [255, 255, 255] {
                    whites += 1;
                    assert!(b.0.iter().all(|&v| v >= 250), "{method:?}: {b:?}");
                }
            }
            assert!(whites > 100);
        }
    }

    #[test]
    fn blank_and_tiny_images_pass_through() {
        let white = RgbImage::from_pixel(50, 50, Rgb([255, 255, 255]));
        let grey = RgbImage::from_pixel(50, 50, Rgb([200, 190, 210]));
        let tiny = RgbImage::from_pixel(1, 1, Rgb([120, 60, 160]));
        let empty = RgbImage::new(0, 0);
        for method in [StainMethod::Reinhard, StainMethod::Macenko] {
            let norm = StainNormalizer::builtin(method);
            assert_eq!(norm.method(), method);
            for img in [&white, &tiny, &empty] {
                assert_eq!(&norm.apply(img), img);
                assert!(matches!(
                    StainNormalizer::fit(method, img),
                    Err(Error::Config(_))
                ));
            }
            // A flat colour must not panic (one stain, zero spread).
            let _ = norm.apply(&grey);
            let _ = StainNormalizer::fit(method, &grey);
        }
    }

    #[test]
    fn target_round_trips_through_serde() {
        for method in [StainMethod::Reinhard, StainMethod::Macenko] {
            let t = StainNormalizer::builtin(method).target().clone();
            let json = serde_json::to_string(&t).unwrap();
            let back: StainTarget = serde_json::from_str(&json).unwrap();
            assert_eq!(
                StainNormalizer::from_target(back),
                StainNormalizer::builtin(method)
            );
        }
    }
}
