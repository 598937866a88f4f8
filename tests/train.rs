//! End to end: train the cnn for a few epochs on the toy set through the
//! binary, then evaluate it; plus the failure modes a user meets.
#![cfg(feature = "train")]

mod common;

use std::path::Path;

use common::{fails_with, ok, s, untimed};
use histoshard::train::toy::{ToySpec, write_toy_dataset};

fn metrics(run: &Path) -> Vec<csv::StringRecord> {
    let mut r = csv::Reader::from_path(run.join("metrics.csv")).unwrap();
    r.records().map(|x| x.unwrap()).collect()
}

fn col(rows: &[csv::StringRecord], header: &[&str], name: &str) -> Vec<f64> {
    let i = header.iter().position(|h| *h == name).unwrap();
    rows.iter().map(|r| r[i].parse().unwrap()).collect()
}

/// `train` arguments for 3 epochs of a small MLP on `data` into `run`.
fn three_mlp_epochs(data: &Path, run: &Path) -> Vec<String> {
    [
        "train",
        "--data",
        s(data),
        "--output",
        s(run),
        "--model",
        "mlp",
        "--input-size",
        "8",
        "--epochs",
        "3",
        "--batch-size",
        "8",
    ]
    .map(String::from)
    .to_vec()
}

/// The smallest toy set the tests train on: 4 train images, 1 val, 1 test.
fn write_tiny_toy(data: &Path) {
    let spec = ToySpec {
        train_images: 4,
        val_images: 1,
        test_images: 1,
        ..ToySpec::default()
    };
    write_toy_dataset(data, &spec).unwrap();
}

