//! TODO(synth helper)

use std::path::Path;

use crate::error::Result;

/// What to generate.
#[derive(Clone, Debug)]
pub struct SynthOptions {
    pub images: usize,
    pub seed: u64,
}

/// What was generated.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SynthSummary {
    pub images: usize,
    pub benign: usize,
    pub malignant: usize,
    pub patients: usize,
}

pub fn generate(output: &Path, opts: &SynthOptions) -> Result<SynthSummary> {
    let _ = (output, opts);
    todo!("synth helper")
}
