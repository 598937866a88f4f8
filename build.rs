//! Compiles `schemas/example.proto` with prost (through protox, so no `protoc` is
//! needed) and turns `schemas/features.json` into Rust constants, so the record
//! format is written down once and the Rust writer and reader cannot drift from it.

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
}
