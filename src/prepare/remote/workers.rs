//! Workers and the merge on object storage.
//!
//! **Workers** (`prepare --worker-index I --num-workers N --output URL`,
//! [`worker_to`]): the destination is checked as above, the part is prepared
//! into a local staging folder by the local worker's code
//! ([`crate::prepare::run_worker`]), then uploaded under
//! `URL/.histoshard-parts/part-I-of-N/` — its shards, each whole, then its
//! tables, and **`part.json` last** (deleted first when a rerun begins), so a
//! part is complete exactly when its `part.json` is there. A part already
//! there from the same options is not redone; a killed worker's rerun
//! resumes its staging folder.
//!
//! **Merge** (`merge URL`, [`merge_at`]): the parts' small files are
//! downloaded into a local folder and checked by the local merge's checks
//! ([`merge::check`], the shards' sizes from the listing); then the data set
//! is published by the code `prepare_to` uses ([`Publish`]): the journal, the
//! shards **copied server-side** from the parts to their final names, the
//! tables (written by [`merge::Checked::write_data_set`], the one-machine
//! code), `manifest.parquet` last; then the parts are deleted.
//!
//! Why the workers upload under the part prefix and the merge copies, rather
//! than workers uploading straight to the final names: a worker then never
//! writes a name a data set has, so a prefix holding an earlier, complete
//! data set cannot hold that set's `manifest.parquet` beside new shards (a
//! mix that looks complete) while the workers run, no worker has to delete
//! another data set's manifest on its own, and the journal has one writer.
//! The final names change only in the merge, after every check, in the order
//! that already keeps "nothing looks complete before `manifest.parquet`". The
//! cost is one server-side copy request per shard (no bytes through the
//! merging machine) and, briefly, the shards stored twice.
//!

use super::*;

/// What [`worker_to`] did.
pub enum WorkerUploaded {
    /// The part was prepared (or found in staging) and uploaded to `url`.
    Part {
        url: String,
        part: Box<PartManifest>,
        bytes: u64,
        upload_s: f64,
    },
    /// The part is already at `url`, whole, from these options: nothing done.
    PartThere {
        url: String,
        part: Box<PartManifest>,
    },
    /// The prefix already holds this data set, merged: nothing done.
    AlreadyThere(Box<PrepareReport>),
}

/// `PARTS_DIR/part-I-of-N`: a part's sub-prefix.
fn part_prefix(part: Partition) -> String {
    format!("{}/{}", parts::PARTS_DIR, part.dir_name())
}

/// The part at `prefix`, if its `part.json` is there, is this histoshard's
/// and from the options `fingerprint`, and every shard it lists is there at
/// its recorded size.
fn part_there(store: &Store, prefix: &str, fingerprint: &str) -> Result<Option<PartManifest>> {
    let objects: BTreeMap<String, u64> = store
        .list_under(prefix)?
        .into_iter()
        .map(|o| (o.name, o.size))
        .collect();
    let json = format!("{prefix}/{}", parts::PART_FILE);
    if !objects.contains_key(&json) {
        return Ok(None);
    }
    let dir = scratch()?;
    store.download(&json, &dir.path().join(parts::PART_FILE))?;
    let Ok(m) = parts::read_part(dir.path()) else {
        return Ok(None);
    };
    let whole = m.tool == "histoshard"
        && m.version == env!("CARGO_PKG_VERSION")
        && m.fingerprint == fingerprint
        && m.shards
            .iter()
            .all(|s| objects.get(&format!("{prefix}/{}", s.file)) == Some(&s.bytes));
    Ok(whole.then_some(m))
}

