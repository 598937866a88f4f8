//! Manifest-driven streaming batches for training and evaluation.
//!
//! The manifest says which records belong to the selection (split, subset,
//! fold) and where they are, so the data set is never listed by reading shards
//! and never loaded whole. One pipeline thread per epoch reads the shards in
//! order (CRCs checked by [`ShardReader`], so a corrupt record is reported with
//! its file and index), passes the raw records through a seeded shuffle
//! buffer, decodes them in chunks on a small rayon pool of its own, and sends
//! finished batches over a bounded channel: memory stays at `prefetch` batches
//! plus the shuffle buffer (encoded records) plus one chunk, whatever the data
//! set's size.
//!
//! Everything random (shard order, shuffle buffer, oversampling, augmentation)
//! is drawn from generators seeded by `(seed, epoch)` or `(seed, epoch,
//! record_id, copy)`, never from thread timing, so the batches of an epoch are
//! identical for any number of decode workers.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::mpsc::{Receiver, SyncSender, sync_channel},
    thread::JoinHandle,
};

use image::RgbImage;
use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    patch::augment::{AugmentConfig, augment},
    preprocess::{self, Normalization},
    shard::{
        example::PatchRecord,
        manifest::{ManifestRow, read_manifest},
        reader::ShardReader,
    },
};

/// Which folds of the selected split to use (patient-grouped CV).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FoldFilter {
    /// Every record, whatever its fold.
    #[default]
    Any,
    /// Only the records of this fold (a CV validation fold).
    Only(i32),
    /// Every record except this fold's (the CV training folds).
    Except(i32),
}

/// Which records of a prepared folder to use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// `train`, `val` or `test`, or several joined by `+` (`train+val`).
    pub split: String,
    /// E.g. `testA` / `testB` of GlaS; `None` takes every subset of the split.
    pub subset: Option<String>,
    pub folds: FoldFilter,
    /// Only the patches as cut, not their augmented copies (what a held-out
    /// fold is scored on: `prepare --augment` copies only train patches).
    #[serde(default)]
    pub originals: bool,
}

impl Selection {
    pub fn split(split: &str) -> Self {
        Self {
            split: split.to_string(),
            subset: None,
            folds: FoldFilter::Any,
            originals: false,
        }
    }

    /// Patient-grouped cross-validation fold `k` of train+val: the other
    /// folds train, and fold `k`'s original patches are held out.
    pub fn cv_fold(k: i32) -> (Self, Self) {
        (
            Self {
                folds: FoldFilter::Except(k),
                ..Self::split("train+val")
            },
            Self {
                folds: FoldFilter::Only(k),
                originals: true,
                ..Self::split("train+val")
            },
        )
    }

    pub fn with_subset(mut self, subset: Option<String>) -> Self {
        self.subset = subset;
        self
    }

    /// The splits named, `+`-separated (`train+val` for cross-validation).
    pub fn splits(&self) -> impl Iterator<Item = &str> {
        self.split.split('+')
    }

    pub fn matches(&self, row: &ManifestRow) -> bool {
        self.splits().any(|s| s == row.split)
            && self.subset.as_ref().is_none_or(|s| &row.subset == s)
            && match self.folds {
                FoldFilter::Any => true,
                FoldFilter::Only(k) => row.fold == Some(k),
                FoldFilter::Except(k) => row.fold.is_some_and(|f| f != k),
            }
            && (!self.originals || row.aug_index == 0)
    }
}

impl std::fmt::Display for Selection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "split {}", self.split)?;
        if let Some(s) = &self.subset {
            write!(f, ", subset {s}")?;
        }
        match self.folds {
            FoldFilter::Any => Ok(()),
            FoldFilter::Only(k) => write!(f, ", fold {k}"),
            FoldFilter::Except(k) => write!(f, ", folds other than {k}"),
        }?;
        if self.originals {
            write!(f, ", original patches")?;
        }
        Ok(())
    }
}

