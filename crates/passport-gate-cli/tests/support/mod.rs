//! Test support for the binary's tests: the fixture passports and the HTTP client of
//! passport-gate's tests/support (one copy, included from there), and `serve`, which runs
//! the real `passport-gate` binary (only this package's tests can: they alone have
//! `CARGO_BIN_EXE_passport-gate`).
#![allow(dead_code)]

#[path = "../../../passport-gate/tests/support/mod.rs"]
mod layer;

pub use layer::*;

pub mod serve;
