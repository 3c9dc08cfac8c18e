//! The tower layer: off by default, a no-op without a passport, full enforcement with
//! one.
//!
//! ```no_run
//! use axum::{routing::post, Router};
//! use passport_gate::{Config, PassportLayer, VerifiedAgent};
//!
//! async fn chat(agent: VerifiedAgent) -> String {
//!     format!("{} acting for {}", agent.agent_id(), agent.principal_address())
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let layer = PassportLayer::new(Config::for_chain("gonka-mainnet"))
//!     .map_err(|errors| format!("bad configuration: {errors:?}"))?;
//! let app = Router::new()
//!     .route("/v1/chat/completions", post(chat))
//!     .layer(layer);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! The layer reads a request body only when passport headers are present; otherwise
//! the body is forwarded frame by frame as it arrives. With a passport, the body is read
//! up to `max_body_size` within `body_read_timeout_ms`, verified, and forwarded byte for
//! byte.
//!
//! Like tower's own timeout middleware, the layer runs on Tokio and needs its timers for
//! requests that carry a passport (body read and grant query deadlines): build the
//! runtime with `enable_all()` (as `#[tokio::main]` does).

mod body;
mod future;
#[allow(clippy::module_inception)]
mod layer;
mod service;

pub use body::{PassportBody, ResponseBody};
pub use future::ResponseFuture;
pub use layer::{Binding, BoundRequester, PassportLayer, PassportLayerBuilder, RequesterSource};
pub use service::PassportService;