/// How a loader reads one selection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Resize every patch to this square side; `None` keeps the stored size
    /// (then every patch must have the same size).
    pub input_size: Option<u32>,
    pub normalization: Normalization,
    /// Shuffle shard order and records (through the shuffle buffer).
    pub shuffle: bool,
    /// Encoded records held in the shuffle buffer; larger mixes better, costs memory.
    pub shuffle_buffer: usize,
    pub seed: u64,
    /// On-the-fly augmentation (for training; off when shards are already augmented).
    pub augment: Option<AugmentConfig>,
    /// Repeat records of rarer classes so every class is seen about as often
    /// as the commonest (the alternative to class-weighted loss).
    pub oversample: bool,
    /// Decode threads.
    pub workers: usize,
    /// Finished batches waiting for the consumer.
    pub prefetch: usize,
    /// Drop a last, smaller batch (keeps batch-norm statistics sane in training).
    pub drop_last: bool,
    /// Decode the patches. Without, batches carry labels and rows only (and
    /// every record is still read and checked): the same batches, in the same
    /// order, for a model that reads cached activations instead of pixels.
    #[serde(default = "pixels_on")]
    pub pixels: bool,
}

fn pixels_on() -> bool {
    true
}

impl LoaderConfig {
    /// Evaluation defaults: in order, no augmentation, every record once.
    pub fn eval(batch_size: usize, input_size: Option<u32>, normalization: Normalization) -> Self {
        Self {
            batch_size,
            input_size,
            normalization,
            shuffle: false,
            shuffle_buffer: 0,
            seed: 0,
            augment: None,
            oversample: false,
            workers: default_workers(),
            prefetch: 2,
            drop_last: false,
            pixels: true,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::Config("batch size must be at least 1".into()));
        }
        if self.input_size == Some(0) {
            return Err(Error::Config("input size must be at least 1".into()));
        }
        if self
            .normalization
            .std
            .iter()
            .any(|s| !s.is_finite() || *s <= 0.0)
        {
            return Err(Error::Config(
                "normalisation std must be positive and finite".into(),
            ));
        }
        if let Some(a) = &self.augment {
            a.validate()?;
        }
        Ok(())
    }
}

/// Classes a model for `dir` needs: one per label of its manifest, every
/// split counted (a class may be missing from one split), at least 2.
pub fn num_classes(dir: &Path) -> Result<usize> {
    let rows = read_manifest(dir)?;
    Ok(rows
        .iter()
        .map(|r| r.label.max(0) as usize + 1)
        .max()
        .unwrap_or(2)
        .max(2))
}

/// Decode threads when nobody says: the cores, less one for the trainer.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().saturating_sub(1).max(1))
        .unwrap_or(1)
}

/// The records of one shard that the selection wants.
#[derive(Clone, Debug)]
struct ShardPlan {
    file: String,
    /// index_in_shard → position in [`Dataset::rows`].
    wanted: BTreeMap<u64, usize>,
}

/// One selection of a prepared folder: the manifest rows, grouped by shard.
#[derive(Clone, Debug)]
pub struct Dataset {
    root: PathBuf,
    selection: Selection,
    rows: Vec<ManifestRow>,
    shards: Vec<ShardPlan>,
    num_classes: usize,
    class_counts: Vec<u64>,
}

impl Dataset {
    /// Reads `manifest.parquet` in `root` and keeps the rows `selection` matches.
    pub fn open(root: &Path, selection: &Selection) -> Result<Self> {
        let all = read_manifest(root)?;
        Self::from_rows(root, selection, all)
    }

    /// As [`open`](Self::open), but `None` where the selection matches no
    /// record (a data set prepared with `--val-fraction 0` has no `val`).
    pub fn open_if_any(root: &Path, selection: &Selection) -> Result<Option<Self>> {
        let all = read_manifest(root)?;
        if !all.iter().any(|r| selection.matches(r)) {
            return Ok(None);
        }
        Self::from_rows(root, selection, all).map(Some)
    }

    /// As [`open`](Self::open), from rows already read.
    pub fn from_rows(root: &Path, selection: &Selection, all: Vec<ManifestRow>) -> Result<Self> {
        let manifest = root.join(crate::shard::manifest::MANIFEST_PARQUET);
        if let Some(bad) = all.iter().find(|r| r.label < 0) {
            return Err(Error::input(
                &manifest,
                format!("record {} has negative label {}", bad.record_id, bad.label),
            ));
        }
        // Classes count over the whole manifest, so that a split missing a
        // class still gets logits for it.
        let num_classes = all
            .iter()
            .map(|r| r.label as usize + 1)
            .max()
            .unwrap_or(0)
            .max(2);
        let rows: Vec<ManifestRow> = all.into_iter().filter(|r| selection.matches(r)).collect();
        if rows.is_empty() {
            return Err(Error::input(
                &manifest,
                format!("no records for {selection}"),
            ));
        }
        let mut by_shard: BTreeMap<String, BTreeMap<u64, usize>> = BTreeMap::new();
        let mut class_counts = vec![0u64; num_classes];
        for (i, r) in rows.iter().enumerate() {
            class_counts[r.label as usize] += 1;
            if by_shard
                .entry(r.shard.clone())
                .or_default()
                .insert(r.index_in_shard, i)
                .is_some()
            {
                return Err(Error::input(
                    &manifest,
                    format!("{} record {} listed twice", r.shard, r.index_in_shard),
                ));
            }
        }
        let shards = by_shard
            .into_iter()
            .map(|(file, wanted)| ShardPlan { file, wanted })
            .collect();
        Ok(Self {
            root: root.to_path_buf(),
            selection: selection.clone(),
            rows,
            shards,
            num_classes,
            class_counts,
        })
    }

