//! Inception-v3 (Szegedy et al. 2016) as torchvision builds it
//! (`torchvision.models.Inception3`), so that its ImageNet `.pth`
//! (`inception_v3_google-0cc3c7bd.pth`) loads by name: the fields carry
//! torchvision's attribute names (`Conv2d_1a_3x3`, `Mixed_6b.branch7x7_2`,
//! …), hence `non_snake_case` below. Every convolution is a `BasicConv2d`:
//! conv without bias, batch norm with epsilon 0.001, ReLU.
//!
//! **No auxiliary classifier.** torchvision's `AuxLogits` head only adds a
//! second loss on `Mixed_6e` while training ImageNet from scratch and is
//! never used for predictions; histoshard trains and predicts without it,
//! and loading skips the file's `AuxLogits.*` tensors
//! ([`is_aux_logits`]).
//!
//! **Input normalisation.** torchvision's pretrained Inception is built with
//! `transform_input=True`: it takes ImageNet-normalised input and maps it
//! back to `(x − 0.5) / 0.5` of the [0, 1] image, which is what the ported
//! Google weights were trained on. The network here has no such step; its
//! [`NORMALIZATION`] is that `(x − 0.5) / 0.5` directly, so a [0, 1] patch
//! reaches `Conv2d_1a_3x3` exactly as in torchvision's pretrained model, and
//! an export loads into `inception_v3(transform_input=False)`.
//!
//! Any input of at least 75×75 works (torchvision's `min_size`); 299×299
//! is what the weights were trained at.
#![allow(non_snake_case)] // torchvision's attribute names, also in the derived code

use burn::{
    config::Config,
    module::Module,
    nn::{
        Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d,
        pool::{
            AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, AvgPool2dConfig, MaxPool2d, MaxPool2dConfig,
        },
    },
    tensor::{Device, Tensor, activation::relu},
};
use std::path::Path;

use super::{
    Architecture, Backbone, LOAD_STATE_DICT, ModelKind,
    layers::{ConvBn, ConvBnConfig, set_trainable},
    pretrained::{load_checked, pth_store},
};
use crate::preprocess::Normalization;

/// `(x − 0.5) / 0.5`: what torchvision's `transform_input=True` turns
/// ImageNet-normalised input into (see the module documentation).
pub const NORMALIZATION: Normalization = Normalization {
    mean: [0.5; 3],
    std: [0.5; 3],
};

/// Channels of the pooled features (`Mixed_7c`'s output).
pub const FEATURES: usize = 2048;

/// The smallest input side the network's downsampling leaves a pixel of.
pub const MIN_SIDE: usize = 75;

/// Whether a tensor of torchvision's state dict belongs to the auxiliary
/// classifier, which this network leaves out.
pub fn is_aux_logits(key: &str) -> bool {
    key.starts_with("AuxLogits.")
}

#[derive(Config, Debug)]
pub struct InceptionV3Config {
    #[config(default = 2)]
    pub num_classes: usize,
    /// Dropout before the classifier (torchvision's default, 0.5).
    #[config(default = 0.5)]
    pub dropout: f64,
}

/// torchvision's `BasicConv2d`: a `ConvBn` with batch-norm epsilon 0.001,
/// no padding unless given.
fn basic(input: usize, output: usize, kernel: [usize; 2]) -> ConvBnConfig {
    ConvBnConfig::new(input, output, kernel).with_epsilon(1e-3)
}

/// `BasicConv2d.forward`: conv, batch norm, ReLU.
fn run(c: &ConvBn, x: Tensor<4>) -> Tensor<4> {
    relu(c.forward(x))
}

/// `F.avg_pool2d(x, 3, stride=1, padding=1)`, padding counted (PyTorch's default).
fn avg_pool_3x3(x: Tensor<4>) -> Tensor<4> {
    AvgPool2dConfig::new([3, 3])
        .with_strides([1, 1])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_count_include_pad(true)
        .init()
        .forward(x)
}

/// `F.max_pool2d(x, 3, stride=2)`.
fn max_pool_3x3_s2() -> MaxPool2d {
    MaxPool2dConfig::new([3, 3]).with_strides([2, 2]).init()
}

/// 35×35 grid: 1×1, 5×5, double 3×3 and pooled branches.
#[derive(Module, Debug)]
pub struct InceptionA {
    branch1x1: ConvBn,
    branch5x5_1: ConvBn,
    branch5x5_2: ConvBn,
    branch3x3dbl_1: ConvBn,
    branch3x3dbl_2: ConvBn,
    branch3x3dbl_3: ConvBn,
    branch_pool: ConvBn,
}

