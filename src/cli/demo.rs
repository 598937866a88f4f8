//! `histoshard demo`: the whole path in one command — a GlaS-layout set
//! (synthetic unless `--input` is given) → prepare → verify → compare
//! (mlp, cnn, efficientnet-lite0) → heatmaps of test images with the best
//! model → `REPORT.md` tying it together. Sized to finish in minutes on a
//! 2-core CPU: half magnification and 112-px patches by default.

use std::{fmt::Write as _, path::PathBuf, process::ExitCode, time::Instant};

use anyhow::Context as _;
use histoshard::{
    inspect::{self, InspectOptions},
    prepare::{self, PrepareOptions},
    synth::{self, SynthOptions},
    train::{
        compare::{self, COMPARISON_MD},
        evaluate::EvalOptions,
        learner::{DeviceChoice, TrainConfig},
        models::ModelKind,
        predict,
    },
    verify,
};

use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A Warwick-QU (GlaS) folder; by default a synthetic one is generated.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Everything goes here (raw set, shards, runs, REPORT.md).
    #[arg(long, short, default_value = "demo-out")]
    output: PathBuf,
    /// Synthetic images to generate (165: the real set's size and split).
    #[arg(long, default_value_t = 165)]
    images: usize,
    /// Models to compare.
    #[arg(
        long,
        value_parser = super::choice::choice::<ModelKind>(),
        value_delimiter = ',',
        default_value = "mlp,cnn,efficientnet-lite0"
    )]
    models: Vec<ModelKind>,
    /// Resize factor before tiling (0.5: half the scanner's magnification).
    #[arg(long, value_parser = super::finite::<f32>, default_value_t = 0.5)]
    scale: f32,
    #[arg(long, default_value_t = 112)]
    patch_size: u32,
    /// Augmented copies per train patch.
    #[arg(long, default_value_t = 1)]
    augment: u32,
    /// Share of the training patients held out as a validation split (for
    /// the validation curves only: every model keeps its last epoch, so by
    /// default all training images train, as in cross-validation).
    #[arg(long, value_parser = super::finite::<f64>, default_value_t = 0.0)]
    val_fraction: f64,
    /// Epochs per from-scratch model; pretrained models train their head
    /// for half of them and fine-tune for a third [default: each model's
    /// `train` defaults: 40 for mlp and cnn, 4 + 3 for pretrained models].
    #[arg(long)]
    epochs: Option<usize>,
    /// Also run patient-grouped K-fold CV per model (K× the training time).
    #[arg(long)]
    cv: Option<u32>,
    /// cpu, flex, cuda[:N] or auto.
    #[arg(long, default_value = "auto", env = "HISTOSHARD_DEVICE")]
    device: DeviceChoice,
    /// ImageNet weights, a `.pth` or its URL [default: the cache filled by scripts/fetch_weights.sh].
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Test images to draw heatmaps for.
    #[arg(long, default_value_t = 4)]
    heatmaps: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

