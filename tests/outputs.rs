//! What histoshard writes, and what it never touches: an output folder's
//! files histoshard did not record writing are never deleted or replaced (a
//! run they are in the way of is refused, naming them, and changes nothing),
//! and an output path a user names that is not a regular file (a symbolic
//! link, FIFO, device node, folder) is refused, not replaced.

mod common;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use common::*;

/// Every entry of `dir` (hidden ones too) with its bytes; folders and other
/// non-files as their kind.
fn listing(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            let content = if t.is_file() {
                std::fs::read(e.path()).unwrap()
            } else {
                format!("{t:?}").into_bytes()
            };
            (e.file_name().to_string_lossy().into_owned(), content)
        })
        .collect()
}

fn prepare_args<'a>(input: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["prepare", "-i", s(input), "-o", s(out)];
    a.extend_from_slice(extra);
    a
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// A user's own files in the output folder: a label file named
/// `manifest.csv` (a name histoshard writes), hidden `.tmp`/`.partial` files,
/// a notes file. The run is refused naming what is in the way, with or
/// without `--overwrite`, and the folder is left exactly as it was (no lock
/// file either). Files not in the way are kept through every later run.
#[test]
fn foreign_files_are_never_deleted_and_a_refused_run_changes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 4, 21);
    let out = t.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("manifest.csv"), "filename,label\na.png,benign\n").unwrap();
    std::fs::write(out.join(".draft.tmp"), "mine").unwrap();
    std::fs::write(out.join(".upload.partial"), "mine too").unwrap();
    std::fs::write(out.join("notes.txt"), "keep").unwrap();
    let before = listing(&out);
    for extra in [&[][..], &["--overwrite"][..]] {
        let line = fails_with(
            &prepare_args(&input, &out, extra),
            &["in the way", "manifest.csv"],
        );
        assert!(!line.contains("already holds"), "{line}");
        assert_eq!(
            listing(&out),
            before,
            "a refused run changed the folder ({extra:?})"
        );
    }
    // A foreign shard would make `verify` fail: in the way too.
    std::fs::write(out.join("old-00000-of-00001.tfrecord"), "x").unwrap();
    fails_with(
        &prepare_args(&input, &out, &[]),
        &["old-00000-of-00001.tfrecord", "manifest.csv"],
    );
    std::fs::remove_file(out.join("old-00000-of-00001.tfrecord")).unwrap();

    // Out of the way, the run goes ahead and keeps the rest.
    std::fs::rename(out.join("manifest.csv"), t.path().join("labels.csv")).unwrap();
    ok(&prepare_args(&input, &out, &[]));
    ok(&["verify", s(&out)]);
    for (name, bytes) in [
        (".draft.tmp", &b"mine"[..]),
        (".upload.partial", b"mine too"),
        ("notes.txt", b"keep"),
    ] {
        assert_eq!(std::fs::read(out.join(name)).unwrap(), bytes, "{name}");
    }
    assert!(!out.join(".histoshard.lock").exists());

    // Another data set: refused (changing nothing) unless --overwrite, which
    // removes what prepare.json lists and inspect's sheet, and nothing else.
    ok(&["inspect", s(&out)]);
    let before = listing(&out);
    fails_with(
        &prepare_args(&input, &out, &["--seed", "9"]),
        &["already holds a histoshard data set", "--overwrite"],
    );
    assert_eq!(listing(&out), before);
    ok(&prepare_args(
        &input,
        &out,
        &["--seed", "9", "--overwrite", "--shards", "1"],
    ));
    ok(&["verify", s(&out)]);
    assert!(
        !out.join("contact_sheet.png").exists(),
        "inspect's stale sheet"
    );
    assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"keep");
    assert!(out.join(".draft.tmp").exists() && out.join(".upload.partial").exists());

    // A user's own contact_sheet.png is not inspect's: kept.
    std::fs::write(out.join("contact_sheet.png"), "my picture").unwrap();
    ok(&prepare_args(
        &input,
        &out,
        &["--seed", "10", "--overwrite"],
    ));
    assert_eq!(
        std::fs::read(out.join("contact_sheet.png")).unwrap(),
        b"my picture"
    );
}

/// A `prepare.json` that lists a shard outside the folder: `--overwrite`
/// deletes only plain names inside it.
#[test]
fn overwrite_never_follows_a_recorded_name_out_of_the_folder() {
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 4, 22);
    let out = t.path().join("out");
    ok(&prepare_args(&input, &out, &[]));
    let victim = t.path().join("victim.tfrecord");
    std::fs::write(&victim, "not yours").unwrap();
    let mut r = report(&out);
    let mut forged = r["shards"]["train"][0].clone();
    forged["file"] = "../victim.tfrecord".into();
    r["shards"]["train"].as_array_mut().unwrap().push(forged);
    std::fs::write(out.join("prepare.json"), r.to_string()).unwrap();
    ok(&prepare_args(&input, &out, &["--overwrite", "--seed", "3"]));
    assert_eq!(std::fs::read(&victim).unwrap(), b"not yours");
    ok(&["verify", s(&out)]);
}

