use std::{path::PathBuf, process::ExitCode};

use histoshard::train::{
    classify,
    learner::DeviceChoice,
    models::{LiteVariant, ModelKind},
};

use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Images to classify (any format `prepare` reads).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// An ImageNet model: efficientnet-lite0, -lite1 or -lite2.
    #[arg(long, value_parser = super::choice::choice::<ModelKind>(), default_value_t = ModelKind::EfficientnetLite0)]
    model: ModelKind,
    /// The `.pth`, or its URL (downloaded once into the cache) [default: the weights cache].
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Classes to list per image.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// cpu, flex, cuda[:N] or auto.
    #[arg(long, default_value = "auto", env = "HISTOSHARD_DEVICE")]
    device: DeviceChoice,
}

pub fn run(a: Args, _g: &Global) -> anyhow::Result<ExitCode> {
    let Some(variant) = LiteVariant::of_kind(a.model) else {
        anyhow::bail!(
            "{} has no ImageNet head; classify takes efficientnet-lite0/1/2",
            a.model
        );
    };
    let device = a.device.device()?;
    let model = classify::imagenet_model(variant, a.weights.as_deref(), &device)?;
    let results = classify::classify(&model, variant, &a.images, a.top.max(1), &device)?;
    for r in &results {
        println!("{}", r.path.display());
        for (i, (class, name, p)) in r.top.iter().enumerate() {
            println!("  {}. {:>6.2}%  {name} ({class})", i + 1, p * 100.0);
        }
    }
    Ok(ExitCode::SUCCESS)
}
