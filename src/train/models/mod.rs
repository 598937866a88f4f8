//! The model registry. Every model is a burn [`Module`] built from a
//! [`Config`](burn::config::Config); [`ModelSpec`] is what a run stores (in
//! `run.json`) to rebuild the same network for evaluation or resumption.
//! A pretrained backbone joins by adding a [`ModelKind`], a [`ModelSpec`]
//! variant and a [`Model`] variant, with its own input size and normalisation.

pub mod cnn;
pub mod download;
pub mod efficientnet;
pub mod inception;
pub mod layers;
pub mod mlp;
pub mod mobilenet;
pub mod pretrained;
pub mod resnet;

use burn::{
    module::Module,
    tensor::{Device, Tensor},
};
use serde::{Deserialize, Serialize};

pub use cnn::{Cnn, CnnConfig};
pub use efficientnet::{
    EfficientNet, EfficientNetConfig, FEATURES, FoldedEfficientNet, LiteVariant,
};
pub use inception::{InceptionV3, InceptionV3Config};
pub use mlp::{Mlp, MlpConfig};
pub use mobilenet::{MobileNetV2, MobileNetV2Config};
pub use resnet::{ResNet, ResNetConfig};

use crate::error::{Error, Result};
use crate::preprocess::Normalization;

/// The models `--model` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Mlp,
    Cnn,
    #[serde(rename = "efficientnet-lite0")]
    EfficientnetLite0,
    #[serde(rename = "efficientnet-lite1")]
    EfficientnetLite1,
    #[serde(rename = "efficientnet-lite2")]
    EfficientnetLite2,
    Resnet18,
    Resnet50,
    #[serde(rename = "mobilenet_v2")]
    MobilenetV2,
    #[serde(rename = "inception_v3")]
    InceptionV3,
}

crate::choices!(ModelKind {
    Mlp = "mlp": "Fully connected network on downsampled pixels",
    Cnn = "cnn": "Convolutional network from scratch",
    EfficientnetLite0 = "efficientnet-lite0": "EfficientNet-Lite0 with ImageNet weights (transfer learning)",
    EfficientnetLite1 = "efficientnet-lite1",
    EfficientnetLite2 = "efficientnet-lite2",
    Resnet18 = "resnet18": "ResNet-18 with torchvision's ImageNet weights (`--weights`)",
    Resnet50 = "resnet50": "ResNet-50 with torchvision's ImageNet weights (`--weights`)",
    MobilenetV2 = "mobilenet_v2" | "mobilenet-v2": "MobileNetV2 with torchvision's ImageNet weights (`--weights`)",
    InceptionV3 = "inception_v3" | "inception-v3": "Inception-v3 with torchvision's ImageNet weights (`--weights`); patches of at least 75×75",
});

impl ModelKind {
    /// The EfficientNet-Lite variant, for the pretrained kinds.
    pub fn lite_variant(self) -> Option<LiteVariant> {
        match self {
            ModelKind::EfficientnetLite0 => Some(LiteVariant::Lite0),
            ModelKind::EfficientnetLite1 => Some(LiteVariant::Lite1),
            ModelKind::EfficientnetLite2 => Some(LiteVariant::Lite2),
            _ => None,
        }
    }

    /// The ResNet depth, for the torchvision kinds.
    pub fn resnet_depth(self) -> Option<usize> {
        match self {
            ModelKind::Resnet18 => Some(18),
            ModelKind::Resnet50 => Some(50),
            _ => None,
        }
    }

    /// Whether the model starts from ImageNet weights.
    pub fn is_pretrained(self) -> bool {
        self.torchvision_file().is_some() || self.lite_variant().is_some()
    }

    /// The name of torchvision's ImageNet weights file, for the torchvision kinds.
    pub fn torchvision_file(self) -> Option<&'static str> {
        match self {
            ModelKind::Resnet18 => Some("resnet18-f37072fd.pth"),
            ModelKind::Resnet50 => Some("resnet50-0676ba61.pth"),
            ModelKind::MobilenetV2 => Some("mobilenet_v2-b0353104.pth"),
            ModelKind::InceptionV3 => Some("inception_v3_google-0cc3c7bd.pth"),
            _ => None,
        }
    }
}

