//! Encoding patches. PNG goes through the `png` crate with the zlib-rs deflate
//! backend (zlib-ng class speed at zlib's ratio); JPEG through `image`.

use image::RgbImage;
use serde::{Deserialize, Serialize};

/// Patch encoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EncodeFormat {
    /// Lossless; the default, since augmentation and stain work already changed pixels.
    #[default]
    Png,
    Jpeg,
}

impl EncodeFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            EncodeFormat::Png => "png",
            EncodeFormat::Jpeg => "jpeg",
        }
    }
}

/// PNG speed/size trade-off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PngCompression {
    /// fdeflate: several times faster, files ~10-15% larger.
    Fast,
    /// deflate level 6 with adaptive filters, like PIL's default.
    #[default]
    Balanced,
    /// deflate level 9: slower, slightly smaller.
    High,
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
        let mut out = Vec::with_capacity(img.as_raw().len() / 2);
        match self.format {
            EncodeFormat::Png => {
                let mut enc = png::Encoder::new(&mut out, img.width(), img.height());
                enc.set_color(png::ColorType::Rgb);
                enc.set_depth(png::BitDepth::Eight);
                enc.set_compression(match self.png_compression {
                    PngCompression::Fast => png::Compression::Fast,
                    PngCompression::Balanced => png::Compression::Balanced,
                    PngCompression::High => png::Compression::High,
                });
                let mut writer = enc
                    .write_header()
                    .map_err(|e| format!("PNG encoding failed: {e}"))?;
                writer
                    .write_image_data(img.as_raw())
                    .map_err(|e| format!("PNG encoding failed: {e}"))?;
                writer
                    .finish()
                    .map_err(|e| format!("PNG encoding failed: {e}"))?;
            }
            EncodeFormat::Jpeg => {
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, self.jpeg_quality)
                    .encode_image(img)
                    .map_err(|e| format!("JPEG encoding failed: {e}"))?;
            }
        }
        Ok(out)
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

    #[test]
    fn png_is_lossless_at_every_level() {
        let img = gradient();
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
            assert_eq!(image::load_from_memory(&bytes).unwrap().to_rgb8(), img);
        }
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
