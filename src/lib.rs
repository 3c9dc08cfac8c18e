//! passport-gate: verification of signed agent request envelopes
//! (`aps-agent-envelope-v1`) for inference gateways.
//!
//! The verifier core ([`verifier`]) is transport-agnostic; the agent-builder tools
//! ([`mint`], [`keyfile`]) and the conformance suite ([`conformance`]) call the same core.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod crypto;
pub mod demo;
pub mod echo;
pub mod envelope;
pub mod gateway;
pub mod keyfile;
pub mod mint;
pub mod time;
pub mod verifier;

pub use config::{Config, ConfigError, Mode};
pub use verifier::{Rejection, VerifiedAgent, Verifier};
pub mod attribution;
pub mod client;
pub mod grants;
pub mod layer;
pub mod metrics;
pub mod principals;
pub mod problem;
pub mod redis_client;
pub mod replay;
pub mod revocation;
pub mod terminal;

pub use layer::{Binding, PassportLayer};
pub mod conformance;
pub mod wallet;
mod watch;
