//! [`PassportService`]: the per-request logic of the layer.

use super::body::{PassportBody, ResponseBody};
use super::future::ResponseFuture;
use super::layer::Shared;
use crate::attribution::usage::{EventOnEnd, UsageScan};
use crate::attribution::{new_event_id, AttributionEvent, PendingEvent, EVENT_VERSION};
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use passport_core::config::Mode;
use passport_core::verifier::{has_passport_headers, signed_target, Rejection, VerifiedAgent};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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
    /// The body's share of the body budget, released when the body is dropped.
    budget: Option<OwnedSemaphorePermit>,
    /// The replay record this request reserved (SHA-256 of its signature), if any.
    reservation: Option<[u8; 32]>,
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
                record_refusal(&self.shared, Rejection::PassportRequired, &req);
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

/// Where refusal events go: the attribution queue, when refusals are recorded.
fn refusal_sender(shared: &Shared) -> Option<&crate::attribution::AttributionSender> {
    shared
        .attribution
        .as_ref()
        .filter(|_| shared.record_refusals)
}

/// Queues the refusal event of a refused request, when refusals are recorded. The
/// identity it claims is read from the passport header only to be recorded under
/// `claimed_*_unverified` names, cut to a bound, and never for a header the verifier
/// refused as malformed or too large.
fn record_refusal<B>(shared: &Shared, r: Rejection, req: &Request<B>) {
    let Some(sender) = refusal_sender(shared) else {
        return;
    };
    let (agent, principal) = match r {
        Rejection::SigHeaderMismatch
        | Rejection::HeaderMalformed
        | Rejection::PassportTooLarge
        | Rejection::PassportRequired => (None, None),
        _ => claimed_identity(req.headers()),
    };
    let path = req
        .extensions()
        .get::<crate::RequestPath>()
        .map_or_else(|| req.uri().path(), |p| p.0.as_str());
    let (path, path_cut_bytes) = crate::attribution::bounded_path(path);
    sender.emit_refusal(AttributionEvent {
        v: EVENT_VERSION.to_owned(),
        event_id: new_event_id(),
        method: crate::attribution::bounded_method(req.method().as_str()),
        path,
        path_cut_bytes,
        status: r.status().as_u16(),
        outcome: crate::attribution::Outcome::Refused,
        code: Some(r.code().to_owned()),
        refused_at: Some(passport_core::time::Timestamp::now().to_rfc3339()),
        claimed_agent_id_unverified: agent,
        claimed_principal_address_unverified: principal,
        ..Default::default()
    });
}

/// Queues the refusal event of a request the limits refused (spec sections 7.5 and 9),
/// when refusals are recorded. The limits run after every passport check, so the event
/// carries the verified identity of an accepted event (who was refused is known, unlike
/// a verifier refusal), with `outcome: refused`, the limit's code and status, and no
/// usage. It goes through the same bound as every refusal event
/// (`audit_refusals_per_second`, and only while the queue is less than half full): an
/// agent over its rate can send as fast as it can sign, and its refusals must not crowd
/// out the events of accepted requests.
fn record_limited(
    shared: &Shared,
    accepted: &Accepted,
    parts: &Parts,
    limited: crate::limits::Limited,
) {
    let Some(sender) = refusal_sender(shared) else {
        return;
    };
    let path = parts
        .extensions
        .get::<crate::RequestPath>()
        .map_or_else(|| parts.uri.path(), |p| p.0.as_str());
    let mut event = accepted_event(
        &accepted.agent,
        accepted.requester.clone(),
        &parts.method,
        path,
    );
    // Nothing reached the upstream: there is no inference to name.
    event.inference_id.clear();
    event.status = limited.reason.status().as_u16();
    event.outcome = crate::attribution::Outcome::Refused;
    event.code = Some(limited.reason.code().to_owned());
    event.refused_at = Some(passport_core::time::Timestamp::now().to_rfc3339());
    sender.emit_refusal(event);
}

