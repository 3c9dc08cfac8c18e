//! The gateway's TOML configuration: `[server]`, `[agent_envelope]` (the reference's
//! block), `[routes]`, `[binding]` and `[attribution]`. See `passport-gate.example.toml`.

use crate::config::Config;
use crate::grants::Grant;
use http::Method;
use serde::Deserialize;
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
}

/// `[redis]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSection {
    /// `redis://host:port`.
    pub url: String,
    /// Prefix of every key passport-gate writes.
    pub key_prefix: String,
    /// Time allowed for connecting and for each command.
    pub timeout_ms: u64,
}

impl Default for RedisSection {
    fn default() -> Self {
        RedisSection {
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: "aps:".into(),
            timeout_ms: 500,
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
        }
    }
}

/// What happens to a request on a route that is not guarded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unguarded {
    /// Forward it: without a passport check in optional mode, through the passport
    /// layer with `agent_envelope.mode = "required"`.
    #[default]
    Forward,
    /// Answer 404 `route_not_allowed`.
    Refuse,
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
    /// The header naming the requester.
    pub requester_header: String,
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
}

impl Default for BindingSection {
    fn default() -> Self {
        BindingSection {
            requester_header: "X-Requester-Address".into(),
            chain_node: None,
            grants: Vec::new(),
            grant_ttl_seconds: 120,
            no_grant_ttl_seconds: 10,
            query_timeout_ms: 15_000,
            failure_ttl_ms: 1_000,
            grant_cache_max_bytes: 16 << 20,
            max_concurrent_queries: 32,
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
    pub audit_fsync: crate::attribution::FsyncPolicy,
    /// Rotate the audit file when it reaches this size; 0 never rotates.
    pub audit_max_bytes: u64,
    /// Record refused requests in the audit file too (default true).
    pub audit_refusals: bool,
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
            audit_fsync: crate::attribution::FsyncPolicy::Batch,
            audit_max_bytes: 0,
            audit_refusals: true,
        }
    }
}

/// A route: a method and a path in normal form, without a trailing slash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The method.
    pub method: Method,
    /// The path, as [`super::path::route_key`] gives it.
    pub path: String,
}

/// The upstream, split for building request URIs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// `host:port`.
    pub authority: http::uri::Authority,
    /// A path prefix, without a trailing slash (often empty).
    pub base_path: String,
}

