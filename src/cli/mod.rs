//! Command-line interface: one file per subcommand, each an `Args` struct and
//! a `run` that calls the library.

mod choice;
#[cfg(feature = "train")]
mod classify;
#[cfg(feature = "train")]
mod compare;
mod config;
#[cfg(feature = "train")]
mod demo;
#[cfg(feature = "train")]
mod evaluate;
#[cfg(feature = "train")]
mod export;
mod inspect;
mod merge;
#[cfg(feature = "train")]
mod predict;
mod prepare;
mod synth;
#[cfg(feature = "train")]
mod train;
mod verify;

use std::{io::IsTerminal, process::ExitCode};

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Histopathology images → TFRecord shards of augmented patches, for burn and TensorFlow.
#[derive(Debug, Parser)]
#[command(name = "histoshard", version, about, long_about = None)]
pub struct Cli {
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors; no progress bars.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Worker threads (default: one per core).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The whole path in one command: synth → prepare → compare → heatmaps → REPORT.md.
    #[cfg(feature = "train")]
    Demo(Box<demo::Args>),
    /// Write a synthetic data set in the Warwick-QU (GlaS) download's layout.
    Synth(synth::Args),
    /// Convert labelled images into shards of patches plus a manifest.
    Prepare(Box<prepare::Args>),
    /// Join the parts of `prepare --worker-index I --num-workers N` into one data set.
    Merge(merge::Args),
    /// Re-read every shard and check it against the manifest.
    Verify(verify::Args),
    /// Counts per split, class and patient, and a contact sheet of patches.
    Inspect(inspect::Args),
    /// Train a classifier (mlp, cnn or a pretrained EfficientNet-Lite, ResNet, MobileNetV2 or Inception-v3) on prepared shards with burn.
    #[cfg(feature = "train")]
    Train(Box<train::Args>),
    /// Evaluate a trained run on a held-out split, patch and image level.
    #[cfg(feature = "train")]
    Evaluate(evaluate::Args),
    /// Train several models on the same shards and compare them in one table and plot.
    #[cfg(feature = "train")]
    Compare(compare::Args),
    /// Classify whole new images with a trained run (table, CSV, heatmaps).
    #[cfg(feature = "train")]
    Predict(predict::Args),
    /// Write a run's model as safetensors (PyTorch names) or burnpack, plus model.json.
    #[cfg(feature = "train")]
    Export(export::Args),
    /// Top-5 ImageNet classes of photos with a pretrained backbone (checks the weights).
    #[cfg(feature = "train")]
    Classify(classify::Args),
}

impl Command {
    /// Whether the command runs models, so sets up their compute threads
    /// first (`set_compute_threads`).
    #[cfg(feature = "train")]
    fn computes_with_models(&self) -> bool {
        matches!(
            self,
            Command::Demo(_)
                | Command::Train(_)
                | Command::Evaluate(_)
                | Command::Compare(_)
                | Command::Predict(_)
                | Command::Classify(_)
        )
    }
}

/// Logs go to stderr; `RUST_LOG` overrides the level chosen by -v/-q.
pub fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("histoshard={level},warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .compact();
    // Timestamps only help when debugging; plain runs stay readable.
    if verbose > 0 {
        builder.init();
    } else {
        builder.without_time().init();
    }
}

/// Progress bars unless `--quiet`.
fn progress(quiet: bool) -> histoshard::progress::Progress {
    histoshard::progress::Progress::new(!quiet)
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let global = Global {
        quiet: cli.quiet,
        threads: sane_threads(cli.threads),
    };
    histoshard::alloc::keep_freed_memory();
    #[cfg(feature = "train")]
    if cli.command.computes_with_models() {
        histoshard::train::learner::set_compute_threads(global.threads.unwrap_or(0));
    }
    match cli.command {
        Command::Synth(a) => synth::run(a, &global),
        #[cfg(feature = "train")]
        Command::Demo(a) => demo::run(*a, &global),
        Command::Prepare(a) => prepare::run(*a, &global),
        Command::Merge(a) => merge::run(a, &global),
        Command::Verify(a) => verify::run(a, &global),
        Command::Inspect(a) => inspect::run(a, &global),
        #[cfg(feature = "train")]
        Command::Train(a) => train::run(*a, &global),
        #[cfg(feature = "train")]
        Command::Evaluate(a) => evaluate::run(a, &global),
        #[cfg(feature = "train")]
        Command::Classify(a) => classify::run(a, &global),
        #[cfg(feature = "train")]
        Command::Compare(a) => compare::run(a, &global),
        #[cfg(feature = "train")]
        Command::Predict(a) => predict::run(a, &global),
        #[cfg(feature = "train")]
        Command::Export(a) => export::run(a, &global),
    }
}

