//! passport-core: the `aps-agent-envelope-v1` specification as code.
//!
//! Bytes and a clock in, a verdict out: the envelope ([`envelope`]) and its RFC 8785 form,
//! the keys and signatures ([`crypto`]), the verifier ([`verifier`], steps 2 to 11 of the
//! spec's verification order), and the agent-builder side ([`mint`], [`keyfile`],
//! [`inspect`]). It compiles no async runtime and no HTTP stack: the tower layer
//! (`passport-gate`), the gateway binary, the conformance runner and the Python and Node
//! bindings all call this crate, and none re-implements a check.
//!
//! ```
//! use passport_core::{Config, Verifier};
//! let verifier = Verifier::new(&Config {
//!     envelope_cache_capacity: 0,
//!     ..Config::for_chain("gonka-mainnet")
//! })
//! .unwrap();
//! assert_eq!(verifier.chain_id(), "gonka-mainnet");
//! ```
#![forbid(unsafe_code)]

pub mod config;
pub mod crypto;
pub mod envelope;
pub mod gonka;
pub mod inspect;
pub mod keyfile;
pub mod mint;
pub mod problem;
pub mod time;
pub mod verifier;

pub use config::{Config, ConfigError, Mode};
pub use envelope::Envelope;
pub use verifier::{Rejection, VerifiedAgent, Verifier};