/// A model's full configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ModelSpec {
    Mlp(MlpConfig),
    Cnn(CnnConfig),
    #[serde(rename = "efficientnet")]
    EfficientNet(EfficientNetConfig),
    #[serde(rename = "resnet")]
    ResNet(ResNetConfig),
    #[serde(rename = "mobilenet_v2")]
    MobileNetV2(MobileNetV2Config),
    #[serde(rename = "inception_v3")]
    InceptionV3(InceptionV3Config),
}

/// Pixel statistics of stained H&E patches; from-scratch models normalise
/// with these, pretrained ones with what their weights were trained with.
pub const HE_NORMALIZATION: Normalization = Normalization {
    mean: [0.70, 0.55, 0.70],
    std: [0.20, 0.22, 0.18],
};

impl ModelSpec {
    /// The defaults of `kind` for `num_classes` classes.
    pub fn default_for(kind: ModelKind, num_classes: usize) -> Self {
        match kind {
            ModelKind::Mlp => ModelSpec::Mlp(MlpConfig::new().with_num_classes(num_classes)),
            ModelKind::Cnn => ModelSpec::Cnn(CnnConfig::new().with_num_classes(num_classes)),
            ModelKind::EfficientnetLite0
            | ModelKind::EfficientnetLite1
            | ModelKind::EfficientnetLite2 => {
                let variant = kind.lite_variant().unwrap_or(LiteVariant::Lite0);
                let dropout = if variant == LiteVariant::Lite2 {
                    0.3
                } else {
                    0.2
                };
                ModelSpec::EfficientNet(
                    EfficientNetConfig::new(variant)
                        .with_num_classes(num_classes)
                        .with_dropout(dropout),
                )
            }
            ModelKind::Resnet18 | ModelKind::Resnet50 => ModelSpec::ResNet(
                ResNetConfig::new(kind.resnet_depth().unwrap_or(18)).with_num_classes(num_classes),
            ),
            ModelKind::MobilenetV2 => {
                ModelSpec::MobileNetV2(MobileNetV2Config::new().with_num_classes(num_classes))
            }
            ModelKind::InceptionV3 => {
                ModelSpec::InceptionV3(InceptionV3Config::new().with_num_classes(num_classes))
            }
        }
    }

    pub fn kind(&self) -> ModelKind {
        match self {
            ModelSpec::Mlp(_) => ModelKind::Mlp,
            ModelSpec::Cnn(_) => ModelKind::Cnn,
            ModelSpec::EfficientNet(c) => match c.variant {
                LiteVariant::Lite0 => ModelKind::EfficientnetLite0,
                LiteVariant::Lite1 => ModelKind::EfficientnetLite1,
                LiteVariant::Lite2 => ModelKind::EfficientnetLite2,
            },
            ModelSpec::ResNet(c) if c.depth == 50 => ModelKind::Resnet50,
            ModelSpec::ResNet(_) => ModelKind::Resnet18,
            ModelSpec::MobileNetV2(_) => ModelKind::MobilenetV2,
            ModelSpec::InceptionV3(_) => ModelKind::InceptionV3,
        }
    }

    pub fn num_classes(&self) -> usize {
        match self {
            ModelSpec::Mlp(c) => c.num_classes,
            ModelSpec::Cnn(c) => c.num_classes,
            ModelSpec::EfficientNet(c) => c.num_classes,
            ModelSpec::ResNet(c) => c.num_classes,
            ModelSpec::MobileNetV2(c) => c.num_classes,
            ModelSpec::InceptionV3(c) => c.num_classes,
        }
    }

    /// The square side the loader must resize patches to; `None` takes them as stored.
    pub fn input_size(&self) -> Option<u32> {
        match self {
            ModelSpec::Mlp(c) => Some(c.input_size as u32),
            ModelSpec::Cnn(_)
            | ModelSpec::EfficientNet(_)
            | ModelSpec::ResNet(_)
            | ModelSpec::MobileNetV2(_)
            | ModelSpec::InceptionV3(_) => None,
        }
    }