    pub fn selection(&self) -> &Selection {
        &self.selection
    }

    /// The selected manifest rows; [`Batch::rows`] index into this.
    pub fn rows(&self) -> &[ManifestRow] {
        &self.rows
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Records per class label.
    pub fn class_counts(&self) -> &[u64] {
        &self.class_counts
    }

    /// Inverse-frequency class weights `n / (k · n_c)` (1 for a balanced set),
    /// for a class-weighted loss; an absent class gets weight 1.
    pub fn class_weights(&self) -> Vec<f32> {
        let n = self.rows.len() as f64;
        let present = self.class_counts.iter().filter(|&&c| c > 0).count().max(1) as f64;
        self.class_counts
            .iter()
            .map(|&c| {
                if c == 0 {
                    1.0
                } else {
                    (n / (present * c as f64)) as f32
                }
            })
            .collect()
    }

    /// Records one epoch yields with `oversample` (in expectation; the
    /// fractional part of a class's repeat factor is drawn per record).
    pub fn epoch_len(&self, oversample: bool) -> usize {
        if !oversample {
            return self.rows.len();
        }
        let max = self.class_counts.iter().copied().max().unwrap_or(0);
        (max * self.class_counts.iter().filter(|&&c| c > 0).count() as u64) as usize
    }

    /// Starts streaming one epoch; `epoch` seeds its shuffling and augmentation.
    pub fn stream(&self, cfg: &LoaderConfig, epoch: u64) -> Result<BatchStream> {
        cfg.validate()?;
        let (tx, rx) = sync_channel(cfg.prefetch.max(1));
        let pipeline = Pipeline {
            root: self.root.clone(),
            shards: self.shards.clone(),
            labels: self.rows.iter().map(|r| r.label).collect(),
            record_ids: self.rows.iter().map(|r| r.record_id).collect(),
            repeat: repeat_factors(&self.class_counts, cfg.oversample),
            cfg: cfg.clone(),
            epoch,
            tx,
        };
        let handle = std::thread::Builder::new()
            .name("histoshard-loader".into())
            .spawn(move || pipeline.run())
            .map_err(|e| Error::Config(format!("cannot start the loader thread: {e}")))?;
        Ok(BatchStream {
            rx: Some(rx),
            handle: Some(handle),
        })
    }
}

/// How many times each class's records are emitted per epoch.
fn repeat_factors(counts: &[u64], oversample: bool) -> Vec<f64> {
    let max = counts.iter().copied().max().unwrap_or(0) as f64;
    counts
        .iter()
        .map(|&c| {
            if oversample && c > 0 {
                max / c as f64
            } else {
                1.0
            }
        })
        .collect()
}

/// A batch in NCHW layout, ready for `Tensor::from_data`.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `len · 3 · height · width` normalised values.
    pub images: Vec<f32>,
    pub labels: Vec<i64>,
    /// Positions in [`Dataset::rows`] of each item.
    pub rows: Vec<usize>,
    pub height: usize,
    pub width: usize,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// `[n, 3, h, w]`.
    pub fn shape(&self) -> [usize; 4] {
        [self.len(), 3, self.height, self.width]
    }
}

/// The batches of one epoch; the first error ends it. Dropping it stops the
/// pipeline thread.
pub struct BatchStream {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
}

impl Iterator for BatchStream {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Self::Item> {
        let item = self.rx.as_ref()?.recv().ok();
        if matches!(item, None | Some(Err(_))) {
            self.finish();
        }
        item
    }
}

