//! The `prepare` pipeline: dataset → split → plan (decode + tissue, in
//! parallel) → layout → render (crop, augment, encode, in parallel) → shards →
//! manifest. Every byte written is a function of the inputs and options alone,
//! whatever the thread count: records carry ids fixed by the layout and
//! per-record seeds, and the writer appends them in id order.

pub mod encode;
pub mod merge;
pub mod options;
pub mod output;
pub mod parts;
pub mod plan;
pub mod png_fast;
#[cfg(feature = "object-store")]
pub mod remote;
pub mod render;
mod report;
pub mod rle_deflate;
mod sink;

use std::{collections::BTreeMap, path::Path, sync::mpsc, time::Instant};

use rayon::prelude::*;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

pub use self::{
    options::PrepareOptions,
    parts::{PartManifest, Partition},
    report::{MAX_REPORT_BYTES, PrepareReport, RunTimings, read as read_report},
};
use self::{
    output::{Existing, OutputDir},
    plan::{ImagePlan, Layout},
    render::ImageJob,
    sink::ShardSink,
};
use crate::{
    atomic,
    dataset::{self, Dataset},
    error::{Error, Result},
    patch::stain::StainNormalizer,
    preprocess,
    progress::Progress,
    shard::{
        manifest::{self, ImageRow, ManifestRow},
        schema,
    },
    split::{self, Assignment, SplitReport},
};

/// Runs `prepare` end to end on one machine.
pub fn run(opts: &PrepareOptions, progress: &Progress) -> Result<PrepareReport> {
    opts.validate()?;
    let pool = thread_pool(opts)?;
    let started = Instant::now();
    let (ds, warnings) = read_input(opts)?;
    let fingerprint = fingerprint(opts, &ds)?;
    let p = plan_all(opts, &pool, ds, warnings, progress, started)?;

    // 2. The output folder: lock, refuse foreign data, find finished shards.
    let shard_files: Vec<String> = p.layout.shards.iter().map(|s| s.file.clone()).collect();
    let out = OutputDir::open(&opts.output, &fingerprint, &shard_files, opts.overwrite)?;
    if out.existing == Existing::Complete {
        info!(
            "{} already holds this data set; nothing to do (run `histoshard verify` to check it)",
            opts.output.display()
        );
        let report = report::read(&opts.output)?;
        out.finish()?;
        return Ok(report);
    }
    let mine = vec![true; p.layout.shards.len()];
    let (written, resumed, write_s) = write_shards(&p, opts, &pool, &out, mine, progress)?;

    // 4. The manifest, last: its presence marks a complete data set.
    let manifest_started = Instant::now();
    let report = p.report(opts, fingerprint, &written, resumed, write_s, started)?;
    let images = image_rows(&p.ds, &p.assignments, &p.plans, &p.layout);
    let mut manifest = write_tables(&opts.output, &images, &written.rows)?;
    let report = report.with_manifest_time(manifest_started.elapsed().as_secs_f64());
    commit_data_set(&opts.output, &report, &report.run_timings(), &mut manifest)?;
    out.finish()?;
    Ok(report)
}

/// What a worker's `prepare` did.
pub enum WorkerOutcome {
    /// It wrote (or, rerun, found intact) its part, in `dir`.
    Part {
        dir: std::path::PathBuf,
        part: Box<PartManifest>,
    },
    /// The output folder already holds this data set, merged: nothing to do.
    Complete(Box<PrepareReport>),
}

