//! Limits per principal and per agent: requests per minute (a token bucket), requests in
//! flight, and tokens per minute, hour and day, with a token reservation at admission
//! settled to the real usage when the answer ends (spec section 7.6).
//!
//! The limits run after every passport check (the replay record included), so an
//! unauthenticated or replayed request never spends anyone's budget, and a refused one
//! never reaches the inner service.
//!
//! **Which identity an agent limit keys on.** The agent's `agent_id` *under its
//! principal*: the key is `<principal_address>/<agent_id>`. The `agent_id` is what the
//! operator sees in the audit trail and the usage report, and it stays the same across
//! passport renewals (a passport id changes with each one, so a limit keyed on it would
//! reset with every new passport). It is scoped by the principal because an `agent_id`
//! is a name the principal chose: anyone can mint a passport claiming another
//! principal's agent name, and must not spend that agent's budget. Whatever agent
//! names a principal invents, all of them share the principal's own limits.
//!
//! **Token windows** are fixed and aligned to UTC (a minute starts at second 0, an hour
//! at minute 0, a day at 00:00 UTC), so every replica agrees on them without talking,
//! and one Redis key per window suffices. A client may spend up to twice a window's
//! budget across a window boundary; the day window bounds that for the day.
//!
//! **Reservations.** A request with a body reserves its prompt estimate (a quarter of
//! its body bytes, rounded up) plus its largest `max_tokens`, `max_completion_tokens` or
//! `max_output_tokens` (`default_max_tokens` when none is) times its `n` or `best_of`
//! (see [`Limiter::reservation`] for the spellings judged) on every token
//! window of its principal and its agent. When the answer ends the reservation is
//! settled to the answer's `usage.total_tokens`; without a readable usage the whole
//! reservation stays charged. A request the inner service never processed (the answers
//! that release a replay record, [`crate::replay::releases_record`]) charges nothing.
//! A request without a body reserves no tokens.

mod memory;
mod policy;
#[cfg(feature = "redis")]
mod redis;

pub use memory::MemoryLimitStore;
pub use policy::{LimitPolicy, PolicyError, PolicyTable, QuotaOverride};
#[cfg(feature = "redis")]
pub use redis::RedisLimitStore;

use crate::metrics::Metrics;
use http::{HeaderMap, HeaderValue};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// The limits of one principal or one agent. `0` means no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quota {
    /// Requests per minute: a token bucket of this size refilled at this rate.
    pub requests_per_minute: u64,
    /// Requests admitted and not yet answered in full.
    pub concurrent_requests: u64,
    /// Tokens per UTC minute.
    pub tokens_per_minute: u64,
    /// Tokens per UTC hour.
    pub tokens_per_hour: u64,
    /// Tokens per UTC day.
    pub tokens_per_day: u64,
}

/// The key names of a [`Quota`], as the configuration and the policy file spell them.
pub const QUOTA_KEYS: [&str; 5] = [
    "requests_per_minute",
    "concurrent_requests",
    "tokens_per_minute",
    "tokens_per_hour",
    "tokens_per_day",
];

/// The largest value each quota key accepts, in the order of [`QUOTA_KEYS`].
pub const QUOTA_MAX: [u64; 5] = [
    1_000_000_000,
    1_000_000,
    1_000_000_000_000,
    1_000_000_000_000,
    1_000_000_000_000,
];

impl Quota {
    /// The values in the order of [`QUOTA_KEYS`].
    pub fn values(&self) -> [u64; 5] {
        [
            self.requests_per_minute,
            self.concurrent_requests,
            self.tokens_per_minute,
            self.tokens_per_hour,
            self.tokens_per_day,
        ]
    }

    /// A quota from values in the order of [`QUOTA_KEYS`].
    pub fn from_values(v: [u64; 5]) -> Quota {
        Quota {
            requests_per_minute: v[0],
            concurrent_requests: v[1],
            tokens_per_minute: v[2],
            tokens_per_hour: v[3],
            tokens_per_day: v[4],
        }
    }

    /// The token limits per window, in the order of [`WINDOWS`].
    pub fn token_limits(&self) -> [u64; 3] {
        [
            self.tokens_per_minute,
            self.tokens_per_hour,
            self.tokens_per_day,
        ]
    }

    /// Whether no key limits anything.
    pub fn is_unlimited(&self) -> bool {
        self.values() == [0; 5]
    }
}

