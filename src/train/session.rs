//! One run as its stages see it: [`Session`] (its folder, configuration,
//! data and device), [`Start`] (the model, optimizer and history a stage
//! continues from), and how every epoch ends: its `metrics.csv` row
//! ([`epoch_row`]) and its checkpoint ([`end_epoch`]).

use std::path::Path;

use burn::{optim::ModuleOptimizer, tensor::Device};

use super::{
    config::Keep,
    data::Dataset,
    epoch_writer::{EpochFiles, EpochWriter},
    error::{TrainError, TrainResult},
    infer::Predictions,
    metrics,
    models::Model,
    prefix_cache::{self, PrefixCaches, Spill},
    run::{
        EpochMetrics, LAST_MODEL, LAST_OPTIM, RunInfo, TrainState, model_bytes, optimizer_bytes,
    },
};
use crate::progress::Progress;

/// What every stage of one run reads: its folder, configuration, data, device.
#[derive(Clone, Copy)]
pub(super) struct Session<'a> {
    pub(super) run_dir: &'a Path,
    pub(super) info: &'a RunInfo,
    pub(super) train_data: &'a Dataset,
    /// `None` without a validation split: every epoch is kept.
    pub(super) val_data: Option<&'a Dataset>,
    pub(super) base: &'a Device,
    pub(super) progress: &'a Progress,
    /// Writes each epoch's checkpoint while the next one trains.
    pub(super) checkpoints: &'a EpochWriter,
}

impl Session<'_> {
    /// `reuse` when an earlier stage of the run built the caches; else, when
    /// fine-tuning `model` runs from cached activations
    /// ([`prefix_cache::tail_blocks`]), the caches of this session's data,
    /// spilling beyond `cache_memory` bytes ([`Spill::in_run`]); else `None`.
    pub(super) fn prefix_caches(
        &self,
        reuse: Option<PrefixCaches>,
        model: &Model,
        cache_memory: Option<usize>,
    ) -> TrainResult<Option<PrefixCaches>> {
        if reuse.is_some() {
            return Ok(reuse);
        }
        let cfg = &self.info.config;
        let Some(tail) = prefix_cache::tail_blocks(cfg, model) else {
            return Ok(None);
        };
        PrefixCaches::build(
            model,
            tail,
            self.train_data,
            self.val_data,
            &cfg.eval_loader(),
            self.base,
            &Spill::in_run(self.run_dir, cache_memory),
            self.progress,
        )
        .map(Some)
    }
}

impl<'a> Session<'a> {
    pub(super) fn new(
        run_dir: &'a Path,
        info: &'a RunInfo,
        train_data: &'a Dataset,
        val_data: &'a Option<Dataset>,
        base: &'a Device,
        progress: &'a Progress,
        checkpoints: &'a EpochWriter,
    ) -> Self {
        Self {
            run_dir,
            info,
            train_data,
            val_data: val_data.as_ref(),
            base,
            progress,
            checkpoints,
        }
    }
}

/// Where a stage of training starts from.
pub(super) struct Start {
    pub(super) model: Model,
    pub(super) optim: ModuleOptimizer,
    pub(super) state: TrainState,
    pub(super) history: Vec<EpochMetrics>,
    /// The prefix caches fine-tuning will use, when an earlier stage built
    /// them.
    pub(super) prefix: Option<PrefixCaches>,
}

/// The `metrics.csv` row of an epoch that trained on `seen` images in
/// `train_seconds` and was validated with `val` (its columns NaN without one).
#[allow(clippy::too_many_arguments)]
pub(super) fn epoch_row(
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

/// Logs a finished epoch and hands its checkpoint (model, optimizer, kept
/// model, `metrics.csv`, plots, `state.json`) to the session's
/// [`EpochWriter`]; true when training should stop early.
pub(super) fn end_epoch(
    session: &Session,
    model: &Model,
    optim: &ModuleOptimizer,
    state: &mut TrainState,
    history: &mut Vec<EpochMetrics>,
    row: EpochMetrics,
) -> TrainResult<bool> {
    let (run_dir, info) = (session.run_dir, session.info);
    let cfg = &info.config;
    let epoch = row.epoch;
    // Without a validation split there is nothing to print but "none".
    let val = if info.val_records > 0 {
        format!(
            "val loss {:.4} acc {:.3} auc {:.3}",
            row.val_loss, row.val_accuracy, row.val_auc
        )
    } else {
        "no val split".to_string()
    };
    tracing::info!(
        "epoch {epoch} ({}): train loss {:.4} acc {:.3} | {val} | {:.1} img/s",
        row.stage,
        row.train_loss,
        row.train_accuracy,
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
    state.epochs_done = epoch;
    let improved = row.val_loss.is_finite() && state.best_val_loss.is_none_or(|b| row.val_loss < b);
    if improved {
        state.best_val_loss = Some(row.val_loss);
        state.epochs_without_improvement = 0;
    } else {
        state.epochs_without_improvement += 1;
    }
    let kept = improved || cfg.keep == Keep::Last;
    if kept {
        state.best_epoch = epoch;
    }
    history.push(row);
    if cfg
        .early_stopping
        .is_some_and(|p| state.epochs_without_improvement >= p)
    {
        state.stopped_early = true;
    }
    session.checkpoints.submit(EpochFiles {
        run_dir: run_dir.to_path_buf(),
        epoch,
        model: model_bytes(model, &run_dir.join(LAST_MODEL))?,
        optimizer: optimizer_bytes(optim, &run_dir.join(LAST_OPTIM))?,
        kept,
        history: history.clone(),
        state: state.clone(),
    })?;
    if state.stopped_early {
        tracing::info!(
            "early stop after epoch {epoch}: no better val loss for {} epochs",
            state.epochs_without_improvement
        );
    }
    Ok(state.stopped_early)
}