impl BatchStream {
    fn finish(&mut self) {
        // Closing the channel first makes a blocked sender give up.
        self.rx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for BatchStream {
    fn drop(&mut self) {
        self.finish();
    }
}

/// splitmix64, to derive independent seeds from (seed, epoch, record, copy).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A seed derived from several numbers (seed, epoch, record, ...).
pub fn seed_of(parts: &[u64]) -> u64 {
    parts.iter().fold(0x5eed_u64, |acc, &p| mix(acc ^ mix(p)))
}

/// One record to decode.
struct Job {
    data: Vec<u8>,
    row: usize,
    copy: u32,
    shard: PathBuf,
    index: u64,
}

struct Sample {
    pixels: Vec<f32>,
    label: i64,
    row: usize,
    height: usize,
    width: usize,
}

struct Pipeline {
    root: PathBuf,
    shards: Vec<ShardPlan>,
    labels: Vec<i64>,
    record_ids: Vec<u64>,
    repeat: Vec<f64>,
    cfg: LoaderConfig,
    epoch: u64,
    tx: SyncSender<Result<Batch>>,
}

/// The pipeline stopped: an error was sent, or nobody listens any more.
struct Stop;

impl Pipeline {
    fn run(self) {
        let tx = self.tx.clone();
        if let Err(e) = self.run_inner() {
            let _ = tx.send(Err(e));
        }
    }

    fn run_inner(self) -> Result<()> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.cfg.workers.max(1))
            .thread_name(|i| format!("histoshard-decode-{i}"))
            .build()
            .map_err(|e| Error::Config(format!("cannot start decode threads: {e}")))?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed_of(&[self.cfg.seed, self.epoch]));
        let mut order: Vec<usize> = (0..self.shards.len()).collect();
        if self.cfg.shuffle {
            order.shuffle(&mut rng);
        }
        let chunk_size = self.cfg.batch_size.max(32);
        let mut sink = Sink::new(&self.cfg, &self.tx);
        // The shuffle buffer holds raw (encoded) records, a tenth of the
        // memory of decoded ones; decoding happens after it, in chunks.
        let shuffling = self.cfg.shuffle && self.cfg.shuffle_buffer > 1;
        let mut buffer: Vec<Job> = Vec::new();
        let mut chunk: Vec<Job> = Vec::with_capacity(chunk_size);
        for &s in &order {
            let plan = &self.shards[s];
            let path = self.root.join(&plan.file);
            let mut reader = ShardReader::open(&path)?;
            let mut remaining = plan.wanted.len();
            while remaining > 0 {
                let Some(rec) = reader.next_record()? else {
                    return Err(Error::record(
                        &path,
                        reader_index(plan, remaining),
                        "shard ends before a record the manifest lists",
                    ));
                };
                let Some(&row) = plan.wanted.get(&rec.index) else {
                    continue;
                };
                remaining -= 1;
                let copies = self.copies(row, &mut rng);
                let job = |data, copy| Job {
                    data,
                    row,
                    copy,
                    shard: path.clone(),
                    index: rec.index,
                };
                let mut jobs = Vec::with_capacity(copies as usize);
                // Only a repeated (oversampled) record is cloned; the common case moves.
                for copy in 1..copies {
                    jobs.push(job(rec.data.clone(), copy));
                }
                if copies > 0 {
                    jobs.push(job(rec.data, 0));
                }
                for j in jobs {
                    let out = if shuffling {
                        buffer.push(j);
                        if buffer.len() >= self.cfg.shuffle_buffer {
                            let i = rng.random_range(0..buffer.len());
                            Some(buffer.swap_remove(i))
                        } else {
                            None
                        }
                    } else {
                        Some(j)
                    };
                    if let Some(j) = out {
                        chunk.push(j);
                    }
                    if chunk.len() >= chunk_size
                        && self.flush(&pool, &mut chunk, &mut sink).is_err()
                    {
                        return Ok(());
                    }
                }
            }
        }
        buffer.shuffle(&mut rng);
        for j in buffer {
            chunk.push(j);
            if chunk.len() >= chunk_size && self.flush(&pool, &mut chunk, &mut sink).is_err() {
                return Ok(());
            }
        }
        if self.flush(&pool, &mut chunk, &mut sink).is_err() {
            return Ok(());
        }
        let _ = sink.finish();
        Ok(())
    }

    /// 1 normally; with oversampling, the class's factor with its fractional
    /// part drawn.
    fn copies(&self, row: usize, rng: &mut ChaCha8Rng) -> u32 {
        let f = self.repeat[self.labels[row] as usize];
        let whole = f.floor();
        let extra = if f > whole && rng.random::<f64>() < f - whole {
            1
        } else {
            0
        };
        whole as u32 + extra
    }

    /// Decodes a chunk in parallel (order kept) and feeds the batcher.
    /// `Err(Stop)` when the pipeline must end (error sent or consumer gone).
    fn flush(
        &self,
        pool: &rayon::ThreadPool,
        chunk: &mut Vec<Job>,
        sink: &mut Sink,
    ) -> std::result::Result<(), Stop> {
        let jobs = std::mem::take(chunk);
        let decoded: Vec<Result<Sample>> =
            pool.install(|| jobs.into_par_iter().map(|j| self.decode(j)).collect());
        for s in decoded {
            match s {
                Ok(s) => sink.emit(s)?,
                Err(e) => {
                    let _ = self.tx.send(Err(e));
                    return Err(Stop);
                }
            }
        }
        Ok(())
    }

    fn decode(&self, job: Job) -> Result<Sample> {
        let fault = |m: String| Error::record(&job.shard, job.index, m);
        let rec = PatchRecord::decode(&job.data).map_err(&fault)?;
        let expected = self.labels[job.row];
        if rec.label != expected {
            return Err(fault(format!(
                "label {} disagrees with the manifest's {expected}",
                rec.label
            )));
        }
        if !self.cfg.pixels {
            return Ok(Sample {
                pixels: Vec::new(),
                label: expected,
                row: job.row,
                height: 0,
                width: 0,
            });
        }
        let mut img: RgbImage = image::load_from_memory(&rec.encoded)
            .map_err(|e| fault(format!("image does not decode: {e}")))?
            .to_rgb8();
        if let Some(a) = &self.cfg.augment {
            let mut rng = ChaCha8Rng::seed_from_u64(seed_of(&[
                self.cfg.seed,
                self.epoch,
                self.record_ids[job.row],
                job.copy as u64,
            ]));
            img = augment(&img, a, &mut rng).0;
        }
        let pixels = preprocess::model_input(&img, self.cfg.input_size, &self.cfg.normalization);
        let (w, h) = self.cfg.input_size.map_or(img.dimensions(), |s| (s, s));
        let (w, h) = (w as usize, h as usize);
        Ok(Sample {
            pixels,
            label: expected,
            row: job.row,
            height: h,
            width: w,
        })
    }
}

