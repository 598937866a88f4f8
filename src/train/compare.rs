//! `histoshard compare`: several models, each trained with its own defaults
//! (or its own config) on the same shards, evaluated on the same test split,
//! optionally cross-validated by patient — one table and one plot that answer
//! "how much does a CNN buy over a plain network, and pretraining over both?".

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Instant,
};

use burn::module::Module;
use serde::{Deserialize, Serialize};

use super::{
    cv::{self, CvReport, MeanSd},
    error::TrainResult,
    evaluate::{self, EvalOptions, GroupReport},
    learner::{self, RunOptions, TrainConfig},
    metrics::Estimate,
    models::ModelKind,
    plot,
};
use crate::{error::Error, progress::Progress};

pub const COMPARISON_MD: &str = "comparison.md";
pub const COMPARISON_CSV: &str = "comparison.csv";
pub const COMPARISON_SVG: &str = "comparison.svg";

/// One model's line of the comparison.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelResult {
    pub model: String,
    pub run: PathBuf,
    pub parameters: usize,
    pub epochs: usize,
    pub best_epoch: usize,
    /// Wall time of training (every epoch, validation included).
    pub train_seconds: f64,
    /// Training images per second, over all epochs.
    pub train_images_per_second: f64,
    /// Test patches per second of the evaluation pass (decode included).
    pub eval_images_per_second: f64,
    /// The whole test split, every subset together.
    pub test: GroupReport,
    /// Patient-grouped cross-validation over train+val, when asked for.
    pub cv_auc: Option<MeanSd>,
    pub cv_accuracy: Option<MeanSd>,
}

/// Trains, evaluates (and cross-validates with `cv`) each of `models`
/// into `out/<model>`, then writes the comparison files into `out`.
pub fn compare(
    data: &Path,
    out: &Path,
    models: &[(ModelKind, TrainConfig)],
    cv: Option<u32>,
    eval: &EvalOptions,
    progress: &Progress,
) -> TrainResult<Vec<ModelResult>> {
    crate::atomic::check_folder(out)?;
    for (_, cfg) in models {
        cfg.validate()?;
    }
    std::fs::create_dir_all(out).map_err(|e| Error::output(out, e.to_string()))?;
    let mut results = Vec::new();
    for (kind, cfg) in models {
        let run = out.join(kind.to_string());
        tracing::info!("compare: training {kind} into {}", run.display());
        let started = Instant::now();
        let outcome = learner::train(data, &run, cfg, &RunOptions::default(), progress)?;
        let train_seconds = started.elapsed().as_secs_f64();
        let images: usize = outcome.history.iter().map(|m| m.train_images).sum();
        let started = Instant::now();
        let report = evaluate::evaluate(&run, data, eval, progress)?;
        let eval_seconds = started.elapsed().as_secs_f64();
        let test = report
            .groups
            .iter()
            .find(|g| g.group == "all")
            .or(report.groups.first())
            .cloned()
            .ok_or_else(|| Error::Config(format!("{kind}: the test split is empty")))?;
        let (cv_auc, cv_accuracy) = match cv {
            Some(k) => {
                let cv: CvReport = cv::cross_validate(
                    data,
                    &run.join("cv"),
                    cfg,
                    k,
                    &RunOptions::default(),
                    progress,
                )?;
                (Some(cv.image_auc), Some(cv.image_accuracy))
            }
            None => (None, None),
        };
        let device = cfg.device.device()?;
        results.push(ModelResult {
            model: kind.to_string(),
            parameters: cfg.model.init(&device).num_params(),
            epochs: outcome.state.epochs_done,
            best_epoch: outcome.state.best_epoch,
            train_seconds,
            train_images_per_second: images as f64 / train_seconds.max(1e-9),
            eval_images_per_second: test.patches as f64 / eval_seconds.max(1e-9),
            test,
            cv_auc,
            cv_accuracy,
            run,
        });
    }
    write_outputs(out, &results)?;
    Ok(results)
}

fn write_outputs(out: &Path, results: &[ModelResult]) -> TrainResult<()> {
    crate::atomic::write(&out.join(COMPARISON_MD), markdown(results).as_bytes())?;
    crate::atomic::write(&out.join(COMPARISON_CSV), &csv(results)?)?;
    let svg_path = out.join(COMPARISON_SVG);
    let svg = chart(results).map_err(|e| Error::output(&svg_path, e))?;
    crate::atomic::write(&svg_path, svg.as_bytes())?;
    let json =
        serde_json::to_string_pretty(results).map_err(|e| Error::output(out, e.to_string()))?;
    crate::atomic::write(&out.join("comparison.json"), json.as_bytes())?;
    Ok(())
}

