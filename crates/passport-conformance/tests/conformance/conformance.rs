//! The committed conformance vectors pass against the production layer, they are what
//! the committed generator writes, and they reach every code the layer answers.

use passport_conformance::{generate, run_paths, Vector};
use passport_gate::Rejection;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../conformance/vectors")
}

fn committed() -> Vec<Vector> {
    let mut files: Vec<_> = std::fs::read_dir(vectors_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

#[test]
fn every_committed_vector_passes() {
    let report = run_paths(&[vectors_dir()]);
    assert!(report.invalid.is_empty(), "{:?}", report.invalid);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(report.passed >= 80, "only {} vectors ran", report.passed);
}

#[test]
fn committed_vectors_are_exactly_what_the_generator_writes() {
    let mut generated = generate();
    generated.sort_by(|a, b| a.name.cmp(&b.name));
    let mut on_disk = committed();
    on_disk.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        on_disk.len(),
        generated.len(),
        "run `passport-gate conformance --generate conformance/vectors`"
    );
    for (d, g) in on_disk.iter().zip(&generated) {
        assert_eq!(d, g, "vector {} is stale", g.name);
    }
}

#[test]
fn vector_names_are_unique() {
    let names: BTreeSet<_> = generate().into_iter().map(|v| v.name).collect();
    assert_eq!(names.len(), generate().len());
}

#[test]
fn every_rejection_code_has_a_vector() {
    let seen: BTreeSet<String> = committed()
        .iter()
        .flat_map(|v| v.steps.iter().filter_map(|s| s.expect.code.clone()))
        .collect();
    for r in Rejection::ALL {
        assert!(seen.contains(r.code()), "no vector expects {}", r.code());
    }
}

#[test]
fn a_wrong_expectation_makes_the_runner_fail() {
    let mut v = generate()
        .into_iter()
        .find(|v| v.name == "model-not-allowed")
        .unwrap();
    v.steps[0].expect.code = Some("allowed_models_empty".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = rt.block_on(passport_conformance::run_vector(&v)).unwrap();
    assert!(matches!(
        outcome,
        passport_conformance::VectorOutcome::Failed(_)
    ));
}

#[test]
fn every_difference_from_the_reference_has_its_vector() {
    // Issue 10's classes of input, each named after the rule it pins (matched, or
    // documented in spec section 11).
    let names: BTreeSet<String> = generate().into_iter().map(|v| v.name).collect();
    for (difference, name) in [
        ("U01", "agent-sig-length-checked-at-the-agent-step"),
        ("U02", "principal-pubkey-not-on-curve"),
        ("U02", "principal-pubkey-not-on-curve-address-derived"),
        ("U03", "agent-pubkey-not-on-curve"),
        ("U03", "agent-pubkey-non-canonical"),
        ("U03", "agent-pubkey-not-on-curve-principal-sig-first"),
        ("U04", "version-missing-or-empty"),
        ("U04", "audience-missing-or-empty"),
        ("U04", "chain-id-missing-or-empty"),
        ("U04", "principal-pubkey-type-missing-or-empty"),
        ("U04", "agent-pubkey-type-missing-or-empty"),
        ("U05", "not-before-empty"),
        ("U06", "timestamp-one-spelling"),
        ("U07", "timestamp-escaped"),
        ("U08", "issued-at-zero-instant"),
        ("U09", "envelope-invalid-utf8"),
        ("U10", "body-model-invalid-utf8"),
        ("U11", "allowed-models-null-entry"),
        ("U12", "body-nested-deeper-than-10000"),
        ("U13", "uri-signed-as-sent"),
        ("U14", "header-values-empty"),
        ("U15", "binding-requester-repeated"),
        ("U16", "binding-grant-expires-while-cached"),
        ("U17", "binding-grant-expiring-now-authorizes"),
        ("U18", "binding-grant-msg-type-without-leading-slash"),
        ("fixed clock", "expired-half-second-after-expiry"),
    ] {
        assert!(names.contains(name), "{difference}: no vector {name}");
    }
}
