//! TODO(dataset helper)

use std::path::Path;

use super::Dataset;
use crate::error::Result;

pub fn load(input: &Path) -> Result<Dataset> {
    let _ = input;
    todo!("dataset helper")
}
