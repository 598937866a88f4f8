//! histoshard: histopathology image sets (Warwick-QU / GlaS, Pascal-VOC, CSV, a
//! folder per class) to sharded TFRecord files of augmented patches that both
//! TensorFlow and histoshard's own reader load, plus a Polars manifest.
//!
//! Data flows one way — inputs → samples → splits → patches → examples → shards +
//! manifest — and each module owns one arrow:
//! - [`dataset`]: reading what users have into [`dataset::Sample`]s.
//! - [`split`]: patient-grouped train/val/test and folds, and the leakage report.
//! - [`patch`]: tiling, tissue detection, augmentation, stain normalisation.
//! - [`shard`]: the record format (from `schemas/`), writer, reader, manifest.
//! - [`preprocess`]: the one path from a source image to a model's input,
//!   shared by `prepare`, the shard loader and `predict`.
//! - [`prepare`]: the rayon pipeline wiring the above together.
//! - [`synth`]: a GlaS-layout generator for tests and the demo.
//! - `train` (cargo feature `train`, on by default through `flex`): the burn
//!   trainer, evaluation and metrics; preparation never depends on it.
//!
//! Every file a user names or a folder holds is read through [`fsutil`]:
//! regular files only (a FIFO or device is refused by name), with a byte limit.

pub mod alloc;
pub mod atomic;
pub mod choice;
pub mod codec;
pub mod dataset;
pub mod error;
pub mod failpoint;
pub mod fsutil;
pub mod inspect;
pub mod patch;
pub mod prepare;
pub mod preprocess;
pub mod progress;
pub mod remote;
pub mod shard;
pub mod split;
pub mod synth;
#[cfg(feature = "train")]
pub mod train;
pub mod verify;

#[cfg(test)]
mod import_graph;

pub use error::{Error, Result};
