//! The `passport-gate` binary's tests that need tools from outside the Rust toolchain,
//! one binary: redis-server and redis-cli (`redis`), node, chromium and the npm packages
//! of tests/wallet (`wallet_browser`), the Python virtualenv of tests/python with the
//! openai SDK (`openai_sdk`) and opentelemetry-proto (`otel`). `.ci/run` installs them all. Without them each test is
//! skipped with a message, except under `CI=true`, where it fails.

#[path = "../support/mod.rs"]
mod support;

mod openai_sdk;
mod otel;
mod redis;
mod wallet_browser;