/// The tighter of two values of one quota key (`0` is no limit, the loosest).
pub fn tighter(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (a, b) => a.min(b),
    }
}

/// The token windows, in milliseconds: a UTC minute, hour and day.
pub const WINDOWS: [u64; 3] = [60_000, 3_600_000, 86_400_000];

/// How long an in-flight slot lives in a shared store at most, should the replica that
/// took it die before giving it back, in milliseconds.
pub const IN_FLIGHT_LEASE_MS: u64 = 15 * 60 * 1000;

/// Why a request was limited. Each reason has its code, status and a one-line message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitReason {
    /// The requests-per-minute bucket of the principal or the agent is empty.
    RequestsPerMinute,
    /// The principal or the agent has `concurrent_requests` requests in flight.
    ConcurrentRequests,
    /// A token window of the principal or the agent has no room for the reservation.
    Tokens,
    /// The body's `max_tokens`, `max_completion_tokens` or `max_output_tokens` exceeds
    /// `max_tokens_cap`.
    MaxTokensOverCap,
    /// The shared limit store could not be asked (failed closed).
    StoreUnavailable,
}

impl LimitReason {
    /// Every reason, in the order of the metric's label values.
    pub const ALL: [LimitReason; 5] = [
        LimitReason::RequestsPerMinute,
        LimitReason::ConcurrentRequests,
        LimitReason::Tokens,
        LimitReason::MaxTokensOverCap,
        LimitReason::StoreUnavailable,
    ];

    /// The metric label of this reason.
    pub fn label(self) -> &'static str {
        match self {
            LimitReason::RequestsPerMinute => "requests_per_minute",
            LimitReason::ConcurrentRequests => "concurrent_requests",
            LimitReason::Tokens => "tokens",
            LimitReason::MaxTokensOverCap => "max_tokens_over_cap",
            LimitReason::StoreUnavailable => "store_unavailable",
        }
    }

    /// The error code of the answer (OpenAI's for rates and quotas).
    pub fn code(self) -> &'static str {
        match self {
            LimitReason::RequestsPerMinute | LimitReason::ConcurrentRequests => {
                "rate_limit_exceeded"
            }
            LimitReason::Tokens => "insufficient_quota",
            LimitReason::MaxTokensOverCap => "max_tokens_over_cap",
            LimitReason::StoreUnavailable => "limits_unavailable",
        }
    }

    /// The HTTP status of the answer.
    pub fn status(self) -> http::StatusCode {
        match self {
            LimitReason::RequestsPerMinute
            | LimitReason::ConcurrentRequests
            | LimitReason::Tokens => http::StatusCode::TOO_MANY_REQUESTS,
            LimitReason::MaxTokensOverCap => http::StatusCode::BAD_REQUEST,
            LimitReason::StoreUnavailable => http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The one-line message of the answer.
    pub fn message(self) -> &'static str {
        match self {
            LimitReason::RequestsPerMinute => {
                "rate limit reached: too many requests per minute for this principal or agent"
            }
            LimitReason::ConcurrentRequests => {
                "rate limit reached: too many requests in flight for this principal or agent"
            }
            LimitReason::Tokens => {
                "token budget exhausted for this principal or agent in the current window"
            }
            LimitReason::MaxTokensOverCap => {
                "max_tokens or max_completion_tokens exceeds the gateway's cap; the body is signed, so send a smaller value"
            }
            LimitReason::StoreUnavailable => "the limit store is unavailable",
        }
    }
}

/// A limited request: why, and when to try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limited {
    /// The reason.
    pub reason: LimitReason,
    /// When a retry may pass (`Retry-After`, rounded up to whole seconds); `None` when
    /// waiting does not help.
    pub retry_after: Option<Duration>,
}