/// Runs worker `part.index` of `part.count`: the whole plan, then only the
/// shards [`parts::owners`] gives this worker, into its part folder, and
/// that part's `part.json` last. Rerun, it keeps the shards it finished.
pub fn run_worker(
    opts: &PrepareOptions,
    part: Partition,
    progress: &Progress,
) -> Result<WorkerOutcome> {
    opts.validate()?;
    let pool = thread_pool(opts)?;
    let started = Instant::now();
    let (ds, warnings) = read_input(opts)?;
    let fingerprint = fingerprint(opts, &ds)?;
    // A finished data set in the output folder, checked before the work:
    // this one (nothing to do), or another (kept unless --overwrite, which
    // `merge` then applies).
    if let Ok(done) = report::read(&opts.output)
        && done.tool == "histoshard"
    {
        if done.fingerprint == fingerprint && opts.output.join(manifest::MANIFEST_PARQUET).is_file()
        {
            info!(
                "{} already holds this data set; nothing to do",
                opts.output.display()
            );
            return Ok(WorkerOutcome::Complete(Box::new(done)));
        }
        if done.fingerprint != fingerprint && !opts.overwrite {
            return Err(Error::output(
                &opts.output,
                "already holds a histoshard data set made with other options or inputs (prepare.json); pass --overwrite to every worker to replace it at the merge, or choose another folder",
            ));
        }
    }
    let p = plan_all(opts, &pool, ds, warnings, progress, started)?;
    let base = PrepareReport::new(report::Parts {
        opts,
        ds: &p.ds,
        fingerprint: fingerprint.clone(),
        split: &p.split_report,
        plans: &p.plans,
        rows: &[],
        shards: &[],
        resumed_shards: 0,
        warnings: p.warnings.clone(),
        ingest_s: p.ingest_s,
        write_s: 0.0,
        started,
    })?;
    let contents = input_digests(opts, &pool, &p.ds)?;
    let plan = plan_fingerprint(&fingerprint, &base, &p, &contents)?;
    let records: Vec<u64> = p.layout.shards.iter().map(|s| s.records).collect();
    let mine: Vec<bool> = parts::owners(&records, part.count)
        .into_iter()
        .map(|w| w == part.index)
        .collect();
    let own: Vec<String> = p
        .layout
        .shards
        .iter()
        .zip(&mine)
        .filter(|(_, m)| **m)
        .map(|(s, _)| s.file.clone())
        .collect();
    if own.is_empty() {
        warn!(
            "worker {} of {} has no shard to write: the plan has {} shards (use --shards or fewer workers)",
            part.index,
            part.count,
            p.layout.shards.len()
        );
    }
    let dir = parts::part_dir(&opts.output, part);
    let out = OutputDir::open(&dir, &plan, &own, opts.overwrite)?;
    // A part.json is there only while the part is finished.
    parts::remove_if_present(&dir.join(parts::PART_FILE))?;
    let (written, resumed, write_s) = write_shards(&p, opts, &pool, &out, mine, progress)?;

    let rows_file = dir.join(parts::ROWS_FILE);
    let mut df = ManifestRow::to_dataframe(&written.rows).map_err(|e| table_err(&dir, e))?;
    manifest::write_table(&mut df, &rows_file)?;
    let images_sha256 = if part.index == 0 {
        let images = image_rows(&p.ds, &p.assignments, &p.plans, &p.layout);
        let path = dir.join(manifest::IMAGES_PARQUET);
        manifest::write_table(
            &mut ImageRow::to_dataframe(&images).map_err(|e| table_err(&dir, e))?,
            &path,
        )?;
        Some(parts::file_sha256(&path)?)
    } else {
        None
    };
    let total = started.elapsed().as_secs_f64();
    let manifest = PartManifest {
        tool: "histoshard".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        partition: part,
        fingerprint,
        plan,
        plan_shards: p
            .layout
            .shards
            .iter()
            .map(|s| parts::PlannedShard {
                file: s.file.clone(),
                records: s.records,
            })
            .collect(),
        shards: written.shards,
        rows_sha256: parts::file_sha256(&rows_file)?,
        rows: written.rows.len() as u64,
        images_sha256,
        report: base,
        overwrite: opts.overwrite,
        host: parts::host_name(),
        timings: RunTimings {
            resumed_shards: resumed,
            timings_s: report::Timings {
                ingest: p.ingest_s,
                write: write_s,
                manifest: (total - p.ingest_s - write_s).max(0.0),
                total,
            },
            records_per_s: written.rows.len() as f64 / total.max(1e-9),
            workers: Vec::new(),
        },
    };
    let text =
        serde_json::to_vec_pretty(&manifest).map_err(|e| Error::output(&dir, e.to_string()))?;
    crate::failpoint::reached("before-part", 1);
    atomic::write(&dir.join(parts::PART_FILE), &text)?;
    // The lock goes; the resume state stays, so that a rerun of a finished
    // worker redoes nothing (merge removes the part).
    drop(out);
    Ok(WorkerOutcome::Part {
        dir,
        part: Box::new(manifest),
    })
}

