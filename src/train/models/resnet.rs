//! ResNet-18 and ResNet-50 (He et al. 2016) in torchvision's layout, so
//! torchvision's ImageNet `.pth` files (`resnet18-f37072fd.pth`,
//! `resnet50-0676ba61.pth`, …) load by name: `layer2.0.conv1.weight`,
//! `layer2.0.downsample.0.weight` (remapped to `downsample.conv`), `fc.weight`.
//! Inputs use the ImageNet statistics torchvision trained with.

use burn::{
    config::Config,
    module::Module,
    nn::{
        BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d,
        conv::{Conv2d, Conv2dConfig},
        pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig},
    },
    store::SafetensorsStore,
    tensor::{Device, Tensor, activation::relu},
};
use std::path::Path;

use super::{
    Architecture, Backbone, LOAD_STATE_DICT, ModelKind,
    pretrained::{load_checked, pth_store},
};

use super::layers::set_trainable;
use crate::preprocess::Normalization;

/// What torchvision's ResNets were trained with.
pub const NORMALIZATION: Normalization = Normalization::IMAGENET;

#[derive(Config, Debug)]
pub struct ResNetConfig {
    /// 18 (basic blocks) or 50 (bottlenecks).
    pub depth: usize,
    #[config(default = 2)]
    pub num_classes: usize,
    /// Dropout before the new head (torchvision's ResNets have none; 0 keeps that).
    #[config(default = 0.0)]
    pub dropout: f64,
}

fn conv(input: usize, output: usize, kernel: usize, stride: usize, device: &Device) -> Conv2d {
    let pad = kernel / 2;
    Conv2dConfig::new([input, output], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .init(device)
}

fn bn(channels: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(channels).init(device)
}

/// The 1×1 projection of a block's shortcut when its shape changes.
#[derive(Module, Debug)]
pub struct Downsample {
    conv: Conv2d,
    bn: BatchNorm,
}

/// Two 3×3 convolutions (ResNet-18/34).
#[derive(Module, Debug)]
pub struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    downsample: Option<Downsample>,
}

/// 1×1 → 3×3 → 1×1 with 4× expansion (ResNet-50 and up).
#[derive(Module, Debug)]
pub struct Bottleneck {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    conv3: Conv2d,
    bn3: BatchNorm,
    downsample: Option<Downsample>,
}

#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)] // a handful per network, not worth boxing
pub enum Block {
    Basic(BasicBlock),
    Bottleneck(Bottleneck),
}

impl Block {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let (out, downsample) = match self {
            Block::Basic(b) => {
                let y = relu(b.bn1.forward(b.conv1.forward(x.clone())));
                (b.bn2.forward(b.conv2.forward(y)), &b.downsample)
            }
            Block::Bottleneck(b) => {
                let y = relu(b.bn1.forward(b.conv1.forward(x.clone())));
                let y = relu(b.bn2.forward(b.conv2.forward(y)));
                (b.bn3.forward(b.conv3.forward(y)), &b.downsample)
            }
        };
        let identity = match downsample {
            Some(d) => d.bn.forward(d.conv.forward(x)),
            None => x,
        };
        relu(out + identity)
    }
}

#[derive(Module, Debug)]
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm,
    maxpool: MaxPool2d,
    layer1: Vec<Block>,
    layer2: Vec<Block>,
    layer3: Vec<Block>,
    layer4: Vec<Block>,
    avgpool: AdaptiveAvgPool2d,
    dropout: Dropout,
    fc: Linear,
}

impl ResNetConfig {
    /// Blocks per stage and whether they are bottlenecks.
    fn layout(&self) -> ([usize; 4], bool) {
        match self.depth {
            50 => ([3, 4, 6, 3], true),
            _ => ([2, 2, 2, 2], false),
        }
    }

    /// Width of the pooled features (512 for basic blocks, 2048 for bottlenecks).
    pub fn features(&self) -> usize {
        if self.layout().1 { 2048 } else { 512 }
    }

    pub fn init(&self, device: &Device) -> ResNet {
        let (counts, bottleneck) = self.layout();
        let expansion = if bottleneck { 4 } else { 1 };
        let mut input = 64;
        let mut stages: Vec<Vec<Block>> = Vec::new();
        for (i, &n) in counts.iter().enumerate() {
            let planes = 64 << i;
            let mut blocks = Vec::with_capacity(n);
            for j in 0..n {
                let stride = if i > 0 && j == 0 { 2 } else { 1 };
                let output = planes * expansion;
                let downsample = (stride != 1 || input != output).then(|| Downsample {
                    conv: conv(input, output, 1, stride, device),
                    bn: bn(output, device),
                });
                blocks.push(if bottleneck {
                    Block::Bottleneck(Bottleneck {
                        conv1: conv(input, planes, 1, 1, device),
                        bn1: bn(planes, device),
                        conv2: conv(planes, planes, 3, stride, device),
                        bn2: bn(planes, device),
                        conv3: conv(planes, output, 1, 1, device),
                        bn3: bn(output, device),
                        downsample,
                    })
                } else {
                    Block::Basic(BasicBlock {
                        conv1: conv(input, planes, 3, stride, device),
                        bn1: bn(planes, device),
                        conv2: conv(planes, planes, 3, 1, device),
                        bn2: bn(planes, device),
                        downsample,
                    })
                });
                input = output;
            }
            stages.push(blocks);
        }
        let mut stages = stages.into_iter();
        let mut next = || stages.next().unwrap_or_default();
        ResNet {
            conv1: conv(3, 64, 7, 2, device),
            bn1: bn(64, device),
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1: next(),
            layer2: next(),
            layer3: next(),
            layer4: next(),
            avgpool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            dropout: DropoutConfig::new(self.dropout).init(),
            fc: LinearConfig::new(self.features(), self.num_classes).init(device),
        }
    }
}

