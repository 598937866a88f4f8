//! The manifest: one row per record (`manifest.parquet` + `manifest.csv`) and
//! one per source image (`images.parquet`), written with Polars. The columns
//! are declared once, in the [`table!`] invocations below; writing and reading
//! are generated from that one list.

use std::path::Path;

use polars::prelude::*;

use crate::error::{Error, Result};

/// File names inside an output folder.
pub const MANIFEST_PARQUET: &str = "manifest.parquet";
pub const MANIFEST_CSV: &str = "manifest.csv";
pub const IMAGES_PARQUET: &str = "images.parquet";

/// A Rust type that maps to one Polars column type.
pub trait ColumnValue: Sized {
    fn to_column(name: &str, values: Vec<Self>) -> Column;
    fn from_column(column: &Column) -> PolarsResult<Vec<Self>>;
}

macro_rules! column_value {
    ($t:ty, $accessor:ident, $missing:expr) => {
        impl ColumnValue for $t {
            fn to_column(name: &str, values: Vec<Self>) -> Column {
                Column::new(name.into(), values)
            }
            fn from_column(column: &Column) -> PolarsResult<Vec<Self>> {
                Ok(column
                    .$accessor()?
                    .iter()
                    .map(|v| v.unwrap_or($missing))
                    .collect())
            }
        }
        impl ColumnValue for Option<$t> {
            fn to_column(name: &str, values: Vec<Self>) -> Column {
                Column::new(name.into(), values)
            }
            fn from_column(column: &Column) -> PolarsResult<Vec<Self>> {
                Ok(column.$accessor()?.iter().collect())
            }
        }
    };
}
column_value!(u64, u64, 0);
column_value!(i64, i64, 0);
column_value!(u32, u32, 0);
column_value!(i32, i32, 0);
column_value!(f32, f32, 0.0);

impl ColumnValue for String {
    fn to_column(name: &str, values: Vec<Self>) -> Column {
        Column::new(name.into(), values)
    }
    fn from_column(column: &Column) -> PolarsResult<Vec<Self>> {
        Ok(column
            .str()?
            .iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect())
    }
}

impl ColumnValue for Option<String> {
    fn to_column(name: &str, values: Vec<Self>) -> Column {
        Column::new(name.into(), values)
    }
    fn from_column(column: &Column) -> PolarsResult<Vec<Self>> {
        Ok(column
            .str()?
            .iter()
            .map(|v| v.map(str::to_string))
            .collect())
    }
}

