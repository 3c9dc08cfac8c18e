//! What the gateway runs with: plain runtime values, checked and converted from the
//! configuration file by `crate::config`.

use http::Method;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A route: a method and a path in normal form, without a trailing slash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The method.
    pub method: Method,
    /// The path, as [`crate::gateway::path::route_key`] gives it.
    pub path: String,
}

/// The upstream, split for building request URIs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    /// `host:port`.
    pub authority: http::uri::Authority,
    /// A path prefix, without a trailing slash (often empty).
    pub base_path: String,
}

/// A configuration checked and converted into what the gateway runs with.
///
/// Still carries the file as given (`raw`), which `run` reads for the settings not yet
/// converted here; the goal is a struct of plain runtime values only.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The file as given (with overrides applied).
    pub raw: crate::config::file::GatewayConfig,
    /// The proxy address.
    pub listen: SocketAddr,
    /// The admin address.
    pub admin_listen: SocketAddr,
    /// The upstream.
    pub upstream: Upstream,
    /// Guarded routes.
    pub routes: Vec<Route>,
    /// Public routes (no passport even in required mode).
    pub public: Vec<Route>,
    /// `server.header_read_timeout_ms`.
    pub header_read_timeout: Duration,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Upstream response-head timeout.
    pub response_timeout: Duration,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// Where the binding takes the requester from, when binding is on.
    pub requester: Option<passport_gate::layer::RequesterSource>,
    /// The principal allowlist, its file already read once.
    pub principals: Option<passport_gate::principals::AllowlistSettings>,
    /// The identity headers for the upstream.
    pub identity: crate::gateway::identity::IdentityHeaders,
    /// Where access log lines go.
    pub access_log: AccessLogTarget,
    /// The upstream probe behind `/readyz`.
    pub upstream_probe: Option<UpstreamProbe>,
    /// The TLS client configuration for the upstream and the chain node, built once.
    pub upstream_tls: rustls::ClientConfig,
    /// The Redis client settings, built once, when `[redis]` is present.
    pub redis: Option<passport_gate::redis_client::RedisConfig>,
}

/// `server.access_log`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// No access log (default).
    Off,
    /// Standard output.
    Stdout,
    /// Appended to a file.
    File(PathBuf),
}

/// `[server.upstream_probe]`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamProbe {
    /// The probe's full URI on the upstream.
    pub uri: http::Uri,
    /// Time between probes.
    pub interval: Duration,
    /// Time one probe may take.
    pub timeout: Duration,
}
