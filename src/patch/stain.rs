//! TODO(patch helper): stain normalisation (Reinhard, Macenko).

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Stain normalisation method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StainMethod {
    Reinhard,
    Macenko,
}

/// A fitted normaliser: maps any H&E image to the target's colours.
#[derive(Clone, Debug, PartialEq)]
pub struct StainNormalizer {
    _private: (),
}

impl StainNormalizer {
    /// The target of a typical H&E slide, built in, for when no reference is given.
    pub fn builtin(method: StainMethod) -> Self {
        let _ = method;
        todo!("patch helper")
    }

    /// Fits the target to a reference image.
    pub fn fit(method: StainMethod, reference: &RgbImage) -> Result<Self> {
        let _ = (method, reference);
        todo!("patch helper")
    }

    pub fn apply(&self, img: &RgbImage) -> RgbImage {
        let _ = img;
        todo!("patch helper")
    }
}
