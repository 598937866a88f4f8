//! The burn trainer (cargo feature `train`; `flex` or `tch` picks the backend
//! at run time through a [`burn::tensor::Device`]).
//!
//! - [`checkpoint`]: an epoch's checkpoint files commit together (kill-safe `--resume`).
//! - `epoch_writer`: each epoch's checkpoint written on a background thread while the next trains.
//! - [`classify`]: ImageNet top-k of photos with a pretrained backbone.
//! - [`compare`]: several models on the same data, one table and one plot.
//! - [`cv`]: patient-grouped K-fold cross-validation, patch and image level.
//! - [`config`]: a run's options, checks, schedule and optimizer.
//! - [`data`]: manifest-driven streaming batches (shuffle buffer, prefetch, CRC faults named).
//! - [`models`]: the model registry: one table row per `--model`, the `Architecture` and `Backbone` traits.
//! - [`infer`]: a run's model on data: loading it, tensors in and out, [`infer::Predictions`].
//! - [`learner`]: the training loop of a fresh run.
//! - [`head_stage`]: stage 1 of transfer learning, the new head on cached frozen features.
//! - [`resume`]: `train --resume`, a run continued after its last committed epoch.
//! - [`session`]: one run as its stages see it, and how each epoch ends (metrics row, checkpoint).
//! - [`metrics`]: accuracy, AUC, … with confidence intervals.
//! - [`evaluate`]: patch- and image-level evaluation of a run.
//! - [`export`]: safetensors (PyTorch names) or burnpack, plus `model.json`.
//! - [`ops`]: backend operations histoshard adds to burn (ReLU6 in one pass each way, Adam's update in one).
//! - [`prefix_cache`]: fine-tuning a frozen-statistics tail from cached activations.
//! - [`plot`]: SVG charts (lines, grouped bars, confusion matrix) with `plotters`.
//! - [`predict`]: whole new images → patch probabilities, image label, heatmap.
//! - [`provenance`]: which data a run was trained on; what `evaluate` and `--resume` accept.
//! - [`run`]: the run folder's file names and typed files (`run.json`, `state.json`, checkpoints).
//! - [`report`]: a run's plots (loss, accuracy, ROC points) and SVG writing.
//! - [`transfer`]: transfer-learning settings, stage-2 freezing, batch-norm re-estimation.
//! - [`toy`]: a tiny two-class shard set for tests and timings.

pub mod checkpoint;
pub mod classify;
pub mod compare;
pub mod config;
pub mod cv;
pub mod data;
pub mod device;
mod epoch_writer;
pub mod error;
pub mod evaluate;
pub mod export;
pub mod head_stage;
pub mod infer;
pub mod learner;
pub mod metrics;
pub mod models;
pub mod ops;
pub mod plot;
pub mod predict;
pub mod prefix_cache;
pub mod provenance;
pub mod report;
pub mod resume;
pub mod run;
mod session;
pub mod toy;
pub mod transfer;
