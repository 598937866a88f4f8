//! `prepare` end to end on generated GlaS-layout data, as a user runs it.

mod common;

use common::*;
use histoshard::shard::manifest::{self, ImageRow};

#[test]
fn synth_to_verified_shards_with_manifest() {
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 30, 3);
    let out = t.path().join("out");
    ok(&[
        "prepare",
        "-i",
        s(&input),
        "-o",
        s(&out),
        "--augment",
        "2",
        "--shards",
        "2",
        "--folds",
        "3",
    ]);
    ok(&["verify", s(&out)]);

    let rows = manifest::read_manifest(&out).unwrap();
    let report = report(&out);
    assert_eq!(report["records_total"].as_u64().unwrap(), rows.len() as u64);
    assert_eq!(report["images"].as_u64().unwrap(), 30);
    for split in ["train", "val", "test"] {
        let n = rows.iter().filter(|r| r.split == split).count() as u64;
        assert!(n > 0, "no {split} records");
        assert_eq!(report["records"][split].as_u64().unwrap(), n);
        assert_eq!(report["shards"][split].as_array().unwrap().len(), 2);
        assert!(
            out.join(format!("{split}-00001-of-00002.tfrecord"))
                .exists()
        );
    }
    // Train patches have 2 augmented copies; val and test are never augmented.
    for r in &rows {
        if r.split == "train" {
            assert!(r.aug_index <= 2);
            assert_eq!(r.augmentation == "none", r.aug_index == 0);
        } else {
            assert_eq!((r.aug_index, r.augmentation.as_str()), (0, "none"));
        }
        assert!(r.fold.is_some_and(|f| (0..3).contains(&f)));
        assert!(r.patient.is_some());
    }
    let train = rows.iter().filter(|r| r.split == "train");
    assert_eq!(
        train.clone().filter(|r| r.aug_index == 0).count() * 3,
        train.count()
    );
    // Record ids are 0..n in manifest order; images.parquet agrees on counts.
    assert!(
        rows.iter()
            .enumerate()
            .all(|(i, r)| r.record_id == i as u64)
    );
    let images =
        ImageRow::from_dataframe(&manifest::read_parquet(&out.join("images.parquet")).unwrap())
            .unwrap();
    assert_eq!(images.len(), 30);
    assert_eq!(
        images.iter().map(|i| i.records as usize).sum::<usize>(),
        rows.len()
    );
    // The official split is kept; val comes out of train only.
    for img in &images {
        if img.name.starts_with("test") {
            assert_eq!(img.split, "test");
            assert!(img.subset == "testA" || img.subset == "testB");
        } else {
            assert_ne!(img.split, "test");
        }
    }
    // The schema travels with the data; no temporary or state files remain.
    assert_eq!(
        std::fs::read_to_string(out.join("features.json")).unwrap(),
        histoshard::shard::schema::FEATURES_JSON
    );
    let hidden: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "leftovers: {hidden:?}");
    let csv = std::fs::read_to_string(out.join("manifest.csv")).unwrap();
    assert_eq!(csv.lines().count(), rows.len() + 1);
}

#[test]
fn byte_identical_for_any_thread_count() {
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 8, 5);
    let mut outputs = Vec::new();
    for threads in ["1", "2", "8"] {
        let out = t.path().join(format!("out{threads}"));
        ok(&[
            "--threads",
            threads,
            "prepare",
            "-i",
            s(&input),
            "-o",
            s(&out),
            "--augment",
            "1",
            "--shards",
            "3",
        ]);
        outputs.push(deterministic_files(&out));
    }
    assert!(
        outputs[0].len() >= 9,
        "shards and tables: {:?}",
        outputs[0].keys()
    );
    assert_eq!(outputs[0], outputs[1], "1 vs 2 threads");
    assert_eq!(outputs[0], outputs[2], "1 vs 8 threads");
}

