//! The burn trainer (cargo feature `train`; `flex` or `tch` picks the backend
//! at run time through a [`burn::tensor::Device`]).
//!
//! - [`data`]: manifest-driven streaming batches (shuffle buffer, prefetch, CRC faults named).
//! - [`models`]: the model registry (`mlp`, `cnn`).
//! - [`learner`]: the training loop, checkpoints and `metrics.csv`.
//! - [`metrics`]: accuracy, AUC, … with confidence intervals.
//! - [`evaluate`]: patch- and image-level evaluation of a run.
//! - [`report`]: SVG plots (loss, accuracy, ROC, confusion) and `report.md`.
//! - [`toy`]: a tiny two-class shard set for tests and timings.

pub mod data;
pub mod error;
pub mod evaluate;
pub mod learner;
pub mod metrics;
pub mod models;
pub mod report;
pub mod toy;
