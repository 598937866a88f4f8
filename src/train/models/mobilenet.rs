//! MobileNetV2 (Sandler et al. 2018) as torchvision builds it
//! (`torchvision.models.mobilenet_v2`, width 1.0), so that its ImageNet
//! `.pth` (`mobilenet_v2-b0353104.pth`, `mobilenet_v2-7ebf99e0.pth`) loads.
//!
//! torchvision keeps everything but the classifier in one `features`
//! Sequential: `features.0` the stem (conv 3×3 stride 2, BN, ReLU6),
//! `features.1`–`features.17` the inverted residual blocks, `features.18` the
//! 1×1 conv to 1280 channels; inside a block `conv.N` counts the layers of
//! another Sequential, so the same layer has a different index in the first
//! block, which has no expansion conv. Here the parts have names (`stem`,
//! `blocks.i.expand`/`depthwise`/`project`, `conv_head`, `classifier`) and
//! [`MobileNetV2::torchvision_names`] lists both spellings of each, derived
//! from the built network: loading and export rename with it rather than
//! with hand-written patterns that would have to know the block layout.
//!
//! Convolutions pad symmetrically by `(k − 1) / 2`, batch norm uses
//! PyTorch's epsilon 1e-5, inputs the ImageNet statistics.

use burn::{
    config::Config,
    module::Module,
    nn::{
        Dropout, DropoutConfig, Linear, LinearConfig,
        pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig},
    },
    store::SafetensorsStore,
    tensor::{Device, Tensor},
};
use std::path::Path;

use super::{
    Architecture, Backbone, LOAD_STATE_DICT, ModelKind,
    layers::{ConvBn, ConvBnConfig, set_trainable},
    pretrained::{escape, load_checked, pth_store},
};
use crate::preprocess::Normalization;

/// What torchvision's MobileNetV2 was trained with.
pub const NORMALIZATION: Normalization = Normalization::IMAGENET;

/// Channels of the pooled features (`features.18`'s output).
pub const FEATURES: usize = 1280;
const STEM: usize = 32;

/// torchvision's `inverted_residual_setting`: (expansion, output channels,
/// repeats, stride of the first repeat).
const SETTING: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

#[derive(Config, Debug)]
pub struct MobileNetV2Config {
    #[config(default = 2)]
    pub num_classes: usize,
    /// Dropout before the classifier (torchvision's default, 0.2).
    #[config(default = 0.2)]
    pub dropout: f64,
}

/// 1×1 expansion (absent when the expansion is 1) → depthwise 3×3 → 1×1
/// linear projection, with a skip connection when the shape is kept.
#[derive(Module, Debug)]
pub struct InvertedResidual {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
}

impl InvertedResidual {
    fn new(input: usize, output: usize, stride: usize, expansion: usize, device: &Device) -> Self {
        let hidden = input * expansion;
        Self {
            expand: (expansion != 1).then(|| ConvBnConfig::new(input, hidden, [1, 1]).init(device)),
            depthwise: ConvBnConfig::new(hidden, hidden, [3, 3])
                .with_stride(stride)
                .with_same_padding()
                .with_groups(hidden)
                .init(device),
            project: ConvBnConfig::new(hidden, output, [1, 1]).init(device),
            residual: stride == 1 && input == output,
        }
    }

    fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let mut x = input.clone();
        if let Some(expand) = &self.expand {
            x = expand.forward_relu6(x);
        }
        x = self.depthwise.forward_relu6(x);
        x = self.project.forward(x);
        if self.residual { x + input } else { x }
    }
}

#[derive(Module, Debug)]
pub struct MobileNetV2 {
    stem: ConvBn,
    blocks: Vec<InvertedResidual>,
    conv_head: ConvBn,
    pool: AdaptiveAvgPool2d,
    dropout: Dropout,
    classifier: Linear,
}

