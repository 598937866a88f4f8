//! The two halves of a `prepare` shared by several machines: a worker's run
//! (`prepare --worker-index I --num-workers N`) and `merge`.

use std::{path::PathBuf, process::ExitCode};

use histoshard::prepare::{self, Partition, PrepareOptions, WorkerOutcome, merge};

use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The output folder the workers wrote their parts into.
    dir: PathBuf,
    /// Replace another data set in the folder (implied when every worker was given --overwrite).
    #[arg(long)]
    overwrite: bool,
}

pub fn run(a: Args, g: &Global) -> anyhow::Result<ExitCode> {
    let merged = merge::merge(&a.dir, a.overwrite)?;
    if !g.quiet {
        let r = &merged.report;
        let shards: usize = r.shards.values().map(Vec::len).sum();
        if merged.parts == 0 {
            println!(
                "{} already holds a complete data set ({} records in {shards} shards); nothing to merge",
                a.dir.display(),
                r.records_total
            );
        } else {
            println!(
                "merged {} parts: {} records in {shards} shards, {:.1}s → {}",
                merged.parts,
                r.records_total,
                merged.timings.timings_s.total,
                a.dir.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `prepare` as worker `part.index` of `part.count`.
pub fn run_worker(opts: &PrepareOptions, part: Partition, g: &Global) -> anyhow::Result<ExitCode> {
    let outcome = prepare::run_worker(opts, part, &super::progress(g.quiet))?;
    if g.quiet {
        return Ok(ExitCode::SUCCESS);
    }
    match outcome {
        WorkerOutcome::Complete(r) => println!(
            "{} already holds this data set ({} records); nothing to do",
            opts.output.display(),
            r.records_total
        ),
        WorkerOutcome::Part { dir, part: m } => println!(
            "worker {} of {}: {} records in {} shards, {:.1}s → {}; when all {} are done: histoshard merge {}",
            part.index,
            part.count,
            m.rows,
            m.shards.len(),
            m.timings.timings_s.total,
            dir.display(),
            part.count,
            opts.output.display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}
