//! The training loop: a plain loop over burn's autodiff and optimizer rather
//! than burn-train's `Learner`, so that every random choice is ours (seeded)
//! and every file it writes is ours (atomic; the files are [`super::run`]'s).
//! Only `train` and `val` are read; `test` is never opened here. A fresh
//! run starts here ([`train`]); pretrained models first go through
//! [`super::head_stage`]; [`super::resume`] continues a run with [`fit`].

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use burn::{
    nn::loss::CrossEntropyLossConfig,
    optim::GradientsParams,
    tensor::{Device, Int, Tensor, TensorData},
};

use super::{
    data::{Batch, Dataset, LoaderConfig},
    epoch_writer::EpochWriter,
    error::{TrainError, TrainResult},
    head_stage::head_stage,
    infer::{images_tensor, predict, to_vec},
    metrics::argmax,
    predict::Preprocessing,
    provenance::DataIdentity,
    run::{EpochMetrics, RUN_JSON, RunInfo, TrainState},
    session::{Session, Start, end_epoch, epoch_row},
    transfer,
};
use crate::{
    error::{Error, IoContext},
    progress::Progress,
};

pub use super::{
    config::{Balance, Keep, OptimizerKind, Schedule, TrainConfig},
    device::{DeviceChoice, set_compute_threads},
};

/// What [`train`] returns.
#[derive(Clone, Debug)]
pub struct TrainOutcome {
    pub state: TrainState,
    pub history: Vec<EpochMetrics>,
}

fn labels_tensor(batch: &Batch, device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(batch.labels.clone(), [batch.len()]), device)
}

/// Per-invocation knobs that are not part of the run's configuration.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Train at most this many epochs in this invocation, then stop cleanly
    /// (for time-limited jobs; continue with [`super::resume::resume`]).
    pub stop_after: Option<usize>,
    /// Read the data from here instead of the folder in `run.json` (resume only).
    pub data: Option<PathBuf>,
    /// Bytes the prefix cache may keep in memory before it spills to the run
    /// folder (default: [`super::prefix_cache::default_memory`]).
    pub cache_memory: Option<usize>,
}

impl RunOptions {
    /// What is left for [`fit`] after `done` epochs of this invocation.
    pub(super) fn after(&self, done: usize) -> Self {
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
    info.save(run_dir)?;
    // What `predict` and `export` need to tile new images like the training data.
    match Preprocessing::from_run(&info) {
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
    let checkpoints = EpochWriter::default();
    let session = Session::new(
        run_dir,
        &info,
        &train_data,
        &val_data,
        &base,
        progress,
        &checkpoints,
    );
    let start = begin(&session, opts)?;
    let opts = opts.after(start.state.epochs_done);
    fit(&session, start, &opts)
}

/// A fresh model (pretrained weights loaded), and for pretrained models
/// the whole frozen-feature stage.
pub(super) fn begin(session: &Session, opts: &RunOptions) -> TrainResult<Start> {
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
        prefix: None,
    };
    match &cfg.transfer {
        Some(t) if t.freeze_epochs > 0 => {
            let epochs = opts
                .stop_after
                .map_or(t.freeze_epochs, |n| n.min(t.freeze_epochs));
            head_stage(session, start, epochs, opts.cache_memory)
        }
        _ => Ok(start),
    }
}

pub(super) fn fit(session: &Session, start: Start, opts: &RunOptions) -> TrainResult<TrainOutcome> {
    let (info, base) = (session.info, session.base);
    let (train_data, val_data) = (session.train_data, session.val_data);
    let progress = session.progress;
    let cfg = &info.config;
    let k = info.num_classes;
    let device = base.clone().autodiff();
    let Start {
        mut model,
        mut optim,
        mut state,
        mut history,
        prefix,
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

    // Fine-tuning only a frozen-statistics tail: the prefix below it runs
    // once (a fresh run already built it for the frozen-feature stage).
    let cached = session.prefix_caches(prefix, &model, opts.cache_memory)?;
    if let Some(caches) = &cached {
        tracing::info!(
            "fine-tuning the last {} blocks from cached activations",
            caches.tail
        );
    }
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
                Some(caches) => caches.train.logits(&model, &batch.rows, &device)?,
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

            correct += to_vec(logits)?
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

        let val = match (cached.as_ref().and_then(|c| c.val.as_ref()), val_data) {
            (Some(c), _) => Some(c.predictions(&model, cfg.batch_size, base)?),
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
        if end_epoch(session, &model, &optim, &mut state, &mut history, row)? {
            break;
        }
    }
    session.checkpoints.finish()?;
    Ok(TrainOutcome { state, history })
}
