//! Transfer learning from an ImageNet backbone, in two stages:
//!
//! 1. **Frozen features** ([`super::head_stage`]). The backbone runs once
//!    over train and val and its pooled features are kept in memory; the
//!    new head then trains for `freeze_epochs` epochs on those.
//! 2. **Fine-tuning.** The backbone unfreezes (all of it, or its last N
//!    blocks) and trains end to end with the run's learning rate, usually
//!    lower than the head's.
//!
//! Both stages write the same per-epoch checkpoints and `metrics.csv` rows,
//! so the best epoch is chosen on val across both. This module holds their
//! settings ([`TransferConfig`]), the stage-2 freezing and the batch-norm
//! re-estimation that precedes stage 1 ([`adapt_batch_norm`]).

use std::path::PathBuf;

use burn::{module::Module, tensor::Device};
use serde::{Deserialize, Serialize};

use super::{
    data::{Dataset, LoaderConfig},
    error::TrainResult,
    infer::{images_tensor, to_vec},
    models::{Model, Pretrained},
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

/// The pretrained network inside `model`.
pub fn backbone(model: Model) -> TrainResult<Pretrained> {
    Pretrained::try_from(model)
        .map_err(|_| Error::Config("transfer learning needs a pretrained backbone".into()).into())
}
