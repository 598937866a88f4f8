//! Patient-grouped K-fold cross-validation over the development data (`train`
//! and `val`, which `prepare --folds K` divides into folds by patient): fold
//! k trains on the other folds and is scored on fold k, and `cv.json` reports
//! what the official test reports — patch level and image level (mean
//! probability and majority vote) — for every fold and pooled over the
//! folds, each with its 95% interval. `test` is never read.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{
    data::{Dataset, Selection},
    error::TrainResult,
    evaluate::{GroupReport, ScoredPatch, scored_report},
    infer::{self, Predictions},
    learner::{self, RunOptions, TrainConfig},
    metrics::ReportOptions,
    run::{BEST_MODEL, EpochMetrics, load_model},
};
use crate::{error::Error, progress::Progress};

pub const CV_JSON: &str = "cv.json";

/// One fold's outcome in `cv.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CvFold {
    pub fold: i32,
    pub run: PathBuf,
    /// The `metrics.csv` row of the epoch the run kept.
    pub kept: EpochMetrics,
    /// The kept model on the held-out fold.
    pub scores: GroupReport,
}

/// Mean and sample standard deviation over folds.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct MeanSd {
    pub mean: f64,
    pub sd: f64,
}

impl MeanSd {
    pub fn of(values: &[f64]) -> Self {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = if values.len() > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        Self {
            mean,
            sd: var.sqrt(),
        }
    }
}

/// `cv.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CvReport {
    pub folds: Vec<CvFold>,
    /// Every held-out prediction of every fold, scored together (each
    /// image is held out exactly once).
    pub pooled: GroupReport,
    /// Over folds: patch-level loss, accuracy and AUC, and image-level
    /// (mean probability) accuracy and AUC.
    pub val_loss: MeanSd,
    pub val_accuracy: MeanSd,
    pub val_auc: MeanSd,
    pub image_accuracy: MeanSd,
    pub image_auc: MeanSd,
}

/// Runs the K folds of `cfg` on `data_dir` into `run_dir/fold-k` and writes
/// `run_dir/cv.json`.
pub fn cross_validate(
    data_dir: &Path,
    run_dir: &Path,
    cfg: &TrainConfig,
    k: u32,
    opts: &RunOptions,
    progress: &Progress,
) -> TrainResult<CvReport> {
    if k < 2 {
        return Err(Error::Config("cross-validation needs at least 2 folds".into()).into());
    }
    cfg.validate()?;
    let mut folds = Vec::new();
    let mut held_out: Vec<(Dataset, Predictions)> = Vec::new();
    for fold in 0..k as i32 {
        let mut c = cfg.clone();
        (c.train, c.val) = Selection::cv_fold(fold);
        let run = run_dir.join(format!("fold-{fold}"));
        tracing::info!("cross-validation fold {fold} of {k}");
        let outcome = learner::train(data_dir, &run, &c, opts, progress)?;
        let kept = outcome
            .history
            .iter()
            .find(|m| m.epoch == outcome.state.best_epoch)
            .or(outcome.history.last())
            .cloned()
            .ok_or_else(|| Error::Config(format!("fold {fold} trained no epoch")))?;
        let (data, preds) = held_out_predictions(data_dir, &run, &c, progress)?;
        let scores = report_of(&format!("fold {fold}"), &[(&data, &preds)]);
        folds.push(CvFold {
            fold,
            run,
            kept,
            scores,
        });
        held_out.push((data, preds));
    }
    let pairs: Vec<(&Dataset, &Predictions)> = held_out.iter().map(|(d, p)| (d, p)).collect();
    let col = |f: fn(&CvFold) -> f64| MeanSd::of(&folds.iter().map(f).collect::<Vec<_>>());
    let report = CvReport {
        pooled: report_of("pooled", &pairs),
        val_loss: col(|f| f.kept.val_loss),
        val_accuracy: col(|f| f.scores.patch.accuracy.value),
        val_auc: col(|f| f.scores.patch.roc_auc.value),
        image_accuracy: col(|f| f.scores.image_mean.accuracy.value),
        image_auc: col(|f| f.scores.image_mean.roc_auc.value),
        folds,
    };
    let path = run_dir.join(CV_JSON);
    let text =
        serde_json::to_string_pretty(&report).map_err(|e| Error::output(&path, e.to_string()))?;
    crate::atomic::write(&path, text.as_bytes())?;
    Ok(report)
}

/// The kept model of the fold's run on its held-out records.
fn held_out_predictions(
    data_dir: &Path,
    run: &Path,
    cfg: &TrainConfig,
    progress: &Progress,
) -> TrainResult<(Dataset, Predictions)> {
    let device = cfg.device.device()?;
    let model = load_model(cfg.model.init(&device), &run.join(BEST_MODEL))?;
    let data = Dataset::open(data_dir, &cfg.val)?;
    let loader = cfg.eval_loader();
    let preds = infer::predict(&model, &data, &loader, &device, progress, "held-out")?;
    Ok((data, preds))
}

/// Patch- and image-level report of the predictions of one or more folds.
fn report_of(name: &str, folds: &[(&Dataset, &Predictions)]) -> GroupReport {
    let k = folds
        .iter()
        .map(|(d, _)| d.num_classes())
        .max()
        .unwrap_or(2);
    let scored: Vec<ScoredPatch> = folds
        .iter()
        .flat_map(|(data, preds)| {
            preds.rows.iter().enumerate().map(|(i, &row)| ScoredPatch {
                image: &data.rows()[row].source_image,
                label: preds.labels[i],
                probabilities: &preds.probabilities[i],
            })
        })
        .collect();
    scored_report(name, &scored, k, &ReportOptions::default())
}

/// The lines `train --cv` prints.
pub fn summary(report: &CvReport) -> String {
    let ms = |m: &MeanSd| format!("{:.3} ± {:.3}", m.mean, m.sd);
    let mut out = format!(
        "{}-fold CV (mean ± sd over folds): patch accuracy {}, AUC {}; image accuracy {}, AUC {}\n",
        report.folds.len(),
        ms(&report.val_accuracy),
        ms(&report.val_auc),
        ms(&report.image_accuracy),
        ms(&report.image_auc),
    );
    let p = &report.pooled;
    out.push_str(&format!(
        "pooled over folds: {} images, accuracy {} (mean probability), {} (majority vote), AUC {}; {} patches, accuracy {}\n",
        p.images,
        p.image_mean.accuracy,
        p.image_vote.accuracy,
        p.image_mean.roc_auc,
        p.patches,
        p.patch.accuracy,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_sd() {
        let m = MeanSd::of(&[1.0, 2.0, 3.0]);
        assert!((m.mean - 2.0).abs() < 1e-12);
        assert!((m.sd - 1.0).abs() < 1e-12);
        assert_eq!(MeanSd::of(&[4.0]).sd, 0.0);
    }
}
