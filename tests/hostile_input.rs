//! Hostile input, second round (docs/RELIABILITY.md): deep nesting, special
//! files where files belong (FIFOs, devices, sockets, folders), files without
//! end or too large, the output folder read back as input, symlink loops, a
//! scale past the pixel budget, absurd thread counts, and runs that keep
//! nothing. Each must end in one clear line naming the file, a non-zero exit
//! (not a crash), quickly, with nothing written that looks complete.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// What one run of the binary did.
struct Ran {
    /// `None` when killed by a signal (a crash: 134 is SIGABRT).
    code: Option<i32>,
    stderr: String,
    seconds: f64,
}

/// Runs histoshard with `args` (without `--quiet`, so warnings show), killing
/// it and failing the test when it runs longer than `limit_s`: a hang is the
/// fault several of these tests look for.
fn run_limited(args: &[&str], limit_s: u64) -> Ran {
    let t = tempfile::tempdir().unwrap();
    let err_path = t.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_histoshard"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(limit_s) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "histoshard {args:?} still running after {limit_s} s (a hang):\n{}",
                fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ran {
        code: status.code(),
        stderr: fs::read_to_string(&err_path).unwrap(),
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Asserts a clean failure within `limit_s`: exit code 1 (no crash, no
/// signal), exactly one `error:` line holding every needle; returns that line.
fn fails_within(args: &[&str], limit_s: u64, needles: &[&str]) -> String {
    let r = run_limited(args, limit_s);
    assert_eq!(
        r.code,
        Some(1),
        "histoshard {args:?} should fail with exit code 1:\n{}",
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"), "panic: {}", r.stderr);
    let lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(lines.len(), 1, "one error line expected:\n{}", r.stderr);
    for n in needles {
        assert!(lines[0].contains(n), "error line lacks {n:?}: {}", lines[0]);
    }
    lines[0].to_string()
}

/// A 64×64 image with some texture, so tissue detection has something to see.
fn write_img(path: &Path, seed: u8) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_fn(64, 64, |x, y| {
        let v = ((x * 7 + y * 13) as u8).wrapping_add(seed.wrapping_mul(31));
        image::Rgb([180u8.wrapping_add(v / 4), 90 + v / 3, 160])
    })
    .save(path)
    .unwrap();
}

/// `in/benign/b{0,1,2}.png`, `in/malignant/m{0,1,2}.png`.
fn folder_set(dir: &Path) -> PathBuf {
    let input = dir.join("in");
    for i in 0..3 {
        write_img(&input.join(format!("benign/b{i}.png")), i);
        write_img(&input.join(format!("malignant/m{i}.png")), 10 + i);
    }
    input
}

/// `prepare` with 32-px patches and every patch kept, plus `extra`.
fn prepare_args<'a>(input: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "prepare",
        "-i",
        s(input),
        "-o",
        s(out),
        "--patch-size",
        "32",
        "--min-tissue",
        "0",
    ];
    a.extend_from_slice(extra);
    a
}

/// Nothing in `out` that could pass for a data set.
fn nothing_complete(out: &Path) {
    assert!(!out.join("manifest.parquet").exists());
    if out.exists() {
        let shards = files(out)
            .into_keys()
            .filter(|k| k.contains(".tfrecord"))
            .count();
        assert_eq!(shards, 0, "no shard may remain");
    }
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

fn symlink(target: impl AsRef<Path>, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

/// A labelImg annotation of `image` with one box.
fn voc_xml(image: &str) -> String {
    format!(
        "<annotation><filename>{image}</filename><object><name>gland</name>\
         <bndbox><xmin>0</xmin><ymin>0</ymin><xmax>64</xmax><ymax>64</ymax></bndbox>\
         </object></annotation>"
    )
}

/// The hostile tester's file: ~28 KB of `<a>` nested 4,000 deep inside an annotation.
fn deep_xml(levels: usize) -> String {
    format!(
        "<annotation>{}{}</annotation>",
        "<a>".repeat(levels),
        "</a>".repeat(levels)
    )
}

#[test]
fn xml_nested_thousands_deep_is_refused_not_a_crash() {
    let t = tempfile::tempdir().unwrap();
    let input = t.path().join("voc");
    write_img(&input.join("a.png"), 1);
    fs::write(input.join("a.xml"), voc_xml("a.png")).unwrap();
    write_img(&input.join("b.png"), 2);
    let deep = deep_xml(4000);
    assert!(deep.len() > 27_000, "the reported file was 28 KB");
    fs::write(input.join("b.xml"), &deep).unwrap();
    let out = t.path().join("out");
    // Before: SIGABRT (exit 134) from a stack overflow in a rayon worker.
    fails_within(
        &prepare_args(&input, &out, &[]),
        60,
        &["b.xml", "line 1", "nested more than 64 deep"],
    );
    nothing_complete(&out);

    // 100,000 attributes on one element (1 MB) took the parser 18 s (it
    // compares each with the element's earlier ones); 16 MiB would take hours.
    let attrs: Vec<String> = (0..100_000).map(|i| format!("a{i}=\"\"")).collect();
    fs::write(
        input.join("b.xml"),
        format!("<annotation {}/>", attrs.join(" ")),
    )
    .unwrap();
    let r = run_limited(&prepare_args(&input, &out, &[]), 60);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("b.xml: line 1: an element with more than 64 attributes"),
        "{}",
        r.stderr
    );
    assert!(r.seconds < 10.0, "{} s", r.seconds);

    // 64 levels are parsed (and then found not to be an annotation's
    // layout); 65 are refused. A closing tag, a comment, CDATA, a processing
    // instruction and a quoted `>` do not confuse the count.
    let ok64 = format!(
        "<annotation><!-- <x><x> --><?pi <x>?><![CDATA[<x><x>]]>{}<a q='>'/>{}</annotation>",
        "<a>".repeat(63),
        "</a>".repeat(63)
    );
    fs::write(input.join("b.xml"), &ok64).unwrap();
    let r = run_limited(&prepare_args(&input, &out, &[]), 60);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stderr.contains("b.xml: no <object>"), "{}", r.stderr);
}

#[test]
fn deep_nesting_in_config_and_json_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    let input = folder_set(t.path());
    let out = t.path().join("out");
    let config = t.path().join("deep.toml");
    for text in [
        format!(
            "augment = {}1{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
        format!("{} = 1\n", vec!["a"; 100_000].join(".")),
        format!("x = {}{}\n", "{a = ".repeat(50_000), "}".repeat(50_000)),
    ] {
        fs::write(&config, text).unwrap();
        let mut args = vec!["prepare", "--config", s(&config)];
        args.extend(["-i", s(&input), "-o", s(&out)]);
        fails_within(&args, 60, &["deep.toml"]);
    }
    nothing_complete(&out);

    // prepare.json read back from a folder that has a manifest: a nesting
    // bomb is not followed down (serde_json stops at 128 levels); the file is
    // then not histoshard's, so the folder's files are someone else's.
    ok(&prepare_args(&input, &out, &[]));
    fs::write(
        out.join("prepare.json"),
        format!("{}{}", "[".repeat(200_000), "]".repeat(200_000)),
    )
    .unwrap();
    fails_within(
        &prepare_args(&input, &out, &[]),
        60,
        &["did not write", "prepare.json"],
    );
}

#[test]
fn special_files_where_files_belong_are_refused_by_name() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let out = root.join("out");

    // VOC: an annotation that is a FIFO (hung for ever), or linked to
    // /dev/zero (grew to 6.9 GB in 10 s).
    let voc = root.join("voc");
    write_img(&voc.join("a.png"), 1);
    fs::write(voc.join("a.xml"), voc_xml("a.png")).unwrap();
    write_img(&voc.join("b.png"), 2);
    mkfifo(&voc.join("b.xml"));
    fails_within(
        &prepare_args(&voc, &out, &[]),
        60,
        &["b.xml: not a regular file (FIFO)"],
    );
    fs::remove_file(voc.join("b.xml")).unwrap();
    symlink("/dev/zero", &voc.join("b.xml"));
    fails_within(
        &prepare_args(&voc, &out, &[]),
        60,
        &["b.xml: not a regular file (character device)"],
    );
    // ... or whose <filename> is a folder or a FIFO.
    fs::remove_file(voc.join("b.xml")).unwrap();
    fs::create_dir(voc.join("dir.png")).unwrap();
    fs::write(voc.join("b.xml"), voc_xml("dir.png")).unwrap();
    fails_within(
        &prepare_args(&voc, &out, &[]),
        60,
        &["b.xml", "\"dir.png\" is not a regular file (folder)"],
    );
    mkfifo(&voc.join("pipe.png"));
    fs::write(voc.join("b.xml"), voc_xml("pipe.png")).unwrap();
    fails_within(
        &prepare_args(&voc, &out, &[]),
        60,
        &["b.xml", "\"pipe.png\" is not a regular file (FIFO)"],
    );

    // A folder per class: an image that is a FIFO, a link to /dev/zero, a
    // socket, a dangling link.
    let folders = folder_set(&root.join("f"));
    let bad = folders.join("benign/bad.png");
    mkfifo(&bad);
    fails_within(
        &prepare_args(&folders, &out, &[]),
        60,
        &["bad.png: not a regular file (FIFO)"],
    );
    fs::remove_file(&bad).unwrap();
    symlink("/dev/zero", &bad);
    fails_within(
        &prepare_args(&folders, &out, &[]),
        60,
        &["bad.png: not a regular file (character device)"],
    );
    fs::remove_file(&bad).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(&bad).unwrap();
    fails_within(
        &prepare_args(&folders, &out, &[]),
        60,
        &["bad.png: not a regular file (socket)"],
    );
    fs::remove_file(&bad).unwrap();
    symlink("missing.png", &bad);
    fails_within(
        &prepare_args(&folders, &out, &[]),
        60,
        &["bad.png: a dangling symlink"],
    );
    fs::remove_file(&bad).unwrap();

    // GlaS: a FIFO mask, a FIFO or folder Grade.csv (was "not found"), a FIFO
    // image.
    let glas = synth(root, 4, 5);
    let mask = fs::read_dir(&glas)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("_anno.bmp"))
        .unwrap();
    let saved = fs::read(&mask).unwrap();
    fs::remove_file(&mask).unwrap();
    mkfifo(&mask);
    let name = mask.file_name().unwrap().to_string_lossy().into_owned();
    fails_within(
        &["prepare", "-i", s(&glas), "-o", s(&out)],
        60,
        &[&format!("{name}: not a regular file (FIFO)")],
    );
    fs::remove_file(&mask).unwrap();
    fs::write(&mask, saved).unwrap();
    let image = PathBuf::from(mask.to_string_lossy().replace("_anno.bmp", ".bmp"));
    let saved = fs::read(&image).unwrap();
    fs::remove_file(&image).unwrap();
    mkfifo(&image);
    fails_within(
        &["prepare", "-i", s(&glas), "-o", s(&out)],
        60,
        &["not a regular file (FIFO)"],
    );
    fs::remove_file(&image).unwrap();
    fs::create_dir(&image).unwrap();
    let image_name = image.file_name().unwrap().to_string_lossy().into_owned();
    fails_within(
        &["prepare", "-i", s(&glas), "-o", s(&out)],
        60,
        &[&format!("{image_name}: not a regular file (folder)")],
    );
    fs::remove_dir(&image).unwrap();
    fs::write(&image, saved).unwrap();
    let grade = glas.join("Grade.csv");
    let saved = fs::read(&grade).unwrap();
    fs::remove_file(&grade).unwrap();
    mkfifo(&grade);
    fails_within(
        &["prepare", "-i", s(&glas), "-o", s(&out)],
        60,
        &["Grade.csv: not a regular file (FIFO)"],
    );
    fs::remove_file(&grade).unwrap();
    fs::create_dir(&grade).unwrap();
    fails_within(
        &[
            "prepare",
            "-i",
            s(&glas),
            "-o",
            s(&out),
            "--layout",
            "warwick",
        ],
        60,
        &["Grade.csv: not a regular file (folder)"],
    );
    fs::remove_dir(&grade).unwrap();
    fs::write(&grade, saved).unwrap();

    // A label CSV given as the input, and a --config, that are FIFOs or /dev/zero.
    let csv = root.join("labels.csv");
    mkfifo(&csv);
    fails_within(
        &["prepare", "-i", s(&csv), "-o", s(&out)],
        60,
        &["labels.csv: not a regular file (FIFO)"],
    );
    let config = root.join("c.toml");
    mkfifo(&config);
    fails_within(
        &[
            "prepare",
            "--config",
            s(&config),
            "-i",
            s(&glas),
            "-o",
            s(&out),
        ],
        60,
        &["c.toml: not a regular file (FIFO)"],
    );
    fails_within(
        &[
            "prepare",
            "--config",
            "/dev/zero",
            "-i",
            s(&glas),
            "-o",
            s(&out),
        ],
        60,
        &["/dev/zero: not a regular file (character device)"],
    );
    fails_within(
        &[
            "prepare",
            "--config",
            s(root),
            "-i",
            s(&glas),
            "-o",
            s(&out),
        ],
        60,
        &["not a regular file (folder)"],
    );
    nothing_complete(&out);
}

