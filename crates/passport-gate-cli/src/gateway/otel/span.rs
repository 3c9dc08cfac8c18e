//! One request's span: opened when the request arrives, given what the answer head says,
//! and queued for export when the answer's body ends or is dropped, with the token usage
//! it carried.

use super::super::access_log::outcome;
use super::SpanQueue;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use passport_gate::attribution::usage::UsageScan;
use pin_project_lite::pin_project;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The longest string attribute, in bytes (longer ones are cut at a character
/// boundary): a client's path or a passport's agent id must not make large spans.
pub const MAX_ATTRIBUTE_BYTES: usize = 256;

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A string, at most [`MAX_ATTRIBUTE_BYTES`].
    Str(String),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Double(f64),
}

/// `s` cut to at most [`MAX_ATTRIBUTE_BYTES`] at a character boundary.
fn bounded(s: &str) -> &str {
    let mut end = s.len().min(MAX_ATTRIBUTE_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Value {
    /// A string value, cut to [`MAX_ATTRIBUTE_BYTES`].
    pub fn text(s: &str) -> Value {
        Value::Str(bounded(s).to_owned())
    }
}

/// A finished span, as exported.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanRecord {
    /// The trace.
    pub trace_id: [u8; 16],
    /// This span.
    pub span_id: [u8; 8],
    /// The client's span, when it sent a valid `traceparent`.
    pub parent: Option<[u8; 8]>,
    /// `{method}` or `{method} {route}`.
    pub name: String,
    /// Start, Unix nanoseconds.
    pub start_unix_nanos: u64,
    /// End, Unix nanoseconds.
    pub end_unix_nanos: u64,
    /// The attributes.
    pub attributes: Vec<(&'static str, Value)>,
    /// The status message of a failed request (a 5xx answer, or none at all).
    pub error: Option<String>,
}

/// The verified identity of an accepted request, put in the response's extensions by the
/// proxy for a recorded trace. Never a secret: no passport, no signature, no credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanIdentity {
    /// The agent.
    pub agent_id: String,
    /// The principal it acts for.
    pub principal_address: String,
    /// The passport's id (hex SHA-256 of its JCS form).
    pub passport_id: String,
    /// The model the request named.
    pub model: String,
}

/// How long the upstream took to send its response head (or to fail), put in the
/// response's extensions by the proxy for a recorded trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpstreamTiming(pub Duration);

/// A recorded request's span until its answer ends.
#[derive(Debug)]
pub struct OpenSpan {
    record: Option<SpanRecord>,
    started: Instant,
    scan: Option<UsageScan>,
    queue: SpanQueue,
}

/// HTTP methods named as they are in a span; any other is `_OTHER` (OpenTelemetry's HTTP
/// conventions), so a client's method never sets a span name.
fn method_name(method: &http::Method) -> &'static str {
    use http::Method as M;
    match *method {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::PATCH => "PATCH",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        M::CONNECT => "CONNECT",
        M::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

impl OpenSpan {
    pub(super) fn new(
        trace_id: [u8; 16],
        span_id: [u8; 8],
        parent: Option<[u8; 8]>,
        method: &http::Method,
        path: &str,
        queue: SpanQueue,
    ) -> OpenSpan {
        let method = method_name(method);
        let start_unix_nanos =
            u64::try_from(passport_core::time::Timestamp::now().unix_nanos()).unwrap_or_default();
        OpenSpan {
            record: Some(SpanRecord {
                trace_id,
                span_id,
                parent,
                name: method.to_owned(),
                start_unix_nanos,
                end_unix_nanos: start_unix_nanos,
                attributes: vec![
                    ("http.request.method", Value::Str(method.to_owned())),
                    ("url.path", Value::text(path)),
                ],
                error: None,
            }),
            started: Instant::now(),
            scan: None,
            queue,
        }
    }

    /// Names the route the request took (a configured route: low cardinality).
    pub fn route(&mut self, route: &str) {
        if let Some(r) = &mut self.record {
            r.name = format!("{} {}", r.name, bounded(route));
            r.attributes.push(("http.route", Value::text(route)));
        }
    }

    /// Takes note of the answer's head: its status, the verdict, the verified identity
    /// and the upstream's timing; an accepted answer's body is then read for its token
    /// usage as it passes.
    pub fn respond<B>(&mut self, response: &http::Response<B>) {
        let Some(r) = &mut self.record else {
            return;
        };
        let status = response.status();
        let (outcome, code) = outcome(response);
        r.attributes.push((
            "http.response.status_code",
            Value::Int(i64::from(status.as_u16())),
        ));
        r.attributes
            .push(("passport_gate.outcome", Value::Str(outcome.to_owned())));
        if let Some(code) = code {
            r.attributes
                .push(("passport_gate.code", Value::Str(code.to_owned())));
        }
        if status.is_server_error() {
            r.error = Some(code.unwrap_or("upstream_5xx").to_owned());
        }
        let ext = response.extensions();
        if let Some(id) = ext.get::<SpanIdentity>() {
            r.attributes.extend([
                ("passport_gate.agent_id", Value::text(&id.agent_id)),
                (
                    "passport_gate.principal_address",
                    Value::text(&id.principal_address),
                ),
                ("passport_gate.passport_id", Value::text(&id.passport_id)),
                ("gen_ai.request.model", Value::text(&id.model)),
            ]);
            self.scan = Some(UsageScan::for_response(response.headers()));
        }
        if let Some(UpstreamTiming(t)) = ext.get::<UpstreamTiming>() {
            r.attributes.push((
                "passport_gate.upstream.duration_ms",
                Value::Double(t.as_secs_f64() * 1e3),
            ));
        }
    }

    fn feed(&mut self, data: &[u8]) {
        if let Some(scan) = &mut self.scan {
            scan.feed(data);
        }
    }

    /// Ends the span (once) and queues it.
    fn finish(&mut self) {
        let Some(mut r) = self.record.take() else {
            return;
        };
        let elapsed = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        r.end_unix_nanos = r.start_unix_nanos.saturating_add(elapsed);
        if !r
            .attributes
            .iter()
            .any(|(k, _)| *k == "http.response.status_code")
        {
            // Dropped before an answer: the client left first.
            r.attributes.push((
                "passport_gate.outcome",
                Value::Str("client_disconnected".to_owned()),
            ));
        }
        if let Some(u) = self.scan.take().and_then(|s| s.usage()) {
            let int = |v: u64| Value::Int(i64::try_from(v).unwrap_or(i64::MAX));
            if let Some(v) = u.prompt_tokens {
                r.attributes.push(("gen_ai.usage.input_tokens", int(v)));
            }
            if let Some(v) = u.completion_tokens {
                r.attributes.push(("gen_ai.usage.output_tokens", int(v)));
            }
            if let Some(v) = u.total_tokens {
                r.attributes
                    .push(("passport_gate.usage.total_tokens", int(v)));
            }
        }
        self.queue.push(r);
    }
}

impl Drop for OpenSpan {
    fn drop(&mut self) {
        self.finish();
    }
}

pin_project! {
    /// The gateway's response body: the answer, and the span of a recorded request,
    /// ended when the answer ends or is dropped. Without a span it only forwards.
    pub struct TracedBody<B> {
        #[pin]
        body: B,
        span: Option<Box<OpenSpan>>,
    }
}

impl<B> TracedBody<B> {
    /// `body`, without a span.
    pub fn untraced(body: B) -> TracedBody<B> {
        TracedBody { body, span: None }
    }

    /// This body, ending `span` (when any) with it.
    pub fn with_span(self, span: Option<Box<OpenSpan>>) -> TracedBody<B> {
        TracedBody {
            body: self.body,
            span,
        }
    }
}

impl<B: Body<Data = Bytes>> Body for TracedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        if let Some(span) = this.span {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        span.feed(data);
                    }
                }
                Poll::Ready(None | Some(Err(_))) => span.finish(),
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
