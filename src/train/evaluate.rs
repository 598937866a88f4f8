//! Evaluating a trained run on a held-out split: patch level, and image level
//! (a source image's patches pooled by mean probability and by majority
//! vote), each subset (GlaS testA / testB) apart and together, every metric
//! with its 95% interval and n.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{
    data::{Dataset, LoaderConfig, Selection},
    device::DeviceChoice,
    error::TrainResult,
    infer::{self, Predictions},
    metrics::{self, Report, ReportOptions, argmax},
    plot,
    provenance::{self, DataIdentity},
    report,
    run::{RunInfo, load_run_model},
};
use crate::{error::Error, progress::Progress};

pub const EVAL_JSON: &str = "eval.json";

/// What to evaluate.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub split: String,
    pub subset: Option<String>,
    /// `best.bpk` unless told otherwise.
    pub checkpoint: Option<PathBuf>,
    pub batch_size: usize,
    pub workers: usize,
    pub bootstrap: usize,
    pub seed: u64,
    /// Where to run the model; the training run's device by default.
    pub device: Option<DeviceChoice>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            split: "test".into(),
            subset: None,
            checkpoint: None,
            batch_size: 32,
            workers: super::data::default_workers(),
            bootstrap: 1000,
            seed: 0,
            device: None,
        }
    }
}

/// The three views of one group of records.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupReport {
    /// `all`, or a subset's name.
    pub group: String,
    pub patches: usize,
    pub images: usize,
    pub patch: Report,
    /// Image label vs the argmax of its patches' mean probabilities.
    pub image_mean: Report,
    /// Image label vs its patches' majority vote (ties to the mean).
    pub image_vote: Report,
}

/// `eval.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    pub run: PathBuf,
    pub data: PathBuf,
    pub checkpoint: PathBuf,
    pub split: String,
    pub subset: Option<String>,
    pub groups: Vec<GroupReport>,
}

/// Evaluates `run` on `data_dir` and writes `eval.json` into the run folder
/// (`eval-{split}[-{subset}].json` when not the whole test split).
pub fn evaluate(
    run: &Path,
    data_dir: &Path,
    opts: &EvalOptions,
    progress: &Progress,
) -> TrainResult<EvalReport> {
    let info = RunInfo::load(run)?;
    let spec = &info.config.model;
    let device = opts
        .device
        .as_ref()
        .unwrap_or(&info.config.device)
        .device()?;
    let (model, checkpoint) = load_run_model(run, &info, opts.checkpoint.as_deref(), &device)?;

    if let Some(then) = &info.data_identity {
        let differences = then.eval_differences(&DataIdentity::read(data_dir)?);
        if !differences.is_empty() {
            return Err(provenance::mismatch(
                data_dir,
                &format!(
                    "cannot be evaluated with {} (the model needs its classes in their order, its patch size and scale)",
                    run.display()
                ),
                &differences,
            )
            .into());
        }
    }
    let selection = Selection::split(&opts.split).with_subset(opts.subset.clone());
    let data = Dataset::open(data_dir, &selection)?;
    if data.num_classes() != spec.num_classes() {
        return Err(Error::Config(format!(
            "the run's model has {} classes, {} has {}",
            spec.num_classes(),
            data_dir.display(),
            data.num_classes()
        ))
        .into());
    }
    let loader = LoaderConfig {
        workers: opts.workers,
        ..LoaderConfig::eval(opts.batch_size, spec.input_size(), spec.normalization())
    };
    let preds = infer::predict(&model, &data, &loader, &device, progress, "evaluate")?;

    let ropts = ReportOptions {
        positive: 1,
        bootstrap: opts.bootstrap,
        seed: opts.seed,
    };
    let k = data.num_classes();
    let mut subsets: Vec<String> = data.rows().iter().map(|r| r.subset.clone()).collect();
    subsets.sort();
    subsets.dedup();
    let mut groups = vec![group_report("all", &data, &preds, |_| true, k, &ropts)];
    if subsets.len() > 1 {
        for s in &subsets {
            groups.push(group_report(
                s,
                &data,
                &preds,
                |row| &data.rows()[row].subset == s,
                k,
                &ropts,
            ));
        }
    }
    let report = EvalReport {
        run: run.to_path_buf(),
        data: data_dir.to_path_buf(),
        checkpoint,
        split: opts.split.clone(),
        subset: opts.subset.clone(),
        groups,
    };
    let stem = match (&opts.subset, opts.split.as_str()) {
        (None, "test") => "eval".to_string(),
        (None, split) => format!("eval-{split}"),
        (Some(s), split) => format!("eval-{split}-{s}"),
    };
    let path = run.join(format!("{stem}.json"));
    let text =
        serde_json::to_string_pretty(&report).map_err(|e| Error::output(&path, e.to_string()))?;
    crate::atomic::write(&path, text.as_bytes())?;

    // Plots and report.md.
    let mut classes: Vec<String> = (0..k).map(|c| c.to_string()).collect();
    for r in data.rows() {
        if let Some(c) = classes.get_mut(r.label as usize) {
            c.clone_from(&r.label_text);
        }
    }
    let rocs: Vec<(String, Vec<(f64, f64)>)> = report
        .groups
        .iter()
        .map(|g| {
            let idx = (0..preds.rows.len())
                .filter(|&i| g.group == "all" || data.rows()[preds.rows[i]].subset == g.group);
            let (scores, positives): (Vec<f64>, Vec<bool>) = idx
                .map(|i| {
                    (
                        preds.probabilities[i].get(1).copied().unwrap_or(0.0),
                        preds.labels[i] == 1,
                    )
                })
                .unzip();
            (g.group.clone(), report::roc_points(&scores, &positives))
        })
        .collect();
    write_eval_report(run, &report, &rocs, &classes, &stem)?;
    Ok(report)
}

