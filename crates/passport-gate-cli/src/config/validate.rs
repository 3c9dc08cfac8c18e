//! Validation: the file's sections, checked and converted into `gateway::Settings`, every
//! problem one `ConfigError` naming its key.

use super::error::ConfigError;
use super::file::*;
use crate::gateway::settings::{
    AccessLogTarget, AttributionSettings, AuditFile, BindingSettings, GrantSourceSettings, Http2,
    RedisSettings, ReplayBackend, ReplaySettings, RevocationSettings, Route, ServerTls,
    Settings as Validated, TracingSettings, Upstream, UpstreamPool, UpstreamProbe,
};
use http::Method;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
            let client_auth = match (&t.client_ca_file, &t.client_crl_file) {
                (Some(ca), crl) => Some(tls::ClientAuthFiles {
                    ca_file: ca.clone(),
                    crl_file: crl.clone(),
                }),
                (None, Some(_)) => {
                    errors.push(ConfigError::new(
                        "server.tls.client_crl_file",
                        "needs server.tls.client_ca_file",
                    ));
                    None
                }
                (None, None) => None,
            };
            match tls::ListenerTls::load(t.cert_file.clone(), t.key_file.clone(), client_auth) {
                Ok(listener) => {
                    server_tls = Some(ServerTls {
                        listener: std::sync::Arc::new(listener),
                        reload: Duration::from_millis(t.reload_ms),
                    })
                }
                Err(e) => errors.push(ConfigError::new(tls_file_key(&e, t), e)),
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
            (
                "client_stall_timeout_ms",
                self.client_stall_timeout_ms,
                100,
                3_600_000,
            ),
            (
                "auth_failure_penalty_seconds",
                self.auth_failure_penalty_seconds,
                0,
                86_400,
            ),
            ("worker_threads", self.worker_threads, 0, 1_024),
        ] {
            if !(lo..=hi).contains(&v) {
                errors.push(ConfigError::new(
                    format!("server.{key}"),
                    format!("{v} is out of range; accepted: {lo} to {hi}"),
                ));
            }
        }
        if self.auth_failure_penalty_seconds > 0 && self.max_auth_failures_per_connection == 0 {
            errors.push(ConfigError::new(
                "server.auth_failure_penalty_seconds",
                "needs server.max_auth_failures_per_connection above 0 (the penalty starts when a connection is closed for it)".to_owned(),
            ));
        }
        (upstream_tls, server_tls)
    }
}