/// The `agent_id` and `principal_address` a passport header claims, unverified and
/// bounded; `None` for what is missing or unreadable.
fn claimed_identity(headers: &HeaderMap) -> (Option<String>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Claimed {
        agent_id: Option<serde_json::Value>,
        principal_address: Option<serde_json::Value>,
    }
    let claimed = headers
        .get(passport_core::verifier::PASSPORT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(passport_core::crypto::decode_base64)
        .and_then(|raw| serde_json::from_slice::<Claimed>(&raw).ok());
    let text = |v: Option<serde_json::Value>| {
        v.as_ref()
            .and_then(serde_json::Value::as_str)
            .map(crate::attribution::bounded_claim)
    };
    match claimed {
        Some(c) => (text(c.agent_id), text(c.principal_address)),
        None => (None, None),
    }
}

fn reject<B>(shared: &Shared, r: Rejection) -> Response<ResponseBody<B>> {
    shared.metrics.rejected(r);
    tracing::debug!(code = r.code(), "passport rejected");
    let mut resp = crate::problem::rejection_response(r).map(PassportBody::from_full);
    // The reason, for whatever wraps the layer (the gateway's access log).
    resp.extensions_mut().insert(r);
    resp
}

async fn verify_then_call<S, ReqB, ResB>(
    shared: Arc<Shared>,
    mut inner: S,
    req: Request<ReqB>,
) -> Result<Response<ResponseBody<ResB>>, S::Error>
where
    S: Service<Request<PassportBody<ReqB>>, Response = Response<ResB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Body<Data = Bytes>,
    ResB: Body + Send + 'static,
{
    let (mut parts, body) = req.into_parts();
    let accepted = match authorize(&shared, &parts, body).await {
        Ok(a) => a,
        Err(r) => {
            record_refusal(&shared, r, &Request::from_parts(parts, ()));
            return Ok(reject(&shared, r));
        }
    };
    // The limits (spec section 7.6) run after every passport check, the replay record
    // included: an unauthenticated or replayed request never spends anyone's budget.
    let admitted = match &shared.limits {
        None => None,
        Some(limiter) => {
            let agent = &accepted.agent;
            match limiter
                .admit(
                    agent.principal_address(),
                    agent.agent_id(),
                    &accepted.body,
                    &shared.metrics,
                )
                .await
            {
                Ok(admitted) => admitted,
                Err(limited) => {
                    // Never processed: a retry of the same signed request is not a replay.
                    release_replay(&shared, accepted.reservation, agent).await;
                    tracing::debug!(code = limited.reason.code(), "request limited");
                    record_limited(&shared, &accepted, &parts, limited);
                    let mut resp = limited.http_response().map(PassportBody::from_full);
                    resp.extensions_mut().insert(limited);
                    return Ok(resp);
                }
            }
        }
    };
    let (settlement, standing) = match admitted {
        Some(a) => (Some(a.settlement), Some(a.standing)),
        None => (None, None),
    };
    shared.metrics.accepted();
    let span = tracing::info_span!(
        "passport",
        agent_id = accepted.agent.agent_id(),
        principal = accepted.agent.principal_address()
    );
    let Accepted {
        agent,
        requester,
        body,
        budget,
        reservation,
    } = accepted;
    // The event, made only when events are written, and pending until the answer ends
    // (or a shutdown cuts it). The path is the one the service receives: behind the
    // gateway its normal form (what the route guard judged), so one route has one
    // spelling in the audit trail.
    let pending = shared.attribution.is_some().then(|| {
        let path = parts
            .extensions
            .get::<crate::RequestPath>()
            .map_or_else(|| parts.uri.path(), |p| p.0.as_str());
        PendingEvent::new(accepted_event(
            &agent,
            requester.clone(),
            &parts.method,
            path,
        ))
    });
    let stall = parts
        .extensions
        .get::<crate::attribution::ClientStall>()
        .cloned();
    parts.extensions.insert(agent.clone());
    if let Some(r) = &requester {
        parts.extensions.insert(super::BoundRequester(r.clone()));
    }
    let request = Request::from_parts(parts, PassportBody::held_within_budget(body, budget));
    let started = Instant::now();
    let call = inner.call(request).instrument(span);
    let Some(pending) = pending else {
        let result = call.await;
        if let Ok(response) = &result {
            settle_reservation(&shared, reservation, &agent, response).await;
        }
        return result.map(|r| {
            let (r, settlement) = limits_on_answer(r, settlement, standing);
            match settlement {
                Some(s) => {
                    let scan = UsageScan::for_response(r.headers());
                    r.map(|b| PassportBody::metered(b, Box::new(EventOnEnd::settle_only(s, scan))))
                }
                None => r.map(PassportBody::original),
            }
        });
    };
    // The call runs in its own task so that a client hanging up (which drops this
    // future) cannot cancel the event of a request that was forwarded: every forwarded
    // request gets exactly one event, marked `client_disconnected` when the client left
    // before the response head.
    let (answer, answered) = tokio::sync::oneshot::channel();
    let task_shared = Arc::clone(&shared);
    let running = shared.forwarding.start(pending.clone());
    tokio::spawn(async move {
        let result = call.await;
        if let Ok(response) = &result {
            settle_reservation(&task_shared, reservation, &agent, response).await;
        }
        let client_disconnected = answer.is_closed();
        if client_disconnected {
            task_shared.metrics.client_disconnects.inc();
        }
        if result.is_err() {
            task_shared.metrics.attribution_lost.inc();
        }
        // The event goes with the body and is queued when the body ends or is dropped
        // (a client that left drops it here), with the token usage the body carried.
        let result = result.map(move |response| {
            let (response, settlement) = limits_on_answer(response, settlement, standing);
            let Some(sender) = &task_shared.attribution else {
                return response.map(PassportBody::original);
            };
            pending.update(|event| {
                record_head(&task_shared, event, &response, started, client_disconnected);
            });
            let scan = UsageScan::for_response(response.headers());
            let mut on_end = EventOnEnd::new(sender.clone(), pending, scan, Box::new(running))
                .with_settlement(settlement);
            if let Some(stall) = stall {
                on_end.watch_stall(stall);
            }
            response.map(|b| PassportBody::metered(b, Box::new(on_end)))
        });
        let _ = answer.send(result);
    });
    match answered.await {
        Ok(result) => result,
        // The task panicked inside the inner service.
        Err(_) => Ok(crate::problem::problem_response(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the request failed inside the gateway",
        )
        .map(PassportBody::from_full)),
    }
}

/// The `x-ratelimit-*` headers of an admitted request on its answer, and its
/// settlement, still to be settled when the answer ends; an answer showing that the
/// request was not processed (the ones that release a replay record) gives everything
/// back at once, whatever the replay store's release policy (giving a principal's
/// budget back lets no one else in; the policy is about who may send the same signed
/// request again).
fn limits_on_answer<B>(
    mut response: Response<B>,
    settlement: Option<crate::limits::Settlement>,
    standing: Option<crate::limits::Standing>,
) -> (Response<B>, Option<crate::limits::Settlement>) {
    if let Some(s) = standing {
        s.apply(response.headers_mut());
    }
    match settlement {
        Some(mut s)
            if crate::replay::releases_record(
                &response,
                crate::replay::ReleasePolicy {
                    on_retryable: true,
                    on_upstream_busy: true,
                },
            ) =>
        {
            s.release();
            (response, None)
        }
        other => (response, other),
    }
}

/// Releases the replay record `reservation` of a request that was not processed.
async fn release_replay(shared: &Shared, reservation: Option<[u8; 32]>, agent: &VerifiedAgent) {
    let (Some(key), Some(guard)) = (reservation, shared.replay.as_ref()) else {
        return;
    };
    if let Err(e) = guard.store.release(&key, agent.principal_address()).await {
        tracing::warn!(error = %e, "replay record not released; the request stays refused");
    }
}

/// Releases the replay record of a request whose answer shows it was not processed
/// (spec section 7.1), where the layer's [`ReleasePolicy`](crate::replay::ReleasePolicy)
/// says so, before that answer reaches the client, so that the client's retry of the
/// same signed request is accepted. A failed release keeps the record: the retry
/// is then refused, never accepted twice.
fn settle_reservation<B>(
    shared: &Shared,
    reservation: Option<[u8; 32]>,
    agent: &VerifiedAgent,
    response: &Response<B>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let release = shared
        .replay
        .as_ref()
        .filter(|g| crate::replay::releases_record(response, g.release))
        .and_then(|g| reservation.map(|key| (key, Arc::clone(&g.store))));
    let principal = release
        .as_ref()
        .map(|_| agent.principal_address().to_owned());
    async move {
        let (Some((key, store)), Some(principal)) = (release, principal) else {
            return;
        };
        if let Err(e) = store.release(&key, &principal).await {
            tracing::warn!(error = %e, "replay record not released; the request stays refused");
        }
    }
}

/// The attribution event of an accepted request, before it is forwarded: what the
/// verified request says. Its answer's head fills in the rest ([`record_head`]).
fn accepted_event(
    agent: &VerifiedAgent,
    requester: Option<String>,
    method: &http::Method,
    path: &str,
) -> AttributionEvent {
    let (path, path_cut_bytes) = crate::attribution::bounded_path(path);
    let event_id = new_event_id();
    AttributionEvent {
        v: EVENT_VERSION.to_owned(),
        inference_id: event_id.clone(),
        event_id,
        chain_id: agent.chain_id().to_owned(),
        model: agent.model().to_owned(),
        agent_id: agent.agent_id().to_owned(),
        principal_address: agent.principal_address().to_owned(),
        beneficiary: agent.beneficiary().map(str::to_owned),
        requester_address: requester,
        request_body_sha256: crate::attribution::to_hex(&agent.body_sha256()),
        envelope_sha256: crate::attribution::to_hex(&agent.envelope_sha256()),
        passport_id: crate::attribution::to_hex(&agent.passport_id()),
        passport_expires_at: agent.envelope().scope.expires_at_text.clone(),
        verified_at: agent.verified_at().to_rfc3339(),
        method: crate::attribution::bounded_method(method.as_str()),
        path,
        path_cut_bytes,
        ..Default::default()
    }
}

/// Fills in what the response head of a forwarded request tells.
fn record_head<B>(
    shared: &Shared,
    event: &mut AttributionEvent,
    response: &Response<B>,
    started: Instant,
    client_disconnected: bool,
) {
    if let Some(id) = shared
        .inference_id_header
        .as_ref()
        .and_then(|h| response.headers().get(h))
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 256)
    {
        id.clone_into(&mut event.inference_id);
    }
    event.status = response.status().as_u16();
    event.latency_ms = started.elapsed().as_millis() as u64;
    event.client_disconnected = client_disconnected;
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
    let headers = verifier
        .passport_headers(&parts.headers)?
        .ok_or(Rejection::SigHeaderMismatch)?;
    // Steps 3 to 10a run before a byte of the body is read: a forged passport costs one
    // signature check and never a buffered body.
    let started = Instant::now();
    // The allowlist is decided inside, before a cold verification takes a token.
    let passport = verifier.check_passport_allowing(&headers.passport, &|principal| {
        shared
            .principals
            .as_ref()
            .is_none_or(|list| list.allows(principal))
    });
    let mut verifying = started.elapsed();
    let passport = passport.inspect_err(|_| {
        shared
            .metrics
            .verify_seconds
            .observe(verifying.as_secs_f64());
    })?;
    let principal = &passport.envelope().principal_address;
    // Requester binding depends only on the passport's principal and an unsigned
    // header, so it runs before the body is read too: with binding on, a principal
    // without a grant (anyone can mint a passport for a key of their own) never makes
    // the gateway hold a body.
    let (requester, native) = bind_requester(shared, parts, principal, passport.now()).await?;
    let (body, budget) = tokio::time::timeout(
        shared.body_read_timeout,
        read_limited(
            &parts.headers,
            body,
            verifier.max_body_size(),
            &shared.body_budget,
        ),
    )
    .await
    .map_err(|_| Rejection::BodyReadTimeout)??;
    let model = verifier.check_body(&body)?;
    let uri = signed_target(&parts.uri);
    let started = Instant::now();
    let verdict = verifier.check_request(
        passport,
        &headers.signature,
        parts.method.as_str(),
        uri,
        &body,
        model,
    );
    verifying += started.elapsed();
    shared
        .metrics
        .verify_seconds
        .observe(verifying.as_secs_f64());
    let agent = verdict?;
    if let Some(list) = &shared.revocations {
        // Fail closed: until a shared set has been read, a revoked passport cannot be
        // told apart from any other.
        if !list.ready() {
            return Err(Rejection::RevocationsUnavailable);
        }
        if list.revokes(&agent) {
            return Err(Rejection::PassportRevoked);
        }
    }
    if let Some(pending) = &native {
        check_native(shared, pending, &body, agent.verified_at())?;
    }
    let reservation = match &shared.replay {
        Some(guard) => {
            check_replay(
                shared,
                guard,
                &headers.signature,
                &agent,
                agent.verified_at(),
            )
            .await?
        }
        None => None,
    };
    Ok(Accepted {
        agent,
        requester,
        body,
        budget,
        reservation,
    })
}

