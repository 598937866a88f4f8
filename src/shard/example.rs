//! A patch record as a typed struct, and its `tf.train.Example` encoding.
//! Conversion goes through the [`schema`](super::schema) constants in both
//! directions, so a key can be neither misspelt nor forgotten.

use std::collections::BTreeMap;

use prost::Message;

use super::schema::{self, FEATURES, FeatureKind};

/// The prost types generated from `schemas/example.proto`.
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/tensorflow.rs"));
}

use proto::feature::Kind;

/// Everything one record carries (see `schemas/features.json` for meanings).
#[derive(Clone, Debug, PartialEq)]
pub struct PatchRecord {
    pub encoded: Vec<u8>,
    pub format: String,
    pub height: i64,
    pub width: i64,
    pub channels: i64,
    pub label: i64,
    pub label_text: String,
    pub filename: String,
    pub source_id: String,
    pub record_id: i64,
    pub patient_id: String,
    pub split: String,
    pub subset: String,
    pub x: i64,
    pub y: i64,
    pub size: i64,
    pub scale: f32,
    pub augmentation: String,
}

fn bytes(v: &[u8]) -> proto::Feature {
    proto::Feature {
        kind: Some(Kind::BytesList(proto::BytesList {
            value: vec![v.to_vec()],
        })),
    }
}
fn int64(v: i64) -> proto::Feature {
    proto::Feature {
        kind: Some(Kind::Int64List(proto::Int64List { value: vec![v] })),
    }
}
fn float(v: f32) -> proto::Feature {
    proto::Feature {
        kind: Some(Kind::FloatList(proto::FloatList { value: vec![v] })),
    }
}

// The `take_*` helpers run after `decode` has checked every key's presence and
// type, so their fallbacks are unreachable for a record that passed the check.
type FeatureMap = BTreeMap<String, proto::Feature>;

fn take_bytes(f: &mut FeatureMap, key: &str) -> Vec<u8> {
    match f.remove(key).and_then(|f| f.kind) {
        Some(Kind::BytesList(mut l)) => l.value.pop().unwrap_or_default(),
        _ => Vec::new(),
    }
}
fn take_text(f: &mut FeatureMap, key: &str) -> Result<String, String> {
    String::from_utf8(take_bytes(f, key)).map_err(|_| format!("feature {key:?} is not UTF-8"))
}
fn take_i64(f: &mut FeatureMap, key: &str) -> i64 {
    match f.remove(key).and_then(|f| f.kind) {
        Some(Kind::Int64List(l)) => l.value.first().copied().unwrap_or_default(),
        _ => 0,
    }
}
fn take_f32(f: &mut FeatureMap, key: &str) -> f32 {
    match f.remove(key).and_then(|f| f.kind) {
        Some(Kind::FloatList(l)) => l.value.first().copied().unwrap_or_default(),
        _ => 0.0,
    }
}