impl Limited {
    /// The answer: the status, `Retry-After` and an OpenAI-shaped error body (which
    /// the problem document carries, as every refusal of the layer does).
    pub fn http_response(&self) -> http::Response<http_body_util::Full<bytes::Bytes>> {
        let r = self.reason;
        let mut resp = crate::problem::problem_response(r.status(), r.code(), r.message());
        if let Some(after) = self.retry_after {
            let secs = after.as_millis().div_ceil(1000).max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// One limit as the `x-ratelimit-*` headers show it: the limit, what remains, and the
/// time until it is whole again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gauge {
    /// The limit.
    pub limit: u64,
    /// What remains of it after this request.
    pub remaining: u64,
    /// Milliseconds until it is whole again.
    pub reset_ms: u64,
}

impl Gauge {
    /// The one of `a` and `b` with less remaining (the one that binds first).
    pub fn tightest(a: Option<Gauge>, b: Option<Gauge>) -> Option<Gauge> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.remaining < a.remaining { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

/// Where an admitted request stands: the binding request and token limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Standing {
    /// The requests-per-minute bucket that binds first.
    pub requests: Option<Gauge>,
    /// The token window that binds first.
    pub tokens: Option<Gauge>,
}

impl Standing {
    /// Adds OpenAI's `x-ratelimit-*` headers, so that SDKs and agents can pace
    /// themselves. A limit that is not configured has no headers.
    pub fn apply(&self, headers: &mut HeaderMap) {
        let mut put = |name: &'static str, v: String| {
            if let Ok(v) = HeaderValue::from_str(&v) {
                headers.insert(name, v);
            }
        };
        if let Some(g) = self.requests {
            put("x-ratelimit-limit-requests", g.limit.to_string());
            put("x-ratelimit-remaining-requests", g.remaining.to_string());
            put("x-ratelimit-reset-requests", duration_text(g.reset_ms));
        }
        if let Some(g) = self.tokens {
            put("x-ratelimit-limit-tokens", g.limit.to_string());
            put("x-ratelimit-remaining-tokens", g.remaining.to_string());
            put("x-ratelimit-reset-tokens", duration_text(g.reset_ms));
        }
    }
}

/// A duration as OpenAI writes it in `x-ratelimit-reset-*`: `250ms`, `1s`, `6m0s`,
/// `1h2m3s`.
pub fn duration_text(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms.div_ceil(1000);
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

/// What a request asks of the store.
#[derive(Clone, Debug)]
pub struct Ask<'a> {
    /// The principal's key (its address) and its quota.
    pub principal: (&'a str, Quota),
    /// The agent's key (`<principal>/<agent_id>`) and its quota.
    pub agent: (&'a str, Quota),
    /// Tokens to reserve on every window of both.
    pub tokens: u64,
    /// This request's own identifier (its in-flight slot).
    pub request_id: u64,
}

/// What an admitted request holds in the store, given back by [`LimitStore::settle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// The principal's key.
    pub principal: String,
    /// The agent's key.
    pub agent: String,
    /// The request's identifier.
    pub request_id: u64,
    /// Tokens reserved.
    pub reserved: u64,
    /// The token windows (their numbers since the epoch) the reservation was charged to,
    /// in the order of [`WINDOWS`]: settling changes those windows only, never a later
    /// one.
    pub windows: [u64; 3],
    /// Whether the request holds an in-flight slot of the principal and of the agent.
    pub in_flight: bool,
}

/// The store's answer to an [`Ask`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted: what it holds and where it stands.
    Admitted(Ticket, Standing),
    /// Refused: nothing was taken.
    Refused(Limited),
}

/// Why a store gave no verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitStoreError {
    /// The store could not be asked (Redis down, slow, or answering errors).
    Unavailable(String),
    /// A Redis that can silently forget keys, which the operator did not accept: always
    /// refused, whatever `fail_open` says.
    Untrusted(String),
}

impl fmt::Display for LimitStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitStoreError::Unavailable(e) => write!(f, "limit store unavailable: {e}"),
            LimitStoreError::Untrusted(e) => write!(f, "limit store refused: {e}"),
        }
    }
}

/// What [`LimitStore::admit`] returns.
pub type AdmitFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Verdict, LimitStoreError>> + Send + 'a>>;

/// What [`LimitStore::settle`] returns when it has work left to do.
pub type SettleFuture = Pin<Box<dyn Future<Output = Result<(), LimitStoreError>> + Send>>;

/// Where counters and reservations live: in the process, or in Redis for every replica.
/// `admit` must be atomic: it checks every limit of both scopes and takes all or none.
pub trait LimitStore: Send + Sync + 'static {
    /// Checks the request against both quotas; when it fits, takes a request from each
    /// bucket, an in-flight slot from each scope and `ask.tokens` from each token window.
    fn admit<'a>(&'a self, ask: Ask<'a>) -> AdmitFuture<'a>;

    /// Gives back the in-flight slots of `ticket` and settles its reservation to
    /// `charged` tokens. A store that did it already, or queued it to be written by a
    /// task of its own (Redis), returns `None`; otherwise the caller runs the future.
    fn settle(&self, ticket: Ticket, charged: u64) -> Option<SettleFuture>;
}