/// A native request signature that passed every check but the signature itself, which
/// needs the body: the headers and the requester's on-chain key.
struct PendingNative {
    headers: passport_core::gonka::NativeHeaders,
    signature: [u8; 64],
    key: passport_core::crypto::PrincipalKey,
}

/// Step 12: the requester binding, when configured. A requester header must appear once
/// and be a canonical account address (it is unsigned: an arbitrary value must not key
/// a cache or a chain query); a fixed requester was checked at startup. With requester
/// signatures on, the native headers are read and their form, transfer address and
/// window checked next (no chain query for a request failing them). The principal must
/// be the requester or have granted it; with accounts configured, a grantee without a
/// public key does not count. With requester signatures on, the requester's key is
/// looked up last; the signature over the body is checked after the body
/// ([`check_native`]).
async fn bind_requester(
    shared: &Shared,
    parts: &Parts,
    principal: &str,
    now: passport_core::time::Timestamp,
) -> Result<(Option<String>, Option<PendingNative>), Rejection> {
    let Some(binding) = &shared.binding else {
        return Ok((None, None));
    };
    let requester = match &binding.requester {
        super::RequesterSource::Fixed(r) => r.as_str(),
        super::RequesterSource::Header(name) => {
            let mut values = parts.headers.get_all(name).iter();
            let requester = match (values.next(), values.next()) {
                (Some(v), None) => v.to_str().map_err(|_| Rejection::PrincipalMismatch)?,
                _ => return Err(Rejection::PrincipalMismatch),
            };
            if crate::grants::check_requester(principal, requester).is_err() {
                return Err(Rejection::RequesterAddressInvalid);
            }
            requester
        }
    };
    let native = match &binding.requester_signature {
        Some(sig) => Some(native_headers(parts, sig, now)?),
        None => None,
    };
    let started = Instant::now();
    let lookup = binding
        .grants
        .is_authorized(principal, requester, &binding.msg_type_url, now)
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
    let needs_account = native.is_some() || requester != principal;
    let account = match &binding.accounts {
        Some(accounts) if needs_account => {
            let (account, _) = accounts.account(requester).await.map_err(|e| {
                shared.metrics.chain_query_errors.inc();
                tracing::warn!(error = %e, "account query failed");
                Rejection::ChainQueryFailed
            })?;
            Some(account)
        }
        _ => None,
    };
    let key = account.as_ref().and_then(|a| a.key());
    if requester != principal && account.is_some() && key.is_none() {
        // The reference counts only grantees whose account holds a public key.
        return Err(Rejection::PrincipalMismatch);
    }
    let pending = match native {
        None => None,
        Some((headers, signature)) => Some(PendingNative {
            headers,
            signature,
            key: key.cloned().ok_or(Rejection::RequesterPubkeyUnknown)?,
        }),
    };
    Ok((Some(requester.to_owned()), pending))
}