/// A configuration checked and converted into what the gateway runs with.
#[derive(Clone, Debug)]
pub struct Validated {
    /// The file as given (with overrides applied).
    pub raw: GatewayConfig,
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
    /// `_ENABLED` (`true`/`false`) and `_CHAIN_NODE`.
    pub fn from_env() -> Result<Overrides, String> {
        let var = |name: &str| std::env::var(format!("PASSPORT_GATE_{name}")).ok();
        let enabled = match var("ENABLED").as_deref() {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => {
                return Err(format!(
                    "PASSPORT_GATE_ENABLED: {other:?} is not true or false"
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
    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<GatewayConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim().replace('\n', " "))
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
    pub fn validate(self) -> Result<Validated, Vec<String>> {
        let mut errors = Vec::new();
        let addr = |key: &str, v: &str, errors: &mut Vec<String>| match v.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                errors.push(format!(
                    "server.{key}: {v:?} is not an address like 127.0.0.1:8080"
                ));
                None
            }
        };
        let listen = addr("listen", &self.server.listen, &mut errors);
        let admin_listen = addr("admin_listen", &self.server.admin_listen, &mut errors);
        if listen.is_some_and(|l| l.port() != 0) && listen == admin_listen {
            errors.push("server.admin_listen: must differ from server.listen".into());
        }
        let upstream = parse_upstream(&self.server.upstream)
            .map_err(|e| errors.push(format!("server.upstream: {e}")))
            .ok();
        for (key, v) in [
            ("connect_timeout_ms", self.server.connect_timeout_ms),
            ("response_timeout_ms", self.server.response_timeout_ms),
        ] {
            if v == 0 || v > 3_600_000 {
                errors.push(format!(
                    "server.{key}: {v} is out of range; accepted: 1 to 3600000"
                ));
            }
        }
        if self.server.shutdown_grace_seconds > 3600 {
            errors.push(format!(
                "server.shutdown_grace_seconds: {} is out of range; accepted: 0 to 3600",
                self.server.shutdown_grace_seconds
            ));
        }
        if let Some(h) = &self.server.inference_id_header {
            if http::HeaderName::try_from(h.as_str()).is_err() {
                errors.push(format!(
                    "server.inference_id_header: {h:?} is not a header name"
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
                errors.push(format!(
                    "server.{key}: {v} is out of range; accepted: {lo} to {hi}"
                ));
            }
        }
        let mut route_list = |key: &str, entries: &[String]| {
            let mut routes = Vec::new();
            for r in entries {
                match parse_route(r) {
                    Ok(route) => routes.push(route),
                    Err(e) => errors.push(format!("routes.{key}: {e}")),
                }
            }
            routes
        };
        let routes = route_list("guarded", &self.routes.guarded);
        let public = route_list("public", &self.routes.public);
        for p in &public {
            if routes.contains(p) {
                errors.push(format!(
                    "routes.public: \"{} {}\" is also in routes.guarded",
                    p.method, p.path
                ));
            }
        }
        if let Err(list) = self.agent_envelope.validate() {
            errors.extend(list.iter().map(|e| format!("agent_envelope.{e}")));
        }
        if let Some(b) = &self.binding {
            if http::HeaderName::try_from(b.requester_header.as_str()).is_err() {
                errors.push(format!(
                    "binding.requester_header: {:?} is not a header name",
                    b.requester_header
                ));
            }
            if b.chain_node.is_some() && !b.grants.is_empty() {
                errors.push("binding: set chain_node or grants, not both".into());
            }
            if let Some(node) = &b.chain_node {
                if let Err(e) = crate::grants::LcdGrantSource::new(node) {
                    errors.push(format!("binding.chain_node: {e}"));
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
                    errors.push(format!(
                        "binding.{key}: {v} is out of range; accepted: 1 to {hi}"
                    ));
                }
            }
        }
        if self.attribution.drain_deadline_ms > 600_000 {
            errors.push(format!(
                "attribution.drain_deadline_ms: {} is out of range; accepted: 0 to 600000",
                self.attribution.drain_deadline_ms
            ));
        }
        match &self.redis {
            Some(r) => {
                if let Err(e) =
                    crate::redis::RedisConfig::from_url(&r.url, Duration::from_millis(r.timeout_ms))
                {
                    errors.push(format!("redis.url: {e}"));
                }
                if r.timeout_ms == 0 || r.timeout_ms > 60_000 {
                    errors.push(format!(
                        "redis.timeout_ms: {} is out of range; accepted: 1 to 60000",
                        r.timeout_ms
                    ));
                }
            }
            None => {
                if self.replay.store == ReplayStoreKind::Redis {
                    errors.push("replay.store: \"redis\" needs a [redis] section".into());
                }
                if self.revocation.redis {
                    errors.push("revocation.redis: needs a [redis] section".into());
                }
                if self.attribution.redis_stream.is_some() {
                    errors.push("attribution.redis_stream: needs a [redis] section".into());
                }
            }
        }
        for (key, v) in [
            ("revocation.reload_ms", self.revocation.reload_ms),
            ("revocation.redis_poll_ms", self.revocation.redis_poll_ms),
        ] {
            if !(10..=3_600_000).contains(&v) {
                errors.push(format!(
                    "{key}: {v} is out of range; accepted: 10 to 3600000"
                ));
            }
        }
        match (listen, admin_listen, upstream) {
            (Some(listen), Some(admin_listen), Some(upstream)) if errors.is_empty() => {
                Ok(Validated {
                    listen,
                    admin_listen,
                    upstream,
                    routes,
                    public,
                    header_read_timeout: Duration::from_millis(self.server.header_read_timeout_ms),
                    connect_timeout: Duration::from_millis(self.server.connect_timeout_ms),
                    response_timeout: Duration::from_millis(self.server.response_timeout_ms),
                    shutdown_grace: Duration::from_secs(self.server.shutdown_grace_seconds),
                    raw: self,
                })
            }
            _ => Err(errors),
        }
    }
}

fn parse_upstream(s: &str) -> Result<Upstream, String> {
    if s.is_empty() {
        return Err("must be set (http://host:port of the OpenAI-compatible server)".into());
    }
    let uri: http::Uri = s.parse().map_err(|_| format!("{s:?} is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "{s:?}: only http:// upstreams are supported; terminate TLS in front of the upstream"
        ));
    }
    if uri.query().is_some() {
        return Err(format!("{s:?}: must not have a query"));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("{s:?} has no host"))?;
    Ok(Upstream {
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
        .filter(super::admission::is_proxied)
        .ok_or_else(|| {
            format!(
                "{s:?}: the method must be one of {}",
                super::error::ALLOWED_METHODS
            )
        })?;
    if path.contains(['?', '#', ' ']) {
        return Err(format!("{s:?}: the path must have no query"));
    }
    match super::path::normalize(path) {
        Ok(normal) if super::path::route_key(&normal) == path => Ok(Route {
            method,
            path: path.to_owned(),
        }),
        Ok(normal) => Err(format!(
            "{s:?}: the path is not in normal form; write {:?}",
            super::path::route_key(&normal)
        )),
        Err(why) => Err(format!("{s:?}: the path has {why}")),
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
        assert!(!v.raw.agent_envelope.enabled);
        assert_eq!(v.upstream.authority.as_str(), "127.0.0.1:8000");
    }

    #[test]
    fn every_bad_setting_gets_its_own_line() {
        let text = r#"
[server]
listen = "nowhere"
upstream = "https://upstream.example"
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
            .unwrap_err();
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
        let text = include_str!("../../passport-gate.example.toml");
        let v = GatewayConfig::from_toml(text).unwrap().validate().unwrap();
        assert!(v.raw.agent_envelope.enabled);
        assert_eq!(
            v.raw.agent_envelope,
            Config {
                enabled: true,
                chain_id: "gonka-mainnet".into(),
                ..Config::default()
            }
        );
        assert_eq!(
            v.raw.binding.unwrap().chain_node.as_deref(),
            Some("http://127.0.0.1:1317")
        );
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
                .unwrap_err();
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
            .unwrap_err();
        assert!(errors[0].contains("also in routes.guarded"), "{errors:?}");
    }

    #[test]
    fn connection_bounds_are_range_checked() {
        let text = "[server]\nupstream = \"http://127.0.0.1:1\"\nheader_read_timeout_ms = 0\nmax_header_bytes = 100\nmax_connections = 0\nadmin_max_connections = 0\n";
        let errors = GatewayConfig::from_toml(text)
            .unwrap()
            .validate()
            .unwrap_err();
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