/// The limiter the layer runs: the policy, the store and the token settings.
pub struct Limiter {
    store: Arc<dyn LimitStore>,
    policy: Arc<LimitPolicy>,
    max_tokens_cap: u64,
    default_max_tokens: u64,
    fail_open: bool,
    next_id: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("max_tokens_cap", &self.max_tokens_cap)
            .field("default_max_tokens", &self.default_max_tokens)
            .field("fail_open", &self.fail_open)
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limiter over `store` with `policy`; a body asking more than `max_tokens_cap`
    /// is refused, one naming no maximum reserves `default_max_tokens`.
    pub fn new(
        store: Arc<dyn LimitStore>,
        policy: Arc<LimitPolicy>,
        max_tokens_cap: u64,
        default_max_tokens: u64,
    ) -> Limiter {
        let mut seed = [0u8; 8];
        let _ = passport_core::crypto::random_bytes(&mut seed);
        Limiter {
            store,
            policy,
            max_tokens_cap,
            default_max_tokens,
            fail_open: false,
            next_id: std::sync::atomic::AtomicU64::new(u64::from_le_bytes(seed)),
        }
    }

    /// When the store cannot be asked, admit (true) instead of answering 503
    /// `limits_unavailable` (false, the default). Either way a metric counts it.
    pub fn fail_open(mut self, on: bool) -> Limiter {
        self.fail_open = on;
        self
    }

    /// The policy (defaults and overrides), for reloading.
    pub fn policy(&self) -> &Arc<LimitPolicy> {
        &self.policy
    }

    /// The tokens a request with `body` reserves, or why it is refused: its prompt
    /// estimate (a quarter of its bytes, rounded up) plus the most it lets the upstream
    /// generate, its largest `max_tokens`, `max_completion_tokens` or `max_output_tokens`
    /// (else `default_max_tokens`) times its largest `n` or `best_of` (the completions
    /// generated). A body without bytes reserves nothing. A maximum over
    /// `max_tokens_cap` is refused, never clamped: the body is signed.
    ///
    /// Every copy of a member counts (a name given twice counts at its largest: parsers
    /// disagree on which copy wins, and the upstream must not read a larger one than was
    /// judged), and so does a string holding a number (pydantic, behind vLLM, reads
    /// `"4096"` as 4096).
    pub fn reservation(&self, body: &[u8]) -> Result<u64, Limited> {
        if body.is_empty() {
            return Ok(0);
        }
        let asked = serde_json::from_slice::<Asked>(body).unwrap_or_default();
        let most = match asked.most {
            Some(n) if n > self.max_tokens_cap as f64 => {
                return Err(Limited {
                    reason: LimitReason::MaxTokensOverCap,
                    retry_after: None,
                })
            }
            // Any number counts, whatever its form (`4096.0`, `1e9`): the upstream may
            // read it as an integer.
            Some(n) => n.max(0.0).ceil() as u64,
            None => self.default_max_tokens,
        };
        let choices = asked.choices.map_or(1, |n| (n.ceil() as u64).max(1));
        let prompt = (body.len() as u64).div_ceil(4);
        Ok(prompt
            .saturating_add(most.saturating_mul(choices))
            .min(MAX_RESERVATION))
    }