/// `--overwrite` killed half-way (its old files partly deleted, new shards
/// partly written), then the same command without `--overwrite`: it resumes
/// from its journal, and the old data set's files it recorded are gone.
#[test]
fn a_killed_overwrite_resumes_and_leaves_no_old_files() {
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 12, 23);
    let out = t.path().join("out");
    let clean = t.path().join("clean");
    ok(&prepare_args(&input, &out, &["--shards", "3"]));
    let new = ["--seed", "5", "--shards", "1", "--augment", "1"];
    ok(&prepare_args(&input, &clean, &new));
    let mut killed = prepare_args(&input, &out, &new);
    killed.push("--overwrite");
    let (success, _, err) = run_env(&killed, &[("HISTOSHARD_FAILPOINT", "after-shard:1")]);
    assert!(!success && err.contains("aborting"), "{err}");
    assert!(
        !run(&["verify", s(&out)]).0,
        "verify accepted a killed overwrite"
    );
    ok(&prepare_args(&input, &out, &new));
    assert_eq!(deterministic_files(&out), deterministic_files(&clean));
    let hidden: Vec<String> = listing(&out)
        .into_keys()
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
}

/// Output paths that exist and are not regular files are refused before any
/// work, in one line naming the path and what it is; nothing is written
/// through a link, into a FIFO (no hang) or over a device node.
#[test]
fn named_outputs_that_are_not_regular_files_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 4, 24);
    let data = t.path().join("data");
    ok(&prepare_args(&input, &data, &[]));
    let target = t.path().join("precious.txt");
    std::fs::write(&target, "precious").unwrap();
    let link = t.path().join("link.png");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let fifo = t.path().join("fifo");
    mkfifo(&fifo);
    let folder = t.path().join("folder.csv");
    std::fs::create_dir(&folder).unwrap();
    for (path, kind) in [
        (link.as_path(), "symbolic link"),
        (fifo.as_path(), "FIFO"),
        (folder.as_path(), "a folder"),
        (Path::new("/dev/null"), "character device"),
    ] {
        fails_with(&["inspect", s(&data), "--sheet", s(path)], &[s(path), kind]);
        fails_with(
            &["verify", s(&data), "--pixel-digests", s(path)],
            &[s(path), kind],
        );
    }
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // A folder that does not exist: refused before the work, not after it.
    let nowhere = t.path().join("no/such/sheet.png");
    fails_with(
        &["inspect", s(&data), "--sheet", s(&nowhere)],
        &["does not exist"],
    );
    // The default sheet path inside the data folder is checked the same way.
    std::fs::create_dir(data.join("contact_sheet.png")).unwrap();
    fails_with(&["inspect", s(&data)], &["contact_sheet.png", "a folder"]);
    std::fs::remove_dir(data.join("contact_sheet.png")).unwrap();
    ok(&["inspect", s(&data)]);

    // Output folders: a file or a dangling link is not one.
    let file = t.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let dangling = t.path().join("dangling");
    std::os::unix::fs::symlink(t.path().join("gone"), &dangling).unwrap();
    for out in [&file, &dangling] {
        fails_with(&prepare_args(&input, out, &[]), &[s(out)]);
        fails_with(&["synth", "--output", s(out), "--images", "2"], &[s(out)]);
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
    // A link to a folder is a folder: written inside.
    let real = t.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let to_real = t.path().join("to-real");
    std::os::unix::fs::symlink(&real, &to_real).unwrap();
    ok(&prepare_args(&input, &to_real, &[]));
    assert!(real.join("manifest.parquet").is_file());
}

/// `synth` into a folder that already holds files of the names it writes:
/// refused, nothing replaced or written through.
#[test]
fn synth_never_replaces_files() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("synth");
    std::fs::create_dir(&out).unwrap();
    let target = t.path().join("precious.txt");
    std::fs::write(&target, "precious").unwrap();
    // The first image synth writes for 2 images.
    let first = {
        let probe = t.path().join("probe");
        ok(&["synth", "--output", s(&probe), "--images", "2"]);
        let mut names: Vec<String> = listing(&probe)
            .into_keys()
            .filter(|n| n.ends_with(".bmp"))
            .collect();
        names.sort();
        names.remove(0)
    };
    std::os::unix::fs::symlink(&target, out.join(&first)).unwrap();
    fails_with(
        &["synth", "--output", s(&out), "--images", "2"],
        &[&first, "empty folder"],
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    assert_eq!(listing(&out).len(), 1);
}

