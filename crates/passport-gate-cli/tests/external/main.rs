//! The `passport-gate` binary's tests that need tools from outside the Rust toolchain,
//! one binary: redis-server and redis-cli (`redis`), node, chromium and the npm packages
//! of tests/wallet (`wallet_browser`), the Python virtualenv of tests/python with the
//! openai SDK (`openai_sdk`, whose replica tests need redis-server too) and
//! opentelemetry-proto (`otel`). `.ci/run` installs them all.
//! Without them each test is skipped, said at once on standard error and again in one
//! line at the end of the run (`zz_skipped_tests`), except under CI (`CI=true`), where it
//! fails (skip.rs).

#[path = "../support/mod.rs"]
mod support;

mod openai_sdk;
mod otel;
mod redis;
mod skip;
mod wallet_browser;

/// Ends the run with one line naming every skipped test and what it needs. Named to run
/// last: the harness starts tests in name order (`zz` after every module's tests).
#[test]
fn zz_skipped_tests() {
    let skipped = skip::print_summary();
    assert!(
        !(skip::under_ci() && skipped),
        "under CI no test may be skipped"
    );
}