/// `prepare --worker-index I --num-workers N --output URL`: checks the
/// destination as [`prepare_to`] does, prepares the part into a local
/// staging folder ([`crate::prepare::run_worker`]), then uploads it under
/// `URL/.histoshard-parts/part-I-of-N/`: its shards (each whole, as
/// [`Store::upload`] sends any file), its tables, and last `part.json`, so
/// that a part is complete exactly when its `part.json` is there. A part
/// already there, whole, from the same options, is not redone.
pub fn worker_to(
    url: &str,
    opts: &PrepareOptions,
    part: Partition,
    progress: &Progress,
) -> Result<WorkerUploaded> {
    let store = Store::open(url)?;
    let (local, fingerprint) = staging(url, opts, "\nworkers")?;
    if let Survey::AlreadyThere(r) = survey(&store, &fingerprint, opts.overwrite)? {
        info!("{} already holds this data set; nothing to do", store.url());
        return Ok(WorkerUploaded::AlreadyThere(r));
    }
    let prefix = part_prefix(part);
    let part_url = store.url_of(&prefix);
    if let Some(m) = part_there(&store, &prefix, &fingerprint)? {
        info!("{part_url} already holds this part; nothing to do");
        return Ok(WorkerUploaded::PartThere {
            url: part_url,
            part: Box::new(m),
        });
    }
    // A part.json at the store is there only while the part there is whole.
    let json = format!("{prefix}/{}", parts::PART_FILE);
    store.delete(&json)?;
    store.record_uploads(&part_url)?;
    let (dir, manifest) = match crate::prepare::run_worker(&local, part, progress)? {
        crate::prepare::WorkerOutcome::Part { dir, part } => (dir, part),
        crate::prepare::WorkerOutcome::Complete(_) => {
            return Err(Error::output(
                &local.output,
                "the staging folder holds a complete data set, not parts; remove it",
            ));
        }
    };
    let started = Instant::now();
    let mut names: Vec<String> = manifest.shards.iter().map(|s| s.file.clone()).collect();
    let mut bytes = {
        let paths: Vec<PathBuf> = names.iter().map(|f| dir.join(f)).collect();
        let objects: Vec<String> = names.iter().map(|f| format!("{prefix}/{f}")).collect();
        let files: Vec<(&Path, &str)> = paths
            .iter()
            .zip(&objects)
            .map(|(p, o)| (p.as_path(), o.as_str()))
            .collect();
        store.upload_all(&files, CONCURRENCY)?
    };
    names.clear();
    names.push(parts::ROWS_FILE.into());
    if manifest.images_sha256.is_some() {
        names.push(IMAGES_PARQUET.into());
    }
    for name in &names {
        bytes += store.upload(&dir.join(name), &format!("{prefix}/{name}"))?;
    }
    crate::failpoint::reached("before-remote-part", 1);
    bytes += store.upload(&dir.join(parts::PART_FILE), &json)?;
    let upload_s = started.elapsed().as_secs_f64();
    info!(
        "uploaded part {} of {} ({:.1} MB) to {part_url} in {upload_s:.1}s",
        part.index,
        part.count,
        bytes as f64 / 1e6
    );
    // Only this part's folder: other workers may stage beside it on this machine.
    std::fs::remove_dir_all(&dir).at(&dir)?;
    let _ = std::fs::remove_dir(local.output.join(parts::PARTS_DIR));
    let _ = std::fs::remove_dir(&local.output);
    Ok(WorkerUploaded::Part {
        url: part_url,
        part: manifest,
        bytes,
        upload_s,
    })
}

/// What [`merge_at`] did.
pub struct MergedAt {
    pub report: PrepareReport,
    /// How many parts were merged (0: the prefix already held the data set).
    pub parts: u32,
    pub shards: usize,
    pub total_s: f64,
}

/// `merge URL`: the parts the workers uploaded under
/// `URL/.histoshard-parts/` become one data set at `URL`, the same objects a
/// one-machine `prepare --output URL` writes. Their small files
/// (`part.json`, rows, images) are downloaded into a local folder and
/// checked by the local merge's checks ([`merge::check`]), with the shards'
/// sizes taken from the store's listing; then, as a one-machine upload
/// publishes: the journal, the shards copied server-side from the parts
/// to their final names, the tables written by the local merge's code and
/// uploaded, `manifest.parquet` last; last the parts' objects are deleted.
pub fn merge_at(url: &str, overwrite: bool) -> Result<MergedAt> {
    let started = Instant::now();
    let store = Store::open(url)?;
    let names = listing(&store)?;
    let objects = store.list_under(parts::PARTS_DIR)?;
    let complete = match remote_report(&store, &names)? {
        Some(r) if names.contains_key(MANIFEST_PARQUET) && !names.contains_key(UPLOAD_JOURNAL) => {
            Some(r)
        }
        _ => None,
    };
    if objects.is_empty()
        && let Some(report) = complete
    {
        return Ok(MergedAt {
            report,
            parts: 0,
            shards: 0,
            total_s: started.elapsed().as_secs_f64(),
        });
    }
    // part-I-of-N → (file → size), for every part prefix.
    let mut found: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for o in &objects {
        let rel = o.name.strip_prefix(parts::PARTS_DIR).unwrap_or(&o.name);
        if let Some((part, file)) = rel.trim_start_matches('/').split_once('/')
            && Partition::parse_dir_name(part).is_some()
            && is_plain_name(file)
        {
            found
                .entry(part.to_string())
                .or_default()
                .insert(file.to_string(), o.size);
        }
    }
    let local = remote::cache_dir("merging", store.url());
    if local.exists() {
        std::fs::remove_dir_all(&local).at(&local)?;
    }
    let mut shard_sizes: BTreeMap<String, u64> = BTreeMap::new();
    for (part, files) in &found {
        let dir = local.join(parts::PARTS_DIR).join(part);
        std::fs::create_dir_all(&dir).at(&dir)?;
        for (file, size) in files {
            let name = format!("{}/{part}/{file}", parts::PARTS_DIR);
            if [parts::PART_FILE, parts::ROWS_FILE, IMAGES_PARQUET].contains(&file.as_str()) {
                store.download(&name, &dir.join(file))?;
            } else {
                shard_sizes.insert(format!("{part}/{file}"), *size);
            }
        }
    }
    let result = merge_staged(
        &store,
        &local,
        &found,
        &shard_sizes,
        complete,
        overwrite,
        started,
    );
    let _ = std::fs::remove_dir_all(&local);
    result
}

