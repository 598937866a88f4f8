//! Inference with a model: tensors in and out, and [`Predictions`] over a
//! selection — what `evaluate`, cross-validation, `predict`, transfer
//! learning and validation during training share. (A run's kept model is
//! loaded by [`super::run::load_run_model`].)
//!
//! Inference runs an [`Inference`] copy of the model: on the inner
//! (non-autodiff) backend, so no graph is recorded, and for EfficientNet-Lite
//! with every batch norm folded into the convolution before it
//! (docs/BENCHMARKS.md has the speed-up). The folded network gives the same
//! logits up to float rounding (`models::efficientnet` tests and
//! `tests/pretrained.rs`).

use burn::{
    module::Module,
    tensor::{Device, Tensor, TensorData},
};

use super::{
    data::{Batch, Dataset, LoaderConfig},
    error::TrainResult,
    metrics::argmax,
    models::{FoldedEfficientNet, Model, Pretrained},
};
use crate::{error::Error, progress::Progress};

/// Images of a batch as a `[n, c, h, w]` tensor on `device`, laid out in
/// memory channels-last (`[n, h, w, c]`, viewed through a permutation).
/// LibTorch's CPU kernels carry the layout on where they can, as PyTorch's
/// do for such input: EfficientNet-Lite0's training step is 1.2× faster
/// (docs/BENCHMARKS.md; CUDA not measured).
/// flex's first operation copies the view into its own layout: the same
/// values, so the same results (`tests/train.rs`' recorded digests).
pub fn images_tensor(batch: &Batch, device: &Device) -> Tensor<4> {
    let [n, c, h, w] = batch.shape();
    // `max(1)`: an empty image has no values to move (and chunks no size).
    let plane = (h * w).max(1);
    let image = (c * plane).max(1);
    let mut nhwc = vec![0f32; batch.images.len()];
    for (chw, hwc) in batch
        .images
        .chunks_exact(image)
        .zip(nhwc.chunks_exact_mut(image))
    {
        for (channel, values) in chw.chunks_exact(plane).enumerate() {
            for (pixel, v) in values.iter().enumerate() {
                hwc[pixel * c + channel] = *v;
            }
        }
    }
    Tensor::<4>::from_data(TensorData::new(nhwc, [n, h, w, c]), device).permute([0, 3, 1, 2])
}

/// A tensor's values, read back to the host.
pub fn to_vec<const D: usize>(t: Tensor<D>) -> TrainResult<Vec<f32>> {
    t.into_data()
        .try_to_vec::<f32>()
        .map_err(|e| Error::Config(format!("unexpected tensor data: {e:?}")).into())
}

/// Row-wise softmax of `[n, k]` logits held flat.
pub fn softmax_rows(logits: &[f32], k: usize) -> Vec<Vec<f64>> {
    logits
        .chunks(k)
        .map(|row| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let exps: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
            let sum: f64 = exps.iter().sum();
            exps.into_iter().map(|e| e / sum).collect()
        })
        .collect()
}

/// A model for inference only: its inner-backend copy (`valid()`: batch
/// norm uses its running statistics, dropout is off, nothing records a
/// graph), with EfficientNet-Lite's batch norms folded into its convolutions.
/// The other architectures run as they are.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Inference {
    Folded(FoldedEfficientNet),
    Plain(Model),
}

impl Inference {
    pub fn new(model: &Model) -> Self {
        match model.valid() {
            Model::EfficientNet(m) => Inference::Folded(m.folded()),
            other => Inference::Plain(other),
        }
    }

    pub fn of_pretrained(model: &Pretrained) -> Self {
        match model.valid() {
            Pretrained::EfficientNet(m) => Inference::Folded(m.folded()),
            other => Inference::Plain(other.into()),
        }
    }

