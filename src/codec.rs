//! Image encoding shared across layers: `prepare` encodes records with it
//! and the JPEG-quality augmentation (`patch::augment`) round-trips through it.

use image::RgbImage;

/// Baseline JPEG at `quality` (1–100) by `jpeg-encoder` (its scalar code,
/// so the bytes do not depend on the CPU's vector extensions).
pub fn jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>, String> {
    let (w, h) = img.dimensions();
    let too_large = || format!("JPEG encoding failed: {w}×{h} is over 65535 px");
    let (w16, h16) = (
        u16::try_from(w).map_err(|_| too_large())?,
        u16::try_from(h).map_err(|_| too_large())?,
    );
    let mut out = Vec::with_capacity(img.as_raw().len() / 8);
    jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100))
        .encode(img.as_raw(), w16, h16, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| format!("JPEG encoding failed: {e}"))?;
    Ok(out)
}
