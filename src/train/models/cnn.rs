//! A convolutional network trained from scratch: `depth` blocks of
//! conv 3×3 → batch norm → ReLU → max-pool 2×2, channels doubling from `width`
//! (capped at `max_width`), then global average pooling and a linear head.
//! Global pooling makes it accept any patch size.

use burn::{
    config::Config,
    module::Module,
    nn::{
        BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d,
        conv::{Conv2d, Conv2dConfig},
        pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig},
    },
    tensor::{Device, Tensor, activation::relu},
};

use super::{Architecture, ModelKind};
use crate::error::{Error, Result};

#[derive(Config, Debug)]
pub struct CnnConfig {
    /// Channels of the first block.
    #[config(default = 32)]
    pub width: usize,
    /// Number of conv blocks; each halves the resolution.
    #[config(default = 4)]
    pub depth: usize,
    #[config(default = 256)]
    pub max_width: usize,
    /// Stride of the first convolution: 2 quarters the cost at 224², where
    /// the patches have far more pixels than a small network needs.
    #[config(default = 1)]
    pub stem_stride: usize,
    #[config(default = 2)]
    pub num_classes: usize,
    #[config(default = 0.2)]
    pub dropout: f64,
}

#[derive(Module, Debug)]
pub struct ConvBlock {
    conv: Conv2d,
    norm: BatchNorm,
    pool: MaxPool2d,
}

impl ConvBlock {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.pool
            .forward(relu(self.norm.forward(self.conv.forward(x))))
    }
}

#[derive(Module, Debug)]
pub struct Cnn {
    blocks: Vec<ConvBlock>,
    gap: AdaptiveAvgPool2d,
    dropout: Dropout,
    head: Linear,
}

impl CnnConfig {
    /// Channels of each block.
    pub fn widths(&self) -> Vec<usize> {
        (0..self.depth)
            .map(|i| {
                self.width
                    .saturating_mul(1usize.checked_shl(i as u32).unwrap_or(usize::MAX))
                    .min(self.max_width.max(self.width))
            })
            .collect()
    }

    pub fn init(&self, device: &Device) -> Cnn {
        let mut channels = 3;
        let mut blocks = Vec::with_capacity(self.depth);
        for (i, w) in self.widths().into_iter().enumerate() {
            let stride = if i == 0 { self.stem_stride.max(1) } else { 1 };
            blocks.push(ConvBlock {
                conv: Conv2dConfig::new([channels, w], [3, 3])
                    .with_stride([stride, stride])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .with_bias(false)
                    .init(device),
                norm: BatchNormConfig::new(w).init(device),
                pool: MaxPool2dConfig::new([2, 2]).init(),
            });
            channels = w;
        }
        Cnn {
            blocks,
            gap: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            dropout: DropoutConfig::new(self.dropout).init(),
            head: LinearConfig::new(channels, self.num_classes).init(device),
        }
    }
}

impl Architecture for CnnConfig {
    super::architecture_fields!();

    fn kind(&self) -> ModelKind {
        ModelKind::Cnn
    }

    fn check(&self, side: Option<usize>) -> Result<()> {
        if self.width == 0 || self.depth == 0 || self.stem_stride == 0 {
            return Err(Error::Config(
                "cnn width, depth and stem stride must be positive".into(),
            ));
        }
        if let Some(side) = side {
            let mut s = side.div_ceil(self.stem_stride);
            for _ in 0..self.depth {
                s /= 2;
            }
            if s == 0 {
                return Err(Error::Config(format!(
                    "cnn of depth {} (stem stride {}) needs patches larger than {side}×{side}",
                    self.depth, self.stem_stride
                )));
            }
        }
        Ok(())
    }
}

impl Cnn {
    /// `[n, 3, h, w]` → `[n, classes]` logits.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = images;
        for b in &self.blocks {
            x = b.forward(x);
        }
        let x: Tensor<2> = self.gap.forward(x).flatten(1, 3);
        self.head.forward(self.dropout.forward(x))
    }
}