/// The bytes `prepare` writes for a fixed input and seed, against the digests
/// recorded in `tests/data/prepare_digests.txt`: shards, manifests, schema,
/// and `prepare.json` without what differs between runs (timings, paths,
/// the tool version and the fingerprint that hashes it). A change that alters
/// any of them fails here; after an intended change of the output, rerun with
/// `HISTOSHARD_BLESS=1` to record the new digests, and say why in the commit.
#[test]
fn output_bytes_match_the_recorded_digests() {
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 6, 11);
    let out = t.path().join("out");
    ok(&[
        "prepare",
        "-i",
        s(&input),
        "-o",
        s(&out),
        "--augment",
        "1",
        "--scale",
        "0.5",
        "--min-tissue",
        "0.1",
        "--stain-normalize",
        "macenko",
        "--shards",
        "2",
        "--seed",
        "7",
    ]);
    let varying = [
        "\"ingest\":",
        "\"write\":",
        "\"manifest\":",
        "\"total\":",
        "\"records_per_s\":",
        "\"input\":",
        "\"output\":",
        "\"version\":",
        "\"fingerprint\":",
    ];
    let report: String = std::fs::read_to_string(out.join("prepare.json"))
        .unwrap()
        .lines()
        .filter(|l| !varying.iter().any(|v| l.trim_start().starts_with(v)))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut files = deterministic_files(&out);
    // It names the temporary input folder: compared normalised instead.
    files.remove("prepare.json");
    files.insert(
        "prepare.json (normalised)".into(),
        report.clone().into_bytes(),
    );
    common::check_digests(
        &files,
        "prepare_digests.txt",
        &format!("prepare's output (prepare.json normalised:\n{report})"),
    );
}

#[test]
fn seed_changes_augmentation_but_not_originals() {
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 6, 1);
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    ok(&[
        "prepare",
        "-i",
        s(&input),
        "-o",
        s(&a),
        "--augment",
        "1",
        "--val-fraction",
        "0",
    ]);
    ok(&[
        "prepare",
        "-i",
        s(&input),
        "-o",
        s(&b),
        "--augment",
        "1",
        "--val-fraction",
        "0",
        "--seed",
        "7",
    ]);
    let key = |r: &manifest::ManifestRow| (r.source_image.clone(), r.x, r.y, r.aug_index);
    let mut ra = manifest::read_manifest(&a).unwrap();
    let mut rb = manifest::read_manifest(&b).unwrap();
    ra.sort_by_key(key);
    rb.sort_by_key(key);
    assert_eq!(ra.len(), rb.len());
    let same_orig = ra
        .iter()
        .zip(&rb)
        .filter(|(x, _)| x.aug_index == 0)
        .all(|(x, y)| x.sha256 == y.sha256);
    let diff_aug = ra
        .iter()
        .zip(&rb)
        .filter(|(x, _)| x.aug_index > 0)
        .any(|(x, y)| x.sha256 != y.sha256);
    assert!(same_orig && diff_aug);
}

#[test]
fn gzip_and_jpeg_shards_verify() {
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 6, 2);
    let out = t.path().join("gz");
    ok(&[
        "prepare",
        "-i",
        s(&input),
        "-o",
        s(&out),
        "--compression",
        "gzip",
        "--format",
        "jpeg",
        "--quality",
        "85",
        "--shards",
        "1",
    ]);
    ok(&["verify", s(&out)]);
    let shard = std::fs::read(out.join("train-00000-of-00001.tfrecord.gz")).unwrap();
    assert_eq!(&shard[..2], &[0x1f, 0x8b]);
    let rows = manifest::read_manifest(&out).unwrap();
    assert!(rows.iter().all(|r| r.format == "jpeg"));
}

#[test]
fn interrupted_runs_resume_to_identical_output() {
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 20, 4);
    let clean = t.path().join("clean");
    let args = |out: &std::path::Path| {
        [
            "prepare",
            "-i",
            s(&input),
            "-o",
            s(out),
            "--augment",
            "1",
            "--shards",
            "2",
        ]
        .map(String::from)
    };
    let run_args = |a: [String; 9], env: &[(&str, &str)]| run_env(&a, env);
    assert!(run_args(args(&clean), &[]).0);
    let expected = deterministic_files(&clean);
    let total_shards = expected.keys().filter(|k| k.ends_with(".tfrecord")).count() as u64;
    assert!(
        total_shards >= 5,
        "need shards to kill between: {total_shards}"
    );

    for (failpoint, resumed) in [
        ("after-ingest", 0),
        ("after-shard:1", 1),
        ("after-shard:4", 4),
        ("before-manifest", total_shards),
    ] {
        let out = t
            .path()
            .join(format!("killed-{}", failpoint.replace(':', "-")));
        let (success, _, err) = run_args(args(&out), &[("HISTOSHARD_FAILPOINT", failpoint)]);
        assert!(!success && err.contains("aborting"), "{failpoint}: {err}");
        assert!(
            !out.join("manifest.parquet").exists(),
            "{failpoint}: looks complete"
        );
        let (vok, _, _) = run(&["verify", s(&out)]);
        assert!(
            !vok,
            "{failpoint}: verify must refuse an interrupted folder"
        );

        assert!(run_args(args(&out), &[]).0, "{failpoint}: rerun");
        assert_eq!(
            timings(&out)["resumed_shards"].as_u64().unwrap(),
            resumed,
            "{failpoint}"
        );
        assert_eq!(
            deterministic_files(&out),
            expected,
            "{failpoint}: resumed output differs"
        );
        let leftovers: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{failpoint}: {leftovers:?}");
    }
}