impl GatewayConfig {
    /// The `[replay]` keys that depend on each other: the disk store needs its
    /// directory (never guessed), the directory is for the disk store only, and releasing
    /// on `upstream_busy` is a widening of `release_on_retryable`.
    fn check_replay(&self, errors: &mut Vec<ConfigError>) {
        let r = &self.replay;
        let on = self.agent_envelope.replay_protection;
        match (r.store, &r.data_dir) {
            (ReplayStoreKind::Disk, None) if on => errors.push(ConfigError::new(
                "replay.data_dir",
                "required with agent_envelope.replay_protection = true and replay.store = \"disk\" (the default): an existing directory for replay.redb; or set replay.store = \"memory\" (passports issued before each start are then refused until they expire) or \"redis\"",
            )),
            (ReplayStoreKind::Disk, Some(d)) if d.as_os_str().is_empty() => errors.push(
                ConfigError::new("replay.data_dir", "empty; name an existing directory"),
            ),
            (ReplayStoreKind::Memory | ReplayStoreKind::Redis, Some(_)) => {
                errors.push(ConfigError::new(
                    "replay.data_dir",
                    "only used with replay.store = \"disk\"",
                ))
            }
            _ => {}
        }
        if r.release_on_upstream_busy && !r.release_on_retryable {
            errors.push(ConfigError::new(
                "replay.release_on_upstream_busy",
                "needs replay.release_on_retryable = true",
            ));
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
        self.check_replay(&mut errors);
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
                if self
                    .limits
                    .as_ref()
                    .is_some_and(|l| l.store == LimitStoreKind::Redis)
                {
                    errors.push(ConfigError::new(
                        "limits.store",
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
        let a = &self.attribution;
        if !(512..=1_048_576).contains(&a.redis_stream_max_event_bytes) {
            errors.push(ConfigError::new(
                "attribution.redis_stream_max_event_bytes",
                format!(
                    "{} is out of range; accepted: 512 to 1048576",
                    a.redis_stream_max_event_bytes
                ),
            ));
        } else {
            let entry = passport_gate::attribution::StreamBounds::entry_bytes(
                a.redis_stream_max_event_bytes,
            );
            if a.redis_stream_max_bytes < entry {
                errors.push(ConfigError::new(
                    "attribution.redis_stream_max_bytes",
                    format!(
                        "{} is smaller than one entry of redis_stream_max_event_bytes ({entry} bytes charged: twice the event, plus 256)",
                        a.redis_stream_max_bytes
                    ),
                ));
            }
        }
        if a.redis_stream_maxlen == 0 {
            errors.push(ConfigError::new(
                "attribution.redis_stream_maxlen",
                "0 is out of range; accepted: 1 or more",
            ));
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
        if self.server.upstream_probe.is_none() && !self.server.readiness_ok_statuses.is_empty() {
            errors.push(ConfigError::new(
                "server.readiness_ok_statuses",
                "needs a [server.upstream_probe] section (the statuses are the probe's)",
            ));
        }
        let upstream_probe = match (&self.server.upstream_probe, &upstream) {
            (Some(p), Some(up)) => check_probe(p, &self.server.readiness_ok_statuses, up)
                .map_err(|list| errors.extend(list))
                .ok(),
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
            redis_stream: a.redis_stream.as_ref().map(|key| {
                (
                    key.clone(),
                    passport_gate::attribution::StreamBounds {
                        max_entries: a.redis_stream_maxlen,
                        max_bytes: a.redis_stream_max_bytes,
                        max_event_bytes: usize::try_from(a.redis_stream_max_event_bytes)
                            .unwrap_or(usize::MAX),
                    },
                )
            }),
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
            accept_forgetful_redis: r.accept_forgetful_redis,
        });
        let replay = ReplaySettings {
            backend: match self.replay.store {
                ReplayStoreKind::Memory => ReplayBackend::Memory,
                ReplayStoreKind::Redis => ReplayBackend::Redis,
                ReplayStoreKind::Disk => {
                    ReplayBackend::Disk(self.replay.data_dir.clone().unwrap_or_default())
                }
            },
            accept_forgetful_redis: self.replay.accept_forgetful_redis,
            fail_open: self.replay.fail_open,
            release: passport_gate::replay::ReleasePolicy {
                on_retryable: self.replay.release_on_retryable,
                on_upstream_busy: self.replay.release_on_upstream_busy,
            },
        };
        let inference_id_header = self
            .server
            .inference_id_header
            .as_deref()
            .and_then(|h| http::HeaderName::try_from(h).ok());
        let upstream_auth = self.upstream_auth.as_ref().and_then(|a| {
            let fi = &self.forward_identity;
            let identity_names = [
                &fi.agent_id,
                &fi.principal_address,
                &fi.beneficiary,
                &fi.passport_id,
                &fi.model,
                &fi.requester_address,
            ];
            if let Some(name) = &a.name {
                if identity_names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                    errors.push(ConfigError::new(
                        "upstream_auth.name",
                        format!("{name:?} is also a forward_identity header"),
                    ));
                }
            }
            upstream_auth_settings(a, prefix, self.agent_envelope.max_body_size, &mut errors)
        });
        let tracing = check_tracing(&self.tracing, self.server.upstream_ca_file.as_deref())
            .map_err(|list| errors.extend(list))
            .ok()
            .flatten();
        let limits = self
            .limits
            .as_ref()
            .and_then(|l| limit_settings(l).map_err(|list| errors.extend(list)).ok());
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
                max_auth_failures_per_connection: s.max_auth_failures_per_connection,
                auth_failure_penalty: Duration::from_secs(s.auth_failure_penalty_seconds),
                worker_threads: size(s.worker_threads),
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
                client_stall_timeout: Duration::from_millis(s.client_stall_timeout_ms),
                shutdown_grace: Duration::from_secs(s.shutdown_grace_seconds),
                inference_id_header,
                envelope: self.agent_envelope.clone(),
                binding,
                principals,
                identity,
                access_log,
                access_log_buffer_lines: size(s.access_log_buffer_lines),
                access_log_refusals_per_second: s.access_log_refusals_per_second,
                upstream_probe,
                upstream_tls,
                server_tls,
                redis,
                replay,
                revocation,
                attribution,
                upstream_auth,
                tracing,
                limits,
            }),
            _ => Err(errors),
        }
    }
}

