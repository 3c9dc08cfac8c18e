//! [`PassportService`]: the per-request logic of the layer.

use super::body::{PassportBody, ResponseBody};
use super::future::ResponseFuture;
use super::layer::Shared;
use crate::attribution::{new_event_id, AttributionEvent, EVENT_VERSION};
use crate::config::Mode;
use crate::verifier::{has_passport_headers, PassportHeaders, Rejection, VerifiedAgent};
use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderMap, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::Service;
use tracing::Instrument;

/// The service produced by [`PassportLayer`](super::PassportLayer).
#[derive(Clone)]
pub struct PassportService<S> {
    pub(crate) inner: S,
    pub(crate) shared: Arc<Shared>,
}

impl<S> std::fmt::Debug for PassportService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassportService").finish_non_exhaustive()
    }
}

/// What the layer forwards along with a verified request.
struct Accepted {
    agent: VerifiedAgent,
    requester: Option<String>,
    body: Bytes,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for PassportService<S>
where
    S: Service<Request<PassportBody<ReqB>>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Body<Data = Bytes> + Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        if self.shared.verifier.is_none() {
            return ResponseFuture::passthrough(self.inner.call(req.map(PassportBody::original)));
        }
        if !has_passport_headers(req.headers()) {
            if self.shared.mode == Mode::Required {
                return ResponseFuture::rejected(reject(&self.shared, Rejection::PassportRequired));
            }
            self.shared.metrics.passthrough();
            return ResponseFuture::passthrough(self.inner.call(req.map(PassportBody::original)));
        }
        // The inner service was driven to readiness; take that instance and leave a
        // fresh clone behind (tower's documented pattern for moving into a future).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::verifying(Box::pin(verify_then_call(
            Arc::clone(&self.shared),
            inner,
            req,
        )))
    }
}

fn reject<B>(shared: &Shared, r: Rejection) -> Response<ResponseBody<B>> {
    shared.metrics.rejected(r);
    tracing::debug!(code = r.code(), "passport rejected");
    r.http_response().map(PassportBody::from_full)
}

async fn verify_then_call<S, ReqB, ResB>(
    shared: Arc<Shared>,
    mut inner: S,
    req: Request<ReqB>,
) -> Result<Response<ResponseBody<ResB>>, S::Error>
where
    S: Service<Request<PassportBody<ReqB>>, Response = Response<ResB>>,
    ReqB: Body<Data = Bytes>,
{
    let (mut parts, body) = req.into_parts();
    let accepted = match authorize(&shared, &parts, body).await {
        Ok(a) => a,
        Err(r) => return Ok(reject(&shared, r)),
    };
    shared.metrics.accepted();
    let span = tracing::info_span!(
        "passport",
        agent_id = accepted.agent.agent_id(),
        principal = accepted.agent.principal_address()
    );
    let started = Instant::now();
    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();
    parts.extensions.insert(accepted.agent.clone());
    let request = Request::from_parts(parts, PassportBody::held(accepted.body));
    let response = inner.call(request).instrument(span).await?;
    if let Some(sender) = &shared.attribution {
        let event_id = new_event_id();
        let inference_id = shared
            .inference_id_header
            .as_ref()
            .and_then(|h| response.headers().get(h))
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 256)
            .map_or_else(|| event_id.clone(), str::to_owned);
        let agent = &accepted.agent;
        sender.emit(AttributionEvent {
            v: EVENT_VERSION.to_owned(),
            event_id,
            inference_id,
            chain_id: agent.chain_id().to_owned(),
            model: agent.model().to_owned(),
            agent_id: agent.agent_id().to_owned(),
            principal_address: agent.principal_address().to_owned(),
            beneficiary: agent.beneficiary().map(str::to_owned),
            requester_address: accepted.requester,
            request_body_sha256: hex::encode(agent.body_sha256()),
            envelope_sha256: hex::encode(agent.envelope_sha256()),
            passport_expires_at: agent.envelope().scope.expires_at_text.clone(),
            verified_at: agent.verified_at().to_rfc3339(),
            method: method.as_str().to_owned(),
            path,
            status: response.status().as_u16(),
            latency_ms: started.elapsed().as_millis() as u64,
        });
    }
    Ok(response.map(PassportBody::original))
}