/// Reads the native signature headers and checks what needs neither the chain nor the
/// body: presence, form, the transfer address and the timestamp window.
fn native_headers(
    parts: &Parts,
    sig: &crate::grants::RequesterSignature,
    now: passport_core::time::Timestamp,
) -> Result<(passport_core::gonka::NativeHeaders, [u8; 64]), Rejection> {
    use passport_core::gonka::{check_native_window, NativeHeaders, NativeSigError};
    let headers = NativeHeaders::from_headers(&parts.headers).map_err(|e| match e {
        NativeSigError::HeaderMissing { .. } => Rejection::RequesterSigMissing,
        _ => Rejection::RequesterSigMalformed,
    })?;
    let signature: [u8; 64] = passport_core::crypto::decode_base64(&headers.authorization)
        .and_then(|b| b.try_into().ok())
        .ok_or(Rejection::RequesterSigMalformed)?;
    if headers
        .transfer_address
        .as_deref()
        .is_some_and(|t| t != sig.settings.transfer_address)
    {
        return Err(Rejection::RequesterTransferAddressMismatch);
    }
    if headers.timestamp <= 0 {
        return Err(Rejection::RequesterTimestampOutOfWindow);
    }
    check_native_window(
        headers.timestamp,
        now_ns(now),
        sig.settings.max_age_ns,
        sig.settings.max_advance_ns,
    )
    .map_err(|_| Rejection::RequesterTimestampOutOfWindow)?;
    Ok((headers, signature))
}