/// Checks `[limits]`: every value in range (naming its key) and the policy file read
/// whole, every bad line named by the file and its number.
fn limit_settings(
    l: &LimitsSection,
) -> Result<crate::gateway::settings::LimitSettings, Vec<ConfigError>> {
    use passport_gate::limits::{LimitPolicy, PolicyTable, QUOTA_KEYS, QUOTA_MAX};
    let mut errors = Vec::new();
    if !(1..=10_000_000).contains(&l.max_tokens_cap) {
        errors.push(ConfigError::new(
            "limits.max_tokens_cap",
            format!(
                "{} is out of range; accepted: 1 to 10000000",
                l.max_tokens_cap
            ),
        ));
    }
    if l.default_max_tokens == 0 || l.default_max_tokens > l.max_tokens_cap {
        errors.push(ConfigError::new(
            "limits.default_max_tokens",
            format!(
                "{} is out of range; accepted: 1 to limits.max_tokens_cap ({})",
                l.default_max_tokens, l.max_tokens_cap
            ),
        ));
    }
    if !(10..=3_600_000).contains(&l.reload_ms) {
        errors.push(ConfigError::new(
            "limits.reload_ms",
            format!("{} is out of range; accepted: 10 to 3600000", l.reload_ms),
        ));
    }
    for (scope, quota) in [("principal", &l.principal), ("agent", &l.agent)] {
        for ((key, max), v) in QUOTA_KEYS.iter().zip(QUOTA_MAX).zip(quota.values()) {
            if v > max {
                errors.push(ConfigError::new(
                    format!("limits.{scope}.{key}"),
                    format!("{v} is out of range; accepted: 0 (no limit) to {max}"),
                ));
            }
        }
    }
    let policy = LimitPolicy::new(PolicyTable {
        principal: l.principal,
        agent: l.agent,
        ..PolicyTable::default()
    });
    if let Some(path) = &l.policy_file {
        if let Err(lines) = policy.load_initial(path) {
            errors.extend(
                lines
                    .into_iter()
                    .map(|line| ConfigError::new("limits.policy_file", line)),
            );
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(crate::gateway::settings::LimitSettings {
        policy: (*policy.table()).clone(),
        policy_file: l
            .policy_file
            .as_ref()
            .map(|p| (p.clone(), Duration::from_millis(l.reload_ms))),
        redis: l.store == LimitStoreKind::Redis,
        fail_open: l.fail_open,
        accept_forgetful_redis: l.accept_forgetful_redis,
        max_tokens_cap: l.max_tokens_cap,
        default_max_tokens: l.default_max_tokens,
    })
}

/// Header names `upstream_auth.name` may not take: the gateway judges or sets them
/// itself, or they describe the message's framing.
const UPSTREAM_AUTH_RESERVED: [&str; 13] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "accept-encoding",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "forwarded",
    "x-agent-passport",
    "x-agent-sig",
    "cookie",
];

/// Checks `[upstream_auth]` and reads its secret once: the token (from `token_file` or
/// `token_env`) or the operator's Gonka key. Every problem names its key; none repeats
/// the secret.
fn upstream_auth_settings(
    a: &UpstreamAuthSection,
    prefix: &str,
    max_body_size: u64,
    errors: &mut Vec<ConfigError>,
) -> Option<crate::gateway::settings::UpstreamAuth> {
    use crate::gateway::settings::{TokenSource, UpstreamAuth, UpstreamAuthKind};
    use crate::gateway::upstream_auth::Secret;
    let before = errors.len();
    fn not_for(errors: &mut Vec<ConfigError>, key: &str, set: bool, kind: &str) {
        if set {
            errors.push(ConfigError::new(
                format!("upstream_auth.{key}"),
                format!("not used with kind = {kind:?}"),
            ));
        }
    }
    let kind = match a.kind {
        UpstreamAuthKindName::Bearer | UpstreamAuthKindName::Header => {
            let label = if a.kind == UpstreamAuthKindName::Bearer {
                "bearer"
            } else {
                "header"
            };
            not_for(errors, "key_file", a.key_file.is_some(), label);
            not_for(
                errors,
                "transfer_address",
                a.transfer_address.is_some(),
                label,
            );
            not_for(errors, "prefix", a.prefix.is_some(), label);
            let bearer = a.kind == UpstreamAuthKindName::Bearer;
            if bearer {
                not_for(errors, "name", a.name.is_some(), label);
            }
            let name = if bearer {
                Some(http::header::AUTHORIZATION)
            } else {
                upstream_auth_header_name(a.name.as_deref(), errors)
            };
            if !(10..=3_600_000).contains(&a.reload_ms) {
                errors.push(ConfigError::new(
                    "upstream_auth.reload_ms",
                    format!("{} is out of range; accepted: 10 to 3600000", a.reload_ms),
                ));
            }
            let (key, source) = match (&a.token_file, &a.token_env) {
                (Some(path), None) => (
                    "upstream_auth.token_file",
                    TokenSource::File(path.clone(), Duration::from_millis(a.reload_ms)),
                ),
                (None, Some(var)) => ("upstream_auth.token_env", TokenSource::Env(var.clone())),
                (Some(_), Some(_)) => {
                    errors.push(ConfigError::new(
                        "upstream_auth.token_env",
                        "set token_file or token_env, not both",
                    ));
                    return None;
                }
                (None, None) => {
                    errors.push(ConfigError::new(
                        "upstream_auth.token_file",
                        "set token_file or token_env: the token is never written in this file",
                    ));
                    return None;
                }
            };
            let value = Secret::load(&source, bearer)
                .map_err(|problem| {
                    let what = match &source {
                        TokenSource::Env(var) => format!("${var}: {problem}"),
                        TokenSource::File(..) => problem.to_string(),
                    };
                    errors.push(ConfigError::new(key, what));
                })
                .ok();
            UpstreamAuthKind::Header {
                name: name?,
                value: value?,
                bearer,
                source,
            }
        }
        UpstreamAuthKindName::Gonka => {
            for (key, set) in [
                ("name", a.name.is_some()),
                ("token_file", a.token_file.is_some()),
                ("token_env", a.token_env.is_some()),
            ] {
                not_for(errors, key, set, "gonka");
            }
            let prefix = a.prefix.as_deref().unwrap_or(prefix);
            let Some(transfer_address) = &a.transfer_address else {
                errors.push(ConfigError::new(
                    "upstream_auth.transfer_address",
                    "must be set with kind = \"gonka\" (the account address of the node the gateway forwards to)",
                ));
                return None;
            };
            if let Err(e) = passport_core::gonka::check_transfer_address(transfer_address, prefix) {
                errors.push(ConfigError::new("upstream_auth.transfer_address", e));
            }
            let Some(path) = &a.key_file else {
                errors.push(ConfigError::new(
                    "upstream_auth.key_file",
                    "must be set with kind = \"gonka\" (a `passport-gate keygen --principal` key file)",
                ));
                return None;
            };
            let signer = operator_signer(path, prefix)
                .map_err(|problem| errors.push(ConfigError::new("upstream_auth.key_file", problem)))
                .ok()?;
            UpstreamAuthKind::Gonka {
                signer,
                transfer_address: transfer_address.clone(),
                max_body_size: usize::try_from(max_body_size).unwrap_or(usize::MAX),
            }
        }
    };
    (errors.len() == before).then_some(UpstreamAuth {
        kind,
        public_routes: a.public_routes,
    })
}

/// `upstream_auth.name` with `kind = "header"`: a header name without `_` (WSGI and CGI
/// servers read `_` as `-`, so a client's `_` spelling could reach the upstream as the
/// credential) that the gateway does not judge or set itself.
fn upstream_auth_header_name(
    name: Option<&str>,
    errors: &mut Vec<ConfigError>,
) -> Option<http::HeaderName> {
    let problem = |p: String| ConfigError::new("upstream_auth.name", p);
    let Some(name) = name else {
        errors.push(problem(
            "must be set with kind = \"header\" (for example \"api-key\")".into(),
        ));
        return None;
    };
    match http::HeaderName::try_from(name) {
        Ok(h) if h.as_str().contains('_') => {
            errors.push(problem(format!("{name:?} contains `_`; use `-`")));
            None
        }
        Ok(h) if UPSTREAM_AUTH_RESERVED.contains(&h.as_str()) => {
            errors.push(problem(format!(
                "{name:?} is a header the gateway judges or sets itself"
            )));
            None
        }
        Ok(h) => Some(h),
        Err(_) => {
            errors.push(problem(format!("{name:?} is not a header name")));
            None
        }
    }
}

/// The operator's Gonka signer from `path`. Refuses a key file that group or others may
/// read or write (the key lets anyone spend the operator's escrow), as `ssh` refuses such
/// a private key.
fn operator_signer(
    path: &std::path::Path,
    prefix: &str,
) -> Result<passport_core::gonka::NativeSigner, String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} has mode {:04o}: group or others may read it; chmod 600",
                path.display(),
                mode & 0o7777
            ));
        }
    }
    let secret = passport_core::keyfile::load_principal_secret(path).map_err(|e| e.to_string())?;
    passport_core::gonka::NativeSigner::new(&secret, prefix)
        .map_err(|e| format!("prefix {prefix:?}: {e}"))
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