    /// Admits the request of `agent_id` for `principal` with `body`, or says why not.
    /// `Ok(None)`: admitted without a reservation (a fail-open store that could not be
    /// asked).
    pub async fn admit(
        &self,
        principal: &str,
        agent_id: &str,
        body: &[u8],
        metrics: &Metrics,
    ) -> Result<Option<Admitted>, Limited> {
        let limited = |l: Limited| {
            metrics.limited(l.reason);
            l
        };
        let tokens = self.reservation(body).map_err(limited)?;
        let agent = agent_key(principal, agent_id);
        let (pq, aq) = self.policy.quotas(principal, &agent);
        if pq.is_unlimited() && aq.is_unlimited() {
            return Ok(None);
        }
        let ask = Ask {
            principal: (principal, pq),
            agent: (&agent, aq),
            tokens,
            request_id: self
                .next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        match self.store.admit(ask).await {
            Ok(Verdict::Admitted(ticket, standing)) => {
                metrics.limit_tokens_reserved.inc_by(ticket.reserved);
                Ok(Some(Admitted {
                    settlement: Settlement {
                        store: Arc::clone(&self.store),
                        ticket: Some(ticket),
                        metrics: metrics.clone(),
                    },
                    standing,
                }))
            }
            Ok(Verdict::Refused(l)) => Err(limited(l)),
            Err(LimitStoreError::Untrusted(e)) => {
                metrics.limit_store_failure(false);
                tracing::error!(error = %e, "limit store refused; refusing (fail-closed)");
                Err(limited(Limited {
                    reason: LimitReason::StoreUnavailable,
                    retry_after: None,
                }))
            }
            Err(LimitStoreError::Unavailable(e)) => {
                metrics.limit_store_failure(self.fail_open);
                if self.fail_open {
                    tracing::warn!(error = %e, "limit store unavailable; accepting (fail-open)");
                    Ok(None)
                } else {
                    tracing::warn!(error = %e, "limit store unavailable; refusing (fail-closed)");
                    Err(limited(Limited {
                        reason: LimitReason::StoreUnavailable,
                        retry_after: Some(Duration::from_secs(1)),
                    }))
                }
            }
        }
    }
}

/// The largest reservation: more than any token window holds ([`QUOTA_MAX`]), so such a
/// request is refused wherever a token limit is set, and the counters never overflow.
pub const MAX_RESERVATION: u64 = 10 * QUOTA_MAX[4];

/// What a body asks of the upstream, read from every member of its top-level object
/// (see [`Limiter::reservation`]); a body that is not a JSON object asks nothing.
#[derive(Debug, Default, PartialEq)]
struct Asked {
    /// The largest `max_tokens`, `max_completion_tokens` or `max_output_tokens`.
    most: Option<f64>,
    /// The largest `n` or `best_of`.
    choices: Option<f64>,
}

/// A member's value as a count an upstream may read: a JSON number in any form, or a
/// string holding a finite one.
fn count(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        _ => None,
    }
}

impl<'de> serde::Deserialize<'de> for Asked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Asked, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = Asked;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> Result<Asked, M::Error> {
                let larger = |slot: &mut Option<f64>, n: f64| {
                    *slot = Some(slot.map_or(n, |s| s.max(n)));
                };
                let mut asked = Asked::default();
                while let Some(name) = m.next_key::<String>()? {
                    match name.as_str() {
                        "max_tokens" | "max_completion_tokens" | "max_output_tokens" => {
                            if let Some(n) = count(&m.next_value()?) {
                                larger(&mut asked.most, n);
                            }
                        }
                        "n" | "best_of" => {
                            if let Some(n) = count(&m.next_value()?) {
                                larger(&mut asked.choices, n);
                            }
                        }
                        _ => {
                            m.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(asked)
            }
        }
        d.deserialize_map(Members)
    }
}

/// The key of an agent's limits: its `agent_id` under its principal (see the module
/// documentation for why).
pub fn agent_key(principal: &str, agent_id: &str) -> String {
    format!("{principal}/{agent_id}")
}

/// An admitted request: its settlement and the headers of its answer.
#[derive(Debug)]
pub struct Admitted {
    /// Settles the reservation when the answer ends.
    pub settlement: Settlement,
    /// Where the request stands (the `x-ratelimit-*` headers).
    pub standing: Standing,
}

/// An admitted request's reservation and in-flight slots, given back once. Dropped
/// without a word (the answer was lost), it charges the whole reservation: hiding usage
/// must never save budget.
pub struct Settlement {
    store: Arc<dyn LimitStore>,
    ticket: Option<Ticket>,
    metrics: Metrics,
}

impl fmt::Debug for Settlement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settlement")
            .field("ticket", &self.ticket)
            .finish_non_exhaustive()
    }
}

