//! Classification metrics with 95% confidence intervals and their `n`.
//!
//! Test sets in histopathology are small (GlaS testB has 20 images), so a
//! number without its interval misleads. Proportions (accuracy, precision,
//! recall, specificity) get Wilson score intervals, which behave at 0 and 1
//! where the normal approximation does not; statistics that are not simple
//! proportions (balanced accuracy, F1, ROC AUC) get a seeded percentile
//! bootstrap, so the same predictions always give the same interval.
//!
//! The positive class is label 1 (`malignant` in GlaS); with more classes,
//! the binary statistics are one-vs-rest for label 1.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// z for a two-sided 95% interval.
const Z95: f64 = 1.959_963_984_540_054;

/// Index of the largest value; ties go to the lowest index (class 0), so a
/// model that outputs equal probabilities predicts the same class everywhere.
pub fn argmax(p: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in p.iter().enumerate() {
        if *v > p[best] {
            best = i;
        }
    }
    best
}

/// A value, its 95% interval and the number of observations behind it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
    pub n: u64,
}

impl std::fmt::Display for Estimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.value.is_nan() {
            return write!(f, "n/a (n={})", self.n);
        }
        write!(
            f,
            "{:.3} [{:.3}, {:.3}] (n={})",
            self.value, self.lo, self.hi, self.n
        )
    }
}

/// Wilson score interval for `successes` out of `n`; NaN for n = 0.
pub fn wilson(successes: u64, n: u64) -> Estimate {
    if n == 0 {
        return Estimate {
            value: f64::NAN,
            lo: f64::NAN,
            hi: f64::NAN,
            n,
        };
    }
    let nf = n as f64;
    let p = successes as f64 / nf;
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / nf;
    let centre = (p + z2 / (2.0 * nf)) / denom;
    let half = Z95 * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt() / denom;
    Estimate {
        value: p,
        lo: (centre - half).max(0.0),
        hi: (centre + half).min(1.0),
        n,
    }
}

/// `k`×`k` confusion matrix, rows = true label, columns = predicted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    pub matrix: Vec<Vec<u64>>,
}

impl Confusion {
    pub fn new(labels: &[usize], predictions: &[usize], k: usize) -> Self {
        let mut matrix = vec![vec![0u64; k]; k];
        for (&t, &p) in labels.iter().zip(predictions) {
            if t < k && p < k {
                matrix[t][p] += 1;
            }
        }
        Self { matrix }
    }

    pub fn total(&self) -> u64 {
        self.matrix.iter().flatten().sum()
    }

    pub fn correct(&self) -> u64 {
        (0..self.matrix.len()).map(|i| self.matrix[i][i]).sum()
    }

    /// (tp, fp, fn, tn) of `positive` against the rest.
    pub fn one_vs_rest(&self, positive: usize) -> (u64, u64, u64, u64) {
        let k = self.matrix.len();
        if positive >= k {
            return (0, 0, 0, self.total());
        }
        let tp = self.matrix[positive][positive];
        let fp: u64 = (0..k)
            .filter(|&t| t != positive)
            .map(|t| self.matrix[t][positive])
            .sum();
        let fn_: u64 = self.matrix[positive].iter().sum::<u64>() - tp;
        (tp, fp, fn_, self.total() - tp - fp - fn_)
    }

    /// Mean of per-class recall over the classes present.
    pub fn balanced_accuracy(&self) -> f64 {
        let recalls: Vec<f64> = self
            .matrix
            .iter()
            .enumerate()
            .filter_map(|(i, row)| {
                let n: u64 = row.iter().sum();
                (n > 0).then(|| row[i] as f64 / n as f64)
            })
            .collect();
        if recalls.is_empty() {
            f64::NAN
        } else {
            recalls.iter().sum::<f64>() / recalls.len() as f64
        }
    }

    /// F1 of `positive`; NaN when it is neither predicted nor present.
    pub fn f1(&self, positive: usize) -> f64 {
        let (tp, fp, fn_, _) = self.one_vs_rest(positive);
        let d = 2 * tp + fp + fn_;
        if d == 0 {
            f64::NAN
        } else {
            2.0 * tp as f64 / d as f64
        }
    }
}