impl InceptionA {
    fn new(input: usize, pool_features: usize, device: &Device) -> Self {
        Self {
            branch1x1: basic(input, 64, [1, 1]).init(device),
            branch5x5_1: basic(input, 48, [1, 1]).init(device),
            branch5x5_2: basic(48, 64, [5, 5]).with_padding([2, 2]).init(device),
            branch3x3dbl_1: basic(input, 64, [1, 1]).init(device),
            branch3x3dbl_2: basic(64, 96, [3, 3]).with_padding([1, 1]).init(device),
            branch3x3dbl_3: basic(96, 96, [3, 3]).with_padding([1, 1]).init(device),
            branch_pool: basic(input, pool_features, [1, 1]).init(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b1 = run(&self.branch1x1, x.clone());
        let b5 = run(&self.branch5x5_2, run(&self.branch5x5_1, x.clone()));
        let b3 = run(&self.branch3x3dbl_1, x.clone());
        let b3 = run(&self.branch3x3dbl_3, run(&self.branch3x3dbl_2, b3));
        let bp = run(&self.branch_pool, avg_pool_3x3(x));
        Tensor::cat(vec![b1, b5, b3, bp], 1)
    }
}

/// 35×35 → 17×17 reduction.
#[derive(Module, Debug)]
pub struct InceptionB {
    branch3x3: ConvBn,
    branch3x3dbl_1: ConvBn,
    branch3x3dbl_2: ConvBn,
    branch3x3dbl_3: ConvBn,
    pool: MaxPool2d,
}

impl InceptionB {
    fn new(input: usize, device: &Device) -> Self {
        Self {
            branch3x3: basic(input, 384, [3, 3]).with_stride(2).init(device),
            branch3x3dbl_1: basic(input, 64, [1, 1]).init(device),
            branch3x3dbl_2: basic(64, 96, [3, 3]).with_padding([1, 1]).init(device),
            branch3x3dbl_3: basic(96, 96, [3, 3]).with_stride(2).init(device),
            pool: max_pool_3x3_s2(),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b3 = run(&self.branch3x3, x.clone());
        let bd = run(&self.branch3x3dbl_1, x.clone());
        let bd = run(&self.branch3x3dbl_3, run(&self.branch3x3dbl_2, bd));
        let bp = self.pool.forward(x);
        Tensor::cat(vec![b3, bd, bp], 1)
    }
}

/// 17×17 grid with factorised 7×7 convolutions (1×7 then 7×1).
#[derive(Module, Debug)]
pub struct InceptionC {
    branch1x1: ConvBn,
    branch7x7_1: ConvBn,
    branch7x7_2: ConvBn,
    branch7x7_3: ConvBn,
    branch7x7dbl_1: ConvBn,
    branch7x7dbl_2: ConvBn,
    branch7x7dbl_3: ConvBn,
    branch7x7dbl_4: ConvBn,
    branch7x7dbl_5: ConvBn,
    branch_pool: ConvBn,
}

impl InceptionC {
    fn new(input: usize, c7: usize, device: &Device) -> Self {
        let row = |i, o| basic(i, o, [1, 7]).with_padding([0, 3]).init(device);
        let col = |i, o| basic(i, o, [7, 1]).with_padding([3, 0]).init(device);
        Self {
            branch1x1: basic(input, 192, [1, 1]).init(device),
            branch7x7_1: basic(input, c7, [1, 1]).init(device),
            branch7x7_2: row(c7, c7),
            branch7x7_3: col(c7, 192),
            branch7x7dbl_1: basic(input, c7, [1, 1]).init(device),
            branch7x7dbl_2: col(c7, c7),
            branch7x7dbl_3: row(c7, c7),
            branch7x7dbl_4: col(c7, c7),
            branch7x7dbl_5: row(c7, 192),
            branch_pool: basic(input, 192, [1, 1]).init(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b1 = run(&self.branch1x1, x.clone());
        let b7 = run(&self.branch7x7_1, x.clone());
        let b7 = run(&self.branch7x7_3, run(&self.branch7x7_2, b7));
        let mut bd = run(&self.branch7x7dbl_1, x.clone());
        for c in [
            &self.branch7x7dbl_2,
            &self.branch7x7dbl_3,
            &self.branch7x7dbl_4,
            &self.branch7x7dbl_5,
        ] {
            bd = run(c, bd);
        }
        let bp = run(&self.branch_pool, avg_pool_3x3(x));
        Tensor::cat(vec![b1, b7, bd, bp], 1)
    }
}

/// 17×17 → 8×8 reduction.
#[derive(Module, Debug)]
pub struct InceptionD {
    branch3x3_1: ConvBn,
    branch3x3_2: ConvBn,
    branch7x7x3_1: ConvBn,
    branch7x7x3_2: ConvBn,
    branch7x7x3_3: ConvBn,
    branch7x7x3_4: ConvBn,
    pool: MaxPool2d,
}

impl InceptionD {
    fn new(input: usize, device: &Device) -> Self {
        Self {
            branch3x3_1: basic(input, 192, [1, 1]).init(device),
            branch3x3_2: basic(192, 320, [3, 3]).with_stride(2).init(device),
            branch7x7x3_1: basic(input, 192, [1, 1]).init(device),
            branch7x7x3_2: basic(192, 192, [1, 7]).with_padding([0, 3]).init(device),
            branch7x7x3_3: basic(192, 192, [7, 1]).with_padding([3, 0]).init(device),
            branch7x7x3_4: basic(192, 192, [3, 3]).with_stride(2).init(device),
            pool: max_pool_3x3_s2(),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b3 = run(&self.branch3x3_2, run(&self.branch3x3_1, x.clone()));
        let mut b7 = run(&self.branch7x7x3_1, x.clone());
        for c in [
            &self.branch7x7x3_2,
            &self.branch7x7x3_3,
            &self.branch7x7x3_4,
        ] {
            b7 = run(c, b7);
        }
        let bp = self.pool.forward(x);
        Tensor::cat(vec![b3, b7, bp], 1)
    }
}

/// 8×8 grid with split 1×3 / 3×1 branches.
#[derive(Module, Debug)]
pub struct InceptionE {
    branch1x1: ConvBn,
    branch3x3_1: ConvBn,
    branch3x3_2a: ConvBn,
    branch3x3_2b: ConvBn,
    branch3x3dbl_1: ConvBn,
    branch3x3dbl_2: ConvBn,
    branch3x3dbl_3a: ConvBn,
    branch3x3dbl_3b: ConvBn,
    branch_pool: ConvBn,
}

impl InceptionE {
    fn new(input: usize, device: &Device) -> Self {
        let row = |i, o| basic(i, o, [1, 3]).with_padding([0, 1]).init(device);
        let col = |i, o| basic(i, o, [3, 1]).with_padding([1, 0]).init(device);
        Self {
            branch1x1: basic(input, 320, [1, 1]).init(device),
            branch3x3_1: basic(input, 384, [1, 1]).init(device),
            branch3x3_2a: row(384, 384),
            branch3x3_2b: col(384, 384),
            branch3x3dbl_1: basic(input, 448, [1, 1]).init(device),
            branch3x3dbl_2: basic(448, 384, [3, 3]).with_padding([1, 1]).init(device),
            branch3x3dbl_3a: row(384, 384),
            branch3x3dbl_3b: col(384, 384),
            branch_pool: basic(input, 192, [1, 1]).init(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b1 = run(&self.branch1x1, x.clone());
        let b3 = run(&self.branch3x3_1, x.clone());
        let b3 = Tensor::cat(
            vec![
                run(&self.branch3x3_2a, b3.clone()),
                run(&self.branch3x3_2b, b3),
            ],
            1,
        );
        let bd = run(&self.branch3x3dbl_2, run(&self.branch3x3dbl_1, x.clone()));
        let bd = Tensor::cat(
            vec![
                run(&self.branch3x3dbl_3a, bd.clone()),
                run(&self.branch3x3dbl_3b, bd),
            ],
            1,
        );
        let bp = run(&self.branch_pool, avg_pool_3x3(x));
        Tensor::cat(vec![b1, b3, bd, bp], 1)
    }
}

#[derive(Module, Debug)]
pub struct InceptionV3 {
    Conv2d_1a_3x3: ConvBn,
    Conv2d_2a_3x3: ConvBn,
    Conv2d_2b_3x3: ConvBn,
    maxpool1: MaxPool2d,
    Conv2d_3b_1x1: ConvBn,
    Conv2d_4a_3x3: ConvBn,
    maxpool2: MaxPool2d,
    Mixed_5b: InceptionA,
    Mixed_5c: InceptionA,
    Mixed_5d: InceptionA,
    Mixed_6a: InceptionB,
    Mixed_6b: InceptionC,
    Mixed_6c: InceptionC,
    Mixed_6d: InceptionC,
    Mixed_6e: InceptionC,
    Mixed_7a: InceptionD,
    Mixed_7b: InceptionE,
    Mixed_7c: InceptionE,
    avgpool: AdaptiveAvgPool2d,
    dropout: Dropout,
    fc: Linear,
}

/// The `Mixed_*` blocks, which `--unfreeze last:N` counts.
const BLOCKS: usize = 11;

impl InceptionV3Config {
    pub fn init(&self, device: &Device) -> InceptionV3 {
        InceptionV3 {
            Conv2d_1a_3x3: basic(3, 32, [3, 3]).with_stride(2).init(device),
            Conv2d_2a_3x3: basic(32, 32, [3, 3]).init(device),
            Conv2d_2b_3x3: basic(32, 64, [3, 3]).with_padding([1, 1]).init(device),
            maxpool1: max_pool_3x3_s2(),
            Conv2d_3b_1x1: basic(64, 80, [1, 1]).init(device),
            Conv2d_4a_3x3: basic(80, 192, [3, 3]).init(device),
            maxpool2: max_pool_3x3_s2(),
            Mixed_5b: InceptionA::new(192, 32, device),
            Mixed_5c: InceptionA::new(256, 64, device),
            Mixed_5d: InceptionA::new(288, 64, device),
            Mixed_6a: InceptionB::new(288, device),
            Mixed_6b: InceptionC::new(768, 128, device),
            Mixed_6c: InceptionC::new(768, 160, device),
            Mixed_6d: InceptionC::new(768, 160, device),
            Mixed_6e: InceptionC::new(768, 192, device),
            Mixed_7a: InceptionD::new(768, device),
            Mixed_7b: InceptionE::new(1280, device),
            Mixed_7c: InceptionE::new(2048, device),
            avgpool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            dropout: DropoutConfig::new(self.dropout).init(),
            fc: LinearConfig::new(FEATURES, self.num_classes).init(device),
        }
    }
}

impl Architecture for InceptionV3Config {
    super::architecture_fields!();

    fn kind(&self) -> ModelKind {
        ModelKind::InceptionV3
    }

    // No auxiliary head was trained; the normalisation in `preprocessing`
    // already is what transform_input=True would compute.
    fn pytorch_recipe(&self) -> String {
        format!(
            "torchvision.models.inception_v3(num_classes={}, aux_logits=False, transform_input=False, init_weights=False); {LOAD_STATE_DICT}",
            self.num_classes
        )
    }
}

impl InceptionV3 {
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.head(self.features(images))
    }
}

impl Backbone for InceptionV3 {
    /// `[n, 3, h, w]` images normalised with [`NORMALIZATION`] → `[n, 2048]`
    /// pooled features.
    fn features(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = run(&self.Conv2d_1a_3x3, images);
        x = run(&self.Conv2d_2a_3x3, x);
        x = self.maxpool1.forward(run(&self.Conv2d_2b_3x3, x));
        x = run(&self.Conv2d_3b_1x1, x);
        x = self.maxpool2.forward(run(&self.Conv2d_4a_3x3, x));
        for b in [&self.Mixed_5b, &self.Mixed_5c, &self.Mixed_5d] {
            x = b.forward(x);
        }
        x = self.Mixed_6a.forward(x);
        for b in [
            &self.Mixed_6b,
            &self.Mixed_6c,
            &self.Mixed_6d,
            &self.Mixed_6e,
        ] {
            x = b.forward(x);
        }
        x = self.Mixed_7a.forward(x);
        x = self.Mixed_7c.forward(self.Mixed_7b.forward(x));
        self.avgpool.forward(x).flatten(1, 3)
    }

    fn head(&self, features: Tensor<2>) -> Tensor<2> {
        self.fc.forward(self.dropout.forward(features))
    }

    /// The eleven `Mixed_*` blocks.
    fn num_blocks(&self) -> usize {
        BLOCKS
    }

    /// As `EfficientNet::freeze_backbone`: everything but the last
    /// `trainable_blocks` `Mixed_*` blocks and `fc` is frozen; the five stem
    /// convolutions train only when every block does. With `freeze_bn` the
    /// batch norms of the trainable part keep their ImageNet statistics too.
    fn freeze_backbone(self, trainable_blocks: usize, freeze_bn: bool) -> Self {
        let this = self.unfreeze();
        let keep_from = BLOCKS.saturating_sub(trainable_blocks);
        // Block i (0-based, in forward order) trains when i ≥ keep_from.
        let block = |i: usize| i >= keep_from;
        let stem = trainable_blocks >= BLOCKS;
        InceptionV3 {
            Conv2d_1a_3x3: set_trainable(this.Conv2d_1a_3x3, stem, freeze_bn),
            Conv2d_2a_3x3: set_trainable(this.Conv2d_2a_3x3, stem, freeze_bn),
            Conv2d_2b_3x3: set_trainable(this.Conv2d_2b_3x3, stem, freeze_bn),
            Conv2d_3b_1x1: set_trainable(this.Conv2d_3b_1x1, stem, freeze_bn),
            Conv2d_4a_3x3: set_trainable(this.Conv2d_4a_3x3, stem, freeze_bn),
            Mixed_5b: set_trainable(this.Mixed_5b, block(0), freeze_bn),
            Mixed_5c: set_trainable(this.Mixed_5c, block(1), freeze_bn),
            Mixed_5d: set_trainable(this.Mixed_5d, block(2), freeze_bn),
            Mixed_6a: set_trainable(this.Mixed_6a, block(3), freeze_bn),
            Mixed_6b: set_trainable(this.Mixed_6b, block(4), freeze_bn),
            Mixed_6c: set_trainable(this.Mixed_6c, block(5), freeze_bn),
            Mixed_6d: set_trainable(this.Mixed_6d, block(6), freeze_bn),
            Mixed_6e: set_trainable(this.Mixed_6e, block(7), freeze_bn),
            Mixed_7a: set_trainable(this.Mixed_7a, block(8), freeze_bn),
            Mixed_7b: set_trainable(this.Mixed_7b, block(9), freeze_bn),
            Mixed_7c: set_trainable(this.Mixed_7c, block(10), freeze_bn),
            ..this
        }
    }

    /// The fields carry torchvision's names, so nothing is renamed (on
    /// export neither). The auxiliary classifier's `AuxLogits.*` tensors
    /// (in every torchvision file; this network has no auxiliary head) are
    /// skipped; any other tensor of the file left unused means it is not
    /// Inception-v3 weights and is an error, like a missing one.
    fn load_imagenet(mut self, path: &Path, head: bool) -> crate::error::Result<Self> {
        let store = pth_store(path, head, |key, _| !key.starts_with("fc."));
        load_checked(&mut self, store, path, "Inception-v3", |key| {
            is_aux_logits(key) || key.ends_with(".num_batches_tracked")
        })?;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::models::layers::tests::trainable;

    #[test]
    fn torchvision_shape_and_parameter_count() {
        let d = Device::default();
        let m = InceptionV3Config::new().with_num_classes(1000).init(&d);
        // torchvision's inception_v3(aux_logits=False): 23,834,568 parameters;
        // burn also counts the running statistics of its 17,216 BN channels.
        assert_eq!(m.num_params(), 23_834_568 + 2 * 17_216);
        // The smallest input torchvision accepts, and one below it.
        let x = Tensor::<4>::zeros([1, 3, MIN_SIDE, MIN_SIDE], &d);
        assert_eq!(m.features(x.clone()).dims(), [1, FEATURES]);
        assert_eq!(m.forward(x).dims(), [1, 1000]);
    }

    #[test]
    fn freezing_keeps_only_the_chosen_tail_trainable() {
        let d = Device::default().autodiff();
        let m = InceptionV3Config::new().init(&d);
        let all = trainable(&m);
        let fc = FEATURES * 2 + 2;
        let head_only = m.freeze_backbone(0, true);
        assert_eq!(trainable(&head_only), fc);
        // Mixed_7c's convolutions (2048 in): the batch norms stay frozen.
        let tail = head_only.freeze_backbone(1, true);
        let mixed_7c = 2048 * 320
            + 2048 * 384
            + 2 * 384 * 384 * 3
            + 2048 * 448
            + 448 * 384 * 9
            + 2 * 384 * 384 * 3
            + 2048 * 192;
        assert_eq!(trainable(&tail), mixed_7c + fc);
        assert_eq!(trainable(&tail.freeze_backbone(BLOCKS, false)), all);
    }

    #[test]
    fn aux_logits_are_recognised() {
        assert!(is_aux_logits("AuxLogits.conv0.conv.weight"));
        assert!(!is_aux_logits("Mixed_6e.branch_pool.bn.weight"));
    }
}
