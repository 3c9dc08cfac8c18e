//! `passport-gate serve`: a reverse proxy that puts the passport layer in front of an
//! OpenAI-compatible upstream, with an admin listener and graceful shutdown.

pub mod access_log;
mod admin;
pub mod admission;
pub(crate) mod error;
pub mod identity;
mod listener;
pub mod metrics;
pub mod path;
mod proxy;
mod routes;
pub mod settings;

use crate::config::file as config;
use crate::transport::tls;
pub use error::GatewayError;
use passport_gate::RequestPath;
pub use proxy::Proxy;
pub use settings::Settings as Validated;

use access_log::AccessLog;
use admission::Admission;
use hyper::body::Incoming;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use listener::{Acceptor, ConnectionLimits, Http2Limits, ProxyProtocols};
use metrics::{GatewayMetrics, Unguarded as UnguardedAction};
use passport_core::config::Mode;
use passport_gate::attribution::{
    AttributionQueue, AuditFileSink, DrainReport, JsonLinesSink, RedisStreamSink, Sink,
};
use passport_gate::grants::{
    GrantCache, GrantCacheSettings, GrantSource, LcdGrantSource, StaticGrants,
};
use passport_gate::layer::{
    Binding, PassportBody, PassportLayer, PassportService, RequesterSource,
};
use passport_gate::metrics::Metrics;
use passport_gate::principals::PrincipalAllowlist;
use passport_gate::redis_client::{Durability, Redis, RedisConfig, RedisError};
use passport_gate::replay::RedisReplayStore;
use passport_gate::revocation::RevocationList;
use prometheus::Registry;
use proxy::ProxyBody;
use routes::{Decision, RouteTable};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tower::{Layer, Service};

/// The response body of the gateway.
pub type GatewayBody = PassportBody<ProxyBody>;

/// Per-connection service: admission first (method, path, `Connection`, framing), then
/// the route decision on the normal path: through the layer, forwarded without a
/// passport check, or refused.
#[derive(Clone)]
struct Dispatch {
    guarded: PassportService<Proxy<Incoming>>,
    plain: Proxy<Incoming>,
    admission: Arc<Admission>,
    routes: Arc<RouteTable>,
    metrics: GatewayMetrics,
    access_log: Option<Arc<AccessLog>>,
}

type DispatchFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<GatewayBody>, Infallible>> + Send>>;

impl Service<http::Request<Incoming>> for Dispatch {
    type Response = http::Response<GatewayBody>;
    type Error = Infallible;
    type Future = DispatchFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Incoming>) -> DispatchFuture {
        let Some(log) = &self.access_log else {
            return self.route(req);
        };
        let log = Arc::clone(log);
        let started = std::time::Instant::now();
        let method = req.method().clone();
        // The path as received, without the query (which may carry secrets).
        let path = req.uri().path().to_owned();
        let answered = self.route(req);
        Box::pin(async move {
            let response = answered.await?;
            log.record(&method, &path, &response, started);
            Ok(response)
        })
    }
}

impl Dispatch {
    fn route(&mut self, mut req: http::Request<Incoming>) -> DispatchFuture {
        let answer = |e: GatewayError| -> DispatchFuture {
            Box::pin(std::future::ready(Ok(e.http_response())))
        };
        let normal = match self.admission.admit(req.method(), req.uri(), req.headers()) {
            Ok(normal) => normal,
            Err(e) => {
                self.metrics.gateway_refusal(e);
                return answer(e);
            }
        };
        let decision = self.routes.decide(req.method(), &normal);
        req.extensions_mut().insert(RequestPath(normal));
        let action = match decision {
            Decision::Guard => return Box::pin(self.guarded.call(req)),
            Decision::Refuse => {
                self.metrics.unguarded(UnguardedAction::Refused);
                return answer(GatewayError::RouteNotAllowed);
            }
            Decision::Public => UnguardedAction::Public,
            Decision::Forward => UnguardedAction::Forwarded,
        };
        self.metrics.unguarded(action);
        let fut = self.plain.call(req.map(PassportBody::original));
        Box::pin(async move { fut.await.map(|r| r.map(PassportBody::original)) })
    }
}

/// What happened at shutdown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections still open when the grace period ended (they were cut).
    pub connections_cut: usize,
    /// Forwarded requests still waiting for the upstream when the grace period ended:
    /// their events were never written (counted in
    /// `passport_gate_attribution_events_lost_total`).
    pub events_cut: usize,
    /// The attribution queue's report, when attribution was on.
    pub attribution: Option<DrainReport>,
}

/// A running gateway's addresses, known once it listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    /// The proxy's address.
    pub listen: SocketAddr,
    /// The admin listener's address.
    pub admin: SocketAddr,
}