#[test]
fn shards_and_manifest_that_are_fifos_are_refused_by_verify_inspect_and_train() {
    let t = tempfile::tempdir().unwrap();
    let input = folder_set(t.path());
    let out = t.path().join("out");
    ok(&prepare_args(&input, &out, &["--shards", "1"]));
    ok(&["verify", s(&out)]);

    let shard = out.join("train-00000-of-00001.tfrecord");
    let saved = fs::read(&shard).unwrap();
    fs::remove_file(&shard).unwrap();
    mkfifo(&shard);
    let r = run_limited(&["verify", s(&out)], 60);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("train-00000-of-00001.tfrecord: not a regular file (FIFO)"),
        "{}",
        r.stderr
    );
    fails_within(
        &["inspect", s(&out)],
        60,
        &["train-00000-of-00001.tfrecord: not a regular file (FIFO)"],
    );
    let run = t.path().join("run");
    let train = [
        "train",
        "--data",
        s(&out),
        "--model",
        "mlp",
        "--output",
        s(&run),
        "--epochs",
        "1",
        "--device",
        "cpu",
    ];
    if cfg!(feature = "train") {
        fails_within(
            &train,
            120,
            &["train-00000-of-00001.tfrecord: not a regular file (FIFO)"],
        );
    }
    fs::remove_file(&shard).unwrap();
    fs::write(&shard, saved).unwrap();

    let manifest = out.join("manifest.parquet");
    fs::remove_file(&manifest).unwrap();
    mkfifo(&manifest);
    let mut commands = vec![vec!["verify", s(&out)], vec!["inspect", s(&out)]];
    if cfg!(feature = "train") {
        commands.push(train.to_vec());
    }
    for args in commands {
        fails_within(&args, 120, &["manifest.parquet: not a regular file (FIFO)"]);
    }
}

