//! The gateway's TOML configuration: `[server]`, `[agent_envelope]` (the reference's
//! block), `[routes]`, `[binding]`, `[principals]`, `[forward_identity]`,
//! `[upstream_auth]`, `[limits]`, `[attribution]` and `[tracing]`. See `passport-gate.example.toml`.

use crate::gateway::settings::Unguarded;
use passport_core::config::Config;
use passport_gate::grants::Grant;
use serde::Deserialize;
use std::path::PathBuf;

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Listeners, upstream and timeouts.
    #[serde(default)]
    pub server: ServerSection,
    /// The verifier (the reference's `agent_envelope` block plus our keys).
    #[serde(default)]
    pub agent_envelope: Config,
    /// Which routes need a passport check.
    #[serde(default)]
    pub routes: RoutesSection,
    /// Requester binding; absent means none.
    #[serde(default)]
    pub binding: Option<BindingSection>,
    /// Where attribution events go.
    #[serde(default)]
    pub attribution: AttributionSection,
    /// A Redis server shared by every replica; absent means none.
    #[serde(default)]
    pub redis: Option<RedisSection>,
    /// Where replay records are kept (with `agent_envelope.replay_protection = true`).
    #[serde(default)]
    pub replay: ReplaySection,
    /// Where revocations come from.
    #[serde(default)]
    pub revocation: RevocationSection,
    /// Which principals the gateway serves; absent means every principal.
    #[serde(default)]
    pub principals: Option<PrincipalsSection>,
    /// The verified identity as request headers for the upstream.
    #[serde(default)]
    pub forward_identity: ForwardIdentitySection,
    /// The gateway's own credential towards the upstream; absent means none.
    #[serde(default)]
    pub upstream_auth: Option<UpstreamAuthSection>,
    /// Limits per principal and per agent; absent means none.
    #[serde(default)]
    pub limits: Option<LimitsSection>,
    /// OpenTelemetry traces; off unless `otlp_endpoint` is set.
    #[serde(default)]
    pub tracing: TracingSection,
}

/// `[tracing]`: one span per request, exported with OTLP over HTTP/protobuf.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingSection {
    /// The collector's traces URL (`http://collector:4318/v1/traces`); empty: off.
    pub otlp_endpoint: String,
    /// The share of traces recorded, 0.0 to 1.0, decided from the trace id.
    pub sample_ratio: f64,
    /// `service.name` of the spans.
    pub service_name: String,
    /// Time one export request may take.
    pub export_timeout_ms: u64,
    /// Time between exports when fewer than a batch of spans wait.
    pub export_interval_ms: u64,
    /// Spans waiting for export, at most; beyond, spans are dropped and counted.
    pub max_queue_spans: u64,
    /// Spans in one export request, at most.
    pub max_export_batch_spans: u64,
}

// `sample_ratio` is checked to be within 0.0..=1.0 (never NaN once valid); the file's
// structs compare as a whole in tests.
impl Eq for TracingSection {}

impl Default for TracingSection {
    fn default() -> Self {
        TracingSection {
            otlp_endpoint: String::new(),
            sample_ratio: 1.0,
            service_name: "passport-gate".into(),
            export_timeout_ms: 10_000,
            export_interval_ms: 5_000,
            max_queue_spans: 2_048,
            max_export_batch_spans: 512,
        }
    }
}

/// `limits.store`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitStoreKind {
    /// In the process: each replica has its own budgets.
    #[default]
    Memory,
    /// In the `[redis]` server: one budget for every replica.
    Redis,
}

