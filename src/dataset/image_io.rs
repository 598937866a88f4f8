//! Decoding untrusted image files safely: dimensions are checked against a
//! pixel limit before any pixel buffer is allocated.

use std::path::Path;

use image::{GrayImage, RgbImage};

use crate::error::Result;

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

/// Width and height from the header alone.
pub fn dimensions(path: &Path) -> Result<(u32, u32)> {
    let _ = path;
    todo!("dataset helper")
}

/// Decodes any supported image to 8-bit RGB (16-bit is scaled, gray expanded,
/// alpha dropped, palettes resolved).
pub fn decode_rgb(path: &Path, limits: DecodeLimits) -> Result<RgbImage> {
    let _ = (path, limits);
    todo!("dataset helper")
}

/// Decodes a mask to 8-bit gray (0 = background, anything else = gland).
pub fn decode_mask(path: &Path, limits: DecodeLimits) -> Result<GrayImage> {
    let _ = (path, limits);
    todo!("dataset helper")
}
