//! A plain fully connected network on downsampled pixels: the baseline that
//! shows how much a convolutional network actually buys.

use burn::{
    config::Config,
    module::Module,
    nn::{Dropout, DropoutConfig, Linear, LinearConfig},
    tensor::{Device, Tensor, activation::relu},
};

use super::{Architecture, ModelKind};
use crate::error::{Error, Result};

/// `input_size² · 3` inputs → `hidden` ReLU layers (with dropout) → logits.
#[derive(Config, Debug)]
pub struct MlpConfig {
    /// Side the data loader resizes patches to (the network has no way to
    /// accept another size).
    #[config(default = 32)]
    pub input_size: usize,
    /// Widths of the hidden layers.
    #[config(default = "vec![256, 64]")]
    pub hidden: Vec<usize>,
    #[config(default = 2)]
    pub num_classes: usize,
    #[config(default = 0.2)]
    pub dropout: f64,
    /// Standardise each patch's channels to mean 0 and variance 1 before
    /// the first layer, so that the network sees the tissue's structure
    /// rather than its stain's strength and exposure, which differ from
    /// patient to patient. `None` (a run written before the option
    /// existed) is off.
    pub standardize: Option<bool>,
}

#[derive(Module, Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
    dropout: Dropout,
    head: Linear,
    standardize: bool,
}

impl MlpConfig {
    pub fn init(&self, device: &Device) -> Mlp {
        let mut width = 3 * self.input_size * self.input_size;
        let mut layers = Vec::with_capacity(self.hidden.len());
        for &h in &self.hidden {
            layers.push(LinearConfig::new(width, h).init(device));
            width = h;
        }
        Mlp {
            layers,
            dropout: DropoutConfig::new(self.dropout).init(),
            head: LinearConfig::new(width, self.num_classes).init(device),
            standardize: self.standardize.unwrap_or(false),
        }
    }
}

impl Architecture for MlpConfig {
    super::architecture_fields!();

    fn kind(&self) -> ModelKind {
        ModelKind::Mlp
    }

    fn input_size(&self) -> Option<u32> {
        Some(self.input_size as u32)
    }

    fn check(&self, _side: Option<usize>) -> Result<()> {
        if self.input_size == 0 || self.hidden.contains(&0) {
            return Err(Error::Config(
                "mlp input size and hidden widths must be positive".into(),
            ));
        }
        Ok(())
    }
}

impl Mlp {
    /// `[n, 3, s, s]` → `[n, classes]` logits.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let images = if self.standardize {
            standardize(images)
        } else {
            images
        };
        let mut x: Tensor<2> = images.flatten(1, 3);
        for layer in &self.layers {
            x = self.dropout.forward(relu(layer.forward(x)));
        }
        self.head.forward(x)
    }
}

/// Each image's channels to mean 0 and variance 1 over its pixels
/// (`[n, c, h, w]`; ε 1e-5 under the square root, as batch norm's).
pub fn standardize(x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let flat: Tensor<3> = x.reshape([n, c, h * w]);
    let centered = flat.clone() - flat.mean_dim(2);
    let var = centered.clone().powf_scalar(2.0).mean_dim(2);
    (centered / var.add_scalar(1e-5).sqrt()).reshape([n, c, h, w])
}