/// `[limits]`: requests per minute, requests in flight and tokens per window, for every
/// principal and every agent, with overrides in `policy_file`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// `memory` (default) or `redis` (needs `[redis]`).
    pub store: LimitStoreKind,
    /// A body whose `max_tokens` or `max_completion_tokens` is larger is refused.
    pub max_tokens_cap: u64,
    /// Reserved when a body names neither.
    pub default_max_tokens: u64,
    /// Per-principal and per-agent overrides, reloaded when the file changes.
    pub policy_file: Option<PathBuf>,
    /// How often `policy_file` is checked for changes.
    pub reload_ms: u64,
    /// When Redis is unreachable: admit (true) or refuse with 503 (false, default).
    pub fail_open: bool,
    /// Use a Redis that can silently forget counters (false, default).
    pub accept_forgetful_redis: bool,
    /// `[limits.principal]`: defaults for every principal.
    pub principal: passport_gate::limits::Quota,
    /// `[limits.agent]`: defaults for every agent.
    pub agent: passport_gate::limits::Quota,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            store: LimitStoreKind::Memory,
            max_tokens_cap: 4096,
            default_max_tokens: 1024,
            policy_file: None,
            reload_ms: 1_000,
            fail_open: false,
            accept_forgetful_redis: false,
            principal: Default::default(),
            agent: Default::default(),
        }
    }
}

/// `upstream_auth.kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamAuthKindName {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// `<name>: <token>`.
    Header,
    /// A Gonka native request signature by the operator's key.
    Gonka,
}

/// `[upstream_auth]`: the credential the gateway presents to the upstream. The secret is
/// never in this file: a token comes from `token_file` or `token_env`, a Gonka key from
/// `key_file`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamAuthSection {
    /// `bearer`, `header` or `gonka`.
    pub kind: UpstreamAuthKindName,
    /// The header, with `kind = "header"` (for example `api-key`).
    #[serde(default)]
    pub name: Option<String>,
    /// A file holding the token, reloaded when it changes.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the token, read once at startup.
    #[serde(default)]
    pub token_env: Option<String>,
    /// How often `token_file` is checked for changes.
    #[serde(default = "default_reload_ms")]
    pub reload_ms: u64,
    /// Requests on public routes get the credential too (false, default).
    #[serde(default)]
    pub public_routes: bool,
    /// With `gonka`: the operator's key file (`passport-gate keygen --principal`), readable
    /// by its owner only.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// With `gonka`: the node's account address, signed into every request.
    #[serde(default)]
    pub transfer_address: Option<String>,
    /// With `gonka`: the address prefix (default `agent_envelope.address_prefix`).
    #[serde(default)]
    pub prefix: Option<String>,
}

fn default_reload_ms() -> u64 {
    1_000
}

/// `[principals]`: the principal allowlist.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrincipalsSection {
    /// Principal addresses allowed (bech32 account addresses with the chain's prefix).
    pub allow: Vec<String>,
    /// A file of allowed principal addresses, one per line, reloaded when it changes.
    pub allow_file: Option<PathBuf>,
    /// How often the file is checked for changes.
    pub reload_ms: u64,
}

impl Default for PrincipalsSection {
    fn default() -> Self {
        PrincipalsSection {
            allow: Vec::new(),
            allow_file: None,
            reload_ms: 1_000,
        }
    }
}

/// `[forward_identity]`: the header names the verified identity is sent upstream in.
/// Client-sent headers with these names are always removed, whether or not `enabled`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardIdentitySection {
    /// Set the headers on accepted requests (true, default).
    pub enabled: bool,
    /// The passport's `agent_id`, percent-encoded (see the spec, section 7.4).
    pub agent_id: String,
    /// The passport's `principal_address`.
    pub principal_address: String,
    /// The passport's `beneficiary`, percent-encoded, when it has one.
    pub beneficiary: String,
    /// The passport id (64 hex digits).
    pub passport_id: String,
    /// The body's `model`, percent-encoded.
    pub model: String,
    /// The bound requester, with requester binding on.
    pub requester_address: String,
}

impl Default for ForwardIdentitySection {
    fn default() -> Self {
        ForwardIdentitySection {
            enabled: true,
            agent_id: "x-aps-agent-id".into(),
            principal_address: "x-aps-principal-address".into(),
            beneficiary: "x-aps-beneficiary".into(),
            passport_id: "x-aps-passport-id".into(),
            model: "x-aps-model".into(),
            requester_address: "x-aps-requester-address".into(),
        }
    }
}

/// `[server.upstream_probe]`: how `/readyz` learns the upstream's health.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamProbeSection {
    /// The path asked with `GET` (under the upstream's base path).
    pub path: String,
    /// How often the upstream is asked.
    pub interval_ms: u64,
    /// How long one probe may take.
    pub timeout_ms: u64,
}

