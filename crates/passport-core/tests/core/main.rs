//! passport-core's integration tests, one binary: RFC 8785 canonicalization (`jcs`), the
//! verifier's properties under arbitrary input (`properties`) and the SDK fixtures shared
//! with the language bindings (`sdk_fixtures`). Core only: no HTTP, no async runtime.

#[path = "../support/mod.rs"]
mod support;

mod jcs;
mod properties;
mod sdk_fixtures;
