//! Decoding untrusted image files safely: dimensions are checked against a
//! pixel limit before any pixel buffer is allocated.
//!
//! The format is recognised from the file's content (its magic bytes), never
//! from its extension: a text file named `x.bmp` is "not a supported image".
//! Accepted: PNG, JPEG, BMP and TIFF. Every error is one line naming the file.

use std::fs::File;
use std::io::{BufRead, BufReader, Cursor, ErrorKind, Read, Seek};
use std::path::Path;

use image::{
    DynamicImage, GrayImage, ImageDecoder, ImageError, ImageFormat, ImageReader, RgbImage,
};

use crate::error::{Error, Result};
use crate::fsutil;

/// Default refusal threshold: 100 megapixels (GlaS images are 0.4 MP).
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// Limits applied before decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

/// The formats histoshard reads (the `image` features it is built with).
const SUPPORTED: [ImageFormat; 4] = [
    ImageFormat::Png,
    ImageFormat::Jpeg,
    ImageFormat::Bmp,
    ImageFormat::Tiff,
];

/// Decoder allocations allowed while reading a header only.
const HEADER_ALLOC: u64 = 64 * 1024 * 1024;

/// Opens `path` if it is a regular file (never blocking on a FIFO, never
/// opening a device: [`fsutil::open_regular`]) that is not empty; with its size.
fn open_file(path: &Path) -> Result<(File, u64)> {
    let file = fsutil::open_regular(path)?;
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if size == 0 {
        return Err(Error::image(path, "empty file (0 bytes)"));
    }
    Ok((file, size))
}

/// Opens `path` as an image reader whose format comes from the content,
/// reading only as much of the file as the caller asks for (headers).
fn open(path: &Path, limits: image::Limits) -> Result<ImageReader<BufReader<File>>> {
    let (file, _) = open_file(path)?;
    reader_of(path, BufReader::new(file), limits)
}

/// Reads all of `path` into memory, in one read: its header, checked next,
/// and its pixels come from the same bytes. Decoders that read a few bytes at
/// a time (the BMP decoder reads each pixel's three) are several times faster
/// from a slice than through a `BufReader`, and the JPEG completeness check
/// needs the bytes anyway. A file larger than `max_bytes` is refused unread,
/// and the read stops there too whatever size the file reported.
fn read_whole(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    let (file, size) = open_file(path)?;
    let too_large = || {
        Error::image(
            path,
            format!(
                "file is more than {}, more than any image within the pixel limit needs (raise it with --max-pixels)",
                fsutil::bytes_text(max_bytes)
            ),
        )
    };
    if size > max_bytes {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large());
    }
    if bytes.is_empty() {
        return Err(Error::image(path, "empty file (0 bytes)"));
    }
    Ok(bytes)
}

/// Which part of a file a decoder is reading, for what a limit error means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// The header and the metadata before the pixels, under a fixed
    /// [`HEADER_ALLOC`] budget that `--max-pixels` does not change.
    Header,
    /// The pixels, under a budget derived from `--max-pixels`.
    Pixels,
}

/// An image reader over `source` (the bytes of `path`) whose format comes
/// from the content; unsupported formats are refused here.
fn reader_of<R: BufRead + Seek>(
    path: &Path,
    source: R,
    limits: image::Limits,
) -> Result<ImageReader<R>> {
    let mut reader = ImageReader::new(source)
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    match reader.format() {
        Some(f) if SUPPORTED.contains(&f) => {}
        Some(f) => {
            return Err(Error::image(
                path,
                format!(
                    "not a supported image ({} content; expected PNG, JPEG, BMP or TIFF)",
                    f.extensions_str()
                        .first()
                        .unwrap_or(&"unknown")
                        .to_uppercase()
                ),
            ));
        }
        None => {
            return Err(Error::image(
                path,
                "not a supported image (content is not PNG, JPEG, BMP or TIFF)",
            ));
        }
    }
    reader.limits(limits);
    Ok(reader)
}