impl Default for UpstreamProbeSection {
    fn default() -> Self {
        UpstreamProbeSection {
            path: "/v1/models".into(),
            interval_ms: 5_000,
            timeout_ms: 2_000,
        }
    }
}

/// `[redis]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSection {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
    pub url: String,
    /// Prefix of every key passport-gate writes.
    pub key_prefix: String,
    /// Time allowed for each command, waiting for a connection included.
    pub timeout_ms: u64,
    // Transports (issue 11): TLS and Cluster.
    /// Redis Cluster: `url` (and `cluster_nodes`) are seed nodes, keys are routed by slot.
    pub cluster: bool,
    /// More seed nodes of the cluster (URLs like `url`).
    pub cluster_nodes: Vec<String>,
    /// PEM CA for `rediss://`; without it the platform's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for `rediss://` (mTLS).
    pub client_cert_file: Option<PathBuf>,
    /// Its PEM key.
    pub client_key_file: Option<PathBuf>,
}

impl Default for RedisSection {
    fn default() -> Self {
        RedisSection {
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: "aps:".into(),
            timeout_ms: 500,
            cluster: false,
            cluster_nodes: Vec::new(),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
        }
    }
}

/// Which replay store to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayStoreKind {
    /// On local disk in `replay.data_dir`, for one gateway: kept across restarts and
    /// crashes (bounded by `agent_envelope.replay_cache_capacity`).
    #[default]
    Disk,
    /// In-process, per replica, forgotten at every restart: passports issued before the
    /// start are refused until they expire (bounded by
    /// `agent_envelope.replay_cache_capacity`).
    Memory,
    /// Redis, shared by every replica.
    Redis,
}

/// `[replay]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplaySection {
    /// `disk` (default), `memory` or `redis`.
    pub store: ReplayStoreKind,
    /// The directory of the disk store (it must exist; the file `replay.redb` in it is
    /// created when absent, never replaced).
    pub data_dir: Option<PathBuf>,
    /// When Redis is unreachable: accept (true) or refuse with 503 (false, default).
    pub fail_open: bool,
    /// Use a Redis that can silently forget records (an eviction policy other than
    /// `noeviction`, no persistence, or `CONFIG` refused) instead of refusing to start;
    /// logged as a warning and counted on every connection (false, default).
    pub accept_forgetful_redis: bool,
    /// Release a request's record after an answer showing it was not processed (the
    /// upstream unreachable, or its 429 or 503), so that the same signed request may be
    /// retried (false, default: a retry is refused `request_replayed`).
    pub release_on_retryable: bool,
    /// Also release it after the gateway's own 503 `upstream_busy`, which anyone can
    /// cause by filling `server.max_upstream_requests` (false, default; needs
    /// `release_on_retryable`).
    pub release_on_upstream_busy: bool,
}

/// `[revocation]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RevocationSection {
    /// A revocation file, reloaded when it changes.
    pub file: Option<PathBuf>,
    /// How often the file is checked for changes.
    pub reload_ms: u64,
    /// Also poll the Redis set `<key_prefix>revoked`.
    pub redis: bool,
    /// How often the Redis set is polled.
    pub redis_poll_ms: u64,
    /// Poll a Redis that can silently forget the set (an eviction policy other than
    /// `noeviction`, no AOF, or `CONFIG` refused) instead of refusing it; logged as a
    /// warning and counted on every connection (false, default).
    pub accept_forgetful_redis: bool,
}

impl Default for RevocationSection {
    fn default() -> Self {
        RevocationSection {
            file: None,
            reload_ms: 1_000,
            redis: false,
            redis_poll_ms: 1_000,
            accept_forgetful_redis: false,
        }
    }
}

