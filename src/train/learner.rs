//! The training loop: a plain loop over burn's autodiff and optimizer rather
//! than burn-train's `Learner`, so that every random choice is ours (seeded)
//! and every file it writes is ours (atomic).
//!
//! A run folder holds:
//! - `run.json`: the configuration, model spec, data folder and class counts —
//!   everything `evaluate` needs to rebuild the model;
//! - `metrics.csv`: one row per finished epoch;
//! - `last.bpk` / `last-optim.bpk`: model and optimizer after the latest epoch;
//! - `best.bpk`: the model of the epoch with the lowest validation loss;
//! - `state.json`: where training stands (epoch, best epoch, patience);
//! - `loss.svg`, `accuracy.svg`: the curves so far.
//!
//! Every file is written to a temporary name and renamed, so a crash never
//! leaves a half-written checkpoint. Only `train` and `val` are read; `test`
//! is never opened here.

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use burn::{
    module::Module,
    nn::loss::CrossEntropyLossConfig,
    optim::{GradientsParams, ModuleOptimizer},
    tensor::{Device, Int, Tensor, TensorData},
};
use serde::{Deserialize, Serialize};

use super::{
    checkpoint,
    data::{Batch, Dataset, LoaderConfig},
    error::{TrainError, TrainResult},
    metrics::{self, argmax},
    models::Model,
    prefix_cache::{self, PrefixCache},
    provenance::{self, DataIdentity},
    transfer::{self, FeatureCache},
};
use crate::{
    error::{Error, IoContext},
    progress::Progress,
};

pub use super::{
    config::{Balance, Keep, OptimizerKind, Schedule, TrainConfig},
    device::{DeviceChoice, set_compute_threads},
};

pub const RUN_JSON: &str = "run.json";
pub const STATE_JSON: &str = "state.json";
pub const METRICS_CSV: &str = "metrics.csv";
pub const LAST_MODEL: &str = "last.bpk";
pub const LAST_OPTIM: &str = "last-optim.bpk";
pub const BEST_MODEL: &str = "best.bpk";

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
        let path = run.join(RUN_JSON);
        let text = crate::fsutil::read_text_limited(&path, MAX_RUN_JSON_BYTES, "a run.json")?;
        serde_json::from_str(&text).map_err(|e| Error::input(&path, e.to_string()))
    }
}

/// A run's JSON files (`run.json`, `state.json`, `preprocessing.json`) larger
/// than this are refused when read back; each is a few KB.
pub const MAX_RUN_JSON_BYTES: u64 = 16 << 20;

/// `state.json`: progress, for resumption and for reading a run's outcome.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub epochs_done: usize,
    /// The epoch saved as `best.bpk` (see [`Keep`]).
    pub best_epoch: usize,
    /// The lowest validation loss so far; `None` before the first epoch and
    /// without a validation split.
    pub best_val_loss: Option<f64>,
    pub epochs_without_improvement: usize,
    pub stopped_early: bool,
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

/// What [`train`] returns.
#[derive(Clone, Debug)]
pub struct TrainOutcome {
    pub state: TrainState,
    pub history: Vec<EpochMetrics>,
}

fn checkpoint_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Writes a model's parameters (batch-norm running statistics included)
/// atomically.
pub fn save_model(model: &Model, path: &Path) -> TrainResult<()> {
    let bytes = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| checkpoint_err(path, format!("{e:?}")))?;
    crate::atomic::write(path, &bytes)?;
    Ok(())
}

/// Loads parameters saved by [`save_model`] into `model` (built from the same spec).
pub fn load_model(model: Model, path: &Path) -> TrainResult<Model> {
    // burn reads the file itself: refuse a FIFO or device before it waits on one.
    crate::fsutil::regular_metadata(path)?;
    let record = burn::store::ModuleRecord::load(path)
        .map_err(|e| checkpoint_err(path, format!("{e:?}")))?;
    model
        .try_load_record(record)
        .map_err(|e| checkpoint_err(path, format!("{e:?}")))
}

