use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use histoshard::train::{
    compare,
    evaluate::EvalOptions,
    learner::{DeviceChoice, TrainConfig},
    models::ModelKind,
};

use super::{Global, train};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A folder written by `histoshard prepare`.
    #[arg(long)]
    data: PathBuf,
    /// Folder for one run per model and the comparison table and plot.
    #[arg(long, short)]
    output: PathBuf,
    /// Models to compare, comma-separated.
    #[arg(
        long,
        value_parser = super::choice::choice::<ModelKind>(),
        value_delimiter = ',',
        default_value = "mlp,cnn,efficientnet-lite0"
    )]
    models: Vec<ModelKind>,
    /// Folder of per-model configs, `<model>.toml` with `train`'s keys
    /// (e.g. `cnn.toml`); a model without one trains with its defaults.
    #[arg(long)]
    config_dir: Option<PathBuf>,
    /// Epochs for every model (pretrained: fine-tuning epochs) [default: each model's].
    #[arg(long)]
    epochs: Option<usize>,
    /// Frozen-feature epochs of the pretrained models [default: 4].
    #[arg(long)]
    freeze_epochs: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    /// Also run patient-grouped K-fold CV per model (needs `prepare --folds K`).
    #[arg(long)]
    cv: Option<u32>,
    /// cpu, flex, cuda[:N] or auto.
    #[arg(long, default_value = "auto", env = "HISTOSHARD_DEVICE")]
    device: DeviceChoice,
    /// ImageNet weights of the pretrained model, a `.pth` or its URL [default: the weights cache].
    #[arg(long)]
    weights: Option<PathBuf>,
    #[arg(long)]
    seed: Option<u64>,
}

pub fn run(a: Args, g: &Global) -> anyhow::Result<ExitCode> {
    let classes = histoshard::train::data::num_classes(&a.data)?;
    let mut models = Vec::new();
    for &kind in &a.models {
        let mut cfg = TrainConfig::for_model(kind, classes, a.weights.as_deref())?;
        if let Some(dir) = &a.config_dir {
            let path = dir.join(format!("{kind}.toml"));
            if path.exists() {
                let file: train::Args = super::config::load(&path)?;
                train::apply_args(&mut cfg, &train::Args::default(), &file)
                    .with_context(|| format!("{}", path.display()))?;
            }
        }
        if let Some(v) = a.epochs {
            cfg.epochs = v;
        }
        if let (Some(v), Some(t)) = (a.freeze_epochs, cfg.transfer.as_mut()) {
            t.freeze_epochs = v;
        }
        if let Some(v) = a.batch_size {
            cfg.batch_size = v;
        }
        if let Some(v) = a.seed {
            cfg.seed = v;
        }
        cfg.device = a.device.resolve();
        if let Some(t) = g.threads {
            cfg.workers = t.max(1);
        }
        models.push((kind, cfg));
    }
    let mut eval = EvalOptions::default();
    if let Some(t) = g.threads {
        eval.workers = t.max(1);
    }
    let results = compare::compare(
        &a.data,
        &a.output,
        &models,
        a.cv,
        &eval,
        &super::progress(g.quiet),
    )?;
    if !g.quiet {
        println!(
            "{:<20} {:>16} {:>16} {:>16} {:>12} {:>10}",
            "model", "image accuracy", "image AUC", "image F1", "parameters", "train s"
        );
        for r in &results {
            let i = &r.test.image_mean;
            println!(
                "{:<20} {:>16.3} {:>16.3} {:>16.3} {:>12} {:>10.0}",
                r.model,
                i.accuracy.value,
                i.roc_auc.value,
                i.f1.value,
                r.parameters,
                r.train_seconds
            );
        }
        println!("→ {}", a.output.join(compare::COMPARISON_MD).display());
    }
    Ok(ExitCode::SUCCESS)
}
