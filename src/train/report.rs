//! A run's plots: `loss.svg` and `accuracy.svg` of the training history, and
//! the ROC points and SVG writing that evaluation's report uses (charts drawn by
//! [`plot`](super::plot)).

use std::path::Path;

use super::{plot::line_chart, run::EpochMetrics};
use crate::error::{Error, Result};

/// Writes `svg` (or names the failure to draw it) at `path`.
pub(super) fn write_svg(path: &Path, svg: std::result::Result<String, String>) -> Result<()> {
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
