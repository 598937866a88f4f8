use std::{io::Write as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use histoshard::train::{learner::DeviceChoice, predict};

use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A run folder written by `histoshard train`.
    #[arg(long)]
    run: PathBuf,
    /// Whole images, tiled the way `prepare` tiled the training data.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Model file [default: RUN/best.bpk].
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Write one row per image here (path, label, probabilities, patches).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Write NAME.heatmap.png per image here: patch probabilities over the image.
    #[arg(long)]
    heatmap: Option<PathBuf>,
    /// The class the heatmap shows [default: the last, e.g. malignant].
    #[arg(long)]
    heatmap_class: Option<String>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// cpu, flex, cuda[:N] or auto.
    #[arg(long, default_value = "auto", env = "HISTOSHARD_DEVICE")]
    device: DeviceChoice,
}

pub fn run(a: Args, g: &Global) -> anyhow::Result<ExitCode> {
    // Before any work: what the outputs would replace.
    if let Some(csv) = &a.csv {
        histoshard::atomic::check_target(csv)?;
    }
    if let Some(dir) = &a.heatmap {
        histoshard::atomic::check_folder(dir)?;
    }
    let device = a.device.device()?;
    let predictor =
        predict::Predictor::open(&a.run, a.checkpoint.as_deref(), &device, a.batch_size)?;
    let classes = predictor.preprocessing().classes.clone();
    let class = match &a.heatmap_class {
        Some(name) => classes.iter().position(|c| c == name).with_context(|| {
            format!(
                "--heatmap-class {name:?} is not one of {}",
                classes.join(", ")
            )
        })?,
        None => classes.len().saturating_sub(1),
    };
    if let Some(dir) = &a.heatmap {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    let mut rows = Vec::new();
    let header: Vec<String> = ["image", "label", "patches", "background_patches"]
        .iter()
        .map(|s| s.to_string())
        .chain(classes.iter().map(|c| format!("p_{c}")))
        .collect();
    if !g.quiet {
        println!(
            "{:<40} {:>12} {:>8}  probabilities ({})",
            "image",
            "label",
            "patches",
            classes.join(" / ")
        );
    }
    for path in &a.images {
        let (p, img) = predictor.predict(path)?;
        if !g.quiet {
            let probs: Vec<String> = p.probabilities.iter().map(|v| format!("{v:.3}")).collect();
            println!(
                "{:<40} {:>12} {:>8}  {}",
                path.display(),
                p.label_text,
                p.patches.len(),
                probs.join(" / ")
            );
        }
        if let Some(dir) = &a.heatmap {
            predict::write_heatmap(
                dir,
                &img,
                &p,
                class,
                predictor.preprocessing().patch_size,
                classes.get(class).map_or("class", String::as_str),
            )?;
        }
        let mut row = vec![
            path.display().to_string(),
            p.label_text.clone(),
            p.patches.len().to_string(),
            p.background_patches.to_string(),
        ];
        row.extend(p.probabilities.iter().map(|v| format!("{v:.6}")));
        rows.push(row);
    }
    if let Some(csv_path) = &a.csv {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(&header)?;
        for r in &rows {
            w.write_record(r)?;
        }
        histoshard::atomic::write(csv_path, &w.into_inner()?)?;
    }
    std::io::stdout().flush()?;
    Ok(ExitCode::SUCCESS)
}
