//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process answers)
//! and `/readyz` (listening and, when a chain node is configured, the node answered;
//! with `[server.upstream_probe]`, the upstream's last probe succeeded).

use super::listener::{Acceptor, ConnectionLimits};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
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

/// What `/readyz` reads: the chain node's first answer, and the upstream probe's cached
/// result when a probe is configured.
pub(super) struct Readiness {
    pub(super) chain_node: Option<Arc<AtomicBool>>,
    pub(super) upstream: Option<Arc<UpstreamHealth>>,
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
    if let Some(health) = &r.upstream {
        match health.last() {
            None => {
                ready = false;
                lines.push("upstream: not probed yet".to_owned());
            }
            Some(p) => {
                ready &= p.healthy;
                lines.push(format!(
                    "upstream: {} ({}, {} ms ago)",
                    if p.healthy { "ok" } else { "failing" },
                    p.detail,
                    p.at.elapsed().as_millis()
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
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
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

/// Asks the upstream `GET probe.uri` every `probe.interval` (each within
/// `probe.timeout`) and keeps the result for `/readyz`: healthy when it answers with a
/// status from 200 to 399 (as a Kubernetes HTTP probe counts it). `up` is 1 while
/// healthy, else 0.
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
    let mut ticks = tokio::time::interval(probe.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let result = match tokio::time::timeout(probe.timeout, client.get(probe.uri.clone())).await
        {
            Ok(Ok(resp)) => {
                let status = resp.status();
                ProbeResult {
                    healthy: (200..400).contains(&status.as_u16()),
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
        if result.healthy != health.last().is_some_and(|p| p.healthy) {
            tracing::info!(healthy = result.healthy, detail = %result.detail, "upstream probe");
        }
        up.set(i64::from(result.healthy));
        health.set(result);
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
