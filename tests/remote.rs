//! Data sets on object storage, through `file:///` URLs (the same code path
//! as `s3://`, `gs://` and `az://` past the store's construction; no server
//! needed). `scripts/s3_test.sh` runs the S3 cases against a local S3 server.
#![cfg(feature = "object-store")]

mod common;

use std::path::Path;

use common::*;

/// Runs histoshard (not `--quiet`) with the cache in `cache` and `env`.
fn hs(args: &[&str], cache: &Path, env: &[(&str, &str)]) -> (bool, String, String) {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_histoshard"));
    c.args(args).env("HISTOSHARD_CACHE", cache);
    c.env_remove("HISTOSHARD_FAILPOINT");
    outcome(&mut c, env)
}

fn hs_ok(args: &[&str], cache: &Path) -> String {
    let (success, out, err) = hs(args, cache, &[]);
    assert!(success, "histoshard {args:?} failed:\n{err}");
    out
}

fn hs_fails(args: &[&str], cache: &Path, env: &[(&str, &str)], needles: &[&str]) -> String {
    let (success, _, err) = hs(args, cache, env);
    assert!(!success, "histoshard {args:?} should fail");
    one_error_line(&err, needles)
}

fn prepare<'a>(input: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["prepare", "-i", input, "-o", out, "--augment", "1"];
    if !extra.contains(&"--shards") {
        a.extend_from_slice(&["--shards", "2"]);
    }
    a.extend_from_slice(extra);
    a
}

/// Every name in a folder, hidden ones too.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_data_set_uploaded_to_a_url_is_byte_identical_and_read_there() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let input = synth(dir.path(), 12, 5);
    let local = dir.path().join("local");
    hs_ok(&prepare(s(&input), s(&local), &[]), &cache);

    let bucket = dir.path().join("bucket");
    let url = format!("file://{}/sets/glas", bucket.display());
    let out = hs_ok(&prepare(s(&input), &url, &[]), &cache);
    assert!(out.contains(&url) && out.contains("uploaded"), "{out}");
    let remote = bucket.join("sets/glas");
    assert_eq!(deterministic_files(&remote), deterministic_files(&local));
    // Nothing else there (no journal), and the staging folder is gone.
    let mut want: Vec<String> = files(&local).into_keys().collect();
    want.sort();
    assert_eq!(names(&remote), want);
    assert_eq!(names(&cache.join("staging")), Vec::<String>::new());

    // Read where it is.
    let out = hs_ok(&["verify", &url], &cache);
    assert!(out.starts_with("ok: ") && out.contains(&url), "{out}");
    let out = hs_ok(&["inspect", &url, "--per-class", "2"], &cache);
    assert!(out.contains("contact sheet:"), "{out}");
    // Run again: nothing to do.
    let out = hs_ok(&prepare(s(&input), &url, &[]), &cache);
    assert!(out.contains("already holds this data set"), "{out}");

    // The input from a URL too: the same shards (prepare.json names the input's folder).
    let in_url = format!("file://{}", input.display());
    let url2 = format!("file://{}/from-url", bucket.display());
    hs_ok(&prepare(&in_url, &url2, &[]), &cache);
    let mut a = deterministic_files(&bucket.join("from-url"));
    let mut b = deterministic_files(&local);
    for f in [&mut a, &mut b] {
        f.remove("prepare.json");
    }
    assert_eq!(a, b);
}

#[test]
fn an_upload_cut_short_leaves_nothing_that_looks_complete_and_a_rerun_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let input = synth(dir.path(), 10, 6);
    let local = dir.path().join("local");
    hs_ok(&prepare(s(&input), s(&local), &[]), &cache);
    let bucket = dir.path().join("bucket");
    let url = format!("file://{}/ds", bucket.display());

    // Killed just before manifest.parquet goes up.
    let (success, _, err) = hs(
        &prepare(s(&input), &url, &[]),
        &cache,
        &[("HISTOSHARD_FAILPOINT", "before-remote-manifest")],
    );
    assert!(!success, "{err}");
    let remote = bucket.join("ds");
    let there = names(&remote);
    assert!(
        !there.contains(&"manifest.parquet".to_string()),
        "{there:?}"
    );
    assert!(there.iter().any(|n| n.ends_with(".tfrecord")), "{there:?}");
    // Every object there is whole: the same bytes as the local run's file.
    let local_files = files(&local);
    for (name, bytes) in files(&remote) {
        if let Some(want) = local_files.get(&name)
            && name != "prepare-timings.json"
        {
            assert_eq!(&bytes, want, "{name} differs");
        }
    }
    hs_fails(
        &["verify", &url],
        &cache,
        &[],
        &["no complete histoshard data set", "manifest.parquet"],
    );
    // The rerun resumes from the staging folder and completes the upload.
    let (success, _, err) = hs(&prepare(s(&input), &url, &[]), &cache, &[]);
    assert!(success, "{err}");
    assert_eq!(deterministic_files(&remote), deterministic_files(&local));
    assert!(!names(&remote).contains(&".histoshard-upload.json".to_string()));
    hs_ok(&["verify", &url], &cache);
}