    /// `[n, 3, h, w]` normalised images → `[n, classes]` logits.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Inference::Folded(m) => m.forward(images),
            Inference::Plain(m) => m.forward(images),
        }
    }

    /// Pooled backbone features (pretrained architectures only).
    pub fn features(&self, images: Tensor<4>) -> TrainResult<Tensor<2>> {
        match self {
            Inference::Folded(m) => Ok(m.features(images)),
            Inference::Plain(m) => m.features(images).ok_or_else(|| {
                Error::Config("this architecture has no pooled features".into()).into()
            }),
        }
    }

    /// The frozen prefix: everything below the last `tail` blocks.
    pub fn prefix(&self, images: Tensor<4>, tail: usize) -> TrainResult<Tensor<4>> {
        match self {
            Inference::Folded(m) => Ok(m.prefix(images, tail)),
            Inference::Plain(m) => m.prefix(images, tail).ok_or_else(no_prefix),
        }
    }

    /// Pooled features from [`prefix`](Self::prefix)'s output: the last
    /// `tail` blocks, the head convolution and pooling. With
    /// [`prefix`](Self::prefix), the same values as
    /// [`features`](Self::features) (the same operations, split in two).
    pub fn tail_features(&self, activations: Tensor<4>, tail: usize) -> TrainResult<Tensor<2>> {
        match self {
            Inference::Folded(m) => Ok(m.tail_features(activations, tail)),
            Inference::Plain(m) => m.tail_features(activations, tail).ok_or_else(no_prefix),
        }
    }

    /// Logits from [`prefix`](Self::prefix)'s output: the last `tail`
    /// blocks, the head convolution, pooling and the classifier.
    pub fn tail_logits(&self, activations: Tensor<4>, tail: usize) -> TrainResult<Tensor<2>> {
        match self {
            Inference::Folded(m) => Ok(m.head(m.tail_features(activations, tail))),
            Inference::Plain(m) => m.tail_logits(activations, tail).ok_or_else(no_prefix),
        }
    }
}

/// No prefix split: only EfficientNet-Lite has one.
pub fn no_prefix() -> super::error::TrainError {
    Error::Config("no cached prefix for this architecture".into()).into()
}

/// Class probabilities of every record of a selection, in data order.
#[derive(Clone, Debug, Default)]
pub struct Predictions {
    /// Positions in [`Dataset::rows`].
    pub rows: Vec<usize>,
    pub labels: Vec<usize>,
    pub probabilities: Vec<Vec<f64>>,
}

impl Predictions {
    /// Mean cross-entropy (natural log), unweighted.
    pub fn loss(&self) -> f64 {
        if self.labels.is_empty() {
            return f64::NAN;
        }
        let sum: f64 = self
            .labels
            .iter()
            .zip(&self.probabilities)
            .map(|(&l, p)| -p.get(l).copied().unwrap_or(0.0).max(1e-12).ln())
            .sum();
        sum / self.labels.len() as f64
    }

    pub fn predicted(&self) -> Vec<usize> {
        self.probabilities.iter().map(|p| argmax(p)).collect()
    }

    /// Probability of class `c` for every record.
    pub fn scores(&self, c: usize) -> Vec<f64> {
        self.probabilities
            .iter()
            .map(|p| p.get(c).copied().unwrap_or(0.0))
            .collect()
    }
}

/// Runs `model` in inference mode over `data`.
pub fn predict(
    model: &Model,
    data: &Dataset,
    loader: &LoaderConfig,
    device: &Device,
    progress: &Progress,
    stage: &str,
) -> TrainResult<Predictions> {
    let device = device.clone().without_autodiff();
    let model = Inference::new(model);
    let k = data.num_classes();
    let bar = progress.bar(stage, data.len() as u64, "patches");
    let mut out = Predictions::default();
    for batch in data.stream(loader, 0)? {
        let batch = batch?;
        let logits = model.forward(images_tensor(&batch, &device));
        out.probabilities.extend(softmax_rows(&to_vec(logits)?, k));
        out.labels.extend(batch.labels.iter().map(|&l| l as usize));
        out.rows.extend_from_slice(&batch.rows);
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_tensor_holds_the_batch_in_nchw_order() {
        let [n, h, w] = [2, 3, 5];
        let batch = Batch {
            images: (0..n * 3 * h * w).map(|v| v as f32).collect(),
            labels: vec![0; n],
            rows: (0..n).collect(),
            height: h,
            width: w,
        };
        let t = images_tensor(&batch, &Device::default());
        assert_eq!(t.dims(), [n, 3, h, w]);
        assert_eq!(to_vec(t).unwrap(), batch.images);
    }

    #[test]
    fn softmax_and_loss() {
        let p = softmax_rows(&[0.0, 0.0, 10.0, -10.0], 2);
        assert!((p[0][0] - 0.5).abs() < 1e-12);
        assert!(p[1][0] > 0.999);
        let preds = Predictions {
            rows: vec![0, 1],
            labels: vec![0, 0],
            probabilities: p,
        };
        assert!((preds.loss() - (2f64.ln() + 2e-9) / 2.0).abs() < 1e-6);
        assert_eq!(preds.predicted(), vec![0, 0]);
    }
}