fn group_report(
    name: &str,
    data: &Dataset,
    preds: &Predictions,
    keep: impl Fn(usize) -> bool,
    k: usize,
    ropts: &ReportOptions,
) -> GroupReport {
    let scored: Vec<ScoredPatch> = (0..preds.rows.len())
        .filter(|&i| keep(preds.rows[i]))
        .map(|i| ScoredPatch {
            image: &data.rows()[preds.rows[i]].source_image,
            label: preds.labels[i],
            probabilities: &preds.probabilities[i],
        })
        .collect();
    scored_report(name, &scored, k, ropts)
}

/// One patch's prediction, with the source image it was cut from.
#[derive(Clone, Copy, Debug)]
pub struct ScoredPatch<'a> {
    pub image: &'a str,
    pub label: usize,
    pub probabilities: &'a [f64],
}

/// Patch-level and image-level (mean probability, majority vote) reports of
/// `scored`, which may pool the predictions of several runs (the folds of a
/// cross-validation).
pub fn scored_report(
    name: &str,
    scored: &[ScoredPatch],
    k: usize,
    ropts: &ReportOptions,
) -> GroupReport {
    let labels: Vec<usize> = scored.iter().map(|p| p.label).collect();
    let probs: Vec<&[f64]> = scored.iter().map(|p| p.probabilities).collect();
    let predicted: Vec<usize> = probs.iter().map(|p| argmax(p)).collect();
    let scores: Vec<f64> = probs
        .iter()
        .map(|p| p.get(ropts.positive).copied().unwrap_or(0.0))
        .collect();
    let patch = metrics::report(&labels, &predicted, &scores, k, ropts);

    // Pool by source image (BTreeMap: a stable order for the bootstrap).
    let mut images: BTreeMap<&str, (usize, Vec<f64>, Vec<u64>)> = BTreeMap::new();
    for (j, patch) in scored.iter().enumerate() {
        let e = images
            .entry(patch.image)
            .or_insert_with(|| (labels[j], vec![0.0; k], vec![0; k]));
        for (c, p) in probs[j].iter().enumerate().take(k) {
            e.1[c] += p;
        }
        e.2[predicted[j]] += 1;
    }
    let n_images = images.len();
    let (mut il, mut mean_pred, mut mean_score, mut vote_pred, mut vote_score) =
        (vec![], vec![], vec![], vec![], vec![]);
    for (label, sum, votes) in images.into_values() {
        let total: u64 = votes.iter().sum();
        let mean: Vec<f64> = sum.iter().map(|s| s / total.max(1) as f64).collect();
        let m = argmax(&mean);
        let top = votes.iter().copied().max().unwrap_or(0);
        let tied: Vec<usize> = (0..k).filter(|&c| votes[c] == top).collect();
        let v = if tied.len() == 1 {
            tied[0]
        } else {
            // Ties go to the tied class with the highest mean probability.
            *tied
                .iter()
                .max_by(|&&a, &&b| mean[a].total_cmp(&mean[b]))
                .unwrap_or(&m)
        };
        il.push(label);
        mean_score.push(mean.get(ropts.positive).copied().unwrap_or(0.0));
        mean_pred.push(m);
        vote_score
            .push(votes.get(ropts.positive).copied().unwrap_or(0) as f64 / total.max(1) as f64);
        vote_pred.push(v);
    }
    GroupReport {
        group: name.to_string(),
        patches: scored.len(),
        images: n_images,
        patch,
        image_mean: metrics::report(&il, &mean_pred, &mean_score, k, ropts),
        image_vote: metrics::report(&il, &vote_pred, &vote_score, k, ropts),
    }
}