    pub fn normalization(&self) -> Normalization {
        match self {
            ModelSpec::EfficientNet(_) => efficientnet::NORMALIZATION,
            ModelSpec::ResNet(_) => resnet::NORMALIZATION,
            ModelSpec::MobileNetV2(_) => mobilenet::NORMALIZATION,
            ModelSpec::InceptionV3(_) => inception::NORMALIZATION,
            ModelSpec::Mlp(_) | ModelSpec::Cnn(_) => HE_NORMALIZATION,
        }
    }

    /// Checks the configuration, and that a `side`×`side` input survives
    /// the network's downsampling.
    pub fn validate(&self, side: Option<usize>) -> Result<()> {
        if self.num_classes() < 2 {
            return Err(Error::Config(
                "a classifier needs at least 2 classes".into(),
            ));
        }
        match self {
            ModelSpec::Mlp(c) => {
                if c.input_size == 0 || c.hidden.contains(&0) {
                    return Err(Error::Config(
                        "mlp input size and hidden widths must be positive".into(),
                    ));
                }
                check_dropout(c.dropout)?;
            }
            ModelSpec::Cnn(c) => {
                if c.width == 0 || c.depth == 0 || c.stem_stride == 0 {
                    return Err(Error::Config(
                        "cnn width, depth and stem stride must be positive".into(),
                    ));
                }
                check_dropout(c.dropout)?;
                if let Some(side) = side {
                    let mut s = side.div_ceil(c.stem_stride);
                    for _ in 0..c.depth {
                        s /= 2;
                    }
                    if s == 0 {
                        return Err(Error::Config(format!(
                            "cnn of depth {} (stem stride {}) needs patches larger than {side}×{side}",
                            c.depth, c.stem_stride
                        )));
                    }
                }
            }
            ModelSpec::EfficientNet(EfficientNetConfig { dropout, .. })
            | ModelSpec::ResNet(ResNetConfig { dropout, .. })
            | ModelSpec::MobileNetV2(MobileNetV2Config { dropout, .. })
            | ModelSpec::InceptionV3(InceptionV3Config { dropout, .. }) => {
                check_dropout(*dropout)?;
                if let ModelSpec::InceptionV3(_) = self
                    && let Some(s) = side.filter(|&s| s < inception::MIN_SIDE)
                {
                    return Err(Error::Config(format!(
                        "inception_v3 needs patches of at least {0}×{0} (these are {s}×{s}): prepare with a larger --patch-size",
                        inception::MIN_SIDE
                    )));
                }
                if side.is_some_and(|s| s < 32) {
                    return Err(Error::Config(
                        "pretrained backbones downsample 32×: patches must be at least 32×32"
                            .into(),
                    ));
                }
                if let ModelSpec::ResNet(c) = self
                    && ![18, 50].contains(&c.depth)
                {
                    return Err(Error::Config("ResNet depth must be 18 or 50".into()));
                }
            }
        }
        Ok(())
    }

    /// A freshly initialised model on `device` (seed the device first for
    /// reproducible weights).
    pub fn init(&self, device: &Device) -> Model {
        match self {
            ModelSpec::Mlp(c) => Model::Mlp(c.init(device)),
            ModelSpec::Cnn(c) => Model::Cnn(c.init(device)),
            ModelSpec::EfficientNet(c) => Model::EfficientNet(c.init(device)),
            ModelSpec::ResNet(c) => Model::ResNet(c.init(device)),
            ModelSpec::MobileNetV2(c) => Model::MobileNetV2(c.init(device)),
            ModelSpec::InceptionV3(c) => Model::InceptionV3(c.init(device)),
        }
    }
}

/// Any registered model.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Model {
    Mlp(Mlp),
    Cnn(Cnn),
    EfficientNet(EfficientNet),
    ResNet(ResNet),
    MobileNetV2(MobileNetV2),
    InceptionV3(InceptionV3),
}

impl Model {
    /// `[n, 3, h, w]` normalised images → `[n, classes]` logits.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Model::Mlp(m) => m.forward(images),
            Model::Cnn(m) => m.forward(images),
            Model::EfficientNet(m) => m.forward(images),
            Model::ResNet(m) => m.forward(images),
            Model::MobileNetV2(m) => m.forward(images),
            Model::InceptionV3(m) => m.forward(images),
        }
    }
}

