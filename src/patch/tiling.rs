//! Where to cut patches: a grid of top-left corners, reflect-padded crops, and
//! resizing of images and their label masks to the working magnification.

use image::{GrayImage, RgbImage, imageops};
use serde::{Deserialize, Serialize};

/// What to do with the strip at the right/bottom edge that a whole stride does not cover.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgePolicy {
    #[default]
    Drop,
    Shift,
    Pad,
}

crate::choices!(EdgePolicy {
    Drop = "drop": "Leave it out: only patches wholly inside the image",
    Shift = "shift": "Add one more patch flush with the edge (it overlaps its neighbour)",
    Pad = "pad": "Add one more patch past the edge, filled by reflection",
});

/// Start positions along one axis of length `len`.
///
/// The regular positions are `0, stride, 2·stride, …` while the patch fits. If the
/// next regular position still starts inside the axis but its patch would not
/// fit (an uncovered strip remains), `Shift` adds `len - size` and `Pad` adds that
/// next regular position. An axis shorter than `size` has no positions, except
/// under `Pad`, where it has one at 0.
fn axis_positions(len: u32, size: u32, stride: u32, edge: EdgePolicy) -> Vec<u32> {
    if size == 0 || stride == 0 || len == 0 {
        return Vec::new();
    }
    let (len, size, stride) = (u64::from(len), u64::from(size), u64::from(stride));
    let mut out = Vec::new();
    let mut p = 0u64;
    while p + size <= len {
        out.push(p as u32);
        p += stride;
    }
    // `p` is now the first regular position whose patch does not fit.
    let uncovered = match out.last() {
        Some(&last) => u64::from(last) + size < len && p < len,
        None => true, // len < size
    };
    if uncovered {
        match edge {
            EdgePolicy::Drop => {}
            EdgePolicy::Shift => {
                if len >= size {
                    out.push((len - size) as u32);
                }
            }
            EdgePolicy::Pad => out.push(p as u32),
        }
    }
    out
}

/// Top-left corners of the patches of a `width`×`height` image, row by row.
///
/// `Drop` keeps only patches wholly inside; `Shift` adds a last column/row flush
/// with the right/bottom edge when the stride leaves an uncovered strip; `Pad`
/// adds a last column/row at the next stride position, extending past the edge
/// (see [`crop_reflect`]). A side shorter than `size` gives no patches under
/// `Drop`/`Shift` and a single position 0 under `Pad`. `size` or `stride` 0 give
/// no patches (callers validate options).
pub fn grid(width: u32, height: u32, size: u32, stride: u32, edge: EdgePolicy) -> Vec<(u32, u32)> {
    let xs = axis_positions(width, size, stride, edge);
    let ys = axis_positions(height, size, stride, edge);
    let mut out = Vec::with_capacity(xs.len() * ys.len());
    for &y in &ys {
        for &x in &xs {
            out.push((x, y));
        }
    }
    out
}

/// Index `i` reflected into `0..n` without repeating the edge pixel
/// (numpy 'reflect', OpenCV `BORDER_REFLECT_101`): `-1 → 1`, `n → n-2`.
/// Works for any distance from the image (periodic in `2(n-1)`).
#[inline]
pub(crate) fn reflect101(i: i64, n: i64) -> i64 {
    if (0..n).contains(&i) {
        return i;
    }
    if n <= 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let m = i.rem_euclid(period);
    if m >= n { period - m } else { m }
}

