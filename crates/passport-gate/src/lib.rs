//! passport-gate: a tower layer that verifies signed agent request envelopes
//! (`aps-agent-envelope-v1`) in front of inference APIs, and the policies around it.
//!
//! [`PassportLayer`] runs the verifier of [`passport_core`] on every request that carries
//! a passport, then the operator's policies (replay, revocation, the principal allowlist,
//! x/authz grants), and hands the verified identity to the inner service as a
//! [`VerifiedAgent`] extension. Each accepted or refused request becomes an attribution
//! event. Parts that need heavy crates are features, all off by default:
//! - `axum`: [`VerifiedAgent`] as an axum extractor;
//! - `prometheus`: the layer's counters as Prometheus series;
//! - `redis`: replay records, revocations and the event stream in Redis;
//! - `lcd`: the chain-node client that looks up grants.
//!
//! ```
//! use passport_gate::{Config, PassportLayer};
//! let layer = PassportLayer::builder(Config::for_chain("gonka-mainnet")).build().unwrap();
//! # let _ = layer;
//! ```
#![forbid(unsafe_code)]

pub mod attribution;
pub mod client;
pub mod grants;
pub mod layer;
pub mod limits;
pub mod metrics;
pub mod principals;
pub mod problem;
#[cfg(feature = "redis")]
pub mod redis_client;
pub mod replay;
mod request_path;
pub mod revocation;
pub mod warn_limit;
pub mod watch;

pub use layer::{Binding, PassportLayer};

/// An error and its sources on one line, `outer: inner: innermost`: transport failures
/// (hyper, rustls, Redis) name their cause only in their sources.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(err) = next {
        out.push_str(": ");
        out.push_str(&err.to_string());
        next = err.source();
    }
    out
}
pub use passport_core::{Config, ConfigError, Mode, Rejection, VerifiedAgent, Verifier};
pub use request_path::RequestPath;
