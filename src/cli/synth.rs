use std::{path::PathBuf, process::ExitCode};

use histoshard::synth::{self, SynthOptions};

use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder to create (must not already hold a data set).
    #[arg(long, short)]
    output: PathBuf,
    /// Number of images (165 gives the real 85 / 60 / 20 split).
    #[arg(long, default_value_t = 165)]
    images: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

pub fn run(a: Args, g: &Global) -> anyhow::Result<ExitCode> {
    let summary = synth::generate(
        &a.output,
        &SynthOptions {
            images: a.images,
            seed: a.seed,
        },
    )?;
    if !g.quiet {
        println!(
            "wrote {} images ({} benign, {} malignant, {} patients) to {}",
            summary.images,
            summary.benign,
            summary.malignant,
            summary.patients,
            a.output.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