fn save_optimizer(optim: &ModuleOptimizer, path: &Path) -> TrainResult<()> {
    let bytes = optim
        .into_bytes()
        .map_err(|e| checkpoint_err(path, format!("{e:?}")))?;
    crate::atomic::write(path, &bytes)?;
    Ok(())
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> TrainResult<()> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| Error::output(path, e.to_string()))?;
    crate::atomic::write(path, text.as_bytes())?;
    Ok(())
}

fn write_metrics(path: &Path, rows: &[EpochMetrics]) -> TrainResult<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r)
            .map_err(|e| Error::output(path, e.to_string()))?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::output(path, e.to_string()))?;
    crate::atomic::write(path, &bytes)?;
    Ok(())
}

/// Images of a batch as a tensor on `device`.
pub fn images_tensor(batch: &Batch, device: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(batch.images.clone(), batch.shape()), device)
}

fn labels_tensor(batch: &Batch, device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(batch.labels.clone(), [batch.len()]), device)
}

/// Row-wise softmax of `[n, k]` logits held flat.
pub(crate) fn softmax_rows(logits: &[f32], k: usize) -> Vec<Vec<f64>> {
    logits
        .chunks(k)
        .map(|row| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let exps: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
            let sum: f64 = exps.iter().sum();
            exps.into_iter().map(|e| e / sum).collect()
        })
        .collect()
}

/// Class probabilities of every record of a selection, in data order.
#[derive(Clone, Debug, Default)]
pub struct Predictions {
    /// Positions in [`Dataset::rows`].
    pub rows: Vec<usize>,
    pub labels: Vec<usize>,
    pub probabilities: Vec<Vec<f64>>,
}

impl Predictions {
    /// Mean cross-entropy (natural log), unweighted.
    pub fn loss(&self) -> f64 {
        if self.labels.is_empty() {
            return f64::NAN;
        }
        let sum: f64 = self
            .labels
            .iter()
            .zip(&self.probabilities)
            .map(|(&l, p)| -p.get(l).copied().unwrap_or(0.0).max(1e-12).ln())
            .sum();
        sum / self.labels.len() as f64
    }

    pub fn predicted(&self) -> Vec<usize> {
        self.probabilities.iter().map(|p| argmax(p)).collect()
    }

    /// Probability of class `c` for every record.
    pub fn scores(&self, c: usize) -> Vec<f64> {
        self.probabilities
            .iter()
            .map(|p| p.get(c).copied().unwrap_or(0.0))
            .collect()
    }
}

/// Runs `model` in inference mode over `data`.
pub fn predict(
    model: &Model,
    data: &Dataset,
    loader: &LoaderConfig,
    device: &Device,
    progress: &Progress,
    stage: &str,
) -> TrainResult<Predictions> {
    let device = device.clone().without_autodiff();
    let model = model.valid();
    let k = data.num_classes();
    let bar = progress.bar(stage, data.len() as u64, "patches");
    let mut out = Predictions::default();
    for batch in data.stream(loader, 0)? {
        let batch = batch?;
        let logits = model.forward(images_tensor(&batch, &device));
        let flat: Vec<f32> = logits
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| Error::Config(format!("unexpected logits: {e:?}")))?;
        out.probabilities.extend(softmax_rows(&flat, k));
        out.labels.extend(batch.labels.iter().map(|&l| l as usize));
        out.rows.extend_from_slice(&batch.rows);
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Per-invocation knobs that are not part of the run's configuration.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Train at most this many epochs in this invocation, then stop cleanly
    /// (for time-limited jobs; continue with [`resume`]).
    pub stop_after: Option<usize>,
    /// Read the data from here instead of the folder in `run.json` (resume only).
    pub data: Option<PathBuf>,
}

impl RunOptions {
    /// What is left for [`fit`] after `done` epochs of this invocation.
    fn after(&self, done: usize) -> Self {
        Self {
            stop_after: self.stop_after.map(|n| n.saturating_sub(done)),
            ..self.clone()
        }
    }
}

