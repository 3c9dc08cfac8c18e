//! Runs vectors against the production [`PassportLayer`] with a fixed clock, a static
//! (or failing) grant source, and an inner service that answers 200 and records what
//! reached it.

use super::{
    BodyBehaviour, Expect, GrantFailure, ReplayStoreState, Vector, VectorMode, VectorReplayStore,
};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use passport_core::config::{Config, Mode};
use passport_core::crypto::decode_base64;
use passport_core::time::{FixedClock, Timestamp};
use passport_core::verifier::VerifiedAgent;
use passport_gate::grants::{
    GrantCache, GrantCacheSettings, GrantFuture, GrantQueryError, GrantSource, StaticGrants,
};
use passport_gate::layer::{Binding, PassportBody, PassportLayer};
use passport_gate::replay::{ReleaseFuture, ReplayError, ReplayFuture, ReplayRecord, ReplayStore};
use std::convert::Infallible;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// A request body as a vector describes it: whole, or cut off by `body_behaviour`.
#[derive(Debug)]
pub(crate) struct VectorBody {
    data: Option<Bytes>,
    after: Option<BodyBehaviour>,
}

impl VectorBody {
    /// `body` arriving as `behaviour` says (`None`: whole, in one frame).
    pub(crate) fn new(body: Bytes, behaviour: Option<BodyBehaviour>) -> VectorBody {
        let data = match behaviour {
            None => body,
            Some(BodyBehaviour::BreakAfter(n) | BodyBehaviour::StallAfter(n)) => {
                body.slice(..usize::try_from(n).unwrap_or(usize::MAX).min(body.len()))
            }
        };
        VectorBody {
            data: Some(data).filter(|d| !d.is_empty()),
            after: behaviour,
        }
    }
}

/// The error a breaking body ends with.
#[derive(Debug)]
pub(crate) struct BodyBroken;

impl std::fmt::Display for BodyBroken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client broke off the body")
    }
}

impl std::error::Error for BodyBroken {}

impl Body for VectorBody {
    type Data = Bytes;
    type Error = BodyBroken;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyBroken>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        match self.after {
            None => Poll::Ready(None),
            Some(BodyBehaviour::BreakAfter(_)) => {
                self.after = None;
                Poll::Ready(Some(Err(BodyBroken)))
            }
            // Never woken: the layer's body read timeout ends the wait.
            Some(BodyBehaviour::StallAfter(_)) => Poll::Pending,
        }
    }
}

/// A grant source that never gives an answer.
struct FailingGrants(GrantFailure);

impl GrantSource for FailingGrants {
    fn grants<'a>(&'a self, _: &'a str, _: &'a str, _: &'a str) -> GrantFuture<'a> {
        match self.0 {
            GrantFailure::Error => Box::pin(std::future::ready(Err(GrantQueryError(
                "the vector's grant source fails".into(),
            )))),
            GrantFailure::Timeout => Box::pin(std::future::pending()),
        }
    }
}

/// A replay store that cannot be asked.
struct UnavailableReplayStore;

impl ReplayStore for UnavailableReplayStore {
    fn check_and_record<'a>(&'a self, _: ReplayRecord<'a>) -> ReplayFuture<'a> {
        Box::pin(std::future::ready(Err(ReplayError::Unavailable(
            "the vector's replay store is unavailable".into(),
        ))))
    }

    fn release<'a>(&'a self, _: &'a [u8; 32], _: &'a str) -> ReleaseFuture<'a> {
        Box::pin(std::future::ready(Err(ReplayError::Unavailable(
            "the vector's replay store is unavailable".into(),
        ))))
    }
}

/// What reached the inner service.
#[derive(Clone, Debug)]
struct Reached {
    agent: Option<VerifiedAgent>,
    headers: http::HeaderMap,
    body: Bytes,
}

/// The inner service: answers 200 with an empty body and records each request.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<Reached>>>,
}

impl Service<Request<PassportBody<VectorBody>>> for Recorder {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<PassportBody<VectorBody>>) -> Self::Future {
        let seen = Arc::clone(&self.seen);
        Box::pin(async move {
            let agent = req.extensions().get::<VerifiedAgent>().cloned();
            let headers = req.headers().clone();
            // A body that broke off reaches here only when passed through unread; it is
            // recorded as what arrived before the break.
            let body = req
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            if let Ok(mut s) = seen.lock() {
                s.push(Reached {
                    agent,
                    headers,
                    body,
                });
            }
            Ok(Response::new(Full::new(Bytes::new())))
        })
    }
}