impl Architecture for ResNetConfig {
    super::architecture_fields!();

    fn kind(&self) -> ModelKind {
        match self.depth {
            50 => ModelKind::Resnet50,
            _ => ModelKind::Resnet18,
        }
    }

    fn check(&self, _side: Option<usize>) -> crate::error::Result<()> {
        if ![18, 50].contains(&self.depth) {
            return Err(crate::error::Error::Config(
                "ResNet depth must be 18 or 50".into(),
            ));
        }
        Ok(())
    }

    fn pytorch_recipe(&self) -> String {
        format!(
            "torchvision.models.resnet{}(num_classes={}); {LOAD_STATE_DICT}",
            self.depth, self.num_classes
        )
    }
}

impl ResNet {
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.head(self.features(images))
    }
}

impl Backbone for ResNet {
    /// `[n, 3, h, w]` normalised images → pooled features.
    fn features(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = self
            .maxpool
            .forward(relu(self.bn1.forward(self.conv1.forward(images))));
        for b in self
            .layer1
            .iter()
            .chain(&self.layer2)
            .chain(&self.layer3)
            .chain(&self.layer4)
        {
            x = b.forward(x);
        }
        self.avgpool.forward(x).flatten(1, 3)
    }

    fn head(&self, features: Tensor<2>) -> Tensor<2> {
        self.fc.forward(self.dropout.forward(features))
    }

    /// Blocks of the four stages together.
    fn num_blocks(&self) -> usize {
        self.layer1.len() + self.layer2.len() + self.layer3.len() + self.layer4.len()
    }

    /// As `EfficientNet::freeze_backbone`: everything but the last
    /// `trainable_blocks` blocks (counted over all stages) and the classifier
    /// is frozen; the stem trains only when every block does.
    fn freeze_backbone(self, trainable_blocks: usize, freeze_bn: bool) -> Self {
        let this = self.unfreeze();
        let n = this.num_blocks();
        let keep_from = n.saturating_sub(trainable_blocks);
        let whole = trainable_blocks >= n;
        let mut index = 0;
        let mut stage = |blocks: Vec<Block>| -> Vec<Block> {
            blocks
                .into_iter()
                .map(|b| {
                    index += 1;
                    set_trainable(b, index > keep_from, freeze_bn)
                })
                .collect()
        };
        let (layer1, layer2, layer3, layer4) = (
            stage(this.layer1),
            stage(this.layer2),
            stage(this.layer3),
            stage(this.layer4),
        );
        ResNet {
            conv1: if whole {
                this.conv1
            } else {
                this.conv1.freeze()
            },
            bn1: if whole && !freeze_bn {
                this.bn1
            } else {
                this.bn1.freeze()
            },
            layer1,
            layer2,
            layer3,
            layer4,
            ..this
        }
    }

    fn load_imagenet(mut self, path: &Path, head: bool) -> crate::error::Result<Self> {
        let store = pth_store(path, head, |key, _| !key.starts_with("fc."))
            // torchvision's Sequential shortcut: `downsample.0` conv, `downsample.1` batch norm.
            .with_key_remapping(r"\.downsample\.0\.", ".downsample.conv.")
            .with_key_remapping(r"\.downsample\.1\.", ".downsample.bn.");
        load_checked(&mut self, store, path, "ResNet", |_| true)?;
        Ok(self)
    }

    /// torchvision's Sequential shortcut names.
    fn pytorch_names(&self, store: SafetensorsStore) -> SafetensorsStore {
        store
            // Our block enum's variant is not part of torchvision's names.
            .with_key_remapping(r"\.(Basic|Bottleneck)\.", ".")
            .with_key_remapping(r"\.downsample\.conv\.", ".downsample.0.")
            .with_key_remapping(r"\.downsample\.bn\.", ".downsample.1.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::models::layers::tests::trainable;

    #[test]
    fn freezing_keeps_only_the_chosen_tail_trainable() {
        let d = Device::default().autodiff();
        let m = ResNetConfig::new(18).with_num_classes(2).init(&d);
        let all = trainable(&m);
        let fc = 512 * 2 + 2;
        let head_only = m.freeze_backbone(0, true);
        assert_eq!(trainable(&head_only), fc);
        // The last basic block (two 3×3 convs of 512 channels) trains, its
        // batch norms stay frozen.
        let tail = head_only.freeze_backbone(1, true);
        assert_eq!(trainable(&tail), 2 * 512 * 512 * 9 + fc);
        // With the statistics policy off, its two batch norms train too.
        let tail = tail.freeze_backbone(1, false);
        assert_eq!(trainable(&tail), 2 * 512 * 512 * 9 + 2 * 2 * 512 + fc);
        assert_eq!(trainable(&tail.freeze_backbone(8, false)), all);
    }

    #[test]
    fn torchvision_shapes_and_parameter_counts() {
        let d = Device::default();
        // torchvision: resnet18 11,689,512 and resnet50 25,557,032 parameters with a
        // 1000-class head; burn also counts running statistics (2 per BN channel).
        for (depth, params, bn_channels) in [(18, 11_689_512, 4_800), (50, 25_557_032, 26_560)] {
            let m = ResNetConfig::new(depth).with_num_classes(1000).init(&d);
            assert_eq!(m.num_params(), params + 2 * bn_channels, "resnet{depth}");
            let x = Tensor::<4>::zeros([2, 3, 64, 64], &d);
            assert_eq!(m.forward(x).dims(), [2, 1000]);
        }
    }
}
