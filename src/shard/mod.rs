//! The shard format, shared by writer and reader: TFRecord framing (from the
//! `tfrecord` crate) around `tf.train.Example` messages (prost types generated
//! from `schemas/example.proto`) whose keys come from `schemas/features.json`.

pub mod example;
pub mod manifest;
pub mod reader;
pub mod schema;
pub mod writer;

use serde::{Deserialize, Serialize};

/// Whole-file compression of a shard; `Gzip` is what TF's `compression_type="GZIP"` reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

crate::choices!(Compression {
    None = "none",
    Gzip = "gzip",
});

/// `{split}-{index:05}-of-{count:05}.tfrecord[.gz]`, the naming TF's own tools use.
pub fn shard_file_name(split: &str, index: u32, count: u32, compression: Compression) -> String {
    let ext = match compression {
        Compression::None => "tfrecord",
        Compression::Gzip => "tfrecord.gz",
    };
    format!("{split}-{index:05}-of-{count:05}.{ext}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_follow_tf_convention() {
        assert_eq!(
            shard_file_name("train", 3, 12, Compression::None),
            "train-00003-of-00012.tfrecord"
        );
        assert_eq!(
            shard_file_name("val", 0, 1, Compression::Gzip),
            "val-00000-of-00001.tfrecord.gz"
        );
    }
}
