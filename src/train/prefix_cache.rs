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
//! the others train uncached). Memory: the
//! activations entering the trainable blocks, e.g. 112 × 7 × 7 floats (22 KB)
//! a 112-px patch below Lite0's last 5 blocks; there is no spill to disk.

use burn::tensor::{Device, Tensor, TensorData};

use super::{
    config::TrainConfig,
    data::{Dataset, LoaderConfig},
    error::TrainResult,
    infer::{Inference, Predictions, images_tensor, no_prefix, softmax_rows, to_vec},
    models::Model,
    transfer::Unfreeze,
};
use crate::progress::Progress;

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

/// The frozen prefix's output for every record of one selection, by row.
pub struct PrefixCache {
    tail: usize,
    /// `[channels, height, width]` of one record's activations.
    shape: [usize; 3],
    values: Vec<f32>,
    labels: Vec<usize>,
}

impl PrefixCache {
    /// Runs `model`'s prefix over `data` once (inference: batch norm folded,
    /// no graph).
    pub fn build(
        model: &Model,
        tail: usize,
        data: &Dataset,
        loader: &LoaderConfig,
        device: &Device,
        progress: &Progress,
    ) -> TrainResult<Self> {
        let device = device.clone().without_autodiff();
        let model = Inference::new(model);
        let bar = progress.bar("prefix", data.len() as u64, "patches");
        let mut cache = PrefixCache {
            tail,
            shape: [0; 3],
            values: Vec::new(),
            labels: vec![0; data.len()],
        };
        for batch in data.stream(loader, 0)? {
            let batch = batch?;
            let x = model.prefix(images_tensor(&batch, &device), tail)?;
            let [_, c, h, w] = x.dims();
            if cache.values.is_empty() {
                cache.shape = [c, h, w];
                cache.values = vec![0.0; data.len() * c * h * w];
            }
            let flat = to_vec(x)?;
            let size = cache.record_size();
            for (i, &row) in batch.rows.iter().enumerate() {
                cache.values[row * size..(row + 1) * size]
                    .copy_from_slice(&flat[i * size..(i + 1) * size]);
                cache.labels[row] = batch.labels[i] as usize;
            }
            bar.inc(batch.len() as u64);
        }
        bar.finish_and_clear();
        Ok(cache)
    }

    fn record_size(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.values.len() * std::mem::size_of::<f32>()
    }

    /// The activations of `rows` as one batch on `device`.
    pub fn batch(&self, rows: &[usize], device: &Device) -> Tensor<4> {
        let size = self.record_size();
        let mut x = Vec::with_capacity(rows.len() * size);
        for &row in rows {
            x.extend_from_slice(&self.values[row * size..(row + 1) * size]);
        }
        let [c, h, w] = self.shape;
        Tensor::from_data(TensorData::new(x, [rows.len(), c, h, w]), device)
    }

    /// Logits of `model` (training device) for `rows`.
    pub fn logits(&self, model: &Model, rows: &[usize], device: &Device) -> TrainResult<Tensor<2>> {
        logits(model, self.batch(rows, device), self.tail)
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
            let logits = model.tail_logits(self.batch(chunk, &device), self.tail)?;
            let k = logits.dims()[1];
            let flat = to_vec(logits)?;
            out.probabilities.extend(softmax_rows(&flat, k));
        }
        out.labels = self.labels.clone();
        out.rows = rows;
        Ok(out)
    }
}
