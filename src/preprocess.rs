//! One preprocessing path from a source image to a model's input, shared by
//! `prepare` (which stores patches), the shard loader (which turns stored
//! patches into model inputs) and `predict` (which does both for new
//! images), so that training and prediction cannot drift apart:
//!
//! 1. [`working_image`]: decode (the pixel limit checked from the header, at
//!    the working scale) and resize by `--scale`;
//! 2. [`TissueFilter`]: which patch positions hold enough tissue, judged on
//!    that image before stain normalisation;
//! 3. [`stain_normalizer`], applied to the whole working image;
//! 4. `tiling::crop_reflect` cuts a patch (which `prepare` encodes, PNG
//!    losslessly by default);
//! 5. [`model_input`]: resize to the model's side, scale to [0, 1],
//!    normalise per channel, planar (CHW).

use std::path::Path;

use image::{RgbImage, imageops::FilterType};
use serde::{Deserialize, Serialize};

use crate::{
    dataset::image_io::{self, DecodeLimits},
    error::{Error, Result},
    patch::{
        stain::{StainMethod, StainNormalizer},
        tiling,
        tissue::{self, Coverage},
    },
};

/// Per-channel normalisation applied after scaling pixels to [0, 1]; each
/// model brings its own (pretrained backbones need the statistics they were
/// trained with).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalization {
    /// The ImageNet statistics most vision backbones expect.
    pub const IMAGENET: Normalization = Normalization {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
}

/// Whether `scale` leaves an image at its size.
pub fn is_unit_scale(scale: f32) -> bool {
    (scale - 1.0).abs() < f32::EPSILON
}

/// Checks from a `w`×`h` header that the image at `path` fits `limits` at
/// `scale` too (an 8× scale takes 64× the pixels).
pub fn fits_scaled(path: &Path, w: u32, h: u32, scale: f32, limits: DecodeLimits) -> Result<()> {
    let size = tiling::scaled_size(w, h, scale);
    image_io::check_scaled(path, (w, h), size, scale, limits.max_pixels)
}

/// The image at `path` at the working scale (step 1).
pub fn working_image(path: &Path, scale: f32, limits: DecodeLimits) -> Result<RgbImage> {
    let image =
        image_io::decode_rgb_checked(path, limits, &|w, h| fits_scaled(path, w, h, scale, limits))?;
    Ok(if is_unit_scale(scale) {
        image
    } else {
        tiling::resize(&image, scale)
    })
}

/// The normaliser of `--stain-normalize` and `--stain-reference` (step 3):
/// none, the method's built-in target, or a target fitted to the reference
/// image, which is decoded under `limits`.
pub fn stain_normalizer(
    method: Option<StainMethod>,
    reference: Option<&Path>,
    limits: DecodeLimits,
) -> Result<Option<StainNormalizer>> {
    match (method, reference) {
        (None, _) => Ok(None),
        (Some(m), None) => Ok(Some(StainNormalizer::builtin(m))),
        (Some(m), Some(r)) => StainNormalizer::fit(m, &image_io::decode_rgb(r, limits)?)
            .map(Some)
            .map_err(|e| Error::input(r, format!("cannot fit stain normalisation: {e}"))),
    }
}

/// Which `size`-px patch positions of a working image hold at least `min`
/// tissue (Otsu on optical density), judged before stain normalisation
/// (step 2).
pub struct TissueFilter {
    coverage: Coverage,
    size: u32,
    min: f32,
}

impl TissueFilter {
    pub fn new(image: &RgbImage, size: u32, min: f32) -> Self {
        Self {
            coverage: Coverage::new(&tissue::tissue_mask(image)),
            size,
            min,
        }
    }

    pub fn keeps(&self, (x, y): (u32, u32)) -> bool {
        self.coverage.fraction(x, y, self.size) >= self.min
    }
}

/// A patch as a model input (step 5): resized to `side`×`side` (triangle
/// filter) when it is not that size already, then [`to_chw`].
pub fn model_input(patch: &RgbImage, side: Option<u32>, norm: &Normalization) -> Vec<f32> {
    match side {
        Some(s) if patch.dimensions() != (s, s) => to_chw(
            &image::imageops::resize(patch, s, s, FilterType::Triangle),
            norm,
        ),
        _ => to_chw(patch, norm),
    }
}

/// Pixels to normalised planar floats: `(pixel / 255 − mean) / std`.
pub fn to_chw(img: &RgbImage, norm: &Normalization) -> Vec<f32> {
    let plane = img.width() as usize * img.height() as usize;
    let mut out = vec![0f32; 3 * plane];
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * norm.std[c]));
    let shift: [f32; 3] = std::array::from_fn(|c| norm.mean[c] / norm.std[c]);
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = p.0[c] as f32 * scale[c] - shift[c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use image::Rgb;

    use super::*;

    const UNIT: Normalization = Normalization {
        mean: [0.0; 3],
        std: [1.0; 3],
    };

    #[test]
    fn chw_is_planar_and_normalised() {
        let mut img = RgbImage::new(2, 1);
        img.put_pixel(0, 0, Rgb([255, 0, 51]));
        img.put_pixel(1, 0, Rgb([0, 255, 102]));
        let v = to_chw(
            &img,
            &Normalization {
                mean: [0.5; 3],
                std: [0.5; 3],
            },
        );
        let want = [1.0, -1.0, -1.0, 1.0, -0.6, -0.2];
        assert_eq!(v.len(), want.len());
        for (got, want) in v.iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{v:?}");
        }
    }

    #[test]
    fn model_input_resizes_only_other_sizes() {
        let img = RgbImage::from_fn(8, 8, |x, y| Rgb([(x * 30) as u8, (y * 30) as u8, 7]));
        assert_eq!(model_input(&img, None, &UNIT), to_chw(&img, &UNIT));
        assert_eq!(model_input(&img, Some(8), &UNIT), to_chw(&img, &UNIT));
        let small = model_input(&img, Some(4), &UNIT);
        assert_eq!(small.len(), 3 * 4 * 4);
        let resized = image::imageops::resize(&img, 4, 4, FilterType::Triangle);
        assert_eq!(small, to_chw(&resized, &UNIT));
    }

    #[test]
    fn tissue_filter_keeps_only_patches_with_enough_tissue() {
        // Left half stained tissue, right half white glass.
        let img = RgbImage::from_fn(64, 32, |x, _| {
            if x < 32 {
                Rgb([150, 60, 140])
            } else {
                Rgb([250, 250, 250])
            }
        });
        let f = TissueFilter::new(&img, 32, 0.5);
        assert!(f.keeps((0, 0)));
        assert!(!f.keeps((32, 0)));
        assert!(f.keeps((16, 0)), "half tissue meets a 0.5 minimum");
    }

    #[test]
    fn stain_normalizer_none_builtin_and_unreadable_reference() {
        let limits = DecodeLimits::default();
        assert!(stain_normalizer(None, None, limits).unwrap().is_none());
        let n = stain_normalizer(Some(StainMethod::Reinhard), None, limits)
            .unwrap()
            .unwrap();
        assert_eq!(n.method(), StainMethod::Reinhard);
        let missing = Path::new("/nonexistent/ref.png");
        let err = stain_normalizer(Some(StainMethod::Macenko), Some(missing), limits)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ref.png"), "{err}");
    }
}
