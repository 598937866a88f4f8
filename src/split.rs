//! Which images train, select and test a model. The source's own split is kept
//! (GlaS: `train` vs `testA`/`testB`); `val` is carved out of train grouped by
//! patient and stratified by label, so no patient's images straddle train and
//! val; folds for cross-validation are grouped the same way. Because the
//! official GlaS split shares patients between train and test, every run
//! reports which patients appear in more than one split.

use std::collections::{BTreeMap, BTreeSet};

use rand::{SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{
    dataset::Dataset,
    error::{Error, Result},
};

/// The role of an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

/// How to split.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SplitOptions {
    /// Fraction of train images (by patient group) moved to val.
    pub val_fraction: f64,
    /// Fraction of all images held out as test when the source has no split.
    pub test_fraction: f64,
    /// Number of patient-grouped cross-validation folds, if any.
    pub folds: Option<u32>,
    pub seed: u64,
}

/// Where one sample went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Assignment {
    pub split: Split,
    /// The source's subset (GlaS `train`/`testA`/`testB`), or the split name.
    pub subset: String,
    pub fold: Option<u32>,
}

/// A patient whose images are in more than one split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedPatient {
    pub patient: String,
    /// Images of this patient per split.
    pub images: BTreeMap<Split, usize>,
}

/// What the split did, for the log and `prepare.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitReport {
    /// Whether the source's own train/test split was used.
    pub official_split: bool,
    /// Images per split and class.
    pub counts: BTreeMap<Split, BTreeMap<String, usize>>,
    /// Patients found in more than one split (leakage a reader of results must know about).
    pub shared_patients: Vec<SharedPatient>,
    /// Images without a patient id, each treated as its own group.
    pub images_without_patient: usize,
}

/// A set of images that must stay together (one patient, or one image without a patient id).
struct Group {
    members: Vec<usize>,
    label_counts: Vec<usize>,
}

fn group_key(ds: &Dataset, i: usize) -> String {
    let s = &ds.samples[i];
    match &s.patient {
        Some(p) => format!("patient:{p}"),
        None => format!("image:{}", s.name),
    }
}

fn groups_of(ds: &Dataset, members: &[usize]) -> Vec<Group> {
    let mut by_key: BTreeMap<String, Group> = BTreeMap::new();
    for &i in members {
        let label = ds.label_of(&ds.samples[i].class).unwrap_or(0);
        let g = by_key.entry(group_key(ds, i)).or_insert_with(|| Group {
            members: Vec::new(),
            label_counts: vec![0; ds.classes.len()],
        });
        g.members.push(i);
        g.label_counts[label] += 1;
    }
    by_key.into_values().collect()
}

fn l1(a: &[f64]) -> f64 {
    a.iter().map(|v| v.abs()).sum()
}

/// Picks whole groups whose label counts come as close as possible to
/// `fraction` of the pool's, leaving at least one group behind.
fn carve(groups: &mut [Group], fraction: f64, rng: &mut ChaCha8Rng) -> BTreeSet<usize> {
    let mut picked = BTreeSet::new();
    if fraction <= 0.0 || groups.len() < 2 {
        return picked;
    }
    groups.shuffle(rng);
    let classes = groups[0].label_counts.len();
    let mut deficit: Vec<f64> = (0..classes)
        .map(|c| groups.iter().map(|g| g.label_counts[c]).sum::<usize>() as f64 * fraction)
        .collect();
    let mut taken = 0;
    for g in groups.iter() {
        if taken + 1 == groups.len() {
            break;
        }
        let after: Vec<f64> = deficit
            .iter()
            .zip(&g.label_counts)
            .map(|(d, &n)| d - n as f64)
            .collect();
        if l1(&after) < l1(&deficit) || (taken == 0 && g.members.len() as f64 <= 2.0 * l1(&deficit))
        {
            deficit = after;
            picked.extend(g.members.iter().copied());
            taken += 1;
        }
    }
    picked
}