#[test]
fn another_data_set_foreign_objects_and_bad_urls_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let input = synth(dir.path(), 10, 7);
    let bucket = dir.path().join("bucket");
    let url = format!("file://{}/ds", bucket.display());
    hs_ok(&prepare(s(&input), &url, &[]), &cache);
    let remote = bucket.join("ds");
    let before = files(&remote);

    // Other options: refused without --overwrite, nothing changed.
    hs_fails(
        &prepare(s(&input), &url, &["--seed", "9", "--shards", "3"]),
        &cache,
        &[],
        &[&url, "other options", "--overwrite"],
    );
    assert_eq!(files(&remote), before);
    // With --overwrite: replaced; the old set's shards that the new one lacks are gone.
    hs_ok(
        &prepare(
            s(&input),
            &url,
            &["--seed", "9", "--shards", "3", "--overwrite"],
        ),
        &cache,
    );
    let local = dir.path().join("local9");
    hs_ok(
        &prepare(s(&input), s(&local), &["--seed", "9", "--shards", "3"]),
        &cache,
    );
    assert_eq!(deterministic_files(&remote), deterministic_files(&local));

    // A file histoshard did not write, with a name it writes: refused, even with --overwrite.
    let other = bucket.join("theirs");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("manifest.csv"), b"their labels\n").unwrap();
    let theirs = format!("file://{}/theirs", bucket.display());
    hs_fails(
        &prepare(s(&input), &theirs, &["--overwrite"]),
        &cache,
        &[],
        &["did not record writing", "manifest.csv"],
    );
    assert_eq!(names(&other), ["manifest.csv"]);

    // No data set at a prefix: readers refuse it by name.
    let empty = format!("file://{}/nothing", bucket.display());
    hs_fails(
        &["verify", &empty],
        &cache,
        &[],
        &[&empty, "no complete histoshard data set"],
    );
    hs_fails(
        &["inspect", &empty],
        &cache,
        &[],
        &["no complete histoshard data set"],
    );
    // Schemes that are not object stores.
    hs_fails(
        &prepare(s(&input), "ftp://host/x", &[]),
        &cache,
        &[],
        &["ftp://host/x", "unsupported scheme"],
    );
}

/// Worker `i` of `n` with `--output url` (3 shards a split, so that every
/// worker has some).
fn worker(
    input: &Path,
    url: &str,
    i: u32,
    n: u32,
    cache: &Path,
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let (i, n) = (i.to_string(), n.to_string());
    let args = prepare(
        s(input),
        url,
        &["--shards", "3", "--worker-index", &i, "--num-workers", &n],
    );
    hs(&args, cache, env)
}

#[test]
fn workers_and_merge_at_a_url_write_the_one_machine_upload_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let input = synth(dir.path(), 12, 9);
    let bucket = dir.path().join("bucket");
    let one = format!("file://{}/one", bucket.display());
    hs_ok(&prepare(s(&input), &one, &["--shards", "3"]), &cache);

    let url = format!("file://{}/workers", bucket.display());
    let remote = bucket.join("workers");
    for i in 0..3 {
        let (success, out, err) = worker(&input, &url, i, 3, &cache, &[]);
        assert!(success, "worker {i}: {err}");
        assert!(
            out.contains("histoshard merge") && out.contains(&url),
            "{out}"
        );
    }
    // Nothing looks complete before the merge; the parts are at the prefix.
    assert!(!remote.join("manifest.parquet").exists());
    assert_eq!(
        names(&remote.join(".histoshard-parts")),
        ["part-0-of-3", "part-1-of-3", "part-2-of-3"]
    );
    // A finished worker rerun redoes nothing.
    let (success, out, err) = worker(&input, &url, 1, 3, &cache, &[]);
    assert!(
        success && out.contains("already holds this part"),
        "{out}{err}"
    );

    let out = hs_ok(&["merge", &url], &cache);
    assert!(out.contains("merged 3 parts"), "{out}");
    let one_dir = bucket.join("one");
    assert_eq!(deterministic_files(&remote), deterministic_files(&one_dir));
    // The same objects, no parts, no journal left; the staging folders are gone.
    assert_eq!(names(&remote), names(&one_dir));
    assert_eq!(names(&cache.join("staging")), Vec::<String>::new());
    assert_eq!(names(&cache.join("merging")), Vec::<String>::new());
    let out = hs_ok(&["verify", &url], &cache);
    assert!(out.starts_with("ok: "), "{out}");
    // Merged: a worker rerun and a merge rerun have nothing to do.
    let (success, out, _) = worker(&input, &url, 0, 3, &cache, &[]);
    assert!(
        success && out.contains("already holds this data set"),
        "{out}"
    );
    let out = hs_ok(&["merge", &url], &cache);
    assert!(out.contains("nothing to merge"), "{out}");
}

