//! After training: `compare`, `predict` (with heatmaps), `export` — through
//! the binary, on a folder-per-class set of toy patches prepared by
//! `prepare`, so the preprocessing the commands replay is real.
#![cfg(feature = "train")]

mod common;

use std::path::{Path, PathBuf};

use common::{fails_with, ok, prepared_toy, s};
use histoshard::train::predict::{LEGEND_HEIGHT, LEGEND_WIDTH};

fn train_cnn(data: &Path, run: &Path) {
    ok(&[
        "train",
        "--data",
        s(data),
        "--output",
        s(run),
        "--model",
        "cnn",
        "--width",
        "8",
        "--depth",
        "2",
        "--epochs",
        "4",
        "--lr",
        "0.01",
        "--batch-size",
        "8",
    ]);
}

#[test]
fn predict_tiles_like_prepare_and_draws_heatmaps() {
    let dir = tempfile::tempdir().unwrap();
    let (input, data) = prepared_toy(dir.path(), 12, 3);
    let run = dir.path().join("run");
    train_cnn(&data, &run);
    let pre: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("preprocessing.json")).unwrap())
            .unwrap();
    assert_eq!(pre["patch_size"], 32);
    assert_eq!(pre["classes"], serde_json::json!(["benign", "malignant"]));

    let images: Vec<PathBuf> = (0..3)
        .flat_map(|i| ["benign", "malignant"].map(|c| input.join(c).join(format!("{c}_{i}.png"))))
        .collect();
    let heat = dir.path().join("heat");
    let csv_path = dir.path().join("pred.csv");
    let mut args = vec![
        "predict",
        "--run",
        s(&run),
        "--heatmap",
        s(&heat),
        "--csv",
        s(&csv_path),
        "--device",
        "cpu",
    ];
    args.extend(images.iter().map(|p| s(p)));
    ok(&args);

    let mut r = csv::Reader::from_path(&csv_path).unwrap();
    let header = r.headers().unwrap().clone();
    assert_eq!(
        header.iter().collect::<Vec<_>>(),
        [
            "image",
            "label",
            "patches",
            "background_patches",
            "p_benign",
            "p_malignant"
        ]
    );
    let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
    assert_eq!(rows.len(), 6);
    let mut correct = 0;
    for row in &rows {
        // A 64-px image is 2×2 patches of 32.
        assert_eq!(&row[2], "4", "{row:?}");
        let (p0, p1): (f64, f64) = (row[4].parse().unwrap(), row[5].parse().unwrap());
        assert!((p0 + p1 - 1.0).abs() < 1e-4, "{row:?}");
        let truth = if row[0].contains("/malignant/") {
            "malignant"
        } else {
            "benign"
        };
        correct += usize::from(&row[1] == truth);
    }
    assert!(correct >= 5, "only {correct}/6 images right: {rows:?}");
    for p in &images {
        let stem = p.file_stem().unwrap().to_string_lossy();
        let map = image::open(heat.join(format!("{stem}.heatmap.png")))
            .unwrap()
            .to_rgb8();
        // The image (64 px, legend at least 260 wide) plus the legend strip.
        assert_eq!(map.dimensions(), (LEGEND_WIDTH, 64 + LEGEND_HEIGHT));
    }
    // A real GlaS image (where ../shared has the sample): the heatmap has its size.
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/glas-sample");
    let real = std::fs::read_dir(&shared).ok().and_then(|entries| {
        let mut v: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let n = p.to_string_lossy();
                n.ends_with(".bmp") && !n.ends_with("_anno.bmp")
            })
            .collect();
        v.sort();
        v.into_iter().next()
    });
    match real {
        Some(img) => {
            ok(&["predict", "--run", s(&run), "--heatmap", s(&heat), s(&img)]);
            let (w, h) = image::image_dimensions(&img).unwrap();
            let stem = img.file_stem().unwrap().to_string_lossy();
            let map = image::image_dimensions(heat.join(format!("{stem}.heatmap.png"))).unwrap();
            assert_eq!(map, (w.max(LEGEND_WIDTH), h + LEGEND_HEIGHT));
        }
        None => eprintln!("no ../shared/glas-sample here: real-image heatmap not checked"),
    }
    // An unknown class for the heatmap is named.
    fails_with(
        &[
            "predict",
            "--run",
            s(&run),
            "--heatmap",
            s(&heat),
            "--heatmap-class",
            "tumour",
            s(&images[0]),
        ],
        &["tumour", "benign, malignant"],
    );
}

#[test]
fn export_writes_pytorch_named_safetensors_and_preprocessing() {
    let dir = tempfile::tempdir().unwrap();
    let (_, data) = prepared_toy(dir.path(), 12, 3);
    let run = dir.path().join("run");
    train_cnn(&data, &run);
    ok(&["export", "--run", s(&run)]);
    let bytes = std::fs::read(run.join("export/model.safetensors")).unwrap();
    // safetensors: u64 header length, then the JSON header.
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    // PyTorch names: batch norm weight/bias/running_*, linear [out, in].
    assert_eq!(
        header["blocks.0.conv.weight"]["shape"],
        serde_json::json!([8, 3, 3, 3])
    );
    for k in ["weight", "bias", "running_mean", "running_var"] {
        assert!(
            header.get(format!("blocks.1.norm.{k}")).is_some(),
            "{k}: {header}"
        );
    }
    assert_eq!(header["head.weight"]["shape"], serde_json::json!([2, 16]));
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("export/model.json")).unwrap())
            .unwrap();
    assert_eq!(info["model"]["kind"], "cnn");
    assert_eq!(info["preprocessing"]["patch_size"], 32);
    assert_eq!(info["preprocessing"]["aggregation"], "mean");

    ok(&[
        "export",
        "--run",
        s(&run),
        "--format",
        "burn",
        "-o",
        s(&dir.path().join("b")),
    ]);
    assert_eq!(
        std::fs::read(dir.path().join("b/model.bpk")).unwrap(),
        std::fs::read(run.join("best.bpk")).unwrap()
    );
}