fn thread_pool(opts: &PrepareOptions) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.unwrap_or(0))
        .build()
        .map_err(|e| Error::Config(format!("cannot start worker threads: {e}")))
}

/// Reads and checks the input (the output folder, when it lies inside it, is
/// never read); the warnings a user should see in `prepare.json`.
fn read_input(opts: &PrepareOptions) -> Result<(Dataset, Vec<String>)> {
    let ds = dataset::load(&opts.input, opts.layout, Some(&opts.output))?;
    info!(layout = ?ds.layout, images = ds.samples.len(), classes = ?ds.classes, "read {}", opts.input.display());
    for s in &ds.skipped {
        warn!("skipped {}: {}", s.file.display(), s.reason);
    }
    let mut warnings = Vec::new();
    if let [only] = ds.classes.as_slice() {
        let w = format!(
            "only one class (\"{only}\") in {}: a classifier needs at least two; check the input's layout (--layout) and folders",
            opts.input.display()
        );
        warn!("{w}");
        warnings.push(w);
    }
    Ok((ds, warnings))
}

/// The fingerprint a run with `opts` gets (options, input names and sizes),
/// from a listing of the input alone: no image is decoded. For deciding
/// before the work whether a destination already holds this data set.
pub fn options_fingerprint(opts: &PrepareOptions) -> Result<String> {
    opts.validate()?;
    let ds = dataset::load(&opts.input, opts.layout, Some(&opts.output))?;
    fingerprint(opts, &ds)
}

/// The global plan, the same on every worker: the split, every image's
/// patches, the record ids and the shards.
struct Planned {
    ds: Dataset,
    warnings: Vec<String>,
    assignments: Vec<Assignment>,
    split_report: SplitReport,
    plans: Vec<ImagePlan>,
    /// Images decoded while planning, kept for rendering.
    cache: plan::ImageCache,
    stain: Option<StainNormalizer>,
    layout: Layout,
    ingest_s: f64,
}

/// Stage 1: split, decode and plan every image (in parallel), and lay the
/// records out.
fn plan_all(
    opts: &PrepareOptions,
    pool: &rayon::ThreadPool,
    ds: Dataset,
    warnings: Vec<String>,
    progress: &Progress,
    started: Instant,
) -> Result<Planned> {
    let (assignments, split_report) = split::assign(&ds, &opts.split_options())?;
    if !split_report.shared_patients.is_empty() {
        let ids: Vec<&str> = split_report
            .shared_patients
            .iter()
            .map(|p| p.patient.as_str())
            .collect();
        warn!(
            "{} patients appear in more than one split ({}): official-split scores are not patient-independent; use --folds for patient-grouped CV",
            ids.len(),
            ids.join(", ")
        );
    }
    let bar = progress.bar("ingest", ds.samples.len() as u64, "images");
    let cache = plan::ImageCache::new(ds.samples.len(), plan::ImageCache::BUDGET);
    let plans: Vec<ImagePlan> = pool.install(|| {
        ds.samples
            .par_iter()
            .enumerate()
            .map(|(i, s)| {
                let p = plan::plan_image(s, opts).map(|(plan, image)| {
                    cache.offer(i, image);
                    plan
                });
                bar.inc(1);
                p
            })
            .collect::<Result<_>>()
    })?;
    bar.finish_and_clear();
    let stain = preprocess::stain_normalizer(
        opts.stain_normalize,
        opts.stain_reference.as_deref(),
        opts.limits(),
    )?;
    crate::failpoint::reached("after-ingest", 1);
    let layout = Layout::new(&plans, &assignments, opts);
    if layout.total_records() == 0 {
        return Err(no_patches(opts, &plans));
    }
    let ingest_s = started.elapsed().as_secs_f64();
    info!(
        records = layout.total_records(),
        shards = layout.shards.len(),
        "planned in {ingest_s:.1}s"
    );
    Ok(Planned {
        ds,
        warnings,
        assignments,
        split_report,
        plans,
        cache,
        stain,
        layout,
        ingest_s,
    })
}