pub fn run(a: Args, g: &Global) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let progress = super::progress(g.quiet);
    let out = &a.output;
    histoshard::atomic::check_folder(out)?;
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;

    let input = match &a.input {
        Some(dir) => dir.clone(),
        None => {
            let dir = out.join("glas");
            if !dir.join("Grade.csv").is_file() {
                tracing::info!("demo: generating {} GlaS-layout images", a.images);
                synth::generate(
                    &dir,
                    &SynthOptions {
                        images: a.images,
                        seed: a.seed,
                    },
                )?;
            }
            dir
        }
    };

    let shards = out.join("shards");
    let mut p = PrepareOptions::new(&input, &shards);
    p.scale = a.scale;
    p.patch_size = a.patch_size;
    p.stride = a.patch_size;
    p.augment = a.augment;
    p.val_fraction = a.val_fraction;
    p.folds = a.cv;
    p.seed = a.seed;
    p.threads = g.threads;
    p.overwrite = true;
    tracing::info!("demo: prepare → {}", shards.display());
    let prepared = prepare::run(&p, &progress)?;
    let verified = verify::verify(&shards, &Default::default(), &progress)?;
    anyhow::ensure!(
        verified.faults.is_empty(),
        "{}: verify found {} faults",
        shards.display(),
        verified.faults.len()
    );
    let sheet = inspect::inspect(&shards, &InspectOptions::default())?.sheet_path;

    let classes = prepared.classes.len().max(2);
    let mut models = Vec::new();
    for &kind in &a.models {
        let mut cfg = TrainConfig::for_model(kind, classes, a.weights.as_deref())?;
        cfg.seed = a.seed;
        cfg.device = a.device.resolve();
        if let Some(t) = g.threads {
            cfg.workers = t.max(1);
        }
        match (a.epochs, &mut cfg.transfer) {
            (None, _) => {}
            (Some(e), Some(t)) => {
                t.freeze_epochs = e.div_ceil(2);
                cfg.epochs = e.div_ceil(3);
            }
            (Some(e), None) => cfg.epochs = e,
        }
        models.push((kind, cfg));
    }
    let runs = out.join("compare");
    let mut eval = EvalOptions::default();
    if let Some(t) = g.threads {
        eval.workers = t.max(1);
    }
    let results = compare::compare(&shards, &runs, &models, a.cv, &eval, &progress)?;

    // Heatmaps from the model with the best image-level AUC (then accuracy).
    let best = results
        .iter()
        .max_by(|x, y| {
            let key = |r: &compare::ModelResult| {
                (
                    r.test.image_mean.roc_auc.value.max(0.0),
                    r.test.image_mean.accuracy.value,
                )
            };
            key(x)
                .partial_cmp(&key(y))
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .context("no model was trained")?;
    let heat_dir = out.join("heatmaps");
    std::fs::create_dir_all(&heat_dir)
        .with_context(|| format!("{}: cannot create", heat_dir.display()))?;
    let device = a.device.device()?;
    let predictor = predict::Predictor::open(&best.run, None, &device, 32)?;
    let names = predictor.preprocessing().classes.clone();
    let positive = names.len().saturating_sub(1);
    let mut test_images: Vec<PathBuf> = std::fs::read_dir(&input)
        .with_context(|| format!("{}: cannot list", input.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name.starts_with("test") && name.ends_with(".bmp") && !name.ends_with("_anno.bmp")
        })
        .collect();
    test_images.sort();
    let mut heat_md = String::new();
    for path in test_images.iter().take(a.heatmaps) {
        let (prediction, img) = predictor.predict(path)?;
        let file = predict::write_heatmap(
            &heat_dir,
            &img,
            &prediction,
            positive,
            predictor.preprocessing().patch_size,
            names.get(positive).map_or("class", String::as_str),
        )?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = writeln!(
            heat_md,
            "**{stem}**: predicted {} (P = {:.2})\n\n![{stem}](heatmaps/{name})\n",
            prediction.label_text,
            prediction
                .probabilities
                .get(positive)
                .copied()
                .unwrap_or(0.0)
        );
    }

    let mut md = String::new();
    let _ = writeln!(
        md,
        "# histoshard demo\n\n\
         Input: `{}` ({} images). Prepared at scale {} into {}-px patches, {} augmented \
         cop{} per train patch: {} records ({}). Patients in more than one split: {}.\n\n\
         ![contact sheet]({})\n",
        input.display(),
        prepared.images,
        a.scale,
        a.patch_size,
        a.augment,
        if a.augment == 1 { "y" } else { "ies" },
        prepared.records_total,
        prepared
            .records
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        prepared.split.shared_patients.len(),
        sheet.strip_prefix(out).unwrap_or(&sheet).display()
    );
    let table = std::fs::read_to_string(runs.join(COMPARISON_MD))
        .with_context(|| format!("{}: cannot read", runs.join(COMPARISON_MD).display()))?;
    md.push_str(
        &table
            .replace("# Model comparison", "## Model comparison")
            .replace("](comparison.svg)", "](compare/comparison.svg)"),
    );
    let _ = writeln!(
        md,
        "\n## Heatmaps ({}, the best image-level AUC)\n\nPatch probability of `{}` over test images.\n\n{heat_md}",
        best.model,
        names.get(positive).map_or("", String::as_str)
    );
    let _ = writeln!(
        md,
        "Runs, curves and full evaluation reports: `compare/<model>/`. Total time {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    histoshard::atomic::write(&out.join("REPORT.md"), md.as_bytes())?;
    if !g.quiet {
        println!(
            "demo finished in {:.0} s → {}",
            started.elapsed().as_secs_f64(),
            out.join("REPORT.md").display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
