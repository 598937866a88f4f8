//! Which data a run was trained on, and whether other data may be used with
//! it. `--resume` needs the very data set the run started on (a re-prepared
//! set with the same record counts but every label swapped passed the old
//! count check); `evaluate` may use other data, new images included, but
//! only data whose numbers mean the same to the model: the same class names
//! in the same order, the same patch size and the same scale.

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    error::{Error, Result},
    prepare::output::REPORT_FILE,
    shard::manifest::{ManifestRow, read_manifest},
};

/// What identifies a prepared folder's data, as `run.json` keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataIdentity {
    /// `prepare.json`'s fingerprint (options and input files); for a folder
    /// without one, `manifest:` and the sha256 of its records' labels and digests.
    pub fingerprint: String,
    /// Output index (label) → class name, from the manifest.
    pub classes: Vec<String>,
    /// Side of the records' patches, when all share one.
    pub patch_size: Option<i64>,
    /// Resize factor the patches were cut at, when all share one.
    pub scale: Option<f32>,
    /// Records per split.
    pub records: BTreeMap<String, usize>,
    /// `prepare.json`'s options without the paths (and the histoshard
    /// version), to say which differ; none without a `prepare.json`.
    #[serde(default)]
    pub options: Option<serde_json::Value>,
}

/// The one value every row has, if they agree.
fn common<T: PartialEq + Copy>(rows: &[ManifestRow], f: impl Fn(&ManifestRow) -> T) -> Option<T> {
    let first = f(rows.first()?);
    rows.iter().all(|r| f(r) == first).then_some(first)
}

impl DataIdentity {
    /// Reads `dir`'s manifest and, when there, its `prepare.json` (which must
    /// then be histoshard's).
    pub fn read(dir: &Path) -> Result<Self> {
        let rows = read_manifest(dir)?;
        let report_path = dir.join(REPORT_FILE);
        let (fingerprint, options) = if report_path.exists() {
            let report = crate::prepare::read_report(dir)?;
            let mut options = serde_json::to_value(&report.config)
                .map_err(|e| Error::input(&report_path, e.to_string()))?;
            if let Some(m) = options.as_object_mut() {
                m.remove("input");
                m.remove("output");
                m.insert("histoshard".into(), report.version.clone().into());
            }
            (report.fingerprint, Some(options))
        } else {
            let mut h = Sha256::new();
            for r in &rows {
                h.update(format!(
                    "{}|{}|{}|{}|{:?}|{}\n",
                    r.record_id, r.split, r.label, r.label_text, r.fold, r.sha256
                ));
            }
            (format!("manifest:{}", hex::encode(h.finalize())), None)
        };
        let k = rows
            .iter()
            .map(|r| r.label.max(0) as usize + 1)
            .max()
            .unwrap_or(0);
        let mut classes = vec![String::new(); k];
        for r in &rows {
            if let Some(c) = classes.get_mut(r.label.max(0) as usize)
                && c.is_empty()
            {
                c.clone_from(&r.label_text);
            }
        }
        let mut records = BTreeMap::new();
        for r in &rows {
            *records.entry(r.split.clone()).or_default() += 1;
        }
        Ok(Self {
            fingerprint,
            classes,
            patch_size: common(&rows, |r| r.size),
            scale: common(&rows, |r| r.scale),
            records,
            options,
        })
    }

    /// What makes `other`'s numbers mean something else to a model trained
    /// on `self`: class names and order, patch size, scale. Empty when
    /// `other` may be evaluated with it.
    pub fn eval_differences(&self, other: &Self) -> Vec<String> {
        let mut d = Vec::new();
        if self.classes != other.classes {
            d.push(format!(
                "classes {} vs the run's {}",
                other.classes.join(", "),
                self.classes.join(", ")
            ));
        }
        if self.patch_size != other.patch_size {
            d.push(format!(
                "patch size {} vs the run's {}",
                show(other.patch_size),
                show(self.patch_size)
            ));
        }
        if self.scale != other.scale {
            d.push(format!(
                "scale {} vs the run's {}",
                show(other.scale),
                show(self.scale)
            ));
        }
        d
    }

