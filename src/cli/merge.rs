//! The two halves of a `prepare` shared by several machines: a worker's run
//! (`prepare --worker-index I --num-workers N`) and `merge`.

use std::{path::PathBuf, process::ExitCode};

use histoshard::prepare::{self, Partition, PrepareOptions, WorkerOutcome, merge};

use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The output folder (or object storage URL: s3://…, gs://…, az://…, file:///…) the workers wrote their parts into.
    dir: PathBuf,
    /// Replace another data set in the folder (implied when every worker was given --overwrite).
    #[arg(long)]
    overwrite: bool,
}

pub fn run(a: Args, g: &Global) -> anyhow::Result<ExitCode> {
    if histoshard::remote::is_url(&a.dir) {
        return merge_remote(&a, g);
    }
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

/// `merge URL`: the parts at the URL merged there.
fn merge_remote(a: &Args, g: &Global) -> anyhow::Result<ExitCode> {
    #[cfg(feature = "object-store")]
    {
        let url = a.dir.to_string_lossy();
        let merged = prepare::remote::merge_at(&url, a.overwrite)?;
        if !g.quiet {
            let r = &merged.report;
            if merged.parts == 0 {
                println!(
                    "{url} already holds a complete data set ({} records); nothing to merge",
                    r.records_total
                );
            } else {
                println!(
                    "merged {} parts: {} records in {} shards (copied in the store), {:.1}s → {url}",
                    merged.parts, r.records_total, merged.shards, merged.total_s
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }
    #[cfg(not(feature = "object-store"))]
    {
        let _ = g;
        Err(histoshard::remote::unsupported(&a.dir).into())
    }
}

/// `prepare --output URL` as worker `part.index` of `part.count`: the part
/// prepared locally, then uploaded under the URL.
pub fn run_remote_worker(
    opts: &PrepareOptions,
    part: Partition,
    g: &Global,
) -> anyhow::Result<ExitCode> {
    #[cfg(feature = "object-store")]
    {
        use prepare::remote::WorkerUploaded;
        let url = opts.output.to_string_lossy();
        let outcome = prepare::remote::worker_to(&url, opts, part, &super::progress(g.quiet))?;
        if g.quiet {
            return Ok(ExitCode::SUCCESS);
        }
        match outcome {
            WorkerUploaded::AlreadyThere(r) => println!(
                "{url} already holds this data set ({} records); nothing to do",
                r.records_total
            ),
            WorkerUploaded::PartThere { url: at, part: m } => println!(
                "{at} already holds this part ({} records in {} shards); nothing to do",
                m.rows,
                m.shards.len()
            ),
            WorkerUploaded::Part {
                url: at,
                part: m,
                bytes,
                upload_s,
            } => println!(
                "worker {} of {}: {} records in {} shards, {:.1} MB uploaded in {upload_s:.1}s → {at}; when all {} are done: histoshard merge {url}",
                part.index,
                part.count,
                m.rows,
                m.shards.len(),
                bytes as f64 / 1e6,
                part.count
            ),
        }
        Ok(ExitCode::SUCCESS)
    }
    #[cfg(not(feature = "object-store"))]
    {
        let _ = (part, g);
        Err(histoshard::remote::unsupported(&opts.output).into())
    }
}
