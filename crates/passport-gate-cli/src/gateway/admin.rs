//! The admin listener: `/metrics` (Prometheus text), `/livez` and `/healthz` (the
//! process answers; nothing else is checked, so an orchestrator never restarts a
//! gateway because a store is down) and `/readyz` (the gateway can serve passport
//! requests: the chain node answered, when one is configured; the replay store's Redis
//! and the limit store's Redis answer, when the gateway fails closed on them (with
//! `fail_open` a request is admitted while its store is down, so the gateway stays
//! ready); the shared revocation set has been
//! read and its last poll succeeded; with `[server.upstream_probe]`, the upstream's
//! last probe got an answer that counts).

use super::listener::{Acceptor, ConnectionLimits};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use passport_gate::warn_limit::WarnLimiter;
use prometheus::Registry;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

/// The upstream's health as the last probe found it. `/readyz` reads it; it never
/// causes a request to the upstream.
#[derive(Debug, Default)]
pub(super) struct UpstreamHealth(RwLock<Option<ProbeResult>>);

#[derive(Clone, Debug)]
struct ProbeResult {
    healthy: bool,
    detail: String,
    at: Instant,
}

impl UpstreamHealth {
    fn last(&self) -> Option<ProbeResult> {
        self.0.read().ok().and_then(|g| g.clone())
    }

    fn set(&self, r: ProbeResult) {
        if let Ok(mut g) = self.0.write() {
            *g = Some(r);
        }
    }
}

/// What `/readyz` reads: the chain node's first answer, the replay and limit stores'
/// Redis and the upstream probe's cached results, and the revocation list's state.
pub(super) struct Readiness {
    pub(super) chain_node: Option<Arc<AtomicBool>>,
    pub(super) upstream: Option<Arc<UpstreamHealth>>,
    pub(super) replay_redis: Option<Arc<UpstreamHealth>>,
    pub(super) limit_redis: Option<Arc<UpstreamHealth>>,
    pub(super) revocations: Option<Arc<passport_gate::revocation::RevocationList>>,
}

/// How often a failing probe is logged, at most.
const FAILED_PROBE_LOG_EVERY: Duration = Duration::from_secs(10);

/// Records one probe result: a failure is logged at WARN with its cause (rate-limited),
/// a recovery at INFO.
fn record_probe(what: &str, health: &UpstreamHealth, result: ProbeResult, log: &mut WarnLimiter) {
    let was_healthy = health.last().map(|p| p.healthy);
    if !result.healthy {
        if let Some(held_back) = log.failed(&result.detail) {
            tracing::warn!(
                probe = what,
                cause = %result.detail,
                failed_probes_not_logged = held_back,
                "readiness probe failed; /readyz answers 503"
            );
        }
    } else {
        log.succeeded();
        if was_healthy != Some(true) {
            tracing::info!(probe = what, detail = %result.detail, "readiness probe succeeded");
        }
    }
    health.set(result);
}

/// `/readyz`: 200 when every configured check passes, else 503; the body has one line
/// for the verdict and one per check.
fn readyz(r: &Readiness) -> Response<Full<Bytes>> {
    let mut ready = true;
    let mut lines = Vec::new();
    if let Some(node) = &r.chain_node {
        if node.load(Ordering::Relaxed) {
            lines.push("chain node: answered".to_owned());
        } else {
            ready = false;
            lines.push("chain node: waiting for the chain node".to_owned());
        }
    }
    for (name, health) in [
        (REPLAY_STORE, &r.replay_redis),
        (LIMIT_STORE, &r.limit_redis),
        ("upstream", &r.upstream),
    ] {
        let Some(health) = health else { continue };
        match health.last() {
            None => {
                ready = false;
                lines.push(format!("{name}: not probed yet"));
            }
            Some(p) => {
                ready &= p.healthy;
                lines.push(format!(
                    "{name}: {} ({}, {} ms ago)",
                    if p.healthy { "ok" } else { "failing" },
                    p.detail,
                    p.at.elapsed().as_millis()
                ));
            }
        }
    }
    if let Some(list) = &r.revocations {
        use passport_gate::revocation::RevocationHealth;
        match list.health() {
            RevocationHealth::Current => lines.push("revocations: read".to_owned()),
            RevocationHealth::NotRead(e) => {
                ready = false;
                lines.push(format!(
                    "revocations: the shared set has not been read ({e}); passport requests are refused"
                ));
            }
            RevocationHealth::Stale(e) => {
                ready = false;
                lines.push(format!(
                    "revocations: the last poll failed ({e}); the entries read before stay in force"
                ));
            }
        }
    }
    let mut body = if ready { "ready\n" } else { "not ready\n" }.to_owned();
    for l in lines {
        body.push_str(&l);
        body.push('\n');
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    text(status, "text/plain", body)
}

fn answer(
    req: &Request<Incoming>,
    registry: &Registry,
    ready: &Readiness,
) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            passport_gate::metrics::render(registry),
        ),
        "/livez" | "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => readyz(ready),
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// Serves the admin endpoints until the task is aborted, with the same per-connection
/// bounds as the proxy listener (its own connection cap).
pub(super) async fn serve(
    mut acceptor: Acceptor,
    limits: ConnectionLimits,
    registry: Registry,
    ready: Arc<Readiness>,
) {
    let registry = Arc::new(registry);
    let http1 = limits.http1();
    loop {
        let (stream, _, slot) = acceptor.next().await;
        let registry = Arc::clone(&registry);
        let ready = Arc::clone(&ready);
        let conn = http1.serve_connection(
            TokioIo::new(stream),
            hyper::service::service_fn(move |req: Request<Incoming>| {
                let resp = answer(&req, &registry, &ready);
                async move { Ok::<_, Infallible>(resp) }
            }),
        );
        tokio::spawn(async move {
            let _ = conn.await;
            drop(slot);
        });
    }
}