/// Opens every configured sink; every sink that cannot be opened is one line.
fn sinks(
    config: &config::AttributionSection,
    redis: Option<&RedisConfig>,
) -> Result<Vec<Box<dyn Sink>>, Vec<String>> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    let mut errors = Vec::new();
    if let Some(path) = &config.audit_file {
        let max = (config.audit_max_bytes > 0).then_some(config.audit_max_bytes);
        match AuditFileSink::open(path, config.audit_fsync, max) {
            Ok(sink) => sinks.push(Box::new(sink)),
            Err(e) => errors.push(format!(
                "attribution.audit_file: cannot open {}: {e}",
                path.display()
            )),
        }
    }
    if let (Some(key), Some(redis)) = (&config.redis_stream, redis) {
        match RedisStreamSink::new(redis.clone(), key, config.redis_stream_maxlen) {
            Ok(sink) => sinks.push(Box::new(sink)),
            Err(e) => errors.push(format!("attribution.redis_stream: {e}")),
        }
    }
    if config.stdout {
        sinks.push(Box::new(JsonLinesSink::stdout()));
    }
    if let Some(path) = &config.file {
        match JsonLinesSink::create_file(path) {
            Ok(sink) => sinks.push(Box::new(sink)),
            Err(e) => errors.push(format!(
                "attribution.file: cannot open {}: {e}",
                path.display()
            )),
        }
    }
    if errors.is_empty() {
        Ok(sinks)
    } else {
        Err(errors)
    }
}

/// The replay store's own Redis client: every connection it opens first checks that the
/// server cannot silently forget records. A forgetful server refuses startup (unless
/// `accept_forgetful_redis`); an unreachable one is reported and the store fails closed
/// until it answers, checked again on every reconnect.
async fn replay_redis(
    config: &RedisConfig,
    accept_forgetful: bool,
    metrics: &Metrics,
) -> Result<Arc<Redis>, String> {
    let durability = if accept_forgetful {
        Durability::AcceptForgetful {
            counter: Some(metrics.replay_store_forgetful.clone()),
        }
    } else {
        Durability::Required
    };
    let redis = Arc::new(Redis::new(config.clone()).with_durability(durability));
    match redis.check().await {
        Ok(()) => Ok(redis),
        Err(RedisError::Forgetful(e)) => Err(format!("replay.store: {e}")),
        Err(e) => {
            tracing::warn!(error = %e, "replay store: Redis not reachable at startup; requests are refused until it is");
            Ok(redis)
        }
    }
}