/// Declares a row struct and its conversion to and from a `DataFrame`.
macro_rules! table {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        pub struct $name { $($(#[$fmeta])* pub $field: $ty),* }

        impl $name {
            /// Column names, in order.
            pub const COLUMNS: &[&str] = &[$(stringify!($field)),*];

            pub fn to_dataframe(rows: &[Self]) -> PolarsResult<DataFrame> {
                let columns = vec![$(
                    <$ty as ColumnValue>::to_column(
                        stringify!($field),
                        rows.iter().map(|r| r.$field.clone()).collect(),
                    )
                ),*];
                DataFrame::new(rows.len(), columns)
            }

            pub fn from_dataframe(df: &DataFrame) -> PolarsResult<Vec<Self>> {
                $(let mut $field = <$ty as ColumnValue>::from_column(df.column(stringify!($field))?)?.into_iter();)*
                Ok((0..df.height())
                    .map(|_| Self { $($field: $field.next().unwrap_or_default()),* })
                    .collect())
            }
        }
    };
}

table! {
    /// One record of a shard.
    ManifestRow {
        /// Global id, also stored in the record as `histoshard/record_id`.
        record_id: u64,
        split: String,
        subset: String,
        /// Patient-grouped cross-validation fold (with `--folds`).
        fold: Option<i32>,
        /// Shard file name, relative to the output folder.
        shard: String,
        index_in_shard: u64,
        /// Offset of the record's frame in the uncompressed shard stream.
        byte_offset: u64,
        /// Length of the serialized Example.
        record_bytes: u64,
        source_image: String,
        filename: String,
        patient: Option<String>,
        label: i64,
        label_text: String,
        x: i64,
        y: i64,
        size: i64,
        scale: f32,
        augmentation: String,
        /// 0 for the original patch, k for its k-th augmented copy.
        aug_index: u32,
        /// Seed of this record's augmentation RNG.
        seed: u64,
        /// sha256 of `image/encoded`.
        sha256: String,
        format: String,
        encoded_bytes: u64,
    }
}

table! {
    /// One source image.
    ImageRow {
        name: String,
        filename: String,
        split: String,
        subset: String,
        fold: Option<i32>,
        patient: Option<String>,
        label: i64,
        label_text: String,
        width: u32,
        height: u32,
        /// Patch positions considered, and kept by the tissue/gland filters.
        candidate_patches: u32,
        kept_patches: u32,
        records: u32,
    }
}

fn polars_err(path: &Path, e: PolarsError) -> Error {
    Error::output(path, format!("table error: {e}"))
}

/// Writes `df` to `path` through a temporary name, as Parquet or CSV by extension.
pub fn write_table(df: &mut DataFrame, path: &Path) -> Result<()> {
    let (file, tmp) = crate::atomic::create_tmp(path)?;
    let result = if path.extension().is_some_and(|e| e == "csv") {
        CsvWriter::new(file).include_header(true).finish(df)
    } else {
        ParquetWriter::new(file)
            .with_compression(ParquetCompression::Zstd(None))
            .finish(df)
            .map(|_| ())
    };
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(polars_err(path, e));
    }
    crate::atomic::commit(&tmp, path)
}

/// Reads a Parquet table from a regular file (a FIFO or device is refused by
/// name: `verify`, `inspect` and `train` would wait on it for ever).
pub fn read_parquet(path: &Path) -> Result<DataFrame> {
    let file = crate::fsutil::open_regular(path)?;
    ParquetReader::new(file)
        .finish()
        .map_err(|e| polars_err(path, e))
}

/// Reads `manifest.parquet` of an output folder.
pub fn read_manifest(dir: &Path) -> Result<Vec<ManifestRow>> {
    let path = dir.join(MANIFEST_PARQUET);
    let df = read_parquet(&path)?;
    ManifestRow::from_dataframe(&df).map_err(|e| polars_err(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u64) -> ManifestRow {
        ManifestRow {
            record_id: id,
            split: "train".into(),
            subset: "train".into(),
            fold: if id.is_multiple_of(2) { Some(1) } else { None },
            shard: "train-00000-of-00001.tfrecord".into(),
            index_in_shard: id,
            byte_offset: id * 100,
            record_bytes: 90,
            source_image: "train_1".into(),
            filename: "train_1.bmp".into(),
            patient: if id == 0 { None } else { Some("3".into()) },
            label: 1,
            label_text: "malignant".into(),
            x: 0,
            y: 224,
            size: 224,
            scale: 1.0,
            augmentation: "none".into(),
            aug_index: 0,
            seed: u64::MAX - id,
            sha256: "ab".repeat(32),
            format: "png".into(),
            encoded_bytes: 1234,
        }
    }

    #[test]
    fn manifest_round_trips_through_parquet_and_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<_> = (0..5).map(row).collect();
        let mut df = ManifestRow::to_dataframe(&rows).unwrap();
        assert_eq!(df.get_column_names().len(), ManifestRow::COLUMNS.len());
        let p = dir.path().join(MANIFEST_PARQUET);
        write_table(&mut df, &p).unwrap();
        assert_eq!(read_manifest(dir.path()).unwrap(), rows);
        let first = std::fs::read(&p).unwrap();
        write_table(&mut df, &p).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), first);

        let csv = dir.path().join(MANIFEST_CSV);
        write_table(&mut df, &csv).unwrap();
        let text = std::fs::read_to_string(&csv).unwrap();
        assert!(text.starts_with(&ManifestRow::COLUMNS.join(",")));
        assert_eq!(text.lines().count(), 6);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no temporary files left"
        );
    }
}
