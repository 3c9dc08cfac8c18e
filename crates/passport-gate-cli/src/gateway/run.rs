//! Running the gateway: bind, serve until shutdown, drain, report.

use super::auth_failures::AuthFailures;
use super::dispatch::Dispatch;
use super::listener::{Acceptor, ProxyProtocols};
use super::penalty::Penalty;
use super::start_error::StartError;
use super::{access_log, admin, build, Validated};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use passport_gate::attribution::DrainReport;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio::net::TcpListener;
use tower::Layer;

/// How often `/readyz` asks the replay store's Redis.
const REDIS_PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The least time given to the limit store's queued settlements at shutdown.
const LIMIT_SETTLEMENT_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// What happened at shutdown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections still open when the grace period ended (they were cut).
    pub connections_cut: usize,
    /// Forwarded requests still being answered (waiting for the upstream's head, or
    /// streaming its body) when the grace period ended: their answers were cut, and
    /// their events queued marked `cut_at_shutdown`.
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

/// Runs the gateway until `shutdown` completes, then stops accepting, lets in-flight
/// requests finish within the grace period, drains the attribution queue and reports.
/// `on_bound` is called once both listeners are bound.
pub async fn run(
    config: Validated,
    shutdown: impl Future<Output = ()>,
    on_bound: impl FnOnce(Bound),
) -> Result<ShutdownReport, StartError> {
    let build::Built {
        registry,
        gateway_metrics,
        transport,
        queue,
        layer,
        chain_node,
        access_log,
        proxy,
        listener_tls,
        proxy_limits,
        admin_limits,
        h2_limits,
        routes,
        admission,
        tracer,
        #[cfg(feature = "otel")]
        exporter,
        stores,
    } = build::build(&config).await?;

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    let admin_listener = TcpListener::bind(config.admin_listen)
        .await
        .map_err(|source| StartError::AdminListen {
            addr: config.admin_listen,
            source,
        })?;
    let bound = Bound {
        listen: listener.local_addr().map_err(StartError::LocalAddr)?,
        admin: admin_listener.local_addr().map_err(StartError::LocalAddr)?,
    };

    let limit_settlements = stores.limit_settlements;
    // A store's Redis that requests fail closed on, probed for `/readyz`.
    let watch = |what: &'static str, redis| {
        let health = Arc::new(admin::UpstreamHealth::default());
        tokio::spawn(admin::probe_redis(
            what,
            redis,
            REDIS_PROBE_INTERVAL,
            Arc::clone(&health),
        ));
        health
    };
    let mut readiness = admin::Readiness {
        chain_node: None,
        upstream: None,
        replay_redis: stores
            .replay_redis
            .map(|redis| watch(admin::REPLAY_STORE, redis)),
        limit_redis: stores
            .limit_redis
            .map(|redis| watch(admin::LIMIT_STORE, redis)),
        revocations: stores.revocations,
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
            config.upstream_pool.http2,
            Arc::clone(&health),
            gateway_metrics.upstream_up.clone(),
        ));
        readiness.upstream = Some(health);
    }
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

    let protocols = Arc::new(ProxyProtocols::new(
        &proxy_limits,
        &h2_limits,
        config.client_stall_timeout,
        listener_tls,
        transport.clone(),
    ));
    let mut acceptor = Acceptor::new(
        listener,
        proxy_limits.max_connections,
        gateway_metrics.connections("proxy"),
        "proxy",
    );
    let penalty = Penalty::new(config.auth_failure_penalty).map(Arc::new);
    let graceful = GracefulShutdown::new();
    on_bound(bound);
    tracing::info!(listen = %bound.listen, admin = %bound.admin, "gateway listening");

    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            (stream, peer, slot) = acceptor.next() => {
                if penalty.as_ref().is_some_and(|p| p.holds(peer.ip())) {
                    // Closed unread: nothing of the connection is parsed or answered.
                    gateway_metrics.penalty_refusals.inc();
                    drop((stream, slot));
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let plain = proxy.for_peer(peer);
                let auth_failures = Arc::new(
                    AuthFailures::new(config.max_auth_failures_per_connection)
                        .with_penalty(penalty.as_ref(), peer.ip()),
                );
                let service = Dispatch {
                    guarded: layer.layer(plain.clone()),
                    plain,
                    admission: Arc::clone(&admission),
                    routes: Arc::clone(&routes),
                    metrics: gateway_metrics.clone(),
                    access_log: access_log.clone(),
                    tracer: tracer.clone(),
                    auth_failures: Arc::clone(&auth_failures),
                };
                let watcher = graceful.watcher();
                let protocols = Arc::clone(&protocols);
                tokio::spawn(async move {
                    let closing = async move { auth_failures.closing().await };
                    protocols
                        .serve(stream, TowerToHyperService::new(service), watcher, closing)
                        .await;
                    drop(slot);
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(acceptor);
    protocols.stop();
    tracing::info!("shutting down: no new connections, waiting for in-flight requests");
    let open = graceful.count();
    let grace_ends = tokio::time::Instant::now() + config.shutdown_grace;
    let connections_cut = match tokio::time::timeout_at(grace_ends, graceful.shutdown()).await {
        Ok(()) => 0,
        Err(_) => open,
    };
    // Requests whose client already left are not connections any more, but they were
    // forwarded and still owe an event: wait for them within the same grace period.
    // What is still running then is cut when the process exits; its events are queued
    // now, marked, ahead of the queue's drain.
    let events_cut = match tokio::time::timeout_at(grace_ends, layer.forwarded_done()).await {
        Ok(()) => 0,
        Err(_) => layer.cut_forwarded(),
    };
    // Settlements of answers that ended are queued for the limit store's Redis: write
    // them (a reservation never settled stays charged until its window ends).
    if let Some(store) = &limit_settlements {
        let within = grace_ends
            .saturating_duration_since(tokio::time::Instant::now())
            .max(LIMIT_SETTLEMENT_FLUSH);
        let left = store.flush(within).await;
        if left > 0 {
            tracing::warn!(
                settlements = left,
                "limit store: settlements not written at shutdown; their reservations stay charged"
            );
        }
    }
    if let Some(log) = &access_log {
        let left = log.flushed(access_log::SHUTDOWN_FLUSH).await;
        if left > 0 {
            tracing::warn!(lines = left, "access log: lines not written at shutdown");
        }
    }
    #[cfg(feature = "otel")]
    if let Some(exporter) = exporter {
        exporter.shutdown().await;
    }
    admin_task.abort();
    let attribution = queue.map(|q| q.shutdown(config.attribution.drain_deadline));
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
