//! One data set prepared by several workers (`prepare --worker-index I
//! --num-workers N`, or the index from Slurm's or Kubernetes' environment)
//! and joined by `merge`, as a cluster runs them — here one after another.

mod common;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use common::*;

/// What a scheduler sets; cleared for every run here, so that the tests do
/// not turn into workers when they run inside a Slurm job.
const SCHEDULER_VARS: [&str; 6] = [
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_STEP",
    "JOB_COMPLETION_INDEX",
    "HISTOSHARD_FAILPOINT",
];

/// Runs histoshard with `args` and exactly the scheduler variables `env`
/// (not `--quiet`: what it says on stdout is checked); returns (success,
/// stdout, stderr).
fn hs(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_histoshard"));
    c.args(args);
    for k in SCHEDULER_VARS {
        c.env_remove(k);
    }
    outcome(&mut c, env)
}

fn hs_ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let (success, out, err) = hs(args, env);
    assert!(success, "histoshard {args:?} {env:?} failed:\n{err}");
    out
}

/// Fails with one `error:` line holding every needle, and no panic.
fn hs_fails(args: &[&str], env: &[(&str, &str)], needles: &[&str]) -> String {
    let (success, _, err) = hs(args, env);
    assert!(!success, "histoshard {args:?} {env:?} should fail");
    one_error_line(&err, needles)
}

/// The options every run here shares: several shards per split, so that
/// three workers have some each.
fn prepare_args<'a>(input: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "prepare",
        "-i",
        s(input),
        "-o",
        s(out),
        "--augment",
        "1",
        "--shards",
        "3",
        "--folds",
        "2",
    ];
    a.extend_from_slice(extra);
    a
}

fn worker(input: &Path, out: &Path, i: u32, n: u32, extra: &[&str]) -> (bool, String, String) {
    let (i, n) = (i.to_string(), n.to_string());
    let mut a = prepare_args(input, out, extra);
    a.extend(["--worker-index", &i, "--num-workers", &n]);
    hs(&a, &[])
}

fn worker_ok(input: &Path, out: &Path, i: u32, n: u32) {
    let (success, _, err) = worker(input, out, i, n, &[]);
    assert!(success, "worker {i} of {n} failed:\n{err}");
}

fn part(out: &Path, i: u32, n: u32) -> PathBuf {
    out.join(".histoshard-parts")
        .join(format!("part-{i}-of-{n}"))
}

fn shard_names(dir: &Path) -> Vec<String> {
    files(dir)
        .into_keys()
        .filter(|k| k.ends_with(".tfrecord"))
        .collect()
}

/// The one-machine data set all merges must equal.
fn reference(t: &Path, input: &Path) -> BTreeMap<String, Vec<u8>> {
    let out = t.join("one-machine");
    hs_ok(&prepare_args(input, &out, &[]), &[]);
    let f = deterministic_files(&out);
    assert!(f.contains_key("prepare.json") && f.contains_key("manifest.parquet"));
    assert!(shard_names(&out).len() >= 6, "{:?}", f.keys());
    f
}

/// Nothing in `out` looks like a finished data set, and `verify` says so.
fn nothing_complete(out: &Path) {
    assert!(!out.join("manifest.parquet").exists());
    assert!(!hs(&["verify", s(out)], &[]).0, "verify accepted {out:?}");
}

fn hidden_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn merged_workers_equal_a_one_machine_run_byte_for_byte() {
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 16, 8);
    let expected = reference(t.path(), &input);
    let all_shards: Vec<String> = expected
        .keys()
        .filter(|k| k.ends_with(".tfrecord"))
        .cloned()
        .collect();
    for n in 1..=3u32 {
        let out = t.path().join(format!("workers-{n}"));
        let mut written = Vec::new();
        for i in 0..n {
            worker_ok(&input, &out, i, n);
            assert!(part(&out, i, n).join("part.json").is_file());
            written.extend(shard_names(&part(&out, i, n)));
            // Workers write into their parts only.
            assert!(
                shard_names(&out).is_empty(),
                "{n} workers: shards at the top"
            );
            nothing_complete(&out);
        }
        // Every shard written once, by one worker.
        written.sort();
        assert_eq!(written, all_shards, "{n} workers");
        let said = hs_ok(&["merge", s(&out)], &[]);
        assert!(said.contains(&format!("merged {n} parts")), "{said}");
        assert_eq!(
            deterministic_files(&out),
            expected,
            "{n} workers: merged folder differs from the one-machine run"
        );
        hs_ok(&["verify", s(&out)], &[]);
        assert!(
            hidden_entries(&out).is_empty(),
            "{:?}",
            hidden_entries(&out)
        );
        let workers = timings(&out)["workers"].as_array().unwrap().clone();
        assert_eq!(workers.len(), n as usize);
        let records: u64 = workers.iter().map(|w| w["records"].as_u64().unwrap()).sum();
        assert_eq!(records, report(&out)["records_total"].as_u64().unwrap());
        // Merging again: already complete, nothing changes.
        let said = hs_ok(&["merge", s(&out)], &[]);
        assert!(said.contains("nothing to merge"), "{said}");
        assert_eq!(deterministic_files(&out), expected);
    }
}

