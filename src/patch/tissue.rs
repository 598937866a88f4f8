//! TODO(patch helper): tissue detection by Otsu on optical density; coverage by integral image.

use image::{GrayImage, RgbImage};

/// 255 where there is tissue, 0 for background (glass, white lumen-free areas).
pub fn tissue_mask(img: &RgbImage) -> GrayImage {
    let _ = img;
    todo!("patch helper")
}

/// Fraction of non-zero mask pixels in any square, in O(1) per query.
pub struct Coverage {
    _private: (),
}

impl Coverage {
    pub fn new(mask: &GrayImage) -> Self {
        let _ = mask;
        todo!("patch helper")
    }

    /// Fraction of the `size`×`size` square at (`x`, `y`) that is non-zero; pixels
    /// outside the image count as zero.
    pub fn fraction(&self, x: u32, y: u32, size: u32) -> f32 {
        let _ = (x, y, size);
        todo!("patch helper")
    }
}
