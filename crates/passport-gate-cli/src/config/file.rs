//! The gateway's TOML configuration: `[server]`, `[agent_envelope]` (the reference's
//! block), `[routes]`, `[binding]`, `[principals]`, `[forward_identity]` and
//! `[attribution]`. See `passport-gate.example.toml`.

use super::error::ConfigError;
pub use crate::gateway::settings::{
    AccessLogTarget, Route, Settings as Validated, Unguarded, Upstream, UpstreamProbe,
};
use crate::gateway::settings::{
    AttributionSettings, AuditFile, BindingSettings, GrantSourceSettings, Http2, RedisSettings,
    ReplaySettings, RevocationSettings, ServerTls, UpstreamPool,
};
use http::Method;
use passport_core::config::Config;
use passport_gate::grants::Grant;
use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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

impl ForwardIdentitySection {
    /// The checked header names; one problem per name, naming its key.
    fn headers(&self) -> Result<crate::gateway::identity::IdentityHeaders, Vec<ConfigError>> {
        let names = crate::gateway::identity::IdentityNames {
            agent_id: &self.agent_id,
            principal_address: &self.principal_address,
            beneficiary: &self.beneficiary,
            passport_id: &self.passport_id,
            model: &self.model,
            requester_address: &self.requester_address,
        };
        crate::gateway::identity::IdentityHeaders::new(self.enabled, &names).map_err(|list| {
            list.into_iter()
                .map(|p| ConfigError::new(format!("forward_identity.{}", p.field), p.problem))
                .collect()
        })
    }
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

impl RedisSection {
    /// The client settings this section describes.
    pub fn client_config(&self) -> Result<passport_gate::redis_client::RedisConfig, String> {
        let client_cert = match (&self.client_cert_file, &self.client_key_file) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            (None, None) => None,
            _ => return Err("client_cert_file and client_key_file go together".into()),
        };
        let nodes: Vec<&str> = std::iter::once(self.url.as_str())
            .chain(self.cluster_nodes.iter().map(String::as_str))
            .collect();
        passport_gate::redis_client::RedisConfig::new(
            &nodes,
            self.cluster,
            passport_gate::redis_client::RedisTlsFiles {
                ca_file: self.ca_file.as_deref(),
                client_cert,
            },
            Duration::from_millis(self.timeout_ms),
        )
    }
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
    /// In-process, per replica (bounded by `agent_envelope.replay_cache_capacity`).
    #[default]
    Memory,
    /// Redis, shared by every replica.
    Redis,
}

/// `[replay]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplaySection {
    /// `memory` (default) or `redis`.
    pub store: ReplayStoreKind,
    /// When Redis is unreachable: accept (true) or refuse with 503 (false, default).
    pub fail_open: bool,
    /// Use a Redis that can silently forget records (an eviction policy other than
    /// `noeviction`, no persistence, or `CONFIG` refused) instead of refusing to start;
    /// logged as a warning and counted on every connection (false, default).
    pub accept_forgetful_redis: bool,
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
}

impl Default for RevocationSection {
    fn default() -> Self {
        RevocationSection {
            file: None,
            reload_ms: 1_000,
            redis: false,
            redis_poll_ms: 1_000,
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
    /// `"off"` (default), `"stdout"` or a file path: one JSON line per request.
    pub access_log: String,
    /// Access log lines waiting for a slow sink; beyond it lines are dropped and counted.
    pub access_log_buffer_lines: u64,
    /// Probe the upstream for `/readyz`; absent means no probe.
    pub upstream_probe: Option<UpstreamProbeSection>,
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
    /// `[server.tls]`: serve the proxy listener over TLS.
    pub tls: Option<ServerTlsSection>,
}

impl ServerSection {
    /// The transport keys (issue 11): TLS files exist and load, the mTLS pair is
    /// complete, the HTTP/2 bounds are in range.
    /// Returns the upstream TLS client configuration, built here once (the proxy, the
    /// upstream probe and the chain node client share it), and the listener's
    /// certificate and client CA, read here once.
    fn validate_transports(
        &self,
        errors: &mut Vec<ConfigError>,
    ) -> (Option<rustls::ClientConfig>, Option<ServerTls>) {
        use crate::transport::tls;
        match (
            &self.upstream_client_cert_file,
            &self.upstream_client_key_file,
        ) {
            (Some(_), None) | (None, Some(_)) => errors.push(ConfigError::new(
                "server.upstream_client_cert_file",
                "set together with server.upstream_client_key_file",
            )),
            _ => {}
        }
        let upstream_tls = tls::client_config(&self.upstream_tls())
            .map_err(|e| errors.push(ConfigError::new("server.upstream TLS", e)))
            .ok();
        let mut server_tls = None;
        if let Some(t) = &self.tls {
            let certificate =
                tls::ReloadingCertificate::load(t.cert_file.clone(), t.key_file.clone())
                    .map_err(|e| errors.push(ConfigError::new("server.tls", e)))
                    .ok();
            let client_ca = match &t.client_ca_file {
                Some(ca) => match tls::roots(ca) {
                    Ok(roots) => Some(Some((ca.clone(), roots))),
                    Err(e) => {
                        errors.push(ConfigError::new("server.tls.client_ca_file", e));
                        None
                    }
                },
                None => Some(None),
            };
            if let (Some(certificate), Some(client_ca)) = (certificate, client_ca) {
                server_tls = Some(ServerTls {
                    certificate: std::sync::Arc::new(certificate),
                    client_ca,
                    reload: Duration::from_millis(t.reload_ms),
                });
            }
            if !(100..=3_600_000).contains(&t.reload_ms) {
                errors.push(ConfigError::new(
                    "server.tls.reload_ms",
                    format!("{} is out of range; accepted: 100 to 3600000", t.reload_ms),
                ));
            }
        }
        for (key, v, lo, hi) in [
            (
                "http2_max_concurrent_streams",
                u64::from(self.http2_max_concurrent_streams),
                1,
                10_000,
            ),
            (
                "http2_keep_alive_interval_ms",
                self.http2_keep_alive_interval_ms,
                0,
                3_600_000,
            ),
            (
                "http2_keep_alive_timeout_ms",
                self.http2_keep_alive_timeout_ms,
                100,
                600_000,
            ),
            (
                "upstream_pool_max_idle",
                self.upstream_pool_max_idle,
                0,
                1_000_000,
            ),
            (
                "upstream_pool_idle_timeout_ms",
                self.upstream_pool_idle_timeout_ms,
                100,
                3_600_000,
            ),
            (
                "max_upstream_requests",
                self.max_upstream_requests,
                1,
                1_000_000,
            ),
        ] {
            if !(lo..=hi).contains(&v) {
                errors.push(ConfigError::new(
                    format!("server.{key}"),
                    format!("{v} is out of range; accepted: {lo} to {hi}"),
                ));
            }
        }
        (upstream_tls, server_tls)
    }

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
    /// How often the two files are checked for a change, in milliseconds.
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
            access_log: "off".into(),
            access_log_buffer_lines: 8_192,
            upstream_probe: None,
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
    /// Approximate length the stream is trimmed to.
    pub redis_stream_maxlen: u64,
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
            audit_file: None,
            audit_fsync: passport_gate::attribution::FsyncPolicy::Batch,
            audit_max_bytes: 0,
            audit_refusals: true,
            audit_refusals_per_second: 100,
        }
    }
}