/// Turns a decoder error, met while reading `stage`, into one line a user can act on.
fn describe(e: &ImageError, stage: Stage) -> String {
    let one_line = |s: String| s.replace(['\n', '\r'], " ");
    match e {
        ImageError::IoError(io) if io.kind() == ErrorKind::UnexpectedEof => {
            "truncated (the file ends before the image data does)".to_string()
        }
        ImageError::IoError(io) => one_line(format!("read error: {io}")),
        ImageError::Decoding(d) => {
            let text = d.to_string();
            let lower = text.to_ascii_lowercase();
            if lower.contains("eof")
                || lower.contains("end of")
                || lower.contains("truncat")
                || lower.contains("unexpected end")
                || lower.contains("not enough")
                || lower.contains("no more data")
            {
                one_line(format!("truncated or corrupt image ({text})"))
            } else {
                one_line(format!("corrupt image ({text})"))
            }
        }
        // Before the pixels, the budget is fixed: what overflows it is
        // metadata (a huge text, ICC or EXIF chunk), which --max-pixels
        // does not change.
        ImageError::Limits(l) if stage == Stage::Header => one_line(format!(
            "its header or metadata needs more than the {} a header may use ({l}): oversized metadata such as a huge text, ICC or EXIF chunk, not too many pixels (--max-pixels does not change this); re-save the image without its metadata",
            fsutil::bytes_text(HEADER_ALLOC)
        )),
        ImageError::Limits(l) => one_line(format!(
            "over the decoder's memory limit for its pixels ({l}); raise --max-pixels if the image is genuine"
        )),
        ImageError::Unsupported(u) => one_line(format!("not a supported image ({u})")),
        other => one_line(other.to_string()),
    }
}

/// Decoder limits while only a header is read.
fn header_limits() -> image::Limits {
    let mut l = image::Limits::default();
    l.max_alloc = Some(HEADER_ALLOC);
    l
}

/// Width and height from the header alone.
pub fn dimensions(path: &Path) -> Result<(u32, u32)> {
    let decoder = open(path, header_limits())?
        .into_decoder()
        .map_err(|e| Error::image(path, describe(&e, Stage::Header)))?;
    non_empty(path, decoder.dimensions())
}

fn non_empty(path: &Path, (w, h): (u32, u32)) -> Result<(u32, u32)> {
    if w == 0 || h == 0 {
        return Err(Error::image(path, format!("image is {w}×{h}: empty")));
    }
    Ok((w, h))
}

/// A check of an image's width and height, run on its header before any
/// pixel buffer is allocated (`prepare` refuses there an image that
/// `--scale` would blow up past the pixel limit: [`check_scaled`]).
pub type HeaderCheck<'a> = &'a dyn Fn(u32, u32) -> Result<()>;

/// A [`HeaderCheck`] that accepts every size.
pub fn any_size(_: u32, _: u32) -> Result<()> {
    Ok(())
}

/// Errors when an image of `w`×`h`, resized by `scale` to `scaled` (`sw`×`sh`),
/// holds more than `max_pixels` after resizing; the message names the file,
/// both sizes and the limit.
pub fn check_scaled(
    path: &Path,
    (w, h): (u32, u32),
    (sw, sh): (u32, u32),
    scale: f32,
    max_pixels: u64,
) -> Result<()> {
    let pixels = u64::from(sw) * u64::from(sh);
    if pixels <= max_pixels {
        return Ok(());
    }
    let (have, limit) = amounts(pixels, max_pixels);
    Err(Error::image(
        path,
        format!(
            "image is {w}×{h}, {sw}×{sh} = {have} at scale {scale}, over the {limit} limit (lower --scale, or raise --max-pixels)"
        ),
    ))
}