impl Settlement {
    /// Settles to `used` tokens (the answer's usage), or to the whole reservation when
    /// the answer's usage could not be read.
    pub fn settle(&mut self, used: Option<u64>) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let charged = match used {
            Some(n) => n,
            None => {
                if ticket.reserved > 0 {
                    self.metrics.limit_usage_missing.inc();
                }
                ticket.reserved
            }
        };
        self.metrics.limit_tokens_settled.inc_by(charged);
        self.finish(ticket, charged);
    }

    /// Gives everything back: the request was never processed.
    pub fn release(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.finish(ticket, 0);
        }
    }

    fn finish(&self, ticket: Ticket, charged: u64) {
        let Some(pending) = self.store.settle(ticket, charged) else {
            return;
        };
        let settled = async move {
            if let Err(e) = pending.await {
                tracing::warn!(error = %e, "limit settlement failed; the reservation stays charged");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(settled);
            }
            Err(_) => {
                tracing::warn!("limit settlement outside a runtime; the reservation stays charged")
            }
        }
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        self.settle(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(cap: u64, default: u64) -> Limiter {
        Limiter::new(
            Arc::new(MemoryLimitStore::new()),
            Arc::new(LimitPolicy::new(PolicyTable::default())),
            cap,
            default,
        )
    }

    #[test]
    fn the_reservation_is_the_prompt_estimate_plus_the_largest_maximum() {
        let l = limiter(4096, 1024);
        let body = br#"{"model":"m","max_tokens":100}"#;
        assert_eq!(l.reservation(body), Ok(8 + 100));
        let body = br#"{"model":"m","max_tokens":100,"max_completion_tokens":300}"#;
        assert_eq!(l.reservation(body), Ok(15 + 300));
        let body = br#"{"model":"m"}"#;
        assert_eq!(l.reservation(body), Ok(4 + 1024));
        let body = br#"{"model":"m","max_tokens":null}"#;
        assert_eq!(l.reservation(body), Ok(8 + 1024));
        assert_eq!(l.reservation(b""), Ok(0));
    }

    #[test]
    fn a_maximum_over_the_cap_is_refused_in_any_number_form() {
        let l = limiter(4096, 1024);
        for body in [
            &br#"{"max_tokens":4097}"#[..],
            br#"{"max_completion_tokens":5000}"#,
            br#"{"max_tokens":1e9}"#,
            br#"{"max_tokens":4096.5}"#,
        ] {
            assert_eq!(
                l.reservation(body).map_err(|e| e.reason),
                Err(LimitReason::MaxTokensOverCap),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(l.reservation(br#"{"max_tokens":4096}"#).is_ok());
    }

    #[test]
    fn every_copy_and_spelling_of_a_maximum_is_judged() {
        let l = limiter(4096, 1024);
        for body in [
            &br#"{"max_tokens":5,"max_tokens":100000}"#[..],
            br#"{"max_tokens":100000,"max_tokens":5}"#,
            br#"{"max_tokens":"100000"}"#,
            br#"{"max_completion_tokens":" 5000 "}"#,
            br#"{"max_output_tokens":5000}"#,
            br#"{"max_tokens":5,"max\u005ftokens":5000}"#,
        ] {
            assert_eq!(
                l.reservation(body).map_err(|e| e.reason),
                Err(LimitReason::MaxTokensOverCap),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn every_completion_asked_for_is_reserved() {
        let l = limiter(4096, 1024);
        let body = br#"{"max_tokens":100,"n":10}"#;
        assert_eq!(l.reservation(body), Ok(7 + 1000));
        let body = br#"{"max_tokens":100,"n":2,"best_of":"5"}"#;
        assert_eq!(l.reservation(body), Ok(10 + 500));
        let body = br#"{"n":3}"#;
        assert_eq!(l.reservation(body), Ok(2 + 3 * 1024));
        let body = br#"{"max_tokens":100,"n":0}"#;
        assert_eq!(l.reservation(body), Ok(6 + 100));
        let body = br#"{"max_tokens":4096,"n":1e300}"#;
        assert_eq!(l.reservation(body), Ok(MAX_RESERVATION));
    }

    #[test]
    fn durations_read_as_openai_writes_them() {
        assert_eq!(duration_text(250), "250ms");
        assert_eq!(duration_text(1000), "1s");
        assert_eq!(duration_text(1001), "2s");
        assert_eq!(duration_text(360_000), "6m0s");
        assert_eq!(duration_text(3_723_000), "1h2m3s");
    }

    #[test]
    fn zero_is_the_loosest_value() {
        assert_eq!(tighter(0, 5), 5);
        assert_eq!(tighter(7, 0), 7);
        assert_eq!(tighter(7, 5), 5);
        assert_eq!(tighter(0, 0), 0);
    }
}