/// Checks `[tracing]`; `None` when it is off (no `otlp_endpoint`).
///
/// An `https` collector is verified against `server.upstream_ca_file` when set, else the
/// webpki roots; the upstream's client certificate is never presented to it.
fn check_tracing(
    t: &TracingSection,
    ca_file: Option<&std::path::Path>,
) -> Result<Option<TracingSettings>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    if !(0.0..=1.0).contains(&t.sample_ratio) {
        errors.push(ConfigError::new(
            "tracing.sample_ratio",
            format!("{} is out of range; accepted: 0.0 to 1.0", t.sample_ratio),
        ));
    }
    if t.service_name.is_empty()
        || t.service_name.len() > 256
        || t.service_name.chars().any(char::is_control)
    {
        errors.push(ConfigError::new(
            "tracing.service_name",
            "must be 1 to 256 bytes without control characters",
        ));
    }
    let range = |key: &str, v: u64, lo: u64, hi: u64, errors: &mut Vec<ConfigError>| {
        if !(lo..=hi).contains(&v) {
            errors.push(ConfigError::new(
                format!("tracing.{key}"),
                format!("{v} is out of range; accepted: {lo} to {hi}"),
            ));
        }
    };
    range(
        "export_timeout_ms",
        t.export_timeout_ms,
        100,
        300_000,
        &mut errors,
    );
    range(
        "export_interval_ms",
        t.export_interval_ms,
        100,
        3_600_000,
        &mut errors,
    );
    range(
        "max_queue_spans",
        t.max_queue_spans,
        1,
        1_000_000,
        &mut errors,
    );
    // A batch is taken from the queue: it cannot be larger (judged against a valid queue
    // only, so that one mistake is one line).
    let largest_batch = match t.max_queue_spans {
        0 => 10_000,
        queue => queue.min(10_000),
    };
    range(
        "max_export_batch_spans",
        t.max_export_batch_spans,
        1,
        largest_batch,
        &mut errors,
    );
    if t.otlp_endpoint.is_empty() {
        return if errors.is_empty() {
            Ok(None)
        } else {
            Err(errors)
        };
    }
    if !cfg!(feature = "otel") {
        errors.push(ConfigError::new(
            "tracing.otlp_endpoint",
            "this passport-gate was built without the `otel` feature; remove the key or rebuild with it",
        ));
    }
    let endpoint = otlp_endpoint(&t.otlp_endpoint)
        .map_err(|e| errors.push(ConfigError::new("tracing.otlp_endpoint", e)))
        .ok();
    let tls = crate::transport::tls::client_config(&crate::transport::tls::ClientTls {
        ca_file,
        client_cert: None,
    })
    .map_err(|e| errors.push(ConfigError::new("tracing.otlp_endpoint TLS", e)))
    .ok();
    let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    match (endpoint, tls) {
        (Some(endpoint), Some(tls)) if errors.is_empty() => Ok(Some(TracingSettings {
            endpoint,
            tls,
            sample_ratio: t.sample_ratio,
            service_name: t.service_name.clone(),
            export_timeout: Duration::from_millis(t.export_timeout_ms),
            export_interval: Duration::from_millis(t.export_interval_ms),
            max_queue_spans: size(t.max_queue_spans),
            max_export_batch_spans: size(t.max_export_batch_spans),
        })),
        _ => Err(errors),
    }
}