#[test]
fn merge_refuses_missing_foreign_and_half_written_parts() {
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 16, 9);
    let expected = reference(t.path(), &input);
    let out = t.path().join("out");
    hs_fails(&["merge", s(&out)], &[], &["out", "not found"]);
    std::fs::create_dir_all(&out).unwrap();
    hs_fails(
        &["merge", s(&out)],
        &[],
        &[".histoshard-parts", "no parts to merge"],
    );

    worker_ok(&input, &out, 0, 3);
    worker_ok(&input, &out, 2, 3);
    // Missing: worker 1 never ran.
    hs_fails(
        &["merge", s(&out)],
        &[],
        &["part-1-of-3", "missing", "worker(s) 1 of 3"],
    );
    nothing_complete(&out);

    // Foreign: worker 1 with another seed.
    let (success, _, err) = worker(&input, &out, 1, 3, &["--seed", "7"]);
    assert!(success, "{err}");
    hs_fails(
        &["merge", s(&out)],
        &[],
        &[
            "part-1-of-3/part.json",
            "another plan",
            "seed",
            "rerun worker 1",
        ],
    );
    nothing_complete(&out);
    // Rerun rightly (its folder holds the other plan: --overwrite).
    let (success, _, err) = worker(&input, &out, 1, 3, &[]);
    assert!(!success && err.contains("other options"), "{err}");
    let (success, _, err) = worker(&input, &out, 1, 3, &["--overwrite"]);
    assert!(success, "{err}");

    // Half-written: worker 2 killed after its first shard, then after all
    // of them but before its part.json.
    for failpoint in ["after-shard:1", "before-part"] {
        let n = "3".to_string();
        let mut a = prepare_args(&input, &out, &["--overwrite"]);
        a.extend(["--worker-index", "2", "--num-workers", &n]);
        let (success, _, err) = hs(&a, &[("HISTOSHARD_FAILPOINT", failpoint)]);
        assert!(!success && err.contains("aborting"), "{failpoint}: {err}");
        hs_fails(
            &["merge", s(&out)],
            &[],
            &["part-2-of-3/part.json", "incomplete", "rerun worker 2"],
        );
        nothing_complete(&out);
    }
    // A damaged part: a shard cut short.
    let p0 = part(&out, 0, 3);
    let victim = p0.join(&shard_names(&p0)[0]);
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    worker_ok(&input, &out, 2, 3);
    hs_fails(
        &["merge", s(&out)],
        &[],
        &[s(&victim), "part.json says", "rerun worker 0"],
    );
    nothing_complete(&out);
    // Worker 0 rerun: it redoes the damaged shard (its CRC-32C no longer
    // matches) and keeps the other.
    worker_ok(&input, &out, 0, 3);
    let part0: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p0.join("part.json")).unwrap()).unwrap();
    let shards0 = part0["shards"].as_array().unwrap().len() as u64;
    assert!(shards0 >= 2, "{part0}");
    assert_eq!(
        part0["timings"]["resumed_shards"].as_u64(),
        Some(shards0 - 1)
    );

    hs_ok(&["merge", s(&out)], &[]);
    assert_eq!(deterministic_files(&out), expected);
    hs_ok(&["verify", s(&out)], &[]);
}

#[test]
fn a_rerun_worker_redoes_nothing_and_touches_no_other_part() {
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 12, 10);
    let expected = reference(t.path(), &input);
    let out = t.path().join("out");
    for i in 0..2 {
        worker_ok(&input, &out, i, 2);
    }
    let other = files(&part(&out, 1, 2));
    let modified = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let p1_shard = part(&out, 1, 2).join(&shard_names(&part(&out, 1, 2))[0]);
    let before = modified(&p1_shard);
    let first = std::fs::read_to_string(part(&out, 0, 2).join("part.json")).unwrap();
    // Rerun of a finished worker (Slurm requeues one): every shard kept.
    worker_ok(&input, &out, 0, 2);
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(part(&out, 0, 2).join("part.json")).unwrap())
            .unwrap();
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    let n0 = first["shards"].as_array().unwrap().len() as u64;
    assert_eq!(again["timings"]["resumed_shards"].as_u64(), Some(n0));
    assert_eq!(again["plan"], first["plan"]);
    assert_eq!(again["shards"], first["shards"]);
    assert_eq!(files(&part(&out, 1, 2)), other, "worker 1's part changed");
    assert_eq!(modified(&p1_shard), before);
    hs_ok(&["merge", s(&out)], &[]);
    assert_eq!(deterministic_files(&out), expected);
    // After the merge a worker has nothing to do, and writes no part.
    let said = {
        let (success, out_text, err) = worker(&input, &out, 1, 2, &[]);
        assert!(success, "{err}");
        out_text
    };
    assert!(said.contains("nothing to do"), "{said}");
    assert!(!out.join(".histoshard-parts").exists());
}

