//! TODO(patch helper): grid of patch positions, reflect-padded crops, resizing.

use image::{GrayImage, RgbImage};
use serde::{Deserialize, Serialize};

/// What to do with the strip at the right/bottom edge that a whole stride does not cover.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EdgePolicy {
    /// Leave it out: only patches wholly inside the image.
    #[default]
    Drop,
    /// Add one more patch flush with the edge (it overlaps its neighbour).
    Shift,
    /// Add one more patch past the edge, filled by reflection.
    Pad,
}

/// Top-left corners of the patches of a `width`×`height` image, row by row.
pub fn grid(width: u32, height: u32, size: u32, stride: u32, edge: EdgePolicy) -> Vec<(u32, u32)> {
    let _ = (width, height, size, stride, edge);
    todo!("patch helper")
}

/// The `size`×`size` patch at (`x`, `y`); pixels past the edge are reflected.
pub fn crop_reflect(img: &RgbImage, x: u32, y: u32, size: u32) -> RgbImage {
    let _ = (img, x, y, size);
    todo!("patch helper")
}

/// Resizes by `scale` (1.0 returns a copy) with a filter suited to downscaling.
pub fn resize(img: &RgbImage, scale: f32) -> RgbImage {
    let _ = (img, scale);
    todo!("patch helper")
}

/// Resizes a mask by `scale` with nearest-neighbour, so labels stay labels.
pub fn resize_mask(mask: &GrayImage, scale: f32) -> GrayImage {
    let _ = (mask, scale);
    todo!("patch helper")
}