fn merge_staged(
    store: &Store,
    local: &Path,
    found: &BTreeMap<String, BTreeMap<String, u64>>,
    shard_sizes: &BTreeMap<String, u64>,
    complete: Option<PrepareReport>,
    overwrite: bool,
    started: Instant,
) -> Result<MergedAt> {
    let parts_url = store.url_of(parts::PARTS_DIR);
    let staged = parts::list_parts(local)?;
    // A merge interrupted while deleting the parts: the data set is there,
    // complete, and every part.json left is from it.
    if let Some(report) = &complete {
        let jsons: Vec<PartManifest> = staged
            .iter()
            .filter_map(|(_, dir)| parts::read_part(dir).ok())
            .collect();
        if !jsons.is_empty() && jsons.iter().all(|m| m.fingerprint == report.fingerprint) {
            delete_parts(store, found)?;
            return Ok(MergedAt {
                report: report.clone(),
                parts: 0,
                shards: 0,
                total_s: started.elapsed().as_secs_f64(),
            });
        }
    }
    let source = merge::Source {
        dir: local,
        remote: Some((store.url(), shard_sizes)),
    };
    let checked = merge::check(&source, staged)?;
    let n = checked.count();
    let fingerprint = checked.first().fingerprint.clone();
    let dest = match survey(store, &fingerprint, overwrite || checked.overwrite())? {
        Survey::AlreadyThere(report) => {
            delete_parts(store, found)?;
            return Ok(MergedAt {
                report: *report,
                parts: 0,
                shards: 0,
                total_s: started.elapsed().as_secs_f64(),
            });
        }
        Survey::Write(dest) => dest,
    };
    store.record_uploads(store.url())?;
    let shards = checked.shard_files();
    let publish = Publish::begin(store, dest, &fingerprint, &shards)?;
    let copy_started = Instant::now();
    let pairs: Vec<(String, String)> = checked
        .part_shards()
        .into_iter()
        .map(|(from, to)| (format!("{}/{from}", parts::PARTS_DIR), to))
        .collect();
    store.copy_all(&pairs, CONCURRENCY)?;
    let copy_s = copy_started.elapsed().as_secs_f64();
    let (report, _) = checked.write_data_set(local, started, copy_s)?;
    publish.finish(local)?;
    delete_parts(store, found)?;
    info!("merged {n} parts at {parts_url} into {}", store.url());
    Ok(MergedAt {
        report,
        parts: n,
        shards: shards.len(),
        total_s: started.elapsed().as_secs_f64(),
    })
}

/// Deletes every part's objects, its `part.json` last (a part is never
/// left looking whole with objects missing).
fn delete_parts(store: &Store, found: &BTreeMap<String, BTreeMap<String, u64>>) -> Result<()> {
    for (part, files) in found {
        let name = |f: &str| format!("{}/{part}/{f}", parts::PARTS_DIR);
        for file in files.keys().filter(|f| *f != parts::PART_FILE) {
            store.delete(&name(file))?;
        }
        store.delete(&name(parts::PART_FILE))?;
    }
    Ok(())
}