impl PatchRecord {
    pub fn to_example(&self) -> proto::Example {
        let s = |v: &str| bytes(v.as_bytes());
        let feature: BTreeMap<String, proto::Feature> = [
            (schema::IMAGE_ENCODED, bytes(&self.encoded)),
            (schema::IMAGE_FORMAT, s(&self.format)),
            (schema::IMAGE_HEIGHT, int64(self.height)),
            (schema::IMAGE_WIDTH, int64(self.width)),
            (schema::IMAGE_CHANNELS, int64(self.channels)),
            (schema::IMAGE_CLASS_LABEL, int64(self.label)),
            (schema::IMAGE_CLASS_TEXT, s(&self.label_text)),
            (schema::IMAGE_FILENAME, s(&self.filename)),
            (schema::IMAGE_SOURCE_ID, s(&self.source_id)),
            (schema::HISTOSHARD_RECORD_ID, int64(self.record_id)),
            (schema::HISTOSHARD_PATIENT_ID, s(&self.patient_id)),
            (schema::HISTOSHARD_SPLIT, s(&self.split)),
            (schema::HISTOSHARD_SUBSET, s(&self.subset)),
            (schema::HISTOSHARD_PATCH_X, int64(self.x)),
            (schema::HISTOSHARD_PATCH_Y, int64(self.y)),
            (schema::HISTOSHARD_PATCH_SIZE, int64(self.size)),
            (schema::HISTOSHARD_SCALE, float(self.scale)),
            (schema::HISTOSHARD_AUGMENTATION, s(&self.augmentation)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        debug_assert_eq!(feature.len(), FEATURES.len(), "every schema key is written");
        proto::Example {
            features: Some(proto::Features { feature }),
        }
    }

    /// The serialized `tf.train.Example` (deterministic: keys are sorted).
    pub fn encode(&self) -> Vec<u8> {
        self.to_example().encode_to_vec()
    }

    /// Parses a serialized Example and checks it against the schema: every key
    /// present, of its type, with exactly one value.
    pub fn decode(buf: &[u8]) -> Result<Self, String> {
        let example =
            proto::Example::decode(buf).map_err(|e| format!("not a tf.train.Example: {e}"))?;
        let mut features = example.features.map(|f| f.feature).unwrap_or_default();
        for spec in FEATURES {
            let kind = features.get(spec.key).and_then(|f| f.kind.as_ref());
            let ok = match (spec.kind, kind) {
                (FeatureKind::Bytes, Some(Kind::BytesList(l))) => l.value.len() == 1,
                (FeatureKind::Int64, Some(Kind::Int64List(l))) => l.value.len() == 1,
                (FeatureKind::Float, Some(Kind::FloatList(l))) => l.value.len() == 1,
                (_, None) => return Err(format!("feature {:?} is missing", spec.key)),
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "feature {:?} is not a single {:?} value",
                    spec.key, spec.kind
                ));
            }
        }
        let f = &mut features;
        Ok(Self {
            encoded: take_bytes(f, schema::IMAGE_ENCODED),
            format: take_text(f, schema::IMAGE_FORMAT)?,
            height: take_i64(f, schema::IMAGE_HEIGHT),
            width: take_i64(f, schema::IMAGE_WIDTH),
            channels: take_i64(f, schema::IMAGE_CHANNELS),
            label: take_i64(f, schema::IMAGE_CLASS_LABEL),
            label_text: take_text(f, schema::IMAGE_CLASS_TEXT)?,
            filename: take_text(f, schema::IMAGE_FILENAME)?,
            source_id: take_text(f, schema::IMAGE_SOURCE_ID)?,
            record_id: take_i64(f, schema::HISTOSHARD_RECORD_ID),
            patient_id: take_text(f, schema::HISTOSHARD_PATIENT_ID)?,
            split: take_text(f, schema::HISTOSHARD_SPLIT)?,
            subset: take_text(f, schema::HISTOSHARD_SUBSET)?,
            x: take_i64(f, schema::HISTOSHARD_PATCH_X),
            y: take_i64(f, schema::HISTOSHARD_PATCH_Y),
            size: take_i64(f, schema::HISTOSHARD_PATCH_SIZE),
            scale: take_f32(f, schema::HISTOSHARD_SCALE),
            augmentation: take_text(f, schema::HISTOSHARD_AUGMENTATION)?,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_record(id: i64) -> PatchRecord {
        PatchRecord {
            encoded: vec![1, 2, 3, id as u8],
            format: "png".into(),
            height: 224,
            width: 224,
            channels: 3,
            label: 1,
            label_text: "malignant".into(),
            filename: "train_1.bmp".into(),
            source_id: "train_1".into(),
            record_id: id,
            patient_id: "7".into(),
            split: "train".into(),
            subset: "train".into(),
            x: 224,
            y: 0,
            size: 224,
            scale: 0.5,
            augmentation: "flip_h+hed".into(),
        }
    }

    #[test]
    fn round_trips_every_field() {
        let r = sample_record(42);
        assert_eq!(PatchRecord::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn every_schema_key_is_written_with_its_type() {
        let ex = sample_record(1).to_example();
        let f = ex.features.unwrap().feature;
        assert_eq!(f.len(), FEATURES.len());
        for spec in FEATURES {
            let kind = f[spec.key].kind.as_ref().unwrap();
            let matches = matches!(
                (spec.kind, kind),
                (FeatureKind::Bytes, Kind::BytesList(_))
                    | (FeatureKind::Int64, Kind::Int64List(_))
                    | (FeatureKind::Float, Kind::FloatList(_))
            );
            assert!(matches, "{} has the wrong type", spec.key);
        }
    }

    #[test]
    fn encoding_is_deterministic() {
        assert_eq!(sample_record(5).encode(), sample_record(5).encode());
    }

    #[test]
    fn rejects_missing_and_mistyped_keys() {
        let mut ex = sample_record(1).to_example();
        let f = &mut ex.features.as_mut().unwrap().feature;
        f.remove(schema::IMAGE_CLASS_LABEL);
        let err = PatchRecord::decode(&ex.encode_to_vec()).unwrap_err();
        assert!(
            err.contains("image/class/label") && err.contains("missing"),
            "{err}"
        );

        let mut ex = sample_record(1).to_example();
        let f = &mut ex.features.as_mut().unwrap().feature;
        f.insert(schema::HISTOSHARD_SCALE.into(), int64(2));
        let err = PatchRecord::decode(&ex.encode_to_vec()).unwrap_err();
        assert!(err.contains("histoshard/scale"), "{err}");
        assert!(PatchRecord::decode(b"\xff\xff\xff").is_err());
    }
}
