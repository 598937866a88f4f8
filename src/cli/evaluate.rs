use std::{path::PathBuf, process::ExitCode};

use histoshard::train::{
    evaluate::{self, EvalOptions},
    learner::DeviceChoice,
};

use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A run folder written by `histoshard train`.
    #[arg(long)]
    run: PathBuf,
    /// The prepared folder to evaluate on.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "test")]
    split: String,
    /// Only this subset (GlaS: testA or testB); by default each subset and all together.
    #[arg(long)]
    subset: Option<String>,
    /// Model file [default: RUN/best.bpk].
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Bootstrap resamples for the intervals of balanced accuracy, F1 and AUC.
    #[arg(long, default_value_t = 1000)]
    bootstrap: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu, cuda[:N] or auto [default: the training run's].
    #[arg(long)]
    device: Option<DeviceChoice>,
}

pub fn run(a: Args, g: &Global) -> anyhow::Result<ExitCode> {
    let mut opts = EvalOptions {
        split: a.split,
        subset: a.subset,
        checkpoint: a.checkpoint,
        batch_size: a.batch_size,
        bootstrap: a.bootstrap,
        seed: a.seed,
        device: a.device,
        ..EvalOptions::default()
    };
    if let Some(t) = g.threads {
        opts.workers = t.max(1);
    }
    let report = evaluate::evaluate(&a.run, &a.data, &opts, &super::progress(g.quiet))?;
    if !g.quiet {
        print!("{}", evaluate::table(&report));
    }
    Ok(ExitCode::SUCCESS)
}
