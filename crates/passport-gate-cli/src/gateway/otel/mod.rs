//! OpenTelemetry traces (`[tracing]`): one server span per request on the proxy
//! listener, with the verified identity, the verdict, the upstream's timing and the token
//! usage as attributes; W3C `traceparent` towards the upstream; OTLP/HTTP protobuf export
//! through a bounded queue. See `docs/tracing.md`.
//!
//! Off (no `tracing.otlp_endpoint`), none of this runs: the dispatcher holds no
//! [`Tracer`], no header is read or written and the response body carries no span.

mod context;
#[cfg(feature = "otel")]
mod export;
#[cfg(feature = "otel")]
mod proto;
mod span;

pub use context::{TraceContext, TRACEPARENT};
#[cfg(feature = "otel")]
pub use export::Exporter;
pub use span::{OpenSpan, SpanIdentity, SpanRecord, TracedBody, UpstreamTiming};

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use tokio::sync::mpsc;

/// The `reason` labels of `passport_gate_trace_spans_dropped_total`.
const DROP_REASONS: [&str; 3] = ["queue_full", "export_failed", "shutdown"];

/// The exporter's series (registered whether tracing is on or not).
#[cfg_attr(not(feature = "otel"), allow(dead_code))]
#[derive(Clone, Debug)]
pub struct TraceMetrics {
    /// Spans the collector accepted (a 2xx answer).
    pub exported: IntCounter,
    dropped: IntCounterVec,
}

impl TraceMetrics {
    /// Creates and registers the series, every label present at zero.
    pub fn register(registry: &Registry) -> Result<TraceMetrics, prometheus::Error> {
        let exported = IntCounter::new(
            "passport_gate_trace_spans_exported_total",
            "Spans the OTLP collector accepted.",
        )?;
        registry.register(Box::new(exported.clone()))?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "passport_gate_trace_spans_dropped_total",
                "Spans not exported: the queue was full (queue_full), the collector failed or refused them (export_failed), or they were still queued at shutdown (shutdown).",
            ),
            &["reason"],
        )?;
        for r in DROP_REASONS {
            dropped.with_label_values(&[r]);
        }
        registry.register(Box::new(dropped.clone()))?;
        Ok(TraceMetrics { exported, dropped })
    }

    /// The drop counter for one of [`DROP_REASONS`].
    #[cfg_attr(not(feature = "otel"), allow(dead_code))]
    fn dropped(&self, reason: &'static str) -> IntCounter {
        self.dropped.with_label_values(&[reason])
    }
}

/// Where finished spans wait for export: a bounded queue that never blocks a request. A
/// full queue (a collector slower than the traffic, or down) drops the span and counts it.
#[derive(Clone, Debug)]
pub struct SpanQueue {
    tx: mpsc::Sender<SpanRecord>,
    full: IntCounter,
}

impl SpanQueue {
    fn push(&self, span: SpanRecord) {
        if self.tx.try_send(span).is_err() {
            self.full.inc();
        }
    }
}

/// Opens the span of each request and decides whether its trace is recorded.
#[derive(Debug)]
pub struct Tracer {
    sample_ratio: f64,
    queue: SpanQueue,
}

impl Tracer {
    /// Puts the request's [`TraceContext`] in its extensions (the proxy sends it to the
    /// upstream as `traceparent`), continuing the client's trace when its `traceparent`
    /// is valid (a malformed one is ignored, and its `tracestate` removed with it); returns
    /// the open span when the trace is recorded.
    pub fn start<B>(&self, req: &mut http::Request<B>) -> Option<Box<OpenSpan>> {
        let parent = context::remote_parent(req.headers());
        if parent.is_none() {
            req.headers_mut().remove("tracestate");
        }
        let trace_id = parent.map_or_else(context::random_id, |p| p.trace_id);
        let span_id = context::random_id();
        let sampled = context::sampled(&trace_id, self.sample_ratio);
        req.extensions_mut().insert(TraceContext {
            trace_id,
            span_id,
            sampled,
        });
        sampled.then(|| {
            Box::new(OpenSpan::new(
                trace_id,
                span_id,
                parent.map(|p| p.span_id),
                req.method(),
                req.uri().path(),
                self.queue.clone(),
            ))
        })
    }
}
