//! Fine-tuning from cached activations. When fine-tuning trains only the last
//! N blocks of a backbone (`--unfreeze last:N`), everything below those
//! blocks is a fixed function of the record — the frozen blocks keep their
//! batch-norm statistics whatever `--bn-stats` says (it applies to the
//! trainable blocks), and augmentation is baked into the shards — so its
//! output is computed once per record, kept in memory, and every
//! epoch runs only the trainable blocks and the head. The batches are the
//! ones the image loader would give (the same stream, read without decoding
//! pixels), so the weights are those of the uncached loop up to float
//! rounding (`tests/pretrained.rs`).
//!
//! The backbones whose `Backbone::has_prefix` says so (EfficientNet-Lite;
//! the others train uncached). Memory: the activations entering the
//! trainable blocks, e.g. 112 × 7 × 7 floats (22 KB) a 112-px patch below
//! Lite0's last 5 blocks, 24 × 28 × 28 (75 KB) below its last 13. A cache
//! larger than [`Spill::memory`] goes to a file in the run folder instead
//! (`prefix-cache-<selection>.f32`, removed when training ends) and each
//! batch reads its rows from there: the same values, so the same weights
//! (`tests/pretrained.rs`), at the cost of the reads (the page cache keeps
//! what fits).
//!
//! A fresh run builds the caches before the frozen-feature stage, whose
//! features are then the tail's output on them
//! ([`super::head_stage::FeatureCache::from_prefix`]): the prefix runs once
//! for both stages. A resumed run builds them when fine-tuning starts.

use std::{
    fs::File,
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
};

use burn::tensor::{Device, Tensor, TensorData};

use super::{
    config::TrainConfig,
    data::{Dataset, LoaderConfig},
    error::TrainResult,
    infer::{Inference, Predictions, images_tensor, no_prefix, softmax_rows, to_vec},
    models::Model,
    transfer::Unfreeze,
};
use crate::{error::IoContext as _, progress::Progress};

/// The number of trainable tail blocks when `cfg`'s fine-tuning can run from
/// cached activations of `model`; `None` when it cannot (the whole backbone
/// trains, patches are augmented on the fly, or the architecture has no
/// prefix split).
pub fn tail_blocks(cfg: &TrainConfig, model: &Model) -> Option<usize> {
    let t = cfg.transfer.as_ref()?;
    if !t.cache_prefix || cfg.augment.is_some() {
        return None;
    }
    let blocks = model.prefix_blocks()?;
    match t.unfreeze {
        Unfreeze::Last(n) if n < blocks => Some(n),
        Unfreeze::None => Some(0),
        Unfreeze::Last(_) | Unfreeze::All => None,
    }
}

/// Logits of `model` (training device) from cached prefix activations.
pub fn logits(model: &Model, activations: Tensor<4>, tail: usize) -> TrainResult<Tensor<2>> {
    model.tail_logits(activations, tail).ok_or_else(no_prefix)
}

/// The caches of the training selection and, when there is one, of the
/// validation selection.
pub struct PrefixCaches {
    pub tail: usize,
    pub train: PrefixCache,
    pub val: Option<PrefixCache>,
}

impl PrefixCaches {
    /// Runs `model`'s prefix below its last `tail` blocks over `train` and
    /// `val` once (in `loader`'s order, which must not shuffle), within the
    /// memory `spill` allows.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        model: &Model,
        tail: usize,
        train: &Dataset,
        val: Option<&Dataset>,
        loader: &LoaderConfig,
        device: &Device,
        spill: &Spill,
        progress: &Progress,
    ) -> TrainResult<Self> {
        let started = std::time::Instant::now();
        let build = |data, name, spill: &Spill| {
            PrefixCache::build(model, tail, data, name, loader, device, spill, progress)
        };
        let train = build(train, "train", spill)?;
        let val = val
            .map(|v| build(v, "val", &spill.after(&train)))
            .transpose()?;
        let caches = Self { tail, train, val };
        tracing::info!(
            "activations below the last {tail} blocks cached ({:.0} MB in memory{}, {:.1} s)",
            caches.all().map(PrefixCache::bytes).sum::<usize>() as f64 / 1e6,
            if caches.all().any(|c| c.spilled().is_some()) {
                ", the rest in the run folder"
            } else {
                ""
            },
            started.elapsed().as_secs_f64()
        );
        Ok(caches)
    }

    fn all(&self) -> impl Iterator<Item = &PrefixCache> {
        std::iter::once(&self.train).chain(&self.val)
    }
}