impl Planned {
    fn report(
        &self,
        opts: &PrepareOptions,
        fingerprint: String,
        written: &sink::Written,
        resumed_shards: usize,
        write_s: f64,
        started: Instant,
    ) -> Result<PrepareReport> {
        PrepareReport::new(report::Parts {
            opts,
            ds: &self.ds,
            fingerprint,
            split: &self.split_report,
            plans: &self.plans,
            rows: &written.rows,
            shards: &written.shards,
            resumed_shards,
            warnings: self.warnings.clone(),
            ingest_s: self.ingest_s,
            write_s,
            started,
        })
    }
}

/// Stage 3: renders the records of the shards `mine` marks (less those an
/// earlier run finished) in parallel, and writes them in layout order.
/// Returns what was written, how many shards were kept from an earlier run,
/// and seconds.
fn write_shards(
    p: &Planned,
    opts: &PrepareOptions,
    pool: &rayon::ThreadPool,
    out: &OutputDir,
    mine: Vec<bool>,
    progress: &Progress,
) -> Result<(sink::Written, usize, f64)> {
    let layout = &p.layout;
    let mut writer = ShardSink::new(out, layout, mine)?;
    let resumed = writer.resumed;
    if resumed > 0 {
        info!("resuming: {resumed} shards are complete and verified");
    }
    let write_started = Instant::now();
    let labels: Vec<i64> =
        p.ds.samples
            .iter()
            .map(|s| p.ds.label_of(&s.class).unwrap_or(0) as i64)
            .collect();
    let to_write = writer.to_write();
    let records: u64 = layout
        .shards
        .iter()
        .zip(&to_write)
        .filter(|(_, w)| **w)
        .map(|(s, _)| s.records)
        .sum();
    let bar = progress.bar("patches", records, "records");
    let wanted = |id: u64| to_write[layout.shard_of(id)];
    // Images with a record to write; the others leave the cache at once.
    let renders = |i: usize| {
        let (first, n) = (layout.first_record[i], layout.record_count[i]);
        n > 0 && (layout.shard_of(first)..=layout.shard_of(first + n - 1)).any(|k| to_write[k])
    };
    for &i in &layout.order {
        if !renders(i) {
            drop(p.cache.take(i));
        }
    }
    let jobs: Vec<ImageJob> = layout
        .order
        .iter()
        .filter(|&&i| renders(i))
        .map(|&i| ImageJob {
            index: i,
            sample: &p.ds.samples[i],
            label: labels[i],
            assignment: &p.assignments[i],
            plan: &p.plans[i],
            first_record: layout.first_record[i],
        })
        .collect();
    let window = 2 * pool.current_num_threads() + 2;
    ordered_parallel(
        pool,
        &jobs,
        window,
        |job| render::render_image(job, opts, p.stain.as_ref(), &p.cache, &wanted),
        |records| {
            bar.inc(records.len() as u64);
            records.into_iter().try_for_each(|r| writer.push(r))
        },
    )?;
    bar.finish_and_clear();
    let written = writer.finish()?;
    Ok((written, resumed, write_started.elapsed().as_secs_f64()))
}