/// Steps 1 to 12 for a request that carries passport headers.
async fn authorize<B>(shared: &Shared, parts: &Parts, body: B) -> Result<Accepted, Rejection>
where
    B: Body<Data = Bytes>,
{
    let verifier = shared
        .verifier
        .as_ref()
        .ok_or(Rejection::PassportRequired)?;
    let headers =
        PassportHeaders::from_headers(&parts.headers)?.ok_or(Rejection::SigHeaderMismatch)?;
    let body = tokio::time::timeout(
        shared.body_read_timeout,
        read_limited(&parts.headers, body, verifier.max_body_size()),
    )
    .await
    .map_err(|_| Rejection::BodyReadTimeout)??;
    let uri = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let started = Instant::now();
    let verdict = verifier.verify_request(&headers, parts.method.as_str(), uri, &body);
    shared
        .metrics
        .verify_seconds
        .observe(started.elapsed().as_secs_f64());
    let agent = verdict?;
    if shared
        .revocations
        .as_ref()
        .is_some_and(|l| l.revokes(&agent))
    {
        return Err(Rejection::PassportRevoked);
    }
    let requester = match &shared.binding {
        None => None,
        Some(binding) => {
            let mut values = parts.headers.get_all(&binding.requester_header).iter();
            let requester = match (values.next(), values.next()) {
                (Some(v), None) => v.to_str().map_err(|_| Rejection::PrincipalMismatch)?,
                _ => return Err(Rejection::PrincipalMismatch),
            };
            // Unsigned: it must be an account address before it keys a cache or a query.
            if crate::grants::check_requester(agent.principal_address(), requester).is_err() {
                return Err(Rejection::RequesterAddressInvalid);
            }
            let started = Instant::now();
            let lookup = binding
                .grants
                .is_authorized(
                    agent.principal_address(),
                    requester,
                    &binding.msg_type_url,
                    agent.verified_at(),
                )
                .await;
            let (granted, how) = lookup.map_err(|e| {
                shared.metrics.chain_query_errors.inc();
                tracing::warn!(error = %e, "grant query failed");
                Rejection::ChainQueryFailed
            })?;
            if how.hit {
                shared.metrics.grant_cache_hits.inc();
            } else {
                shared.metrics.grant_cache_misses.inc();
                shared
                    .metrics
                    .chain_query_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            if !granted {
                return Err(Rejection::PrincipalMismatch);
            }
            Some(requester.to_owned())
        }
    };
    if let Some(guard) = &shared.replay {
        check_replay(
            shared,
            guard,
            &headers.signature,
            &agent,
            agent.verified_at(),
        )
        .await?;
    }
    Ok(Accepted {
        agent,
        requester,
        body,
    })
}

/// Step 13: refuses an exact replay. It runs after every other check, so a forged or
/// otherwise refused request never occupies the store.
async fn check_replay(
    shared: &Shared,
    guard: &super::layer::ReplayGuard,
    signature: &[u8; 64],
    agent: &VerifiedAgent,
    now: crate::time::Timestamp,
) -> Result<(), Rejection> {
    use crate::replay::{ReplayError, ReplayRecord, ReplayVerdict};
    use sha2::Digest;
    let key: [u8; 32] = sha2::Sha256::digest(signature).into();
    let record = ReplayRecord {
        key: &key,
        principal: agent.principal_address(),
        now,
        until: agent.expires_at().plus_seconds(guard.clock_skew_seconds),
    };
    match guard.store.check_and_record(record).await {
        Ok(ReplayVerdict::Fresh) => Ok(()),
        Ok(ReplayVerdict::Replayed) => {
            shared.metrics.replays_refused.inc();
            Err(Rejection::RequestReplayed)
        }
        Err(ReplayError::Full) => Err(Rejection::ReplayStoreFull),
        Err(ReplayError::QuotaExceeded) => Err(Rejection::ReplayQuotaExceeded),
        Err(ReplayError::Untrusted(e)) => {
            shared.metrics.replay_store_failure(false);
            tracing::error!(error = %e, "replay store refused; refusing (fail-closed)");
            Err(Rejection::ReplayStoreUnavailable)
        }
        Err(ReplayError::Unavailable(e)) => {
            shared.metrics.replay_store_failure(guard.fail_open);
            if guard.fail_open {
                tracing::warn!(error = %e, "replay store unavailable; accepting (fail-open)");
                Ok(())
            } else {
                tracing::warn!(error = %e, "replay store unavailable; refusing (fail-closed)");
                Err(Rejection::ReplayStoreUnavailable)
            }
        }
    }
}

/// Reads the body, refusing a declared `Content-Length` over `limit` before reading a
/// byte, and counting the bytes actually received against `limit` otherwise (a client
/// may lie about, or omit, the length).
async fn read_limited<B>(headers: &HeaderMap, body: B, limit: u64) -> Result<Bytes, Rejection>
where
    B: Body<Data = Bytes>,
{
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Rejection::BodyTooLarge);
    }
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut received: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Rejection::BodyReadFailed)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received += data.len() as u64;
        if received > limit {
            return Err(Rejection::BodyTooLarge);
        }
        // One chunk is kept as is; only a body in several chunks is copied together.
        match (&mut first, &mut joined) {
            (None, None) => first = Some(data),
            (Some(f), None) => {
                let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).max(received) as usize);
                buf.extend_from_slice(f);
                buf.extend_from_slice(&data);
                first = None;
                joined = Some(buf);
            }
            (_, Some(buf)) => buf.extend_from_slice(&data),
        }
    }
    Ok(match (first, joined) {
        (_, Some(buf)) => buf.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    })
}
