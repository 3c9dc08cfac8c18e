//! The `passport-gate` binary's tests that need tools from outside the Rust toolchain,
//! one binary: redis-server and redis-cli (`redis`), node, chromium and the npm packages
//! of tests/wallet (`wallet_browser`), the Python virtualenv with the openai SDK of
//! tests/python (`openai_sdk`). `.ci/run` installs them all. Without them each test is
//! skipped with a message, except under `CI=true`, where it fails.

#[path = "../support/mod.rs"]
mod support;

mod openai_sdk;
mod redis;
mod wallet_browser;
