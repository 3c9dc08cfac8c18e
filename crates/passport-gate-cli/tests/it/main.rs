//! The `passport-gate` binary's integration tests, one binary: each module runs the real
//! binary (`CARGO_BIN_EXE_passport-gate`) over loopback, with nothing but this machine
//! (the tests that need redis-server, chromium or the Python SDK are in tests/external).

#[path = "../support/mod.rs"]
mod support;

mod adversarial_gateway;
mod adversarial_layer;
mod adversarial_state;
mod audit_trail;
mod auth_failures;
mod cli;
mod cli_inputs;
mod cli_messages;
mod cold_admission;
mod gateway_e2e;
mod limits;
mod operators;
mod parity_gateway;
mod replay_retry;
mod replay_store;
mod request_tls;
mod requester;
mod tracing;
mod transport_bounds;
mod transports;
mod upstream_auth;
mod wallet_api;
