//! The trainer's bad inputs, run as a user runs them: each is one clear
//! error line naming the file and the cause, never a panic, and never a
//! half-written checkpoint that looks usable.
#![cfg(feature = "train")]

mod common;

use std::path::Path;

use common::{copy_dir, fails_with, ok, s};
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

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A quick mlp run on `data`: one epoch unless `extra` says otherwise.
fn mlp(data: &Path, run: &Path, extra: &[&str]) {
    let mut args = vec![
        "train",
        "--data",
        s(data),
        "--output",
        s(run),
        "--model",
        "mlp",
        "--batch-size",
        "8",
    ];
    if !extra.contains(&"--epochs") {
        args.extend(["--epochs", "1"]);
    }
    args.extend_from_slice(extra);
    ok(&args);
}

/// Every float option of `train` (flags, a config file, a `run.json` edited
/// by hand) and of `demo` must be a finite number in range, checked before
/// any work and named in the error: `--step-gamma nan` used to train, exit 0
/// and leave `null` in `run.json`, which `evaluate` and `--resume` then
/// could not read.
#[test]
fn non_finite_and_out_of_range_floats_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy(dir.path());
    let run = dir.path().join("run");
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "train",
            "--data",
            s(&data),
            "--output",
            s(&run),
            "--model",
            "mlp",
        ]
        .map(String::from)
        .to_vec();
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let refused = |args: Vec<String>, needles: &[&str]| {
        fails_with(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            needles,
        );
        assert!(!run.exists(), "{args:?}: the run folder was created");
    };
    for (flag, values) in [
        ("--step-gamma", &["nan", "inf", "-inf", "5", "0"][..]),
        ("--lr", &["nan", "inf", "0", "-0.1"]),
        ("--weight-decay", &["nan", "inf", "-1"]),
        ("--dropout", &["nan", "inf", "1", "-0.5"]),
        ("--head-lr", &["nan", "inf"]),
    ] {
        for v in values {
            // `--flag=-1`: a value, not another flag.
            let arg = format!("{flag}={v}");
            refused(base(&[&arg]), &[flag]);
        }
    }
    // Any schedule: the value is kept in run.json whatever the schedule.
    for schedule in ["cosine", "step", "none"] {
        refused(
            base(&["--step-gamma", "inf", "--schedule", schedule]),
            &["--step-gamma"],
        );
    }
    let toml = dir.path().join("t.toml");
    for (text, needles) in [
        ("step-gamma = nan\n", &["--step-gamma"][..]),
        ("lr = inf\n", &["--lr"]),
        ("dropout = -inf\n", &["--dropout"]),
        (
            "[augmentation]\nhed_sigma = nan\n",
            &["[augmentation]", "hed_sigma"],
        ),
    ] {
        std::fs::write(&toml, text).unwrap();
        refused(base(&["--config", s(&toml)]), needles);
    }
    fails_with(
        &["demo", "--scale", "nan", "--output", s(&run)],
        &["--scale"],
    );
    assert!(!run.exists());

    // compare checks every model's config before training the first one.
    let configs = dir.path().join("configs");
    std::fs::create_dir(&configs).unwrap();
    std::fs::write(configs.join("cnn.toml"), "step-gamma = inf\n").unwrap();
    let cmp = dir.path().join("cmp");
    fails_with(
        &[
            "compare",
            "--data",
            s(&data),
            "--output",
            s(&cmp),
            "--models",
            "mlp,cnn",
            "--config-dir",
            s(&configs),
        ],
        &["--step-gamma"],
    );
    assert!(
        !cmp.join("mlp").join("run.json").exists(),
        "mlp trained first"
    );

    // A run.json whose options are out of range (edited by hand): --resume
    // names the file and the option.
    mlp(&data, &run, &["--epochs", "2", "--stop-after", "1"]);
    let path = run.join("run.json");
    let mut info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    info["config"]["step_gamma"] = 7.0.into();
    std::fs::write(&path, info.to_string()).unwrap();
    fails_with(
        &["train", "--resume", s(&run)],
        &["run.json", "--step-gamma"],
    );
}