#[test]
fn oversized_grade_csv_label_csv_and_config_are_refused_with_the_limit() {
    let t = tempfile::tempdir().unwrap();
    let glas = synth(t.path(), 4, 6);
    let out = t.path().join("out");
    // 300 MB of line ends took 2.8 GB; 17 MiB is enough to cross the limit.
    let mut grade = fs::read(glas.join("Grade.csv")).unwrap();
    grade.resize(grade.len() + (17 << 20), b'\n');
    fs::write(glas.join("Grade.csv"), grade).unwrap();
    fails_within(
        &["prepare", "-i", s(&glas), "-o", s(&out)],
        60,
        &["Grade.csv: more than 16 MiB, too large for a Grade.csv (limit 16 MiB)"],
    );

    let config = t.path().join("big.toml");
    fs::write(&config, "\n".repeat((1 << 20) + 1)).unwrap();
    fails_within(
        &[
            "prepare",
            "--config",
            s(&config),
            "-i",
            s(&glas),
            "-o",
            s(&out),
        ],
        60,
        &["big.toml: more than 1 MiB, too large for a config file (limit 1 MiB)"],
    );

    let csv = t.path().join("labels.csv");
    let mut text = b"filename,label\n".to_vec();
    text.resize(text.len() + (65 << 20), b'\n');
    fs::write(&csv, text).unwrap();
    fails_within(
        &["prepare", "-i", s(&csv), "-o", s(&out)],
        60,
        &["labels.csv: more than 64 MiB, too large for a label CSV (limit 64 MiB)"],
    );
    nothing_complete(&out);
}