fn now_ns(now: passport_core::time::Timestamp) -> i64 {
    i64::try_from(now.unix_nanos()).unwrap_or(i64::MAX)
}

/// The native signature over the body, then the seen-set: a signature is remembered only
/// once it verified, so unauthenticated requests cannot fill the set.
fn check_native(
    shared: &Shared,
    pending: &PendingNative,
    body: &[u8],
    now: passport_core::time::Timestamp,
) -> Result<(), Rejection> {
    use crate::grants::Seen;
    use passport_core::gonka::{verify_native, NativeSigError};
    let Some(sig) = shared
        .binding
        .as_ref()
        .and_then(|b| b.requester_signature.as_ref())
    else {
        return Ok(());
    };
    verify_native(
        &pending.key,
        &pending.headers,
        body,
        &sig.settings.prefix,
        &sig.settings.transfer_address,
    )
    .map_err(|e| match e {
        NativeSigError::SignatureMalformed
        | NativeSigError::SignatureWrongLength { .. }
        | NativeSigError::SignatureOutOfRange
        | NativeSigError::SignatureHighS => Rejection::RequesterSigMalformed,
        _ => Rejection::RequesterSigInvalid,
    })?;
    let expires = pending
        .headers
        .timestamp
        .saturating_add(sig.settings.max_age_ns);
    match sig.seen.insert(pending.signature, expires, now_ns(now)) {
        Seen::Fresh => Ok(()),
        Seen::Replayed => Err(Rejection::RequesterSigReplayed),
        Seen::Full => Err(Rejection::RequesterSigStoreFull),
    }
}