/// Refuses images over `limits.max_pixels`, or failing `check`, from the
/// header, then decodes with `image::Limits` set as a second guard.
fn decode_limited(path: &Path, limits: DecodeLimits, check: HeaderCheck) -> Result<DynamicImage> {
    let side = u32::try_from(limits.max_pixels).unwrap_or(u32::MAX);
    let mut il = image::Limits::default();
    il.max_image_width = Some(side);
    il.max_image_height = Some(side);
    // Room for the widest buffer (RGBA, 32-bit float per channel) plus slack.
    let max_alloc = limits
        .max_pixels
        .saturating_mul(16)
        .saturating_add(HEADER_ALLOC);
    il.max_alloc = Some(max_alloc);
    let bytes = read_whole(path, max_alloc)?;
    let reader = reader_of(path, Cursor::new(bytes.as_slice()), header_limits())?;
    let format = reader.format();
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| Error::image(path, describe(&e, Stage::Header)))?;
    let (w, h) = non_empty(path, decoder.dimensions())?;
    let pixels = u64::from(w) * u64::from(h);
    if pixels > limits.max_pixels {
        let (have, limit) = amounts(pixels, limits.max_pixels);
        return Err(Error::image(
            path,
            format!(
                "image is {w}×{h} = {have}, over the {limit} limit (raise it with --max-pixels)"
            ),
        ));
    }
    check(w, h)?;
    decoder
        .set_limits(il)
        .map_err(|e| Error::image(path, describe(&e, Stage::Pixels)))?;
    if format == Some(ImageFormat::Bmp)
        && let Some(img) = super::bmp24::decode(&bytes)
    {
        return Ok(DynamicImage::ImageRgb8(img));
    }
    let img = DynamicImage::from_decoder(decoder)
        .map_err(|e| Error::image(path, describe(&e, Stage::Pixels)))?;
    if format == Some(ImageFormat::Jpeg) && !jpeg_is_complete(&bytes) {
        // The JPEG decoder fills a cut-off scan with grey instead of failing.
        return Err(Error::image(
            path,
            "truncated (the JPEG has no end-of-image marker after its last scan)",
        ));
    }
    Ok(img)
}

/// Whether a JPEG ends its last scan with an EOI marker (`FF D9`). Inside
/// entropy-coded data `FF` is always followed by `00` or a restart marker, so
/// the last `FF DA` (start of scan) must be followed by an `FF D9` somewhere.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last = |marker: u8| bytes.windows(2).rposition(|w| w == [0xFF, marker]);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        _ => false,
    }
}

/// A pixel count for messages: `10000 MP`, `2.5 MP`, or `1200 pixels` below 1 MP.
fn amount(pixels: u64) -> String {
    let mp = pixels as f64 / 1e6;
    if mp >= 10.0 {
        format!("{mp:.0} MP")
    } else if mp >= 1.0 {
        format!("{mp:.1} MP")
    } else {
        format!("{pixels} pixels")
    }
}

/// Two pixel counts for one message, exact where rounding would make them look equal.
fn amounts(pixels: u64, limit: u64) -> (String, String) {
    let (have, max) = (amount(pixels), amount(limit));
    if have == max {
        (format!("{pixels} pixels"), format!("{limit} pixels"))
    } else {
        (have, max)
    }
}

/// Decodes any supported image to 8-bit RGB (16-bit is scaled, gray expanded,
/// alpha dropped, palettes resolved).
pub fn decode_rgb(path: &Path, limits: DecodeLimits) -> Result<RgbImage> {
    decode_rgb_checked(path, limits, &any_size)
}

/// As [`decode_rgb`], with `check` run on the header's size before any pixel
/// is decoded.
pub fn decode_rgb_checked(
    path: &Path,
    limits: DecodeLimits,
    check: HeaderCheck,
) -> Result<RgbImage> {
    Ok(decode_limited(path, limits, check)?.into_rgb8())
}

/// Decodes a mask to 8-bit gray (0 = background, anything else = gland).
///
/// - 8-bit gray (and palette BMPs with a gray palette, like GlaS `_anno.bmp`):
///   values kept, so instance labels 0..N survive.
/// - 16-bit gray: values kept when all are ≤ 255 (label masks); otherwise
///   scaled to 8 bits with any non-zero value kept ≥ 1.
/// - Colour: the maximum channel, so any non-black pixel is foreground; with
///   alpha, fully transparent pixels are background.
pub fn decode_mask(path: &Path, limits: DecodeLimits) -> Result<GrayImage> {
    decode_mask_checked(path, limits, &any_size)
}