/// `prepare.json` carries its format version; a file written before the
/// field existed (same fields, no `format_version`) still reads; one from a
/// newer format is refused (here by `verify`) with the file named.
#[test]
fn prepare_json_format_version_is_read_back_and_checked() {
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 4, 26);
    let data = t.path().join("data");
    ok(&prepare_args(&input, &data, &[]));
    let r = report(&data);
    assert_eq!(r["format_version"], 1);

    let older = t.path().join("older");
    copy_dir(&data, &older);
    let mut old = r.clone();
    old.as_object_mut().unwrap().remove("format_version");
    std::fs::write(older.join("prepare.json"), old.to_string()).unwrap();
    ok(&["verify", s(&older)]);

    let newer = t.path().join("newer");
    copy_dir(&data, &newer);
    let mut new = r.clone();
    new["format_version"] = 99.into();
    std::fs::write(newer.join("prepare.json"), new.to_string()).unwrap();
    let (success, _, err) = run(&["verify", s(&newer)]);
    assert!(!success);
    assert!(
        err.contains(&format!("{}/prepare.json", s(&newer))) && err.contains("format 99"),
        "{err}"
    );
}

/// `verify` refuses a folder without `features.json` or `prepare.json`,
/// naming the file; `inspect`'s error names the folder, not a placeholder.
#[test]
fn incomplete_folders_name_the_missing_file() {
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 4, 25);
    let data = t.path().join("data");
    ok(&prepare_args(&input, &data, &[]));
    for name in ["features.json", "prepare.json"] {
        let copy = t.path().join(format!("without-{name}"));
        copy_dir(&data, &copy);
        std::fs::remove_file(copy.join(name)).unwrap();
        fails_with(
            &["verify", s(&copy)],
            &[&format!("{}/{name}", s(&copy)), "not found"],
        );
    }
    // Present but not histoshard's: faults, exit 1.
    let copy = t.path().join("odd-report");
    copy_dir(&data, &copy);
    std::fs::write(copy.join("prepare.json"), "{}").unwrap();
    std::fs::write(copy.join("features.json"), "{}").unwrap();
    let (success, _, err) = run(&["verify", s(&copy)]);
    assert!(!success);
    assert!(
        err.contains("features.json: differs from the schema"),
        "{err}"
    );
    assert!(
        err.contains("prepare.json: not a histoshard prepare.json"),
        "{err}"
    );

    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let line = fails_with(&["inspect", s(&empty)], &[s(&empty), "manifest.parquet"]);
    assert!(!line.contains(" DIR "), "{line}");
}

/// Every float option, from a flag or a config file, is checked for being a
/// number in range before any work, naming the flag or key.
#[test]
fn non_finite_floats_are_refused_before_any_work() {
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 4, 26);
    let out = t.path().join("out");
    for flag in [
        "--scale",
        "--min-tissue",
        "--min-gland-fraction",
        "--shard-size-mb",
        "--val-fraction",
        "--test-fraction",
    ] {
        for bad in ["nan", "inf", "-inf"] {
            fails_with(&prepare_args(&input, &out, &[flag, bad]), &[flag]);
        }
    }
    for (key, value, needle) in [
        ("scale", "nan", "--scale"),
        ("val-fraction", "inf", "--val-fraction"),
        ("shard-size-mb", "inf", "--shard-size-mb"),
        ("min-tissue", "-nan", "--min-tissue"),
    ] {
        let cfg = t.path().join("bad.toml");
        std::fs::write(&cfg, format!("{key} = {value}\n")).unwrap();
        fails_with(
            &prepare_args(&input, &out, &["--config", s(&cfg)]),
            &[needle],
        );
    }
    for (key, value) in [("hed_sigma", "nan"), ("max_rotate_degrees", "inf")] {
        let cfg = t.path().join("aug.toml");
        std::fs::write(&cfg, format!("[augmentation]\n{key} = {value}\n")).unwrap();
        fails_with(
            &prepare_args(&input, &out, &["--config", s(&cfg), "--augment", "1"]),
            &["[augmentation]", key],
        );
    }
    assert!(!out.exists(), "a refused run created its output folder");
}

/// The folder of a FIFO named as an output does not matter either: a FIFO in
/// place of a temporary name is not opened for writing (no hang).
#[test]
fn a_fifo_at_a_temporary_name_does_not_hang() {
    let t = tempfile::tempdir().unwrap();
    let input = synth(t.path(), 4, 27);
    let data = t.path().join("data");
    ok(&prepare_args(&input, &data, &[]));
    let digests: PathBuf = t.path().join("d.csv");
    mkfifo(&t.path().join(".d.csv.tmp"));
    fails_with(
        &["verify", s(&data), "--pixel-digests", s(&digests)],
        &[".d.csv.tmp", "FIFO"],
    );
    assert!(!digests.exists());
}