/// `--threads` (or a config file's `threads`) made sane: 0 means one per
/// core (the default), and more than 4 per core (at least 16, at most 256)
/// is capped with a warning; 10,000 threads stalled `prepare` while
/// starting them, and more threads than that never run faster.
fn sane_threads(requested: Option<usize>) -> Option<usize> {
    let n = requested.filter(|&n| n > 0)?;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let cap = (4 * cores).clamp(16, 256);
    if n > cap {
        tracing::warn!(
            "--threads {n} is more than this machine can use ({cores} cores; at most {cap}, 4 per core): using {cap}"
        );
        return Some(cap);
    }
    Some(n)
}

/// The value parser of every float flag: a number, and finite. Rust's float
/// parsing takes `nan` and `inf`, which would run, then reach a run's JSON as
/// `null` (unreadable by `evaluate` and `--resume`). Ranges are checked with
/// the other options by the library, which also sees values from config files.
fn finite<T: std::str::FromStr + Into<f64> + Copy>(s: &str) -> Result<T, String> {
    let v: T = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if v.into().is_finite() {
        Ok(v)
    } else {
        Err(format!("{s} is not a finite number"))
    }
}

/// A data set named on the command line: a local folder as it is; a URL
/// (`s3://bucket/prefix`, …) fetched into the local cache (every file again
/// with `fresh`), whose folder is returned.
fn data_dir(arg: &std::path::Path, fresh: bool) -> anyhow::Result<std::path::PathBuf> {
    if !histoshard::remote::is_url(arg) {
        return Ok(arg.to_path_buf());
    }
    #[cfg(feature = "object-store")]
    {
        let url = arg.to_string_lossy();
        Ok(histoshard::prepare::remote::fetch(&url, fresh)?)
    }
    #[cfg(not(feature = "object-store"))]
    {
        let _ = fresh;
        Err(histoshard::remote::unsupported(arg).into())
    }
}

/// Flags every subcommand sees.
pub struct Global {
    pub quiet: bool,
    pub threads: Option<usize>,
}

#[cfg(test)]
mod tests {
    use std::any::TypeId;

    use clap::{CommandFactory, Parser};

    use super::Cli;

    /// Every float flag of every subcommand refuses NaN and infinities at
    /// parsing, naming the flag: a new float flag without `finite` fails here.
    #[test]
    fn every_float_flag_is_finite() {
        let cli = Cli::command();
        let mut checked = 0;
        for sub in cli.get_subcommands() {
            for arg in sub.get_arguments() {
                let t = arg.get_value_parser().type_id();
                if t != TypeId::of::<f64>() && t != TypeId::of::<f32>() {
                    continue;
                }
                let long = format!("--{}", arg.get_long().expect("float flags are long flags"));
                for bad in ["nan", "NaN", "inf", "-inf", "infinity", "1e999"] {
                    let arg = format!("{long}={bad}");
                    let err = Cli::try_parse_from(["histoshard", sub.get_name(), &arg])
                        .expect_err(&format!("{} {long} {bad} accepted", sub.get_name()));
                    assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{err}");
                    assert!(err.to_string().contains(&long), "{err}");
                }
                if let Err(e) = Cli::try_parse_from(["histoshard", sub.get_name(), &long, "0.5"]) {
                    assert_ne!(e.kind(), clap::error::ErrorKind::ValueValidation, "{e}");
                }
                checked += 1;
            }
        }
        // prepare's six; with the trainer, demo's --scale and train's five too.
        let expected = if cfg!(feature = "train") { 12 } else { 6 };
        assert!(checked >= expected, "only {checked} float flags found");
    }
}