    /// How `other` differs from `self`; empty when it is the same data set.
    pub fn differences(&self, other: &Self) -> Vec<String> {
        if self.fingerprint == other.fingerprint {
            return Vec::new();
        }
        let mut d = self.eval_differences(other);
        // Whether the options or the classes explain the other fingerprint.
        let mut explained = !d.is_empty();
        if self.records != other.records {
            let counts = |r: &BTreeMap<String, usize>| {
                r.iter()
                    .map(|(s, n)| format!("{s} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            d.push(format!(
                "records {} vs the run's {}",
                counts(&other.records),
                counts(&self.records)
            ));
        }
        match (&self.options, &other.options) {
            (Some(a), Some(b)) => {
                let (a, b) = (flatten(a), flatten(b));
                let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                let changed: Vec<String> = keys
                    .into_iter()
                    .filter(|k| a.get(*k) != b.get(*k))
                    .map(|k| {
                        let v = |m: &BTreeMap<String, String>| {
                            m.get(k).cloned().unwrap_or_else(|| "none".into())
                        };
                        format!("{k} {} (the run's {})", v(&b), v(&a))
                    })
                    .collect();
                if !changed.is_empty() {
                    explained = true;
                    d.push(format!("other prepare options: {}", changed.join(", ")));
                }
            }
            (Some(_), None) => {
                explained = true;
                d.push(format!("no {REPORT_FILE} (the run's data had one)"));
            }
            (None, Some(_)) => {
                explained = true;
                d.push(format!("a {REPORT_FILE} (the run's data had none)"));
            }
            (None, None) => {}
        }
        if !explained {
            d.push("prepared from other input images or labels (same classes and options)".into());
        }
        d
    }
}

fn show<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "mixed".into(), |v| v.to_string())
}

/// `a.b = v` pairs of a JSON object, leaves as text.
fn flatten(v: &serde_json::Value) -> BTreeMap<String, String> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", v, &mut out);
    out
}

/// The error of data that cannot be used with a run: one line, every difference.
pub fn mismatch(data: &Path, what: &str, differences: &[String]) -> Error {
    Error::input(data, format!("{what}: {}", differences.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(classes: &[&str], size: i64, fingerprint: &str) -> DataIdentity {
        DataIdentity {
            fingerprint: fingerprint.into(),
            classes: classes.iter().map(|c| c.to_string()).collect(),
            patch_size: Some(size),
            scale: Some(1.0),
            records: BTreeMap::from([("train".into(), 10)]),
            options: Some(serde_json::json!({"seed": 42, "augmentation": {"hed_sigma": 0.05}})),
        }
    }

    #[test]
    fn evaluation_needs_classes_patch_size_and_scale_only() {
        let run = identity(&["benign", "malignant"], 32, "a");
        let mut new_images = identity(&["benign", "malignant"], 32, "b");
        new_images.records.insert("test".into(), 99);
        assert!(run.eval_differences(&new_images).is_empty());
        let swapped = identity(&["malignant", "benign"], 32, "c");
        let d = run.eval_differences(&swapped);
        assert_eq!(d.len(), 1);
        assert!(
            d[0].contains("malignant, benign vs the run's benign, malignant"),
            "{d:?}"
        );
        let mut other = identity(&["benign", "malignant"], 64, "d");
        other.scale = Some(0.5);
        let d = run.eval_differences(&other).join("; ");
        assert!(d.contains("patch size 64 vs the run's 32"), "{d}");
        assert!(d.contains("scale 0.5 vs the run's 1"), "{d}");
    }

    #[test]
    fn resuming_needs_the_same_fingerprint_and_says_what_differs() {
        let run = identity(&["benign", "malignant"], 32, "a");
        assert!(run.differences(&run.clone()).is_empty());
        let relabelled = identity(&["benign", "malignant"], 32, "b");
        let d = run.differences(&relabelled);
        assert_eq!(d.len(), 1);
        assert!(d[0].contains("other input images or labels"), "{d:?}");
        let mut reseeded = identity(&["benign", "malignant"], 32, "c");
        reseeded.options = Some(serde_json::json!({"seed": 9, "augmentation": {"hed_sigma": 0.0}}));
        let d = run.differences(&reseeded).join("; ");
        assert!(
            d.contains("augmentation.hed_sigma 0.0 (the run's 0.05)"),
            "{d}"
        );
        assert!(d.contains("seed 9 (the run's 42)"), "{d}");
    }
}
