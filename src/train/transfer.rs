//! Transfer learning from an ImageNet backbone, in two stages:
//!
//! 1. **Frozen features.** The backbone runs once over train and val, in
//!    inference mode, and its pooled features are kept in memory (1,280
//!    floats a patch for EfficientNet-Lite and MobileNetV2, 512 or 2,048 for
//!    ResNets, 2,048 for Inception-v3: about 10 MB for the GlaS set); the
//!    new head then trains for
//!    `freeze_epochs` epochs on those, which costs milliseconds an epoch.
//! 2. **Fine-tuning.** The backbone unfreezes (all of it, or its last N
//!    blocks) and trains end to end with the run's learning rate, usually
//!    lower than the head's.
//!
//! Both stages write the same per-epoch checkpoints and `metrics.csv` rows,
//! so the best epoch is chosen on val across both.

use std::path::PathBuf;

use burn::{
    module::Module,
    nn::loss::CrossEntropyLoss,
    optim::{GradientsParams, ModuleOptimizer},
    tensor::{Device, Int, Tensor, TensorData},
};
use rand::{SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{
    data::{Dataset, LoaderConfig, seed_of},
    error::{TrainError, TrainResult},
    infer::{Inference, Predictions, images_tensor, softmax_rows, to_vec},
    models::{EfficientNet, InceptionV3, MobileNetV2, Model, ResNet, pretrained},
};
use crate::{error::Error, progress::Progress};

/// What trains in stage 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unfreeze {
    /// The whole backbone.
    All,
    /// Only the last N blocks (and the head convolution).
    Last(usize),
    /// Nothing: stage 2 trains the head alone, on live (augmentable) images.
    None,
}

impl std::str::FromStr for Unfreeze {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Unfreeze::All),
            "none" => Ok(Unfreeze::None),
            _ => s
                .strip_prefix("last:")
                .and_then(|n| n.parse().ok())
                .map(Unfreeze::Last)
                .ok_or_else(|| format!("unknown --unfreeze {s:?} (all, none or last:N)")),
        }
    }
}

impl std::fmt::Display for Unfreeze {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unfreeze::All => f.write_str("all"),
            Unfreeze::None => f.write_str("none"),
            Unfreeze::Last(n) => write!(f, "last:{n}"),
        }
    }
}

/// Batch-norm statistics while fine-tuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BnPolicy {
    Frozen,
    Train,
}

crate::choices!(BnPolicy {
    Frozen = "frozen": "Keep ImageNet's running statistics (safe with small batches)",
    Train = "train": "Update them from the training batches",
});

/// The transfer-learning part of a run's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransferConfig {
    /// The ImageNet `.pth` the backbone started from (provenance).
    pub weights: PathBuf,
    /// Stage 1 epochs (head on cached features).
    pub freeze_epochs: usize,
    /// Stage 1 learning rate; stage 2 uses the run's `lr`.
    pub head_lr: f64,
    pub unfreeze: Unfreeze,
    pub bn: BnPolicy,
    /// Re-estimate the batch-norm statistics on the training patches before
    /// stage 1 ([`adapt_batch_norm`]).
    #[serde(default)]
    pub adapt_bn: bool,
    /// Fine-tune from cached activations of the frozen prefix where that
    /// gives the same result ([`super::prefix_cache`]); off only to compare.
    #[serde(default = "cache_prefix_on")]
    pub cache_prefix: bool,
}

fn cache_prefix_on() -> bool {
    true
}

impl TransferConfig {
    /// Applies the stage-2 freezing policy (also after loading a checkpoint:
    /// frozen flags are not part of the saved parameters).
    pub fn stage2(&self, model: Model) -> Model {
        let Ok(net) = Pretrained::try_from(model) else {
            unreachable!("TrainConfig::validate pairs transfer settings with pretrained models")
        };
        let blocks = match self.unfreeze {
            Unfreeze::All => net.num_blocks(),
            Unfreeze::Last(n) => n.min(net.num_blocks()),
            Unfreeze::None => 0,
        };
        let freeze_bn = self.bn == BnPolicy::Frozen || self.unfreeze == Unfreeze::None;
        net.freeze_backbone(blocks, freeze_bn).into()
    }
}

/// A network with ImageNet weights: a backbone that pools features and a
/// classifier on top, whatever the architecture.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Pretrained {
    EfficientNet(EfficientNet),
    ResNet(ResNet),
    MobileNetV2(MobileNetV2),
    InceptionV3(InceptionV3),
}

