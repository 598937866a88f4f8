use std::{path::PathBuf, process::ExitCode};

use anyhow::bail;
use histoshard::{
    dataset::Layout,
    patch::{augment::AugmentConfig, stain::StainMethod, tiling::EdgePolicy},
    prepare::{
        self, PrepareOptions,
        encode::{EncodeFormat, PngCompression},
    },
    shard::Compression,
};
use serde::Deserialize;

use super::Global;

/// Every option is optional here: the value comes from the flag, else the
/// config file, else the default in `PrepareOptions::new`.
#[derive(Debug, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Args {
    /// TOML file with any of these options (keys as the flags: `patch-size = 224`); flags win.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// The labelled images: a Warwick-QU folder, VOC XML folder, CSV file, or a folder per class; or a URL of one (`s3://bucket/prefix`, …: downloaded into the local cache first).
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// Folder for shards, manifest and prepare.json; or a URL (`s3://bucket/prefix`, `gs://`, `az://`, `file:///`): prepared in a local staging folder, then uploaded, manifest.parquet last.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Input layout (default: detected).
    #[arg(long, value_parser = super::choice::choice::<Layout>())]
    layout: Option<Layout>,
    /// Patch side in pixels [default: 224].
    #[arg(long)]
    patch_size: Option<u32>,
    /// Step between patches [default: the patch size].
    #[arg(long)]
    stride: Option<u32>,
    /// Resize factor applied before tiling [default: 1.0].
    #[arg(long, value_parser = super::finite::<f32>)]
    scale: Option<f32>,
    /// What to do with the strip a whole stride does not cover [default: drop].
    #[arg(long, value_parser = super::choice::choice::<EdgePolicy>())]
    edge: Option<EdgePolicy>,
    /// Minimum tissue fraction (Otsu on optical density) of a kept patch [default: 0.25].
    #[arg(long, value_parser = super::finite::<f32>)]
    min_tissue: Option<f32>,
    /// Keep only patches whose gland-mask fraction reaches this (Warwick masks).
    #[arg(long, value_parser = super::finite::<f32>)]
    min_gland_fraction: Option<f32>,
    /// Augmented copies per train patch [default: 0].
    #[arg(long)]
    augment: Option<u32>,
    /// Augmentation strengths (config file only: an `[augmentation]` table).
    #[arg(skip)]
    augmentation: Option<AugmentConfig>,
    /// Normalise stain colour on every split.
    #[arg(long, value_parser = super::choice::choice::<StainMethod>())]
    stain_normalize: Option<StainMethod>,
    /// Reference image for stain normalisation (default: a built-in H&E target).
    #[arg(long)]
    stain_reference: Option<PathBuf>,
    /// Patch encoding [default: png].
    #[arg(long, value_parser = super::choice::choice::<EncodeFormat>())]
    format: Option<EncodeFormat>,
    /// JPEG quality [default: 90].
    #[arg(long)]
    quality: Option<u8>,
    /// PNG speed/size trade-off [default: balanced].
    #[arg(long, value_parser = super::choice::choice::<PngCompression>())]
    png_compression: Option<PngCompression>,
    /// Shards per split [default: from --shard-size-mb].
    #[arg(long)]
    shards: Option<u32>,
    /// Target shard size when --shards is not given [default: 64].
    #[arg(long, value_parser = super::finite::<f64>)]
    shard_size_mb: Option<f64>,
    /// Whole-file shard compression (TF: compression_type="GZIP") [default: none].
    #[arg(long, value_parser = super::choice::choice::<Compression>())]
    compression: Option<Compression>,
    /// Fraction of train carved out as val, grouped by patient [default: 0.15].
    #[arg(long, value_parser = super::finite::<f64>)]
    val_fraction: Option<f64>,
    /// Test fraction when the input has no split of its own [default: 0.2].
    #[arg(long, value_parser = super::finite::<f64>)]
    test_fraction: Option<f64>,
    /// Assign every image a patient-grouped cross-validation fold 0..K.
    #[arg(long)]
    folds: Option<u32>,
    /// Seed of the split, shard order and augmentation [default: 42].
    #[arg(long)]
    seed: Option<u64>,
    /// Refuse images larger than this many pixels [default: 100000000].
    #[arg(long)]
    max_pixels: Option<u64>,
    /// Replace a data set already in the output folder.
    #[arg(long)]
    #[serde(default)]
    overwrite: bool,
    #[arg(skip)]
    threads: Option<usize>,
    /// This worker's number, 0..N, when N machines share the work (default: from SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX); then `histoshard merge`.
    #[arg(long)]
    #[serde(skip)]
    worker_index: Option<u32>,
    /// How many workers share the work (default: SLURM_ARRAY_TASK_COUNT; `--num-workers 1` alone: one machine, whatever the environment).
    #[arg(long)]
    #[serde(skip)]
    num_workers: Option<u32>,
}

