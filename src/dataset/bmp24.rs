//! The one BMP layout the GlaS download uses (uncompressed 24-bit,
//! `BITMAPINFOHEADER` or later), decoded row by row.
//!
//! The `image` crate decodes these correctly but reads each pixel's three
//! bytes through its reader: even from memory, reading and decoding the
//! benchmark's 165 GlaS images took 0.16 s on one thread, against 0.08 s
//! here (docs/BENCHMARKS.md). Here a row is a slice. Anything else — palettes,
//! bit fields, RLE, OS/2 headers, a file shorter than its pixel array —
//! returns `None`, and the `image` crate decodes it (or names what is wrong).
//! `same_pixels_as_the_image_crate` holds the two to the same output.

use image::RgbImage;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Decodes `bytes` if they are an uncompressed 24-bit BMP whose pixel array
/// is complete; `None` for any other file.
pub(crate) fn decode(bytes: &[u8]) -> Option<RgbImage> {
    if bytes.get(..2)? != b"BM" {
        return None;
    }
    let data = u32_at(bytes, 10)? as usize;
    let header = u32_at(bytes, 14)?;
    let width = u32_at(bytes, 18)? as i32;
    let height = u32_at(bytes, 22)? as i32;
    let simple = header >= 40
        && u16_at(bytes, 26)? == 1 // planes
        && u16_at(bytes, 28)? == 24 // bits per pixel
        && u32_at(bytes, 30)? == 0; // BI_RGB: no compression
    if !simple || width <= 0 || height == 0 || height == i32::MIN {
        return None;
    }
    // A negative height stores the rows top-down; a positive one bottom-up.
    let (w, h, top_down) = (width as usize, height.unsigned_abs() as usize, height < 0);
    let row_bytes = w.checked_mul(3)?;
    let stride = row_bytes.checked_add(3)? & !3;
    let pixels = bytes.get(data..data.checked_add(stride.checked_mul(h)?)?)?;
    let mut out = RgbImage::new(width as u32, h as u32);
    for (y, dst) in out.chunks_exact_mut(row_bytes).enumerate() {
        let src_row = if top_down { y } else { h - 1 - y };
        let src = &pixels[src_row * stride..src_row * stride + row_bytes];
        for (d, s) in dst.chunks_exact_mut(3).zip(src.chunks_exact(3)) {
            d.copy_from_slice(&[s[2], s[1], s[0]]);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageFormat, Rgb};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn bmp_of(img: &RgbImage) -> Vec<u8> {
        let mut buf = std::io::Cursor::new(Vec::new());
        img.write_to(&mut buf, ImageFormat::Bmp).unwrap();
        buf.into_inner()
    }

    fn by_image_crate(bytes: &[u8]) -> RgbImage {
        image::load_from_memory_with_format(bytes, ImageFormat::Bmp)
            .unwrap()
            .to_rgb8()
    }

    /// The same file stored top-down: negative height, rows in reverse order.
    fn top_down(bytes: &[u8], w: usize, h: usize) -> Vec<u8> {
        let mut out = bytes.to_vec();
        let data = u32_at(bytes, 10).unwrap() as usize;
        out[22..26].copy_from_slice(&(-(h as i32)).to_le_bytes());
        let stride = (w * 3 + 3) & !3;
        for y in 0..h {
            let from = data + (h - 1 - y) * stride;
            out[data + y * stride..data + (y + 1) * stride]
                .copy_from_slice(&bytes[from..from + stride]);
        }
        out
    }

    #[test]
    fn same_pixels_as_the_image_crate() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        // Widths 1..=5 cover every row padding (0–3 bytes).
        for &(w, h) in &[(1u32, 1u32), (2, 3), (3, 2), (4, 5), (5, 4), (775, 7)] {
            let img = RgbImage::from_fn(w, h, |_, _| Rgb(rng.random()));
            let bytes = bmp_of(&img);
            assert_eq!(u16_at(&bytes, 28), Some(24), "the encoder writes 24-bit");
            let fast = decode(&bytes).expect("a plain 24-bit BMP");
            assert_eq!(fast, by_image_crate(&bytes), "{w}×{h}");
            assert_eq!(fast, img);
            let flipped = top_down(&bytes, w as usize, h as usize);
            assert_eq!(decode(&flipped).unwrap(), by_image_crate(&flipped));
            assert_eq!(decode(&flipped).unwrap(), img, "{w}×{h} top-down");
        }
    }

    #[test]
    fn the_real_glas_images_if_present() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/glas-sample");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            eprintln!("skipped: {} not present", dir.display());
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".bmp") || name.ends_with("_anno.bmp") {
                continue;
            }
            let bytes = std::fs::read(e.path()).unwrap();
            let fast = decode(&bytes).expect("GlaS images are plain 24-bit BMPs");
            assert_eq!(fast, by_image_crate(&bytes), "{name}");
        }
    }

    #[test]
    fn other_files_are_left_to_the_image_crate() {
        let img = RgbImage::from_fn(6, 4, |x, y| Rgb([x as u8, y as u8, 7]));
        let bytes = bmp_of(&img);
        // Truncated pixel array, RLE, 32 bits, a core header, not a BMP.
        assert!(decode(&bytes[..bytes.len() - 1]).is_none());
        let mut rle = bytes.clone();
        rle[30] = 1;
        assert!(decode(&rle).is_none());
        let mut bits32 = bytes.clone();
        bits32[28] = 32;
        assert!(decode(&bits32).is_none());
        let mut core = bytes.clone();
        core[14..18].copy_from_slice(&12u32.to_le_bytes());
        assert!(decode(&core).is_none());
        assert!(decode(b"PK\x03\x04").is_none());
        assert!(decode(b"BM").is_none());
        let mut zero = bytes;
        zero[18..22].copy_from_slice(&0u32.to_le_bytes());
        assert!(decode(&zero).is_none());
    }
}
