//! `passport-gate serve`: a reverse proxy that puts the passport layer in front of an
//! OpenAI-compatible upstream, with an admin listener and graceful shutdown.

mod admin;
pub mod admission;
pub mod config;
mod error;
mod listener;
pub mod path;
mod proxy;
mod routes;

pub use config::{GatewayConfig, Overrides, Validated};
pub use error::{GatewayError, ALLOWED_METHODS};
pub use proxy::{strip_hop_by_hop, NormalPath, Proxy};

use crate::attribution::{
    AttributionQueue, AuditFileSink, DrainReport, JsonLinesSink, RedisStreamSink, Sink,
};
use crate::config::Mode;
use crate::grants::{GrantCache, GrantCacheSettings, GrantSource, LcdGrantSource, StaticGrants};
use crate::layer::{Binding, PassportBody, PassportLayer, PassportService};
use crate::metrics::{Metrics, Unguarded as UnguardedAction};
use crate::redis::{Durability, Redis, RedisConfig, RedisError};
use crate::replay::RedisReplayStore;
use crate::revocation::RevocationList;
use admission::Admission;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use listener::{Acceptor, ConnectionLimits};
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
    metrics: Metrics,
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

    fn call(&mut self, mut req: http::Request<Incoming>) -> DispatchFuture {
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
        req.extensions_mut().insert(NormalPath(normal));
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

fn sinks(
    config: &config::AttributionSection,
    redis: Option<&RedisConfig>,
) -> Result<Vec<Box<dyn Sink>>, String> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(path) = &config.audit_file {
        let max = (config.audit_max_bytes > 0).then_some(config.audit_max_bytes);
        let sink = AuditFileSink::open(path, config.audit_fsync, max).map_err(|e| {
            format!(
                "attribution.audit_file: cannot open {}: {e}",
                path.display()
            )
        })?;
        sinks.push(Box::new(sink));
    }
    if let (Some(key), Some(redis)) = (&config.redis_stream, redis) {
        let sink = RedisStreamSink::new(redis.clone(), key, config.redis_stream_maxlen)
            .map_err(|e| format!("attribution.redis_stream: {e}"))?;
        sinks.push(Box::new(sink));
    }
    if config.stdout {
        sinks.push(Box::new(JsonLinesSink::stdout()));
    }
    if let Some(path) = &config.file {
        let sink = JsonLinesSink::create_file(path)
            .map_err(|e| format!("attribution.file: cannot open {}: {e}", path.display()))?;
        sinks.push(Box::new(sink));
    }
    Ok(sinks)
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

    let redis_config = match &raw.redis {
        Some(r) => Some(
            RedisConfig::from_url(&r.url, Duration::from_millis(r.timeout_ms))
                .map_err(|e| format!("redis.url: {e}"))?,
        ),
        None => None,
    };
    let redis = redis_config.clone().map(|c| Arc::new(Redis::new(c)));
    let key_prefix = raw
        .redis
        .as_ref()
        .map(|r| r.key_prefix.clone())
        .unwrap_or_default();
    let sinks = sinks(&raw.attribution, redis_config.as_ref())?;
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
    let mut requester = None;
    if let Some(b) = &raw.binding {
        let source: Arc<dyn GrantSource> = match &b.chain_node {
            Some(url) => {
                chain_node = Some(url.clone());
                Arc::new(LcdGrantSource::new(url).map_err(|e| format!("binding.chain_node: {e}"))?)
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
        let header = http::HeaderName::try_from(b.requester_header.as_str())
            .map_err(|e| format!("binding.requester_header: {e}"))?;
        requester = Some(header.clone());
        builder = builder.binding(Binding::new(header, GrantCache::new(source, settings)));
    }
    if let Some(q) = &queue {
        builder = builder.attribution(q.sender()).record_refusals(
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
            list.watch_file(
                path.clone(),
                Duration::from_millis(raw.revocation.reload_ms),
            )
            .map_err(|e| format!("revocation.file: {e}"))?;
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

    let ready = Arc::new(AtomicBool::new(chain_node.is_none()));
    if let Some(url) = chain_node {
        tokio::spawn(admin::probe_chain_node(url, Arc::clone(&ready)));
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
            metrics.connections("admin"),
            "admin",
        ),
        admin_limits,
        registry,
        Arc::clone(&ready),
    ));

    let proxy = Proxy::new(
        config.upstream.clone(),
        config.connect_timeout,
        config.response_timeout,
    );
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
        metrics.connections("proxy"),
        "proxy",
    );
    let http1 = proxy_limits.http1();
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
                    metrics: metrics.clone(),
                };
                let conn = http1
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
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
