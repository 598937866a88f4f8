//! Each epoch's checkpoint files, written off the training thread.
//!
//! An epoch's files cost little CPU but wait on the disk: each is synced
//! before it is renamed into place ([`crate::atomic`]), and an
//! EfficientNet-Lite0 fine-tuning epoch writes 54 MB (the model, Adam's
//! moments, the kept model). On the official GlaS job that wait was about
//! 1.1 s of a 34 s `train`, with both cores idle (`docs/BENCHMARKS.md`). So
//! the trainer serialises the epoch (milliseconds), hands the bytes to one
//! background thread and trains on; the thread writes them in the order
//! [`super::checkpoint`]'s protocol needs (pending files, `state.json`, then
//! the renames).
//!
//! One epoch at a time, in order: an epoch is handed over only after the
//! previous one committed, and [`EpochWriter::finish`] returns only after the
//! last one did. A failed write is reported at the next hand-over or at that
//! final wait, naming the file, and training stops there.

use std::{path::PathBuf, sync::Mutex, thread::JoinHandle};

use burn::tensor::Bytes;

use super::{
    checkpoint,
    error::TrainResult,
    report,
    run::{BEST_MODEL, EpochMetrics, LAST_MODEL, LAST_OPTIM, TrainState, checkpoint_err},
};

/// Everything one epoch writes, serialised.
pub(super) struct EpochFiles {
    pub run_dir: PathBuf,
    pub epoch: usize,
    /// `last.bpk`, and `best.bpk` too when `kept`.
    pub model: Bytes,
    /// `last-optim.bpk`.
    pub optimizer: Bytes,
    pub kept: bool,
    /// Every epoch's `metrics.csv` row so far, this one's last.
    pub history: Vec<EpochMetrics>,
    pub state: TrainState,
}

impl EpochFiles {
    /// Writes the files under their pending names, commits the epoch with
    /// `state.json`, then renames them into place.
    fn write(self) -> TrainResult<()> {
        let pending = |name| checkpoint::pending_path(&self.run_dir, self.epoch, name);
        crate::atomic::write(&pending(LAST_MODEL), &self.model)?;
        crate::atomic::write(&pending(LAST_OPTIM), &self.optimizer)?;
        if self.kept {
            crate::atomic::write(&pending(BEST_MODEL), &self.model)?;
        }
        EpochMetrics::save_all(&self.run_dir, &self.history)?;
        report::write_training_plots(&self.run_dir, &self.history)?;
        self.state.save(&self.run_dir)?;
        checkpoint::promote(&self.run_dir, self.epoch)?;
        Ok(())
    }
}

/// The background writer of one run's epochs.
#[derive(Default)]
pub(super) struct EpochWriter {
    writing: Mutex<Option<Writing>>,
}

/// The epoch being written: its run folder and its thread.
struct Writing {
    run_dir: PathBuf,
    thread: JoinHandle<TrainResult<()>>,
}

impl EpochWriter {
    /// Waits for the previous epoch to commit (its error, if it failed),
    /// then starts writing `files`.
    pub fn submit(&self, files: EpochFiles) -> TrainResult<()> {
        let mut writing = self.lock();
        if let Some(previous) = writing.take() {
            join(previous)?;
        }
        let run_dir = files.run_dir.clone();
        let thread = std::thread::Builder::new()
            .name("histoshard-checkpoint".into())
            .spawn(move || files.write())
            .map_err(|e| checkpoint_err(&run_dir, format!("cannot start its writer: {e}")))?;
        *writing = Some(Writing { run_dir, thread });
        Ok(())
    }

    /// Waits until every epoch handed over has committed.
    pub fn finish(&self) -> TrainResult<()> {
        match self.lock().take() {
            Some(last) => join(last),
            None => Ok(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Writing>> {
        // A panic elsewhere while holding the lock leaves the handle usable.
        self.writing.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for EpochWriter {
    /// Training stopped on an error: the epoch being written still commits
    /// (or fails) before the run's folder is left, so `--resume` finds it.
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::warn!("{e}");
        }
    }
}

/// The epoch's outcome; a panic of its thread as an error naming the run.
fn join(writing: Writing) -> TrainResult<()> {
    writing.thread.join().unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(checkpoint_err(
            &writing.run_dir,
            format!("its writer stopped: {message}"),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::run::{STATE_JSON, TrainState};

    fn files(run_dir: &std::path::Path, epoch: usize, kept: bool) -> EpochFiles {
        let row = EpochMetrics {
            epoch,
            lr: 1e-3,
            train_loss: 1.0 / epoch as f64,
            train_accuracy: 0.5,
            val_loss: f64::NAN,
            val_accuracy: f64::NAN,
            val_balanced_accuracy: f64::NAN,
            val_auc: f64::NAN,
            train_images: 8,
            seconds: 1.0,
            images_per_second: 8.0,
            stage: "scratch".into(),
        };
        EpochFiles {
            run_dir: run_dir.to_path_buf(),
            epoch,
            model: Bytes::from_bytes_vec(format!("model {epoch}").into_bytes()),
            optimizer: Bytes::from_bytes_vec(format!("optim {epoch}").into_bytes()),
            kept,
            history: (1..=epoch)
                .map(|e| EpochMetrics {
                    epoch: e,
                    ..row.clone()
                })
                .collect(),
            state: TrainState {
                epochs_done: epoch,
                best_epoch: 1,
                ..TrainState::default()
            },
        }
    }

    #[test]
    fn epochs_commit_in_order_and_finish_waits_for_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let writer = EpochWriter::default();
        writer.submit(files(d, 1, true)).unwrap();
        writer.submit(files(d, 2, false)).unwrap();
        writer.finish().unwrap();
        let read = |name: &str| std::fs::read_to_string(d.join(name)).unwrap();
        assert_eq!(read(LAST_MODEL), "model 2");
        assert_eq!(read(LAST_OPTIM), "optim 2");
        // Epoch 2 was not kept: best.bpk is still epoch 1's.
        assert_eq!(read(BEST_MODEL), "model 1");
        assert_eq!(TrainState::load_if_any(d).unwrap().unwrap().epochs_done, 2);
        assert_eq!(EpochMetrics::load_all(d).unwrap().len(), 2);
        // Nothing pending is left behind.
        let hidden: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(hidden.is_empty(), "{hidden:?}");
    }

    #[test]
    fn a_failed_write_is_reported_by_name_and_nothing_commits() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A non-empty folder where epoch 1's model should go.
        let blocked = checkpoint::pending_path(d, 1, LAST_MODEL);
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("inside"), b"x").unwrap();
        let writer = EpochWriter::default();
        writer.submit(files(d, 1, true)).unwrap();
        // The next hand-over reports it, before epoch 2 writes anything.
        let err = writer.submit(files(d, 2, true)).unwrap_err().to_string();
        assert!(err.contains(".epoch-1.last.bpk"), "{err}");
        assert!(!d.join(STATE_JSON).exists());
        assert!(!d.join(LAST_MODEL).exists());
        writer.finish().unwrap();
    }
}