/// Step 13: refuses an exact replay. It runs after every other check, so a forged or
/// otherwise refused request never occupies the store. Returns the key of the record
/// reserved for this request (none when a fail-open store could not be asked).
async fn check_replay(
    shared: &Shared,
    guard: &super::layer::ReplayGuard,
    signature: &[u8],
    agent: &VerifiedAgent,
    now: passport_core::time::Timestamp,
) -> Result<Option<[u8; 32]>, Rejection> {
    use crate::replay::{ReplayError, ReplayRecord, ReplayVerdict};
    use sha2::Digest;
    if guard
        .issued_after
        .is_some_and(|start| agent.issued_at() <= start)
    {
        return Err(Rejection::PassportPredatesStart);
    }
    let key: [u8; 32] = sha2::Sha256::digest(signature).into();
    let record = ReplayRecord {
        key: &key,
        principal: agent.principal_address(),
        now,
        until: agent.expires_at().plus_seconds(guard.clock_skew_seconds),
    };
    match guard.store.check_and_record(record).await {
        Ok(ReplayVerdict::Fresh) => Ok(Some(key)),
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
                Ok(None)
            } else {
                tracing::warn!(error = %e, "replay store unavailable; refusing (fail-closed)");
                Err(Rejection::ReplayStoreUnavailable)
            }
        }
    }
}

