//! `passport-gate serve`: a reverse proxy that puts the passport layer in front of an
//! OpenAI-compatible upstream, with an admin listener and graceful shutdown.

pub mod access_log;
mod admin;
pub mod admission;
pub mod auth_failures;
mod build;
mod dispatch;
pub(crate) mod error;
pub mod identity;
pub(crate) mod listener;
pub mod metrics;
pub mod otel;
pub mod path;
pub mod penalty;
mod proxy;
mod routes;
mod run;
pub mod settings;
pub(crate) mod start_error;
pub mod upstream_auth;

pub use error::GatewayError;
pub use proxy::Proxy;
pub use run::{run, shutdown_signal, Bound};
pub use settings::Settings as Validated;