/// Trains `cfg.model` on `data_dir`'s train selection, selecting on val,
/// writing the run to `run_dir` (which must not already hold a run).
pub fn train(
    data_dir: &Path,
    run_dir: &Path,
    cfg: &TrainConfig,
    opts: &RunOptions,
    progress: &Progress,
) -> TrainResult<TrainOutcome> {
    cfg.validate()?;
    crate::atomic::check_folder(run_dir)?;
    let base = cfg.device.device()?;
    if run_dir.join(RUN_JSON).exists() {
        return Err(Error::output(
            run_dir,
            "already holds a run (choose another --output, or continue it with --resume)",
        )
        .into());
    }
    std::fs::create_dir_all(run_dir).at(run_dir)?;

    let train_data = Dataset::open(data_dir, &cfg.train)?;
    let val_data = Dataset::open_if_any(data_dir, &cfg.val)?;
    let mut cfg = cfg.clone();
    if val_data.is_none() {
        if cfg.early_stopping.is_some() {
            return Err(Error::Config(format!(
                "{} has no records for {}: early stopping needs a validation split",
                data_dir.display(),
                cfg.val
            ))
            .into());
        }
        if cfg.keep == Keep::Best {
            tracing::info!(
                "no validation records ({}): keeping the last epoch, as Keras and PyTorch scripts do",
                cfg.val
            );
        }
        cfg.keep = Keep::Last;
    }
    let cfg = &cfg;
    // Patches the network's downsampling would leave nothing of (Inception
    // needs 75 px) are refused here, with a message, not by a panic in the
    // first forward pass.
    let side = cfg.model.input_size().map(|s| s as usize).or_else(|| {
        train_data
            .rows()
            .first()
            .and_then(|r| usize::try_from(r.size).ok())
    });
    cfg.model.validate(side)?;
    let k = train_data.num_classes();
    if cfg.model.num_classes() != k {
        return Err(Error::Config(format!(
            "the model has {} outputs but the data has {k} classes",
            cfg.model.num_classes()
        ))
        .into());
    }
    let class_weights = (cfg.balance == Balance::Weights).then(|| train_data.class_weights());
    let identity = DataIdentity::read(data_dir)?;
    let info = RunInfo {
        histoshard: env!("CARGO_PKG_VERSION").to_string(),
        // Absolute, so that `evaluate` and `--resume` work from anywhere.
        data: std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf()),
        config: cfg.clone(),
        num_classes: k,
        train_records: train_data.len(),
        val_records: val_data.as_ref().map_or(0, Dataset::len),
        train_class_counts: train_data.class_counts().to_vec(),
        class_weights,
        data_identity: Some(identity),
    };
    write_json(&run_dir.join(RUN_JSON), &info)?;
    // What `predict` and `export` need to tile new images like the training data.
    match super::predict::Preprocessing::from_run(&info) {
        Ok(pre) => pre.save(run_dir)?,
        Err(e) => tracing::debug!("no preprocessing.json: {e}"),
    }
    tracing::info!(
        "training {} on {} records ({:?} per class), validating on {}",
        cfg.model.kind(),
        train_data.len(),
        train_data.class_counts(),
        info.val_records
    );
    let session = Session {
        run_dir,
        info: &info,
        train_data: &train_data,
        val_data: val_data.as_ref(),
        base: &base,
        progress,
    };
    let start = begin(&session, opts)?;
    let opts = opts.after(start.state.epochs_done);
    fit(&session, start, &opts)
}

/// What every stage of one run reads: its folder, configuration, data, device.
#[derive(Clone, Copy)]
struct Session<'a> {
    run_dir: &'a Path,
    info: &'a RunInfo,
    train_data: &'a Dataset,
    /// `None` without a validation split: every epoch is kept.
    val_data: Option<&'a Dataset>,
    base: &'a Device,
    progress: &'a Progress,
}