#[test]
fn output_inside_the_input_is_never_read_back() {
    let t = tempfile::tempdir().unwrap();
    let input = folder_set(t.path());
    let out = input.join("out");
    let args = prepare_args(&input, &out, &[]);
    ok(&args);
    // `inspect` writes a contact sheet (a PNG) into the output folder; the
    // next prepare made a class "out" of it, even with --overwrite.
    ok(&["inspect", s(&out)]);
    assert!(out.join("contact_sheet.png").is_file());
    let first = deterministic_files(&out);
    let mut again = args.clone();
    again.push("--overwrite");
    ok(&again);
    let r = report(&out);
    assert_eq!(r["classes"], serde_json::json!(["benign", "malignant"]));
    assert_eq!(r["images"], 6);
    let mut second = deterministic_files(&out);
    second.remove("contact_sheet.png");
    let mut first = first;
    first.remove("contact_sheet.png");
    assert_eq!(first, second, "the same data set as the first run");

    // A symlink into the output folder is not read either.
    symlink("../out", &input.join("benign/outlink"));
    ok(&again);
    assert_eq!(report(&out)["images"], 6);
    fs::remove_file(input.join("benign/outlink")).unwrap();

    // The VOC and CSV layouts too: an annotation or a CSV row naming a file
    // in the output folder is refused.
    let voc = t.path().join("voc");
    write_img(&voc.join("a.png"), 1);
    fs::write(voc.join("a.xml"), voc_xml("a.png")).unwrap();
    let voc_out = voc.join("shards");
    ok(&prepare_args(&voc, &voc_out, &[]));
    ok(&["inspect", s(&voc_out)]);
    fs::write(voc.join("b.xml"), voc_xml("shards/contact_sheet.png")).unwrap();
    fails_within(
        &prepare_args(&voc, &voc_out, &["--overwrite"]),
        60,
        &["b.xml", "lies in the output folder"],
    );

    let csv_dir = t.path().join("csv");
    write_img(&csv_dir.join("a.png"), 1);
    write_img(&csv_dir.join("b.png"), 2);
    fs::write(
        csv_dir.join("labels.csv"),
        "filename,label\na.png,x\nb.png,y\n",
    )
    .unwrap();
    let csv_out = csv_dir.join("shards");
    ok(&prepare_args(&csv_dir, &csv_out, &[]));
    assert!(csv_out.join("manifest.csv").is_file());
    ok(&prepare_args(&csv_dir, &csv_out, &["--overwrite"]));
    fs::write(
        csv_dir.join("labels.csv"),
        "filename,label\na.png,x\nb.png,y\nshards/contact_sheet.png,y\n",
    )
    .unwrap();
    ok(&["inspect", s(&csv_out)]);
    fails_within(
        &prepare_args(&csv_dir, &csv_out, &["--overwrite"]),
        60,
        &["labels.csv", "line 4", "lies in the output folder"],
    );
}