/// `[server]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// The proxy's address.
    pub listen: String,
    /// The admin address (`/metrics`, `/healthz`, `/readyz`).
    pub admin_listen: String,
    /// The OpenAI-compatible upstream, `http://host:port`.
    pub upstream: String,
    /// Time allowed to connect to the upstream.
    pub connect_timeout_ms: u64,
    /// Time allowed until the upstream's response head (streaming bodies may last longer).
    pub response_timeout_ms: u64,
    /// Time in-flight requests get to finish after SIGTERM or SIGINT.
    pub shutdown_grace_seconds: u64,
    /// Response header carrying the upstream's inference id, for attribution events.
    pub inference_id_header: Option<String>,
    /// Time a client gets to send a whole request head, counted from the moment the
    /// gateway waits for it: on a new connection and between keep-alive requests (so it
    /// is also the idle keep-alive timeout). Both listeners.
    pub header_read_timeout_ms: u64,
    /// Largest request head (request line and headers), in bytes; larger is 431.
    /// Both listeners.
    pub max_header_bytes: u64,
    /// Connections the proxy listener keeps open at once; beyond it a new connection is
    /// closed at once and counted.
    pub max_connections: u64,
    /// The same, for the admin listener.
    pub admin_max_connections: u64,
    /// Consecutive authentication failures (passport rejections a client causes: 400,
    /// 401, 403, 409, 431) one connection may have; the answer to the last one closes
    /// the connection (HTTP/1.1 `Connection: close`, HTTP/2 `GOAWAY`). An accepted
    /// request resets the count. 0: never closed for this.
    pub max_auth_failures_per_connection: u32,
    /// Seconds for which an address whose connection was closed for
    /// `max_auth_failures_per_connection` has its new proxy connections closed at
    /// accept. 0 (default): off. It shuts out every client sharing that address (one
    /// NAT, one proxy, one load balancer).
    pub auth_failure_penalty_seconds: u64,
    /// Threads that run the gateway's requests. 0 (default): one per CPU core. One
    /// thread spends the least CPU per proxied request (no wake-ups across threads) but
    /// verifies one passport at a time.
    pub worker_threads: u64,
    /// `"off"` (default), `"stdout"` or a file path: one JSON line per request.
    pub access_log: String,
    /// Access log lines waiting for a slow sink; beyond it lines are dropped and counted.
    pub access_log_buffer_lines: u64,
    /// Access log lines about refused requests (outcome `rejected` or `refused`) per
    /// second, at most; the rest are dropped and counted. 0: no limit.
    pub access_log_refusals_per_second: u64,
    /// Probe the upstream for `/readyz`; absent means no probe.
    pub upstream_probe: Option<UpstreamProbeSection>,
    /// The statuses of the upstream probe's answer that count as ready; empty (the
    /// default) counts every answer below 500.
    pub readiness_ok_statuses: Vec<u16>,
    // Transports (issue 11): TLS both ways and HTTP/2.
    /// PEM file of the private CA that signs the upstream's (and the `https://` chain
    /// node's) certificate; without it the webpki roots (Mozilla's list) are trusted.
    pub upstream_ca_file: Option<PathBuf>,
    /// PEM client certificate presented to an `https://` upstream and chain node (mTLS).
    pub upstream_client_cert_file: Option<PathBuf>,
    /// Its PEM private key.
    pub upstream_client_key_file: Option<PathBuf>,
    /// Speak HTTP/2 to the upstream (ALPN `h2` over TLS, prior knowledge over
    /// cleartext), for gRPC upstreams; HTTP/1.1 otherwise.
    pub upstream_http2: bool,
    /// Streams one HTTP/2 client connection may have open at once.
    pub http2_max_concurrent_streams: u32,
    /// Interval of HTTP/2 keep-alive pings to clients; 0 turns them off.
    pub http2_keep_alive_interval_ms: u64,
    /// Time a client has to answer a keep-alive ping before its connection is closed.
    pub http2_keep_alive_timeout_ms: u64,
    /// Idle upstream connections kept for reuse, at most (0 keeps none).
    pub upstream_pool_max_idle: u64,
    /// An idle upstream connection is closed after this long (ms).
    pub upstream_pool_idle_timeout_ms: u64,
    /// Requests with the upstream at once, all clients and protocols together (each
    /// holds an upstream connection until its answer ends); beyond, 503 `upstream_busy`.
    pub max_upstream_requests: u64,
    /// An answer whose client reads nothing of it for this long (ms) is cut: the
    /// HTTP/1 connection is closed or the HTTP/2 stream reset, and its upstream
    /// request released. Waiting for the upstream does not count.
    pub client_stall_timeout_ms: u64,
    /// `[server.tls]`: serve the proxy listener over TLS.
    pub tls: Option<ServerTlsSection>,
}