/// A fresh model (pretrained weights loaded), and for pretrained models
/// the whole frozen-feature stage.
fn begin(session: &Session, opts: &RunOptions) -> TrainResult<Start> {
    let Session {
        info,
        base,
        train_data,
        progress,
        ..
    } = *session;
    let cfg = &info.config;
    base.seed(cfg.seed);
    let device = base.clone().autodiff();
    let mut model = cfg.model.init(&device);
    if let Some(t) = &cfg.transfer {
        let mut net = transfer::backbone(model)?.load_imagenet(&t.weights)?;
        if t.adapt_bn {
            let started = Instant::now();
            let loader = LoaderConfig {
                shuffle: true,
                shuffle_buffer: cfg.shuffle_buffer,
                seed: cfg.seed,
                workers: cfg.workers,
                // A batch of one has no batch statistics.
                drop_last: train_data.len() > cfg.batch_size,
                ..cfg.eval_loader()
            };
            net = transfer::adapt_batch_norm(net, train_data, &loader, &device, progress)?;
            tracing::info!(
                "batch-norm statistics re-estimated on {} training patches in {:.1} s",
                train_data.len(),
                started.elapsed().as_secs_f64()
            );
        }
        model = net.into();
    }
    let start = Start {
        model,
        optim: cfg.optimizer(),
        state: TrainState::default(),
        history: Vec::new(),
    };
    match &cfg.transfer {
        Some(t) if t.freeze_epochs > 0 => {
            let epochs = opts
                .stop_after
                .map_or(t.freeze_epochs, |n| n.min(t.freeze_epochs));
            head_stage(session, start, epochs)
        }
        _ => Ok(start),
    }
}

/// Stage 1 of transfer learning: cache the frozen backbone's features of
/// train and val once, then train the new head on them for `epochs` (of
/// `freeze_epochs`) epochs; each epoch is checkpointed like any other.
fn head_stage(session: &Session, start: Start, epochs: usize) -> TrainResult<Start> {
    let Session {
        run_dir,
        info,
        train_data,
        val_data,
        base,
        progress,
    } = *session;
    let cfg = &info.config;
    let Some(t) = &cfg.transfer else {
        return Ok(start);
    };
    let device = base.clone().autodiff();
    let Start {
        model,
        mut optim,
        mut state,
        mut history,
    } = start;
    let mut net = transfer::backbone(model)?.freeze_backbone(0, true);
    let loader = cfg.eval_loader();
    let started = Instant::now();
    let train_cache = FeatureCache::build(&net, train_data, &loader, base, progress, "features")?;
    let val_cache = val_data
        .map(|v| FeatureCache::build(&net, v, &loader, base, progress, "features"))
        .transpose()?;
    let mut cache_seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        "frozen {} features of {} + {} patches cached in {cache_seconds:.1} s ({:.1} patches/s)",
        cfg.model.kind(),
        train_cache.len(),
        val_cache.as_ref().map_or(0, FeatureCache::len),
        (train_cache.len() + val_cache.as_ref().map_or(0, FeatureCache::len)) as f64
            / cache_seconds.max(1e-9)
    );
    let loss_fn = CrossEntropyLossConfig::new()
        .with_weights(info.class_weights.clone())
        .init(&device);
    for epoch in 1..=epochs {
        device.seed(super::data::seed_of(&[cfg.seed, epoch as u64, 0xd0]));
        let epoch_start = Instant::now();
        let (trained, stats) = transfer::head_epoch(
            net,
            &mut optim,
            &train_cache,
            &loss_fn,
            cfg.batch_size,
            t.head_lr,
            super::data::seed_of(&[cfg.seed, epoch as u64]),
            &device,
        )
        .map_err(|e| match e {
            TrainError::NonFiniteLoss {
                batch, value, lr, ..
            } => TrainError::NonFiniteLoss {
                epoch,
                batch,
                value,
                lr,
            },
            other => other,
        })?;
        let val = val_cache
            .as_ref()
            .map(|c| transfer::head_predictions(&trained, c, base))
            .transpose()?;
        // The first epoch pays for the feature pass.
        let seconds = epoch_start.elapsed().as_secs_f64() + cache_seconds;
        cache_seconds = 0.0;
        let row = epoch_row(
            epoch,
            t.head_lr,
            stats.loss / stats.seen.max(1) as f64,
            stats.correct as f64 / stats.seen.max(1) as f64,
            val.as_ref(),
            stats.seen,
            seconds,
            "head",
            info.num_classes,
        );
        let model = Model::from(trained);
        let stop = end_epoch(run_dir, info, &model, &optim, &mut state, &mut history, row)?;
        net = transfer::backbone(model)?;
        if stop {
            break;
        }
    }
    Ok(Start {
        model: net.into(),
        // Stage 2 starts its own optimizer: the head's moments were for another learning rate.
        optim: cfg.optimizer(),
        state,
        history,
    })
}