impl TryFrom<Model> for Pretrained {
    type Error = Model;
    fn try_from(model: Model) -> Result<Self, Model> {
        match model {
            Model::EfficientNet(m) => Ok(Pretrained::EfficientNet(m)),
            Model::ResNet(m) => Ok(Pretrained::ResNet(m)),
            Model::MobileNetV2(m) => Ok(Pretrained::MobileNetV2(m)),
            Model::InceptionV3(m) => Ok(Pretrained::InceptionV3(m)),
            other => Err(other),
        }
    }
}

impl From<Pretrained> for Model {
    fn from(p: Pretrained) -> Model {
        match p {
            Pretrained::EfficientNet(m) => Model::EfficientNet(m),
            Pretrained::ResNet(m) => Model::ResNet(m),
            Pretrained::MobileNetV2(m) => Model::MobileNetV2(m),
            Pretrained::InceptionV3(m) => Model::InceptionV3(m),
        }
    }
}

impl Pretrained {
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Pretrained::EfficientNet(m) => m.features(images),
            Pretrained::ResNet(m) => m.features(images),
            Pretrained::MobileNetV2(m) => m.features(images),
            Pretrained::InceptionV3(m) => m.features(images),
        }
    }

    pub fn head(&self, features: Tensor<2>) -> Tensor<2> {
        match self {
            Pretrained::EfficientNet(m) => m.head(features),
            Pretrained::ResNet(m) => m.head(features),
            Pretrained::MobileNetV2(m) => m.head(features),
            Pretrained::InceptionV3(m) => m.head(features),
        }
    }

    pub fn num_blocks(&self) -> usize {
        match self {
            Pretrained::EfficientNet(m) => m.num_blocks(),
            Pretrained::ResNet(m) => m.num_blocks(),
            Pretrained::MobileNetV2(m) => m.num_blocks(),
            Pretrained::InceptionV3(m) => m.num_blocks(),
        }
    }

    pub fn freeze_backbone(self, trainable_blocks: usize, freeze_bn: bool) -> Self {
        match self {
            Pretrained::EfficientNet(m) => {
                Pretrained::EfficientNet(m.freeze_backbone(trainable_blocks, freeze_bn))
            }
            Pretrained::ResNet(m) => {
                Pretrained::ResNet(m.freeze_backbone(trainable_blocks, freeze_bn))
            }
            Pretrained::MobileNetV2(m) => {
                Pretrained::MobileNetV2(m.freeze_backbone(trainable_blocks, freeze_bn))
            }
            Pretrained::InceptionV3(m) => {
                Pretrained::InceptionV3(m.freeze_backbone(trainable_blocks, freeze_bn))
            }
        }
    }

    /// Loads the ImageNet weights of `path` (without their 1000-class head).
    pub fn load_imagenet(self, path: &std::path::Path) -> TrainResult<Self> {
        Ok(match self {
            Pretrained::EfficientNet(m) => {
                Pretrained::EfficientNet(pretrained::load_efficientnet(m, path, false)?)
            }
            Pretrained::ResNet(m) => Pretrained::ResNet(pretrained::load_resnet(m, path, false)?),
            Pretrained::MobileNetV2(m) => {
                Pretrained::MobileNetV2(pretrained::load_mobilenet_v2(m, path, false)?)
            }
            Pretrained::InceptionV3(m) => {
                Pretrained::InceptionV3(pretrained::load_inception_v3(m, path, false)?)
            }
        })
    }
}

