//! **Reading** (`verify`, `inspect`, `train --data URL`, [`fetch`]): the
//! files of the data set (those `prepare.json` lists) are downloaded into
//! `cache/datasets/<hash of URL>`, each through a temporary name; a file
//! whose size and entity tag match what was fetched before is kept.
//! The local code then reads that folder.

use super::*;

/// What a fetched folder holds: name → (size, entity tag).
type Fetched = BTreeMap<String, (u64, Option<String>)>;

/// Downloads the data set at `url` into its cache folder and returns the
/// folder. Refused (one line, naming the URL) when the prefix holds no
/// complete data set. With `fresh`, every file is downloaded again (what
/// `verify` checks is then the bytes in the store); otherwise a file whose
/// size and entity tag are those fetched before is kept.
pub fn fetch(url: &str, fresh: bool) -> Result<PathBuf> {
    let store = Store::open(url)?;
    let names = listing(&store)?;
    if !names.contains_key(MANIFEST_PARQUET) || !names.contains_key(REPORT_FILE) {
        return Err(Error::Remote {
            url: store.url().to_string(),
            message: format!(
                "no complete histoshard data set here (no {}): an upload that did not finish, or not a data set's prefix",
                if names.contains_key(REPORT_FILE) {
                    MANIFEST_PARQUET
                } else {
                    REPORT_FILE
                }
            ),
        });
    }
    let dir = remote::cache_dir("datasets", store.url());
    std::fs::create_dir_all(&dir).at(&dir)?;
    store.download(REPORT_FILE, &dir.join(REPORT_FILE))?;
    let report = crate::prepare::read_report(&dir)?;
    let wanted: Vec<String> = FIXED_FILES
        .iter()
        .map(|f| f.to_string())
        .chain(shard_files(&report))
        .collect();
    let sidecar = dir.join(FETCHED_FILE);
    let mut fetched: Fetched =
        fsutil::read_limited(&sidecar, crate::prepare::MAX_REPORT_BYTES, "a fetch record")
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
    // Files of another version of the data set go first.
    let keep: BTreeSet<&str> = wanted.iter().map(String::as_str).collect();
    for entry in std::fs::read_dir(&dir).at(&dir)? {
        let entry = entry.at(&dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if (FIXED_FILES.contains(&name.as_str()) || is_shard_name(&name))
            && !keep.contains(name.as_str())
        {
            std::fs::remove_file(entry.path()).at(entry.path())?;
            fetched.remove(&name);
        }
    }
    let (mut got, mut kept) = (0usize, 0usize);
    for name in &wanted {
        let Some(object) = names.get(name) else {
            if name == crate::prepare::output::TIMINGS_FILE {
                continue;
            }
            return Err(Error::Remote {
                url: store.url_of(name),
                message: "missing: prepare.json lists it, the store does not have it (the data set is damaged; prepare it again)".into(),
            });
        };
        let path = dir.join(name);
        let same = fetched.get(name) == Some(&(object.size, object.e_tag.clone()))
            && std::fs::metadata(&path).is_ok_and(|m| m.len() == object.size);
        if name != REPORT_FILE && (fresh || !same) {
            fetched.remove(name);
            store.download(name, &path)?;
            got += 1;
        } else {
            kept += 1;
        }
        fetched.insert(name.clone(), (object.size, object.e_tag.clone()));
    }
    let text = serde_json::to_vec(&fetched).map_err(|e| Error::Config(e.to_string()))?;
    atomic::write(&sidecar, &text)?;
    info!(
        "{}: {got} files downloaded, {kept} already here → {}",
        store.url(),
        dir.display()
    );
    Ok(dir)
}

/// Downloads every object under `url` (sub-prefixes too) into a cache folder
/// for `prepare --input URL`, keeping files whose size and entity tag are
/// those fetched before; returns the folder.
pub fn fetch_input(url: &str) -> Result<PathBuf> {
    let store = Store::open(url)?;
    let objects = store.list_all()?;
    if objects.is_empty() {
        return Err(Error::Remote {
            url: store.url().to_string(),
            message: "no objects here: nothing to prepare".into(),
        });
    }
    let dir = remote::cache_dir("inputs", store.url());
    std::fs::create_dir_all(&dir).at(&dir)?;
    // Beside the folder, not in it: the input's layout sees only the objects.
    let sidecar = dir.with_extension("fetched.json");
    let mut fetched: Fetched =
        fsutil::read_limited(&sidecar, crate::prepare::MAX_REPORT_BYTES, "a fetch record")
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
    // Objects removed from the store since the last fetch go here too.
    let listed: BTreeSet<&str> = objects.iter().map(|o| o.name.as_str()).collect();
    let gone: Vec<String> = fetched
        .keys()
        .filter(|n| !listed.contains(n.as_str()))
        .cloned()
        .collect();
    for name in gone {
        let path = dir.join(&name);
        if name.split('/').all(is_plain_name) && path.is_file() {
            std::fs::remove_file(&path).at(&path)?;
        }
        fetched.remove(&name);
    }
    for o in &objects {
        if o.name.split('/').any(|p| !is_plain_name(p)) {
            continue;
        }
        let path = dir.join(&o.name);
        let same = fetched.get(&o.name) == Some(&(o.size, o.e_tag.clone()))
            && std::fs::metadata(&path).is_ok_and(|m| m.len() == o.size);
        if !same {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).at(parent)?;
            }
            fetched.remove(&o.name);
            store.download(&o.name, &path)?;
        }
        fetched.insert(o.name.clone(), (o.size, o.e_tag.clone()));
    }
    let text = serde_json::to_vec(&fetched).map_err(|e| Error::Config(e.to_string()))?;
    atomic::write(&sidecar, &text)?;
    Ok(dir)
}
