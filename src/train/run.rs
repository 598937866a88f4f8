//! A run folder: its file names and typed files, each written to a temporary
//! name and renamed, so a crash never leaves a half-written one.
//!
//! - `run.json` ([`RunInfo`]): the configuration, model spec, data folder and
//!   class counts — everything `evaluate` needs to rebuild the model;
//! - `preprocessing.json`: how new images become model inputs (`predict`);
//! - `metrics.csv` ([`EpochMetrics`]): one row per finished epoch;
//! - `last.bpk` / `last-optim.bpk`: model and optimizer after the latest epoch;
//! - `best.bpk`: the model kept for use (see [`super::config::Keep`]);
//! - `state.json` ([`TrainState`]): where training stands (epoch, best epoch,
//!   patience);
//! - `loss.svg`, `accuracy.svg`: the curves so far ([`super::report`]).

use std::path::{Path, PathBuf};

use burn::{
    module::Module,
    optim::ModuleOptimizer,
    tensor::{Bytes, Device},
};
use serde::{Deserialize, Serialize};

use super::{
    config::TrainConfig,
    error::{TrainError, TrainResult},
    models::Model,
    provenance::DataIdentity,
};
use crate::error::Error;

pub const RUN_JSON: &str = "run.json";
pub const STATE_JSON: &str = "state.json";
pub const METRICS_CSV: &str = "metrics.csv";
pub const PREPROCESSING_JSON: &str = "preprocessing.json";
pub const LAST_MODEL: &str = "last.bpk";
pub const LAST_OPTIM: &str = "last-optim.bpk";
pub const BEST_MODEL: &str = "best.bpk";

/// A run's JSON files (`run.json`, `state.json`, `preprocessing.json`) larger
/// than this are refused when read back; each is a few KB.
pub const MAX_RUN_JSON_BYTES: u64 = 16 << 20;

/// `run.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunInfo {
    pub histoshard: String,
    pub data: PathBuf,
    pub config: TrainConfig,
    pub num_classes: usize,
    pub train_records: usize,
    pub val_records: usize,
    pub train_class_counts: Vec<u64>,
    pub class_weights: Option<Vec<f32>>,
    /// The data the run was trained on: `--resume` requires the same,
    /// `evaluate` the same classes, patch size and scale (absent in runs of
    /// older versions, which are checked by counts only).
    #[serde(default)]
    pub data_identity: Option<DataIdentity>,
}

impl RunInfo {
    pub fn load(run: &Path) -> Result<Self, Error> {
        read_json(&run.join(RUN_JSON), "a run.json")
    }

    pub fn save(&self, run: &Path) -> TrainResult<()> {
        write_json(&run.join(RUN_JSON), self)
    }
}

/// `state.json`: progress, for resumption and for reading a run's outcome.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub epochs_done: usize,
    /// The epoch saved as `best.bpk` (see [`super::config::Keep`]).
    pub best_epoch: usize,
    /// The lowest validation loss so far; `None` before the first epoch and
    /// without a validation split.
    pub best_val_loss: Option<f64>,
    pub epochs_without_improvement: usize,
    pub stopped_early: bool,
}

impl TrainState {
    /// The run's `state.json`; `None` before its first epoch committed.
    pub fn load_if_any(run: &Path) -> Result<Option<Self>, Error> {
        let path = run.join(STATE_JSON);
        if !path.exists() {
            return Ok(None);
        }
        read_json(&path, "a state.json").map(Some)
    }

    pub fn save(&self, run: &Path) -> TrainResult<()> {
        write_json(&run.join(STATE_JSON), self)
    }
}

/// One row of `metrics.csv`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub val_balanced_accuracy: f64,
    pub val_auc: f64,
    pub train_images: usize,
    pub seconds: f64,
    pub images_per_second: f64,
    /// `scratch`, or for pretrained models `head` (frozen features) then `fine-tune`.
    #[serde(default)]
    pub stage: String,
}

impl EpochMetrics {
    /// The rows of the run's `metrics.csv`.
    pub fn load_all(run: &Path) -> TrainResult<Vec<Self>> {
        let path = run.join(METRICS_CSV);
        let mut r =
            csv::Reader::from_path(&path).map_err(|e| Error::input(&path, e.to_string()))?;
        let rows = r
            .deserialize()
            .collect::<Result<Vec<Self>, _>>()
            .map_err(|e| Error::input(&path, e.to_string()))?;
        Ok(rows)
    }

    /// Writes `rows` as the run's `metrics.csv`.
    pub fn save_all(run: &Path, rows: &[Self]) -> TrainResult<()> {
        let path = run.join(METRICS_CSV);
        let mut w = csv::Writer::from_writer(Vec::new());
        for r in rows {
            w.serialize(r)
                .map_err(|e| Error::output(&path, e.to_string()))?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| Error::output(&path, e.to_string()))?;
        crate::atomic::write(&path, &bytes)?;
        Ok(())
    }
}

/// A JSON file of a run, refused when larger than [`MAX_RUN_JSON_BYTES`];
/// `what` names it in errors ("a run.json").
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T, Error> {
    let text = crate::fsutil::read_text_limited(path, MAX_RUN_JSON_BYTES, what)?;
    serde_json::from_str(&text).map_err(|e| Error::input(path, e.to_string()))
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> TrainResult<()> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| Error::output(path, e.to_string()))?;
    crate::atomic::write(path, text.as_bytes())?;
    Ok(())
}

/// The error for a model or optimizer file that cannot be written or read.
pub fn checkpoint_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// A model's parameters (batch-norm running statistics included) as the
/// bytes of a checkpoint file; `path` is the file they are for, named in
/// errors.
pub fn model_bytes(model: &Model, path: &Path) -> TrainResult<Bytes> {
    model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| checkpoint_err(path, format!("{e:?}")))
}

/// Loads parameters saved as [`model_bytes`] into `model` (built from the same spec).
pub fn load_model(model: Model, path: &Path) -> TrainResult<Model> {
    // burn reads the file itself: refuse a FIFO or device before it waits on one.
    crate::fsutil::regular_metadata(path)?;
    let record = burn::store::ModuleRecord::load(path)
        .map_err(|e| checkpoint_err(path, format!("{e:?}")))?;
    model
        .try_load_record(record)
        .map_err(|e| checkpoint_err(path, format!("{e:?}")))
}

/// The run's kept model (`best.bpk`), or `checkpoint`, on `device`, and the
/// file it came from.
pub fn load_run_model(
    run: &Path,
    info: &RunInfo,
    checkpoint: Option<&Path>,
    device: &Device,
) -> TrainResult<(Model, PathBuf)> {
    let path = checkpoint.map_or_else(|| run.join(BEST_MODEL), Path::to_path_buf);
    let model = load_model(info.config.model.init(device), &path)?;
    Ok((model, path))
}

/// An optimizer's state as the bytes of a checkpoint file (`path`, named in
/// errors).
pub fn optimizer_bytes(optim: &ModuleOptimizer, path: &Path) -> TrainResult<Bytes> {
    optim
        .into_bytes()
        .map_err(|e| checkpoint_err(path, format!("{e:?}")))
}
