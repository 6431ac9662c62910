//! Replays the fuzz regression inputs (`fuzz/regressions/<target>/*`: crashers the fuzzer found and
//! hand-made edge cases) through the fuzz target bodies of `fuzz/targets.rs`, under plain
//! `cargo test -p atp-wasm` on stable Rust (no libFuzzer, no nightly). Also feeds the bodies the
//! protocol's own test data (reference signing vectors, CPython float table, RFC 8785 vectors),
//! and checks that the pipeline seed really gets through the whole pipeline. See fuzz/README.md.
#![cfg(not(target_arch = "wasm32"))]

#[path = "../../fuzz/targets.rs"]
mod targets;

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// A fuzz target body.
type Body = fn(&[u8]);

/// The five targets, as named by `fuzz/fuzz_targets/*.rs`.
const TARGETS: [(&str, Body); 5] = [
    ("message_parse", targets::message_parse),
    ("canonical", targets::canonical),
    ("records", targets::records),
    ("doh", targets::doh),
    ("pipeline", targets::pipeline),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn data(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(file)
}

/// Runs `body` on `input`, naming the input if it panics.
fn replay(name: &str, what: &str, body: Body, input: &[u8]) {
    if std::panic::catch_unwind(|| body(input)).is_err() {
        panic!("fuzz target {name} panicked on {what}");
    }
}

/// The regression inputs of one target, sorted by name.
fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = repo().join("fuzz/regressions").join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_regression_input_passes_its_target() {
    for (name, body) in TARGETS {
        let files = inputs(name);
        assert!(files.len() >= 3, "fuzz/regressions/{name} holds only {} inputs", files.len());
        for file in files {
            let input = fs::read(&file).unwrap();
            replay(name, &file.display().to_string(), body, &input);
        }
    }
}

/// Regression inputs are seeds for every target: each is replayed through all five bodies.
#[test]
fn every_regression_input_passes_every_target() {
    for (dir, _) in TARGETS {
        for file in inputs(dir) {
            let input = fs::read(&file).unwrap();
            for (name, body) in TARGETS {
                replay(name, &file.display().to_string(), body, &input);
            }
        }
    }
}

#[test]
fn the_pipeline_seed_is_accepted_and_is_current() {
    let seed = targets::signed_seed();
    let dedup = atp_wasm::env::MemoryDedup::new();
    let accepted = targets::verify(&seed, &dedup).expect("the signed seed passes the whole pipeline");
    assert_eq!(accepted.sender.to_string(), "zed@gamma.test");
    let file = repo().join("fuzz/regressions/pipeline/valid-signed.json");
    if std::env::var_os("ATP_FUZZ_BLESS").is_some() {
        fs::write(&file, &seed).unwrap();
    }
    assert_eq!(
        fs::read(&file).unwrap(),
        seed,
        "{} is stale; rewrite it with ATP_FUZZ_BLESS=1 cargo test -p atp-wasm --test fuzz_regressions",
        file.display()
    );
    targets::pipeline(&seed);
    // One changed byte of signed content is refused.
    let tampered = String::from_utf8(seed).unwrap().replace("\"hi\"", "\"ho\"");
    let e = targets::verify(tampered.as_bytes(), &dedup).expect_err("a tampered message is refused");
    assert_eq!(e.code.as_str(), "550 5.7.28");
}

#[test]
fn reference_signing_vectors_pass_message_canonical_and_pipeline() {
    let v: Value = serde_json::from_str(&fs::read_to_string(data("reference-signing.json")).unwrap()).unwrap();
    let vectors = v["vectors"].as_array().unwrap();
    assert!(!vectors.is_empty());
    for vec in vectors {
        let name = vec["name"].as_str().unwrap();
        let message = vec["message"].as_str().unwrap().as_bytes();
        replay("message_parse", name, targets::message_parse, message);
        replay("pipeline", name, targets::pipeline, message);
        replay("canonical", name, targets::canonical, message);
        replay("canonical", name, targets::canonical, vec["canonical"].as_str().unwrap().as_bytes());
    }
    let atk = v["key"]["atk_record"].as_str().unwrap();
    replay("records", "reference ATK record", targets::records, atk.as_bytes());
}

#[test]
fn float_table_and_jcs_vectors_pass_canonical() {
    let floats = fs::read_to_string(data("python-floats.tsv")).unwrap();
    let mut n = 0;
    for line in floats.lines().filter(|l| !l.starts_with('#')) {
        let (token, repr) = line.split_once('\t').unwrap();
        replay("canonical", token, targets::canonical, token.as_bytes());
        replay("canonical", repr, targets::canonical, format!("[{token},{{\"k\":{repr}}}]").as_bytes());
        n += 1;
    }
    assert!(n > 100, "only {n} floats");
    for line in fs::read_to_string(data("jcs/doubles.tsv")).unwrap().lines().filter(|l| !l.starts_with('#')) {
        let token = line.split('\t').nth(1).unwrap();
        replay("canonical", token, targets::canonical, token.as_bytes());
    }
    let mut files = 0;
    for entry in fs::read_dir(data("jcs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            replay("canonical", &path.display().to_string(), targets::canonical, &fs::read(&path).unwrap());
            files += 1;
        }
    }
    assert!(files >= 10, "only {files} JCS vectors");
}
