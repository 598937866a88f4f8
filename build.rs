//! Compiles `schemas/example.proto` with prost (through protox, so no `protoc` is
//! needed) and turns `schemas/features.json` into Rust constants, so the record
//! format is written down once and the Rust writer and reader cannot drift from it.
//!
//! With the `tch` feature it also gives every binary (tests included) an rpath
//! to LibTorch's `lib/`, so `histoshard` runs without `LD_LIBRARY_PATH`.

use std::{env, fmt::Write as _, fs, path::PathBuf};

#[derive(serde::Deserialize)]
struct Spec {
    version: u32,
    features: Vec<FeatureSpec>,
}

#[derive(serde::Deserialize)]
struct FeatureSpec {
    key: String,
    #[serde(rename = "type")]
    kind: String,
    description: String,
}

fn main() {
    println!("cargo:rerun-if-changed=schemas/example.proto");
    println!("cargo:rerun-if-changed=schemas/features.json");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));

    let fds =
        protox::compile(["example.proto"], ["schemas"]).expect("schemas/example.proto compiles");
    let mut config = prost_build::Config::new();
    // BTreeMap keeps the feature map sorted, so encoding is byte-deterministic.
    config.btree_map(["."]);
    config
        .compile_fds(fds)
        .expect("prost generates the Example types");

    let spec: Spec = serde_json::from_str(
        &fs::read_to_string("schemas/features.json").expect("schemas/features.json is readable"),
    )
    .expect("schemas/features.json is valid");
    let mut code = String::new();
    writeln!(
        code,
        "/// Version of `schemas/features.json` this build was made from."
    )
    .unwrap();
    writeln!(code, "pub const SCHEMA_VERSION: u32 = {};", spec.version).unwrap();
    let mut table = String::from(
        "/// Every key of a record, in `features.json` order.\npub const FEATURES: &[FeatureSpec] = &[\n",
    );
    for f in &spec.features {
        let ident = f.key.to_uppercase().replace(['/', '-'], "_");
        let kind = match f.kind.as_str() {
            "bytes" => "FeatureKind::Bytes",
            "int64" => "FeatureKind::Int64",
            "float" => "FeatureKind::Float",
            other => panic!("features.json: unknown type {other:?} for {}", f.key),
        };
        writeln!(
            code,
            "/// {}\npub const {ident}: &str = {:?};",
            f.description, f.key
        )
        .unwrap();
        writeln!(table, "    FeatureSpec {{ key: {ident}, kind: {kind} }},").unwrap();
    }
    table.push_str("];\n");
    code.push_str(&table);
    fs::write(out.join("features.rs"), code).expect("OUT_DIR is writable");

    if env::var_os("CARGO_FEATURE_TCH").is_some() {
        libtorch_rpath();
    }
}

/// Where torch-sys found LibTorch: `$LIBTORCH`, or with
/// `LIBTORCH_USE_PYTORCH=1` the `torch` package of the active Python (found
/// the way torch-sys finds it).
fn libtorch_rpath() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    println!("cargo:rerun-if-env-changed=VIRTUAL_ENV");
    println!("cargo:rerun-if-env-changed=PATH");
    let root = match env::var_os("LIBTORCH") {
        Some(dir) => Some(PathBuf::from(dir)),
        None if env::var_os("LIBTORCH_USE_PYTORCH").is_some() => {
            let python = if env::var_os("VIRTUAL_ENV").is_some() {
                "python"
            } else {
                "python3"
            };
            std::process::Command::new(python)
                .args([
                    "-c",
                    "import os, torch; print(os.path.dirname(torch.__file__))",
                ])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        }
        None => None,
    };
    match root.map(|r| r.join("lib")).filter(|l| l.is_dir()) {
        Some(lib) => println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display()),
        None => println!(
            "cargo:warning=LibTorch's lib/ not found: set LIBTORCH or LIBTORCH_USE_PYTORCH=1 \
             (scripts/setup_libtorch.sh), or LD_LIBRARY_PATH at run time"
        ),
    }
}
