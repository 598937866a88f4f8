use std::{path::PathBuf, process::ExitCode};

use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A folder written by `histoshard prepare`.
    dir: PathBuf,
}

pub fn run(a: Args, _g: &Global) -> anyhow::Result<ExitCode> {
    anyhow::bail!("inspect {}: not built yet", a.dir.display())
}