/// The index a missing record would have had, for the error message.
fn reader_index(plan: &ShardPlan, remaining: usize) -> u64 {
    plan.wanted
        .keys()
        .nth(plan.wanted.len() - remaining)
        .copied()
        .unwrap_or(0)
}

/// Batcher in front of the channel.
struct Sink<'a> {
    cfg: &'a LoaderConfig,
    tx: &'a SyncSender<Result<Batch>>,
    batch: Vec<Sample>,
}

impl<'a> Sink<'a> {
    fn new(cfg: &'a LoaderConfig, tx: &'a SyncSender<Result<Batch>>) -> Self {
        Self {
            cfg,
            tx,
            batch: Vec::with_capacity(cfg.batch_size),
        }
    }

    fn emit(&mut self, s: Sample) -> std::result::Result<(), Stop> {
        if let Some(first) = self.batch.first()
            && (first.height, first.width) != (s.height, s.width)
        {
            let _ = self.tx.send(Err(Error::Config(format!(
                "patches of different sizes ({}×{} and {}×{}) in one batch; set an input size",
                first.width, first.height, s.width, s.height
            ))));
            return Err(Stop);
        }
        self.batch.push(s);
        if self.batch.len() == self.cfg.batch_size {
            self.send()?;
        }
        Ok(())
    }

    fn send(&mut self) -> std::result::Result<(), Stop> {
        let samples = std::mem::take(&mut self.batch);
        let (height, width) = (samples[0].height, samples[0].width);
        let mut batch = Batch {
            images: Vec::with_capacity(samples.len() * 3 * height * width),
            labels: Vec::with_capacity(samples.len()),
            rows: Vec::with_capacity(samples.len()),
            height,
            width,
        };
        for s in samples {
            batch.images.extend_from_slice(&s.pixels);
            batch.labels.push(s.label);
            batch.rows.push(s.row);
        }
        self.tx.send(Ok(batch)).map_err(|_| Stop)
    }