#[test]
fn a_merge_at_a_url_refuses_a_missing_half_written_or_foreign_part() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let input = synth(dir.path(), 12, 10);
    let bucket = dir.path().join("bucket");
    let url = format!("file://{}/ds", bucket.display());
    let remote = bucket.join("ds");
    let parts_url = format!("{url}/.histoshard-parts");

    let ok = |i: u32, extra: &[(&str, &str)]| {
        let (success, _, err) = worker(&input, &url, i, 3, &cache, extra);
        assert!(success, "worker {i}: {err}");
    };
    ok(0, &[]);
    ok(2, &[]);
    // Worker 1 has not run.
    hs_fails(
        &["merge", &url],
        &cache,
        &[],
        &[
            &format!("{parts_url}/part-1-of-3"),
            "missing",
            "worker(s) 1 of 3",
        ],
    );
    assert!(!remote.join("manifest.parquet").exists());
    // Worker 1 killed before its part.json went up: its shards are there, the part is incomplete.
    let (success, _, _) = worker(
        &input,
        &url,
        1,
        3,
        &cache,
        &[("HISTOSHARD_FAILPOINT", "before-remote-part")],
    );
    assert!(!success);
    let part1 = remote.join(".histoshard-parts/part-1-of-3");
    assert!(
        names(&part1).iter().any(|n| n.ends_with(".tfrecord")),
        "{:?}",
        names(&part1)
    );
    hs_fails(
        &["merge", &url],
        &cache,
        &[],
        &[
            &format!("{parts_url}/part-1-of-3/part.json"),
            "incomplete",
            "rerun worker 1",
        ],
    );
    assert!(!remote.join("manifest.parquet").exists());
    // Worker 1 rerun with other options: another plan, named.
    let (success, _, err) = hs(
        &prepare(
            s(&input),
            &url,
            &[
                "--shards",
                "3",
                "--seed",
                "5",
                "--worker-index",
                "1",
                "--num-workers",
                "3",
            ],
        ),
        &cache,
        &[],
    );
    assert!(success, "{err}");
    hs_fails(
        &["merge", &url],
        &cache,
        &[],
        &[
            &format!("{parts_url}/part-1-of-3/part.json"),
            "another plan",
            "seed",
        ],
    );
    assert!(!remote.join("manifest.parquet").exists());
    // Rerun right, it is redone (only its part), and the merge completes.
    ok(1, &[]);
    hs_ok(&["merge", &url], &cache);
    let local = dir.path().join("local");
    hs_ok(&prepare(s(&input), s(&local), &["--shards", "3"]), &cache);
    assert_eq!(deterministic_files(&remote), deterministic_files(&local));
}

#[test]
fn an_unreachable_s3_server_fails_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let input = synth(dir.path(), 4, 8);
    // Port 9 (discard) on localhost: nothing listens; connections are refused.
    let env = [
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("HISTOSHARD_STORE_RETRIES", "0"),
    ];
    let started = std::time::Instant::now();
    hs_fails(
        &prepare(s(&input), "s3://bucket/ds", &[]),
        &cache,
        &env,
        &["s3://bucket/ds", "network error"],
    );
    hs_fails(
        &["verify", "s3://bucket/ds"],
        &cache,
        &env,
        &["s3://bucket/ds", "network error"],
    );
    assert!(started.elapsed().as_secs() < 60);
    assert_eq!(names(&cache.join("staging")), Vec::<String>::new());
}

#[cfg(feature = "train")]
#[test]
fn train_reads_a_data_set_at_a_url_as_it_reads_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (input, data) = prepared_toy(dir.path(), 6, 3);
    let url = format!("file://{}/bucket/toy", dir.path().display());
    let toy = ["--patch-size", "32", "--min-tissue", "0"];
    let mut args = vec!["prepare", "-i", s(&input), "-o", &url];
    args.extend_from_slice(&toy);
    hs_ok(&args, &cache);
    let train = |data: &str, run: &Path| {
        hs_ok(
            &[
                "train",
                "--data",
                data,
                "--output",
                s(run),
                "--model",
                "mlp",
                "--input-size",
                "8",
                "--epochs",
                "2",
                "--batch-size",
                "8",
            ],
            &cache,
        );
    };
    let (from_url, from_dir) = (dir.path().join("run-url"), dir.path().join("run-dir"));
    train(&url, &from_url);
    train(s(&data), &from_dir);
    assert_eq!(untimed(&from_url), untimed(&from_dir));
    assert!(!untimed(&from_url).is_empty());
}