#[test]
fn refuses_to_mix_data_sets_and_overwrites_on_request() {
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 6, 6);
    let out = t.path().join("out");
    ok(&["prepare", "-i", s(&input), "-o", s(&out)]);
    // Same options: already complete, nothing to do.
    ok(&["prepare", "-i", s(&input), "-o", s(&out)]);
    fails_with(
        &["prepare", "-i", s(&input), "-o", s(&out), "--seed", "9"],
        &[s(&out), "--overwrite"],
    );
    ok(&[
        "prepare",
        "-i",
        s(&input),
        "-o",
        s(&out),
        "--seed",
        "9",
        "--overwrite",
        "--shards",
        "1",
    ]);
    assert_eq!(report(&out)["config"]["seed"].as_u64().unwrap(), 9);
    ok(&["verify", s(&out)]);
    let shards = files(&out)
        .into_keys()
        .filter(|k| k.ends_with(".tfrecord"))
        .count();
    let listed: usize = report(&out)["shards"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_array().unwrap().len())
        .sum();
    assert_eq!(shards, listed, "old shards removed by --overwrite");
}

#[test]
fn config_file_keys_match_flags_and_flags_win() {
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 4, 8);
    let out = t.path().join("out");
    let cfg = t.path().join("histoshard.toml");
    let toml = format!(
        "input = {:?}\noutput = {:?}\npatch-size = 128\nshards = 1\nseed = 3\n\n[augmentation]\nhed_sigma = 0.0\n",
        s(&input),
        s(&out)
    );
    std::fs::write(&cfg, toml).unwrap();
    ok(&["prepare", "--config", s(&cfg), "--seed", "11"]);
    let r = report(&out);
    assert_eq!(r["config"]["patch_size"].as_u64().unwrap(), 128);
    assert_eq!(r["config"]["stride"].as_u64().unwrap(), 128);
    assert_eq!(
        r["config"]["seed"].as_u64().unwrap(),
        11,
        "flag wins over config"
    );
    assert_eq!(
        r["config"]["augmentation"]["hed_sigma"].as_f64().unwrap(),
        0.0
    );

    std::fs::write(&cfg, "patch-sise = 128\n").unwrap();
    fails_with(
        &["prepare", "--config", s(&cfg)],
        &["histoshard.toml", "patch-sise", "line 1"],
    );
}

#[test]
fn two_runs_into_one_folder_do_not_interleave() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let lock = std::fs::File::create(out.join(".histoshard.lock")).unwrap();
    lock.try_lock().unwrap();
    let input = synth(t.path(), 4, 9);
    fails_with(
        &["prepare", "-i", s(&input), "-o", s(&out)],
        &["lock", s(&out)],
    );
}

#[test]
fn real_glas_sample_when_present() {
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/glas-sample");
    if !sample.exists() {
        eprintln!(
            "skipping: {} is absent (it is only on the developers' machines)",
            sample.display()
        );
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    ok(&["prepare", "-i", s(&sample), "-o", s(&out), "--shards", "1"]);
    ok(&["verify", s(&out)]);
    let r = report(&out);
    assert_eq!(r["images"].as_u64().unwrap(), 6);
    assert_eq!(r["layout"], "warwick");
    // 6 images of 775×522 give 6 patches each before the tissue filter.
    assert_eq!(r["candidate_patches"].as_u64().unwrap(), 36);
    assert!(r["kept_patches"].as_u64().unwrap() >= 30);
    let rows = manifest::read_manifest(&out).unwrap();
    assert!(rows.iter().all(|r| r.split == "test"));
    assert!(
        rows.iter().any(|r| r.label_text == "benign")
            && rows.iter().any(|r| r.label_text == "malignant")
    );
}

#[test]
fn sigkill_at_any_moment_then_rerun_gives_identical_output() {
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 10, 12);
    let args = |out: &std::path::Path| {
        [
            "--threads",
            "1",
            "prepare",
            "-i",
            s(&input),
            "-o",
            s(out),
            "--augment",
            "2",
            "--shards",
            "3",
        ]
        .map(String::from)
    };
    let clean = t.path().join("clean");
    assert!(run_env(&args(&clean), &[]).0);
    let expected = deterministic_files(&clean);
    for delay_ms in [30u64, 150, 400, 900] {
        let out = t.path().join(format!("killed-{delay_ms}"));
        let mut child = bin().args(args(&out)).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        assert!(
            run_env(&args(&out), &[]).0,
            "rerun after kill at {delay_ms} ms"
        );
        assert_eq!(deterministic_files(&out), expected, "kill at {delay_ms} ms");
    }
}