fn ci(e: &Estimate) -> String {
    if e.value.is_nan() {
        return "–".into();
    }
    if e.lo.is_nan() {
        return format!("{:.3}", e.value);
    }
    format!("{:.3} [{:.3}, {:.3}]", e.value, e.lo, e.hi)
}

fn mean_sd(m: &Option<MeanSd>) -> String {
    m.map_or_else(|| "–".into(), |m| format!("{:.3} ± {:.3}", m.mean, m.sd))
}

/// The table: test metrics at image level (mean of patch probabilities) and
/// patch level, with 95% intervals, and the costs.
pub fn markdown(results: &[ModelResult]) -> String {
    let mut md = String::from(
        "# Model comparison\n\n\
         Same shards, same test split. Image level averages each source image's patch \
         probabilities; intervals are 95% (Wilson for proportions, bootstrap for F1 and AUC). \
         CV is patient-grouped over train+val (held-out folds), image level (mean probability), mean ± sd over folds: the \
         honest number when the official split shares patients between train and test.\n\n\
         ![comparison](comparison.svg)\n\n\
         | model | image accuracy | image AUC | image F1 | patch accuracy | patch AUC | patch F1 | CV image AUC | parameters | train time | train img/s | eval img/s |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        let (i, p) = (&r.test.image_mean, &r.test.patch);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} s | {:.1} | {:.1} |",
            r.model,
            ci(&i.accuracy),
            ci(&i.roc_auc),
            ci(&i.f1),
            ci(&p.accuracy),
            ci(&p.roc_auc),
            ci(&p.f1),
            mean_sd(&r.cv_auc),
            r.parameters,
            r.train_seconds,
            r.train_images_per_second,
            r.eval_images_per_second
        );
    }
    let _ = writeln!(
        md,
        "\nTest set: {} patches from {} images. Each model's run folder has its curves, \
         `eval-report.md` with every metric, and its confusion matrices.",
        results.first().map_or(0, |r| r.test.patches),
        results.first().map_or(0, |r| r.test.images)
    );
    md
}

fn csv(results: &[ModelResult]) -> TrainResult<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["model".to_string()];
    for level in ["image", "patch"] {
        for m in ["accuracy", "roc_auc", "f1", "balanced_accuracy"] {
            for part in ["", "_lo", "_hi"] {
                header.push(format!("{level}_{m}{part}"));
            }
        }
    }
    header.extend(
        [
            "cv_auc_mean",
            "cv_auc_sd",
            "parameters",
            "train_seconds",
            "train_images_per_second",
            "eval_images_per_second",
        ]
        .map(String::from),
    );
    let err = |e: csv::Error| Error::Config(format!("comparison.csv: {e}"));
    w.write_record(&header).map_err(err)?;
    for r in results {
        let mut row = vec![r.model.clone()];
        for rep in [&r.test.image_mean, &r.test.patch] {
            for e in [rep.accuracy, rep.roc_auc, rep.f1, rep.balanced_accuracy] {
                row.extend([e.value, e.lo, e.hi].map(|v| format!("{v:.6}")));
            }
        }
        row.push(r.cv_auc.map_or(String::new(), |m| format!("{:.6}", m.mean)));
        row.push(r.cv_auc.map_or(String::new(), |m| format!("{:.6}", m.sd)));
        row.push(r.parameters.to_string());
        row.push(format!("{:.3}", r.train_seconds));
        row.push(format!("{:.3}", r.train_images_per_second));
        row.push(format!("{:.3}", r.eval_images_per_second));
        w.write_record(&row).map_err(err)?;
    }
    w.into_inner()
        .map_err(|e| Error::Config(format!("comparison.csv: {e}")).into())
}

/// Image-level accuracy, AUC and F1 per model as bars with their 95% intervals.
pub fn chart(results: &[ModelResult]) -> Result<String, String> {
    type Metric = (&'static str, fn(&GroupReport) -> Estimate);
    let metrics: [Metric; 3] = [
        ("accuracy", |g| g.image_mean.accuracy),
        ("ROC AUC", |g| g.image_mean.roc_auc),
        ("F1", |g| g.image_mean.f1),
    ];
    let groups: Vec<(String, Vec<Estimate>)> = results
        .iter()
        .map(|r| {
            (
                r.model.clone(),
                metrics.iter().map(|(_, f)| f(&r.test)).collect(),
            )
        })
        .collect();
    let names: Vec<&str> = metrics.iter().map(|(n, _)| *n).collect();
    plot::bar_chart("Test, image level (95% CI)", &names, &groups)
}