/// Dropout is a probability below 1 (NaN is not in the range).
fn check_dropout(p: f64) -> Result<()> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "--dropout must be in [0, 1), got {p}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> Device {
        Device::default()
    }

    #[test]
    fn forward_shapes() {
        let d = device();
        let x = Tensor::<4>::zeros([3, 3, 32, 32], &d);
        let mlp = ModelSpec::Mlp(MlpConfig::new().with_input_size(32)).init(&d);
        assert_eq!(mlp.forward(x.clone()).dims(), [3, 2]);
        let cnn = ModelSpec::Cnn(CnnConfig::new().with_width(4).with_depth(3)).init(&d);
        assert_eq!(cnn.forward(x).dims(), [3, 2]);
        // Global pooling: any size.
        let x = Tensor::<4>::zeros([2, 3, 48, 40], &d);
        assert_eq!(cnn.forward(x).dims(), [2, 2]);
        let cnn3 = ModelSpec::Cnn(
            CnnConfig::new()
                .with_width(4)
                .with_depth(2)
                .with_num_classes(3),
        )
        .init(&d);
        assert_eq!(
            cnn3.forward(Tensor::zeros([1, 3, 16, 16], &d)).dims(),
            [1, 3]
        );
    }

    #[test]
    fn widths_double_up_to_the_cap() {
        let c = CnnConfig::new()
            .with_width(32)
            .with_depth(5)
            .with_max_width(128);
        assert_eq!(c.widths(), vec![32, 64, 128, 128, 128]);
    }

    #[test]
    fn validation_catches_too_small_inputs() {
        let spec = ModelSpec::Cnn(CnnConfig::new().with_depth(4).with_stem_stride(2));
        assert!(spec.validate(Some(32)).is_ok());
        assert!(spec.validate(Some(16)).is_err());
        assert!(
            ModelSpec::default_for(ModelKind::Mlp, 1)
                .validate(None)
                .is_err()
        );
    }

    #[test]
    fn torchvision_kinds_are_pretrained_and_round_trip() {
        for (kind, tag) in [
            (ModelKind::MobilenetV2, "mobilenet_v2"),
            (ModelKind::InceptionV3, "inception_v3"),
        ] {
            assert!(kind.is_pretrained());
            assert_eq!(kind.to_string(), tag);
            let spec = ModelSpec::default_for(kind, 3);
            let text = serde_json::to_string(&spec).unwrap();
            assert!(text.contains(&format!("\"kind\":\"{tag}\"")), "{text}");
            let back: ModelSpec = serde_json::from_str(&text).unwrap();
            assert_eq!(back.kind(), kind);
            assert_eq!(back.num_classes(), 3);
            assert_eq!(back.input_size(), None, "the patch size is the input size");
        }
        assert_eq!(
            ModelSpec::default_for(ModelKind::InceptionV3, 2).normalization(),
            inception::NORMALIZATION
        );
    }

    #[test]
    fn inception_needs_75_pixel_patches() {
        let spec = ModelSpec::default_for(ModelKind::InceptionV3, 2);
        assert!(spec.validate(Some(75)).is_ok());
        assert!(spec.validate(Some(299)).is_ok());
        let err = spec.validate(Some(74)).unwrap_err().to_string();
        assert!(err.contains("at least 75×75"), "{err}");
        let mobilenet = ModelSpec::default_for(ModelKind::MobilenetV2, 2);
        assert!(mobilenet.validate(Some(32)).is_ok());
        assert!(mobilenet.validate(Some(16)).is_err());
    }

    #[test]
    fn spec_round_trips_through_json() {
        let spec = ModelSpec::Cnn(CnnConfig::new().with_width(8));
        let text = serde_json::to_string(&spec).unwrap();
        assert!(text.contains("\"kind\":\"cnn\""), "{text}");
        let back: ModelSpec = serde_json::from_str(&text).unwrap();
        assert_eq!(back.kind(), ModelKind::Cnn);
        assert_eq!(back.input_size(), None);
    }
}
