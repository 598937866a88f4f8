//! The keys of a record, compiled in from `schemas/features.json` by `build.rs`.

/// The value type of a feature, as `tf.train.Feature` distinguishes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureKind {
    Bytes,
    Int64,
    Float,
}

/// One key of a record and its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureSpec {
    pub key: &'static str,
    pub kind: FeatureKind,
}

include!(concat!(env!("OUT_DIR"), "/features.rs"));

/// The schema file itself, copied into every output folder so a data set
/// describes itself to the Python side.
pub const FEATURES_JSON: &str = include_str!("../../schemas/features.json");