/// Re-estimates every batch norm's running statistics on `data` (AdaBN, Li
/// et al. 2016): one pass in training mode with no gradient, so each norm's
/// running mean and variance move from ImageNet's towards this tissue's
/// (burn's momentum, 0.1 a batch: after the ~25 batches of the GlaS training
/// patches, ImageNet's statistics keep a weight of 0.9^25 ≈ 7%). This is
/// what a PyTorch loop does to a frozen backbone left in `train()` mode,
/// done once, so that the frozen-feature stage can still cache. `loader`
/// should shuffle: a batch's statistics must mix images as a training batch
/// does. `device` is the training (autodiff) device.
pub fn adapt_batch_norm(
    model: Pretrained,
    data: &Dataset,
    loader: &LoaderConfig,
    device: &Device,
    progress: &Progress,
) -> TrainResult<Pretrained> {
    // Training flags on (batch statistics, running averages updated),
    // gradients off (no graph is recorded).
    let model = model.unfreeze().no_grad();
    let bar = progress.bar("adapt bn", data.len() as u64, "patches");
    for batch in data.stream(loader, 0)? {
        let batch = batch?;
        // Only the running statistics this updates are wanted; reading one
        // value back makes the (possibly lazy) backend run the pass.
        let pooled = model.features(images_tensor(&batch, device));
        let _: Vec<f32> = to_vec(pooled.slice([0..1, 0..1]))?;
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    Ok(model.unfreeze())
}

/// Pooled features of every record of `data`, in data order.
pub struct FeatureCache {
    /// Width of one feature vector.
    pub width: usize,
    pub features: Vec<f32>,
    pub labels: Vec<i64>,
    pub rows: Vec<usize>,
}

impl FeatureCache {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Runs the frozen backbone over `data` once (inference: batch norm
    /// folded where [`Inference`] can, no graph; `loader` must not shuffle).
    pub fn build(
        model: &Pretrained,
        data: &Dataset,
        loader: &LoaderConfig,
        device: &Device,
        progress: &Progress,
        stage: &str,
    ) -> TrainResult<Self> {
        let device = device.clone().without_autodiff();
        let model = Inference::of_pretrained(model);
        let bar = progress.bar(stage, data.len() as u64, "patches");
        let mut out = FeatureCache {
            width: 0,
            features: Vec::new(),
            labels: Vec::with_capacity(data.len()),
            rows: Vec::with_capacity(data.len()),
        };
        for batch in data.stream(loader, 0)? {
            let batch = batch?;
            let f = model.features(images_tensor(&batch, &device))?;
            out.width = f.dims()[1];
            out.features.extend(to_vec(f)?);
            out.labels.extend_from_slice(&batch.labels);
            out.rows.extend_from_slice(&batch.rows);
            bar.inc(batch.len() as u64);
        }
        bar.finish_and_clear();
        Ok(out)
    }

    fn batch(&self, items: &[usize], device: &Device) -> (Tensor<2>, Tensor<1, Int>) {
        let w = self.width;
        let mut x = Vec::with_capacity(items.len() * w);
        let mut y = Vec::with_capacity(items.len());
        for &i in items {
            x.extend_from_slice(&self.features[i * w..(i + 1) * w]);
            y.push(self.labels[i]);
        }
        (
            Tensor::from_data(TensorData::new(x, [items.len(), w]), device),
            Tensor::from_data(TensorData::new(y, [items.len()]), device),
        )
    }
}

/// What one stage-1 epoch measured.
pub struct HeadEpoch {
    pub loss: f64,
    pub correct: usize,
    pub seen: usize,
}

/// One epoch of the head on cached features: shuffled (seeded by `seed`),
/// `batch_size` at a time.
#[allow(clippy::too_many_arguments)]
pub fn head_epoch(
    model: Pretrained,
    optim: &mut ModuleOptimizer,
    cache: &FeatureCache,
    loss_fn: &CrossEntropyLoss,
    batch_size: usize,
    lr: f64,
    seed: u64,
    device: &Device,
) -> TrainResult<(Pretrained, HeadEpoch)> {
    let mut order: Vec<usize> = (0..cache.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed_of(&[seed, 0x4ead])));
    let mut model = model;
    let mut stats = HeadEpoch {
        loss: 0.0,
        correct: 0,
        seen: 0,
    };
    let batch_size = batch_size.max(1);
    for (b, items) in order.chunks(batch_size).enumerate() {
        let (x, y) = cache.batch(items, device);
        let logits = model.head(x);
        let loss = loss_fn.forward(logits.clone(), y);
        let value: f32 = loss.clone().into_scalar();
        if !value.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                epoch: 0,
                batch: b + 1,
                value,
                lr,
            });
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lr, model, grads);
        let k = logits.dims()[1];
        let flat = to_vec(logits)?;
        stats.correct += flat
            .chunks(k)
            .zip(items)
            .filter(|(row, i)| {
                let p: Vec<f64> = row.iter().map(|&v| v as f64).collect();
                super::metrics::argmax(&p) == cache.labels[**i] as usize
            })
            .count();
        stats.loss += value as f64 * items.len() as f64;
        stats.seen += items.len();
    }
    Ok((model, stats))
}

/// The head's class probabilities on cached features (inference mode).
pub fn head_predictions(
    model: &Pretrained,
    cache: &FeatureCache,
    device: &Device,
) -> TrainResult<Predictions> {
    let device = device.clone().without_autodiff();
    let model = model.valid();
    let mut out = Predictions::default();
    let items: Vec<usize> = (0..cache.len()).collect();
    for chunk in items.chunks(256) {
        let (x, _) = cache.batch(chunk, &device);
        let logits = model.head(x);
        let k = logits.dims()[1];
        out.probabilities.extend(softmax_rows(&to_vec(logits)?, k));
    }
    out.labels = cache.labels.iter().map(|&l| l as usize).collect();
    out.rows = cache.rows.clone();
    Ok(out)
}

/// The pretrained network inside `model`.
pub fn backbone(model: Model) -> TrainResult<Pretrained> {
    Pretrained::try_from(model)
        .map_err(|_| Error::Config("transfer learning needs a pretrained backbone".into()).into())
}
