//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process answers)
//! and `/readyz` (listening and, when a chain node is configured, the node answered).

use super::listener::{Acceptor, ConnectionLimits};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus::Registry;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

fn answer(
    req: &Request<Incoming>,
    registry: &Registry,
    ready: &AtomicBool,
) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            crate::metrics::render(registry),
        ),
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" if ready.load(Ordering::Relaxed) => {
            text(StatusCode::OK, "text/plain", "ready\n".into())
        }
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "waiting for the chain node\n".into(),
        ),
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// Serves the admin endpoints until the task is aborted, with the same per-connection
/// bounds as the proxy listener (its own connection cap).
pub(super) async fn serve(
    mut acceptor: Acceptor,
    limits: ConnectionLimits,
    registry: Registry,
    ready: Arc<AtomicBool>,
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

/// Asks the chain node for its node info once a second until it answers at all, then
/// marks the gateway ready.
pub(super) async fn probe_chain_node(node: crate::grants::LcdGrantSource, ready: Arc<AtomicBool>) {
    loop {
        if node.answers(Duration::from_secs(5)).await {
            ready.store(true, Ordering::Relaxed);
            tracing::info!("chain node answered; ready");
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
