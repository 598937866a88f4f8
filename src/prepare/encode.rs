//! Encoding patches. PNG goes through [`png_fast`](super::png_fast) (adaptive
//! filters; for `balanced` the run-length deflater of
//! [`rle_deflate`](super::rle_deflate), for `high` libdeflate) or, for `fast`,
//! the `png` crate with fdeflate and the Paeth filter; JPEG through
//! [`crate::codec::jpeg`].

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::png_fast::{self, Deflater, Filter};
use crate::codec::jpeg;

/// Patch encoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodeFormat {
    #[default]
    Png,
    Jpeg,
}

crate::choices!(EncodeFormat {
    Png = "png": "Lossless; the default, since augmentation and stain work already changed pixels",
    Jpeg = "jpeg",
});

impl EncodeFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            EncodeFormat::Png => "png",
            EncodeFormat::Jpeg => "jpeg",
        }
    }
}

/// PNG speed/size trade-off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PngCompression {
    Fast,
    #[default]
    Balanced,
    High,
}

crate::choices!(PngCompression {
    Fast = "fast": "fdeflate (fixed Huffman tables), Paeth filter: ~2.5x faster than balanced, files ~12% larger",
    Balanced = "balanced": "Adaptive filters, literals and runs under dynamic Huffman codes: PIL's size or a little under, ~4x faster than zlib level 6",
    High = "high": "Adaptive filters, libdeflate level 12: ~0.5% smaller than balanced, ~20x slower",
});

/// The deflater of `balanced` (docs/BENCHMARKS.md, "Encoder options measured").
pub const BALANCED: Deflater = Deflater::Rle {
    block_bytes: 65_536,
};
/// The deflater of `high`.
pub const HIGH: Deflater = Deflater::Libdeflate { level: 12 };

/// A PNG encoder: what each [`PngCompression`] runs, and what the benchmarks sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PngEncoder {
    /// The `png` crate with fdeflate and `filter` on every row. `fast` uses
    /// Paeth: 20% faster than the crate's adaptive choice, files 0.7% larger
    /// (docs/BENCHMARKS.md).
    Fdeflate(png::Filter),
    /// [`png_fast`] with a deflater and a filter choice.
    Own { deflater: Deflater, filter: Filter },
}

impl PngCompression {
    pub fn encoder(self) -> PngEncoder {
        match self {
            PngCompression::Fast => PngEncoder::Fdeflate(png::Filter::Paeth),
            PngCompression::Balanced => PngEncoder::Own {
                deflater: BALANCED,
                filter: Filter::Adaptive,
            },
            PngCompression::High => PngEncoder::Own {
                deflater: HIGH,
                filter: Filter::Adaptive,
            },
        }
    }
}

impl PngEncoder {
    /// Encodes `img` as an 8-bit RGB PNG; a pure function of the pixels and `self`.
    pub fn encode(self, img: &RgbImage) -> Result<Vec<u8>, String> {
        match self {
            PngEncoder::Fdeflate(filter) => {
                let mut out = Vec::with_capacity(img.as_raw().len() * 3 / 4);
                let mut enc = png::Encoder::new(&mut out, img.width(), img.height());
                enc.set_color(png::ColorType::Rgb);
                enc.set_depth(png::BitDepth::Eight);
                enc.set_compression(png::Compression::Fast);
                enc.set_filter(filter);
                let fail = |e: png::EncodingError| format!("PNG encoding failed: {e}");
                let mut writer = enc.write_header().map_err(fail)?;
                writer.write_image_data(img.as_raw()).map_err(fail)?;
                writer.finish().map_err(fail)?;
                Ok(out)
            }
            PngEncoder::Own { deflater, filter } => {
                png_fast::encode_rgb8(img.width(), img.height(), img.as_raw(), deflater, filter)
                    .map_err(|e| format!("PNG encoding failed: {e}"))
            }
        }
    }
}

/// How to encode a patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Encoding {
    pub format: EncodeFormat,
    pub jpeg_quality: u8,
    pub png_compression: PngCompression,
}