/// Whether the upstream's answer `status` counts as ready: one of `ok_statuses`, or,
/// when none are configured, any status below 500 (a 404 on the probe path still
/// proves the upstream is there and answering; a 5xx says it is not serving).
fn probe_status_ok(status: u16, ok_statuses: &[u16]) -> bool {
    if ok_statuses.is_empty() {
        status < 500
    } else {
        ok_statuses.contains(&status)
    }
}

/// Asks the upstream `GET probe.uri` every `probe.interval` (each within
/// `probe.timeout`) and keeps the result for `/readyz`: healthy when its status counts
/// ([`probe_status_ok`]). `up` is 1 while healthy, else 0. Every failed probe is logged
/// at WARN with its cause, as [`WarnLimiter`] allows with [`FAILED_PROBE_LOG_EVERY`].
pub(super) async fn probe_upstream(
    probe: super::settings::UpstreamProbe,
    tls: rustls::ClientConfig,
    http2: bool,
    health: Arc<UpstreamHealth>,
    up: prometheus::IntGauge,
) {
    // The probe reaches the upstream as the proxy does: same trust anchors, client
    // certificate and protocol, so a healthy probe means the proxy can connect too.
    let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
    tcp.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let connector = if http2 {
        builder.enable_http2().wrap_connector(tcp)
    } else {
        builder.enable_http1().wrap_connector(tcp)
    };
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(http2)
            .build(connector);
    let mut log = WarnLimiter::new(FAILED_PROBE_LOG_EVERY);
    let mut ticks = tokio::time::interval(probe.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let result = match tokio::time::timeout(probe.timeout, client.get(probe.uri.clone())).await
        {
            Ok(Ok(resp)) => {
                let status = resp.status();
                ProbeResult {
                    healthy: probe_status_ok(status.as_u16(), &probe.ok_statuses),
                    detail: format!("GET {} answered {}", probe.uri.path(), status.as_u16()),
                    at: Instant::now(),
                }
            }
            Ok(Err(e)) => ProbeResult {
                healthy: false,
                detail: format!("GET {} failed: {e}", probe.uri.path()),
                at: Instant::now(),
            },
            Err(_) => ProbeResult {
                healthy: false,
                detail: format!(
                    "GET {} did not answer within {} ms",
                    probe.uri.path(),
                    probe.timeout.as_millis()
                ),
                at: Instant::now(),
            },
        };
        up.set(i64::from(result.healthy));
        record_probe("upstream", &health, result, &mut log);
    }
}

/// The name of the replay store's check in `/readyz` and in the probe's log lines.
pub(super) const REPLAY_STORE: &str = "replay store";

/// The name of the limit store's check in `/readyz` and in the probe's log lines.
pub(super) const LIMIT_STORE: &str = "limit store";

/// Asks a store's Redis (`what`: [`REPLAY_STORE`] or [`LIMIT_STORE`]) every `interval`
/// (a `PING`, which also connects and checks a new connection's durability settings)
/// and keeps the result for `/readyz`.
pub(super) async fn probe_redis(
    what: &'static str,
    redis: Arc<passport_gate::redis_client::Redis>,
    interval: Duration,
    health: Arc<UpstreamHealth>,
) {
    let mut log = WarnLimiter::new(FAILED_PROBE_LOG_EVERY);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let result = match redis.check().await {
            Ok(()) => ProbeResult {
                healthy: true,
                detail: format!("Redis at {} answered", redis.address()),
                at: Instant::now(),
            },
            Err(e) => ProbeResult {
                healthy: false,
                detail: e.to_string(),
                at: Instant::now(),
            },
        };
        record_probe(what, &health, result, &mut log);
    }
}

/// Asks the chain node for its node info once a second until it answers at all, then
/// marks the gateway ready.
pub(super) async fn probe_chain_node(
    node: passport_gate::grants::LcdGrantSource,
    ready: Arc<AtomicBool>,
) {
    loop {
        if node.answers(Duration::from_secs(5)).await {
            ready.store(true, Ordering::Relaxed);
            tracing::info!("chain node answered; ready");
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