#[test]
fn cnn_learns_the_toy_set_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_toy_dataset(&data, &ToySpec::default()).unwrap();
    let run = dir.path().join("run");
    ok(&[
        "--threads",
        "2",
        "train",
        "--data",
        s(&data),
        "--output",
        s(&run),
        "--model",
        "cnn",
        "--width",
        "8",
        "--depth",
        "3",
        "--epochs",
        "4",
        "--batch-size",
        "16",
        "--lr",
        "0.01",
        "--seed",
        "7",
    ]);
    let header: Vec<String> = csv::Reader::from_path(run.join("metrics.csv"))
        .unwrap()
        .headers()
        .unwrap()
        .iter()
        .map(String::from)
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    for h in [
        "epoch",
        "lr",
        "train_loss",
        "val_loss",
        "val_accuracy",
        "val_auc",
        "seconds",
    ] {
        assert!(header.contains(&h), "{h} missing from {header:?}");
    }
    let rows = metrics(&run);
    assert_eq!(rows.len(), 4);
    let loss = col(&rows, &header, "train_loss");
    assert!(loss[3] < loss[0], "train loss should fall: {loss:?}");
    for f in [
        "run.json",
        "state.json",
        "best.bpk",
        "last.bpk",
        "last-optim.bpk",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // `ok` runs with --quiet, which leaves out the table; eval.json holds it all.
    ok(&[
        "evaluate",
        "--run",
        s(&run),
        "--data",
        s(&data),
        "--bootstrap",
        "200",
    ]);
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap();
    let all = &eval["groups"][0];
    assert_eq!(all["group"], "all");
    assert_eq!(all["patches"], 2 * 2 * 2 * 4);
    assert_eq!(all["images"], 2 * 2 * 2);
    let acc = all["patch"]["accuracy"]["value"].as_f64().unwrap();
    assert!(
        acc > 0.75,
        "held-out patch accuracy {acc} should beat chance"
    );
    assert_eq!(all["patch"]["accuracy"]["n"], 32);
    assert!(all["image_mean"]["accuracy"]["value"].as_f64().unwrap() > 0.5);
    let groups: Vec<&str> = eval["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["all", "testA", "testB"]);
    for f in [
        "loss.svg",
        "accuracy.svg",
        "eval-report.md",
        "eval-roc.svg",
        "eval-confusion-testA.svg",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let md = std::fs::read_to_string(run.join("eval-report.md")).unwrap();
    assert!(
        md.contains("| ROC AUC |") && md.contains("## testB"),
        "{md}"
    );

    // A run folder is never overwritten.
    fails_with(
        &[
            "train",
            "--data",
            s(&data),
            "--output",
            s(&run),
            "--model",
            "cnn",
        ],
        &["already holds a run"],
    );
}

#[test]
fn mlp_trains_and_divergence_stops_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_tiny_toy(&data);
    // Training never opens the test split: it trains with the test shards gone.
    for e in std::fs::read_dir(&data).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("test-")
        {
            std::fs::remove_file(p).unwrap();
        }
    }
    let run = dir.path().join("mlp");
    ok(&[
        "train",
        "--data",
        s(&data),
        "--output",
        s(&run),
        "--model",
        "mlp",
        "--input-size",
        "16",
        "--hidden",
        "32",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--optimizer",
        "sgd",
        "--lr",
        "0.01",
        "--schedule",
        "step",
        "--step-size",
        "1",
        "--balance",
        "oversample",
    ]);
    assert_eq!(metrics(&run).len(), 2);

    // The same keys in a TOML file; flags win over it.
    let toml = dir.path().join("train.toml");
    std::fs::write(
        &toml,
        format!(
            "data = {:?}\noutput = {:?}\nmodel = \"cnn\"\nepochs = 5\nbatch-size = 8\n\
             width = 4\ndepth = 2\noptimizer = \"adam\"\nschedule = \"none\"\n",
            s(&data),
            s(&dir.path().join("from-toml"))
        ),
    )
    .unwrap();
    ok(&["train", "--config", s(&toml), "--epochs", "1"]);
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("from-toml/run.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(info["config"]["epochs"], 1);
    assert_eq!(info["config"]["optimizer"], "adam");
    assert_eq!(info["config"]["model"]["width"], 4);
    std::fs::write(&toml, "epochz = 3\n").unwrap();
    fails_with(&["train", "--config", s(&toml)], &["epochz"]);

    let bad = dir.path().join("nan");
    fails_with(
        &[
            "train",
            "--data",
            s(&data),
            "--output",
            s(&bad),
            "--model",
            "mlp",
            "--epochs",
            "3",
            "--optimizer",
            "sgd",
            "--lr",
            "1e30",
            "--schedule",
            "none",
        ],
        &["loss became"],
    );
    fails_with(
        &[
            "train",
            "--data",
            s(&data),
            "--output",
            s(&dir.path().join("gpu")),
            "--model",
            "cnn",
            "--device",
            "cuda",
        ],
        &["cuda"],
    );
}

/// `prepare` output (folder per class) is what the trainer reads in practice.
#[test]
fn trains_on_prepare_output() {
    let dir = tempfile::tempdir().unwrap();
    let (_, data) = common::prepared_toy(dir.path(), 12, 3);
    let run = dir.path().join("run");
    ok(&[
        "train",
        "--data",
        s(&data),
        "--output",
        s(&run),
        "--model",
        "cnn",
        "--width",
        "4",
        "--depth",
        "2",
        "--epochs",
        "1",
        "--batch-size",
        "8",
    ]);
    assert_eq!(metrics(&run).len(), 1);
    ok(&[
        "evaluate",
        "--run",
        s(&run),
        "--data",
        s(&data),
        "--bootstrap",
        "50",
    ]);
    assert!(run.join("eval.json").is_file());
}

/// Throughput of the cnn on flex (not run by default):
/// `cargo test --release --test train -- --ignored --nocapture`.
#[test]
#[ignore]
fn cnn_throughput() {
    for (size, depth, stem, batch, images) in [
        (32u32, 3, 1, 32, 16usize),
        (224, 4, 1, 32, 8),
        (224, 4, 2, 32, 8),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        write_toy_dataset(
            &data,
            &ToySpec {
                size,
                train_images: images,
                val_images: 1,
                test_images: 1,
                patches_per_image: 4,
                ..ToySpec::default()
            },
        )
        .unwrap();
        let run = dir.path().join("run");
        ok(&[
            "train",
            "--data",
            s(&data),
            "--output",
            s(&run),
            "--model",
            "cnn",
            "--depth",
            &depth.to_string(),
            "--stem-stride",
            &stem.to_string(),
            "--epochs",
            "1",
            "--batch-size",
            &batch.to_string(),
        ]);
        let rows = metrics(&run);
        let header = [
            "epoch",
            "lr",
            "train_loss",
            "train_accuracy",
            "val_loss",
            "val_accuracy",
            "val_balanced_accuracy",
            "val_auc",
            "train_images",
            "seconds",
            "images_per_second",
        ];
        let ips = col(&rows, &header, "images_per_second")[0];
        let n = col(&rows, &header, "train_images")[0];
        println!(
            "cnn width 32 depth {depth} stem {stem}, {size}², batch {batch}: {n} train images, {ips:.1} img/s"
        );
    }
}

/// Stopping after an epoch and resuming gives the same weights and metrics as
/// an uninterrupted run.
#[test]
fn resume_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_tiny_toy(&data);
    let args = |out: &Path| -> Vec<String> {
        [
            "--threads",
            "2",
            "train",
            "--data",
            s(&data),
            "--output",
            s(out),
            "--model",
            "cnn",
            "--width",
            "4",
            "--depth",
            "2",
            "--epochs",
            "3",
            "--batch-size",
            "8",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let straight = dir.path().join("straight");
    let a = args(&straight);
    ok(&a.iter().map(String::as_str).collect::<Vec<_>>());

    let split = dir.path().join("split");
    let mut b = args(&split);
    b.extend(["--stop-after".to_string(), "1".to_string()]);
    ok(&b.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(metrics(&split).len(), 1);
    ok(&[
        "--threads",
        "2",
        "train",
        "--resume",
        s(&split),
        "--stop-after",
        "1",
    ]);
    assert_eq!(metrics(&split).len(), 2);
    ok(&["--threads", "2", "train", "--resume", s(&split)]);

    let ma = metrics(&straight);
    assert_eq!(ma.len(), 3);
    assert_eq!(untimed(&straight), untimed(&split));
    assert_eq!(
        std::fs::read_to_string(straight.join("state.json")).unwrap(),
        std::fs::read_to_string(split.join("state.json")).unwrap()
    );
    // Same weights: the same predictions on test. (The .bpk bytes differ in
    // parameter ids, which a fresh model draws at random.)
    let eval = |run: &Path| -> serde_json::Value {
        ok(&[
            "evaluate",
            "--run",
            s(run),
            "--data",
            s(&data),
            "--bootstrap",
            "10",
        ]);
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap();
        v["run"] = serde_json::Value::Null;
        v["checkpoint"] = serde_json::Value::Null;
        v
    };
    assert!(
        eval(&straight) == eval(&split),
        "predictions differ after resuming"
    );
    // A finished run has nothing left to do.
    ok(&["train", "--resume", s(&split)]);
    assert_eq!(metrics(&split).len(), 3);
}

/// `--cv K` trains one run per patient-grouped fold and summarises them.
#[test]
fn cross_validation_over_folds() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_tiny_toy(&data);
    let out = dir.path().join("cv");
    ok(&[
        "train",
        "--data",
        s(&data),
        "--output",
        s(&out),
        "--model",
        "mlp",
        "--input-size",
        "8",
        "--hidden",
        "16",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--cv",
        "2",
    ]);
    let cv: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("cv.json")).unwrap()).unwrap();
    assert_eq!(cv["folds"].as_array().unwrap().len(), 2);
    assert!(cv["val_accuracy"]["mean"].as_f64().unwrap() >= 0.0);
    // Image level next to patch level, per fold and pooled: each image of
    // the folds (the toy's 2 × 4 train images; val has none) is held out
    // once, with its 4 patches.
    let pooled = &cv["pooled"];
    assert_eq!(pooled["images"], 2 * 4);
    assert_eq!(pooled["patches"], 2 * 4 * 4);
    assert_eq!(pooled["image_mean"]["accuracy"]["n"], 2 * 4);
    let folds = cv["folds"].as_array().unwrap();
    let fold_images: u64 = folds
        .iter()
        .map(|f| f["scores"]["images"].as_u64().unwrap())
        .sum();
    assert_eq!(fold_images, 2 * 4);
    let mean = cv["image_accuracy"]["mean"].as_f64().unwrap();
    let per_fold: Vec<f64> = folds
        .iter()
        .map(|f| {
            f["scores"]["image_mean"]["accuracy"]["value"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert!((mean - per_fold.iter().sum::<f64>() / 2.0).abs() < 1e-12);
    for k in 0..2 {
        let info: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join(format!("fold-{k}/run.json"))).unwrap(),
        )
        .unwrap();
        // Each fold validates on its own fold of train, never on val or test.
        assert_eq!(info["config"]["val"]["split"], "train+val");
        assert_eq!(info["config"]["val"]["folds"]["Only"], k);
        assert_eq!(info["val_records"], 2 * 2 * 4);
    }
    fails_with(
        &[
            "train",
            "--data",
            s(&data),
            "--output",
            s(&dir.path().join("cv3")),
            "--model",
            "mlp",
            "--cv",
            "3",
            "--epochs",
            "1",
        ],
        &["no records", "fold 2"],
    );
}

/// Without a validation split (`prepare --val-fraction 0`), a run keeps its
/// last epoch and says so; early stopping, which needs one, is refused.
#[test]
fn trains_without_a_validation_split_keeping_the_last_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let spec = ToySpec {
        train_images: 4,
        val_images: 0,
        test_images: 1,
        ..ToySpec::default()
    };
    write_toy_dataset(&data, &spec).unwrap();
    let run = dir.path().join("run");
    let args = |run: &Path| three_mlp_epochs(&data, run);
    // Not quiet: the summary line says which epoch was kept and why.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_histoshard"))
        .args(args(&run))
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("kept epoch 3 (no validation split)"),
        "{stdout}"
    );
    // Each epoch's line says there is no validation split, not "val loss NaN".
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(log.matches("| no val split |").count(), 3, "{log}");
    assert!(!log.contains("NaN"), "{log}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["best_epoch"], 3);
    assert_eq!(state["best_val_loss"], serde_json::Value::Null);
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(info["config"]["keep"], "last");
    assert_eq!(info["val_records"], 0);
    assert_eq!(
        std::fs::read(run.join("best.bpk")).unwrap(),
        std::fs::read(run.join("last.bpk")).unwrap(),
        "the kept model is the last epoch's"
    );
    // The run is usable: evaluated, and resumed (nothing left to do).
    ok(&["evaluate", "--run", s(&run), "--data", s(&data)]);
    ok(&["train", "--resume", s(&run)]);
    assert_eq!(metrics(&run).len(), 3);

    let mut early = args(&dir.path().join("early"));
    early.extend(["--early-stopping", "2"].map(String::from));
    fails_with(
        &early.iter().map(String::as_str).collect::<Vec<_>>(),
        &["early stopping needs a validation split"],
    );
}