impl ServerSection {
    /// What the upstream and chain-node clients trust and present.
    pub fn upstream_tls(&self) -> crate::transport::tls::ClientTls<'_> {
        crate::transport::tls::ClientTls {
            ca_file: self.upstream_ca_file.as_deref(),
            client_cert: self
                .upstream_client_cert_file
                .as_deref()
                .zip(self.upstream_client_key_file.as_deref()),
        }
    }
}

/// `[server.tls]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsSection {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key of the leaf.
    pub key_file: PathBuf,
    /// PEM CA file: when set, every client must present a certificate it signs.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// PEM CRL file of the client CA (needs `client_ca_file`): a client certificate it
    /// lists is refused.
    #[serde(default)]
    pub client_crl_file: Option<PathBuf>,
    /// How often the files are checked for a change, in milliseconds.
    #[serde(default = "ServerTlsSection::default_reload_ms")]
    pub reload_ms: u64,
}

impl ServerTlsSection {
    fn default_reload_ms() -> u64 {
        1_000
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9090".into(),
            upstream: String::new(),
            connect_timeout_ms: 5_000,
            response_timeout_ms: 300_000,
            shutdown_grace_seconds: 30,
            inference_id_header: None,
            header_read_timeout_ms: 10_000,
            max_header_bytes: 65_536,
            max_connections: 4_096,
            admin_max_connections: 64,
            max_auth_failures_per_connection: 16,
            auth_failure_penalty_seconds: 0,
            worker_threads: 0,
            access_log: "off".into(),
            access_log_buffer_lines: 8_192,
            access_log_refusals_per_second: 100,
            upstream_probe: None,
            readiness_ok_statuses: Vec::new(),
            upstream_ca_file: None,
            upstream_client_cert_file: None,
            upstream_client_key_file: None,
            upstream_http2: false,
            http2_max_concurrent_streams: 100,
            http2_keep_alive_interval_ms: 30_000,
            http2_keep_alive_timeout_ms: 10_000,
            upstream_pool_max_idle: 4_096,
            upstream_pool_idle_timeout_ms: 90_000,
            max_upstream_requests: 4_096,
            client_stall_timeout_ms: 60_000,
            tls: None,
        }
    }
}

/// `[routes]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutesSection {
    /// `"METHOD /path"` entries whose requests go through the passport layer.
    pub guarded: Vec<String>,
    /// `"METHOD /path"` entries forwarded without a passport even with
    /// `agent_envelope.mode = "required"`.
    pub public: Vec<String>,
    /// `forward` (default) or `refuse`.
    pub unguarded: Unguarded,
}

impl Default for RoutesSection {
    fn default() -> Self {
        RoutesSection {
            guarded: vec![
                "POST /v1/chat/completions".into(),
                "POST /v1/completions".into(),
                "POST /v1/responses".into(),
                "POST /v1/embeddings".into(),
            ],
            public: Vec::new(),
            unguarded: Unguarded::Forward,
        }
    }
}