#[test]
fn the_index_comes_from_slurm_or_kubernetes_and_is_checked() {
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 12, 11);
    let expected = reference(t.path(), &input);
    let out = t.path().join("out");
    let base = prepare_args(&input, &out, &[]);

    // Out of range, by flag and by environment: nothing is written.
    let mut a = base.clone();
    a.extend(["--worker-index", "3", "--num-workers", "3"]);
    hs_fails(
        &a,
        &[],
        &["--worker-index 3 is out of range for --num-workers 3"],
    );
    let mut a = base.clone();
    a.extend(["--num-workers", "2"]);
    hs_fails(
        &a,
        &[("JOB_COMPLETION_INDEX", "2")],
        &["--worker-index 2", "--num-workers 2"],
    );
    hs_fails(&a, &[], &["--num-workers 2 needs --worker-index"]);
    hs_fails(
        &base,
        &[
            ("SLURM_ARRAY_TASK_ID", "two"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
        ],
        &["SLURM_ARRAY_TASK_ID"],
    );
    assert!(!out.exists(), "a refused worker wrote {out:?}");

    // Slurm's array (ids from 1 here: --array=1-2) numbers worker 0; a
    // Kubernetes Indexed Job with --num-workers numbers worker 1.
    let said = hs_ok(
        &base,
        &[
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
        ],
    );
    assert!(said.contains("worker 0 of 2"), "{said}");
    hs_ok(&a, &[("JOB_COMPLETION_INDEX", "1")]);
    assert!(part(&out, 0, 2).join("part.json").is_file());
    assert!(part(&out, 1, 2).join("part.json").is_file());
    hs_ok(&["merge", s(&out)], &[]);
    assert_eq!(deterministic_files(&out), expected);

    // `--num-workers 1` alone: one machine, whatever the environment.
    let one = t.path().join("one");
    let mut a = prepare_args(&input, &one, &[]);
    a.extend(["--num-workers", "1"]);
    hs_ok(
        &a,
        &[
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ],
    );
    assert_eq!(deterministic_files(&one), expected);
}

#[test]
fn parts_of_different_worker_counts_are_not_mixed() {
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 12, 12);
    let out = t.path().join("out");
    worker_ok(&input, &out, 0, 2);
    worker_ok(&input, &out, 1, 3);
    hs_fails(
        &["merge", s(&out)],
        &[],
        &["different worker counts", "part-0-of-2", "part-1-of-3"],
    );
    nothing_complete(&out);
    // A folder holding another data set: workers refuse at once.
    let other = t.path().join("other");
    hs_ok(&prepare_args(&input, &other, &["--seed", "3"]), &[]);
    let (success, _, err) = worker(&input, &other, 0, 2, &[]);
    assert!(!success && err.contains("other options or inputs"), "{err}");
    assert!(!other.join(".histoshard-parts").exists());
}

#[test]
fn more_workers_than_shards_leave_some_with_an_empty_part() {
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 8, 13);
    let args =
        |out: &Path| ["prepare", "-i", s(&input), "-o", s(out), "--shards", "1"].map(String::from);
    let one = t.path().join("one");
    let a = args(&one);
    hs_ok(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let shards = shard_names(&one).len() as u32;
    let n = shards + 2;
    let out = t.path().join("out");
    let mut empty = 0;
    for i in 0..n {
        let (i, n) = (i.to_string(), n.to_string());
        let mut a: Vec<String> = args(&out).into();
        a.extend(["--worker-index", &i, "--num-workers", &n].map(String::from));
        let (success, _, err) = hs(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
        assert!(success, "{err}");
        if err.contains("has no shard to write") {
            empty += 1;
        }
    }
    assert_eq!(empty, 2, "{n} workers, {shards} shards");
    hs_ok(&["merge", s(&out)], &[]);
    assert_eq!(deterministic_files(&out), deterministic_files(&one));
}

#[test]
fn workers_that_read_other_input_bytes_are_not_mixed() {
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 8, 14);
    let out = t.path().join("out");
    worker_ok(&input, &out, 0, 2);
    // The input changes between the workers: one pixel of one image, the
    // same names and sizes (which is all the options fingerprint sees).
    let image = input.join("train_1.bmp");
    let mut bytes = std::fs::read(&image).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&image, &bytes).unwrap();
    worker_ok(&input, &out, 1, 2);
    hs_fails(
        &["merge", s(&out)],
        &[],
        &[
            "part-1-of-2/part.json",
            "other input contents",
            "rerun worker 1",
        ],
    );
    nothing_complete(&out);
}