/// Writes `features.json`, `images.parquet` and `manifest.csv`; returns the
/// manifest table for [`commit_data_set`].
fn write_tables(
    dir: &Path,
    images: &[ImageRow],
    rows: &[ManifestRow],
) -> Result<polars::prelude::DataFrame> {
    atomic::write(
        &dir.join(output::SCHEMA_FILE),
        schema::FEATURES_JSON.as_bytes(),
    )?;
    manifest::write_table(
        &mut ImageRow::to_dataframe(images).map_err(|e| table_err(dir, e))?,
        &dir.join(manifest::IMAGES_PARQUET),
    )?;
    let mut df = ManifestRow::to_dataframe(rows).map_err(|e| table_err(dir, e))?;
    manifest::write_table(&mut df, &dir.join(manifest::MANIFEST_CSV))?;
    Ok(df)
}

/// Writes `prepare-timings.json`, `prepare.json` and, last,
/// `manifest.parquet`, whose presence marks a complete data set.
fn commit_data_set(
    dir: &Path,
    report: &PrepareReport,
    timings: &RunTimings,
    manifest: &mut polars::prelude::DataFrame,
) -> Result<()> {
    timings.write(dir)?;
    report.write(dir)?;
    crate::failpoint::reached("before-manifest", 1);
    manifest::write_table(manifest, &dir.join(manifest::MANIFEST_PARQUET))
}

/// The error for a run whose filters kept no patch at all: nothing is
/// written, and the message says which filter to loosen.
fn no_patches(opts: &PrepareOptions, plans: &[ImagePlan]) -> Error {
    let candidates: u64 = plans.iter().map(|p| u64::from(p.candidates)).sum();
    let filters = match opts.min_gland_fraction {
        Some(g) => format!(
            "--min-tissue {} and --min-gland-fraction {g}",
            opts.min_tissue
        ),
        None => format!("--min-tissue {}", opts.min_tissue),
    };
    let why = if candidates == 0 {
        format!(
            "no {}-px patch fits in any of the {} image(s) (lower --patch-size or --scale, or use --edge pad)",
            opts.patch_size,
            plans.len()
        )
    } else {
        format!(
            "none of the {candidates} candidate patches in {} image(s) passed {filters}; lower it, or check that the images hold tissue",
            plans.len()
        )
    };
    Error::input(
        &opts.input,
        format!("no patches kept: {why}; nothing written"),
    )
}

fn table_err(dir: &std::path::Path, e: polars::error::PolarsError) -> Error {
    Error::output(dir, format!("cannot build manifest table: {e}"))
}

/// Hash of everything that decides the output: options (not paths, threads or
/// `--overwrite`), the tool and schema version, and the input files' names,
/// sizes and labels.
fn fingerprint(opts: &PrepareOptions, ds: &Dataset) -> Result<String> {
    let mut config = serde_json::to_value(opts).map_err(|e| Error::Config(e.to_string()))?;
    if let Some(m) = config.as_object_mut() {
        m.remove("input");
        m.remove("output");
    }
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION"));
    h.update(schema::SCHEMA_VERSION.to_le_bytes());
    h.update(config.to_string());
    for s in &ds.samples {
        let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mask = s.mask_path.as_deref().map(size).unwrap_or(0);
        h.update(format!(
            "{}|{}|{}|{:?}|{:?}|{:?}|{}\n",
            s.rel_path,
            size(&s.image_path),
            mask,
            s.class,
            s.patient,
            s.subset,
            s.boxes.len()
        ));
    }
    Ok(hex::encode(h.finalize()))
}

