//! A run's report files: `loss.svg` and `accuracy.svg` of the training history, and
//! `report.md` of an evaluation with its ROC and confusion-matrix plots (charts drawn
//! by [`plot`](super::plot)).

use std::{fmt::Write as _, path::Path};

use super::{
    evaluate::{EvalReport, GroupReport},
    learner::EpochMetrics,
    plot::{confusion_chart, line_chart},
};
use crate::error::{Error, Result};

/// Writes `svg` (or names the failure to draw it) at `path`.
fn write_svg(path: &Path, svg: std::result::Result<String, String>) -> Result<()> {
    let svg = svg.map_err(|e| Error::output(path, e))?;
    crate::atomic::write(path, svg.as_bytes())
}

/// `loss.svg` and `accuracy.svg` of a run's history.
pub fn write_training_plots(run: &Path, history: &[EpochMetrics]) -> Result<()> {
    let s = |f: fn(&EpochMetrics) -> f64| -> Vec<(f64, f64)> {
        history.iter().map(|m| (m.epoch as f64, f(m))).collect()
    };
    let loss = line_chart(
        "loss",
        "epoch",
        &[("train", s(|m| m.train_loss)), ("val", s(|m| m.val_loss))],
    );
    write_svg(&run.join("loss.svg"), loss)?;
    let acc = line_chart(
        "accuracy",
        "epoch",
        &[
            ("train", s(|m| m.train_accuracy)),
            ("val", s(|m| m.val_accuracy)),
            ("val AUC", s(|m| m.val_auc)),
        ],
    );
    write_svg(&run.join("accuracy.svg"), acc)
}

/// ROC curve points (false positive rate, true positive rate), threshold
/// descending, ties taken together.
pub fn roc_points(scores: &[f64], positives: &[bool]) -> Vec<(f64, f64)> {
    let np = positives.iter().filter(|&&p| p).count().max(1) as f64;
    let nn = positives.iter().filter(|&&p| !p).count().max(1) as f64;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut pts = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        while i < order.len() && scores[order[i]] == s {
            if positives[order[i]] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        pts.push((fp / nn, tp / np));
    }
    pts
}

/// `report.md` beside `eval.json`, with a confusion-matrix plot per group and
/// a ROC plot of the patch level.
pub fn write_eval_report(
    run: &Path,
    report: &EvalReport,
    rocs: &[(String, Vec<(f64, f64)>)],
    classes: &[String],
    stem: &str,
) -> Result<()> {
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
        let svg = line_chart("ROC (patch level)", "false positive rate", &series);
        let name = format!("{stem}-roc.svg");
        write_svg(&run.join(&name), svg)?;
        let _ = writeln!(md, "![ROC]({name})\n");
    }
    for g in &report.groups {
        group_markdown(&mut md, g);
        let svg = confusion_chart(
            &format!("{} / {}: patches", report.split, g.group),
            &g.patch.confusion.matrix,
            classes,
        );
        let name = format!("{stem}-confusion-{}.svg", g.group);
        write_svg(&run.join(&name), svg)?;
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
    for (name, get) in super::metrics::METRICS {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roc_points_by_hand() {
        let pts = roc_points(&[0.9, 0.8, 0.4, 0.1], &[true, false, true, false]);
        assert_eq!(
            pts,
            vec![(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]
        );
    }
}
