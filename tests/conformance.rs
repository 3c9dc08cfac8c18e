//! The committed conformance vectors pass against the production layer, they are what
//! the committed generator writes, and they reach every code a vector can express.

use passport_gate::conformance::{generate, run_paths, Vector};
use passport_gate::Rejection;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conformance/vectors")
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
fn every_expressible_rejection_code_has_a_vector() {
    let seen: BTreeSet<String> = committed()
        .iter()
        .flat_map(|v| v.steps.iter().filter_map(|s| s.expect.code.clone()))
        .collect();
    // Not expressible in the shared format: a failing chain (the static grant source
    // cannot fail), `mode = required`, a body that breaks off or stalls mid-stream, and a
    // replay store that is down or full, and a principal over its replay quota (vectors
    // carry no quota setting). The HTTP, fault, Redis and adversarial tests cover those.
    let inexpressible = [
        Rejection::ChainQueryFailed,
        Rejection::PassportRequired,
        Rejection::BodyReadFailed,
        Rejection::BodyReadTimeout,
        Rejection::ReplayStoreUnavailable,
        Rejection::ReplayStoreFull,
        Rejection::ReplayQuotaExceeded,
    ];
    for r in Rejection::ALL {
        if !inexpressible.contains(&r) {
            assert!(seen.contains(r.code()), "no vector expects {}", r.code());
        }
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
    let outcome = rt
        .block_on(passport_gate::conformance::run_vector(&v))
        .unwrap();
    assert!(matches!(
        outcome,
        passport_gate::conformance::VectorOutcome::Failed(_)
    ));
}
