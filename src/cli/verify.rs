use std::{path::PathBuf, process::ExitCode};

use histoshard::verify::{self, VerifyOptions};

use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A folder written by `histoshard prepare`, or its URL (`s3://bucket/prefix`, `gs://`, `az://`, `file:///`: downloaded whole, then checked).
    dir: PathBuf,
    /// Also write `record_id,pixel_sha256` of every decoded patch to this CSV.
    #[arg(long)]
    pixel_digests: Option<PathBuf>,
}

pub fn run(a: Args, g: &Global) -> anyhow::Result<ExitCode> {
    let opts = VerifyOptions {
        pixel_digests: a.pixel_digests,
    };
    let local = super::data_dir(&a.dir, true)?;
    let report = verify::verify(&local, &opts, &super::progress(g.quiet))?;
    for f in &report.faults {
        eprintln!("fault: {f}");
    }
    if report.ok() {
        if !g.quiet {
            println!(
                "ok: {} records in {} shards verified ({})",
                report.records,
                report.shards,
                a.dir.display()
            );
        }
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: {} faults in {} ({} records read in {} shards)",
            report.faults.len(),
            a.dir.display(),
            report.records,
            report.shards
        );
        Ok(ExitCode::FAILURE)
    }
}