/// Continues the run in `run_dir` after its last finished epoch, from its
/// `last.bpk`, `last-optim.bpk` and `state.json`; because every random
/// choice is seeded per epoch, the result equals an uninterrupted run.
pub fn resume(run_dir: &Path, opts: &RunOptions, progress: &Progress) -> TrainResult<TrainOutcome> {
    let mut opts = opts.clone();
    let info = RunInfo::load(run_dir)?;
    let cfg = &info.config;
    // A run.json edited by hand, or written before its options were all checked.
    cfg.validate()
        .map_err(|e| Error::input(run_dir.join(RUN_JSON), e.to_string()))?;
    let base = cfg.device.device()?;
    let state_path = run_dir.join(STATE_JSON);
    let state: Option<TrainState> = if state_path.exists() {
        let text =
            crate::fsutil::read_text_limited(&state_path, MAX_RUN_JSON_BYTES, "a state.json")?;
        Some(serde_json::from_str(&text).map_err(|e| Error::input(&state_path, e.to_string()))?)
    } else {
        None
    };
    // Finish or discard the checkpoint files a kill left half-committed.
    checkpoint::settle(run_dir, state.as_ref().map(|s| s.epochs_done))?;
    let freeze = cfg.freeze_epochs();
    // Killed before its first epoch committed: start over. The frozen-feature
    // stage is cheap and deterministic: redo it whole rather than resume inside it.
    let start_over = state
        .as_ref()
        .is_none_or(|s| cfg.transfer.is_some() && s.epochs_done < freeze && !s.stopped_early);
    let data_dir = opts.data.clone().unwrap_or_else(|| info.data.clone());
    if let Some(then) = &info.data_identity {
        let differences = then.differences(&DataIdentity::read(&data_dir)?);
        if !differences.is_empty() {
            return Err(provenance::mismatch(
                &data_dir,
                &format!(
                    "is not the data set {} was trained on (resume with that data, or start a new run)",
                    run_dir.display()
                ),
                &differences,
            )
            .into());
        }
    }
    let train_data = Dataset::open(&data_dir, &cfg.train)?;
    let val_data = Dataset::open_if_any(&data_dir, &cfg.val)?;
    let val_len = val_data.as_ref().map_or(0, Dataset::len);
    if train_data.len() != info.train_records || val_len != info.val_records {
        return Err(Error::input(
            &data_dir,
            format!(
                "is not the data the run started with ({} / {} train / val records, the run had {} / {})",
                train_data.len(),
                val_len,
                info.train_records,
                info.val_records
            ),
        )
        .into());
    }
    let session = Session {
        run_dir,
        info: &info,
        train_data: &train_data,
        val_data: val_data.as_ref(),
        base: &base,
        progress,
    };
    let start = match state {
        Some(state) if !start_over => {
            let mut history = read_metrics(&run_dir.join(METRICS_CSV))?;
            // Rows of an epoch that was killed before it committed.
            history.retain(|row| row.epoch <= state.epochs_done);
            let device = base.clone().autodiff();
            let model = load_model(cfg.model.init(&device), &run_dir.join(LAST_MODEL))?;
            let optim_path = run_dir.join(LAST_OPTIM);
            // Right after the head stage, fine-tuning starts a fresh optimizer.
            let optim = if cfg.transfer.is_some() && state.epochs_done <= freeze {
                cfg.optimizer()
            } else {
                cfg.optimizer()
                    .load(&optim_path)
                    .map_err(|e| checkpoint_err(&optim_path, format!("{e:?}")))?
            };
            tracing::info!(
                "resuming {} after epoch {} of {}",
                run_dir.display(),
                state.epochs_done,
                cfg.total_epochs()
            );
            Start {
                model,
                optim,
                state,
                history,
            }
        }
        _ => {
            tracing::info!(
                "resuming {}: no epoch committed, or inside the frozen-feature stage; starting over",
                run_dir.display()
            );
            let start = begin(&session, &opts)?;
            opts = opts.after(start.state.epochs_done);
            start
        }
    };
    fit(&session, start, &opts)
}