#[test]
fn compare_writes_one_table_and_one_plot() {
    let dir = tempfile::tempdir().unwrap();
    let (_, data) = prepared_toy(dir.path(), 12, 3);
    let cfg = dir.path().join("configs");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(cfg.join("cnn.toml"), "width = 4\ndepth = 2\nlr = 0.01\n").unwrap();
    let out = dir.path().join("cmp");
    ok(&[
        "compare",
        "--data",
        s(&data),
        "--output",
        s(&out),
        "--models",
        "mlp,cnn",
        "--config-dir",
        s(&cfg),
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--device",
        "cpu",
    ]);
    let md = std::fs::read_to_string(out.join("comparison.md")).unwrap();
    assert!(md.contains("| mlp |") && md.contains("| cnn |"), "{md}");
    assert!(md.contains("![comparison](comparison.svg)"));
    let svg = std::fs::read_to_string(out.join("comparison.svg")).unwrap();
    // Each model is the text of a label (plotters puts it on its own line).
    let texts: Vec<&str> = svg
        .split('>')
        .filter_map(|t| t.split('<').next())
        .map(str::trim)
        .collect();
    assert!(texts.contains(&"mlp") && texts.contains(&"cnn"), "{svg}");
    let mut r = csv::Reader::from_path(out.join("comparison.csv")).unwrap();
    assert_eq!(r.records().count(), 2);
    // The per-model config was used: a 4-wide cnn.
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("cnn/run.json")).unwrap()).unwrap();
    assert_eq!(run["config"]["model"]["width"], 4);
    assert!(out.join("mlp/eval.json").is_file());

    // An unknown key in a per-model config is refused by name.
    std::fs::write(cfg.join("mlp.toml"), "widht = 4\n").unwrap();
    fails_with(
        &[
            "compare",
            "--data",
            s(&data),
            "--output",
            s(&dir.path().join("cmp2")),
            "--models",
            "mlp",
            "--config-dir",
            s(&cfg),
        ],
        &["mlp.toml", "widht"],
    );
}

#[test]
fn pretrained_models_say_how_to_get_their_weights() {
    let dir = tempfile::tempdir().unwrap();
    let (_, data) = prepared_toy(dir.path(), 12, 3);
    let empty = dir.path().join("no-weights");
    let (okay, _, err) = common::run_env(
        &[
            "train",
            "--data",
            s(&data),
            "--output",
            s(&dir.path().join("run")),
            "--model",
            "efficientnet-lite0",
        ],
        &[("HISTOSHARD_WEIGHTS_DIR", s(&empty))],
    );
    assert!(!okay);
    assert!(
        err.contains("efficientnet-lite0.pth") && err.contains("scripts/fetch_weights.sh lite0"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Transfer options on a from-scratch model are refused.
    fails_with(
        &[
            "train",
            "--data",
            s(&data),
            "--output",
            s(&dir.path().join("run2")),
            "--model",
            "cnn",
            "--freeze-epochs",
            "2",
        ],
        &["pretrained models"],
    );
}

/// `--weights URL`: fetched once into the cache (a second run does not ask
/// again), checked against torch.hub's hash prefix in the name, and every
/// failure is one line naming the URL; a refused download leaves nothing in
/// the cache. Served from localhost: no test reaches the network.
#[test]
fn weights_by_url_download_once_into_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (_, data) = prepared_toy(dir.path(), 12, 3);
    let cache = dir.path().join("cache");
    let not_torch = b"not a pytorch file".to_vec();
    let (base, hits) = common::serve(vec![
        ("resnet18-deadbeef.pth".into(), not_torch.clone()),
        ("plain.pth".into(), not_torch.clone()),
    ]);
    let train = |url: &str, run: &str| {
        let run = dir.path().join(run);
        let args = ["train", "--data", s(&data), "--output", s(&run)];
        let more = ["--model", "resnet18", "--weights", url, "--epochs", "1"];
        let args: Vec<&str> = args.iter().chain(&more).copied().collect();
        let (okay, _, err) = common::run_env(&args, &[("HISTOSHARD_WEIGHTS_DIR", s(&cache))]);
        assert!(!okay, "{err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{err}");
        errors[0].to_string()
    };
    let cached = |name: &str| cache.join(name).exists();

    // The name promises a sha256 starting deadbeef: refused, nothing kept.
    let url = format!("{base}/resnet18-deadbeef.pth");
    let err = train(&url, "a");
    assert!(err.contains(&url) && err.contains("deadbeef"), "{err}");
    assert!(!cached("resnet18-deadbeef.pth"));
    let leftovers = std::fs::read_dir(&cache).unwrap().count();
    assert_eq!(leftovers, 0, "a refused download left files");

    // No hash in the name: kept in the cache, then refused as weights, by
    // the cached file's name; the second run reads the cache, not the server.
    let url = format!("{base}/plain.pth");
    let err = train(&url, "b");
    assert!(err.contains("plain.pth"), "{err}");
    assert_eq!(std::fs::read(cache.join("plain.pth")).unwrap(), not_torch);
    let before = hits.load(std::sync::atomic::Ordering::SeqCst);
    train(&url, "c");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), before);

    // Not found: the status, by URL.
    let url = format!("{base}/missing.pth");
    let err = train(&url, "d");
    assert!(err.contains(&url) && err.contains("404"), "{err}");
    assert!(!cached("missing.pth"));
}
