//! The per-connection service: admission, then the route decision.

use super::access_log::AccessLog;
use super::admission::Admission;
use super::auth_failures::AuthFailures;
use super::metrics::{GatewayMetrics, Unguarded as UnguardedAction};
use super::otel::{OpenSpan, TracedBody, Tracer};
use super::proxy::{Proxy, ProxyBody};
use super::routes::{Decision, RouteTable};
use super::GatewayError;
use hyper::body::Incoming;
use passport_gate::layer::{PassportBody, PassportService};
use passport_gate::RequestPath;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::Service;

/// The response body of the gateway: the answer, carrying the request's span when its
/// trace is recorded.
pub type GatewayBody = TracedBody<PassportBody<ProxyBody>>;

/// Per-connection service: admission first (method, path, `Connection`, framing), then
/// the route decision on the normal path: through the layer, forwarded without a
/// passport check, or refused.
#[derive(Clone)]
pub(super) struct Dispatch {
    pub(super) guarded: PassportService<Proxy<Incoming>>,
    pub(super) plain: Proxy<Incoming>,
    pub(super) admission: Arc<Admission>,
    pub(super) routes: Arc<RouteTable>,
    pub(super) metrics: GatewayMetrics,
    pub(super) access_log: Option<Arc<AccessLog>>,
    pub(super) tracer: Option<Arc<Tracer>>,
    /// This connection's consecutive authentication failures.
    pub(super) auth_failures: Arc<AuthFailures>,
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
        let failures = Arc::clone(&self.auth_failures);
        let closed = self.metrics.auth_failure_closes.clone();
        let log = self.access_log.as_ref().map(|log| {
            (
                Arc::clone(log),
                std::time::Instant::now(),
                req.method().clone(),
                // The path as received, without the query (which may carry secrets).
                req.uri().path().to_owned(),
            )
        });
        let mut span = self.tracer.as_ref().and_then(|t| t.start(&mut req));
        let answered = self.route(req, span.as_deref_mut());
        Box::pin(async move {
            // HTTP/2 streams received before the close was decided run after it: once
            // the connection reached its limit, they cost no passport check.
            let mut response = if failures.reached() {
                drop(answered);
                GatewayError::AuthFailuresExceeded
                    .http_response()
                    .map(TracedBody::untraced)
            } else {
                answered.await?
            };
            if failures.record(&mut response) {
                closed.inc();
            }
            if let Some((log, started, method, path)) = log {
                log.record(&method, &path, &response, started);
            }
            if let Some(span) = &mut span {
                span.respond(&response);
            }
            Ok(response.map(|b| b.with_span(span)))
        })
    }
}

impl Dispatch {
    fn route(
        &mut self,
        mut req: http::Request<Incoming>,
        span: Option<&mut OpenSpan>,
    ) -> DispatchFuture {
        let answer = |e: GatewayError| -> DispatchFuture {
            Box::pin(std::future::ready(Ok(e
                .http_response()
                .map(TracedBody::untraced))))
        };
        let normal = match self.admission.admit(req.method(), req.uri(), req.headers()) {
            Ok(normal) => normal,
            Err(e) => {
                self.metrics.gateway_refusal(e);
                return answer(e);
            }
        };
        let decision = self.routes.decide(req.method(), &normal);
        if let Some(span) = span {
            if let Some(route) = self.routes.configured_route(req.method(), &normal) {
                span.route(route);
            }
        }
        req.extensions_mut().insert(RequestPath(normal));
        let action = match decision {
            Decision::Guard => {
                let fut = self.guarded.call(req);
                return Box::pin(async move { fut.await.map(|r| r.map(TracedBody::untraced)) });
            }
            Decision::Refuse => {
                self.metrics.unguarded(UnguardedAction::Refused);
                return answer(GatewayError::RouteNotAllowed);
            }
            Decision::Public => {
                req.extensions_mut()
                    .insert(super::upstream_auth::PublicRoute);
                UnguardedAction::Public
            }
            Decision::Forward => UnguardedAction::Forwarded,
        };
        self.metrics.unguarded(action);
        let fut = self.plain.call(req.map(PassportBody::original));
        Box::pin(async move {
            fut.await
                .map(|r| r.map(|b| TracedBody::untraced(PassportBody::original(b))))
        })
    }
}