/// Assigns every group to one of `k` folds, balancing label counts.
fn assign_folds(mut groups: Vec<Group>, k: usize, rng: &mut ChaCha8Rng) -> BTreeMap<usize, u32> {
    groups.shuffle(rng);
    groups.sort_by_key(|g| std::cmp::Reverse(g.members.len()));
    let classes = groups.first().map_or(0, |g| g.label_counts.len());
    let totals: Vec<f64> = (0..classes)
        .map(|c| groups.iter().map(|g| g.label_counts[c]).sum::<usize>() as f64 / k as f64)
        .collect();
    let mut fold_counts = vec![vec![0usize; classes]; k];
    let mut out = BTreeMap::new();
    for g in &groups {
        let best = (0..k)
            .min_by(|&a, &b| {
                // How much closer (negative) or further the fold gets from its target.
                let cost = |f: usize| {
                    let dist = |extra: usize| {
                        let d: Vec<f64> = (0..classes)
                            .map(|c| {
                                (fold_counts[f][c] + extra * g.label_counts[c]) as f64 - totals[c]
                            })
                            .collect();
                        l1(&d)
                    };
                    let n: usize = fold_counts[f].iter().sum();
                    (dist(1) - dist(0), n)
                };
                cost(a)
                    .partial_cmp(&cost(b))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .unwrap_or(0);
        for (count, n) in fold_counts[best].iter_mut().zip(&g.label_counts) {
            *count += n;
        }
        for &m in &g.members {
            out.insert(m, best as u32);
        }
    }
    out
}

fn official_split(subset: &str) -> Option<Split> {
    match subset.to_ascii_lowercase().as_str() {
        "train" => Some(Split::Train),
        "val" | "valid" | "validation" => Some(Split::Val),
        s if s.starts_with("test") => Some(Split::Test),
        _ => None,
    }
}

/// Splits `ds` and reports on it.
pub fn assign(ds: &Dataset, opts: &SplitOptions) -> Result<(Vec<Assignment>, SplitReport)> {
    for (name, f) in [
        ("--val-fraction", opts.val_fraction),
        ("--test-fraction", opts.test_fraction),
    ] {
        if !(0.0..1.0).contains(&f) {
            return Err(Error::Config(format!("{name} must be in [0, 1), got {f}")));
        }
    }
    let n = ds.samples.len();
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x5EED_5917);
    let mut split: Vec<Option<Split>> = ds
        .samples
        .iter()
        .map(|s| s.subset.as_deref().and_then(official_split))
        .collect();
    let official = split.iter().any(Option::is_some);

    let undecided: Vec<usize> = (0..n).filter(|&i| split[i].is_none()).collect();
    if !undecided.is_empty() {
        let mut groups = groups_of(ds, &undecided);
        let test = if official {
            BTreeSet::new()
        } else {
            carve(&mut groups, opts.test_fraction, &mut rng)
        };
        for i in undecided {
            split[i] = Some(if test.contains(&i) {
                Split::Test
            } else {
                Split::Train
            });
        }
    }
    let mut split: Vec<Split> = split
        .into_iter()
        .map(|s| s.unwrap_or(Split::Train))
        .collect();
    if !split.contains(&Split::Val) {
        let train: Vec<usize> = (0..n).filter(|&i| split[i] == Split::Train).collect();
        let mut groups = groups_of(ds, &train);
        for i in carve(&mut groups, opts.val_fraction, &mut rng) {
            split[i] = Split::Val;
        }
    }

    let folds = match opts.folds {
        None => BTreeMap::new(),
        Some(k) => {
            let groups = groups_of(ds, &(0..n).collect::<Vec<_>>());
            if k < 2 || k as usize > groups.len() {
                return Err(Error::Config(format!(
                    "--folds {k}: need 2 ≤ K ≤ {} (the number of patient groups)",
                    groups.len()
                )));
            }
            assign_folds(groups, k as usize, &mut rng)
        }
    };

    let assignments: Vec<Assignment> = (0..n)
        .map(|i| Assignment {
            split: split[i],
            subset: ds.samples[i]
                .subset
                .clone()
                .unwrap_or_else(|| split[i].as_str().to_string()),
            fold: folds.get(&i).copied(),
        })
        .collect();
    let report = report(ds, &assignments, official);
    Ok((assignments, report))
}

fn report(ds: &Dataset, assignments: &[Assignment], official: bool) -> SplitReport {
    let mut counts: BTreeMap<Split, BTreeMap<String, usize>> = BTreeMap::new();
    let mut by_patient: BTreeMap<&str, BTreeMap<Split, usize>> = BTreeMap::new();
    for (s, a) in ds.samples.iter().zip(assignments) {
        *counts
            .entry(a.split)
            .or_default()
            .entry(s.class.clone())
            .or_default() += 1;
        if let Some(p) = &s.patient {
            *by_patient.entry(p).or_default().entry(a.split).or_default() += 1;
        }
    }
    let shared_patients = by_patient
        .into_iter()
        .filter(|(_, m)| m.len() > 1)
        .map(|(p, images)| SharedPatient {
            patient: p.to_string(),
            images,
        })
        .collect();
    SplitReport {
        official_split: official,
        counts,
        shared_patients,
        images_without_patient: ds.samples.iter().filter(|s| s.patient.is_none()).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{Layout, Sample};

    fn sample(name: &str, class: &str, patient: Option<&str>, subset: Option<&str>) -> Sample {
        Sample {
            name: name.into(),
            image_path: name.into(),
            rel_path: name.into(),
            mask_path: None,
            class: class.into(),
            patient: patient.map(Into::into),
            subset: subset.map(Into::into),
            boxes: vec![],
        }
    }

    /// 16 patients × 5 train + 5 test images, labels by patient parity.
    fn glas_like() -> Dataset {
        let mut samples = vec![];
        for p in 0..16 {
            let class = if p % 2 == 0 { "benign" } else { "malignant" };
            for k in 0..5 {
                samples.push(sample(
                    &format!("train_{p}_{k}"),
                    class,
                    Some(&p.to_string()),
                    Some("train"),
                ));
                samples.push(sample(
                    &format!("testA_{p}_{k}"),
                    class,
                    Some(&p.to_string()),
                    Some("testA"),
                ));
            }
        }
        Dataset {
            layout: Layout::Warwick,
            root: ".".into(),
            classes: vec!["benign".into(), "malignant".into()],
            samples,
            skipped: vec![],
        }
    }

    fn opts(folds: Option<u32>) -> SplitOptions {
        SplitOptions {
            val_fraction: 0.15,
            test_fraction: 0.2,
            folds,
            seed: 1,
        }
    }

    #[test]
    fn keeps_official_split_and_carves_grouped_stratified_val() {
        let ds = glas_like();
        let (a, report) = assign(&ds, &opts(None)).unwrap();
        for (s, a) in ds.samples.iter().zip(&a) {
            if s.name.starts_with("test") {
                assert_eq!(a.split, Split::Test);
                assert_eq!(a.subset, "testA");
            } else {
                assert_ne!(a.split, Split::Test);
            }
        }
        // val holds whole patients, and both classes
        let val: Vec<_> = ds
            .samples
            .iter()
            .zip(&a)
            .filter(|(_, a)| a.split == Split::Val)
            .collect();
        assert!((10..=15).contains(&val.len()), "val size {}", val.len());
        let val_patients: BTreeSet<_> = val.iter().map(|(s, _)| s.patient.clone()).collect();
        for (s, a) in ds.samples.iter().zip(&a) {
            if a.split == Split::Train {
                assert!(!val_patients.contains(&s.patient));
            }
        }
        assert_eq!(report.counts[&Split::Val].len(), 2, "both classes in val");
        // every patient is in train/val and test: all 16 are reported shared
        assert_eq!(report.shared_patients.len(), 16);
        assert!(report.official_split);
    }

    #[test]
    fn deterministic_for_a_seed() {
        let ds = glas_like();
        assert_eq!(
            assign(&ds, &opts(Some(4))).unwrap().0,
            assign(&ds, &opts(Some(4))).unwrap().0
        );
        let other = SplitOptions {
            seed: 2,
            ..opts(Some(4))
        };
        assert_ne!(
            assign(&ds, &opts(Some(4))).unwrap().0,
            assign(&ds, &other).unwrap().0
        );
    }

    #[test]
    fn folds_are_patient_grouped_and_balanced() {
        let ds = glas_like();
        let (a, _) = assign(&ds, &opts(Some(4))).unwrap();
        let mut fold_of_patient: BTreeMap<String, u32> = BTreeMap::new();
        let mut sizes = [0usize; 4];
        for (s, a) in ds.samples.iter().zip(&a) {
            let f = a.fold.unwrap();
            sizes[f as usize] += 1;
            let prev = fold_of_patient.insert(s.patient.clone().unwrap(), f);
            assert!(prev.is_none_or(|p| p == f), "patient split across folds");
        }
        assert_eq!(sizes, [40, 40, 40, 40]);
        assert!(assign(&ds, &opts(Some(17))).is_err());
        assert!(assign(&ds, &opts(Some(1))).is_err());
    }

    #[test]
    fn no_official_split_carves_test_by_patient() {
        let mut ds = glas_like();
        for s in &mut ds.samples {
            s.subset = None;
        }
        let (a, report) = assign(&ds, &opts(None)).unwrap();
        assert!(!report.official_split);
        assert!(
            report.shared_patients.is_empty(),
            "carved splits are patient-disjoint"
        );
        let test = a.iter().filter(|a| a.split == Split::Test).count();
        assert!((20..=40).contains(&test), "test size {test}");
        assert!(a.iter().all(|a| a.subset == a.split.as_str()));
    }

    #[test]
    fn images_without_patient_are_their_own_groups() {
        let mut ds = glas_like();
        for s in &mut ds.samples {
            s.patient = None;
        }
        let (a, report) = assign(&ds, &opts(None)).unwrap();
        assert_eq!(report.images_without_patient, 160);
        let val = a.iter().filter(|a| a.split == Split::Val).count();
        assert_eq!(val, 12, "15% of 80 train images");
    }

    #[test]
    fn rejects_bad_fractions() {
        let ds = glas_like();
        let bad = SplitOptions {
            val_fraction: 1.5,
            ..opts(None)
        };
        assert!(
            assign(&ds, &bad)
                .unwrap_err()
                .to_string()
                .contains("--val-fraction")
        );
    }
}