/// Where a cache may go: at most `memory` bytes in RAM, the rest to a file
/// in `dir`.
#[derive(Clone, Debug)]
pub struct Spill {
    pub memory: usize,
    pub dir: PathBuf,
}

impl Spill {
    /// A run's budget: `memory` bytes (default [`default_memory`]), the rest
    /// to `run_dir`.
    pub fn in_run(run_dir: &Path, memory: Option<usize>) -> Self {
        Spill {
            memory: memory.unwrap_or_else(default_memory),
            dir: run_dir.to_path_buf(),
        }
    }

    /// What is left of the memory budget after `cache` took its share.
    pub fn after(&self, cache: &PrefixCache) -> Spill {
        Spill {
            memory: self.memory.saturating_sub(cache.bytes()),
            dir: self.dir.clone(),
        }
    }
}

/// Half of the memory the system has available (Linux' `MemAvailable`), or
/// 4 GiB where that cannot be read: the default in-memory budget of the cache.
pub fn default_memory() -> usize {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
            let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024 / 2)
        })
        .unwrap_or(4 << 30)
}

/// The activations: in memory, or spilled to a file of little-endian `f32`
/// rows (removed on drop).
enum Storage {
    Memory(Vec<f32>),
    File { file: File, path: PathBuf },
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Storage::File { path, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The frozen prefix's output for every record of one selection, by row.
pub struct PrefixCache {
    tail: usize,
    /// `[channels, height, width]` of one record's activations.
    shape: [usize; 3],
    storage: Storage,
    labels: Vec<usize>,
    /// The rows of each batch the loader streamed, in order.
    batches: Vec<Vec<usize>>,
}

impl PrefixCache {
    /// Runs `model`'s prefix over `data` (the selection `name`) once
    /// (inference: batch norm folded, no graph), keeping the activations in
    /// memory when they fit `spill.memory`, else in a file in `spill.dir`.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        model: &Model,
        tail: usize,
        data: &Dataset,
        name: &str,
        loader: &LoaderConfig,
        device: &Device,
        spill: &Spill,
        progress: &Progress,
    ) -> TrainResult<Self> {
        let device = device.clone().without_autodiff();
        let model = Inference::new(model);
        let bar = progress.bar("prefix", data.len() as u64, "patches");
        let mut cache = PrefixCache {
            tail,
            shape: [0; 3],
            storage: Storage::Memory(Vec::new()),
            labels: vec![0; data.len()],
            batches: Vec::new(),
        };
        let mut first = true;
        for batch in data.stream(loader, 0)? {
            let batch = batch?;
            let x = model.prefix(images_tensor(&batch, &device), tail)?;
            let [_, c, h, w] = x.dims();
            if first {
                first = false;
                cache.shape = [c, h, w];
                cache.storage = Storage::new(data.len(), c * h * w, name, spill)?;
            }
            let flat = to_vec(x)?;
            let size = cache.record_size();
            for (i, &row) in batch.rows.iter().enumerate() {
                cache
                    .storage
                    .write(row, size, &flat[i * size..(i + 1) * size])?;
                cache.labels[row] = batch.labels[i] as usize;
            }
            cache.batches.push(batch.rows.clone());
            bar.inc(batch.len() as u64);
        }
        bar.finish_and_clear();
        Ok(cache)
    }

    fn record_size(&self) -> usize {
        self.shape.iter().product()
    }

    /// Records cached.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The records' labels, by row.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// The rows of each batch the loader that built the cache streamed, in
    /// order.
    pub fn batches(&self) -> &[Vec<usize>] {
        &self.batches
    }

    /// Blocks the cached activations still have to go through.
    pub fn tail(&self) -> usize {
        self.tail
    }

    /// Bytes held in memory (0 once spilled).
    pub fn bytes(&self) -> usize {
        match &self.storage {
            Storage::Memory(values) => values.len() * size_of::<f32>(),
            Storage::File { .. } => 0,
        }
    }

    /// The spill file, when the cache did not fit in memory.
    pub fn spilled(&self) -> Option<&Path> {
        match &self.storage {
            Storage::Memory(_) => None,
            Storage::File { path, .. } => Some(path),
        }
    }

    /// The activations of `rows` as one batch on `device`.
    pub fn batch(&self, rows: &[usize], device: &Device) -> TrainResult<Tensor<4>> {
        let size = self.record_size();
        let mut x = Vec::with_capacity(rows.len() * size);
        for &row in rows {
            self.storage.read(row, size, &mut x)?;
        }
        let [c, h, w] = self.shape;
        Ok(Tensor::from_data(
            TensorData::new(x, [rows.len(), c, h, w]),
            device,
        ))
    }

    /// Logits of `model` (training device) for `rows`.
    pub fn logits(&self, model: &Model, rows: &[usize], device: &Device) -> TrainResult<Tensor<2>> {
        logits(model, self.batch(rows, device)?, self.tail)
    }

    /// `model`'s class probabilities for every cached record, in row order
    /// (inference mode), as [`super::infer::predict`] gives them.
    pub fn predictions(
        &self,
        model: &Model,
        batch_size: usize,
        device: &Device,
    ) -> TrainResult<Predictions> {
        let device = device.clone().without_autodiff();
        let model = Inference::new(model);
        let rows: Vec<usize> = (0..self.labels.len()).collect();
        let mut out = Predictions::default();
        for chunk in rows.chunks(batch_size.max(1)) {
            let logits = model.tail_logits(self.batch(chunk, &device)?, self.tail)?;
            let k = logits.dims()[1];
            let flat = to_vec(logits)?;
            out.probabilities.extend(softmax_rows(&flat, k));
        }
        out.labels = self.labels.clone();
        out.rows = rows;
        Ok(out)
    }
}

impl Storage {
    /// Room for `records` rows of `size` floats: in memory within
    /// `spill.memory` bytes, else a file of that length.
    fn new(records: usize, size: usize, name: &str, spill: &Spill) -> TrainResult<Self> {
        let bytes = records * size * size_of::<f32>();
        if bytes <= spill.memory {
            return Ok(Storage::Memory(vec![0.0; records * size]));
        }
        let path = spill.dir.join(format!("prefix-cache-{name}.f32"));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .at(&path)?;
        tracing::info!(
            "the prefix cache ({:.0} MB) is larger than its memory budget ({:.0} MB): \
             spilling it to {}",
            bytes as f64 / 1e6,
            spill.memory as f64 / 1e6,
            path.display()
        );
        // Removed on drop from here on, also when sizing or filling it fails.
        let storage = Storage::File { file, path };
        if let Storage::File { file, path } = &storage {
            file.set_len(bytes as u64).at(path)?;
        }
        Ok(storage)
    }

    fn write(&mut self, row: usize, size: usize, values: &[f32]) -> TrainResult<()> {
        match self {
            Storage::Memory(all) => all[row * size..(row + 1) * size].copy_from_slice(values),
            Storage::File { file, path } => {
                let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                file.seek(SeekFrom::Start((row * size * size_of::<f32>()) as u64))
                    .and_then(|_| file.write_all(&bytes))
                    .at(&*path)?;
            }
        }
        Ok(())
    }

    /// Appends row `row` to `out`.
    fn read(&self, row: usize, size: usize, out: &mut Vec<f32>) -> TrainResult<()> {
        match self {
            Storage::Memory(all) => out.extend_from_slice(&all[row * size..(row + 1) * size]),
            Storage::File { file, path } => {
                let mut bytes = vec![0u8; size * size_of::<f32>()];
                let mut reader = file;
                reader
                    .seek(SeekFrom::Start((row * bytes.len()) as u64))
                    .and_then(|_| reader.read_exact(&mut bytes))
                    .at(path)?;
                out.extend(
                    bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
            }
        }
        Ok(())
    }
}
