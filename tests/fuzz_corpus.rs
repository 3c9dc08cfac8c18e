//! Replays the committed fuzzing corpora (fuzz/corpus/*) under `cargo test`, with the
//! same properties the fuzz targets check, so every input the fuzzer kept, including
//! any that once crashed, is a regression test on every CI run.

use passport_gate::envelope::Envelope;
use passport_gate::time::{FixedClock, Timestamp};
use passport_gate::verifier::PassportHeaders;
use passport_gate::{Config, Verifier};
use std::path::PathBuf;
use std::sync::Arc;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
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
    let mut parsed = 0;
    for data in corpus("envelope_parse") {
        if let Ok(e) = Envelope::parse(&data) {
            let again = Envelope::parse(e.jcs()).expect("the JCS form of a parsed envelope parses");
            assert_eq!(again.jcs(), e.jcs());
            assert_eq!(again.signing_document(), e.signing_document());
            parsed += 1;
        }
    }
    assert!(parsed > 0, "the corpus holds well-formed envelopes too");
}

#[test]
fn verifier_corpus() {
    let verifier = Verifier::with_clock(
        &Config::for_chain("gonka-mainnet"),
        Arc::new(FixedClock::new(Timestamp::from_unix_seconds(1_779_364_800))),
    )
    .unwrap();
    for data in corpus("verifier") {
        let mut parts = data.split(|b| *b == 0xff);
        let mut next = || parts.next().unwrap_or_default();
        let passport = String::from_utf8_lossy(next()).into_owned();
        let signature = String::from_utf8_lossy(next()).into_owned();
        let body = next().to_vec();
        let uri = String::from_utf8_lossy(next()).into_owned();
        let method = String::from_utf8_lossy(next()).into_owned();
        let judge = || {
            PassportHeaders::decode(&passport, &signature)
                .and_then(|h| verifier.verify_request(&h, &method, &uri, &body))
                .map(|a| {
                    (
                        a.agent_id().to_owned(),
                        a.envelope_sha256(),
                        a.body_sha256(),
                    )
                })
        };
        assert_eq!(
            judge(),
            judge(),
            "a cached verdict differs from a fresh one"
        );
    }
}

#[test]
fn vector_reader_corpus() {
    for data in corpus("vector_reader") {
        let _ = serde_json::from_slice::<passport_gate::conformance::Vector>(&data);
    }
}