    fn finish(&mut self) -> std::result::Result<(), Stop> {
        if !self.batch.is_empty() && !self.cfg.drop_last {
            self.send()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::toy::{ToySpec, write_toy_dataset};

    fn cfg(batch: usize) -> LoaderConfig {
        LoaderConfig {
            workers: 2,
            ..LoaderConfig::eval(batch, None, Normalization::IMAGENET)
        }
    }

    fn collect(ds: &Dataset, c: &LoaderConfig, epoch: u64) -> Vec<Batch> {
        ds.stream(c, epoch)
            .unwrap()
            .collect::<Result<Vec<_>>>()
            .unwrap()
    }

    fn ids(ds: &Dataset, batches: &[Batch]) -> Vec<u64> {
        batches
            .iter()
            .flat_map(|b| b.rows.iter().map(|&r| ds.rows()[r].record_id))
            .collect()
    }

    fn toy() -> (tempfile::TempDir, Vec<ManifestRow>) {
        let dir = tempfile::tempdir().unwrap();
        let rows = write_toy_dataset(dir.path(), &ToySpec::default()).unwrap();
        (dir, rows)
    }

    #[test]
    fn selection_and_class_statistics() {
        let (dir, rows) = toy();
        let train = Dataset::open(dir.path(), &Selection::split("train")).unwrap();
        assert_eq!(train.len(), 8 * 2 * 4);
        assert_eq!(train.class_counts(), &[32, 32]);
        assert_eq!(train.class_weights(), vec![1.0, 1.0]);
        let test_a = Dataset::open(
            dir.path(),
            &Selection::split("test").with_subset(Some("testA".into())),
        )
        .unwrap();
        assert!(test_a.rows().iter().all(|r| r.subset == "testA"));
        assert_eq!(test_a.len(), 2 * 2 * 4);
        let fold = Dataset::open(
            dir.path(),
            &Selection {
                folds: FoldFilter::Except(0),
                ..Selection::split("train")
            },
        )
        .unwrap();
        assert!(fold.rows().iter().all(|r| r.fold == Some(1)));
        assert!(Dataset::open(dir.path(), &Selection::split("nope")).is_err());

        // Inverse frequency: 3 of class 0, 1 of class 1 → 4/(2·3), 4/(2·1).
        let mut few: Vec<ManifestRow> = rows.iter().filter(|r| r.split == "val").cloned().collect();
        few.truncate(4);
        for (i, r) in few.iter_mut().enumerate() {
            r.label = (i == 0) as i64;
        }
        let ds = Dataset::from_rows(dir.path(), &Selection::split("val"), few).unwrap();
        let w = ds.class_weights();
        assert!(
            (w[0] - 4.0 / 6.0).abs() < 1e-6 && (w[1] - 2.0).abs() < 1e-6,
            "{w:?}"
        );
        assert_eq!(ds.epoch_len(true), 6);
    }

    #[test]
    fn unshuffled_order_is_manifest_order_by_shard_and_shapes_are_nchw() {
        let (dir, _) = toy();
        let ds = Dataset::open(dir.path(), &Selection::split("val")).unwrap();
        let batches = collect(&ds, &cfg(5), 0);
        let sizes: Vec<usize> = batches.iter().map(Batch::len).collect();
        assert_eq!(sizes, vec![5, 5, 5, 5, 4]);
        assert_eq!(batches[0].shape(), [5, 3, 32, 32]);
        assert_eq!(batches[0].images.len(), 5 * 3 * 32 * 32);
        // Shards in name order, records in shard order.
        let mut expected: Vec<&ManifestRow> = ds.rows().iter().collect();
        expected.sort_by(|a, b| (&a.shard, a.index_in_shard).cmp(&(&b.shard, b.index_in_shard)));
        let expected: Vec<u64> = expected.iter().map(|r| r.record_id).collect();
        assert_eq!(ids(&ds, &batches), expected);
        for b in &batches {
            for (l, &r) in b.labels.iter().zip(&b.rows) {
                assert_eq!(*l, ds.rows()[r].label);
            }
        }
        // Resizing (the mlp path).
        let small = LoaderConfig {
            input_size: Some(8),
            ..cfg(4)
        };
        assert_eq!(collect(&ds, &small, 0)[0].shape(), [4, 3, 8, 8]);
    }

    #[test]
    fn shuffling_is_seeded_complete_and_independent_of_workers() {
        let (dir, _) = toy();
        let ds = Dataset::open(dir.path(), &Selection::split("train")).unwrap();
        let shuffled = |seed, workers, epoch| {
            let c = LoaderConfig {
                shuffle: true,
                shuffle_buffer: 16,
                seed,
                workers,
                ..cfg(8)
            };
            ids(&ds, &collect(&ds, &c, epoch))
        };
        let a = shuffled(3, 1, 1);
        assert_eq!(
            a,
            shuffled(3, 3, 1),
            "worker count must not change the order"
        );
        assert_ne!(a, shuffled(4, 1, 1), "seed changes the order");
        assert_ne!(a, shuffled(3, 1, 2), "epoch changes the order");
        let mut sorted = a.clone();
        sorted.sort();
        let mut all: Vec<u64> = ds.rows().iter().map(|r| r.record_id).collect();
        all.sort();
        assert_eq!(sorted, all, "every record exactly once");
        let plain = ids(&ds, &collect(&ds, &cfg(8), 1));
        assert_ne!(a, plain);

        // Augmentation is seeded per record: same epoch, same pixels.
        let aug = LoaderConfig {
            augment: Some(AugmentConfig::default()),
            ..cfg(64)
        };
        let x = collect(&ds, &aug, 1);
        let y = collect(
            &ds,
            &LoaderConfig {
                workers: 1,
                ..aug.clone()
            },
            1,
        );
        assert_eq!(x, y);
        assert_ne!(x[0].images, collect(&ds, &cfg(64), 1)[0].images);
    }

    #[test]
    fn oversampling_balances_classes() {
        let (dir, rows) = toy();
        let mut rows: Vec<ManifestRow> = rows.into_iter().filter(|r| r.split == "train").collect();
        // Keep 8 of class 1, all 32 of class 0.
        let mut kept1 = 0;
        rows.retain(|r| {
            r.label == 0 || {
                kept1 += 1;
                kept1 <= 8
            }
        });
        let ds = Dataset::from_rows(dir.path(), &Selection::split("train"), rows).unwrap();
        let c = LoaderConfig {
            oversample: true,
            shuffle: true,
            shuffle_buffer: 64,
            ..cfg(10)
        };
        let labels: Vec<i64> = collect(&ds, &c, 0)
            .into_iter()
            .flat_map(|b| b.labels)
            .collect();
        let ones = labels.iter().filter(|&&l| l == 1).count();
        assert_eq!(ones, 32, "factor 4 exactly");
        assert_eq!(labels.len(), 64);
    }

    #[test]
    fn corrupt_record_names_shard_and_record() {
        let (dir, rows) = toy();
        let victim = rows
            .iter()
            .find(|r| r.split == "val" && r.index_in_shard == 2)
            .unwrap()
            .clone();
        let path = dir.path().join(&victim.shard);
        let mut bytes = std::fs::read(&path).unwrap();
        // A byte in the middle of record 2's data.
        let at = (victim.byte_offset + 12 + victim.record_bytes / 2) as usize;
        bytes[at] ^= 0x55;
        std::fs::write(&path, bytes).unwrap();
        let ds = Dataset::open(dir.path(), &Selection::split("val")).unwrap();
        let err = ds
            .stream(&cfg(4), 0)
            .unwrap()
            .collect::<Result<Vec<_>>>()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&victim.shard) && err.contains("record 2") && err.contains("CRC"),
            "{err}"
        );

        // A record that disagrees with the manifest is named as well.
        let mut rows2 = rows.clone();
        for r in rows2.iter_mut().filter(|r| r.split == "train") {
            if r.index_in_shard == 1 && r.shard.starts_with("train-00000") {
                r.label = 1 - r.label;
            }
        }
        let ds = Dataset::from_rows(dir.path(), &Selection::split("train"), rows2).unwrap();
        let err = ds
            .stream(&cfg(4), 0)
            .unwrap()
            .collect::<Result<Vec<_>>>()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("record 1") && err.contains("manifest"),
            "{err}"
        );
    }

    #[test]
    fn dropping_a_stream_early_stops_the_pipeline() {
        let (dir, _) = toy();
        let ds = Dataset::open(dir.path(), &Selection::split("train")).unwrap();
        let mut s = ds
            .stream(
                &LoaderConfig {
                    prefetch: 1,
                    ..cfg(2)
                },
                0,
            )
            .unwrap();
        assert!(s.next().is_some());
        drop(s); // must not hang
    }
}