/// The result of one vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VectorOutcome {
    /// Every step behaved as expected.
    Passed,
    /// A step did not; the text says which and how.
    Failed(String),
}

/// The result of a run over files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Vectors that passed.
    pub passed: usize,
    /// `(vector name or file, reason)` for each failure.
    pub failed: Vec<(String, String)>,
    /// `(file, reason)` for each file that is not a valid vector.
    pub invalid: Vec<(PathBuf, String)>,
}

/// The layer a vector describes, as the runner builds it (also used by the HTTP tests).
pub fn layer_for(vector: &Vector, clock: FixedClock) -> Result<PassportLayer, String> {
    let defaults = Config::default();
    let config = Config {
        enabled: true,
        chain_id: vector.config.chain_id.clone(),
        address_prefix: vector
            .config
            .address_prefix
            .clone()
            .unwrap_or(defaults.address_prefix),
        max_ttl_seconds: vector
            .config
            .max_ttl_seconds
            .unwrap_or(defaults.max_ttl_seconds),
        max_body_size: vector
            .config
            .max_body_size
            .unwrap_or(defaults.max_body_size),
        replay_protection: vector.config.replay_protection.unwrap_or(false),
        mode: match vector.config.mode {
            None | Some(VectorMode::Optional) => Mode::Optional,
            Some(VectorMode::Required) => Mode::Required,
        },
        body_read_timeout_ms: vector
            .config
            .body_read_timeout_ms
            .unwrap_or(defaults.body_read_timeout_ms),
        replay_cache_capacity: match vector.config.replay_store {
            Some(VectorReplayStore::Bounded(b)) => b.capacity,
            _ => defaults.replay_cache_capacity,
        },
        replay_records_per_principal: vector
            .config
            .replay_records_per_principal
            .unwrap_or(defaults.replay_records_per_principal),
        cold_verifications_per_second: vector
            .config
            .cold_verifications_per_second
            .unwrap_or(defaults.cold_verifications_per_second),
        ..defaults
    };
    if vector.config.replay_records_per_principal.is_some() && !config.replay_protection {
        return Err("config.replay_records_per_principal needs replay_protection: true".into());
    }
    if vector.config.replay_store.is_some() && !config.replay_protection {
        return Err("config.replay_store needs replay_protection: true".into());
    }
    let started = match &vector.config.replay_store_started_at {
        Some(_) if !config.replay_protection => {
            return Err("config.replay_store_started_at needs replay_protection: true".into())
        }
        Some(t) => Some(
            Timestamp::parse(t)
                .map_err(|e| format!("config.replay_store_started_at: {e}"))?
                .plus_seconds(config.clock_skew_seconds as i64),
        ),
        None => None,
    };
    let vector_prefix = config.address_prefix.clone();
    let mut builder = PassportLayer::builder(config).clock(Arc::new(clock));
    if let Some(t) = started {
        builder = builder.replay_refuse_issued_until(t);
    }
    if let Some(VectorReplayStore::State(ReplayStoreState::Unavailable)) =
        vector.config.replay_store
    {
        builder = builder.replay_store(Arc::new(UnavailableReplayStore));
    }
    let unread = vector.config.revocation_set_unread == Some(true);
    if vector.config.revoked.is_some() || unread {
        let list = passport_gate::revocation::RevocationList::new(
            vector.config.revoked.clone().unwrap_or_default(),
        );
        if unread {
            list.await_shared_set();
        }
        builder = builder.revocations(Arc::new(list));
    }
    if let Some(l) = &vector.config.limits {
        use passport_gate::limits::{LimitPolicy, Limiter, MemoryLimitStore, PolicyTable};
        let policy = LimitPolicy::new(PolicyTable {
            principal: l.principal,
            agent: l.agent,
            ..PolicyTable::default()
        });
        builder = builder.limits(Arc::new(Limiter::new(
            Arc::new(MemoryLimitStore::new()),
            Arc::new(policy),
            l.max_tokens_cap,
            l.default_max_tokens,
        )));
    }
    if let Some(allowed) = &vector.config.principals_allowed {
        builder = builder.principals(Arc::new(
            passport_gate::principals::PrincipalAllowlist::new(allowed.iter().cloned().collect()),
        ));
    }
    if let Some(b) = &vector.config.binding {
        let header = HeaderName::try_from(b.requester_header.as_str())
            .map_err(|e| format!("binding.requester_header: {e}"))?;
        let source: Arc<dyn GrantSource> = match b.fail {
            None => Arc::new(StaticGrants(b.grants.clone())),
            Some(failure) => Arc::new(FailingGrants(failure)),
        };
        let defaults = GrantCacheSettings::default();
        let settings = GrantCacheSettings {
            query_timeout: b
                .query_timeout_ms
                .map_or(defaults.query_timeout, std::time::Duration::from_millis),
            ..defaults
        };
        let grants = GrantCache::new(source, settings);
        let mut binding = Binding::new(header, grants);
        if let Some(msg) = &b.msg_type_url {
            binding = binding.with_msg_type_url(msg.clone());
        }
        if let Some(accounts) = &b.accounts {
            let mut map = std::collections::HashMap::new();
            for (address, key) in accounts {
                let key = match key {
                    None => None,
                    Some(k) => Some(
                        passport_core::crypto::decode_base64(k)
                            .and_then(|b| passport_core::crypto::PrincipalKey::from_compressed(&b))
                            .ok_or_else(|| format!("binding.accounts.{address}: not a key"))?,
                    ),
                };
                map.insert(address.clone(), key);
            }
            let accounts = passport_gate::grants::AccountCache::new(
                Arc::new(passport_gate::grants::StaticAccounts(map)),
                settings,
            );
            binding = match &b.requester_signature {
                None => binding.with_accounts(accounts),
                Some(rs) => {
                    let mut s = passport_gate::grants::RequesterSignatureSettings::new(
                        &rs.transfer_address,
                    );
                    s.prefix.clone_from(&vector_prefix);
                    if let Some(ms) = rs.max_age_ms {
                        s.max_age_ns =
                            i64::try_from(ms).unwrap_or(i64::MAX / 1_000_000) * 1_000_000;
                    }
                    if let Some(ms) = rs.max_advance_ms {
                        s.max_advance_ns =
                            i64::try_from(ms).unwrap_or(i64::MAX / 1_000_000) * 1_000_000;
                    }
                    if let Some(n) = rs.max_seen {
                        s.max_seen = usize::try_from(n).unwrap_or(usize::MAX);
                    }
                    binding.with_requester_signature(
                        passport_gate::grants::RequesterSignature::new(s, accounts),
                    )
                }
            };
        } else if b.requester_signature.is_some() {
            return Err("binding.requester_signature needs binding.accounts".into());
        }
        builder = builder.binding(binding);
    }
    let layer = builder.build().map_err(|errors| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    if let Some(free) = vector.config.body_budget_free {
        layer
            .hold_body_budget(free)
            .map_err(|e| format!("config.{e}"))?;
    }
    Ok(layer)
}

fn build_request(step: &super::Step) -> Result<(Request<VectorBody>, Bytes), String> {
    let body = Bytes::from(
        decode_base64(&step.request.body_base64).ok_or("request.body_base64 is not base64")?,
    );
    let mut req = Request::builder()
        .method(step.request.method.as_str())
        .uri(step.request.uri.as_str())
        .body(VectorBody::new(body.clone(), step.request.body_behaviour))
        .map_err(|e| format!("request: {e}"))?;
    for (name, value) in &step.request.headers {
        let name = HeaderName::try_from(name.as_str())
            .map_err(|e| format!("header name {name:?}: {e}"))?;
        let value =
            HeaderValue::try_from(value.as_str()).map_err(|e| format!("header value: {e}"))?;
        req.headers_mut().append(name, value);
    }
    Ok((req, body))
}

fn check_step(
    expect: &Expect,
    status: u16,
    response_body: &[u8],
    reached: Option<&Reached>,
    sent: &Request<VectorBody>,
    sent_body: &Bytes,
) -> Result<(), String> {
    if status != expect.status {
        let code = serde_json::from_slice::<serde_json::Value>(response_body)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_owned))
            .unwrap_or_default();
        return Err(format!(
            "expected status {}, got {status} {code}",
            expect.status
        ));
    }
    if status != 200 {
        let body: serde_json::Value = serde_json::from_slice(response_body)
            .map_err(|_| "the rejection body is not JSON".to_string())?;
        let got = body["code"].as_str().unwrap_or("");
        if Some(got) != expect.code.as_deref() {
            return Err(format!("expected code {:?}, got {got:?}", expect.code));
        }
        if body["error"]["code"].as_str() != Some(got) {
            return Err("the rejection body's error.code differs from its code".into());
        }
        if reached.is_some() {
            return Err("a rejected request reached the inner service".into());
        }
        return Ok(());
    }
    let reached = reached.ok_or("the request was accepted but never reached the inner service")?;
    if reached.body != sent_body {
        return Err("the forwarded body differs from the body sent".into());
    }
    // The layer forwards every header as sent (the native signature headers included:
    // the node behind checks them again, spec section 7.0).
    for name in sent.headers().keys() {
        let want: Vec<_> = sent.headers().get_all(name).iter().collect();
        let got: Vec<_> = reached.headers.get_all(name).iter().collect();
        if want != got {
            return Err(format!("the header {name} was not forwarded as sent"));
        }
    }
    match (&expect.verified, &reached.agent) {
        (None, None) => Ok(()),
        (None, Some(_)) => {
            Err("the inner service saw a verified agent where none was expected".into())
        }
        (Some(_), None) => Err("the inner service saw no verified agent".into()),
        (Some(want), Some(got)) => {
            let got_fields = [
                ("agent_id", got.agent_id().to_owned()),
                ("principal_address", got.principal_address().to_owned()),
                ("model", got.model().to_owned()),
                ("beneficiary", format!("{:?}", got.beneficiary())),
                ("envelope_sha256", hex::encode(got.envelope_sha256())),
                ("request_body_sha256", hex::encode(got.body_sha256())),
            ];
            let want_fields = [
                want.agent_id.clone(),
                want.principal_address.clone(),
                want.model.clone(),
                format!("{:?}", want.beneficiary.as_deref()),
                want.envelope_sha256.clone(),
                want.request_body_sha256.clone(),
            ];
            for ((field, g), w) in got_fields.iter().zip(want_fields.iter()) {
                if g != w {
                    return Err(format!("verified.{field}: expected {w}, got {g}"));
                }
            }
            Ok(())
        }
    }
}