#[test]
fn output_equal_to_the_input_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let input = folder_set(t.path());
    fails_within(
        &prepare_args(&input, &input, &[]),
        60,
        &["the output folder is the input folder"],
    );
    // Also when spelled another way.
    let dotted = input.join("benign/..");
    fails_within(
        &prepare_args(&input, &dotted, &[]),
        60,
        &["the output folder is the input folder"],
    );
    nothing_complete(&input);
    // A class folder as the output: never read, so the class would vanish.
    let line = fails_within(
        &prepare_args(&input, &input.join("benign"), &[]),
        60,
        &["holds input images", "benign/b0.png"],
    );
    assert!(line.contains("choose a new or empty folder"), "{line}");
    nothing_complete(&input.join("benign"));
}

#[test]
fn symlink_loops_are_not_followed_and_one_file_under_two_classes_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let input = folder_set(t.path());
    let out = t.path().join("out");
    // `benign/loop -> ..` labelled the malignant images benign too.
    symlink("..", &input.join("benign/loop"));
    symlink(".", &input.join("malignant/self"));
    symlink(".", &input.join("again"));
    ok(&prepare_args(&input, &out, &[]));
    let r = report(&out);
    assert_eq!(r["images"], 6, "{r}");
    assert_eq!(r["classes"], serde_json::json!(["benign", "malignant"]));
    let skipped = r["skipped"].to_string();
    for l in ["benign/loop", "malignant/self", "again"] {
        assert!(skipped.contains(l), "{l} not reported: {skipped}");
    }
    assert!(skipped.contains("a loop"), "{skipped}");

    // A linked folder or file puts one image under two classes: refused,
    // naming both.
    fs::remove_file(input.join("benign/loop")).unwrap();
    symlink("../malignant", &input.join("benign/more"));
    fails_within(
        &prepare_args(&input, &out, &["--overwrite"]),
        60,
        &[
            "the same file as",
            "m0.png",
            "benign/more/m0.png",
            "in classes",
        ],
    );
    fs::remove_file(input.join("benign/more")).unwrap();
    symlink("../malignant/m1.png", &input.join("benign/copy.png"));
    fails_within(
        &prepare_args(&input, &out, &["--overwrite"]),
        60,
        &["copy.png", "the same file as", "malignant/m1.png"],
    );
}