/// As [`decode_mask`], with `check` run on the header's size before any pixel
/// is decoded.
pub fn decode_mask_checked(
    path: &Path,
    limits: DecodeLimits,
    check: HeaderCheck,
) -> Result<GrayImage> {
    let img = decode_limited(path, limits, check)?;
    let (w, h) = (img.width(), img.height());
    let out = match img {
        DynamicImage::ImageLuma8(g) => g,
        DynamicImage::ImageLumaA8(g) => GrayImage::from_fn(w, h, |x, y| {
            let p = g.get_pixel(x, y).0;
            image::Luma([if p[1] == 0 { 0 } else { p[0] }])
        }),
        DynamicImage::ImageLuma16(g) => {
            let max = g.pixels().map(|p| p.0[0]).max().unwrap_or(0);
            GrayImage::from_fn(w, h, |x, y| {
                image::Luma([narrow16(g.get_pixel(x, y).0[0], max)])
            })
        }
        DynamicImage::ImageLumaA16(g) => {
            let max = g.pixels().map(|p| p.0[0]).max().unwrap_or(0);
            GrayImage::from_fn(w, h, |x, y| {
                let p = g.get_pixel(x, y).0;
                image::Luma([if p[1] == 0 { 0 } else { narrow16(p[0], max) }])
            })
        }
        // The common colour cases (GlaS `_anno.bmp` palettes decode to RGB) in
        // one pass over the buffer, without the RGBA copy of the general case.
        DynamicImage::ImageRgb8(c) => GrayImage::from_vec(
            w,
            h,
            c.as_raw()
                .chunks_exact(3)
                .map(|p| p[0].max(p[1]).max(p[2]))
                .collect(),
        )
        .expect("one byte per pixel"),
        DynamicImage::ImageRgba8(c) => GrayImage::from_vec(
            w,
            h,
            c.as_raw()
                .chunks_exact(4)
                .map(|p| {
                    if p[3] == 0 {
                        0
                    } else {
                        p[0].max(p[1]).max(p[2])
                    }
                })
                .collect(),
        )
        .expect("one byte per pixel"),
        other => {
            let has_alpha = other.color().has_alpha();
            let rgba = other.into_rgba8();
            GrayImage::from_fn(w, h, |x, y| {
                let [r, g, b, a] = rgba.get_pixel(x, y).0;
                image::Luma([if has_alpha && a == 0 {
                    0
                } else {
                    r.max(g).max(b)
                }])
            })
        }
    };
    Ok(out)
}

