//! `histoshard export`: a trained run as files another framework can use.
//!
//! - `model.safetensors`: the weights under PyTorch's names and layouts
//!   (linear weights transposed, batch norm `weight`/`bias`), loadable with
//!   `load_state_dict` into `efficientnet_lite_pytorch.EfficientNet` for the
//!   EfficientNet-Lite models, `torchvision.models.resnet18/50` for the
//!   ResNets, `torchvision.models.mobilenet_v2` and
//!   `torchvision.models.inception_v3(aux_logits=False,
//!   transform_input=False)` for those two, or into the `Cnn`/`Mlp` of
//!   `scripts/histoshard_torch.py` for the from-scratch ones;
//! - or `model.bpk`: burn's own format, for burn programs;
//! - `model.json`: the architecture and the preprocessing (patch size, scale,
//!   normalisation, class names, aggregation) — what `predict` also uses.

use std::path::{Path, PathBuf};

use burn::{
    module::Module,
    store::{BurnToPyTorchAdapter, ModuleSnapshot, SafetensorsStore},
    tensor::Device,
};
use serde::Serialize;

use super::{
    error::TrainResult,
    models::{Model, ModelSpec, pretrained::escape},
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
        pytorch: pytorch_recipe(&info.config.model),
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

fn pytorch_recipe(spec: &ModelSpec) -> String {
    match spec {
        ModelSpec::EfficientNet(c) => format!(
            "efficientnet_lite_pytorch.EfficientNet.from_name('{}', num_classes={}); load_state_dict(strict=False: only num_batches_tracked is absent)",
            c.variant.name(),
            c.num_classes
        ),
        ModelSpec::ResNet(c) => format!(
            "torchvision.models.resnet{}(num_classes={}); load_state_dict(strict=False: only num_batches_tracked is absent)",
            c.depth, c.num_classes
        ),
        ModelSpec::MobileNetV2(c) => format!(
            "torchvision.models.mobilenet_v2(num_classes={}); load_state_dict(strict=False: only num_batches_tracked is absent)",
            c.num_classes
        ),
        // No auxiliary head was trained; the normalisation in `preprocessing`
        // already is what transform_input=True would compute.
        ModelSpec::InceptionV3(c) => format!(
            "torchvision.models.inception_v3(num_classes={}, aux_logits=False, transform_input=False, init_weights=False); load_state_dict(strict=False: only num_batches_tracked is absent)",
            c.num_classes
        ),
        ModelSpec::Cnn(_) | ModelSpec::Mlp(_) => {
            "scripts/histoshard_torch.py: load_export(folder)".into()
        }
    }
}

/// Safetensors under PyTorch names, written to a temporary name first.
fn write_safetensors(model: &Model, spec: &ModelSpec, path: &Path) -> TrainResult<()> {
    // The store creates the temporary file itself, refusing to replace one.
    let tmp: PathBuf = crate::atomic::free_tmp(path)?;
    let mut store = SafetensorsStore::from_file(&tmp)
        .with_to_adapter(BurnToPyTorchAdapter)
        .metadata("histoshard_model", spec.kind().to_string());
    let result = match model {
        // `blocks.3.bn1.weight` → `_blocks.3._bn1.weight`, the efficientnet_lite_pytorch names.
        Model::EfficientNet(m) => {
            // Every module segment gains its underscore, the tensor's own name does not.
            store = store.with_key_remapping(r"(^|\.)([a-z][a-z0-9_]*)\.", "${1}_${2}.");
            m.save_into(&mut store)
        }
        // torchvision's Sequential shortcut names.
        Model::ResNet(m) => {
            store = store
                // Our block enum's variant is not part of torchvision's names.
                .with_key_remapping(r"\.(Basic|Bottleneck)\.", ".")
                .with_key_remapping(r"\.downsample\.conv\.", ".downsample.0.")
                .with_key_remapping(r"\.downsample\.bn\.", ".downsample.1.");
            m.save_into(&mut store)
        }
        // Our part names → torchvision's `features.N…` Sequential indices.
        Model::MobileNetV2(m) => {
            for (ours, theirs) in m.torchvision_names() {
                store = store.with_key_remapping(format!("^{}\\.", escape(&ours)), theirs + ".");
            }
            m.save_into(&mut store)
        }
        // The fields already carry torchvision's names.
        Model::InceptionV3(m) => m.save_into(&mut store),
        Model::Cnn(m) => m.save_into(&mut store),
        Model::Mlp(m) => m.save_into(&mut store),
    };
    result
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