fn read_metrics(path: &Path) -> TrainResult<Vec<EpochMetrics>> {
    let mut r = csv::Reader::from_path(path).map_err(|e| Error::input(path, e.to_string()))?;
    let rows = r
        .deserialize()
        .collect::<Result<Vec<EpochMetrics>, _>>()
        .map_err(|e| Error::input(path, e.to_string()))?;
    Ok(rows)
}

/// Where [`fit`] starts from.
struct Start {
    model: Model,
    optim: ModuleOptimizer,
    state: TrainState,
    history: Vec<EpochMetrics>,
}

fn fit(session: &Session, start: Start, opts: &RunOptions) -> TrainResult<TrainOutcome> {
    let Session {
        run_dir,
        info,
        train_data,
        val_data,
        base,
        progress,
    } = *session;
    let cfg = &info.config;
    let k = info.num_classes;
    let device = base.clone().autodiff();
    let Start {
        mut model,
        mut optim,
        mut state,
        mut history,
    } = start;
    if let Some(t) = &cfg.transfer {
        model = t.stage2(model);
    }
    let freeze = cfg.freeze_epochs();
    let stage = if cfg.transfer.is_some() {
        "fine-tune"
    } else {
        "scratch"
    };
    let loss_fn = CrossEntropyLossConfig::new()
        .with_weights(info.class_weights.clone())
        .init(&device);

    let train_loader = LoaderConfig {
        batch_size: cfg.batch_size,
        input_size: cfg.model.input_size(),
        normalization: cfg.model.normalization(),
        shuffle: true,
        shuffle_buffer: cfg.shuffle_buffer,
        seed: cfg.seed,
        augment: cfg.augment.clone(),
        oversample: cfg.balance == Balance::Oversample,
        workers: cfg.workers,
        prefetch: cfg.prefetch,
        // A last batch of 1 breaks batch norm; drop short tails when there is more than one batch.
        drop_last: train_data.epoch_len(cfg.balance == Balance::Oversample) > cfg.batch_size,
        pixels: true,
    };
    let val_loader = cfg.eval_loader();

    // Fine-tuning only a frozen-statistics tail: the prefix below it runs once.
    let cached = match prefix_cache::tail_blocks(cfg, &model) {
        Some(tail) => {
            let started = Instant::now();
            let train_cache =
                PrefixCache::build(&model, tail, train_data, &val_loader, base, progress)?;
            let val_cache = val_data
                .map(|v| PrefixCache::build(&model, tail, v, &val_loader, base, progress))
                .transpose()?;
            tracing::info!(
                "fine-tuning the last {tail} blocks from cached activations ({:.0} MB, {:.1} s)",
                (train_cache.bytes() + val_cache.as_ref().map_or(0, PrefixCache::bytes)) as f64
                    / 1e6,
                started.elapsed().as_secs_f64()
            );
            Some((train_cache, val_cache))
        }
        None => None,
    };
    let train_loader = LoaderConfig {
        pixels: cached.is_none(),
        ..train_loader
    };
    let per_epoch = train_data.epoch_len(train_loader.oversample);
    let first = (state.epochs_done + 1).max(freeze + 1);
    let last = match opts.stop_after {
        Some(n) => cfg.total_epochs().min(state.epochs_done + n),
        None => cfg.total_epochs(),
    };
    if state.stopped_early {
        tracing::info!("the run stopped early already; nothing to do");
    }
    for epoch in first..=last {
        if state.stopped_early {
            break;
        }
        let lr = cfg.lr_at(epoch - freeze);
        // Reseeded every epoch (dropout masks), so a resumed run draws
        // exactly what an uninterrupted one would.
        device.seed(super::data::seed_of(&[cfg.seed, epoch as u64, 0xd0]));
        let started = Instant::now();
        let bar = progress.bar(&format!("epoch {epoch}"), per_epoch as u64, "img");
        // The shared bar style has no message; training shows loss and speed in it.
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{prefix:>9} [{bar:30}] {pos}/{len} img  {msg}  eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        let (mut loss_sum, mut seen, mut correct) = (0.0f64, 0usize, 0usize);
        for (b, batch) in train_data.stream(&train_loader, epoch as u64)?.enumerate() {
            let batch = batch?;
            let n = batch.len();
            let logits = match &cached {
                Some((c, _)) => c.logits(&model, &batch.rows, &device)?,
                None => model.forward(images_tensor(&batch, &device)),
            };
            let loss = loss_fn.forward(logits.clone(), labels_tensor(&batch, &device));
            let value: f32 = loss.clone().into_scalar();
            if !value.is_finite() {
                return Err(TrainError::NonFiniteLoss {
                    epoch,
                    batch: b + 1,
                    value,
                    lr,
                });
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);

            let flat: Vec<f32> = logits
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| Error::Config(format!("unexpected logits: {e:?}")))?;
            correct += flat
                .chunks(k)
                .zip(&batch.labels)
                .filter(|(row, l)| {
                    let p: Vec<f64> = row.iter().map(|&v| v as f64).collect();
                    argmax(&p) == **l as usize
                })
                .count();
            loss_sum += value as f64 * n as f64;
            seen += n;
            bar.inc(n as u64);
            bar.set_message(format!(
                "loss {:.4}  {:.1} img/s",
                loss_sum / seen as f64,
                seen as f64 / started.elapsed().as_secs_f64()
            ));
        }
        bar.finish_and_clear();
        let train_seconds = started.elapsed().as_secs_f64();

        let val = match (&cached, val_data) {
            (Some((_, Some(c))), _) => Some(c.predictions(&model, cfg.batch_size, base)?),
            (_, Some(v)) => Some(predict(&model, v, &val_loader, base, progress, "val")?),
            (_, None) => None,
        };
        let row = epoch_row(
            epoch,
            lr,
            loss_sum / seen.max(1) as f64,
            correct as f64 / seen.max(1) as f64,
            val.as_ref(),
            seen,
            train_seconds,
            stage,
            k,
        );
        if end_epoch(run_dir, info, &model, &optim, &mut state, &mut history, row)? {
            break;
        }
    }
    Ok(TrainOutcome { state, history })
}