/// A 16-bit mask value to 8 bits: kept when the mask's maximum is ≤ 255,
/// otherwise scaled, never turning foreground into background.
fn narrow16(v: u16, max: u16) -> u8 {
    if max <= 255 {
        v as u8
    } else if v == 0 {
        0
    } else {
        ((u32::from(v) * 255 / 65535) as u8).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, LumaA, Rgb, Rgba};
    use std::time::{Duration, Instant};

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn msg(e: Error) -> String {
        e.to_string()
    }

    #[test]
    fn rgb_png_round_trips() {
        let d = tmp();
        let p = d.path().join("a.png");
        let img = RgbImage::from_fn(5, 3, |x, y| Rgb([x as u8 * 10, y as u8 * 20, 7]));
        img.save(&p).unwrap();
        assert_eq!(dimensions(&p).unwrap(), (5, 3));
        assert_eq!(decode_rgb(&p, DecodeLimits::default()).unwrap(), img);
    }

    #[test]
    fn sixteen_bit_png_scales_to_eight_bit() {
        let d = tmp();
        let p = d.path().join("deep.png");
        let img: ImageBuffer<Rgb<u16>, Vec<u16>> =
            ImageBuffer::from_fn(4, 2, |x, _| Rgb([65535, 257 * x as u16, 0]));
        img.save(&p).unwrap();
        let out = decode_rgb(&p, DecodeLimits::default()).unwrap();
        assert_eq!(out.get_pixel(0, 0).0, [255, 0, 0]);
        assert_eq!(out.get_pixel(3, 1).0, [255, 3, 0]);
    }

    #[test]
    fn gray_expands_and_alpha_is_dropped() {
        let d = tmp();
        let g = d.path().join("g.png");
        GrayImage::from_fn(3, 3, |x, _| Luma([x as u8 * 100]))
            .save(&g)
            .unwrap();
        let out = decode_rgb(&g, DecodeLimits::default()).unwrap();
        assert_eq!(out.get_pixel(2, 0).0, [200, 200, 200]);

        let a = d.path().join("a.png");
        image::RgbaImage::from_fn(2, 2, |_, _| Rgba([10, 20, 30, 0]))
            .save(&a)
            .unwrap();
        let out = decode_rgb(&a, DecodeLimits::default()).unwrap();
        assert_eq!(out.get_pixel(1, 1).0, [10, 20, 30]);

        let la = d.path().join("la.png");
        ImageBuffer::<LumaA<u8>, Vec<u8>>::from_fn(2, 2, |_, _| LumaA([77, 255]))
            .save(&la)
            .unwrap();
        let out = decode_rgb(&la, DecodeLimits::default()).unwrap();
        assert_eq!(out.get_pixel(0, 0).0, [77, 77, 77]);
    }

    /// Writes an 8-bit indexed PNG with the given palette and indices.
    fn write_palette_png(path: &Path, w: u32, h: u32, palette: &[u8], idx: &[u8]) {
        let f = File::create(path).unwrap();
        let mut enc = png::Encoder::new(std::io::BufWriter::new(f), w, h);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette(palette.to_vec());
        let mut wr = enc.write_header().unwrap();
        wr.write_image_data(idx).unwrap();
    }

    #[test]
    fn palette_png_resolves_to_rgb() {
        let d = tmp();
        let p = d.path().join("pal.png");
        write_palette_png(&p, 2, 1, &[255, 0, 0, 0, 0, 255], &[0, 1]);
        let out = decode_rgb(&p, DecodeLimits::default()).unwrap();
        assert_eq!(out.get_pixel(0, 0).0, [255, 0, 0]);
        assert_eq!(out.get_pixel(1, 0).0, [0, 0, 255]);
        let m = decode_mask(&p, DecodeLimits::default()).unwrap();
        assert_eq!(m.get_pixel(0, 0).0, [255]);
    }

    #[test]
    fn bmp_and_tiff_and_jpeg_decode() {
        let d = tmp();
        let img = RgbImage::from_fn(8, 8, |x, y| Rgb([x as u8 * 30, y as u8 * 30, 100]));
        for ext in ["bmp", "tif", "jpg"] {
            let p = d.path().join(format!("x.{ext}"));
            img.save(&p).unwrap();
            assert_eq!(dimensions(&p).unwrap(), (8, 8), "{ext}");
            let out = decode_rgb(&p, DecodeLimits::default()).unwrap();
            assert_eq!(out.dimensions(), (8, 8));
        }
    }

    #[test]
    fn masks_keep_labels_and_take_max_channel() {
        let d = tmp();
        let g = d.path().join("m.png");
        GrayImage::from_fn(3, 1, |x, _| Luma([x as u8]))
            .save(&g)
            .unwrap();
        let m = decode_mask(&g, DecodeLimits::default()).unwrap();
        assert_eq!(m.as_raw(), &vec![0, 1, 2]);

        let c = d.path().join("c.png");
        RgbImage::from_fn(3, 1, |x, _| match x {
            0 => Rgb([0, 0, 0]),
            1 => Rgb([0, 0, 9]),
            _ => Rgb([200, 40, 0]),
        })
        .save(&c)
        .unwrap();
        let m = decode_mask(&c, DecodeLimits::default()).unwrap();
        assert_eq!(m.as_raw(), &vec![0, 9, 200]);

        let ca = d.path().join("ca.png");
        image::RgbaImage::from_fn(3, 1, |x, _| match x {
            0 => Rgba([90, 90, 90, 0]),
            1 => Rgba([0, 0, 9, 255]),
            _ => Rgba([200, 40, 0, 1]),
        })
        .save(&ca)
        .unwrap();
        let m = decode_mask(&ca, DecodeLimits::default()).unwrap();
        assert_eq!(m.as_raw(), &vec![0, 9, 200]);

        let l16 = d.path().join("l16.png");
        ImageBuffer::<Luma<u16>, Vec<u16>>::from_fn(3, 1, |x, _| Luma([x as u16 * 3]))
            .save(&l16)
            .unwrap();
        let m = decode_mask(&l16, DecodeLimits::default()).unwrap();
        assert_eq!(m.as_raw(), &vec![0, 3, 6]);

        let big16 = d.path().join("big16.png");
        ImageBuffer::<Luma<u16>, Vec<u16>>::from_fn(3, 1, |x, _| Luma([[0, 1, 65535][x as usize]]))
            .save(&big16)
            .unwrap();
        let m = decode_mask(&big16, DecodeLimits::default()).unwrap();
        assert_eq!(m.as_raw(), &vec![0, 1, 255]);
    }

    #[test]
    fn real_glas_mask_keeps_label_values() {
        let p = Path::new("/work/shared/glas-sample/testA_25_anno.bmp");
        if !p.exists() {
            return;
        }
        let m = decode_mask(p, DecodeLimits::default()).unwrap();
        assert_eq!(m.dimensions(), (775, 522));
        let max = *m.as_raw().iter().max().unwrap();
        assert!(max >= 1, "labels present");
        assert!(m.as_raw().contains(&0), "background present");
        // Every label 1..=max is a small integer, not a palette colour like 255.
        assert!(max < 100, "max label {max}");
        let img = Path::new("/work/shared/glas-sample/testA_25.bmp");
        assert_eq!(
            decode_rgb(img, DecodeLimits::default())
                .unwrap()
                .dimensions(),
            (775, 522)
        );
    }

    #[test]
    fn empty_truncated_and_text_files_are_one_line_errors() {
        let d = tmp();
        let empty = d.path().join("empty.png");
        std::fs::write(&empty, b"").unwrap();
        let e = msg(decode_rgb(&empty, DecodeLimits::default()).unwrap_err());
        assert!(e.contains("empty.png") && e.contains("empty file"), "{e}");

        let text = d.path().join("notes.bmp");
        std::fs::write(&text, b"hello, this is not a bitmap\n").unwrap();
        let e = msg(dimensions(&text).unwrap_err());
        assert!(
            e.contains("notes.bmp") && e.contains("not a supported image"),
            "{e}"
        );

        let full = d.path().join("full.png");
        RgbImage::from_fn(64, 64, |x, y| Rgb([(x * y) as u8, x as u8, y as u8]))
            .save(&full)
            .unwrap();
        let bytes = std::fs::read(&full).unwrap();
        let cut = d.path().join("cut.png");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let e = msg(decode_rgb(&cut, DecodeLimits::default()).unwrap_err());
        assert!(e.contains("cut.png") && e.contains("truncated"), "{e}");
        assert!(!e.contains('\n'));

        let bmp = d.path().join("full.bmp");
        RgbImage::new(64, 64).save(&bmp).unwrap();
        let bytes = std::fs::read(&bmp).unwrap();
        let cut = d.path().join("cut.bmp");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let e = msg(decode_rgb(&cut, DecodeLimits::default()).unwrap_err());
        assert!(e.contains("cut.bmp") && e.contains("truncated"), "{e}");

        let jpg = d.path().join("full.jpg");
        RgbImage::from_fn(64, 64, |x, y| Rgb([(x * y) as u8, x as u8, y as u8]))
            .save(&jpg)
            .unwrap();
        assert!(decode_rgb(&jpg, DecodeLimits::default()).is_ok());
        let mut bytes = std::fs::read(&jpg).unwrap();
        bytes.extend_from_slice(b"\0\0trailing padding");
        std::fs::write(&jpg, &bytes).unwrap();
        assert!(
            decode_rgb(&jpg, DecodeLimits::default()).is_ok(),
            "junk after EOI is fine"
        );
        let cut = d.path().join("cut.jpg");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let e = msg(decode_rgb(&cut, DecodeLimits::default()).unwrap_err());
        assert!(e.contains("cut.jpg") && e.contains("truncated"), "{e}");

        let missing = d.path().join("missing.png");
        let e = msg(dimensions(&missing).unwrap_err());
        assert!(e.contains("missing.png") && e.contains("not found"), "{e}");

        let gif = d.path().join("x.png");
        std::fs::write(&gif, b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").unwrap();
        let e = msg(dimensions(&gif).unwrap_err());
        assert!(
            e.contains("GIF") && e.contains("not a supported image"),
            "{e}"
        );
    }

    fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc_input = kind.to_vec();
        crc_input.extend_from_slice(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc32(&crc_input).to_be_bytes());
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A PNG whose IHDR claims `w`×`h` RGB, with a tiny IDAT and IEND.
    fn huge_png(w: u32, h: u32) -> Vec<u8> {
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        png_chunk(&mut out, b"IHDR", &ihdr);
        png_chunk(
            &mut out,
            b"IDAT",
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        );
        png_chunk(&mut out, b"IEND", &[]);
        out
    }

    /// A BMP whose header claims `w`×`h` 24-bit, with no pixel data.
    fn huge_bmp(w: i32, h: i32) -> Vec<u8> {
        let mut out = b"BM".to_vec();
        out.extend_from_slice(&54u32.to_le_bytes()); // file size (a lie)
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&54u32.to_le_bytes()); // pixel data offset
        out.extend_from_slice(&40u32.to_le_bytes()); // BITMAPINFOHEADER
        out.extend_from_slice(&w.to_le_bytes());
        out.extend_from_slice(&h.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes()); // planes
        out.extend_from_slice(&24u16.to_le_bytes()); // bpp
        out.extend_from_slice(&[0; 24]); // compression .. important colours
        out
    }

    #[test]
    fn scaled_size_is_checked_before_the_pixels() {
        let d = tmp();
        let p = d.path().join("s.png");
        RgbImage::from_pixel(300, 200, Rgb([1, 2, 3]))
            .save(&p)
            .unwrap();
        let limits = DecodeLimits {
            max_pixels: 100_000,
        };
        let calls = std::cell::Cell::new(0);
        let e = decode_rgb_checked(&p, limits, &|w, h| {
            calls.set(calls.get() + 1);
            check_scaled(&p, (w, h), (w * 2, h * 2), 2.0, limits.max_pixels)
        })
        .unwrap_err()
        .to_string();
        assert_eq!(calls.get(), 1);
        assert!(
            e.ends_with("s.png: image is 300×200, 600×400 = 240000 pixels at scale 2, over the 100000 pixels limit (lower --scale, or raise --max-pixels)"),
            "{e}"
        );
        assert!(check_scaled(&p, (300, 200), (150, 100), 0.5, 100_000).is_ok());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn devices_are_refused_not_read() {
        let d = tmp();
        let p = d.path().join("zero.png");
        std::os::unix::fs::symlink("/dev/zero", &p).unwrap();
        for e in [
            dimensions(&p).unwrap_err(),
            decode_rgb(&p, DecodeLimits::default()).unwrap_err(),
        ] {
            assert!(
                e.to_string()
                    .ends_with("zero.png: not a regular file (character device)"),
                "{e}"
            );
        }
    }

    #[test]
    fn huge_headers_are_refused_fast() {
        let d = tmp();
        let p = d.path().join("huge.png");
        std::fs::write(&p, huge_png(100_000, 100_000)).unwrap();
        assert_eq!(dimensions(&p).unwrap(), (100_000, 100_000));
        let t = Instant::now();
        let e = msg(decode_rgb(&p, DecodeLimits::default()).unwrap_err());
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(e.contains("huge.png"), "{e}");
        assert!(
            e.contains(
                "100000×100000 = 10000 MP, over the 100 MP limit (raise it with --max-pixels)"
            ),
            "{e}"
        );
        let e = msg(decode_mask(&p, DecodeLimits::default()).unwrap_err());
        assert!(e.contains("over the 100 MP limit"), "{e}");

        let b = d.path().join("huge.bmp");
        // The BMP decoder itself refuses sides over 65535; stay under that.
        std::fs::write(&b, huge_bmp(60_000, 60_000)).unwrap();
        let t = Instant::now();
        let e = msg(decode_rgb(&b, DecodeLimits::default()).unwrap_err());
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(
            e.contains("huge.bmp") && e.contains("60000×60000 = 3600 MP, over the 100 MP limit"),
            "{e}"
        );

        // A small limit refuses a small real image too, with the numbers in the message.
        let s = d.path().join("small.png");
        RgbImage::new(40, 30).save(&s).unwrap();
        let e = msg(decode_rgb(&s, DecodeLimits { max_pixels: 1000 }).unwrap_err());
        assert!(
            e.contains("40×30 = 1200 pixels, over the 1000 pixels limit"),
            "{e}"
        );
        assert!(decode_rgb(&s, DecodeLimits { max_pixels: 1200 }).is_ok());

        // A file larger than any image within the limit needs is refused unread
        // (a sparse file: nothing is written or read).
        let big = d.path().join("big.png");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(HEADER_ALLOC + 16 * 1000 + 1).unwrap();
        let t = Instant::now();
        let e = msg(decode_rgb(&big, DecodeLimits { max_pixels: 1000 }).unwrap_err());
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(
            e.contains("big.png") && e.contains("more than any image within the pixel limit needs"),
            "{e}"
        );
    }
}