/// The collector's traces URL: `http` or `https` with a host; a URL without a path gets
/// OTLP's `/v1/traces` (as `OTEL_EXPORTER_OTLP_ENDPOINT` does), one with a path is used
/// as written (as `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is).
fn otlp_endpoint(s: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = s
        .parse()
        .map_err(|_| format!("{s:?} is not a URL like http://collector:4318/v1/traces"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(format!(
            "{s:?} needs a scheme and a host, like http://collector:4318/v1/traces"
        ));
    };
    if !matches!(scheme, "http" | "https") {
        return Err(format!("{s:?}: the scheme must be http or https"));
    }
    if authority.as_str().contains('@') {
        return Err(format!(
            "{s:?}: user information in the URL is not supported"
        ));
    }
    match uri.path() {
        "" | "/" if uri.query().is_none() => format!("{scheme}://{authority}/v1/traces")
            .parse()
            .map_err(|_| format!("{s:?} is not a valid URL")),
        _ => Ok(uri),
    }
}

/// The `[server.tls]` key naming the file `e` is about.
fn tls_file_key(
    e: &crate::transport::tls::TlsFileError,
    t: &super::file::ServerTlsSection,
) -> &'static str {
    use crate::transport::tls::TlsFileError;
    let path = match e {
        TlsFileError::Unreadable(p, _)
        | TlsFileError::NoCertificate(p)
        | TlsFileError::NoKey(p)
        | TlsFileError::NoCrl(p)
        | TlsFileError::BadKey(p, _)
        | TlsFileError::BadCa(p, _) => Some(p),
        TlsFileError::Provider(_) => None,
    };
    match path {
        Some(p) if t.client_crl_file.as_ref() == Some(p) => "server.tls.client_crl_file",
        Some(p) if t.client_ca_file.as_ref() == Some(p) => "server.tls.client_ca_file",
        _ => "server.tls",
    }
}

