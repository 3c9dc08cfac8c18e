//! Replays the committed fuzzing corpora (fuzz/corpus/*) under `cargo test`, with the
//! same properties the fuzz targets check, so every input the fuzzer kept, including
//! any that once crashed, is a regression test on every CI run.

use passport_core::time::{FixedClock, Timestamp};
use passport_core::{Config, Verifier};
use std::path::PathBuf;
use std::sync::Arc;

#[path = "../../../../fuzz/harness.rs"]
mod harness;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

#[test]
fn envelope_parse_corpus() {
    let parsed = corpus("envelope_parse")
        .iter()
        .filter(|data| harness::envelope_parse(data))
        .count();
    assert!(parsed > 0, "the corpus holds well-formed envelopes too");
}

#[test]
fn verifier_corpus() {
    let verifier = Verifier::with_clock(
        // Unbounded cold verifications: every input reaches the parser, never the shed.
        &Config {
            cold_verifications_per_second: 0,
            ..Config::for_chain("gonka-mainnet")
        },
        Arc::new(FixedClock::new(Timestamp::from_unix_seconds(1_779_364_800))),
    )
    .unwrap();
    for data in corpus("verifier") {
        harness::verifier(&verifier, &data);
    }
}

#[test]
fn vector_reader_corpus() {
    for data in corpus("vector_reader") {
        let _ = serde_json::from_slice::<passport_conformance::Vector>(&data);
    }
}
