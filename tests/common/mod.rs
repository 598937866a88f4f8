//! Helpers for tests that run the `histoshard` binary as a user does.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output},
};

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_histoshard"));
    c.arg("--quiet");
    c
}

/// Runs histoshard with `args`; returns (success, stdout, stderr).
pub fn run(args: &[&str]) -> (bool, String, String) {
    run_env(args, &[])
}

pub fn run_env<S: AsRef<std::ffi::OsStr>>(
    args: &[S],
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let mut c = bin();
    c.args(args);
    outcome(&mut c, env)
}

/// Runs `c` with `env` added; returns (success, stdout, stderr).
pub fn outcome(c: &mut Command, env: &[(&str, &str)]) -> (bool, String, String) {
    for (k, v) in env {
        c.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().expect("binary runs");
    (
        status.success(),
        String::from_utf8_lossy(&stdout).into(),
        String::from_utf8_lossy(&stderr).into(),
    )
}

pub fn ok(args: &[&str]) -> String {
    let (success, out, err) = run(args);
    assert!(success, "histoshard {args:?} failed:\n{err}");
    out
}

/// Asserts failure with exactly one `error:` line mentioning every `needle`, and no panic.
pub fn fails_with(args: &[&str], needles: &[&str]) -> String {
    let (success, _, err) = run(args);
    assert!(!success, "histoshard {args:?} should fail");
    one_error_line(&err, needles)
}

/// Asserts that `err` (a failed run's stderr) holds exactly one `error:`
/// line, mentioning every `needle`, and no panic; returns the line.
pub fn one_error_line(err: &str, needles: &[&str]) -> String {
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "panic: {err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "one error line expected, got:\n{err}");
    for n in needles {
        assert!(lines[0].contains(n), "error line lacks {n:?}: {}", lines[0]);
    }
    lines[0].to_string()
}

/// A synthetic GlaS-layout set of `n` images.
pub fn synth(dir: &Path, n: usize, seed: u64) -> PathBuf {
    let out = dir.join(format!("glas-{n}-{seed}"));
    ok(&[
        "synth",
        "--output",
        out.to_str().unwrap(),
        "--images",
        &n.to_string(),
        "--seed",
        &seed.to_string(),
    ]);
    out
}

/// `per_class` 64×64 toy images per class in a folder per class
/// (`in/<class>/<class>_<i>.png`), prepared into 32-px patches (`data/`):
/// the smallest real `prepare` output a model trains on. Returns (input, data).
pub fn prepared_toy(dir: &Path, per_class: usize, seed: u64) -> (PathBuf, PathBuf) {
    prepared_toy_patches(dir, per_class, seed, 32)
}

/// As [`prepared_toy`] with `patch`-px patches of `2 × patch`-px images, in
/// `in-<patch>/` and `data-<patch>/` (`in/` and `data/` for 32 px), for
/// networks that need larger inputs (Inception-v3: 75 px).
pub fn prepared_toy_patches(
    dir: &Path,
    per_class: usize,
    seed: u64,
    patch: u32,
) -> (PathBuf, PathBuf) {
    use rand::SeedableRng;
    let suffix = if patch == 32 {
        String::new()
    } else {
        format!("-{patch}")
    };
    let input = dir.join(format!("in{suffix}"));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for (label, class) in ["benign", "malignant"].iter().enumerate() {
        std::fs::create_dir_all(input.join(class)).unwrap();
        for i in 0..per_class {
            let img = histoshard::train::toy::toy_patch(label as i64, 2 * patch, &mut rng);
            img.save(input.join(class).join(format!("{class}_{i}.png")))
                .unwrap();
        }
    }
    let data = dir.join(format!("data{suffix}"));
    let patch = patch.to_string();
    ok(&[
        "prepare",
        "-i",
        s(&input),
        "-o",
        s(&data),
        "--patch-size",
        &patch,
        "--min-tissue",
        "0",
    ]);
    (input, data)
}

/// `metrics.csv` without its timing columns, which no two runs share.
pub fn untimed(run: &Path) -> Vec<Vec<String>> {
    let mut r = csv::Reader::from_path(run.join("metrics.csv")).unwrap();
    let header = r.headers().unwrap().clone();
    r.records()
        .map(|row| {
            row.unwrap()
                .iter()
                .zip(&header)
                .filter(|(_, h)| !["seconds", "images_per_second"].contains(h))
                .map(|(v, _)| v.to_string())
                .collect()
        })
        .collect()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every regular file in `dir` (not hidden) with its bytes.
pub fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// The files that must be byte-identical between equivalent runs: all but
/// `prepare-timings.json`, which says how long the run took.
pub fn deterministic_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut f = files(dir);
    f.remove("prepare-timings.json");
    f
}

/// `prepare-timings.json` of a prepared folder.
pub fn timings(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("prepare-timings.json")).unwrap())
        .unwrap()
}

pub fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("prepare.json")).unwrap()).unwrap()
}

/// Copies a folder (flat).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Serves `files` (name → bytes) over HTTP on localhost, for `--weights URL`
/// without the network; returns the base URL and a count of requests served.
pub fn serve(
    files: Vec<(String, Vec<u8>)>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut reader = BufReader::new(&stream);
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            // Skip the headers.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let body = files
                .iter()
                .find(|(name, _)| path == format!("/{name}"))
                .map(|(_, bytes)| bytes.as_slice());
            let mut out = &stream;
            let _ = match body {
                Some(b) => write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    b.len()
                )
                .and_then(|()| out.write_all(b)),
                None => write!(
                    out,
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                ),
            };
        }
    });
    (base, hits)
}

