//! TODO(patch helper): train-time augmentations.

use image::RgbImage;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Strengths of each augmentation; 0 turns one off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    pub flips: bool,
    pub rot90: bool,
    pub max_rotate_degrees: f32,
    pub scale_jitter: f32,
    pub hed_sigma: f32,
    pub brightness: f32,
    pub contrast: f32,
    pub blur_probability: f32,
    pub blur_max_sigma: f32,
    pub jpeg_probability: f32,
    pub jpeg_min_quality: u8,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        todo!("patch helper")
    }
}

/// One augmented copy of `patch` and the names of the operations applied, in order.
pub fn augment<R: Rng>(
    patch: &RgbImage,
    cfg: &AugmentConfig,
    rng: &mut R,
) -> (RgbImage, Vec<&'static str>) {
    let _ = (patch, cfg, rng);
    todo!("patch helper")
}