/// `[binding]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BindingSection {
    /// The header naming the requester (default `X-Requester-Address`).
    pub requester_header: Option<String>,
    /// A fixed requester (the devshard operator), instead of a header.
    pub requester: Option<String>,
    /// A chain node's REST (LCD) base URL, `http://host:port`.
    pub chain_node: Option<String>,
    /// A static grant list (instead of a chain node).
    pub grants: Vec<Grant>,
    /// How long a found grant is trusted.
    pub grant_ttl_seconds: u64,
    /// How long "no grant" is remembered.
    pub no_grant_ttl_seconds: u64,
    /// The longest a grant query may take.
    pub query_timeout_ms: u64,
    /// How long a failed grant query is remembered as a failure (503, no new query).
    pub failure_ttl_ms: u64,
    /// The most bytes the grant cache holds, keys included.
    pub grant_cache_max_bytes: u64,
    /// The most grant queries in flight at once (beyond: 503 without a query).
    pub max_concurrent_queries: u64,
    /// `"none"` (default): the requester header is trusted as sent. `"gonka"`: the
    /// requester must sign the request with Gonka's native signature, checked against its
    /// on-chain key (needs `chain_node`).
    pub requester_signature: RequesterSignatureKind,
    /// The node's own account address, the signed transfer address (required with
    /// `requester_signature = "gonka"`).
    pub transfer_address: Option<String>,
    /// How old `X-Timestamp` may be (ms).
    pub requester_timestamp_max_age_ms: u64,
    /// How far ahead `X-Timestamp` may be (ms).
    pub requester_timestamp_max_advance_ms: u64,
    /// The most native signatures remembered at once against replay.
    pub requester_signatures_seen_max: u64,
    /// The message type a grant must be for.
    pub grant_msg_type_url: String,
}

/// `binding.requester_signature`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequesterSignatureKind {
    /// The requester header is trusted as sent.
    #[default]
    None,
    /// Gonka's native request signature, verified with the requester's on-chain key.
    Gonka,
}

impl Default for BindingSection {
    fn default() -> Self {
        BindingSection {
            requester_header: None,
            requester: None,
            chain_node: None,
            grants: Vec::new(),
            grant_ttl_seconds: 120,
            no_grant_ttl_seconds: 10,
            query_timeout_ms: 15_000,
            failure_ttl_ms: 1_000,
            grant_cache_max_bytes: 16 << 20,
            max_concurrent_queries: 32,
            requester_signature: RequesterSignatureKind::None,
            transfer_address: None,
            requester_timestamp_max_age_ms: 10_000,
            requester_timestamp_max_advance_ms: 10_000,
            requester_signatures_seen_max: 262_144,
            grant_msg_type_url: passport_gate::grants::START_INFERENCE_MSG.to_owned(),
        }
    }
}

/// `[attribution]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttributionSection {
    /// Write events as JSON lines to standard output.
    pub stdout: bool,
    /// Append events as JSON lines to this file.
    pub file: Option<PathBuf>,
    /// At shutdown, how long the queue may take to drain.
    pub drain_deadline_ms: u64,
    /// Append events to this Redis stream (needs `[redis]`).
    pub redis_stream: Option<String>,
    /// Approximate length the stream is trimmed to, at most.
    pub redis_stream_maxlen: u64,
    /// Bytes of Redis memory the stream may take: it is trimmed to fewer entries when
    /// entries of the largest size would not fit.
    pub redis_stream_max_bytes: u64,
    /// The largest stream entry, in bytes of event JSON: a larger event has its long
    /// strings cut (and is marked `"cut": true`).
    pub redis_stream_max_event_bytes: u64,
    /// A hash-chained audit file (see `passport-gate audit verify`).
    pub audit_file: Option<PathBuf>,
    /// `always`, `batch` (default) or `never`.
    pub audit_fsync: passport_gate::attribution::FsyncPolicy,
    /// Rotate the audit file when it reaches this size; 0 never rotates.
    pub audit_max_bytes: u64,
    /// Record refused requests in the audit file too (default true).
    pub audit_refusals: bool,
    /// At most this many refusal events a second (the rest dropped and counted): anyone
    /// can send forged requests, and each refusal is an audit line. 0: no rate limit.
    pub audit_refusals_per_second: u64,
}

impl Default for AttributionSection {
    fn default() -> Self {
        AttributionSection {
            stdout: false,
            file: None,
            drain_deadline_ms: 5_000,
            redis_stream: None,
            redis_stream_maxlen: 1_000_000,
            redis_stream_max_bytes: 16 * 1024 * 1024,
            redis_stream_max_event_bytes: 2_048,
            audit_file: None,
            audit_fsync: passport_gate::attribution::FsyncPolicy::Batch,
            audit_max_bytes: 0,
            audit_refusals: true,
            audit_refusals_per_second: 100,
        }
    }
}
