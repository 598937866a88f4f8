use std::{path::PathBuf, process::ExitCode};

use anyhow::bail;
use histoshard::{
    patch::augment::AugmentConfig,
    train::{
        data::Selection,
        learner::{
            self, Balance, DeviceChoice, Keep, OptimizerKind, RunOptions, Schedule, TrainConfig,
            TrainOutcome,
        },
        models::{ModelKind, ModelSpec},
        transfer::{BnPolicy, Unfreeze},
    },
};
use serde::Deserialize;

use super::Global;

/// Every option is optional here: flag, else config file, else the default
/// of `TrainConfig::new`.
#[derive(Debug, Default, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Args {
    /// TOML file with any of these options (keys as the flags: `batch-size = 32`); flags win.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Continue this run folder after its last finished epoch (its run.json
    /// gives every other option; --data may point at a moved data folder).
    #[arg(long, conflicts_with_all = ["config", "output", "model"])]
    #[serde(skip)]
    resume: Option<PathBuf>,
    /// Stop cleanly after this many epochs in this invocation (continue with --resume).
    #[arg(long)]
    #[serde(skip)]
    stop_after: Option<usize>,
    /// A folder written by `histoshard prepare`, or its URL (`s3://bucket/prefix`, `gs://`, `az://`, `file:///`: fetched into the local cache first).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Run folder for run.json, metrics.csv and checkpoints.
    #[arg(long, short)]
    output: Option<PathBuf>,
    #[arg(long, value_parser = super::choice::choice::<ModelKind>())]
    model: Option<ModelKind>,
    /// Epochs [default: 40 for cnn and mlp; 3 of fine-tuning for pretrained models].
    #[arg(long)]
    epochs: Option<usize>,
    /// [default: 32; 16 for pretrained models]
    #[arg(long)]
    batch_size: Option<usize>,
    /// Peak learning rate [default: 0.001; 0.0001 for pretrained models].
    #[arg(long, value_parser = super::finite::<f64>)]
    lr: Option<f64>,
    /// [default: adamw; adam for pretrained models]
    #[arg(long, value_parser = super::choice::choice::<OptimizerKind>())]
    optimizer: Option<OptimizerKind>,
    /// [default: 0.0001; 0 for pretrained models]
    #[arg(long, value_parser = super::finite::<f64>)]
    weight_decay: Option<f64>,
    /// Learning-rate schedule [default: cosine; none for pretrained models].
    #[arg(long, value_parser = super::choice::choice::<Schedule>())]
    schedule: Option<Schedule>,
    /// Epochs between steps of the step schedule [default: 10].
    #[arg(long)]
    step_size: Option<usize>,
    /// Factor of each step of the step schedule, in (0, 1] [default: 0.1].
    #[arg(long, value_parser = super::finite::<f64>)]
    step_gamma: Option<f64>,
    /// Stop after this many epochs without a lower validation loss (keeps the best epoch).
    #[arg(long)]
    early_stopping: Option<usize>,
    /// The epoch whose model the run keeps (best.bpk): the lowest validation
    /// loss, or the last [default: last; best with --early-stopping].
    #[arg(long, value_parser = super::choice::choice::<Keep>())]
    keep: Option<Keep>,
    /// Seed of initialisation, shuffling and augmentation [default: 42].
    #[arg(long)]
    seed: Option<u64>,
    /// Class imbalance: loss weights, oversampling, or none [default: weights; none for pretrained models].
    #[arg(long, value_parser = super::choice::choice::<Balance>())]
    balance: Option<Balance>,
    /// Augment training patches on the fly; `--augment false` turns it off
    /// [default: on for cnn and mlp, with strong stain jitter; off for
    /// pretrained models: prepare may have augmented already].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    augment: Option<bool>,
    /// Augmentation strengths (config file only: an `[augmentation]` table).
    #[arg(skip)]
    augmentation: Option<AugmentConfig>,
    /// Records in the shuffle buffer [default: 1024].
    #[arg(long)]
    shuffle_buffer: Option<usize>,
    /// Batches decoded ahead [default: 4].
    #[arg(long)]
    prefetch: Option<usize>,
    /// cpu (LibTorch's when built with tch, else flex), flex, cuda[:N] or auto [default: cpu].
    #[arg(long, env = "HISTOSHARD_DEVICE")]
    device: Option<String>,
    /// Train on the folds other than K and validate on fold K, over train and
    /// val together (prepare --folds).
    #[arg(long)]
    fold: Option<i32>,
    /// Patient-grouped K-fold cross-validation over train and val (needs
    /// `prepare --folds K`); runs go to OUTPUT/fold-k, summary to OUTPUT/cv.json.
    #[arg(long, conflicts_with = "fold")]
    cv: Option<u32>,
    /// cnn: channels of the first block [default: 16].
    #[arg(long)]
    width: Option<usize>,
    /// cnn: number of conv blocks [default: 4].
    #[arg(long)]
    depth: Option<usize>,
    /// cnn: stride of the first convolution [default: 2].
    #[arg(long)]
    stem_stride: Option<usize>,
    /// mlp: side patches are downsampled to [default: 32].
    #[arg(long)]
    input_size: Option<usize>,
    /// mlp: hidden layer widths, comma-separated [default: 256,64].
    #[arg(long, value_delimiter = ',')]
    hidden: Option<Vec<usize>>,
    /// mlp: standardise each patch's channels (mean 0, variance 1) before
    /// the first layer, so that stain strength and exposure do not reach it
    /// [default: true].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    standardize: Option<bool>,
    /// Dropout before the head [default: 0.2; 0.3 for efficientnet-lite2, 0
    /// for resnet18/50, 0.5 for inception_v3 (torchvision's)].
    #[arg(long, value_parser = super::finite::<f64>)]
    dropout: Option<f64>,
    /// Pretrained models: the ImageNet `.pth`, or its URL (downloaded once
    /// into the cache) [default: the cache that scripts/fetch_weights.sh
    /// fills, ~/.cache/histoshard/weights].
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Pretrained models: epochs of the new head on cached frozen features,
    /// before `--epochs` of fine-tuning [default: 4].
    #[arg(long)]
    freeze_epochs: Option<usize>,
    /// Pretrained models: learning rate of the frozen-feature stage [default: 0.001].
    #[arg(long, value_parser = super::finite::<f64>)]
    head_lr: Option<f64>,
    /// Pretrained models: what fine-tuning trains: all, none or last:N blocks
    /// (MBConv / residual / inverted residual blocks, Inception's Mixed_* blocks)
    /// [default: last:11 for efficientnet-lite0, all for the others].
    #[arg(long)]
    unfreeze: Option<String>,
    /// Pretrained models: batch-norm statistics while fine-tuning [default: train].
    #[arg(long, value_parser = super::choice::choice::<BnPolicy>())]
    bn_stats: Option<BnPolicy>,
    /// Pretrained models: before the frozen-feature stage, re-estimate every
    /// batch norm's statistics on the training patches (one forward pass) so
    /// that features are normalised for this tissue, not for ImageNet
    /// [default: true].
    #[arg(long)]
    adapt_bn: Option<bool>,
    /// Pretrained models: with `--unfreeze last:N`, compute
    /// the frozen blocks below the trainable ones once per patch and fine-tune
    /// from those activations (same result, less work) [default: true].
    #[arg(long)]
    cache_prefix: Option<bool>,
    /// Pretrained models: megabytes of cached activations kept in memory;
    /// beyond that they spill to a file in the run folder, removed at the end
    /// (same result, slower epochs) [default: half the available memory].
    #[arg(long, value_name = "MB")]
    #[serde(skip)]
    cache_memory: Option<usize>,
}