/// Overrides from flags and `PASSPORT_GATE_*` variables, applied over the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `server.listen`.
    pub listen: Option<String>,
    /// `server.admin_listen`.
    pub admin_listen: Option<String>,
    /// `server.upstream`.
    pub upstream: Option<String>,
    /// `agent_envelope.chain_id`.
    pub chain_id: Option<String>,
    /// `agent_envelope.enabled`.
    pub enabled: Option<bool>,
    /// `binding.chain_node`.
    pub chain_node: Option<String>,
}

impl Overrides {
    /// Reads `PASSPORT_GATE_LISTEN`, `_ADMIN_LISTEN`, `_UPSTREAM`, `_CHAIN_ID`,
    /// `_ENABLED` (`true`/`false`) and `_CHAIN_NODE`; a bad value is an error naming its
    /// variable.
    pub fn from_env() -> Result<Overrides, ConfigError> {
        let var = |name: &str| std::env::var(format!("PASSPORT_GATE_{name}")).ok();
        let enabled = match var("ENABLED").as_deref() {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => {
                return Err(ConfigError::new(
                    "PASSPORT_GATE_ENABLED",
                    format!("{other:?} is not true or false"),
                ))
            }
        };
        Ok(Overrides {
            listen: var("LISTEN"),
            admin_listen: var("ADMIN_LISTEN"),
            upstream: var("UPSTREAM"),
            chain_id: var("CHAIN_ID"),
            enabled,
            chain_node: var("CHAIN_NODE"),
        })
    }

    /// Values set here win over `other`'s.
    pub fn over(self, other: Overrides) -> Overrides {
        Overrides {
            listen: self.listen.or(other.listen),
            admin_listen: self.admin_listen.or(other.admin_listen),
            upstream: self.upstream.or(other.upstream),
            chain_id: self.chain_id.or(other.chain_id),
            enabled: self.enabled.or(other.enabled),
            chain_node: self.chain_node.or(other.chain_node),
        }
    }
}