impl Args {
    /// Flags first, then the config file, then the defaults.
    fn resolve(self, file: Args, threads: Option<usize>) -> anyhow::Result<PrepareOptions> {
        let (Some(input), Some(output)) = (self.input.or(file.input), self.output.or(file.output))
        else {
            bail!("prepare needs --input and --output (as flags or in the config file)");
        };
        let mut o = PrepareOptions::new(input, output);
        macro_rules! merge {
            ($($field:ident),*) => {$(
                if let Some(v) = self.$field.or(file.$field) { o.$field = v; }
            )*};
        }
        merge!(
            patch_size,
            scale,
            edge,
            min_tissue,
            augment,
            augmentation,
            format,
            quality,
            png_compression
        );
        merge!(
            shard_size_mb,
            compression,
            val_fraction,
            test_fraction,
            seed,
            max_pixels
        );
        o.stride = self.stride.or(file.stride).unwrap_or(o.patch_size);
        o.layout = self.layout.or(file.layout);
        o.min_gland_fraction = self.min_gland_fraction.or(file.min_gland_fraction);
        o.stain_normalize = self.stain_normalize.or(file.stain_normalize);
        o.stain_reference = self.stain_reference.or(file.stain_reference);
        o.shards = self.shards.or(file.shards);
        o.folds = self.folds.or(file.folds);
        o.overwrite = self.overwrite || file.overwrite;
        o.threads = threads.or(super::sane_threads(file.threads));
        Ok(o)
    }
}

pub fn run(a: Args, g: &Global) -> anyhow::Result<ExitCode> {
    let file: Args = match &a.config {
        Some(path) => super::config::load(path)?,
        None => Args::default(),
    };
    let env = |k: &str| std::env::var(k).ok();
    let partition = prepare::Partition::resolve(a.worker_index, a.num_workers, &env)?;
    let mut opts = a.resolve(file, g.threads)?;
    let remote_output = histoshard::remote::is_url(&opts.output);
    if histoshard::remote::is_url(&opts.input) {
        opts.input = fetch_input(&opts.input)?;
    }
    if let Some(part) = partition {
        if remote_output {
            return super::merge::run_remote_worker(&opts, part, g);
        }
        return super::merge::run_worker(&opts, part, g);
    }
    if remote_output {
        return upload(&opts, g);
    }
    let report = prepare::run(&opts, &super::progress(g.quiet))?;
    if !g.quiet {
        let per_split: Vec<String> = report
            .records
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        let shards: usize = report.shards.values().map(Vec::len).sum();
        println!(
            "{} records ({}) in {shards} shards, {:.0} KB/record, {:.1}s ({:.0} records/s) → {}",
            report.records_total,
            per_split.join(", "),
            report.mean_bytes_per_record / 1000.0,
            report.timings_s.total,
            report.records_per_s,
            opts.output.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `prepare --input URL`: the objects under the URL, downloaded into the cache.
fn fetch_input(url: &std::path::Path) -> anyhow::Result<PathBuf> {
    #[cfg(feature = "object-store")]
    {
        Ok(prepare::remote::fetch_input(&url.to_string_lossy())?)
    }
    #[cfg(not(feature = "object-store"))]
    {
        Err(histoshard::remote::unsupported(url).into())
    }
}

/// `prepare --output URL`: prepared in the staging folder, then uploaded.
fn upload(opts: &PrepareOptions, g: &Global) -> anyhow::Result<ExitCode> {
    #[cfg(feature = "object-store")]
    {
        let url = opts.output.to_string_lossy();
        match prepare::remote::prepare_to(&url, opts, &super::progress(g.quiet))? {
            prepare::remote::Uploaded::AlreadyThere(r) if !g.quiet => println!(
                "{url} already holds this data set ({} records); nothing to do",
                r.records_total
            ),
            prepare::remote::Uploaded::Done {
                report,
                objects,
                bytes,
                upload_s,
            } if !g.quiet => println!(
                "{} records in {} shards → {url} ({objects} objects, {:.1} MB uploaded in {upload_s:.1}s)",
                report.records_total,
                report.shards.values().map(Vec::len).sum::<usize>(),
                bytes as f64 / 1e6
            ),
            _ => {}
        }
        Ok(ExitCode::SUCCESS)
    }
    #[cfg(not(feature = "object-store"))]
    {
        let _ = g;
        Err(histoshard::remote::unsupported(&opts.output).into())
    }
}