/// Checks `files` (name → bytes) against the SHA-256 digests recorded in
/// `tests/data/<recorded>`; with `HISTOSHARD_BLESS=1` records them first.
/// `what` names the output in the failure message.
pub fn check_digests(files: &BTreeMap<String, Vec<u8>>, recorded: &str, what: &str) {
    compare_digests(files, &test_data(recorded), what);
}

/// `tests/data/<name>`.
fn test_data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// [`check_digests`] for outputs of floating-point training, recorded per
/// vector instruction set and CPU: flex's kernels pick theirs at run time
/// (macerator's reductions, gemm's micro-kernels), and the width decides how
/// a sum is grouped, so the same seed gives other last bits on an AVX2
/// machine than on an AVX-512 one; within a level, the CPU model can matter
/// too (the transfer-learning run differs between an AMD EPYC and an Intel
/// Xeon, docs/BURN_NOTES.md). The record is `tests/data/<stem>.<level>.txt`,
/// one set of digests under a `# <CPU>` line (`/proc/cpuinfo`'s model name)
/// for each machine that recorded it. On a machine with no set, the
/// comparison is skipped, saying so, and the rest of the calling test still
/// runs; `HISTOSHARD_BLESS=1` records (or replaces) this machine's set.
pub fn check_cpu_digests(files: &BTreeMap<String, Vec<u8>>, stem: &str, what: &str) {
    let level = simd_level();
    let recorded = test_data(&format!("{stem}.{level}.txt"));
    let cpu = cpu_name();
    let mut sets = std::fs::read_to_string(&recorded)
        .map(|record| digest_sets(&record))
        .unwrap_or_default();
    let got = digest_lines(files);
    if std::env::var_os("HISTOSHARD_BLESS").is_some() {
        sets.retain(|(label, _)| *label != cpu);
        sets.push((cpu.clone(), got.clone()));
        let record: String = sets
            .iter()
            .map(|(label, digests)| format!("# {label}\n{digests}"))
            .collect();
        std::fs::write(&recorded, record).unwrap();
    }
    let Some((_, want)) = sets.iter().find(|(label, _)| *label == cpu) else {
        eprintln!(
            "{what}: no digests recorded for {cpu} at {level} in {}; not compared \
             (HISTOSHARD_BLESS=1 records them)",
            recorded.display()
        );
        return;
    };
    assert_same(&got, want, &format!("{what} on {cpu}"), &recorded);
}

/// This machine's CPU, as `/proc/cpuinfo` names it (`model name`).
fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// A record's `(CPU, digests)` sets: each `# <CPU>` line and the lines up
/// to the next.
fn digest_sets(record: &str) -> Vec<(String, String)> {
    let mut sets: Vec<(String, String)> = Vec::new();
    for line in record.lines() {
        match (line.strip_prefix("# "), sets.last_mut()) {
            (Some(label), _) => sets.push((label.to_string(), String::new())),
            (None, Some((_, digests))) => digests.push_str(&format!("{line}\n")),
            (None, None) => panic!("a digest line before any `# <CPU>` line: {line}"),
        }
    }
    sets
}

/// `<sha256>  <name>` a line, for each of `files`.
fn digest_lines(files: &BTreeMap<String, Vec<u8>>) -> String {
    use sha2::{Digest, Sha256};
    files
        .iter()
        .map(|(name, bytes)| format!("{}  {name}\n", hex::encode(Sha256::digest(bytes))))
        .collect()
}

/// The x86-64 level (`x86-64-v4`: AVX-512, `x86-64-v3`: AVX2 and FMA)
/// this CPU runs flex's dispatched kernels at, or `other`.
pub fn simd_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f")
            && has!("avx512bw")
            && has!("avx512cd")
            && has!("avx512dq")
            && has!("avx512vl")
        {
            return "x86-64-v4";
        }
        if has!("avx2") && has!("fma") {
            return "x86-64-v3";
        }
    }
    "other"
}

fn compare_digests(files: &BTreeMap<String, Vec<u8>>, recorded: &Path, what: &str) {
    let got = digest_lines(files);
    if std::env::var_os("HISTOSHARD_BLESS").is_some() {
        std::fs::write(recorded, &got).unwrap();
    }
    let want = std::fs::read_to_string(recorded).unwrap();
    assert_same(&got, &want, what, recorded);
}

/// Fails, showing both, unless the digest lines `got` are those `recorded` holds.
fn assert_same(got: &str, want: &str, what: &str, recorded: &Path) {
    assert!(
        got == want,
        "{what} changed:\n--- recorded ({})\n{want}--- now\n{got}",
        recorded.display()
    );
}

/// What a fixed-seed run exports, for byte comparisons: `model.safetensors`,
/// `model.json` without the tool's version, and `metrics.csv` without its
/// timing columns. Exports `run`'s best.bpk into `run/export`.
pub fn exported_outputs(run: &Path) -> BTreeMap<String, Vec<u8>> {
    let out = run.join("export");
    ok(&["export", "--run", s(run), "--output", s(&out)]);
    let json: String = std::fs::read_to_string(out.join("model.json"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("\"histoshard\":"))
        .map(|l| format!("{l}\n"))
        .collect();
    let metrics: String = untimed(run)
        .iter()
        .map(|row| row.join(",") + "\n")
        .collect();
    BTreeMap::from([
        (
            "model.safetensors".to_string(),
            std::fs::read(out.join("model.safetensors")).unwrap(),
        ),
        ("model.json (normalised)".to_string(), json.into_bytes()),
        ("metrics.csv (untimed)".to_string(), metrics.into_bytes()),
    ])
}