/// The `metrics.csv` row of an epoch that trained on `seen` images in
/// `train_seconds` and was validated with `val` (its columns NaN without one).
#[allow(clippy::too_many_arguments)]
fn epoch_row(
    epoch: usize,
    lr: f64,
    train_loss: f64,
    train_accuracy: f64,
    val: Option<&Predictions>,
    seen: usize,
    train_seconds: f64,
    stage: &str,
    k: usize,
) -> EpochMetrics {
    let (val_loss, val_accuracy, val_balanced_accuracy, val_auc) = match val {
        Some(val) => {
            let predicted = val.predicted();
            let confusion = metrics::Confusion::new(&val.labels, &predicted, k);
            let positives: Vec<bool> = val.labels.iter().map(|&l| l == 1).collect();
            (
                val.loss(),
                confusion.correct() as f64 / confusion.total().max(1) as f64,
                confusion.balanced_accuracy(),
                metrics::roc_auc(&val.scores(1), &positives).unwrap_or(f64::NAN),
            )
        }
        None => (f64::NAN, f64::NAN, f64::NAN, f64::NAN),
    };
    EpochMetrics {
        epoch,
        lr,
        train_loss,
        train_accuracy,
        val_loss,
        val_accuracy,
        val_balanced_accuracy,
        val_auc,
        train_images: seen,
        seconds: train_seconds,
        images_per_second: seen as f64 / train_seconds.max(1e-9),
        stage: stage.to_string(),
    }
}