impl GatewayConfig {
    /// Parses TOML text; every problem is one line in the error.
    pub fn from_toml(text: &str) -> Result<GatewayConfig, String> {
        let (config, errors) = GatewayConfig::load(text);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "))
        }
    }

    /// Parses TOML text section by section, so that one bad section does not hide the
    /// problems of the others: the sections that parse are kept (a bad one is left at
    /// its default), and every problem is one line naming its section. Text that is not
    /// TOML at all is one line.
    pub fn load(text: &str) -> (GatewayConfig, Vec<ConfigError>) {
        let one_line = |e: &dyn std::fmt::Display| e.to_string().trim().replace('\n', " ");
        let mut config = GatewayConfig::default();
        let table: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => return (config, vec![ConfigError::syntax(one_line(&e))]),
        };
        let mut errors = Vec::new();
        for (key, value) in table {
            let parsed = match key.as_str() {
                "server" => value.try_into().map(|v| config.server = v),
                "agent_envelope" => value.try_into().map(|v| config.agent_envelope = v),
                "routes" => value.try_into().map(|v| config.routes = v),
                "binding" => value.try_into().map(|v| config.binding = Some(v)),
                "attribution" => value.try_into().map(|v| config.attribution = v),
                "redis" => value.try_into().map(|v| config.redis = Some(v)),
                "replay" => value.try_into().map(|v| config.replay = v),
                "revocation" => value.try_into().map(|v| config.revocation = v),
                "principals" => value.try_into().map(|v| config.principals = Some(v)),
                "forward_identity" => value.try_into().map(|v| config.forward_identity = v),
                _ => {
                    errors.push(ConfigError::new(
                        key,
                        "unknown section; expected server, agent_envelope, routes, binding, principals, forward_identity, attribution, redis, replay or revocation",
                    ));
                    continue;
                }
            };
            if let Err(e) = parsed {
                errors.push(ConfigError::new(key, one_line(&e)));
            }
        }
        (config, errors)
    }

    /// Applies overrides.
    pub fn apply(&mut self, o: Overrides) {
        if let Some(v) = o.listen {
            self.server.listen = v;
        }
        if let Some(v) = o.admin_listen {
            self.server.admin_listen = v;
        }
        if let Some(v) = o.upstream {
            self.server.upstream = v;
        }
        if let Some(v) = o.chain_id {
            self.agent_envelope.chain_id = v;
        }
        if let Some(v) = o.enabled {
            self.agent_envelope.enabled = v;
        }
        if let Some(v) = o.chain_node {
            self.binding
                .get_or_insert_with(BindingSection::default)
                .chain_node = Some(v);
        }
    }

    /// Checks every setting; returns one line per problem, each naming its key.
    pub fn validate(self) -> Result<Validated, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let addr = |key: &str, v: &str, errors: &mut Vec<ConfigError>| match v.parse::<SocketAddr>()
        {
            Ok(a) => Some(a),
            Err(_) => {
                errors.push(ConfigError::new(
                    format!("server.{key}"),
                    format!("{v:?} is not an address like 127.0.0.1:8080"),
                ));
                None
            }
        };
        let listen = addr("listen", &self.server.listen, &mut errors);
        let admin_listen = addr("admin_listen", &self.server.admin_listen, &mut errors);
        if listen.is_some_and(|l| l.port() != 0) && listen == admin_listen {
            errors.push(ConfigError::new(
                "server.admin_listen",
                "must differ from server.listen",
            ));
        }
        let upstream = parse_upstream(&self.server.upstream)
            .map_err(|e| errors.push(ConfigError::new("server.upstream", e)))
            .ok();
        for (key, v) in [
            ("connect_timeout_ms", self.server.connect_timeout_ms),
            ("response_timeout_ms", self.server.response_timeout_ms),
        ] {
            if v == 0 || v > 3_600_000 {
                errors.push(ConfigError::new(
                    format!("server.{key}"),
                    format!("{v} is out of range; accepted: 1 to 3600000"),
                ));
            }
        }
        if self.server.shutdown_grace_seconds > 3600 {
            errors.push(ConfigError::new(
                "server.shutdown_grace_seconds",
                format!(
                    "{} is out of range; accepted: 0 to 3600",
                    self.server.shutdown_grace_seconds
                ),
            ));
        }
        if let Some(h) = &self.server.inference_id_header {
            if http::HeaderName::try_from(h.as_str()).is_err() {
                errors.push(ConfigError::new(
                    "server.inference_id_header",
                    format!("{h:?} is not a header name"),
                ));
            }
        }
        for (key, v, lo, hi) in [
            (
                "header_read_timeout_ms",
                self.server.header_read_timeout_ms,
                100,
                300_000,
            ),
            (
                "max_header_bytes",
                self.server.max_header_bytes,
                8_192,
                1_048_576,
            ),
            ("max_connections", self.server.max_connections, 1, 1_000_000),
            (
                "admin_max_connections",
                self.server.admin_max_connections,
                1,
                10_000,
            ),
        ] {
            if !(lo..=hi).contains(&v) {
                errors.push(ConfigError::new(
                    format!("server.{key}"),
                    format!("{v} is out of range; accepted: {lo} to {hi}"),
                ));
            }
        }
        let (upstream_tls, server_tls) = self.server.validate_transports(&mut errors);
        let mut route_list = |key: &str, entries: &[String]| {
            let mut routes = Vec::new();
            for r in entries {
                match parse_route(r) {
                    Ok(route) => routes.push(route),
                    Err(e) => errors.push(ConfigError::new(format!("routes.{key}"), e)),
                }
            }
            routes
        };
        let routes = route_list("guarded", &self.routes.guarded);
        let public = route_list("public", &self.routes.public);
        for p in &public {
            if routes.contains(p) {
                errors.push(ConfigError::new(
                    "routes.public",
                    format!("\"{} {}\" is also in routes.guarded", p.method, p.path),
                ));
            }
        }
        if let Err(list) = self.agent_envelope.validate() {
            errors.extend(
                list.iter()
                    .map(|e| ConfigError::new(format!("agent_envelope.{}", e.key), &e.message)),
            );
        }
        let prefix = self.agent_envelope.address_prefix.as_str();
        let mut requester = None;
        let mut requester_signature = None;
        if let Some(b) = &self.binding {
            requester = match (&b.requester, &b.requester_header) {
                (Some(_), Some(_)) => {
                    errors.push(ConfigError::new("binding.requester and binding.requester_header", "set one, not both (requester is a fixed requester, requester_header names the header carrying it)"));
                    None
                }
                (Some(fixed), None) => {
                    match passport_gate::principals::canonical_address(prefix, fixed) {
                        Ok(a) => Some(passport_gate::layer::RequesterSource::Fixed(a)),
                        Err(e) => {
                            errors.push(ConfigError::new("binding.requester", format!("{fixed:?} is not an account address with the prefix {prefix:?}: {e}"
                        )));
                            None
                        }
                    }
                }
                (None, header) => {
                    let header = header.as_deref().unwrap_or(DEFAULT_REQUESTER_HEADER);
                    match http::HeaderName::try_from(header) {
                        Ok(h) => Some(passport_gate::layer::RequesterSource::Header(h)),
                        Err(_) => {
                            errors.push(ConfigError::new(
                                "binding.requester_header",
                                format!("{header:?} is not a header name"),
                            ));
                            None
                        }
                    }
                }
            };
            if b.chain_node.is_some() && !b.grants.is_empty() {
                errors.push(ConfigError::new(
                    "binding",
                    "set chain_node or grants, not both",
                ));
            }
            if let Some(node) = &b.chain_node {
                if let Err(e) = check_chain_node(node) {
                    errors.push(ConfigError::new("binding.chain_node", e));
                }
            }
            for (key, v, hi) in [
                ("grant_ttl_seconds", b.grant_ttl_seconds, 86_400),
                ("no_grant_ttl_seconds", b.no_grant_ttl_seconds, 86_400),
                ("query_timeout_ms", b.query_timeout_ms, 120_000),
                ("failure_ttl_ms", b.failure_ttl_ms, 60_000),
                ("grant_cache_max_bytes", b.grant_cache_max_bytes, 1 << 34),
                ("max_concurrent_queries", b.max_concurrent_queries, 4096),
            ] {
                if v == 0 || v > hi {
                    errors.push(ConfigError::new(
                        format!("binding.{key}"),
                        format!("{v} is out of range; accepted: 1 to {hi}"),
                    ));
                }
            }
            requester_signature = requester_signature_settings(b, prefix, &mut errors);
        }
        if self.attribution.drain_deadline_ms > 600_000 {
            errors.push(ConfigError::new(
                "attribution.drain_deadline_ms",
                format!(
                    "{} is out of range; accepted: 0 to 600000",
                    self.attribution.drain_deadline_ms
                ),
            ));
        }
        let mut redis = None;
        match &self.redis {
            Some(r) => {
                match r.client_config() {
                    Ok(c) => redis = Some(c),
                    Err(e) => errors.push(ConfigError::new("redis.url", e)),
                }
                if r.timeout_ms == 0 || r.timeout_ms > 60_000 {
                    errors.push(ConfigError::new(
                        "redis.timeout_ms",
                        format!("{} is out of range; accepted: 1 to 60000", r.timeout_ms),
                    ));
                }
            }
            None => {
                if self.replay.store == ReplayStoreKind::Redis {
                    errors.push(ConfigError::new(
                        "replay.store",
                        "\"redis\" needs a [redis] section",
                    ));
                }
                if self.revocation.redis {
                    errors.push(ConfigError::new(
                        "revocation.redis",
                        "needs a [redis] section",
                    ));
                }
                if self.attribution.redis_stream.is_some() {
                    errors.push(ConfigError::new(
                        "attribution.redis_stream",
                        "needs a [redis] section",
                    ));
                }
            }
        }
        for (key, v) in [
            ("revocation.reload_ms", self.revocation.reload_ms),
            ("revocation.redis_poll_ms", self.revocation.redis_poll_ms),
        ] {
            if !(10..=3_600_000).contains(&v) {
                errors.push(ConfigError::new(
                    key,
                    format!("{v} is out of range; accepted: 10 to 3600000"),
                ));
            }
        }
        let principals = self.principals.as_ref().and_then(|p| {
            allowlist_settings(p, prefix)
                .map_err(|list| errors.extend(list))
                .ok()
        });
        let identity = self
            .forward_identity
            .headers()
            .map_err(|list| errors.extend(list))
            .ok();
        let access_log = match self.server.access_log.as_str() {
            "off" => AccessLogTarget::Off,
            "stdout" => AccessLogTarget::Stdout,
            "" => {
                errors.push(ConfigError::new(
                    "server.access_log",
                    "empty; write \"off\", \"stdout\" or a file path",
                ));
                AccessLogTarget::Off
            }
            path => AccessLogTarget::File(PathBuf::from(path)),
        };
        if !(1..=1_000_000).contains(&self.server.access_log_buffer_lines) {
            errors.push(ConfigError::new(
                "server.access_log_buffer_lines",
                format!(
                    "{} is out of range; accepted: 1 to 1000000",
                    self.server.access_log_buffer_lines
                ),
            ));
        }
        let upstream_probe = match (&self.server.upstream_probe, &upstream) {
            (Some(p), Some(up)) => check_probe(p, up).map_err(|list| errors.extend(list)).ok(),
            _ => None,
        };
        let binding = match (&self.binding, requester) {
            (Some(b), Some(requester)) => Some(BindingSettings {
                requester,
                grants: match &b.chain_node {
                    Some(url) => GrantSourceSettings::ChainNode(url.clone()),
                    None => GrantSourceSettings::Static(b.grants.clone()),
                },
                cache: passport_gate::grants::GrantCacheSettings {
                    ttl: Duration::from_secs(b.grant_ttl_seconds),
                    negative_ttl: Duration::from_secs(b.no_grant_ttl_seconds),
                    query_timeout: Duration::from_millis(b.query_timeout_ms),
                    failure_ttl: Duration::from_millis(b.failure_ttl_ms),
                    max_bytes: b.grant_cache_max_bytes,
                    max_concurrent_queries: usize::try_from(b.max_concurrent_queries)
                        .unwrap_or(4096),
                },
                msg_type_url: b.grant_msg_type_url.clone(),
                requester_signature,
            }),
            _ => None,
        };
        let redis = match (&self.redis, redis) {
            (Some(section), Some(client)) => Some(RedisSettings {
                client,
                key_prefix: section.key_prefix.clone(),
            }),
            _ => None,
        };
        let a = &self.attribution;
        let attribution = AttributionSettings {
            stdout: a.stdout,
            file: a.file.clone(),
            audit_file: a.audit_file.as_ref().map(|path| AuditFile {
                path: path.clone(),
                fsync: a.audit_fsync,
                max_bytes: (a.audit_max_bytes > 0).then_some(a.audit_max_bytes),
                refusals: a.audit_refusals,
            }),
            redis_stream: a
                .redis_stream
                .as_ref()
                .map(|key| (key.clone(), a.redis_stream_maxlen)),
            refusals_per_second: a.audit_refusals_per_second,
            drain_deadline: Duration::from_millis(a.drain_deadline_ms),
        };
        let r = &self.revocation;
        let revocation = (r.file.is_some() || r.redis).then(|| RevocationSettings {
            file: r
                .file
                .as_ref()
                .map(|path| (path.clone(), Duration::from_millis(r.reload_ms))),
            redis_poll: r.redis.then(|| Duration::from_millis(r.redis_poll_ms)),
        });
        let replay = ReplaySettings {
            redis: self.replay.store == ReplayStoreKind::Redis
                && self.agent_envelope.replay_protection,
            accept_forgetful_redis: self.replay.accept_forgetful_redis,
            fail_open: self.replay.fail_open,
        };
        let inference_id_header = self
            .server
            .inference_id_header
            .as_deref()
            .and_then(|h| http::HeaderName::try_from(h).ok());
        let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        let s = &self.server;
        match (listen, admin_listen, upstream, identity, upstream_tls) {
            (
                Some(listen),
                Some(admin_listen),
                Some(upstream),
                Some(identity),
                Some(upstream_tls),
            ) if errors.is_empty() => Ok(Validated {
                listen,
                admin_listen,
                upstream,
                routes,
                public,
                unguarded: self.routes.unguarded,
                header_read_timeout: Duration::from_millis(s.header_read_timeout_ms),
                max_header_bytes: size(s.max_header_bytes),
                max_connections: size(s.max_connections),
                admin_max_connections: size(s.admin_max_connections),
                http2: Http2 {
                    max_concurrent_streams: s.http2_max_concurrent_streams,
                    keep_alive_interval: (s.http2_keep_alive_interval_ms > 0)
                        .then(|| Duration::from_millis(s.http2_keep_alive_interval_ms)),
                    keep_alive_timeout: Duration::from_millis(s.http2_keep_alive_timeout_ms),
                },
                connect_timeout: Duration::from_millis(s.connect_timeout_ms),
                response_timeout: Duration::from_millis(s.response_timeout_ms),
                upstream_pool: UpstreamPool {
                    http2: s.upstream_http2,
                    max_idle: size(s.upstream_pool_max_idle),
                    idle_timeout: Duration::from_millis(s.upstream_pool_idle_timeout_ms),
                    max_requests: size(s.max_upstream_requests),
                },
                shutdown_grace: Duration::from_secs(s.shutdown_grace_seconds),
                inference_id_header,
                envelope: self.agent_envelope.clone(),
                binding,
                principals,
                identity,
                access_log,
                access_log_buffer_lines: size(s.access_log_buffer_lines),
                upstream_probe,
                upstream_tls,
                server_tls,
                redis,
                replay,
                revocation,
                attribution,
            }),
            _ => Err(errors),
        }
    }
}

