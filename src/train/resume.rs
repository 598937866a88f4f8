//! `train --resume`: a run continues after its last committed epoch.

use std::path::Path;

use super::{
    checkpoint,
    data::Dataset,
    epoch_writer::EpochWriter,
    error::TrainResult,
    learner::{RunOptions, TrainOutcome, begin, fit},
    provenance::{self, DataIdentity},
    run::{
        EpochMetrics, LAST_MODEL, LAST_OPTIM, RUN_JSON, RunInfo, TrainState, checkpoint_err,
        load_model,
    },
    session::{Session, Start},
};
use crate::{error::Error, progress::Progress};

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
    let state = TrainState::load_if_any(run_dir)?;
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
    let start = match state {
        Some(state) if !start_over => {
            let mut history = EpochMetrics::load_all(run_dir)?;
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
                prefix: None,
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