/// Reads the body, refusing a declared `Content-Length` over `limit` before reading a
/// byte, and counting the bytes actually received against `limit` otherwise (a client
/// may lie about, or omit, the length). Every byte held is first taken from `budget`,
/// shared by all requests, as it arrives (never the declared length in advance: a client
/// that declares a body and sends nothing must not hold the budget), so the bodies held
/// at once never exceed `max_buffered_body_bytes`.
async fn read_limited<B>(
    headers: &HeaderMap,
    body: B,
    limit: u64,
    budget: &Arc<Semaphore>,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), Rejection>
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
    let mut held: Option<OwnedSemaphorePermit> = None;
    let mut reserved: u64 = 0;
    let mut reserve = |upto: u64, held: &mut Option<OwnedSemaphorePermit>| {
        if upto <= reserved {
            return Ok(());
        }
        let more = u32::try_from(upto - reserved).map_err(|_| Rejection::BodyTooLarge)?;
        let permit = Arc::clone(budget)
            .try_acquire_many_owned(more)
            .map_err(|_| Rejection::BodyBudgetExhausted)?;
        match held {
            Some(h) => h.merge(permit),
            None => *held = Some(permit),
        }
        reserved = upto;
        Ok(())
    };
    let mut body = std::pin::pin!(body);
    // One chunk is kept as it arrived. A body in several chunks is copied into one
    // buffer as it arrives (keeping every chunk would cost a handle per chunk, many
    // times the bytes for a body sent in one-byte chunks), grown by doubling but never
    // past `limit`; its capacity is what is charged, so a body of `limit` bytes always
    // fits a budget of at least `limit`.
    let mut first: Option<Bytes> = None;
    let mut joined: Option<Vec<u8>> = None;
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
        reserve(received, &mut held)?;
        let buf = match (first.take(), &mut joined) {
            (None, None) => {
                first = Some(data);
                continue;
            }
            (Some(f), _) => joined.insert(f.to_vec()),
            (None, Some(buf)) => buf,
        };
        if buf.capacity() - buf.len() < data.len() {
            let grown = (buf.capacity() as u64).saturating_mul(2).min(limit);
            let want = usize::try_from(grown.max(received)).unwrap_or(usize::MAX);
            reserve(want as u64, &mut held)?;
            buf.reserve_exact(want - buf.len());
        }
        buf.extend_from_slice(&data);
    }
    let bytes = match (first, joined) {
        (_, Some(buf)) => Bytes::from(buf),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    };
    Ok((bytes, held))
}