/// The `size`×`size` patch at (`x`, `y`); pixels past the edge are reflected.
///
/// Reflection is symmetric about the edge pixel (numpy 'reflect', OpenCV
/// `BORDER_REFLECT_101`) and repeats as often as needed, so an image smaller
/// than the patch is tiled by mirrored copies. A patch wholly inside is copied
/// row by row. An empty image gives a black patch.
pub fn crop_reflect(img: &RgbImage, x: u32, y: u32, size: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = RgbImage::new(size, size);
    if w == 0 || h == 0 || size == 0 {
        return out;
    }
    let src = img.as_raw();
    let src_stride = w as usize * 3;
    let row_len = size as usize * 3;
    let inside_x = u64::from(x) + u64::from(size) <= u64::from(w);
    let inside_y = u64::from(y) + u64::from(size) <= u64::from(h);
    let dst = &mut *out;

    if inside_x && inside_y {
        for (j, dst_row) in dst.chunks_exact_mut(row_len).enumerate() {
            let start = (y as usize + j) * src_stride + x as usize * 3;
            dst_row.copy_from_slice(&src[start..start + row_len]);
        }
        return out;
    }

    let xmap: Vec<usize> = if inside_x {
        Vec::new()
    } else {
        (0..i64::from(size))
            .map(|i| reflect101(i64::from(x) + i, i64::from(w)) as usize * 3)
            .collect()
    };
    for (j, dst_row) in dst.chunks_exact_mut(row_len).enumerate() {
        let sy = reflect101(i64::from(y) + j as i64, i64::from(h)) as usize;
        let src_row = &src[sy * src_stride..(sy + 1) * src_stride];
        if inside_x {
            let start = x as usize * 3;
            dst_row.copy_from_slice(&src_row[start..start + row_len]);
        } else {
            for (d, &sx) in dst_row.chunks_exact_mut(3).zip(&xmap) {
                d.copy_from_slice(&src_row[sx..sx + 3]);
            }
        }
    }
    out
}

/// Size of a `width`×`height` image scaled by `scale`: each side rounded, at
/// least 1 (0 stays 0). [`resize`] and [`resize_mask`] agree on it, so an image
/// and its mask stay aligned. A scale that is not finite and positive keeps the size.
pub fn scaled_size(width: u32, height: u32, scale: f32) -> (u32, u32) {
    if !(scale.is_finite() && scale > 0.0) {
        return (width, height);
    }
    let side = |n: u32| -> u32 {
        if n == 0 {
            return 0;
        }
        let s = (f64::from(n) * f64::from(scale)).round();
        s.clamp(1.0, f64::from(u32::MAX)) as u32
    };
    (side(width), side(height))
}

/// Resizes by `scale` (1.0 returns a copy) with a filter suited to downscaling.
///
/// Downscaling uses a triangle (bilinear, widened with the ratio so it averages
/// like an area filter); upscaling uses Catmull-Rom. No side becomes 0. A scale
/// that is not finite and positive returns a copy.
pub fn resize(img: &RgbImage, scale: f32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (nw, nh) = scaled_size(w, h, scale);
    if (nw, nh) == (w, h) || w == 0 || h == 0 {
        return img.clone();
    }
    let filter = if scale < 1.0 {
        imageops::FilterType::Triangle
    } else {
        imageops::FilterType::CatmullRom
    };
    imageops::resize(img, nw, nh, filter)
}