/// `evaluate` on other data: new images of the same classes, patch size and
/// scale are evaluated; other class names, another patch size or another
/// scale are refused, the error saying which differs.
#[test]
fn evaluate_refuses_data_whose_numbers_mean_other_things() {
    let dir = tempfile::tempdir().unwrap();
    let (input, data) = common::prepared_toy(dir.path(), 6, 1);
    let run = dir.path().join("run");
    mlp(&data, &run, &[]);
    let eval = |data: &Path| -> Vec<String> {
        [
            "evaluate",
            "--run",
            s(&run),
            "--data",
            s(data),
            "--bootstrap",
            "10",
        ]
        .map(String::from)
        .to_vec()
    };

    // Other images, same classes, patch size and scale: legitimate.
    let other = tempfile::tempdir().unwrap();
    let (_, new_images) = common::prepared_toy(other.path(), 6, 2);
    ok(&strs(&eval(&new_images)));

    // Other class names: malignant relabelled "tumour".
    let renamed = dir.path().join("in-renamed");
    for (from, to) in [("benign", "benign"), ("malignant", "tumour")] {
        copy_dir(&input.join(from), &renamed.join(to));
    }
    let data_renamed = dir.path().join("data-renamed");
    ok(&[
        "prepare",
        "-i",
        s(&renamed),
        "-o",
        s(&data_renamed),
        "--patch-size",
        "32",
        "--min-tissue",
        "0",
    ]);
    fails_with(
        &strs(&eval(&data_renamed)),
        &[
            "classes benign, tumour vs the run's benign, malignant",
            "data-renamed",
        ],
    );

    // Another patch size; another scale.
    let (input64, data64) = common::prepared_toy_patches(dir.path(), 4, 3, 64);
    fails_with(&strs(&eval(&data64)), &["patch size 64 vs the run's 32"]);
    let half = dir.path().join("data-half");
    ok(&[
        "prepare",
        "-i",
        s(&input64),
        "-o",
        s(&half),
        "--patch-size",
        "32",
        "--scale",
        "0.5",
        "--min-tissue",
        "0",
    ]);
    fails_with(&strs(&eval(&half)), &["scale 0.5 vs the run's 1"]);
}

/// `--resume` needs the data set the run started on: a re-prepared set with
/// the same record counts but every label swapped, or other options, is
/// refused naming what differs; the same data prepared again resumes.
#[test]
fn resume_refuses_other_data_and_says_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    let (input, data) = common::prepared_toy(dir.path(), 6, 4);
    let run = dir.path().join("run");
    mlp(&data, &run, &["--epochs", "2", "--stop-after", "1"]);
    let reprepare = |extra: &[&str]| {
        let mut a = vec![
            "prepare",
            "-i",
            s(&input),
            "-o",
            s(&data),
            "--patch-size",
            "32",
            "--min-tissue",
            "0",
            "--overwrite",
        ];
        a.extend_from_slice(extra);
        ok(&a);
    };
    let swap = || {
        let tmp = input.join("swap");
        std::fs::rename(input.join("benign"), &tmp).unwrap();
        std::fs::rename(input.join("malignant"), input.join("benign")).unwrap();
        std::fs::rename(&tmp, input.join("malignant")).unwrap();
    };
    swap();
    reprepare(&[]);
    fails_with(
        &["train", "--resume", s(&run)],
        &["is not the data set", "other input images or labels"],
    );
    swap();
    reprepare(&["--seed", "9"]);
    fails_with(&["train", "--resume", s(&run)], &["seed 9 (the run's 42)"]);
    // The original data, prepared again: byte-identical, the same fingerprint.
    reprepare(&[]);
    ok(&["train", "--resume", s(&run)]);
    assert_eq!(common::untimed(&run).len(), 2);
}

/// Output paths of the trainer's commands that exist and are not what they
/// must be (a folder, or a regular file) are refused before any work.
#[test]
fn trainer_outputs_that_are_not_folders_or_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (input, data) = common::prepared_toy(dir.path(), 4, 5);
    let run = dir.path().join("run");
    mlp(&data, &run, &[]);
    let file = dir.path().join("a-file");
    std::fs::write(&file, "mine").unwrap();
    let fifo = dir.path().join("fifo.csv");
    let c = std::ffi::CString::new(s(&fifo)).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let image = input.join("benign").join("benign_0.png");
    let f = s(&file);
    fails_with(
        &["train", "--data", s(&data), "--output", f, "--model", "mlp"],
        &[f, "not a folder"],
    );
    fails_with(
        &["export", "--run", s(&run), "--output", f],
        &[f, "not a folder"],
    );
    fails_with(
        &[
            "compare",
            "--data",
            s(&data),
            "--output",
            f,
            "--models",
            "mlp",
        ],
        &[f, "not a folder"],
    );
    fails_with(&["demo", "--output", f], &[f, "not a folder"]);
    fails_with(
        &["predict", "--run", s(&run), "--heatmap", f, s(&image)],
        &[f, "not a folder"],
    );
    fails_with(
        &["predict", "--run", s(&run), "--csv", s(&fifo), s(&image)],
        &[s(&fifo), "FIFO"],
    );
    let link = dir.path().join("link.csv");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    fails_with(
        &["predict", "--run", s(&run), "--csv", s(&link), s(&image)],
        &[s(&link), "symbolic link"],
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
}