/// The prepare arguments of the disk-full tests: 10 images, about 13 MB of shards.
fn disk_full_args(input: &std::path::Path, out: &std::path::Path) -> Vec<String> {
    let a = ["--threads", "1", "prepare", "-i", s(input), "-o", s(out)];
    let b = ["--augment", "2", "--shards", "3"];
    a.iter().chain(&b).map(|x| x.to_string()).collect()
}

/// What a failed write must leave: an error naming the file, and a folder that
/// `verify` refuses, with no temporary or complete-looking shard left in it.
fn assert_clean_write_failure(stderr: &str, out_listing: &[String], cause: &str) {
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line expected, got:\n{stderr}");
    assert!(errors[0].contains(cause), "cause missing: {}", errors[0]);
    assert!(errors[0].contains(".tfrecord") || errors[0].contains("manifest"));
    for name in out_listing {
        assert!(!name.ends_with(".partial"), "temporary file left: {name}");
        assert_ne!(name, "manifest.parquet", "a failed run wrote the manifest");
    }
}

/// A real full disk: a small tmpfs in a private mount namespace (`unshare`, no
/// root needed where user namespaces are allowed). The run fails in the first
/// shard, in a later one, or near the end; `verify` refuses what is left; with
/// room again, the same command resumes to the uninterrupted run's bytes.
#[test]
fn disk_full_fails_cleanly_and_resumes_to_identical_output() {
    let probe = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "true"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: no user namespaces here (the write-limit test still runs)");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 10, 12);
    let clean = t.path().join("clean");
    assert!(run_env(&disk_full_args(&input, &clean), &[]).0);
    let expected = deterministic_files(&clean);
    let total: usize = expected.values().map(Vec::len).sum();
    let bin = env!("CARGO_BIN_EXE_histoshard");
    for fraction in [10usize, 50, 95] {
        let mnt = t.path().join(format!("mnt-{fraction}"));
        let after = t.path().join(format!("after-{fraction}"));
        std::fs::create_dir(&mnt).unwrap();
        let out = mnt.join("out");
        let args = disk_full_args(&input, &out).join(" ");
        let kib = total * fraction / 100 / 1024;
        // Fail on a full disk, list and verify what is left, then grow the disk,
        // rerun, and copy the result out of the namespace.
        let script = format!(
            "set -u; mount -t tmpfs -o size={kib}k none {mnt}; \
             {bin} --quiet {args}; echo prepare=$?; \
             echo listing: $(ls -A {out}); \
             {bin} --quiet verify {out} >/dev/null 2>&1; echo verify=$?; \
             mount -o remount,size=64m {mnt}; \
             {bin} --quiet {args} 2>&1; echo rerun=$?; cp -a {out} {after}",
            mnt = mnt.display(),
            out = out.display(),
            after = after.display(),
        );
        let o = std::process::Command::new("unshare")
            .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        let stderr = String::from_utf8_lossy(&o.stderr);
        let field = |k: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap_or_else(|| panic!("{k} missing in:\n{stdout}\n{stderr}"))
                .to_string()
        };
        assert_eq!(field("prepare="), "1", "{fraction}%: {stderr}");
        let listing: Vec<String> = field("listing:")
            .split_whitespace()
            .map(String::from)
            .collect();
        assert_clean_write_failure(&stderr, &listing, "No space left on device");
        assert_eq!(
            field("verify="),
            "1",
            "{fraction}%: verify accepted a failed run"
        );
        assert_eq!(field("rerun="), "0", "{fraction}%: {stdout}");
        assert_eq!(deterministic_files(&after), expected, "{fraction}%");
    }
}

/// The same on any Unix, without namespaces: a per-file write limit
/// (`RLIMIT_FSIZE`, with `SIGXFSZ` ignored so writes fail with `EFBIG`).
#[test]
fn write_limit_fails_cleanly_and_resumes_to_identical_output() {
    use std::os::unix::process::CommandExt;
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 10, 12);
    let clean = t.path().join("clean");
    assert!(run_env(&disk_full_args(&input, &clean), &[]).0);
    let out = t.path().join("out");
    let mut cmd = bin();
    cmd.args(disk_full_args(&input, &out));
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 300 * 1024,
                rlim_max: 300 * 1024,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    assert!(!o.status.success());
    let listing: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_clean_write_failure(&String::from_utf8_lossy(&o.stderr), &listing, "too large");
    assert!(!run(&["verify", s(&out)]).0, "verify accepted a failed run");
    assert!(run_env(&disk_full_args(&input, &out), &[]).0);
    assert_eq!(deterministic_files(&out), deterministic_files(&clean));
}