/// Resizes a mask by `scale` with nearest-neighbour, so labels stay labels.
///
/// Output pixel (x, y) takes the source pixel under its centre,
/// `floor((x + 0.5)·w/nw)`. The size is [`scaled_size`], the same as [`resize`].
pub fn resize_mask(mask: &GrayImage, scale: f32) -> GrayImage {
    let (w, h) = mask.dimensions();
    let (nw, nh) = scaled_size(w, h, scale);
    if (nw, nh) == (w, h) || w == 0 || h == 0 {
        return mask.clone();
    }
    let map = |n: u32, src: u32| -> Vec<usize> {
        let ratio = f64::from(src) / f64::from(n);
        (0..n)
            .map(|i| (((f64::from(i) + 0.5) * ratio) as usize).min(src as usize - 1))
            .collect()
    };
    let xmap = map(nw, w);
    let ymap = map(nh, h);
    let src = mask.as_raw();
    let mut out = GrayImage::new(nw, nh);
    for (dst_row, &sy) in out.chunks_exact_mut(nw as usize).zip(&ymap) {
        let src_row = &src[sy * w as usize..(sy + 1) * w as usize];
        for (d, &sx) in dst_row.iter_mut().zip(&xmap) {
            *d = src_row[sx];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Luma, Rgb};

    fn xs(v: &[(u32, u32)]) -> Vec<u32> {
        let mut x: Vec<u32> = v.iter().map(|p| p.0).collect();
        x.sort_unstable();
        x.dedup();
        x
    }
    fn ys(v: &[(u32, u32)]) -> Vec<u32> {
        let mut y: Vec<u32> = v.iter().map(|p| p.1).collect();
        y.sort_unstable();
        y.dedup();
        y
    }

    #[test]
    fn grid_glas_size_each_policy() {
        let d = grid(775, 522, 224, 224, EdgePolicy::Drop);
        assert_eq!(d.len(), 6);
        assert_eq!(xs(&d), vec![0, 224, 448]);
        assert_eq!(ys(&d), vec![0, 224]);
        // Row by row: y outer, x inner.
        assert_eq!(&d[..4], &[(0, 0), (224, 0), (448, 0), (0, 224)]);

        let s = grid(775, 522, 224, 224, EdgePolicy::Shift);
        assert_eq!(s.len(), 12);
        assert_eq!(xs(&s), vec![0, 224, 448, 551]);
        assert_eq!(ys(&s), vec![0, 224, 298]);
        assert!(s.iter().all(|&(x, y)| x + 224 <= 775 && y + 224 <= 522));

        let p = grid(775, 522, 224, 224, EdgePolicy::Pad);
        assert_eq!(p.len(), 12);
        assert_eq!(xs(&p), vec![0, 224, 448, 672]);
        assert_eq!(ys(&p), vec![0, 224, 448]);
        assert_eq!(p.last(), Some(&(672, 448)));
    }

    #[test]
    fn grid_exact_fit_adds_nothing() {
        for edge in [EdgePolicy::Drop, EdgePolicy::Shift, EdgePolicy::Pad] {
            let g = grid(448, 224, 224, 224, edge);
            assert_eq!(g, vec![(0, 0), (224, 0)], "{edge:?}");
        }
    }

    #[test]
    fn grid_overlapping_stride() {
        // 500 wide, 224 patches every 112: 0,112,224 fit (224+224=448), 336 does not.
        let d = grid(500, 224, 224, 112, EdgePolicy::Drop);
        assert_eq!(xs(&d), vec![0, 112, 224]);
        let s = grid(500, 224, 224, 112, EdgePolicy::Shift);
        assert_eq!(xs(&s), vec![0, 112, 224, 276]);
        let p = grid(500, 224, 224, 112, EdgePolicy::Pad);
        assert_eq!(xs(&p), vec![0, 112, 224, 336]);
        // Covered exactly by overlapping patches: nothing extra.
        for edge in [EdgePolicy::Shift, EdgePolicy::Pad] {
            assert_eq!(xs(&grid(448, 224, 224, 112, edge)), vec![0, 112, 224]);
        }
    }

    #[test]
    fn grid_no_duplicates() {
        for edge in [EdgePolicy::Drop, EdgePolicy::Shift, EdgePolicy::Pad] {
            for (w, h, size, stride) in [(775, 522, 224, 100), (300, 300, 64, 7), (65, 64, 64, 1)] {
                let mut g = grid(w, h, size, stride, edge);
                let n = g.len();
                g.sort_unstable();
                g.dedup();
                assert_eq!(g.len(), n);
            }
        }
    }

    #[test]
    fn grid_image_smaller_than_patch() {
        assert!(grid(100, 500, 224, 224, EdgePolicy::Drop).is_empty());
        assert!(grid(100, 500, 224, 224, EdgePolicy::Shift).is_empty());
        assert_eq!(grid(100, 50, 224, 224, EdgePolicy::Pad), vec![(0, 0)]);
        assert_eq!(
            grid(100, 500, 224, 224, EdgePolicy::Pad),
            vec![(0, 0), (0, 224), (0, 448)]
        );
    }

    #[test]
    fn grid_degenerate_arguments() {
        for edge in [EdgePolicy::Drop, EdgePolicy::Shift, EdgePolicy::Pad] {
            assert!(grid(775, 522, 224, 0, edge).is_empty());
            assert!(grid(775, 522, 0, 224, edge).is_empty());
            assert!(grid(0, 522, 224, 224, edge).is_empty());
        }
    }

    #[test]
    fn grid_stride_larger_than_size() {
        // Gaps by design; an extra only where a regular position starts inside.
        assert_eq!(xs(&grid(10, 2, 2, 5, EdgePolicy::Shift)), vec![0, 5]);
        assert_eq!(xs(&grid(11, 2, 2, 5, EdgePolicy::Shift)), vec![0, 5, 9]);
        assert_eq!(xs(&grid(11, 2, 2, 5, EdgePolicy::Pad)), vec![0, 5, 10]);
    }

    fn test_image(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([x as u8, y as u8, (x * 7 + y * 13) as u8]))
    }

    fn naive_crop(img: &RgbImage, x: u32, y: u32, size: u32) -> RgbImage {
        let (w, h) = (i64::from(img.width()), i64::from(img.height()));
        let refl = |mut i: i64, n: i64| {
            // Bounce back and forth until inside.
            if n == 1 {
                return 0;
            }
            loop {
                if i < 0 {
                    i = -i;
                } else if i >= n {
                    i = 2 * (n - 1) - i;
                } else {
                    return i;
                }
            }
        };
        RgbImage::from_fn(size, size, |i, j| {
            let sx = refl(i64::from(x + i), w) as u32;
            let sy = refl(i64::from(y + j), h) as u32;
            *img.get_pixel(sx, sy)
        })
    }

    #[test]
    fn crop_reflect_matches_naive() {
        let img = test_image(37, 23);
        for &(x, y, size) in &[
            (0, 0, 16),
            (21, 7, 16),
            (30, 0, 16),
            (0, 15, 16),
            (30, 20, 16),
            (36, 22, 8),
            (0, 0, 60), // larger than the image: several reflections
            (20, 10, 100),
        ] {
            assert_eq!(
                crop_reflect(&img, x, y, size),
                naive_crop(&img, x, y, size),
                "{x},{y},{size}"
            );
        }
        // Explicit values at the right edge: column 37 reflects to 35.
        let c = crop_reflect(&img, 30, 0, 16);
        assert_eq!(c.get_pixel(7, 0), img.get_pixel(35, 0));
        assert_eq!(c.get_pixel(6, 0), img.get_pixel(36, 0));
    }

    #[test]
    fn crop_reflect_tiny_images() {
        let one = test_image(1, 1);
        let c = crop_reflect(&one, 0, 0, 5);
        assert!(c.pixels().all(|p| p == one.get_pixel(0, 0)));
        let empty = RgbImage::new(0, 0);
        assert_eq!(crop_reflect(&empty, 0, 0, 4).dimensions(), (4, 4));
    }

    #[test]
    fn resize_keeps_at_least_one_pixel() {
        let img = test_image(40, 3);
        let r = resize(&img, 0.01);
        assert_eq!(r.dimensions(), (1, 1));
        assert_eq!(resize(&img, 0.5).dimensions(), (20, 2));
        assert_eq!(resize(&img, 2.0).dimensions(), (80, 6));
        assert_eq!(resize(&img, 1.0), img);
        assert_eq!(resize(&img, f32::NAN), img);
        let mask = GrayImage::from_fn(40, 3, |x, _| Luma([(x % 3) as u8]));
        assert_eq!(resize_mask(&mask, 0.01).dimensions(), (1, 1));
        assert_eq!(resize_mask(&mask, 1.0), mask);
    }

    #[test]
    fn resize_mask_is_nearest_and_aligned() {
        let mask = GrayImage::from_fn(8, 8, |x, y| {
            Luma([if x < 4 { 1 } else { 2 } + (y / 4) as u8 * 10])
        });
        let r = resize_mask(&mask, 0.5);
        assert_eq!(r.dimensions(), (4, 4));
        for (x, y, p) in r.enumerate_pixels() {
            let want = if x < 2 { 1 } else { 2 } + (y / 2) as u8 * 10;
            assert_eq!(p.0[0], want);
        }
        let up = resize_mask(&mask, 3.0);
        assert_eq!(up.dimensions(), (24, 24));
        let labels: std::collections::BTreeSet<u8> = up.pixels().map(|p| p.0[0]).collect();
        assert_eq!(labels, [1, 2, 11, 12].into_iter().collect());
        // Image and mask agree on the size for awkward scales.
        let img = test_image(775, 522);
        for s in [0.3f32, 0.5, 0.77, 1.3] {
            assert_eq!(
                resize(&img, s).dimensions(),
                resize_mask(&GrayImage::new(775, 522), s).dimensions()
            );
        }
    }

    #[test]
    fn resize_downscale_averages() {
        // A fine checkerboard averages to grey when halved.
        let img = RgbImage::from_fn(64, 64, |x, y| {
            if (x + y) % 2 == 0 {
                Rgb([0, 0, 0])
            } else {
                Rgb([255; 3])
            }
        });
        let r = resize(&img, 0.5);
        for p in r.pixels() {
            assert!((100..=155).contains(&p.0[0]), "{p:?}");
        }
    }
}
