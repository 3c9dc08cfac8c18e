//! What the gateway runs with: plain runtime values, checked and converted from the
//! configuration file by the configuration module.

use http::Method;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
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

/// What happens to a request on a route that is not guarded (`routes.unguarded`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unguarded {
    /// Forward it: without a passport check in optional mode, through the passport
    /// layer with `agent_envelope.mode = "required"`.
    #[default]
    Forward,
    /// Answer 404 `route_not_allowed`.
    Refuse,
}

/// A configuration checked and converted into what the gateway runs with: plain
/// runtime values, and the files that had to be read to check them (the server
/// certificate, the principal allowlist), read once. `gateway::build` turns it into the
/// running objects.
#[derive(Clone, Debug)]
pub struct Settings {
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
    /// What a route in neither list gets.
    pub unguarded: Unguarded,
    /// `server.header_read_timeout_ms`.
    pub header_read_timeout: Duration,
    /// The largest request head, both listeners.
    pub max_header_bytes: usize,
    /// Connections the proxy listener keeps open at once.
    pub max_connections: usize,
    /// Connections the admin listener keeps open at once.
    pub admin_max_connections: usize,
    /// `server.max_auth_failures_per_connection` (0: off).
    pub max_auth_failures_per_connection: u32,
    /// `server.auth_failure_penalty_seconds` (zero: off).
    pub auth_failure_penalty: Duration,
    /// `server.worker_threads` (0: one per CPU core).
    pub worker_threads: usize,
    /// HTTP/2 bounds towards clients.
    pub http2: Http2,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Upstream response-head timeout.
    pub response_timeout: Duration,
    /// The upstream connection pool and protocol.
    pub upstream_pool: UpstreamPool,
    /// `server.client_stall_timeout_ms`.
    pub client_stall_timeout: Duration,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// The response header carrying the upstream's inference id.
    pub inference_id_header: Option<http::HeaderName>,
    /// The verifier's settings (`[agent_envelope]`, checked).
    pub envelope: passport_core::config::Config,
    /// Requester binding, when on.
    pub binding: Option<BindingSettings>,
    /// The principal allowlist, its file already read once.
    pub principals: Option<passport_gate::principals::AllowlistSettings>,
    /// The identity headers for the upstream.
    pub identity: crate::gateway::identity::IdentityHeaders,
    /// Where access log lines go.
    pub access_log: AccessLogTarget,
    /// Access log lines waiting for a slow sink, at most.
    pub access_log_buffer_lines: usize,
    /// Access log lines about refused requests per second, at most (0: no limit).
    pub access_log_refusals_per_second: u64,
    /// The upstream probe behind `/readyz`.
    pub upstream_probe: Option<UpstreamProbe>,
    /// The TLS client configuration for the upstream and the chain node, built once.
    pub upstream_tls: rustls::ClientConfig,
    /// The proxy listener's TLS, when on: the certificate, loaded once.
    pub server_tls: Option<ServerTls>,
    /// The shared Redis, when configured.
    pub redis: Option<RedisSettings>,
    /// The replay store.
    pub replay: ReplaySettings,
    /// Where revocations come from, when anywhere.
    pub revocation: Option<RevocationSettings>,
    /// Where attribution events go.
    pub attribution: AttributionSettings,
    /// The credential the gateway adds towards the upstream, when one is configured.
    pub upstream_auth: Option<UpstreamAuth>,
    /// OpenTelemetry traces, when on (never without the `otel` feature).
    #[cfg_attr(not(feature = "otel"), allow(dead_code))]
    pub tracing: Option<TracingSettings>,
    /// Limits per principal and per agent, when configured.
    pub limits: Option<LimitSettings>,
}

/// The limits, checked: the defaults with the policy file's overrides as read at
/// startup.
#[derive(Clone, Debug)]
pub struct LimitSettings {
    /// Defaults and overrides.
    pub policy: passport_gate::limits::PolicyTable,
    /// The policy file and how often it is checked.
    pub policy_file: Option<(PathBuf, Duration)>,
    /// Counters in the shared Redis (otherwise in the process).
    pub redis: bool,
    /// Admit while Redis is unreachable.
    pub fail_open: bool,
    /// Start with a Redis that can forget counters.
    pub accept_forgetful_redis: bool,
    /// `limits.max_tokens_cap`.
    pub max_tokens_cap: u64,
    /// `limits.default_max_tokens`.
    pub default_max_tokens: u64,
}

impl Settings {
    /// Whether every route that is neither public nor refused needs a passport.
    pub fn passport_required(&self) -> bool {
        self.envelope.enabled && self.envelope.mode == passport_core::config::Mode::Required
    }
}

/// HTTP/2 towards clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Http2 {
    /// Streams open at once on one connection.
    pub max_concurrent_streams: u32,
    /// Keep-alive ping interval; `None` sends none.
    pub keep_alive_interval: Option<Duration>,
    /// Time to answer a ping.
    pub keep_alive_timeout: Duration,
}

/// The upstream client's protocol and pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpstreamPool {
    /// HTTP/2 to the upstream.
    pub http2: bool,
    /// Idle connections kept, at most.
    pub max_idle: usize,
    /// An idle connection is closed after this long.
    pub idle_timeout: Duration,
    /// Requests with the upstream at once, at most.
    pub max_requests: usize,
}

/// The proxy listener's TLS.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// The certificate pair, and the client CA and CRL when clients must present a
    /// certificate, loaded (and checked) once.
    pub listener: Arc<crate::transport::tls::ListenerTls>,
    /// How often the files are checked for a change.
    pub reload: Duration,
}

