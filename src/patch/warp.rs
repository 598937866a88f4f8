//! Rotation and zoom about the centre as one inverse-mapped bilinear warp with
//! reflected borders (`BORDER_REFLECT_101`), drawn for three augmented copies in four.
//!
//! Every output pixel samples the source at a position stepped along its row
//! in 16.16 fixed point, with bilinear weights rounded to 1/256, so the inner
//! loop has no float conversions or divisions. Each row's start is computed
//! afresh in f64, so the rounding of the steps cannot build up over more than
//! one row (at most ~0.002 px on a 224-px row).
//!
//! On x86-64 CPUs with AVX2, blocks of eight output pixels whose four source
//! neighbours all lie inside the image are computed together, the neighbours
//! fetched with gathers; blocks that touch the border, and every pixel on
//! other CPUs, take the scalar loop. Both do the same integer arithmetic, so
//! the output does not depend on the CPU (`simd_and_scalar_agree`).

use image::RgbImage;

use super::tiling::reflect101;

const FRAC_BITS: u32 = 16;
/// Half a 1/256 step in 16.16, to round the bilinear weights.
const HALF: i64 = 1 << (FRAC_BITS - 9);

/// Reflected (`BORDER_REFLECT_101`) indices for positions `-n ..< 2n`, the
/// range a ±15° rotation with ±10% zoom reaches; farther ones are computed.
struct Reflect {
    table: Vec<u32>,
    n: i64,
}

impl Reflect {
    fn new(n: u32) -> Self {
        let n = i64::from(n);
        let table = (-n..2 * n).map(|i| reflect101(i, n) as u32).collect();
        Self { table, n }
    }

    #[inline]
    fn at(&self, i: i64) -> usize {
        match usize::try_from(i + self.n) {
            Ok(k) if k < self.table.len() => self.table[k] as usize,
            _ => reflect101(i, self.n) as usize,
        }
    }
}

/// The source image as the sampling loops see it.
struct Source<'a> {
    raw: &'a [u8],
    stride: usize,
    /// Width − 1 and height − 1: a position whose integer part is below both
    /// has all four neighbours inside the image.
    last_x: u64,
    last_y: u64,
    rx: Reflect,
    ry: Reflect,
}

/// 16.16 fixed-point source position of a row's first pixel and its step per
/// output pixel.
#[derive(Clone, Copy)]
struct Walk {
    sx: i64,
    sy: i64,
    step_x: i64,
    step_y: i64,
}

impl Walk {
    fn advanced(self, pixels: i64) -> Self {
        Walk {
            sx: self.sx + pixels * self.step_x,
            sy: self.sy + pixels * self.step_y,
            ..self
        }
    }
}

impl Source<'_> {
    /// Whether the pixel at 16.16 position (`sx`, `sy`) needs no reflection.
    #[inline]
    fn interior(&self, sx: i64, sy: i64) -> bool {
        ((sx >> FRAC_BITS) as u64) < self.last_x && ((sy >> FRAC_BITS) as u64) < self.last_y
    }

    /// Samples the pixels of `out` (RGB triples) one at a time along `walk`.
    fn row_scalar(&self, walk: Walk, out: &mut [u8]) {
        let (mut sx, mut sy) = (walk.sx, walk.sy);
        for d in out.chunks_exact_mut(3) {
            let (x0, y0) = (sx >> FRAC_BITS, sy >> FRAC_BITS);
            // Rounded to 1/256: 0..=256, exact for integer positions.
            let wx = ((sx & 0xFFFF) + HALF) as u32 >> (FRAC_BITS - 8);
            let wy = ((sy & 0xFFFF) + HALF) as u32 >> (FRAC_BITS - 8);
            let (c0, c1, r0, r1) = if self.interior(sx, sy) {
                let (x0, y0) = (x0 as usize, y0 as usize);
                let r0 = y0 * self.stride;
                (x0 * 3, x0 * 3 + 3, r0, r0 + self.stride)
            } else {
                (
                    self.rx.at(x0) * 3,
                    self.rx.at(x0 + 1) * 3,
                    self.ry.at(y0) * self.stride,
                    self.ry.at(y0 + 1) * self.stride,
                )
            };
            let raw = self.raw;
            let vx = 256 - wx;
            for c in 0..3 {
                let top = u32::from(raw[r0 + c0 + c]) * vx + u32::from(raw[r0 + c1 + c]) * wx;
                let bottom = u32::from(raw[r1 + c0 + c]) * vx + u32::from(raw[r1 + c1 + c]) * wx;
                // top·(256 − wy) + bottom·wy, with one multiply.
                let mixed = (top << 8) as i32 + (bottom as i32 - top as i32) * wy as i32;
                d[c] = ((mixed + (1 << 15)) >> 16) as u8;
            }
            sx += walk.step_x;
            sy += walk.step_y;
        }
    }

    /// Samples one output row, eight pixels at a time where the CPU allows.
    fn row(&self, walk: Walk, out: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if self.gathers_fit() && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, and `gathers_fit` holds.
            unsafe { avx2::row(self, walk, out) };
            return;
        }
        self.row_scalar(walk, out);
    }

    /// Whether byte offsets and 16.16 positions of interior pixels fit the
    /// 32-bit lanes of the vector path.
    #[cfg(target_arch = "x86_64")]
    fn gathers_fit(&self) -> bool {
        self.raw.len() < i32::MAX as usize / 2 && self.last_x < 1 << 14 && self.last_y < 1 << 14
    }
}