impl MobileNetV2Config {
    pub fn init(&self, device: &Device) -> MobileNetV2 {
        let mut blocks = Vec::new();
        let mut input = STEM;
        for &(expansion, output, repeats, stride) in &SETTING {
            for r in 0..repeats {
                let stride = if r == 0 { stride } else { 1 };
                blocks.push(InvertedResidual::new(
                    input, output, stride, expansion, device,
                ));
                input = output;
            }
        }
        MobileNetV2 {
            stem: ConvBnConfig::new(3, STEM, [3, 3])
                .with_stride(2)
                .with_same_padding()
                .init(device),
            blocks,
            conv_head: ConvBnConfig::new(input, FEATURES, [1, 1]).init(device),
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            dropout: DropoutConfig::new(self.dropout).init(),
            classifier: LinearConfig::new(FEATURES, self.num_classes).init(device),
        }
    }
}

impl Architecture for MobileNetV2Config {
    super::architecture_fields!();

    fn kind(&self) -> ModelKind {
        ModelKind::MobilenetV2
    }

    fn pytorch_recipe(&self) -> String {
        format!(
            "torchvision.models.mobilenet_v2(num_classes={}); {LOAD_STATE_DICT}",
            self.num_classes
        )
    }
}

impl MobileNetV2 {
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.head(self.features(images))
    }

    /// Every sub-module as `(our path, torchvision's path)`, in order:
    /// `("blocks.0.project.conv", "features.1.conv.1")`,
    /// `("blocks.1.project.conv", "features.2.conv.2")`, …
    pub fn torchvision_names(&self) -> Vec<(String, String)> {
        let mut out = vec![
            ("stem.conv".to_string(), "features.0.0".to_string()),
            ("stem.bn".into(), "features.0.1".into()),
        ];
        for (i, b) in self.blocks.iter().enumerate() {
            let theirs = format!("features.{}.conv", i + 1);
            let mut part = |ours: &str, index: String| {
                out.push((format!("blocks.{i}.{ours}"), format!("{theirs}.{index}")));
            };
            // torchvision's `conv` Sequential: [expand conv-BN-ReLU6,] depthwise
            // conv-BN-ReLU6, projection conv, projection BN.
            let depthwise = usize::from(b.expand.is_some());
            if depthwise == 1 {
                part("expand.conv", "0.0".into());
                part("expand.bn", "0.1".into());
            }
            part("depthwise.conv", format!("{depthwise}.0"));
            part("depthwise.bn", format!("{depthwise}.1"));
            part("project.conv", format!("{}", depthwise + 1));
            part("project.bn", format!("{}", depthwise + 2));
        }
        let last = self.blocks.len() + 1;
        out.push(("conv_head.conv".into(), format!("features.{last}.0")));
        out.push(("conv_head.bn".into(), format!("features.{last}.1")));
        out.push(("classifier".into(), "classifier.1".into()));
        out
    }
}

impl Backbone for MobileNetV2 {
    /// `[n, 3, h, w]` normalised images → `[n, 1280]` pooled features.
    fn features(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = self.stem.forward_relu6(images);
        for b in &self.blocks {
            x = b.forward(x);
        }
        let x = self.conv_head.forward_relu6(x);
        self.pool.forward(x).flatten(1, 3)
    }

    fn head(&self, features: Tensor<2>) -> Tensor<2> {
        self.classifier.forward(self.dropout.forward(features))
    }

    /// The 17 inverted residual blocks (`features.1`–`features.17`).
    fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// As `EfficientNet::freeze_backbone`: everything but the last
    /// `trainable_blocks` inverted residual blocks, `features.18` (which
    /// trains whenever a block does) and the classifier is frozen; the stem
    /// trains only when every block does. With `freeze_bn` the batch norms
    /// of the trainable part keep their ImageNet statistics too.
    fn freeze_backbone(self, trainable_blocks: usize, freeze_bn: bool) -> Self {
        let this = self.unfreeze();
        let n = this.blocks.len();
        let keep_from = n.saturating_sub(trainable_blocks);
        MobileNetV2 {
            stem: set_trainable(this.stem, trainable_blocks >= n, freeze_bn),
            blocks: this
                .blocks
                .into_iter()
                .enumerate()
                .map(|(i, b)| set_trainable(b, i >= keep_from, freeze_bn))
                .collect(),
            conv_head: set_trainable(this.conv_head, trainable_blocks > 0, freeze_bn),
            ..this
        }
    }

