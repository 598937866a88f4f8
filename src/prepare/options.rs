//! The resolved options of one `prepare` run (flags, config file and defaults
//! already merged), validated once here.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::encode::{EncodeFormat, Encoding, PngCompression};
use crate::{
    dataset::{Layout, image_io::DecodeLimits},
    error::{Error, Result},
    patch::{augment::AugmentConfig, stain::StainMethod, tiling::EdgePolicy},
    shard::Compression,
    split::SplitOptions,
};

/// Everything that decides what `prepare` writes; `prepare.json` records it
/// (its `config`), and `predict` reads the tiling and stain options back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrepareOptions {
    pub input: PathBuf,
    /// Not in `prepare.json` (see `report`): empty when read back from it.
    #[serde(default)]
    pub output: PathBuf,
    pub layout: Option<Layout>,
    pub patch_size: u32,
    pub stride: u32,
    pub scale: f32,
    pub edge: EdgePolicy,
    /// Minimum fraction of tissue (Otsu on optical density) in a kept patch.
    pub min_tissue: f32,
    /// When set, minimum fraction of gland (mask > 0) in a kept patch.
    pub min_gland_fraction: Option<f32>,
    /// Augmented copies per train patch.
    pub augment: u32,
    pub augmentation: AugmentConfig,
    pub stain_normalize: Option<StainMethod>,
    pub stain_reference: Option<PathBuf>,
    pub format: EncodeFormat,
    pub quality: u8,
    pub png_compression: PngCompression,
    /// Shards per split; when `None`, derived from `shard_size_mb`.
    pub shards: Option<u32>,
    pub shard_size_mb: f64,
    pub compression: Compression,
    pub val_fraction: f64,
    pub test_fraction: f64,
    pub folds: Option<u32>,
    pub seed: u64,
    pub max_pixels: u64,
    #[serde(skip)]
    pub overwrite: bool,
    #[serde(skip)]
    pub threads: Option<usize>,
}

impl PrepareOptions {
    /// Defaults for everything but the two paths.
    pub fn new(input: impl Into<PathBuf>, output: impl Into<PathBuf>) -> Self {
        Self {
            input: input.into(),
            output: output.into(),
            layout: None,
            patch_size: 224,
            stride: 224,
            scale: 1.0,
            edge: EdgePolicy::Drop,
            min_tissue: 0.25,
            min_gland_fraction: None,
            augment: 0,
            augmentation: AugmentConfig::default(),
            stain_normalize: None,
            stain_reference: None,
            format: EncodeFormat::Png,
            quality: 90,
            png_compression: PngCompression::Balanced,
            shards: None,
            shard_size_mb: 64.0,
            compression: Compression::None,
            val_fraction: 0.15,
            test_fraction: 0.2,
            folds: None,
            seed: 42,
            max_pixels: crate::dataset::image_io::DEFAULT_MAX_PIXELS,
            overwrite: false,
            threads: None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if !(8..=4096).contains(&self.patch_size) {
            return bad(format!(
                "--patch-size must be in 8..=4096, got {}",
                self.patch_size
            ));
        }
        if self.stride == 0 {
            return bad("--stride must be at least 1".into());
        }
        if !(self.scale > 0.0 && self.scale <= 8.0) {
            return bad(format!("--scale must be in (0, 8], got {}", self.scale));
        }
        for (name, v) in [
            ("--min-tissue", Some(self.min_tissue)),
            ("--min-gland-fraction", self.min_gland_fraction),
        ] {
            if let Some(v) = v
                && !(0.0..=1.0).contains(&v)
            {
                return bad(format!("{name} must be in [0, 1], got {v}"));
            }
        }
        if !(1..=100).contains(&self.quality) {
            return bad(format!(
                "--quality must be in 1..=100, got {}",
                self.quality
            ));
        }
        if self.shards == Some(0) {
            return bad("--shards must be at least 1".into());
        }
        if !(self.shard_size_mb.is_finite() && self.shard_size_mb > 0.0) {
            return bad(format!(
                "--shard-size-mb must be a positive number, got {}",
                self.shard_size_mb
            ));
        }
        for (name, f) in [
            ("--val-fraction", self.val_fraction),
            ("--test-fraction", self.test_fraction),
        ] {
            if !(0.0..1.0).contains(&f) {
                return bad(format!("{name} must be in [0, 1), got {f}"));
            }
        }
        self.augmentation.validate()?;
        if self.stain_reference.is_some() && self.stain_normalize.is_none() {
            return bad("--stain-reference needs --stain-normalize reinhard|macenko".into());
        }
        if self.augment > 64 {
            return bad(format!(
                "--augment must be at most 64, got {}",
                self.augment
            ));
        }
        crate::atomic::check_folder(&self.output)
    }

    pub fn encoding(&self) -> Encoding {
        Encoding {
            format: self.format,
            jpeg_quality: self.quality,
            png_compression: self.png_compression,
        }
    }

    pub fn limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_pixels: self.max_pixels,
        }
    }

    pub fn split_options(&self) -> SplitOptions {
        SplitOptions {
            val_fraction: self.val_fraction,
            test_fraction: self.test_fraction,
            folds: self.folds,
            seed: self.seed,
        }
    }

    /// Rough encoded size of one patch, to turn `--shard-size-mb` into a shard count.
    pub fn estimated_record_bytes(&self) -> f64 {
        let raw = (self.patch_size as f64).powi(2) * 3.0;
        match self.format {
            EncodeFormat::Png => raw * 0.65,
            EncodeFormat::Jpeg => raw * 0.12,
        }
    }
}
