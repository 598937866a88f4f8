//! The trainer's bad inputs, run as a user runs them: each is one clear
//! error line naming the file and the cause, never a panic, and never a
//! half-written checkpoint that looks usable.
#![cfg(feature = "train")]

mod common;

use std::path::Path;

use common::{fails_with, ok, s};
use histoshard::train::toy::{ToySpec, write_toy_dataset};

fn toy(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("data");
    write_toy_dataset(
        &data,
        &ToySpec {
            train_images: 4,
            val_images: 1,
            test_images: 1,
            ..ToySpec::default()
        },
    )
    .unwrap();
    data
}

fn train(data: &Path, run: &Path, model: &str) {
    ok(&[
        "train",
        "--data",
        s(data),
        "--output",
        s(run),
        "--model",
        model,
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--width",
        "4",
        "--depth",
        "2",
    ]
    .into_iter()
    .filter(|a| model == "cnn" || !["--width", "4", "--depth", "2"].contains(a))
    .collect::<Vec<_>>());
}

#[test]
fn a_checkpoint_of_another_model_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy(dir.path());
    let (cnn, mlp) = (dir.path().join("cnn"), dir.path().join("mlp"));
    train(&data, &cnn, "cnn");
    train(&data, &mlp, "mlp");
    let foreign = mlp.join("best.bpk");
    for cmd in ["evaluate", "export"] {
        let mut args = vec![cmd, "--run", s(&cnn), "--checkpoint", s(&foreign)];
        if cmd == "evaluate" {
            args.extend(["--data", s(&data)]);
        }
        fails_with(&args, &["mlp/best.bpk", "checkpoint"]);
    }
    // A run folder's model file swapped for another model's: resuming refuses it.
    std::fs::copy(&foreign, cnn.join("last.bpk")).unwrap();
    fails_with(&["train", "--resume", s(&cnn)], &["cnn/last.bpk"]);
}

#[test]
fn weights_that_are_not_a_pytorch_file_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy(dir.path());
    let bogus = dir.path().join("weights.pth");
    std::fs::write(&bogus, b"this is not a pickle").unwrap();
    let run = dir.path().join("run");
    fails_with(
        &[
            "train",
            "--data",
            s(&data),
            "--output",
            s(&run),
            "--model",
            "efficientnet-lite0",
            "--weights",
            s(&bogus),
        ],
        &["weights.pth"],
    );
    // Nothing that looks like a finished epoch was written.
    assert!(!run.join("best.bpk").exists() && !run.join("state.json").exists());
    fails_with(
        &["classify", "--weights", s(&bogus), s(&bogus)],
        &["weights.pth"],
    );
}

#[test]
fn unknown_config_keys_and_bad_options_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy(dir.path());
    let toml = dir.path().join("train.toml");
    std::fs::write(
        &toml,
        format!(
            "data = {:?}\noutput = {:?}\nmodel = \"cnn\"\nfreeze-epoch = 2\n",
            s(&data),
            s(&dir.path().join("run"))
        ),
    )
    .unwrap();
    fails_with(&["train", "--config", s(&toml)], &["freeze-epoch"]);
    fails_with(
        &[
            "train",
            "--data",
            s(&data),
            "--output",
            s(&dir.path().join("run2")),
            "--model",
            "cnn",
            "--device",
            "tpu",
        ],
        &["tpu"],
    );
    fails_with(
        &[
            "train",
            "--data",
            s(&data),
            "--output",
            s(&dir.path().join("run3")),
            "--model",
            "efficientnet-lite0",
            "--weights",
            s(&toml),
            "--unfreeze",
            "some",
        ],
        &["some", "last:N"],
    );
}
