//! The record format, shard writer and reader, and the manifest.