/// The printed table: one block per group, one column per level.
pub fn table(report: &EvalReport) -> String {
    let mut out = String::new();
    for g in &report.groups {
        out.push_str(&format!(
            "{} / {} ({} patches, {} images)\n",
            report.split, g.group, g.patches, g.images
        ));
        out.push_str(&format!(
            "  {:<18} {:<32} {:<32} {:<32}\n",
            "metric", "patch", "image (mean prob)", "image (majority)"
        ));
        for (name, get) in metrics::METRICS {
            out.push_str(&format!(
                "  {:<18} {:<32} {:<32} {:<32}\n",
                name,
                get(&g.patch).to_string(),
                get(&g.image_mean).to_string(),
                get(&g.image_vote).to_string()
            ));
        }
        out.push_str(&format!(
            "  {:<18} {:<32} {:<32} {:<32}\n",
            "confusion (t×p)",
            format!("{:?}", g.patch.confusion.matrix),
            format!("{:?}", g.image_mean.confusion.matrix),
            format!("{:?}", g.image_vote.confusion.matrix)
        ));
    }
    out
}
/// `report.md` beside `eval.json`, with a confusion-matrix plot per group and
/// a ROC plot of the patch level.
fn write_eval_report(
    run: &Path,
    report: &EvalReport,
    rocs: &[(String, Vec<(f64, f64)>)],
    classes: &[String],
    stem: &str,
) -> crate::error::Result<()> {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Evaluation of `{}`\n\ndata `{}`, split `{}`, checkpoint `{}`\n\n\
         Intervals are 95%: Wilson for proportions, seeded percentile bootstrap for balanced \
         accuracy, F1 and ROC AUC. Image level pools the patches of each source image.\n",
        report.run.display(),
        report.data.display(),
        report.split,
        report.checkpoint.display()
    );
    if !rocs.is_empty() {
        let series: Vec<(&str, Vec<(f64, f64)>)> =
            rocs.iter().map(|(n, p)| (n.as_str(), p.clone())).collect();
        let svg = plot::line_chart("ROC (patch level)", "false positive rate", &series);
        let name = format!("{stem}-roc.svg");
        report::write_svg(&run.join(&name), svg)?;
        let _ = writeln!(md, "![ROC]({name})\n");
    }
    for g in &report.groups {
        group_markdown(&mut md, g);
        let svg = plot::confusion_chart(
            &format!("{} / {}: patches", report.split, g.group),
            &g.patch.confusion.matrix,
            classes,
        );
        let name = format!("{stem}-confusion-{}.svg", g.group);
        report::write_svg(&run.join(&name), svg)?;
        let _ = writeln!(md, "![confusion matrix]({name})\n");
    }
    crate::atomic::write(&run.join(format!("{stem}-report.md")), md.as_bytes())
}

fn group_markdown(md: &mut String, g: &GroupReport) {
    let _ = writeln!(
        md,
        "## {} ({} patches, {} images)\n\n| metric | patch | image (mean prob) | image (majority) |\n|---|---|---|---|",
        g.group, g.patches, g.images
    );
    for (name, get) in metrics::METRICS {
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} |",
            get(&g.patch),
            get(&g.image_mean),
            get(&g.image_vote)
        );
    }
    let _ = writeln!(
        md,
        "| confusion (rows true, columns predicted) | {:?} | {:?} | {:?} |\n",
        g.patch.confusion.matrix, g.image_mean.confusion.matrix, g.image_vote.confusion.matrix
    );
}