/// Hash of everything a worker's shards and part depend on: the options
/// and inputs ([`fingerprint`]), the report before any record is counted
/// (split, counts, warnings), every image's split, patches and record ids,
/// the shards, the rule that deals shards out to workers, and the contents
/// of every input file (`contents`). Workers whose plans differ in anything
/// (other options, inputs or input contents) get different hashes, and
/// `merge` refuses to mix them.
fn plan_fingerprint(
    fingerprint: &str,
    base: &PrepareReport,
    p: &Planned,
    contents: &[String],
) -> Result<String> {
    let mut h = Sha256::new();
    h.update(fingerprint);
    for c in contents {
        h.update(c);
    }
    h.update(parts::partition_rule().to_le_bytes());
    h.update(serde_json::to_vec(base).map_err(|e| Error::Config(e.to_string()))?);
    for (i, plan) in p.plans.iter().enumerate() {
        let a = &p.assignments[i];
        h.update(format!(
            "{i}|{:?}|{}|{:?}|{}|{}|{}x{}|{:?}\n",
            a.split,
            a.subset,
            a.fold,
            p.layout.first_record[i],
            p.layout.record_count[i],
            plan.width,
            plan.height,
            plan.patches
        ));
    }
    for (s, start) in p.layout.shards.iter().zip(&p.layout.shard_start) {
        h.update(format!("{}|{}|{start}\n", s.file, s.records));
    }
    Ok(hex::encode(h.finalize()))
}

/// sha256 of every file the records are made from — each image, its mask,
/// the stain reference — in parallel. (The options fingerprint, which
/// decides resuming, looks at names and sizes only; workers on different
/// machines must also agree on the bytes.)
fn input_digests(
    opts: &PrepareOptions,
    pool: &rayon::ThreadPool,
    ds: &Dataset,
) -> Result<Vec<String>> {
    let files: Vec<&Path> = ds
        .samples
        .iter()
        .flat_map(|s| std::iter::once(s.image_path.as_path()).chain(s.mask_path.as_deref()))
        .chain(opts.stain_reference.as_deref())
        .collect();
    pool.install(|| files.par_iter().map(|f| parts::file_sha256(f)).collect())
}

fn image_rows(
    ds: &Dataset,
    assignments: &[Assignment],
    plans: &[ImagePlan],
    layout: &Layout,
) -> Vec<ImageRow> {
    (0..ds.samples.len())
        .map(|i| {
            let (s, a, p) = (&ds.samples[i], &assignments[i], &plans[i]);
            ImageRow {
                name: s.name.clone(),
                filename: s.rel_path.clone(),
                split: a.split.as_str().to_string(),
                subset: a.subset.clone(),
                fold: a.fold.map(|f| f as i32),
                patient: s.patient.clone(),
                label: ds.label_of(&s.class).unwrap_or(0) as i64,
                label_text: s.class.clone(),
                width: p.width,
                height: p.height,
                candidate_patches: p.candidates,
                kept_patches: p.patches.len() as u32,
                records: layout.record_count[i] as u32,
            }
        })
        .collect()
}

/// Runs `work` on every item on `pool`, at most `window` at a time, and hands
/// the results to `sink` in item order on the calling thread.
fn ordered_parallel<T: Sync, R: Send>(
    pool: &rayon::ThreadPool,
    items: &[T],
    window: usize,
    work: impl Fn(&T) -> Result<R> + Sync,
    mut sink: impl FnMut(R) -> Result<()>,
) -> Result<()> {
    let (tx, rx) = mpsc::channel::<(usize, Result<R>)>();
    pool.in_place_scope(|scope| {
        let mut pending = BTreeMap::new();
        let (mut spawned, mut emitted) = (0, 0);
        while emitted < items.len() {
            while spawned < items.len() && spawned < emitted + window {
                let (tx, item, work) = (tx.clone(), &items[spawned], &work);
                let i = spawned;
                scope.spawn(move |_| {
                    let _ = tx.send((i, work(item)));
                });
                spawned += 1;
            }
            let (i, r) = rx
                .recv()
                .map_err(|_| Error::Config("worker thread vanished".into()))?;
            pending.insert(i, r);
            while let Some(r) = pending.remove(&emitted) {
                sink(r?)?;
                emitted += 1;
            }
        }
        Ok(())
    })
}