    /// Renames every torchvision path (`features.2.conv.1.0`) to ours
    /// (`blocks.1.depthwise.conv`) with the table the network derives from
    /// its own layout.
    fn load_imagenet(mut self, path: &Path, head: bool) -> crate::error::Result<Self> {
        let mut store = pth_store(path, head, |key, _| !key.starts_with("classifier."));
        for (ours, theirs) in self.torchvision_names() {
            store =
                store.with_key_remapping(format!("^{}\\.", escape(&theirs)), format!("{ours}."));
        }
        load_checked(&mut self, store, path, "MobileNetV2", |_| true)?;
        Ok(self)
    }

    /// Our part names → torchvision's `features.N…` Sequential indices.
    fn pytorch_names(&self, store: SafetensorsStore) -> SafetensorsStore {
        let mut store = store;
        for (ours, theirs) in self.torchvision_names() {
            store = store.with_key_remapping(format!("^{}\\.", escape(&ours)), theirs + ".");
        }
        store
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::models::layers::tests::trainable;

    #[test]
    fn torchvision_shape_and_parameter_count() {
        let d = Device::default();
        let m = MobileNetV2Config::new().with_num_classes(1000).init(&d);
        // torchvision: 3,504,872 parameters; burn also counts the running
        // statistics, 2 per channel of its 17,056 batch-norm channels.
        assert_eq!(m.num_params(), 3_504_872 + 2 * 17_056);
        assert_eq!(m.num_blocks(), 17);
        let x = Tensor::<4>::zeros([2, 3, 64, 48], &d);
        assert_eq!(m.features(x.clone()).dims(), [2, FEATURES]);
        assert_eq!(m.forward(x).dims(), [2, 1000]);
    }

    #[test]
    fn names_follow_torchvisions_sequential_indices() {
        let m = MobileNetV2Config::new().init(&Device::default());
        let names = m.torchvision_names();
        let theirs = |ours: &str| {
            names
                .iter()
                .find(|(o, _)| o == ours)
                .map(|(_, t)| t.as_str())
        };
        // The expansion-1 block has no expand conv: its projection is conv.1.
        assert_eq!(
            theirs("blocks.0.depthwise.conv"),
            Some("features.1.conv.0.0")
        );
        assert_eq!(theirs("blocks.0.project.conv"), Some("features.1.conv.1"));
        assert_eq!(theirs("blocks.0.project.bn"), Some("features.1.conv.2"));
        assert_eq!(theirs("blocks.0.expand.conv"), None);
        assert_eq!(theirs("blocks.1.expand.bn"), Some("features.2.conv.0.1"));
        assert_eq!(
            theirs("blocks.16.depthwise.conv"),
            Some("features.17.conv.1.0")
        );
        assert_eq!(theirs("blocks.16.project.bn"), Some("features.17.conv.3"));
        assert_eq!(theirs("conv_head.conv"), Some("features.18.0"));
        assert_eq!(theirs("classifier"), Some("classifier.1"));
        // 2 + 2·1 block of 4 parts + 16 blocks of 6 + 2 + 1.
        assert_eq!(names.len(), 2 + 4 + 16 * 6 + 2 + 1);
    }

    #[test]
    fn freezing_keeps_only_the_chosen_tail_trainable() {
        let d = Device::default().autodiff();
        let m = MobileNetV2Config::new().init(&d);
        let all = trainable(&m);
        let classifier = FEATURES * 2 + 2;
        let head_only = m.freeze_backbone(0, true);
        assert_eq!(trainable(&head_only), classifier);
        // The last block (320 out, 960 hidden) and features.18: convolutions only.
        let tail = head_only.freeze_backbone(1, true);
        let convs = 160 * 960 + 960 * 9 + 960 * 320 + 320 * FEATURES;
        assert_eq!(trainable(&tail), convs + classifier);
        assert_eq!(trainable(&tail.freeze_backbone(17, false)), all);
    }
}
