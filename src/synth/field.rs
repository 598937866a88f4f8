//! Numeric building blocks for the renderer: integer hashing, smooth value noise, a
//! fast `atan2`, the exact Euclidean distance transform and a small binomial blur.
//! Everything here is pure and deterministic (no global state, no libm in hot loops),
//! so an image renders to the same bytes on any thread.

use std::f32::consts::{FRAC_PI_2, PI};

/// A 32-bit finaliser with good avalanche (Wellons' "lowbias32").
#[inline]
pub(super) fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// SplitMix64's finaliser: spreads a counter or a seed over 64 bits.
pub(super) fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A hash of a lattice point.
#[inline]
pub(super) fn hash2(x: i32, y: i32, seed: u32) -> u32 {
    mix32((x as u32).wrapping_mul(0x8da6_b343) ^ (y as u32).wrapping_mul(0xd816_3841) ^ seed)
}

/// The top 24 bits of a hash as a number in [0, 1).
#[inline]
pub(super) fn unit(h: u32) -> f32 {
    (h >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// `x.floor() as i32` without a libm call (baseline x86-64 has no `roundss`).
#[inline]
pub(super) fn floor_i32(x: f32) -> i32 {
    let i = x as i32;
    if x < i as f32 { i - 1 } else { i }
}

#[inline]
pub(super) fn smoothstep(lo: f32, hi: f32, x: f32) -> f32 {
    let t = ((x - lo) / (hi - lo)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

#[inline]
pub(super) fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

/// Smooth value noise in [0, 1) on a unit lattice: scale coordinates before calling.
#[derive(Clone, Copy, Debug)]
pub(super) struct Noise {
    seed: u32,
}

impl Noise {
    pub(super) fn new(seed: u32) -> Self {
        Noise { seed: mix32(seed) }
    }

    #[inline]
    pub(super) fn at(self, x: f32, y: f32) -> f32 {
        let (ix, iy) = (floor_i32(x), floor_i32(y));
        let tx = x - ix as f32;
        let ty = y - iy as f32;
        let sx = tx * tx * (3.0 - 2.0 * tx);
        let sy = ty * ty * (3.0 - 2.0 * ty);
        let a = unit(hash2(ix, iy, self.seed));
        let b = unit(hash2(ix.wrapping_add(1), iy, self.seed));
        let c = unit(hash2(ix, iy.wrapping_add(1), self.seed));
        let d = unit(hash2(ix.wrapping_add(1), iy.wrapping_add(1), self.seed));
        let top = lerp(a, b, sx);
        let bottom = lerp(c, d, sx);
        lerp(top, bottom, sy)
    }
}

/// A smooth field evaluated every `step` pixels and bilinearly interpolated to
/// `w`×`h` (row-major): low-frequency noise at a fraction of the cost.
pub(super) fn coarse<const N: usize>(
    w: usize,
    h: usize,
    step: usize,
    f: impl Fn(f32, f32) -> [f32; N],
) -> Vec<[f32; N]> {
    let gw = w.div_ceil(step) + 1;
    let gh = h.div_ceil(step) + 1;
    let grid: Vec<[f32; N]> = (0..gw * gh)
        .map(|k| f(((k % gw) * step) as f32, ((k / gw) * step) as f32))
        .collect();
    let inv = 1.0 / step as f32;
    let mut out = Vec::with_capacity(w * h);
    for y in 0..h {
        let (gy, ty) = (y / step, (y % step) as f32 * inv);
        let (r0, r1) = (
            &grid[gy * gw..(gy + 1) * gw],
            &grid[(gy + 1) * gw..(gy + 2) * gw],
        );
        for x in 0..w {
            let (gx, tx) = (x / step, (x % step) as f32 * inv);
            let (a, b, c, d) = (&r0[gx], &r0[gx + 1], &r1[gx], &r1[gx + 1]);
            out.push(std::array::from_fn(|k| {
                lerp(lerp(a[k], b[k], tx), lerp(c[k], d[k], tx), ty)
            }));
        }
    }
    out
}

/// `atan2` to about 1e-5 rad, without a libm call.
#[inline]
pub(super) fn fast_atan2(y: f32, x: f32) -> f32 {
    let ax = x.abs();
    let ay = y.abs();
    let hi = ax.max(ay);
    if hi == 0.0 {
        return 0.0;
    }
    let a = ax.min(ay) / hi;
    let s = a * a;
    let mut r = a
        * (0.999_977_26
            + s * (-0.332_623_47
                + s * (0.193_543_46
                    + s * (-0.116_432_87 + s * (0.052_653_32 + s * -0.011_721_2)))));
    if ay > ax {
        r = FRAC_PI_2 - r;
    }
    if x < 0.0 {
        r = PI - r;
    }
    if y < 0.0 { -r } else { r }
}

/// "Infinitely far" for the distance transform; large but finite so sums stay finite.
const FAR: f32 = 1.0e10;

/// Felzenszwalb–Huttenlocher lower envelope of parabolas: `out[q] = min_p (q-p)² + f[p]`.
fn edt_1d(f: &[f32], out: &mut [f32], v: &mut [usize], z: &mut [f32]) {
    let n = f.len();
    if n == 0 {
        return;
    }
    let mut k = 0usize;
    v[0] = 0;
    z[0] = f32::NEG_INFINITY;
    z[1] = f32::INFINITY;
    for q in 1..n {
        let fq = f[q] + (q * q) as f32;
        let mut s;
        loop {
            let p = v[k];
            s = (fq - (f[p] + (p * p) as f32)) / (2.0 * (q - p) as f32);
            if s <= z[k] && k > 0 {
                k -= 1;
            } else {
                break;
            }
        }
        k += 1;
        v[k] = q;
        z[k] = s;
        z[k + 1] = f32::INFINITY;
    }
    k = 0;
    for (q, o) in out.iter_mut().enumerate() {
        while z[k + 1] < q as f32 {
            k += 1;
        }
        let p = v[k];
        let d = q as f32 - p as f32;
        *o = d * d + f[p];
    }
}

/// Euclidean distance from every pixel to the nearest `feature` pixel (row-major
/// `w`×`h`); pixels with no feature anywhere get a huge distance.
pub(super) fn distance_transform(feature: &[bool], w: usize, h: usize) -> Vec<f32> {
    let n = w * h;
    let mut grid: Vec<f32> = feature.iter().map(|&f| if f { 0.0 } else { FAR }).collect();
    let m = w.max(h);
    let mut f = vec![0.0f32; m];
    let mut out = vec![0.0f32; m];
    let mut v = vec![0usize; m];
    let mut z = vec![0.0f32; m + 1];
    for x in 0..w {
        for y in 0..h {
            f[y] = grid[y * w + x];
        }
        edt_1d(&f[..h], &mut out[..h], &mut v, &mut z);
        for y in 0..h {
            grid[y * w + x] = out[y];
        }
    }
    for y in 0..h {
        let row = &mut grid[y * w..(y + 1) * w];
        f[..w].copy_from_slice(row);
        edt_1d(&f[..w], &mut out[..w], &mut v, &mut z);
        row.copy_from_slice(&out[..w]);
    }
    debug_assert_eq!(grid.len(), n);
    for d in &mut grid {
        *d = d.sqrt();
    }
    grid
}

/// In-place separable [1 2 1]/4 blur with clamped edges; `tmp` is scratch of the same size.
pub(super) fn blur121(data: &mut [f32], tmp: &mut [f32], w: usize, h: usize) {
    if w < 2 || h < 2 {
        return;
    }
    for y in 0..h {
        let src = &data[y * w..(y + 1) * w];
        let dst = &mut tmp[y * w..(y + 1) * w];
        dst[0] = (3.0 * src[0] + src[1]) * 0.25;
        for x in 1..w - 1 {
            dst[x] = (src[x - 1] + 2.0 * src[x] + src[x + 1]) * 0.25;
        }
        dst[w - 1] = (src[w - 2] + 3.0 * src[w - 1]) * 0.25;
    }
    for y in 0..h {
        let up = y.saturating_sub(1);
        let down = (y + 1).min(h - 1);
        for x in 0..w {
            data[y * w + x] = (tmp[up * w + x] + 2.0 * tmp[y * w + x] + tmp[down * w + x]) * 0.25;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atan2_matches_std() {
        for i in 0..2000 {
            let a = i as f32 * 0.0137 - 13.0;
            let (y, x) = (a.sin() * (1.0 + i as f32 * 0.01), a.cos() * 3.0);
            assert!((fast_atan2(y, x) - y.atan2(x)).abs() < 1e-4, "{y} {x}");
        }
    }

    #[test]
    fn distance_transform_is_euclidean() {
        let (w, h) = (9, 7);
        let mut feature = vec![false; w * h];
        feature[3 * w + 4] = true;
        let d = distance_transform(&feature, w, h);
        for y in 0..h {
            for x in 0..w {
                let e = ((x as f32 - 4.0).powi(2) + (y as f32 - 3.0).powi(2)).sqrt();
                assert!((d[y * w + x] - e).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn coarse_interpolates_linear_fields_exactly() {
        let (w, h) = (23, 17);
        let f = coarse(w, h, 4, |x, y| [2.0 * x - y, 1.0]);
        for y in 0..h {
            for x in 0..w {
                let v = f[y * w + x];
                assert!((v[0] - (2.0 * x as f32 - y as f32)).abs() < 1e-3);
                assert_eq!(v[1], 1.0);
            }
        }
    }

    #[test]
    fn noise_is_smooth_and_bounded() {
        let n = Noise::new(3);
        let mut prev = n.at(0.0, 0.5);
        for i in 1..1000 {
            let v = n.at(i as f32 * 0.01, 0.5);
            assert!((0.0..1.0).contains(&v));
            assert!((v - prev).abs() < 0.05, "{i} {v} {prev}");
            prev = v;
        }
    }
}