/// Writes the toy set where `HISTOSHARD_TOY_OUT` says, for trying the CLI by
/// hand: `HISTOSHARD_TOY_OUT=/tmp/toy cargo test --release --test train -- --ignored toy_to_dir`.
#[test]
#[ignore]
fn toy_to_dir() {
    if let Some(out) = std::env::var_os("HISTOSHARD_TOY_OUT") {
        write_toy_dataset(Path::new(&out), &ToySpec::default()).unwrap();
    }
}

/// The exported safetensors of a run's checkpoint: its weights under fixed
/// names, so equal bytes mean equal weights (the `.bpk` files also hold
/// parameter ids a fresh model draws at random).
fn weights(run: &Path, checkpoint: &str) -> Vec<u8> {
    let out = run.join(format!("export-{checkpoint}"));
    let ckpt = run.join(format!("{checkpoint}.bpk"));
    ok(&[
        "export",
        "--run",
        s(run),
        "--output",
        s(&out),
        "--checkpoint",
        s(&ckpt),
    ]);
    std::fs::read(out.join("model.safetensors")).unwrap()
}

/// `kill -9` at any moment of training, then `--resume`: the final weights are
/// byte-identical to an uninterrupted run's, whether the kill lands inside an
/// epoch or while a checkpoint is being written.
#[test]
fn sigkill_then_resume_gives_the_uninterrupted_weights() {
    let dir = tempfile::tempdir().unwrap();
    // Real `prepare` output: `export` reads its preprocessing.
    let (_, data) = common::prepared_toy(dir.path(), 12, 3);
    let args = |out: &Path| -> Vec<String> {
        let a = ["--quiet", "--threads", "2", "train", "--data", s(&data)];
        let b = ["--model", "cnn", "--width", "4", "--depth", "2"];
        let c = ["--epochs", "6", "--batch-size", "8", "--output", s(out)];
        a.iter()
            .chain(&b)
            .chain(&c)
            .map(|x| x.to_string())
            .collect()
    };
    let straight = dir.path().join("straight");
    ok(&args(&straight)[1..]
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());

    let killed = dir.path().join("killed");
    let rows = |run: &Path| {
        std::fs::read_to_string(run.join("metrics.csv"))
            .map_or(0, |t| t.lines().count().saturating_sub(1))
    };
    let bin = env!("CARGO_BIN_EXE_histoshard");
    let resume: Vec<String> = ["--quiet", "--threads", "2", "train", "--resume", s(&killed)]
        .map(String::from)
        .into();
    // Kill once epoch 1 is on disk, then 15 ms after epoch 3 is: the first
    // lands as epoch 2 starts, the second inside epoch 4 or its checkpoint.
    let mut live_kills = 0;
    for (step, (after_rows, delay_ms)) in [(1usize, 0u64), (3, 15)].into_iter().enumerate() {
        let cmd = if step == 0 {
            args(&killed)
        } else {
            resume.clone()
        };
        let mut child = std::process::Command::new(bin).args(&cmd).spawn().unwrap();
        while rows(&killed) < after_rows && child.try_wait().unwrap().is_none() {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            live_kills += 1;
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    assert!(live_kills > 0, "every run finished before its kill");
    ok(&resume[1..].iter().map(String::as_str).collect::<Vec<_>>());

    assert_eq!(metrics(&killed).len(), 6);
    assert_eq!(untimed(&straight), untimed(&killed));
    for checkpoint in ["last", "best"] {
        assert!(
            weights(&straight, checkpoint) == weights(&killed, checkpoint),
            "{checkpoint}.bpk differs after kill and resume"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(&killed)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// The kept epoch is the last by default (what cross-validation measures and
/// what Keras and PyTorch loops give), and the summary says when a lower
/// validation loss came earlier; `--early-stopping` keeps the best epoch.
#[test]
fn keeps_the_last_epoch_by_default_and_the_best_with_early_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_tiny_toy(&data);
    let train = |name: &str, extra: &[&str]| {
        let run = dir.path().join(name);
        let mut args = three_mlp_epochs(&data, &run);
        args.extend(extra.iter().map(|a| a.to_string()));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_histoshard"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("state.json")).unwrap())
                .unwrap();
        (
            run,
            info,
            state,
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };

    let (run, info, state, stdout) = train("default", &[]);
    assert_eq!(info["config"]["keep"], "last");
    assert_eq!(state["best_epoch"], 3);
    assert_eq!(
        std::fs::read(run.join("best.bpk")).unwrap(),
        std::fs::read(run.join("last.bpk")).unwrap()
    );
    let mut reader = csv::Reader::from_path(run.join("metrics.csv")).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let losses = col(&metrics(&run), &header, "val_loss");
    let lowest = (1..=3)
        .min_by(|&a, &b| losses[a - 1].total_cmp(&losses[b - 1]))
        .unwrap();
    let said = if lowest == 3 {
        "kept epoch 3; lowest val loss".to_string()
    } else {
        format!(
            "kept epoch 3 (the last); lowest val loss {:.4} at epoch {lowest}",
            losses[lowest - 1]
        )
    };
    assert!(stdout.contains(&said), "{stdout}");

    let (_, info, state, _) = train("early", &["--early-stopping", "5"]);
    assert_eq!(info["config"]["keep"], "best");
    let best = state["best_epoch"].as_u64().unwrap() as usize;
    assert_eq!(
        best, lowest,
        "the same seed and data: the same lowest epoch"
    );
}

/// The bytes a fixed-seed run exports, against the digests recorded in
/// `tests/data/train_digests.<x86-64 level>.txt`: a cnn and an mlp, one thread on the
/// pure-Rust backend, trained on real `prepare` output and exported as
/// safetensors (plus `model.json` and the untimed `metrics.csv`). Training
/// is bit-deterministic run to run, so any change of arithmetic, data order
/// or initialisation fails here; after an intended one, rerun with
/// `HISTOSHARD_BLESS=1` and say why in the commit.
#[test]
fn exported_weights_match_the_recorded_digests() {
    let dir = tempfile::tempdir().unwrap();
    let (_, data) = common::prepared_toy(dir.path(), 6, 9);
    let mut outputs = std::collections::BTreeMap::new();
    for (model, extra) in [
        ("cnn", ["--width", "4", "--depth", "2"]),
        ("mlp", ["--input-size", "8", "--hidden", "16"]),
    ] {
        let run = dir.path().join(model);
        let mut args = vec!["--threads", "1", "train", "--data", s(&data)];
        args.extend(["--output", s(&run), "--model", model, "--device", "flex"]);
        args.extend(["--epochs", "2", "--batch-size", "4", "--seed", "11"]);
        args.extend(extra);
        ok(&args);
        for (name, bytes) in common::exported_outputs(&run) {
            outputs.insert(format!("{model}/{name}"), bytes);
        }
    }
    common::check_cpu_digests(&outputs, "train_digests", "the exported training run");
}

/// The cnn and the mlp augment on the fly by default, with strong stain
/// jitter, and the mlp standardises each patch (the recipes cross-validation
/// chose, docs/RESULTS.md §1); `--augment false` (or `augment = false` in a
/// config file) and `--standardize false` turn them off.
#[test]
fn from_scratch_models_augment_by_default_and_the_switches_turn_it_off() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_tiny_toy(&data);
    let no_augment = dir.path().join("no-augment.toml");
    std::fs::write(&no_augment, "augment = false\n").unwrap();
    let config_of = |name: &str, model: &str, extra: &[&str]| {
        let run = dir.path().join(name);
        let mut args = vec!["--threads", "1", "train", "--data", s(&data)];
        args.extend(["--output", s(&run), "--model", model, "--epochs", "1"]);
        // (each model ignores the other's size options)
        args.extend(["--batch-size", "8", "--width", "4", "--depth", "2"]);
        args.extend(["--input-size", "8"]);
        args.extend(extra);
        ok(&args);
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
        info["config"].clone()
    };

    let cnn = config_of("cnn", "cnn", &[])["augment"].clone();
    assert!(
        (cnn["hed_sigma"].as_f64().unwrap() - 0.15).abs() < 1e-6,
        "{cnn}"
    );
    assert!((cnn["brightness"].as_f64().unwrap() - 0.25).abs() < 1e-6);
    assert!((cnn["contrast"].as_f64().unwrap() - 0.25).abs() < 1e-6);
    assert!(config_of("cnn-off", "cnn", &["--augment", "false"])["augment"].is_null());
    assert!(config_of("cnn-file", "cnn", &["--config", s(&no_augment)])["augment"].is_null());
    // `--augment` alone keeps the model's own strengths.
    assert_eq!(config_of("cnn-on", "cnn", &["--augment"])["augment"], cnn);

    let mlp = config_of("mlp", "mlp", &[]);
    assert_eq!(mlp["augment"], cnn);
    assert_eq!(mlp["model"]["standardize"], true, "{mlp}");
    let plain = config_of(
        "mlp-plain",
        "mlp",
        &["--augment", "false", "--standardize", "false"],
    );
    assert!(plain["augment"].is_null());
    assert_eq!(plain["model"]["standardize"], false, "{plain}");
}