pub fn run(a: Args, g: &Global) -> anyhow::Result<ExitCode> {
    // A URL is fetched into the cache once; the run reads (and records) that folder.
    let data_arg = a
        .data
        .as_deref()
        .map(|d| super::data_dir(d, false))
        .transpose()?;
    let opts = RunOptions {
        stop_after: a.stop_after,
        data: data_arg.clone(),
        cache_memory: a.cache_memory.map(|mb| mb.saturating_mul(1_000_000)),
    };
    if let Some(run) = &a.resume {
        let outcome = histoshard::train::resume::resume(run, &opts, &super::progress(g.quiet))?;
        print_outcome(&outcome, run, g);
        return Ok(ExitCode::SUCCESS);
    }
    let file: Args = match &a.config {
        Some(path) => super::config::load(path)?,
        None => Args::default(),
    };
    let (Some(data), Some(output)) = (
        data_arg.or(file.data.clone()),
        a.output.clone().or(file.output.clone()),
    ) else {
        bail!("train needs --data and --output (as flags or in the config file)");
    };
    let data = super::data_dir(&data, false)?;
    histoshard::atomic::check_folder(&output)?;
    let Some(kind) = a.model.or(file.model) else {
        bail!("train needs --model (mlp, cnn, efficientnet-lite0, resnet18, mobilenet_v2, …)");
    };
    let classes = histoshard::train::data::num_classes(&data)?;
    let mut cfg = TrainConfig::for_model(
        kind,
        classes,
        a.weights.clone().or(file.weights.clone()).as_deref(),
    )?;
    apply_args(&mut cfg, &a, &file)?;
    if let Some(t) = g.threads {
        cfg.workers = t.max(1);
    }
    cfg.validate()?;
    if let Some(k) = a.cv.or(file.cv) {
        let cv = histoshard::train::cv::cross_validate(
            &data,
            &output,
            &cfg,
            k,
            &opts,
            &super::progress(g.quiet),
        )?;
        if !g.quiet {
            print!("{}", histoshard::train::cv::summary(&cv));
            println!(
                "→ {}",
                output.join(histoshard::train::cv::CV_JSON).display()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let outcome = learner::train(&data, &output, &cfg, &opts, &super::progress(g.quiet))?;
    print_outcome(&outcome, &output, g);
    Ok(ExitCode::SUCCESS)
}

/// Applies the options given (flags first, then the config file) over
/// `cfg`'s defaults; `compare` uses it for its per-model config files.
pub(super) fn apply_args(cfg: &mut TrainConfig, a: &Args, file: &Args) -> anyhow::Result<()> {
    match &mut cfg.model {
        ModelSpec::Mlp(c) => {
            if let Some(v) = a.input_size.or(file.input_size) {
                c.input_size = v;
            }
            if let Some(v) = a.hidden.clone().or(file.hidden.clone()) {
                c.hidden = v;
            }
            if let Some(v) = a.standardize.or(file.standardize) {
                c.standardize = Some(v);
            }
        }
        ModelSpec::Cnn(c) => {
            if let Some(v) = a.width.or(file.width) {
                c.width = v;
            }
            if let Some(v) = a.depth.or(file.depth) {
                c.depth = v;
            }
            if let Some(v) = a.stem_stride.or(file.stem_stride) {
                c.stem_stride = v;
            }
        }
        _ => {}
    }
    if let Some(v) = a.dropout.or(file.dropout) {
        cfg.model.set_dropout(v);
    }
    match &mut cfg.transfer {
        Some(t) => {
            if let Some(v) = a.freeze_epochs.or(file.freeze_epochs) {
                t.freeze_epochs = v;
            }
            if let Some(v) = a.head_lr.or(file.head_lr) {
                t.head_lr = v;
            }
            if let Some(u) = a.unfreeze.clone().or(file.unfreeze.clone()) {
                t.unfreeze = u.parse::<Unfreeze>().map_err(anyhow::Error::msg)?;
            }
            if let Some(v) = a.bn_stats.or(file.bn_stats) {
                t.bn = v;
            }
            if let Some(v) = a.adapt_bn.or(file.adapt_bn) {
                t.adapt_bn = v;
            }
            if let Some(v) = a.cache_prefix.or(file.cache_prefix) {
                t.cache_prefix = v;
            }
        }
        None => {
            if a.weights.is_some() || a.freeze_epochs.is_some() || a.unfreeze.is_some() {
                bail!(
                    "--weights, --freeze-epochs and --unfreeze are for pretrained models (efficientnet-lite0…)"
                );
            }
        }
    }
    macro_rules! merge {
        ($($field:ident),*) => {$(
            if let Some(v) = a.$field.or(file.$field) { cfg.$field = v; }
        )*};
    }
    merge!(
        epochs,
        batch_size,
        lr,
        optimizer,
        weight_decay,
        schedule,
        step_size,
        step_gamma,
        seed,
        keep,
        balance,
        shuffle_buffer,
        prefetch
    );
    cfg.early_stopping = a.early_stopping.or(file.early_stopping);
    if cfg.early_stopping.is_some() && a.keep.or(file.keep).is_none() {
        // Early stopping chooses on validation loss; so does the model it keeps.
        cfg.keep = Keep::Best;
    }
    // A model's default augmentation (the cnn's) stays unless a table
    // replaces it or `--augment false` turns it off.
    let table = a.augmentation.clone().or(file.augmentation.clone());
    match a.augment.or(file.augment) {
        Some(false) => cfg.augment = None,
        Some(true) => cfg.augment = table.or(cfg.augment.take()).or(Some(Default::default())),
        None if table.is_some() => cfg.augment = table,
        None => {}
    }
    if let Some(d) = a.device.clone().or(file.device.clone()) {
        cfg.device = d.parse::<DeviceChoice>().map_err(anyhow::Error::msg)?;
    }
    if let Some(k) = a.fold.or(file.fold) {
        (cfg.train, cfg.val) = Selection::cv_fold(k);
    }
    Ok(())
}

fn print_outcome(outcome: &TrainOutcome, output: &std::path::Path, g: &Global) {
    if !g.quiet {
        let s = &outcome.state;
        let last = outcome.history.last();
        let lowest = outcome
            .history
            .iter()
            .filter(|m| m.val_loss.is_finite())
            .min_by(|x, y| x.val_loss.total_cmp(&y.val_loss));
        let kept = match (s.best_val_loss, lowest) {
            (Some(loss), Some(low)) if low.epoch == s.best_epoch => {
                format!("kept epoch {}; lowest val loss {loss:.4}", s.best_epoch)
            }
            (Some(_), Some(low)) => format!(
                "kept epoch {} (the last); lowest val loss {:.4} at epoch {}",
                s.best_epoch, low.val_loss, low.epoch
            ),
            _ => format!("kept epoch {} (no validation split)", s.best_epoch),
        };
        println!(
            "{} epochs{}; {kept}; {:.1} img/s → {}",
            s.epochs_done,
            if s.stopped_early { " (early stop)" } else { "" },
            last.map(|m| m.images_per_second).unwrap_or(0.0),
            output.display()
        );
    }
}
