//! `histoshard export`: a trained run as files another framework can use.
//!
//! - `model.safetensors`: the weights under PyTorch's names and layouts
//!   (linear weights transposed, batch norm `weight`/`bias`; each backbone's
//!   `Backbone::pytorch_names`), loadable with `load_state_dict` into the
//!   PyTorch network `model.json`'s `pytorch` names (`Architecture::
//!   pytorch_recipe`: `efficientnet_lite_pytorch`, torchvision, or the
//!   `Cnn`/`Mlp` of `scripts/histoshard_torch.py` for the from-scratch ones);
//! - or `model.bpk`: burn's own format, for burn programs;
//! - `model.json`: the architecture and the preprocessing (patch size, scale,
//!   normalisation, class names, aggregation) — what `predict` also uses.

use std::path::{Path, PathBuf};

use burn::{
    module::Module,
    store::{BurnToPyTorchAdapter, SafetensorsStore},
    tensor::Device,
};
use serde::Serialize;

use super::{
    error::TrainResult,
    models::{Model, ModelSpec},
    predict::Preprocessing,
    run::{RunInfo, load_run_model},
};
use crate::error::{Error, IoContext};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Safetensors,
    Burn,
}

crate::choices!(ExportFormat {
    Safetensors = "safetensors",
    Burn = "burn",
});

/// `model.json`.
#[derive(Clone, Debug, Serialize)]
pub struct ExportInfo {
    pub histoshard: String,
    pub format: String,
    pub weights: String,
    pub model: ModelSpec,
    /// How to build the same network in PyTorch.
    pub pytorch: String,
    pub preprocessing: Preprocessing,
    pub parameters: usize,
}

/// Writes the run's best model (or `checkpoint`) to `out_dir`.
pub fn export(
    run: &Path,
    out_dir: &Path,
    format: ExportFormat,
    checkpoint: Option<&Path>,
    device: &Device,
) -> TrainResult<ExportInfo> {
    crate::atomic::check_folder(out_dir)?;
    let info = RunInfo::load(run)?;
    let (model, source) = load_run_model(run, &info, checkpoint, device)?;
    let pre = Preprocessing::of_run(run, &info)?;
    std::fs::create_dir_all(out_dir).at(out_dir)?;
    let weights = match format {
        ExportFormat::Safetensors => {
            let path = out_dir.join("model.safetensors");
            write_safetensors(&model, &info.config.model, &path)?;
            path
        }
        ExportFormat::Burn => {
            let path = out_dir.join("model.bpk");
            let mut file = crate::fsutil::open_regular(&source)?;
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut file, &mut bytes).at(&source)?;
            crate::atomic::write(&path, &bytes)?;
            path
        }
    };
    let export = ExportInfo {
        histoshard: env!("CARGO_PKG_VERSION").to_string(),
        format: match format {
            ExportFormat::Safetensors => "safetensors".into(),
            ExportFormat::Burn => "burn".into(),
        },
        weights: file_name(&weights),
        pytorch: info.config.model.pytorch_recipe(),
        parameters: model.num_params(),
        model: info.config.model.clone(),
        preprocessing: pre,
    };
    let json_path = out_dir.join("model.json");
    let text = serde_json::to_string_pretty(&export)
        .map_err(|e| Error::output(&json_path, e.to_string()))?;
    crate::atomic::write(&json_path, text.as_bytes())?;
    Ok(export)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Safetensors under PyTorch names, written to a temporary name first.
fn write_safetensors(model: &Model, spec: &ModelSpec, path: &Path) -> TrainResult<()> {
    // The store creates the temporary file itself, refusing to replace one.
    let tmp: PathBuf = crate::atomic::free_tmp(path)?;
    let store = SafetensorsStore::from_file(&tmp)
        .with_to_adapter(BurnToPyTorchAdapter)
        .metadata("histoshard_model", spec.kind().to_string());
    model
        .save_pytorch(store)
        .map_err(|e| Error::output(path, format!("cannot write safetensors: {e}")))
        .and_then(|()| sort_header(&tmp))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
    crate::atomic::commit(&tmp, path)?;
    Ok(())
}

/// burn-store writes the safetensors metadata from a `HashMap`, so its order,
/// and with it the file's bytes, changed from export to export. Sorting the
/// header's keys (same length, padded with the spaces the format allows) makes
/// exports of the same weights byte-identical. Only the header is read and
/// rewritten, in place; the tensors are not touched.
fn sort_header(path: &Path) -> Result<(), Error> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let bad = |why: String| Error::output(path, format!("safetensors header: {why}"));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .at(path)?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).at(path)?;
    let len = usize::try_from(u64::from_le_bytes(len)).map_err(|e| bad(e.to_string()))?;
    let mut header = Vec::new();
    (&mut file)
        .take(len as u64)
        .read_to_end(&mut header)
        .at(path)?;
    if header.len() != len {
        return Err(bad("truncated".into()));
    }
    // serde_json's map is a BTreeMap: serialising sorts every object's keys.
    let value: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
    let mut sorted = serde_json::to_vec(&value).map_err(|e| bad(e.to_string()))?;
    if sorted.len() > len {
        return Err(bad("grew when sorted".into()));
    }
    sorted.resize(len, b' ');
    file.seek(SeekFrom::Start(8)).at(path)?;
    file.write_all(&sorted).at(path)
}