/// Logs and checkpoints a finished epoch (model, optimizer, kept model,
/// `metrics.csv`, plots, `state.json`); true when training should stop early.
fn end_epoch(
    run_dir: &Path,
    info: &RunInfo,
    model: &Model,
    optim: &ModuleOptimizer,
    state: &mut TrainState,
    history: &mut Vec<EpochMetrics>,
    row: EpochMetrics,
) -> TrainResult<bool> {
    let cfg = &info.config;
    let epoch = row.epoch;
    tracing::info!(
        "epoch {epoch} ({}): train loss {:.4} acc {:.3} | val loss {:.4} acc {:.3} auc {:.3} | {:.1} img/s",
        row.stage,
        row.train_loss,
        row.train_accuracy,
        row.val_loss,
        row.val_accuracy,
        row.val_auc,
        row.images_per_second
    );
    if info.val_records > 0 && !row.val_loss.is_finite() {
        return Err(TrainError::NonFiniteLoss {
            epoch,
            batch: 0,
            value: row.val_loss as f32,
            lr: row.lr,
        });
    }
    // Pending until `state.json` commits the epoch (see `checkpoint`).
    let pending = |name| checkpoint::pending_path(run_dir, epoch, name);
    save_model(model, &pending(LAST_MODEL))?;
    save_optimizer(optim, &pending(LAST_OPTIM))?;
    state.epochs_done = epoch;
    let improved = row.val_loss.is_finite() && state.best_val_loss.is_none_or(|b| row.val_loss < b);
    if improved {
        state.best_val_loss = Some(row.val_loss);
        state.epochs_without_improvement = 0;
    } else {
        state.epochs_without_improvement += 1;
    }
    if improved || cfg.keep == Keep::Last {
        state.best_epoch = epoch;
        save_model(model, &pending(BEST_MODEL))?;
    }
    history.push(row);
    write_metrics(&run_dir.join(METRICS_CSV), history)?;
    super::report::write_training_plots(run_dir, history)?;
    if cfg
        .early_stopping
        .is_some_and(|p| state.epochs_without_improvement >= p)
    {
        state.stopped_early = true;
    }
    write_json(&run_dir.join(STATE_JSON), state)?;
    checkpoint::promote(run_dir, epoch)?;
    if state.stopped_early {
        tracing::info!(
            "early stop after epoch {epoch}: no better val loss for {} epochs",
            state.epochs_without_improvement
        );
    }
    Ok(state.stopped_early)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_and_loss() {
        let p = softmax_rows(&[0.0, 0.0, 10.0, -10.0], 2);
        assert!((p[0][0] - 0.5).abs() < 1e-12);
        assert!(p[1][0] > 0.999);
        let preds = Predictions {
            rows: vec![0, 1],
            labels: vec![0, 0],
            probabilities: p,
        };
        assert!((preds.loss() - (2f64.ln() + 2e-9) / 2.0).abs() < 1e-6);
        assert_eq!(preds.predicted(), vec![0, 0]);
    }
}