/// Runs one vector. `Err` means the vector itself cannot be run (invalid).
pub async fn run_vector(vector: &Vector) -> Result<VectorOutcome, String> {
    let start = Timestamp::parse(&vector.config.now).map_err(|e| format!("config.now: {e}"))?;
    let clock = FixedClock::new(start);
    let layer = layer_for(vector, clock.clone())?;
    let recorder = Recorder::default();
    let mut service = layer.layer(recorder.clone());
    for (i, step) in vector.steps.iter().enumerate() {
        let now = match &step.now {
            Some(t) => Timestamp::parse(t).map_err(|e| format!("steps[{i}].now: {e}"))?,
            None => start,
        };
        clock.set(now);
        let (req, sent_body) = build_request(step).map_err(|e| format!("steps[{i}]: {e}"))?;
        let (sent, _) = build_request(step).map_err(|e| format!("steps[{i}]: {e}"))?;
        let before = recorder.seen.lock().map(|s| s.len()).unwrap_or(0);
        std::future::poll_fn(|cx| Service::<Request<VectorBody>>::poll_ready(&mut service, cx))
            .await
            .map_err(|never: Infallible| -> String { match never {} })?;
        let response = service
            .call(req)
            .await
            .map_err(|never: Infallible| -> String { match never {} })?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|never: Infallible| -> String { match never {} })?
            .to_bytes();
        let reached = recorder
            .seen
            .lock()
            .ok()
            .and_then(|s| s.get(before).cloned());
        if let Err(why) = check_step(
            &step.expect,
            status,
            &body,
            reached.as_ref(),
            &sent,
            &sent_body,
        ) {
            return Ok(VectorOutcome::Failed(format!("step {}: {why}", i + 1)));
        }
    }
    Ok(VectorOutcome::Passed)
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() || p.extension().is_some_and(|e| e == "json") {
                collect_files(&p, out)?;
            }
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// Runs every vector in `paths` (files, or directories searched for `*.json`).
pub fn run_paths(paths: &[PathBuf]) -> RunReport {
    let mut report = RunReport::default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            report
                .invalid
                .push((PathBuf::new(), format!("cannot start a runtime: {e}")));
            return report;
        }
    };
    let mut files = Vec::new();
    for p in paths {
        if let Err(e) = collect_files(p, &mut files) {
            report.invalid.push((p.clone(), e.to_string()));
        }
    }
    for file in files {
        let vector: Vector = match std::fs::read(&file)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(v) => v,
            Err(e) => {
                report.invalid.push((file, e));
                continue;
            }
        };
        match runtime.block_on(run_vector(&vector)) {
            Ok(VectorOutcome::Passed) => report.passed += 1,
            Ok(VectorOutcome::Failed(why)) => report.failed.push((vector.name, why)),
            Err(why) => report.invalid.push((file, why)),
        }
    }
    report
}