#[test]
fn scale_past_the_pixel_budget_is_refused_from_the_header() {
    let t = tempfile::tempdir().unwrap();
    let input = t.path().join("in");
    // 2000×2000 uniform: a ~16 KB PNG, 4 MP, well within the 100 MP limit;
    // at --scale 8 it is 16000×16000 = 256 MP (it took 2.0 GB).
    for class in ["a", "b"] {
        let p = input.join(class).join("big.png");
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        image::RgbImage::from_pixel(2000, 2000, image::Rgb([200, 120, 180]))
            .save(&p)
            .unwrap();
        assert!(fs::metadata(&p).unwrap().len() < 64 << 10);
    }
    let out = t.path().join("out");
    let r = run_limited(&prepare_args(&input, &out, &["--scale", "8"]), 60);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "big.png: image is 2000×2000, 16000×16000 = 256 MP at scale 8, over the 100 MP limit (lower --scale, or raise --max-pixels)"
        ),
        "{}",
        r.stderr
    );
    assert!(r.seconds < 30.0, "refused from the header: {} s", r.seconds);
    nothing_complete(&out);
    // Within the budget it runs.
    ok(&prepare_args(&input, &out, &["--scale", "0.05"]));
}

#[test]
fn png_with_oversized_metadata_gets_the_right_advice() {
    let t = tempfile::tempdir().unwrap();
    let input = t.path().join("in");
    write_img(&input.join("a/ok.png"), 1);
    let p = input.join("b/meta.png");
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    // A 40 MiB text chunk: the header stage may use 64 MiB (the chunk's
    // buffer and its parsed text count), whatever --max-pixels says; "raise
    // --max-pixels" was the advice.
    let mut enc = png::Encoder::new(fs::File::create(&p).unwrap(), 8, 8);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().unwrap();
    let mut chunk = b"Comment\0".to_vec();
    chunk.resize(40 << 20, b'x');
    w.write_chunk(png::chunk::tEXt, &chunk).unwrap();
    w.write_image_data(&[0u8; 8 * 8 * 3]).unwrap();
    drop(w);
    let out = t.path().join("out");
    let line = fails_within(
        &prepare_args(&input, &out, &[]),
        60,
        &[
            "meta.png",
            "oversized metadata",
            "re-save the image without its metadata",
        ],
    );
    assert!(!line.contains("raise --max-pixels"), "{line}");
}

#[test]
fn absurd_thread_counts_are_capped() {
    let t = tempfile::tempdir().unwrap();
    let input = folder_set(t.path());
    let out = t.path().join("out");
    let mut args = vec!["--threads", "10000"];
    args.extend(prepare_args(&input, &out, &[]));
    let r = run_limited(&args, 120);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("--threads 10000 is more than this machine can use"),
        "{}",
        r.stderr
    );
    ok(&["verify", s(&out)]);
    // The same in a config file.
    let config = t.path().join("c.toml");
    fs::write(&config, "threads = 10000\n").unwrap();
    let out2 = t.path().join("out2");
    let mut args = vec!["prepare", "--config", s(&config)];
    args.extend(prepare_args(&input, &out2, &[]).into_iter().skip(1));
    let r = run_limited(&args, 120);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stderr.contains("--threads 10000"), "{}", r.stderr);
    assert_eq!(deterministic_files(&out), deterministic_files(&out2));
}

#[test]
fn zero_patches_kept_fails_and_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let input = t.path().join("in");
    for class in ["a", "b"] {
        for i in 0..3 {
            let p = input.join(class).join(format!("white{i}.png"));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            image::RgbImage::from_pixel(64, 64, image::Rgb([255, 255, 255]))
                .save(&p)
                .unwrap();
        }
    }
    let out = t.path().join("out");
    let args = [
        "prepare",
        "-i",
        s(&input),
        "-o",
        s(&out),
        "--patch-size",
        "32",
    ];
    fails_within(
        &args,
        60,
        &[
            "no patches kept",
            "none of the 24 candidate patches in 6 image(s) passed --min-tissue 0.25",
            "nothing written",
        ],
    );
    assert!(!out.exists(), "the output folder is not even created");
}

#[test]
fn one_class_warns_and_records_it() {
    let t = tempfile::tempdir().unwrap();
    let input = t.path().join("in");
    for i in 0..3 {
        write_img(&input.join(format!("benign/b{i}.png")), i);
    }
    let out = t.path().join("out");
    let r = run_limited(&prepare_args(&input, &out, &[]), 60);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stderr.contains("only one class (\"benign\")"),
        "{}",
        r.stderr
    );
    let warnings = report(&out)["warnings"].to_string();
    assert!(warnings.contains("only one class"), "{warnings}");
}