/// Where grants come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrantSourceSettings {
    /// A chain node's REST (LCD) base URL, checked.
    ChainNode(String),
    /// A fixed list (test mode).
    Static(Vec<passport_gate::grants::Grant>),
}

/// Requester binding.
#[derive(Clone, Debug)]
pub struct BindingSettings {
    /// Where the requester comes from.
    pub requester: passport_gate::layer::RequesterSource,
    /// Where grants (and, with a chain node, accounts) come from.
    pub grants: GrantSourceSettings,
    /// The grant and account caches' bounds.
    pub cache: passport_gate::grants::GrantCacheSettings,
    /// The message type a grant must be for.
    pub msg_type_url: String,
    /// Gonka native requester signatures, when required (needs a chain node).
    pub requester_signature: Option<passport_gate::grants::RequesterSignatureSettings>,
}

/// The shared Redis.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    /// The client settings.
    pub client: passport_gate::redis_client::RedisConfig,
    /// The prefix of every key.
    pub key_prefix: String,
}

/// Where replay records are kept (with `agent_envelope.replay_protection`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayBackend {
    /// In memory, forgotten at a restart: passports issued before the start (plus the
    /// clock skew) are refused.
    Memory,
    /// In `replay.redb` in this existing directory.
    Disk(PathBuf),
    /// In the shared Redis.
    Redis,
}

/// The replay store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplaySettings {
    /// Where records are kept.
    pub backend: ReplayBackend,
    /// Start with a Redis that can forget records.
    pub accept_forgetful_redis: bool,
    /// Accept requests while the store is unreachable.
    pub fail_open: bool,
    /// Which answers release a record.
    pub release: passport_gate::replay::ReleasePolicy,
}

/// Where revocations come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationSettings {
    /// A revocation file and how often it is checked.
    pub file: Option<(PathBuf, Duration)>,
    /// How often the Redis set `<key_prefix>revoked` is polled, when it is.
    pub redis_poll: Option<Duration>,
    /// Poll a Redis that can forget the set.
    pub accept_forgetful_redis: bool,
}

/// Where attribution events go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttributionSettings {
    /// JSON lines to standard output.
    pub stdout: bool,
    /// JSON lines appended to a file.
    pub file: Option<PathBuf>,
    /// The hash-chained audit file.
    pub audit_file: Option<AuditFile>,
    /// A Redis stream: its key and bounds.
    pub redis_stream: Option<(String, passport_gate::attribution::StreamBounds)>,
    /// Refusal events a second, at most (0: no limit).
    pub refusals_per_second: u64,
    /// How long the queue may take to drain at shutdown.
    pub drain_deadline: Duration,
}

/// The audit file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditFile {
    /// Its path.
    pub path: PathBuf,
    /// When it is synced.
    pub fsync: passport_gate::attribution::FsyncPolicy,
    /// Rotation size, when it rotates.
    pub max_bytes: Option<u64>,
    /// Refusals are recorded too.
    pub refusals: bool,
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
    /// The statuses that count as ready; empty: every status below 500.
    pub ok_statuses: Vec<u16>,
    /// Time between probes.
    pub interval: Duration,
    /// Time one probe may take.
    pub timeout: Duration,
}

/// `[upstream_auth]`, checked: the credential the gateway itself presents to the upstream.
#[derive(Clone, Debug)]
pub struct UpstreamAuth {
    /// What is sent.
    pub kind: UpstreamAuthKind,
    /// Public routes get the credential too.
    pub public_routes: bool,
}

/// `upstream_auth.kind`, with what each kind needs.
#[derive(Clone, Debug)]
pub enum UpstreamAuthKind {
    /// A static secret in one header: `Authorization: Bearer <token>` (`bearer`) or
    /// `<name>: <token>` (`header`).
    Header {
        /// The header.
        name: http::HeaderName,
        /// The value, read once at startup.
        value: crate::gateway::upstream_auth::Secret,
        /// `Bearer ` before the token.
        bearer: bool,
        /// Where the token comes from.
        source: TokenSource,
    },
    /// A Gonka native request signature by the operator's key (`gonka`).
    Gonka {
        /// The operator's key, loaded once.
        signer: passport_core::gonka::NativeSigner,
        /// The node's address, signed into every request.
        transfer_address: String,
        /// The largest body held to be signed on a public route
        /// (`agent_envelope.max_body_size`).
        max_body_size: usize,
    },
}

/// Where a static upstream token comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// A file, reloaded when it changes, checked this often.
    File(PathBuf, Duration),
    /// An environment variable, read once.
    Env(String),
}

/// `[tracing]`, checked: where spans go and how many.
#[cfg_attr(not(feature = "otel"), allow(dead_code))]
#[derive(Clone, Debug)]
pub struct TracingSettings {
    /// The collector's OTLP/HTTP traces URL.
    pub endpoint: http::Uri,
    /// What an `https` collector is verified against, built once.
    pub tls: rustls::ClientConfig,
    /// The share of traces recorded (0.0 to 1.0), decided from the trace id.
    pub sample_ratio: f64,
    /// `service.name`.
    pub service_name: String,
    /// Time one export request may take.
    pub export_timeout: Duration,
    /// Time between exports when fewer than a batch wait.
    pub export_interval: Duration,
    /// Spans waiting for export, at most.
    pub max_queue_spans: usize,
    /// Spans in one export request, at most.
    pub max_export_batch_spans: usize,
}