/// Runs the gateway until `shutdown` completes, then stops accepting, lets in-flight
/// requests finish within the grace period, drains the attribution queue and reports.
/// `on_bound` is called once both listeners are bound.
pub async fn run(
    config: Validated,
    shutdown: impl Future<Output = ()>,
    on_bound: impl FnOnce(Bound),
) -> Result<ShutdownReport, String> {
    let raw = &config.raw;
    let registry = Registry::new();
    let metrics = Metrics::register(&registry).map_err(|e| format!("metrics: {e}"))?;
    let gateway_metrics =
        GatewayMetrics::register(&registry).map_err(|e| format!("metrics: {e}"))?;
    let transport =
        tls::TransportMetrics::register(&registry).map_err(|e| format!("metrics: {e}"))?;

    let redis_config = config.redis.clone();
    let redis = redis_config.clone().map(|c| Arc::new(Redis::new(c)));
    let key_prefix = raw
        .redis
        .as_ref()
        .map(|r| r.key_prefix.clone())
        .unwrap_or_default();
    // Problems found while opening files are collected too, so that one run reports
    // every file that cannot be opened (each line naming its key).
    let mut problems: Vec<String> = Vec::new();
    let sinks = sinks(&raw.attribution, redis_config.as_ref())
        .map_err(|list| problems.extend(list))
        .unwrap_or_default();
    let queue = if sinks.is_empty() {
        None
    } else {
        Some(
            AttributionQueue::start(
                raw.agent_envelope.attribution_queue_cap,
                sinks,
                metrics.clone(),
            )
            .map_err(|e| format!("cannot start the attribution thread: {e}"))?,
        )
    };

    let mut builder = PassportLayer::builder(raw.agent_envelope.clone()).metrics(metrics.clone());
    let mut chain_node = None;
    if let (Some(b), Some(requester_source)) = (&raw.binding, &config.requester) {
        let grants: Arc<dyn GrantSource> = match &b.chain_node {
            Some(url) => {
                let node = LcdGrantSource::with_tls(url, config.upstream_tls.clone())
                    .map_err(|e| format!("binding.chain_node: {e}"))?;
                chain_node = Some(node.clone());
                Arc::new(node)
            }
            None => Arc::new(StaticGrants(b.grants.clone())),
        };
        let settings = GrantCacheSettings {
            ttl: Duration::from_secs(b.grant_ttl_seconds),
            negative_ttl: Duration::from_secs(b.no_grant_ttl_seconds),
            query_timeout: Duration::from_millis(b.query_timeout_ms),
            failure_ttl: Duration::from_millis(b.failure_ttl_ms),
            max_bytes: b.grant_cache_max_bytes,
            max_concurrent_queries: usize::try_from(b.max_concurrent_queries).unwrap_or(4096),
        };
        builder = builder.binding(Binding::from_source(
            requester_source.clone(),
            GrantCache::new(grants, settings),
        ));
    }
    let requester = match &config.requester {
        Some(RequesterSource::Header(h)) => Some(h.clone()),
        _ => None,
    };
    if let Some(p) = &config.principals {
        let list = Arc::new(PrincipalAllowlist::new(p.fixed.clone()));
        if let Some((path, initial, interval)) = &p.file {
            list.watch_file(
                path.clone(),
                initial.clone(),
                *interval,
                p.prefix.clone(),
                metrics.principals_reload_failures.clone(),
            )
            .map_err(|e| format!("principals.allow_file: {e}"))?;
        }
        builder = builder.principals(list);
    }
    if let Some(q) = &queue {
        builder = builder
            .attribution(
                q.sender()
                    .limit_refusals(raw.attribution.audit_refusals_per_second),
            )
            .record_refusals(
                raw.attribution.audit_file.is_some() && raw.attribution.audit_refusals,
            );
    }
    if let (config::ReplayStoreKind::Redis, Some(c), true) = (
        raw.replay.store,
        &redis_config,
        raw.agent_envelope.replay_protection,
    ) {
        let store = replay_redis(c, raw.replay.accept_forgetful_redis, &metrics).await?;
        builder = builder.replay_store(Arc::new(
            RedisReplayStore::new(store, &key_prefix)
                .records_per_principal(raw.agent_envelope.replay_records_per_principal),
        ));
    }
    builder = builder.replay_fail_open(raw.replay.fail_open);
    if raw.revocation.file.is_some() || raw.revocation.redis {
        let mut list = RevocationList::default();
        list.count_bad_lines_on(metrics.revocation_bad_lines.clone());
        let list = Arc::new(list);
        if let Some(path) = &raw.revocation.file {
            if let Err(e) = list.watch_file(
                path.clone(),
                Duration::from_millis(raw.revocation.reload_ms),
            ) {
                problems.push(format!("revocation.file: {e}"));
            }
        }
        if let (true, Some(r)) = (raw.revocation.redis, &redis) {
            list.watch_redis(
                Arc::clone(r),
                format!("{key_prefix}revoked"),
                Duration::from_millis(raw.revocation.redis_poll_ms),
            );
        }
        builder = builder.revocations(list);
    }
    if let Some(h) = &raw.server.inference_id_header {
        let name = http::HeaderName::try_from(h.as_str())
            .map_err(|e| format!("server.inference_id_header: {e}"))?;
        builder = builder.inference_id_header(name);
    }
    let layer = builder.build().map_err(|errors| {
        errors
            .iter()
            .map(|e| format!("agent_envelope.{e}"))
            .collect::<Vec<_>>()
            .join("\n")
    })?;

    let access_log = AccessLog::start(
        &config.access_log,
        usize::try_from(raw.server.access_log_buffer_lines).unwrap_or(usize::MAX),
        gateway_metrics.access_log_dropped.clone(),
    )
    .map_err(|e| problems.push(e))
    .ok()
    .flatten()
    .map(Arc::new);
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("server.listen: cannot listen on {}: {e}", config.listen))?;
    let admin_listener = TcpListener::bind(config.admin_listen).await.map_err(|e| {
        format!(
            "server.admin_listen: cannot listen on {}: {e}",
            config.admin_listen
        )
    })?;
    let bound = Bound {
        listen: listener.local_addr().map_err(|e| e.to_string())?,
        admin: admin_listener.local_addr().map_err(|e| e.to_string())?,
    };

    let mut readiness = admin::Readiness {
        chain_node: None,
        upstream: None,
    };
    if let Some(node) = chain_node {
        let answered = Arc::new(AtomicBool::new(false));
        tokio::spawn(admin::probe_chain_node(node, Arc::clone(&answered)));
        readiness.chain_node = Some(answered);
    }
    if let Some(probe) = &config.upstream_probe {
        let health = Arc::new(admin::UpstreamHealth::default());
        tokio::spawn(admin::probe_upstream(
            probe.clone(),
            config.upstream_tls.clone(),
            raw.server.upstream_http2,
            Arc::clone(&health),
            gateway_metrics.upstream_up.clone(),
        ));
        readiness.upstream = Some(health);
    }
    let limits = |max_connections: u64| ConnectionLimits {
        max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
        header_read_timeout: config.header_read_timeout,
        max_header_bytes: usize::try_from(raw.server.max_header_bytes).unwrap_or(usize::MAX),
    };
    let proxy_limits = limits(raw.server.max_connections);
    let admin_limits = limits(raw.server.admin_max_connections);
    let admin_task = tokio::spawn(admin::serve(
        Acceptor::new(
            admin_listener,
            admin_limits.max_connections,
            gateway_metrics.connections("admin"),
            "admin",
        ),
        admin_limits,
        registry,
        Arc::new(readiness),
    ));

    let proxy = Proxy::new(
        config.upstream.clone(),
        proxy::UpstreamClient {
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            tls: config.upstream_tls.clone(),
            http2: raw.server.upstream_http2,
            pool_max_idle: usize::try_from(raw.server.upstream_pool_max_idle).unwrap_or(usize::MAX),
            pool_idle_timeout: Duration::from_millis(raw.server.upstream_pool_idle_timeout_ms),
            errors: transport.upstream(),
            max_requests: usize::try_from(raw.server.max_upstream_requests).unwrap_or(usize::MAX),
        },
        config.identity.clone(),
        raw.server.tls.is_some(),
    );
    let listener_tls = match &raw.server.tls {
        Some(t) => {
            let cert = Arc::new(
                tls::ReloadingCertificate::load(t.cert_file.clone(), t.key_file.clone())
                    .map_err(|e| format!("server.tls: {e}"))?,
            );
            cert.watch(
                Duration::from_millis(t.reload_ms),
                transport.certificate_reloads.clone(),
            );
            let server = tls::server_config(cert, t.client_ca_file.as_deref())
                .map_err(|e| format!("server.tls: {e}"))?;
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
        }
        None => None,
    };
    let h2_limits = Http2Limits {
        max_concurrent_streams: raw.server.http2_max_concurrent_streams,
        keep_alive_interval: (raw.server.http2_keep_alive_interval_ms > 0)
            .then(|| Duration::from_millis(raw.server.http2_keep_alive_interval_ms)),
        keep_alive_timeout: Duration::from_millis(raw.server.http2_keep_alive_timeout_ms),
    };
    let protocols = Arc::new(ProxyProtocols::new(
        &proxy_limits,
        &h2_limits,
        listener_tls,
        transport.clone(),
    ));
    let routes = Arc::new(RouteTable::new(
        config.routes.clone(),
        config.public.clone(),
        raw.routes.unguarded,
        raw.agent_envelope.enabled && raw.agent_envelope.mode == Mode::Required,
    ));
    let admission = Arc::new(Admission::new(requester));
    let mut acceptor = Acceptor::new(
        listener,
        proxy_limits.max_connections,
        gateway_metrics.connections("proxy"),
        "proxy",
    );
    let graceful = GracefulShutdown::new();
    on_bound(bound);
    tracing::info!(listen = %bound.listen, admin = %bound.admin, "gateway listening");

    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            (stream, peer, slot) = acceptor.next() => {
                let _ = stream.set_nodelay(true);
                let plain = proxy.for_peer(peer);
                let service = Dispatch {
                    guarded: layer.layer(plain.clone()),
                    plain,
                    admission: Arc::clone(&admission),
                    routes: Arc::clone(&routes),
                    metrics: gateway_metrics.clone(),
                    access_log: access_log.clone(),
                };
                let watcher = graceful.watcher();
                let protocols = Arc::clone(&protocols);
                tokio::spawn(async move {
                    protocols
                        .serve(stream, TowerToHyperService::new(service), watcher)
                        .await;
                    drop(slot);
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(acceptor);
    tracing::info!("shutting down: no new connections, waiting for in-flight requests");
    let open = graceful.count();
    let grace_ends = tokio::time::Instant::now() + config.shutdown_grace;
    let connections_cut = match tokio::time::timeout_at(grace_ends, graceful.shutdown()).await {
        Ok(()) => 0,
        Err(_) => open,
    };
    // Requests whose client already left are not connections any more, but they were
    // forwarded and still owe an event: wait for them within the same grace period.
    let events_cut = match tokio::time::timeout_at(grace_ends, layer.forwarded_done()).await {
        Ok(()) => 0,
        Err(_) => layer.forwarded_in_flight(),
    };
    metrics.attribution_lost.inc_by(events_cut as u64);
    if let Some(log) = &access_log {
        let left = log.flushed(access_log::SHUTDOWN_FLUSH).await;
        if left > 0 {
            tracing::warn!(lines = left, "access log: lines not written at shutdown");
        }
    }
    admin_task.abort();
    let attribution =
        queue.map(|q| q.shutdown(Duration::from_millis(raw.attribution.drain_deadline_ms)));
    Ok(ShutdownReport {
        connections_cut,
        events_cut,
        attribution,
    })
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