impl Encoding {
    /// Encodes `img`; the output is a pure function of the pixels and settings.
    pub fn encode(&self, img: &RgbImage) -> Result<Vec<u8>, String> {
        match self.format {
            EncodeFormat::Png => self.png_compression.encoder().encode(img),
            EncodeFormat::Jpeg => jpeg(img, self.jpeg_quality),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient() -> RgbImage {
        RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x + y) * 2) as u8])
        })
    }

    /// Patches of the kinds `prepare` meets: flat background, pure noise, a
    /// gradient, a stained-tissue-like texture, and that texture augmented.
    fn patches() -> Vec<(&'static str, RgbImage)> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let flat = RgbImage::from_pixel(224, 224, image::Rgb([236, 232, 240]));
        let noise = RgbImage::from_fn(224, 224, |_, _| image::Rgb(rng.random()));
        let tissue = RgbImage::from_fn(224, 224, |x, y| {
            let (fx, fy) = (x as f32, y as f32);
            let v = (fx * 0.11).sin() * (fy * 0.07).cos() + (fx * 0.031 + fy * 0.05).sin();
            let n: i32 = rng.random_range(-6..=6);
            let c = |base: f32, k: f32| (base + k * v + n as f32).clamp(0.0, 255.0) as u8;
            image::Rgb([c(180.0, 40.0), c(120.0, 55.0), c(190.0, 25.0)])
        });
        let cfg = crate::patch::augment::AugmentConfig::default();
        let (augmented, _) = crate::patch::augment::augment(&tissue, &cfg, &mut rng);
        vec![
            ("flat", flat),
            ("noise", noise),
            ("gradient", gradient()),
            ("tissue", tissue),
            ("augmented", augmented),
            (
                "one pixel",
                RgbImage::from_pixel(1, 1, image::Rgb([1, 2, 3])),
            ),
        ]
    }

    #[test]
    fn png_is_lossless_at_every_level() {
        for (name, img) in patches() {
            for c in [
                PngCompression::Fast,
                PngCompression::Balanced,
                PngCompression::High,
            ] {
                let e = Encoding {
                    format: EncodeFormat::Png,
                    jpeg_quality: 90,
                    png_compression: c,
                };
                let bytes = e.encode(&img).unwrap();
                let back =
                    image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).unwrap();
                assert_eq!(back.color(), image::ColorType::Rgb8, "{name} {c:?}");
                assert_eq!(back.into_rgb8(), img, "{name} {c:?}");
            }
        }
    }

    #[test]
    fn png_bytes_do_not_depend_on_threads() {
        use rayon::prelude::*;
        let imgs: Vec<RgbImage> = patches().into_iter().map(|(_, i)| i).collect();
        for c in [PngCompression::Balanced, PngCompression::High] {
            let e = Encoding {
                format: EncodeFormat::Png,
                jpeg_quality: 90,
                png_compression: c,
            };
            let serial: Vec<Vec<u8>> = imgs.iter().map(|i| e.encode(i).unwrap()).collect();
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                // Every image several times over, so threads interleave.
                let par: Vec<Vec<u8>> = pool.install(|| {
                    (0..4 * imgs.len())
                        .into_par_iter()
                        .map(|k| e.encode(&imgs[k % imgs.len()]).unwrap())
                        .collect()
                });
                for (k, p) in par.iter().enumerate() {
                    assert_eq!(*p, serial[k % imgs.len()], "{c:?}, {threads} threads");
                }
            }
        }
    }

    #[test]
    fn balanced_is_smaller_than_fast_on_texture() {
        let (_, tissue) = patches().swap_remove(3);
        let size = |c| {
            Encoding {
                format: EncodeFormat::Png,
                jpeg_quality: 90,
                png_compression: c,
            }
            .encode(&tissue)
            .unwrap()
            .len()
        };
        let (fast, balanced, high) = (
            size(PngCompression::Fast),
            size(PngCompression::Balanced),
            size(PngCompression::High),
        );
        assert!(balanced < fast, "balanced {balanced} fast {fast}");
        assert!(high <= balanced, "high {high} balanced {balanced}");
    }

    #[test]
    fn jpeg_decodes_to_the_same_size() {
        let e = Encoding {
            format: EncodeFormat::Jpeg,
            jpeg_quality: 80,
            png_compression: PngCompression::Balanced,
        };
        let bytes = e.encode(&gradient()).unwrap();
        assert_eq!(&bytes[..2], &[0xff, 0xd8]);
        let back = image::load_from_memory(&bytes).unwrap();
        assert_eq!((back.width(), back.height()), (64, 48));
    }
}
