//! Errors only training has; everything else is the library's [`Error`].

use std::path::PathBuf;

use crate::error::Error;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Core(#[from] Error),
    /// Training diverged; going on would only write garbage checkpoints.
    #[error(
        "loss became {value} at epoch {epoch}, batch {batch} (learning rate {lr:e}); \
         lower --lr, or check the data"
    )]
    NonFiniteLoss {
        epoch: usize,
        batch: usize,
        value: f32,
        lr: f64,
    },
    /// A checkpoint could not be written or read (burn's record error).
    #[error("{}: checkpoint: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },
    /// `--device` asks for something this build or machine does not have.
    #[error("device {0}")]
    Device(String),
}

pub type TrainResult<T> = std::result::Result<T, TrainError>;