/// Rotation by `degrees` and zoom by `scale` about the centre: output offset
/// `d` from the centre samples the source at `c + R(−θ)·d / s`.
pub(crate) fn warp(src: &RgbImage, degrees: f32, scale: f32) -> RgbImage {
    warp_rows(src, degrees, scale, |s, w, out| s.row(w, out))
}

/// [`warp`], each output row sampled by `sample`.
fn warp_rows(
    src: &RgbImage,
    degrees: f32,
    scale: f32,
    sample: impl Fn(&Source, Walk, &mut [u8]),
) -> RgbImage {
    let fixed = |v: f64| (v * f64::from(1u32 << FRAC_BITS)).round() as i64;
    let (w, h) = src.dimensions();
    let (cx, cy) = ((f64::from(w) - 1.0) * 0.5, (f64::from(h) - 1.0) * 0.5);
    let (sin, cos) = f64::from(degrees).to_radians().sin_cos();
    let inv = 1.0 / f64::from(scale);
    let (dxx, dxy) = (cos * inv, -sin * inv); // change of (sx, sy) per output x
    let (dyx, dyy) = (sin * inv, cos * inv); // change of (sx, sy) per output y
    let source = Source {
        raw: src.as_raw(),
        stride: w as usize * 3,
        last_x: u64::from(w.saturating_sub(1)),
        last_y: u64::from(h.saturating_sub(1)),
        rx: Reflect::new(w),
        ry: Reflect::new(h),
    };
    let mut out = RgbImage::new(w, h);
    for (y, row) in out.chunks_exact_mut(source.stride.max(1)).enumerate() {
        let oy = y as f64 - cy;
        let walk = Walk {
            sx: fixed(cx - cx * dxx + oy * dyx),
            sy: fixed(cy - cx * dxy + oy * dyy),
            step_x: fixed(dxx),
            step_y: fixed(dxy),
        };
        sample(&source, walk, row);
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{FRAC_BITS, HALF, Source, Walk};

    /// Byte `c` of each 32-bit lane into its low 16 bits (shuffle index 0x80
    /// writes zero).
    const fn low_byte(c: i8) -> [i8; 32] {
        let mut m = [-128i8; 32];
        let mut lane = 0;
        while lane < 8 {
            m[lane * 4] = lane as i8 % 4 * 4 + c;
            lane += 1;
        }
        m
    }

    /// Byte `c` of each 32-bit lane into its high 16 bits.
    const fn high_byte(c: i8) -> [i8; 32] {
        let mut m = [-128i8; 32];
        let mut lane = 0;
        while lane < 8 {
            m[lane * 4 + 2] = lane as i8 % 4 * 4 + c;
            lane += 1;
        }
        m
    }

    /// Packs the low three bytes of each lane's four 32-bit words into 12 bytes.
    const PACK: [i8; 32] = [
        0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -128, -128, -128, -128, //
        0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -128, -128, -128, -128,
    ];

    #[target_feature(enable = "avx2")]
    fn load(m: &[i8; 32]) -> __m256i {
        // SAFETY: 32 readable bytes; an unaligned load.
        unsafe { _mm256_loadu_si256(m.as_ptr().cast()) }
    }

    /// One output row: blocks of eight pixels whose neighbours are all inside
    /// the image by gathers, everything else by [`Source::row_scalar`].
    ///
    /// # Safety
    /// The CPU must support AVX2, and [`Source::gathers_fit`] must hold.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn row(src: &Source, walk: Walk, out: &mut [u8]) {
        let n = out.len() / 3;
        let lanes = |step: i64| {
            let s = step as i32;
            _mm256_setr_epi32(0, s, 2 * s, 3 * s, 4 * s, 5 * s, 6 * s, 7 * s)
        };
        let (lanes_x, lanes_y) = (lanes(walk.step_x), lanes(walk.step_y));
        let stride = _mm256_set1_epi32(src.stride as i32);
        let (two, three) = (_mm256_set1_epi32(2), _mm256_set1_epi32(3));
        let frac = _mm256_set1_epi32(0xFFFF);
        let half = _mm256_set1_epi32(HALF as i32);
        let w256 = _mm256_set1_epi32(256);
        let round = _mm256_set1_epi32(1 << 15);
        let left = [load(&low_byte(0)), load(&low_byte(1)), load(&low_byte(2))];
        // The right-hand neighbours are gathered from 2 bytes on, so their
        // channel c is byte c + 1 of the lane.
        let right = [
            load(&high_byte(1)),
            load(&high_byte(2)),
            load(&high_byte(3)),
        ];
        let pack = load(&PACK);
        let base = src.raw.as_ptr().cast::<i32>();
        let mut block = [0u8; 32];
        let mut px = 0;
        while px + 8 <= n {
            let at = walk.advanced(px as i64);
            let last = at.advanced(7);
            let dst = &mut out[px * 3..px * 3 + 24];
            // Positions are linear along the row: if the first and the eighth
            // pixel need no reflection, none between them does.
            if !(src.interior(at.sx, at.sy) && src.interior(last.sx, last.sy)) {
                src.row_scalar(at, dst);
                px += 8;
                continue;
            }
            let sx = _mm256_add_epi32(_mm256_set1_epi32(at.sx as i32), lanes_x);
            let sy = _mm256_add_epi32(_mm256_set1_epi32(at.sy as i32), lanes_y);
            let x0 = _mm256_srli_epi32::<FRAC_BITS_I>(sx);
            let y0 = _mm256_srli_epi32::<FRAC_BITS_I>(sy);
            let wx = _mm256_srli_epi32::<8>(_mm256_add_epi32(_mm256_and_si256(sx, frac), half));
            let wy = _mm256_srli_epi32::<8>(_mm256_add_epi32(_mm256_and_si256(sy, frac), half));
            // (256 − wx) in the low and wx in the high 16 bits, for madd.
            let weights_x =
                _mm256_or_si256(_mm256_sub_epi32(w256, wx), _mm256_slli_epi32::<16>(wx));
            let off = _mm256_add_epi32(
                _mm256_mullo_epi32(y0, stride),
                _mm256_mullo_epi32(x0, three),
            );
            let off_below = _mm256_add_epi32(off, stride);
            // SAFETY: every pixel is interior (x0 < w − 1, y0 < h − 1), so the
            // four bytes at `off` and `off_below` end at the right-hand
            // neighbour's first byte, and those at `off + 2` and `off_below + 2`
            // end at its last: all inside `raw`. Offsets fit i32 (gathers_fit).
            let (tl, bl, tr, br) = unsafe {
                (
                    _mm256_i32gather_epi32::<1>(base, off),
                    _mm256_i32gather_epi32::<1>(base, off_below),
                    _mm256_i32gather_epi32::<1>(base, _mm256_add_epi32(off, two)),
                    _mm256_i32gather_epi32::<1>(base, _mm256_add_epi32(off_below, two)),
                )
            };
            let mut rgb = _mm256_setzero_si256();
            for c in 0..3 {
                // Left and right neighbour of channel c as 16-bit pairs, then
                // left·(256 − wx) + right·wx in one multiply-add.
                let top = _mm256_madd_epi16(
                    _mm256_or_si256(
                        _mm256_shuffle_epi8(tl, left[c]),
                        _mm256_shuffle_epi8(tr, right[c]),
                    ),
                    weights_x,
                );
                let bottom = _mm256_madd_epi16(
                    _mm256_or_si256(
                        _mm256_shuffle_epi8(bl, left[c]),
                        _mm256_shuffle_epi8(br, right[c]),
                    ),
                    weights_x,
                );
                // top·(256 − wy) + bottom·wy = top·256 + (bottom − top)·wy.
                let mixed = _mm256_add_epi32(
                    _mm256_slli_epi32::<8>(top),
                    _mm256_mullo_epi32(_mm256_sub_epi32(bottom, top), wy),
                );
                let value = _mm256_srai_epi32::<16>(_mm256_add_epi32(mixed, round));
                rgb = _mm256_or_si256(
                    rgb,
                    _mm256_sllv_epi32(value, _mm256_set1_epi32(8 * c as i32)),
                );
            }
            // Four RGB triples per 128-bit half, then the halves side by side.
            let packed = _mm256_permutevar8x32_epi32(
                _mm256_shuffle_epi8(rgb, pack),
                _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 3, 7),
            );
            // SAFETY: `block` has 32 bytes.
            unsafe { _mm256_storeu_si256(block.as_mut_ptr().cast(), packed) };
            dst.copy_from_slice(&block[..24]);
            px += 8;
        }
        src.row_scalar(walk.advanced(px as i64), &mut out[px * 3..]);
    }

    const FRAC_BITS_I: i32 = FRAC_BITS as i32;
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn noise(w: u32, h: u32, seed: u64) -> RgbImage {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        RgbImage::from_fn(w, h, |_, _| Rgb(rng.random()))
    }

    #[test]
    fn simd_and_scalar_agree() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for &(w, h) in &[(224u32, 224u32), (37, 53), (9, 8), (300, 17)] {
            let img = noise(w, h, u64::from(w * h));
            for _ in 0..12 {
                let degrees = rng.random_range(-30.0..30.0);
                let scale = rng.random_range(0.8..1.25);
                assert_eq!(
                    warp(&img, degrees, scale),
                    warp_rows(&img, degrees, scale, |s, w, out| s.row_scalar(w, out)),
                    "{w}×{h}, {degrees}°, ×{scale}"
                );
            }
        }
    }

    #[test]
    fn identity_half_turn_and_reflected_border() {
        let img = noise(33, 21, 7);
        assert_eq!(warp(&img, 0.0, 1.0), img);
        // 180° about the centre is exact up to rounding of the trigonometry.
        let r = warp(&img, 180.0, 1.0);
        for (y, row) in r.rows().enumerate() {
            for (x, p) in row.enumerate() {
                let want = img.get_pixel(32 - x as u32, 20 - y as u32);
                for (a, b) in p.0.iter().zip(want.0) {
                    assert!((i16::from(*a) - i16::from(b)).abs() <= 1);
                }
            }
        }
        // Zooming out reflects the border in rather than leaving black.
        let bright = RgbImage::from_fn(33, 21, |x, y| Rgb([60 + (x * 5) as u8, 90, 50 + y as u8]));
        let z = warp(&bright, 10.0, 0.8);
        assert!(z.pixels().all(|p| p.0.iter().any(|&v| v >= 50)));
    }

    #[test]
    fn tiny_images_reflect_without_panicking() {
        for &(w, h) in &[(1u32, 1u32), (1, 9), (9, 1), (2, 2)] {
            let img = noise(w, h, 3);
            let out = warp(&img, 12.0, 0.9);
            assert_eq!(out.dimensions(), (w, h));
        }
        assert_eq!(warp(&RgbImage::new(0, 0), 5.0, 1.0).dimensions(), (0, 0));
    }
}