fn check_probe(
    p: &UpstreamProbeSection,
    ok_statuses: &[u16],
    upstream: &Upstream,
) -> Result<UpstreamProbe, Vec<ConfigError>> {
    let mut errors = Vec::new();
    if let Some(bad) = ok_statuses.iter().find(|s| !(100..=599).contains(*s)) {
        errors.push(ConfigError::new(
            "server.readiness_ok_statuses",
            format!("{bad} is not an HTTP status; accepted: 100 to 599"),
        ));
    }
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
            ok_statuses: ok_statuses.to_vec(),
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

    /// The validation errors of `text` (none when it is valid), one line each.
    fn errors_of(text: &str) -> Vec<String> {
        GatewayConfig::from_toml(text)
            .unwrap()
            .validate()
            .err()
            .map(|list| list.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }
    use crate::config::Overrides;
    use passport_core::config::Config;

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
        let errors = errors_of(text);
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
    fn the_example_files_limits_block_is_valid_once_uncommented() {
        let text = include_str!("../../../../passport-gate.example.toml");
        let start = text.find("# [limits]\n").unwrap();
        let end = start + text[start..].find("# The policy file").unwrap();
        let block: String = text[start..end]
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(""))
            // The policy file does not exist here.
            .filter(|l| !l.starts_with("policy_file"))
            .map(|l| format!("{l}\n"))
            .collect();
        let toml = format!(
            "[server]\nupstream = \"http://127.0.0.1:8000\"\n[agent_envelope]\nenabled = true\nchain_id = \"gonka-mainnet\"\n{block}"
        );
        let v = GatewayConfig::from_toml(&toml).unwrap().validate().unwrap();
        let limits = v.limits.unwrap();
        assert_eq!(limits.max_tokens_cap, 4096);
        assert_eq!(limits.policy.principal.tokens_per_day, 1_000_000);
        assert_eq!(limits.policy.agent.requests_per_minute, 30);
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
            let errors = errors_of(&text);
            assert!(
                errors
                    .iter()
                    .any(|e| e.starts_with("routes.public") && e.contains(fragment)),
                "{entry}: {errors:?}"
            );
        }
        let text = "[server]\nupstream = \"http://127.0.0.1:1\"\n[routes]\npublic = [\"POST /v1/embeddings\"]\n";
        let errors = errors_of(text);
        assert!(errors[0].contains("also in routes.guarded"), "{errors:?}");
    }

    #[test]
    fn connection_bounds_are_range_checked() {
        let text = "[server]\nupstream = \"http://127.0.0.1:1\"\nheader_read_timeout_ms = 0\nmax_header_bytes = 100\nmax_connections = 0\nadmin_max_connections = 0\nclient_stall_timeout_ms = 99\n";
        let errors = errors_of(text);
        for key in [
            "server.header_read_timeout_ms",
            "server.max_header_bytes",
            "server.max_connections",
            "server.admin_max_connections",
            "server.client_stall_timeout_ms",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(key)),
                "{key}: {errors:?}"
            );
        }
    }

    #[test]
    fn the_address_penalty_is_bounded_and_needs_the_connection_close() {
        let errors = |extra: &str| {
            errors_of(&format!(
                "[server]\nupstream = \"http://127.0.0.1:1\"\n{extra}"
            ))
        };
        assert!(errors("auth_failure_penalty_seconds = 60\n").is_empty());
        assert!(errors("worker_threads = 1\n").is_empty());
        let too_many = errors("worker_threads = 1025\n");
        assert!(
            too_many[0].starts_with("server.worker_threads")
                && too_many[0].contains("out of range"),
            "{too_many:?}"
        );
        let too_long = errors("auth_failure_penalty_seconds = 86401\n");
        assert!(
            too_long[0].starts_with("server.auth_failure_penalty_seconds")
                && too_long[0].contains("out of range"),
            "{too_long:?}"
        );
        let without_close =
            errors("auth_failure_penalty_seconds = 60\nmax_auth_failures_per_connection = 0\n");
        assert!(
            without_close[0].starts_with("server.auth_failure_penalty_seconds")
                && without_close[0].contains("max_auth_failures_per_connection"),
            "{without_close:?}"
        );
    }

    #[test]
    fn store_and_readiness_keys_are_checked() {
        let text = "[server]\nupstream = \"http://127.0.0.1:1\"\nreadiness_ok_statuses = [200]\n[attribution]\nredis_stream_max_event_bytes = 100\nredis_stream_maxlen = 0\n";
        let errors: Vec<String> = errors_of(text);
        for key in [
            "server.readiness_ok_statuses",
            "attribution.redis_stream_max_event_bytes",
            "attribution.redis_stream_maxlen",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(key)),
                "{key}: {errors:?}"
            );
        }
        let text = "[server]\nupstream = \"http://127.0.0.1:1\"\n[attribution]\nredis_stream_max_event_bytes = 4096\nredis_stream_max_bytes = 8000\n";
        let errors: Vec<String> = errors_of(text);
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("attribution.redis_stream_max_bytes")),
            "{errors:?}"
        );
        let text = "[server]\nupstream = \"http://127.0.0.1:1\"\nreadiness_ok_statuses = [404]\n[server.upstream_probe]\n[attribution]\nredis_stream_max_event_bytes = 1024\nredis_stream_max_bytes = 65536\n[revocation]\naccept_forgetful_redis = true\n";
        let v = GatewayConfig::from_toml(text).unwrap().validate().unwrap();
        assert_eq!(v.upstream_probe.unwrap().ok_statuses, vec![404]);
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
        let errors = errors_of(text);
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

    #[test]
    fn tracing_keys_are_checked_each_naming_its_key() {
        let validate = |section: &str| {
            let text =
                format!("[server]\nupstream = \"http://127.0.0.1:8000\"\n[tracing]\n{section}");
            GatewayConfig::from_toml(&text).unwrap().validate()
        };
        let errors = |section: &str| -> Vec<String> {
            match validate(section) {
                Ok(_) => Vec::new(),
                Err(list) => list.iter().map(ToString::to_string).collect(),
            }
        };
        let on = "otlp_endpoint = \"http://127.0.0.1:4318\"\n";
        for (section, key) in [
            (
                "otlp_endpoint = \"collector:4318\"",
                "tracing.otlp_endpoint",
            ),
            (
                "otlp_endpoint = \"ftp://collector/\"",
                "tracing.otlp_endpoint",
            ),
            (
                "otlp_endpoint = \"http://u:p@collector/\"",
                "tracing.otlp_endpoint",
            ),
            ("sample_ratio = 1.5", "tracing.sample_ratio"),
            ("sample_ratio = -0.1", "tracing.sample_ratio"),
            ("service_name = \"\"", "tracing.service_name"),
            ("export_timeout_ms = 0", "tracing.export_timeout_ms"),
            ("export_interval_ms = 10", "tracing.export_interval_ms"),
            ("max_queue_spans = 0", "tracing.max_queue_spans"),
            (
                "max_queue_spans = 10\nmax_export_batch_spans = 11",
                "tracing.max_export_batch_spans",
            ),
        ] {
            let on = if section.contains("otlp_endpoint") {
                ""
            } else {
                on
            };
            let found = errors(&format!("{on}{section}"));
            assert_eq!(found.len(), 1, "{section}: {found:?}");
            assert!(found[0].starts_with(&format!("{key}: ")), "{found:?}");
        }
        // Off by default; an endpoint without a path gets OTLP's /v1/traces.
        assert!(validate("").unwrap().tracing.is_none());
        let t = validate(on).unwrap().tracing.unwrap();
        assert_eq!(t.endpoint, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(t.service_name, "passport-gate");
        assert_eq!(t.sample_ratio, 1.0);
        let t = validate("otlp_endpoint = \"https://c.example/otlp/traces\"")
            .unwrap()
            .tracing
            .unwrap();
        assert_eq!(t.endpoint, "https://c.example/otlp/traces");
    }

    #[test]
    fn upstream_auth_keys_are_checked_each_naming_its_key() {
        let errors = |section: &str| -> Vec<String> {
            let text = format!(
                "[server]\nupstream = \"http://127.0.0.1:8000\"\n[upstream_auth]\n{section}"
            );
            match GatewayConfig::from_toml(&text).unwrap().validate() {
                Ok(_) => Vec::new(),
                Err(list) => list.iter().map(ToString::to_string).collect(),
            }
        };
        for (section, key) in [
            (
                "kind = \"bearer\"\nname = \"api-key\"\ntoken_env = \"PATH\"",
                "upstream_auth.name",
            ),
            (
                "kind = \"header\"\ntoken_env = \"PATH\"",
                "upstream_auth.name",
            ),
            (
                "kind = \"header\"\nname = \"api_key\"\ntoken_env = \"PATH\"",
                "upstream_auth.name",
            ),
            (
                "kind = \"header\"\nname = \"Host\"\ntoken_env = \"PATH\"",
                "upstream_auth.name",
            ),
            (
                "kind = \"header\"\nname = \"x-aps-model\"\ntoken_env = \"PATH\"",
                "upstream_auth.name",
            ),
            (
                "kind = \"bearer\"\ntoken_env = \"PATH\"\ntoken_file = \"/etc/hostname\"",
                "upstream_auth.token_env",
            ),
            (
                "kind = \"bearer\"\ntoken_env = \"PATH\"\nreload_ms = 0",
                "upstream_auth.reload_ms",
            ),
            (
                "kind = \"bearer\"\ntoken_env = \"PATH\"\nkey_file = \"k.json\"",
                "upstream_auth.key_file",
            ),
            (
                "kind = \"gonka\"\nkey_file = \"k.json\"",
                "upstream_auth.transfer_address",
            ),
            (
                "kind = \"gonka\"\ntransfer_address = \"gonka1x\"\nkey_file = \"/nonexistent\"",
                "upstream_auth.transfer_address",
            ),
            (
                "kind = \"gonka\"\ntoken_env = \"PATH\"\ntransfer_address = \"gonka1x\"",
                "upstream_auth.token_env",
            ),
        ] {
            let list = errors(section);
            assert!(
                list.iter().any(|e| e.starts_with(key)),
                "{section}: {list:?}"
            );
        }
        let path = std::env::var("PATH").unwrap();
        assert!(errors("kind = \"bearer\"\ntoken_env = \"PATH\"")
            .iter()
            .all(|e| !e.contains(&path)));
        assert!(errors("kind = \"header\"\nname = \"api-key\"\ntoken_env = \"PATH\"").is_empty());
    }

    #[test]
    fn the_requester_signature_keys_become_the_layer_settings() {
        let transfer = passport_core::crypto::PrincipalSecret::from_bytes(&[0x74; 32])
            .unwrap()
            .public_key()
            .address("gonka")
            .unwrap();
        let text = format!(
            "[server]\nupstream = \"http://127.0.0.1:1\"\n[binding]\nchain_node = \"http://127.0.0.1:1317\"\nrequester_signature = \"gonka\"\ntransfer_address = \"{transfer}\"\nrequester_timestamp_max_age_ms = 5000\nrequester_signatures_seen_max = 7\ngrant_msg_type_url = \"/inference.inference.MsgClaimRewards\"\n"
        );
        let v = GatewayConfig::from_toml(&text).unwrap().validate().unwrap();
        let b = v.binding.unwrap();
        assert_eq!(b.msg_type_url, passport_gate::grants::CLAIM_REWARDS_MSG);
        assert_eq!(
            b.grants,
            GrantSourceSettings::ChainNode("http://127.0.0.1:1317".into())
        );
        let rs = b.requester_signature.unwrap();
        assert_eq!(rs.transfer_address, transfer);
        assert_eq!(rs.prefix, "gonka");
        assert_eq!(rs.max_age_ns, 5_000_000_000);
        assert_eq!(rs.max_advance_ns, 10_000_000_000);
        assert_eq!(rs.max_seen, 7);
        let plain = "[server]\nupstream = \"http://127.0.0.1:1\"\n[binding]\ngrants = []\n";
        let b = GatewayConfig::from_toml(plain)
            .unwrap()
            .validate()
            .unwrap()
            .binding
            .unwrap();
        assert!(b.requester_signature.is_none());
        assert_eq!(b.msg_type_url, passport_gate::grants::START_INFERENCE_MSG);
    }
}
