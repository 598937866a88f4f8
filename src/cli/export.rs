use std::{path::PathBuf, process::ExitCode};

use histoshard::train::{
    export::{self, ExportFormat},
    learner::DeviceChoice,
};

use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A run folder written by `histoshard train`.
    #[arg(long)]
    run: PathBuf,
    #[arg(long, value_parser = super::choice::choice::<ExportFormat>(), default_value_t = ExportFormat::Safetensors)]
    format: ExportFormat,
    /// Folder for the weights and model.json [default: RUN/export].
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Model file [default: RUN/best.bpk].
    #[arg(long)]
    checkpoint: Option<PathBuf>,
}

pub fn run(a: Args, g: &Global) -> anyhow::Result<ExitCode> {
    let out = a.output.unwrap_or_else(|| a.run.join("export"));
    let device = DeviceChoice::Cpu.device()?;
    let info = export::export(&a.run, &out, a.format, a.checkpoint.as_deref(), &device)?;
    if !g.quiet {
        println!(
            "{} ({} parameters) → {}/{} + model.json",
            info.model.kind(),
            info.parameters,
            out.display(),
            info.weights
        );
    }
    Ok(ExitCode::SUCCESS)
}
