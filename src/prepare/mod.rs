//! The `prepare` pipeline: dataset → split → plan (decode + tissue, in
//! parallel) → layout → render (crop, augment, encode, in parallel) → shards →
//! manifest. Every byte written is a function of the inputs and options alone,
//! whatever the thread count: records carry ids fixed by the layout and
//! per-record seeds, and the writer appends them in id order.

pub mod encode;
pub mod options;
pub mod output;
pub mod plan;
pub mod png_fast;
pub mod render;
mod report;
pub mod rle_deflate;
mod sink;

use std::{collections::BTreeMap, sync::mpsc, time::Instant};

use rayon::prelude::*;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

pub use self::{
    options::PrepareOptions,
    report::{MAX_REPORT_BYTES, PrepareReport, read as read_report},
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
    preprocess,
    progress::Progress,
    shard::{
        manifest::{self, ImageRow, ManifestRow},
        schema,
    },
    split::{self, Assignment},
};

/// Runs `prepare` end to end.
pub fn run(opts: &PrepareOptions, progress: &Progress) -> Result<PrepareReport> {
    opts.validate()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.unwrap_or(0))
        .build()
        .map_err(|e| Error::Config(format!("cannot start worker threads: {e}")))?;
    let started = Instant::now();

    // 1. Ingest and validate everything before writing anything. The output
    // folder, when it lies inside the input, is never read.
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

    // 2. The output folder: lock, refuse foreign data, find finished shards.
    let fingerprint = fingerprint(opts, &ds)?;
    let shard_files: Vec<String> = layout.shards.iter().map(|s| s.file.clone()).collect();
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
    let mut writer = ShardSink::new(&out, &layout)?;
    let resumed = writer.resumed;
    if resumed > 0 {
        info!(
            "resuming: {resumed} of {} shards are complete and verified",
            layout.shards.len()
        );
    }

    // 3. Render images in parallel; write their records in layout order.
    let write_started = Instant::now();
    let labels: Vec<i64> = ds
        .samples
        .iter()
        .map(|s| ds.label_of(&s.class).unwrap_or(0) as i64)
        .collect();
    let to_write = layout.total_records() - writer.rows.len() as u64;
    let bar = progress.bar("patches", to_write, "records");
    let done = writer.done();
    let wanted = |id: u64| !done[layout.shard_of(id)];
    let jobs: Vec<ImageJob> = layout
        .order
        .iter()
        .map(|&i| ImageJob {
            index: i,
            sample: &ds.samples[i],
            label: labels[i],
            assignment: &assignments[i],
            plan: &plans[i],
            first_record: layout.first_record[i],
        })
        .collect();
    let window = 2 * pool.current_num_threads() + 2;
    ordered_parallel(
        &pool,
        &jobs,
        window,
        |job| render::render_image(job, opts, stain.as_ref(), &cache, &wanted),
        |records| {
            bar.inc(records.len() as u64);
            records.into_iter().try_for_each(|r| writer.push(r))
        },
    )?;
    bar.finish_and_clear();
    let summaries = writer.finish()?;
    let write_s = write_started.elapsed().as_secs_f64();

    // 4. The manifest, last: its presence marks a complete data set.
    let manifest_started = Instant::now();
    let rows = summaries.rows;
    let images = image_rows(&ds, &assignments, &plans, &layout);
    let report = PrepareReport::new(report::Parts {
        opts,
        ds: &ds,
        fingerprint,
        split: &split_report,
        plans: &plans,
        rows: &rows,
        shards: &summaries.shards,
        resumed_shards: resumed,
        warnings,
        ingest_s,
        write_s,
        started,
    })?;
    let dir = &opts.output;
    atomic::write(
        &dir.join(output::SCHEMA_FILE),
        schema::FEATURES_JSON.as_bytes(),
    )?;
    manifest::write_table(
        &mut ImageRow::to_dataframe(&images).map_err(|e| table_err(dir, e))?,
        &dir.join(manifest::IMAGES_PARQUET),
    )?;
    let mut df = ManifestRow::to_dataframe(&rows).map_err(|e| table_err(dir, e))?;
    manifest::write_table(&mut df, &dir.join(manifest::MANIFEST_CSV))?;
    let report = report.with_manifest_time(manifest_started.elapsed().as_secs_f64());
    report.write(dir)?;
    crate::failpoint::reached("before-manifest", 1);
    manifest::write_table(&mut df, &dir.join(manifest::MANIFEST_PARQUET))?;
    out.finish()?;
    Ok(report)
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
