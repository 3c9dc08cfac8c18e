//! The exporter: one task that takes finished spans from the queue in batches of at most
//! `tracing.max_export_batch_spans` and posts each batch to the collector as an OTLP/HTTP
//! protobuf request, within `tracing.export_timeout_ms`. A batch the collector does not
//! accept is dropped and counted, not retried: the queue stays bounded when the collector
//! is down, and requests never wait for it.

use super::proto::{export_request, Origin};
use super::{SpanQueue, SpanRecord, TraceMetrics, Tracer};
use crate::gateway::settings::TracingSettings;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// A collector's answer is read up to this many bytes (a partial-success message), then
/// dropped.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Failed exports are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The running exporter task.
#[derive(Debug)]
pub struct Exporter {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    timeout: Duration,
}

struct Export {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    endpoint: http::Uri,
    timeout: Duration,
    origin: Origin,
    metrics: TraceMetrics,
    last_warning: Option<Instant>,
    failed_since_warning: u64,
}

impl Exporter {
    /// Starts the exporter; returns the tracer that feeds it.
    pub fn start(settings: &TracingSettings, metrics: TraceMetrics) -> (Tracer, Exporter) {
        let (tx, rx) = mpsc::channel(settings.max_queue_spans);
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(settings.export_timeout));
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(settings.tls.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .build(connector);
        let tracer = Tracer {
            sample_ratio: settings.sample_ratio,
            queue: SpanQueue {
                tx,
                full: metrics.dropped("queue_full"),
            },
        };
        let export = Export {
            client,
            endpoint: settings.endpoint.clone(),
            timeout: settings.export_timeout,
            origin: Origin {
                service_name: settings.service_name.clone(),
            },
            metrics,
            last_warning: None,
            failed_since_warning: 0,
        };
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(
            rx,
            stopped,
            export,
            settings.max_export_batch_spans,
            settings.export_interval,
        ));
        (
            tracer,
            Exporter {
                stop,
                task,
                timeout: settings.export_timeout,
            },
        )
    }

    /// Exports what is queued, once the connections closed: at most one batch, within one
    /// export timeout; what is left is counted as dropped (`shutdown`).
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(self.timeout + Duration::from_secs(1), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

async fn run(
    mut rx: mpsc::Receiver<SpanRecord>,
    mut stop: oneshot::Receiver<()>,
    mut export: Export,
    max_batch: usize,
    interval: Duration,
) {
    let mut batch = Vec::with_capacity(max_batch);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let room = max_batch - batch.len();
        tokio::select! {
            n = rx.recv_many(&mut batch, room) => {
                if n == 0 {
                    break;
                }
                if batch.len() < max_batch {
                    continue;
                }
            }
            _ = tick.tick() => {
                if batch.is_empty() {
                    continue;
                }
            }
            _ = &mut stop => break,
        }
        export.send(&mut batch).await;
    }
    rx.close();
    while batch.len() < max_batch {
        match rx.try_recv() {
            Ok(span) => batch.push(span),
            Err(_) => break,
        }
    }
    export.send(&mut batch).await;
    let mut left = 0;
    while rx.try_recv().is_ok() {
        left += 1;
    }
    export.metrics.dropped("shutdown").inc_by(left);
}

impl Export {
    /// Posts `batch` (and empties it); counts it exported or dropped.
    async fn send(&mut self, batch: &mut Vec<SpanRecord>) {
        if batch.is_empty() {
            return;
        }
        let body = Bytes::from(export_request(&self.origin, batch));
        let spans = batch.len() as u64;
        batch.clear();
        let request = http::Request::post(self.endpoint.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(body));
        let Ok(request) = request else {
            self.failed(spans, "the request could not be built".to_owned());
            return;
        };
        let sent = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| passport_gate::error_chain(&e))?;
            let status = response.status();
            let _ = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("the collector answered {status}"))
            }
        };
        match tokio::time::timeout(self.timeout, sent).await {
            Ok(Ok(())) => self.metrics.exported.inc_by(spans),
            Ok(Err(reason)) => self.failed(spans, reason),
            Err(_) => self.failed(spans, "timed out".to_owned()),
        }
    }

    fn failed(&mut self, spans: u64, reason: String) {
        self.metrics.dropped("export_failed").inc_by(spans);
        self.failed_since_warning += 1;
        if self.last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            tracing::warn!(
                endpoint = %self.endpoint,
                reason = %reason,
                failed_exports = self.failed_since_warning,
                "trace export failed; the spans are dropped (logged at most once a minute)"
            );
            self.last_warning = Some(Instant::now());
            self.failed_since_warning = 0;
        }
    }
}