/// ROC AUC of `scores` for `positives` (the Mann–Whitney U statistic, ties
/// counted half); `None` unless both classes are present.
pub fn roc_auc(scores: &[f64], positives: &[bool]) -> Option<f64> {
    let n_pos = positives.iter().filter(|&&p| p).count();
    let n_neg = positives.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the positives' ranks, averaging the ranks of ties.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            if positives[o] {
                rank_sum += avg_rank;
            }
        }
        i = j + 1;
    }
    let np = n_pos as f64;
    Some((rank_sum - np * (np + 1.0) / 2.0) / (np * n_neg as f64))
}

/// Percentile bootstrap 95% interval of `stat` over resamples of `0..n`,
/// seeded; resamples where `stat` is undefined (`None`/NaN) are skipped.
pub fn bootstrap_ci(
    n: usize,
    resamples: usize,
    seed: u64,
    mut stat: impl FnMut(&[usize]) -> Option<f64>,
) -> Option<(f64, f64)> {
    if n == 0 || resamples == 0 {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut idx = vec![0usize; n];
    let mut values = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for v in idx.iter_mut() {
            *v = rng.random_range(0..n);
        }
        if let Some(s) = stat(&idx).filter(|s| s.is_finite()) {
            values.push(s);
        }
    }
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let q = |p: f64| {
        let pos = p * (values.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        values[lo] + (values[hi] - values[lo]) * (pos - lo as f64)
    };
    Some((q(0.025), q(0.975)))
}

/// Everything `evaluate` reports for one set of predictions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub n: u64,
    pub accuracy: Estimate,
    pub balanced_accuracy: Estimate,
    /// Of the positive class (label 1).
    pub precision: Estimate,
    /// Sensitivity of the positive class.
    pub recall: Estimate,
    pub specificity: Estimate,
    pub f1: Estimate,
    pub roc_auc: Estimate,
    pub confusion: Confusion,
}

/// Reads one metric out of a [`Report`].
pub type Getter = fn(&Report) -> Estimate;

/// The scalar metrics of a [`Report`] in display order, so every table lists the same ones.
pub const METRICS: [(&str, Getter); 7] = [
    ("accuracy", |r| r.accuracy),
    ("balanced accuracy", |r| r.balanced_accuracy),
    ("precision", |r| r.precision),
    ("recall", |r| r.recall),
    ("specificity", |r| r.specificity),
    ("F1", |r| r.f1),
    ("ROC AUC", |r| r.roc_auc),
];

/// Options of [`report`].
#[derive(Clone, Copy, Debug)]
pub struct ReportOptions {
    pub positive: usize,
    pub bootstrap: usize,
    pub seed: u64,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            positive: 1,
            bootstrap: 1000,
            seed: 0,
        }
    }
}

fn point(value: f64, ci: Option<(f64, f64)>, n: u64) -> Estimate {
    let (lo, hi) = ci.unwrap_or((f64::NAN, f64::NAN));
    Estimate { value, lo, hi, n }
}