/// The most native signatures `binding.requester_signatures_seen_max` may ask to keep.
const MAX_SEEN_SIGNATURES: u64 = 1 << 24;

/// Checks the requester-signature keys of `[binding]`; the settings when
/// `requester_signature = "gonka"` and every key is right.
fn requester_signature_settings(
    b: &BindingSection,
    prefix: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<passport_gate::grants::RequesterSignatureSettings> {
    use passport_gate::grants::{RequesterSignatureProblem, RequesterSignatureSettings};
    let before = errors.len();
    let url = &b.grant_msg_type_url;
    if !url.starts_with('/') || url.len() < 2 || url.contains(char::is_whitespace) {
        errors.push(ConfigError::new(
            "binding.grant_msg_type_url",
            format!(
                "{url:?} is not a message type URL like \"/inference.inference.MsgStartInference\""
            ),
        ));
    }
    for (key, v) in [
        (
            "requester_timestamp_max_age_ms",
            b.requester_timestamp_max_age_ms,
        ),
        (
            "requester_timestamp_max_advance_ms",
            b.requester_timestamp_max_advance_ms,
        ),
    ] {
        if v > 3_600_000 {
            errors.push(ConfigError::new(
                format!("binding.{key}"),
                format!("{v} is out of range; accepted: 0 to 3600000"),
            ));
        }
    }
    let seen = b.requester_signatures_seen_max;
    if !(1..=MAX_SEEN_SIGNATURES).contains(&seen) {
        errors.push(ConfigError::new(
            "binding.requester_signatures_seen_max",
            format!("{seen} is out of range; accepted: 1 to {MAX_SEEN_SIGNATURES}"),
        ));
    }
    if b.requester_signature == RequesterSignatureKind::None {
        return None;
    }
    if b.chain_node.is_none() {
        errors.push(ConfigError::new(
            "binding.requester_signature",
            "\"gonka\" needs binding.chain_node: the requester's public key is looked up on the chain",
        ));
    }
    let Some(transfer_address) = &b.transfer_address else {
        errors.push(ConfigError::new(
            "binding.transfer_address",
            "must be set with requester_signature = \"gonka\" (this node's own account address)",
        ));
        return None;
    };
    let ns = |ms: u64| i64::try_from(ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
    let mut rs = RequesterSignatureSettings::new(transfer_address.clone());
    rs.prefix = prefix.to_owned();
    rs.max_age_ns = ns(b.requester_timestamp_max_age_ms);
    rs.max_advance_ns = ns(b.requester_timestamp_max_advance_ms);
    rs.max_seen = usize::try_from(seen).unwrap_or(usize::MAX);
    if let Err(problems) = rs.validate() {
        for p in problems {
            match p {
                RequesterSignatureProblem::TransferAddress(why) => {
                    errors.push(ConfigError::new(
                        "binding.transfer_address",
                        format!("{transfer_address:?} is not a canonical account address with the prefix {prefix:?}: {why}"),
                    ));
                }
                // The ranges above already name these keys.
                RequesterSignatureProblem::MaxAge
                | RequesterSignatureProblem::MaxAdvance
                | RequesterSignatureProblem::MaxSeen => {}
            }
        }
    }
    (errors.len() == before).then_some(rs)
}

/// The chain node's URL as the chain-node client takes it: `http://` or
/// `https://host[:port]` (the client itself is built once, by the gateway).
fn check_chain_node(url: &str) -> Result<(), String> {
    let base = url.trim_end_matches('/');
    let uri: http::Uri = base
        .parse()
        .map_err(|e| format!("chain node URL {url:?}: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!(
            "chain node URL {url:?} must be http:// or https://host[:port]"
        ));
    }
    Ok(())
}

/// The requester header when `[binding]` names neither a header nor a fixed requester.
const DEFAULT_REQUESTER_HEADER: &str = "X-Requester-Address";

fn check_probe(
    p: &UpstreamProbeSection,
    upstream: &Upstream,
) -> Result<UpstreamProbe, Vec<ConfigError>> {
    let mut errors = Vec::new();
    if !p.path.starts_with('/') || p.path.contains(['#', ' ']) {
        errors.push(ConfigError::new(
            "server.upstream_probe.path",
            format!("{:?} must be an absolute path like \"/v1/models\"", p.path),
        ));
    }
    let uri = http::Uri::builder()
        .scheme(upstream.scheme.clone())
        .authority(upstream.authority.clone())
        .path_and_query(format!("{}{}", upstream.base_path, p.path))
        .build();
    if uri.is_err() && errors.is_empty() {
        errors.push(ConfigError::new(
            "server.upstream_probe.path",
            format!("{:?} is not a valid path", p.path),
        ));
    }
    if !(100..=3_600_000).contains(&p.interval_ms) {
        errors.push(ConfigError::new(
            "server.upstream_probe.interval_ms",
            format!(
                "{} is out of range; accepted: 100 to 3600000",
                p.interval_ms
            ),
        ));
    }
    if p.timeout_ms == 0 || p.timeout_ms > p.interval_ms.min(60_000) {
        errors.push(ConfigError::new(
            "server.upstream_probe.timeout_ms",
            format!(
                "{} is out of range; accepted: 1 to the smaller of interval_ms and 60000",
                p.timeout_ms
            ),
        ));
    }
    match uri {
        Ok(uri) if errors.is_empty() => Ok(UpstreamProbe {
            uri,
            interval: Duration::from_millis(p.interval_ms),
            timeout: Duration::from_millis(p.timeout_ms),
        }),
        _ => Err(errors),
    }
}

fn parse_upstream(s: &str) -> Result<Upstream, String> {
    if s.is_empty() {
        return Err("must be set (http://host:port of the OpenAI-compatible server)".into());
    }
    let uri: http::Uri = s.parse().map_err(|_| format!("{s:?} is not a URL"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => http::uri::Scheme::HTTP,
        Some("https") => http::uri::Scheme::HTTPS,
        _ => return Err(format!("{s:?}: must be an http:// or https:// URL")),
    };
    if uri.query().is_some() {
        return Err(format!("{s:?}: must not have a query"));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("{s:?} has no host"))?;
    Ok(Upstream {
        scheme,
        authority,
        base_path: uri.path().trim_end_matches('/').to_owned(),
    })
}

/// A route entry: an uppercase method the gateway proxies, one space, and a path that
/// is already in the gateway's normal form without a trailing slash (so the entry
/// means exactly what the guard compares).
fn parse_route(s: &str) -> Result<Route, String> {
    let (method, path) = s
        .split_once(' ')
        .ok_or_else(|| format!("{s:?} must look like \"POST /v1/chat/completions\""))?;
    let method = Method::from_bytes(method.as_bytes())
        .ok()
        .filter(crate::gateway::admission::is_proxied)
        .ok_or_else(|| {
            format!(
                "{s:?}: the method must be one of {}",
                crate::gateway::error::ALLOWED_METHODS
            )
        })?;
    if path.contains(['?', '#', ' ']) {
        return Err(format!("{s:?}: the path must have no query"));
    }
    match crate::gateway::path::normalize(path) {
        Ok(normal) if crate::gateway::path::route_key(&normal) == path => Ok(Route {
            method,
            path: path.to_owned(),
        }),
        Ok(normal) => Err(format!(
            "{s:?}: the path is not in normal form; write {:?}",
            crate::gateway::path::route_key(&normal)
        )),
        Err(why) => Err(format!("{s:?}: the path has {why}")),
    }
}

/// Checks `[principals]`: every entry of `allow`, and every line of `allow_file`
/// (which must exist), one error per problem naming its key.
pub(crate) fn allowlist_settings(
    section: &PrincipalsSection,
    prefix: &str,
) -> Result<passport_gate::principals::AllowlistSettings, Vec<ConfigError>> {
    let mut errors = Vec::new();
    if section.allow.is_empty() && section.allow_file.is_none() {
        errors.push(ConfigError::new(
            "principals",
            "set allow, allow_file or both (remove the section to serve every principal)",
        ));
    }
    let mut fixed = HashSet::new();
    for (i, entry) in section.allow.iter().enumerate() {
        match passport_gate::principals::canonical_address(prefix, entry) {
            Ok(a) => {
                fixed.insert(a);
            }
            Err(e) => errors.push(ConfigError::new(
                format!("principals.allow[{i}]"),
                format!("{entry:?} is not an account address with the prefix {prefix:?}: {e}"),
            )),
        }
    }
    if !(10..=3_600_000).contains(&section.reload_ms) {
        errors.push(ConfigError::new(
            "principals.reload_ms",
            format!(
                "{} is out of range; accepted: 10 to 3600000",
                section.reload_ms
            ),
        ));
    }
    let file = match &section.allow_file {
        None => None,
        Some(path) => match passport_gate::principals::read_file(path, prefix) {
            Ok(set) => Some((path.clone(), set, Duration::from_millis(section.reload_ms))),
            Err(list) => {
                errors.extend(
                    list.into_iter()
                        .map(|e| ConfigError::new("principals.allow_file", e)),
                );
                None
            }
        },
    };
    if errors.is_empty() {
        Ok(passport_gate::principals::AllowlistSettings {
            fixed,
            file,
            prefix: prefix.to_owned(),
        })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_file_validates_with_the_reference_defaults() {
        let c =
            GatewayConfig::from_toml("[server]\nupstream = \"http://127.0.0.1:8000\"\n").unwrap();
        let v = c.validate().unwrap();
        assert_eq!(v.routes.len(), 4);
        assert!(v.public.is_empty());
        assert!(!v.envelope.enabled);
        assert_eq!(v.upstream.authority.as_str(), "127.0.0.1:8000");
    }

    #[test]
    fn every_bad_setting_gets_its_own_line() {
        let text = r#"
[server]
listen = "nowhere"
upstream = "ftp://upstream.example"
connect_timeout_ms = 0
[agent_envelope]
enabled = true
max_ttl_seconds = 0
[routes]
guarded = ["POST"]
[binding]
requester_header = "bad header"
chain_node = "ftp://x"
"#;
        let errors = GatewayConfig::from_toml(text)
            .unwrap()
            .validate()
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>();
        for key in [
            "server.listen",
            "server.upstream",
            "server.connect_timeout_ms",
            "routes.guarded",
            "agent_envelope.chain_id",
            "agent_envelope.max_ttl_seconds",
            "binding.requester_header",
            "binding.chain_node",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(key)),
                "{key} missing from {errors:#?}"
            );
        }
    }

    #[test]
    fn the_annotated_example_file_is_valid() {
        let text = include_str!("../../../../passport-gate.example.toml");
        let v = GatewayConfig::from_toml(text).unwrap().validate().unwrap();
        assert!(v.envelope.enabled);
        assert_eq!(
            v.envelope,
            Config {
                enabled: true,
                chain_id: "gonka-mainnet".into(),
                ..Config::default()
            }
        );
        assert!(
            v.binding.is_none(),
            "binding needs a chain node: off as shipped"
        );
        assert!(v.upstream_probe.is_some());
        assert_eq!(v.upstream.authority.as_str(), "127.0.0.1:8000");
    }

    #[test]
    fn route_entries_must_be_an_uppercase_proxied_method_and_a_normal_path() {
        for (entry, fragment) in [
            ("post /v1/chat/completions", "the method must be one of"),
            ("CONNECT /v1/x", "the method must be one of"),
            (
                "POST /v1/chat/completions/",
                "write \"/v1/chat/completions\"",
            ),
            (
                "POST /v1//chat/completions",
                "write \"/v1/chat/completions\"",
            ),
            (
                "POST /v1/chat/%63ompletions",
                "write \"/v1/chat/completions\"",
            ),
            ("POST /v1/chat%2Fcompletions", "an encoded / or"),
            ("POST /v1/chat;x", "a ;"),
            ("POST v1/chat", "not an origin-form path"),
            ("POST /v1/chat?x=1", "no query"),
        ] {
            let text = format!(
                "[server]\nupstream = \"http://127.0.0.1:1\"\n[routes]\npublic = [{entry:?}]\n"
            );
            let errors = GatewayConfig::from_toml(&text)
                .unwrap()
                .validate()
                .unwrap_err()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>();
            assert!(
                errors
                    .iter()
                    .any(|e| e.starts_with("routes.public") && e.contains(fragment)),
                "{entry}: {errors:?}"
            );
        }
        let text = "[server]\nupstream = \"http://127.0.0.1:1\"\n[routes]\npublic = [\"POST /v1/embeddings\"]\n";
        let errors = GatewayConfig::from_toml(text)
            .unwrap()
            .validate()
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>();
        assert!(errors[0].contains("also in routes.guarded"), "{errors:?}");
    }

    #[test]
    fn connection_bounds_are_range_checked() {
        let text = "[server]\nupstream = \"http://127.0.0.1:1\"\nheader_read_timeout_ms = 0\nmax_header_bytes = 100\nmax_connections = 0\nadmin_max_connections = 0\n";
        let errors = GatewayConfig::from_toml(text)
            .unwrap()
            .validate()
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>();
        for key in [
            "server.header_read_timeout_ms",
            "server.max_header_bytes",
            "server.max_connections",
            "server.admin_max_connections",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(key)),
                "{key}: {errors:?}"
            );
        }
    }

    #[test]
    fn every_section_that_does_not_parse_is_one_line_and_the_others_are_kept() {
        let text = "[server]\nupstream = \"http://127.0.0.1:1\"\nlisten = 5\n[routes]\nguard = []\n[principal]\nallow = []\n[replay]\nfail_open = true\n";
        let (config, errors) = GatewayConfig::load(text);
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("principal: unknown section"));
        assert!(errors[1].starts_with("routes: unknown field `guard`"));
        assert!(errors[2].starts_with("server: invalid type"));
        assert!(config.replay.fail_open, "a good section is kept");
    }

    #[test]
    fn transport_settings_are_checked_at_startup() {
        let text = r#"
[server]
upstream = "https://127.0.0.1:1"
upstream_client_cert_file = "/nonexistent/client.pem"
upstream_ca_file = "/nonexistent/ca.pem"
http2_max_concurrent_streams = 0
http2_keep_alive_timeout_ms = 1
[server.tls]
cert_file = "/nonexistent/cert.pem"
key_file = "/nonexistent/key.pem"
reload_ms = 1
[redis]
url = "rediss://127.0.0.1:1/#insecure"
cluster_nodes = ["redis://127.0.0.1:2"]
"#;
        let errors = GatewayConfig::from_toml(text)
            .unwrap()
            .validate()
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>();
        for needle in [
            "server.upstream_client_cert_file: set together with server.upstream_client_key_file",
            "server.upstream TLS: cannot read /nonexistent/ca.pem",
            "server.tls: cannot read /nonexistent/cert.pem",
            "server.tls.reload_ms",
            "server.http2_max_concurrent_streams",
            "server.http2_keep_alive_timeout_ms",
            "redis.url:",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(needle)),
                "{needle} missing from {errors:#?}"
            );
        }
        let https = "[server]\nupstream = \"https://node.example:8443/api\"\n";
        let v = GatewayConfig::from_toml(https).unwrap().validate().unwrap();
        assert_eq!(v.upstream.scheme, http::uri::Scheme::HTTPS);
        assert_eq!(v.upstream.base_path, "/api");
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(GatewayConfig::from_toml("[server]\nupstreem = \"x\"\n").is_err());
        assert!(GatewayConfig::from_toml("[agent_envelope]\nenable = true\n").is_err());
    }

    #[test]
    fn overrides_win_over_the_file() {
        let mut c =
            GatewayConfig::from_toml("[server]\nupstream = \"http://127.0.0.1:1\"\n").unwrap();
        let flags = Overrides {
            upstream: Some("http://127.0.0.1:2".into()),
            ..Overrides::default()
        };
        let env = Overrides {
            upstream: Some("http://127.0.0.1:3".into()),
            chain_id: Some("gonka-mainnet".into()),
            enabled: Some(true),
            ..Overrides::default()
        };
        c.apply(flags.over(env));
        assert_eq!(c.server.upstream, "http://127.0.0.1:2");
        assert_eq!(c.agent_envelope.chain_id, "gonka-mainnet");
        assert!(c.validate().is_ok());
    }
}