/// Metrics of `predictions` against `labels`, with `scores` the probability
/// of the positive class (for the AUC).
pub fn report(
    labels: &[usize],
    predictions: &[usize],
    scores: &[f64],
    num_classes: usize,
    opts: &ReportOptions,
) -> Report {
    let k = num_classes.max(2);
    let confusion = Confusion::new(labels, predictions, k);
    let n = confusion.total();
    let (tp, fp, fn_, tn) = confusion.one_vs_rest(opts.positive);
    let positives: Vec<bool> = labels.iter().map(|&l| l == opts.positive).collect();

    let sub = |idx: &[usize]| {
        let l: Vec<usize> = idx.iter().map(|&i| labels[i]).collect();
        let p: Vec<usize> = idx.iter().map(|&i| predictions[i]).collect();
        Confusion::new(&l, &p, k)
    };
    let bal_ci = bootstrap_ci(labels.len(), opts.bootstrap, opts.seed, |idx| {
        Some(sub(idx).balanced_accuracy())
    });
    let f1_ci = bootstrap_ci(labels.len(), opts.bootstrap, opts.seed ^ 1, |idx| {
        Some(sub(idx).f1(opts.positive))
    });
    let auc = roc_auc(scores, &positives);
    let auc_ci = auc.and_then(|_| {
        bootstrap_ci(labels.len(), opts.bootstrap, opts.seed ^ 2, |idx| {
            let s: Vec<f64> = idx.iter().map(|&i| scores[i]).collect();
            let p: Vec<bool> = idx.iter().map(|&i| positives[i]).collect();
            roc_auc(&s, &p)
        })
    });
    Report {
        n,
        accuracy: wilson(confusion.correct(), n),
        balanced_accuracy: point(confusion.balanced_accuracy(), bal_ci, n),
        precision: wilson(tp, tp + fp),
        recall: wilson(tp, tp + fn_),
        specificity: wilson(tn, tn + fp),
        f1: point(confusion.f1(opts.positive), f1_ci, n),
        roc_auc: point(auc.unwrap_or(f64::NAN), auc_ci, n),
        confusion,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-4
    }

    #[test]
    fn wilson_matches_hand_computed_values() {
        // 8/10: centre (0.8 + 1.92/10)/(1 + 3.84/10) = 0.7167, half-width 0.2265.
        let e = wilson(8, 10);
        assert!(close(e.value, 0.8));
        assert!(close(e.lo, 0.4902), "{e:?}");
        assert!(close(e.hi, 0.9433), "{e:?}");
        // 0/10 stays inside [0, 1] with a non-degenerate upper bound.
        let e = wilson(0, 10);
        assert_eq!(e.lo, 0.0);
        assert!(close(e.hi, 0.2775), "{e:?}");
        assert!(wilson(0, 0).value.is_nan());
    }

    #[test]
    fn auc_by_hand_with_ties() {
        // positives 0.8, 0.4; negatives 0.4, 0.1:
        // pairs (0.8>0.4)=1, (0.8>0.1)=1, (0.4=0.4)=0.5, (0.4>0.1)=1 → 3.5/4.
        let auc = roc_auc(&[0.8, 0.4, 0.4, 0.1], &[true, true, false, false]).unwrap();
        assert!(close(auc, 0.875));
        assert_eq!(roc_auc(&[0.1, 0.9], &[false, true]), Some(1.0));
        assert_eq!(roc_auc(&[0.9, 0.1], &[false, true]), Some(0.0));
        assert_eq!(roc_auc(&[0.1, 0.9], &[true, true]), None);
    }

    #[test]
    fn confusion_and_derived_metrics() {
        // true:  1 1 1 1 0 0 0 0 0 0
        // pred:  1 1 1 0 0 0 0 0 1 1
        let t = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0];
        let p = [1, 1, 1, 0, 0, 0, 0, 0, 1, 1];
        let c = Confusion::new(&t, &p, 2);
        assert_eq!(c.matrix, vec![vec![4, 2], vec![1, 3]]);
        assert_eq!(c.one_vs_rest(1), (3, 2, 1, 4));
        // recall 3/4, specificity 4/6 → balanced (0.75 + 0.6667)/2
        assert!(close(c.balanced_accuracy(), (0.75 + 4.0 / 6.0) / 2.0));
        // precision 3/5, recall 3/4 → F1 = 6/9
        assert!(close(c.f1(1), 6.0 / 9.0));

        let scores: Vec<f64> = p.iter().map(|&x| x as f64).collect();
        let r = report(&t, &p, &scores, 2, &ReportOptions::default());
        assert_eq!(r.n, 10);
        assert!(close(r.accuracy.value, 0.7));
        assert!(close(r.precision.value, 0.6) && r.precision.n == 5);
        assert!(close(r.recall.value, 0.75) && r.recall.n == 4);
        assert!(close(r.specificity.value, 4.0 / 6.0) && r.specificity.n == 6);
        // AUC of hard scores = balanced accuracy.
        assert!(close(r.roc_auc.value, r.balanced_accuracy.value));
        for e in [r.balanced_accuracy, r.f1, r.roc_auc] {
            assert!(e.lo <= e.value && e.value <= e.hi, "{e:?}");
        }
    }

    #[test]
    fn bootstrap_is_seeded_and_brackets_the_mean() {
        let xs: Vec<f64> = (0..50).map(|i| (i % 10) as f64).collect();
        let mean = |idx: &[usize]| Some(idx.iter().map(|&i| xs[i]).sum::<f64>() / idx.len() as f64);
        let a = bootstrap_ci(xs.len(), 500, 7, mean).unwrap();
        let b = bootstrap_ci(xs.len(), 500, 7, mean).unwrap();
        assert_eq!(a, b);
        assert!(a.0 < 4.5 && 4.5 < a.1, "{a:?}");
        // Standard error ≈ 2.87/√50 = 0.41 → interval roughly ±0.8.
        assert!(a.1 - a.0 > 1.0 && a.1 - a.0 < 2.4, "{a:?}");
        assert_ne!(bootstrap_ci(xs.len(), 500, 8, mean).unwrap(), a);
    }
}
