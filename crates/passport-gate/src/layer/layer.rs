//! [`PassportLayer`] and its builder.

use super::PassportService;
use crate::attribution::{AttributionSender, PendingEvent};
use crate::grants::{AccountCache, GrantCache, RequesterSignature, START_INFERENCE_MSG};
use crate::metrics::Metrics;
use crate::principals::PrincipalAllowlist;
use crate::replay::{MemoryReplayStore, ReleasePolicy, ReplayStore};
use crate::revocation::RevocationList;
use http::HeaderName;
use passport_core::config::{Config, ConfigError, Mode};
use passport_core::time::{Clock, SystemClock};
use passport_core::verifier::Verifier;
use std::sync::Arc;
use tower::Layer;

/// Where the requester of the binding comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequesterSource {
    /// A header carrying the requester's account address (Gonka:
    /// `X-Requester-Address`).
    Header(HeaderName),
    /// One requester for every request, a canonical account address (a devshard
    /// sidecar: the operator who pays).
    Fixed(String),
}

/// The requester a request was bound to, in the extensions of an accepted request
/// (with requester binding on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundRequester(pub String);

/// Requester binding (step 12): where the requester comes from, and the grants.
#[derive(Clone, Debug)]
pub struct Binding {
    /// The requester's source.
    pub requester: RequesterSource,
    /// Where grants are looked up.
    pub grants: GrantCache,
    /// The message type the grant must cover (default
    /// [`START_INFERENCE_MSG`]; [`CLAIM_REWARDS_MSG`](crate::grants::CLAIM_REWARDS_MSG)
    /// follows the newest inference keeper, spec section 11).
    pub msg_type_url: String,
    /// Chain accounts: when set, a grantee (a requester other than the principal) whose
    /// account has no public key does not count, as in the reference (spec section 7).
    /// Set by [`Binding::with_requester_signature`] too.
    pub accounts: Option<AccountCache>,
    /// The requester's native signature, checked before `X-Requester-Address` is
    /// believed (spec section 7.0); `None`: the header is trusted as sent.
    pub requester_signature: Option<RequesterSignature>,
}

impl Binding {
    /// Binding on `requester_header` with grants for `MsgStartInference`.
    pub fn new(requester_header: HeaderName, grants: GrantCache) -> Binding {
        Binding::from_source(RequesterSource::Header(requester_header), grants)
    }

    /// Binding on `requester` with grants for `MsgStartInference`.
    pub fn from_source(requester: RequesterSource, grants: GrantCache) -> Binding {
        Binding {
            requester,
            grants,
            msg_type_url: START_INFERENCE_MSG.to_owned(),
            accounts: None,
            requester_signature: None,
        }
    }

    /// The grant must cover `msg_type_url` instead of `MsgStartInference`.
    pub fn with_msg_type_url(mut self, msg_type_url: impl Into<String>) -> Binding {
        self.msg_type_url = msg_type_url.into();
        self
    }

    /// Looks up grantees' accounts in `accounts`: a grantee without a public key does
    /// not count (the reference's rule).
    pub fn with_accounts(mut self, accounts: AccountCache) -> Binding {
        self.accounts = Some(accounts);
        self
    }

    /// Requires the requester's native signature (`requester_signature = "gonka"`). The
    /// requester is then always `X-Requester-Address` (the header the node reads, so a
    /// fixed requester is replaced); its key comes from `signature.accounts`, which also
    /// becomes the binding's accounts (grantees without a key then never count).
    pub fn with_requester_signature(mut self, signature: RequesterSignature) -> Binding {
        self.accounts = Some(signature.accounts.clone());
        self.requester = RequesterSource::Header(HeaderName::from_static("x-requester-address"));
        self.requester_signature = Some(signature);
        self
    }
}

/// Replay protection as the layer applies it.
pub(crate) struct ReplayGuard {
    pub(crate) store: Arc<dyn ReplayStore>,
    pub(crate) fail_open: bool,
    pub(crate) clock_skew_seconds: i64,
    pub(crate) release: ReleasePolicy,
    pub(crate) issued_after: Option<passport_core::time::Timestamp>,
}

/// Accepted requests whose inner call runs in its own task (attribution on), so that
/// shutdown can wait for their events, and queue those it cannot wait for.
#[derive(Debug, Default)]
pub(crate) struct Forwarding {
    running: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
    /// The event of each call still running, by call number, with when it started.
    pending: std::sync::Mutex<std::collections::HashMap<u64, (std::time::Instant, PendingEvent)>>,
    next: std::sync::atomic::AtomicU64,
}

impl Forwarding {
    /// Counts one call, whose event is `event`; the returned guard uncounts it when
    /// dropped.
    pub(crate) fn start(self: &Arc<Self>, event: PendingEvent) -> ForwardingGuard {
        use std::sync::atomic::Ordering;
        self.running.fetch_add(1, Ordering::SeqCst);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.pending_calls()
            .insert(id, (std::time::Instant::now(), event));
        ForwardingGuard(Arc::clone(self), id)
    }

    fn pending_calls(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, (std::time::Instant, PendingEvent)>>
    {
        // Entries are inserted and removed whole: a poisoned map is still consistent.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Held by one forwarded call's task, then by its answer's body.
pub(crate) struct ForwardingGuard(Arc<Forwarding>, u64);

impl Drop for ForwardingGuard {
    fn drop(&mut self) {
        self.0.pending_calls().remove(&self.1);
        if self
            .0
            .running
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            self.0.idle.notify_waiters();
        }
    }
}

pub(crate) struct Shared {
    pub(crate) mode: Mode,
    pub(crate) forwarding: Arc<Forwarding>,
    pub(crate) body_read_timeout: std::time::Duration,
    /// Bytes of request bodies all requests may hold at once (one permit per byte).
    pub(crate) body_budget: Arc<tokio::sync::Semaphore>,
    pub(crate) replay: Option<ReplayGuard>,
    pub(crate) revocations: Option<Arc<RevocationList>>,
    /// `None` when the layer is disabled.
    pub(crate) verifier: Option<Verifier>,
    pub(crate) binding: Option<Binding>,
    pub(crate) principals: Option<Arc<PrincipalAllowlist>>,
    pub(crate) attribution: Option<AttributionSender>,
    /// Whether refused requests are queued as refusal events too.
    pub(crate) record_refusals: bool,
    pub(crate) inference_id_header: Option<HeaderName>,
    pub(crate) metrics: Metrics,
    /// Limits per principal and per agent, after every passport check.
    pub(crate) limits: Option<Arc<crate::limits::Limiter>>,
}

/// Verifies agent passports in front of an inner service. Cheap to clone.
///
/// Disabled (the default), it forwards every request untouched. Enabled, a request
/// without passport headers passes untouched too (unless `mode = required`); a request
/// with them is verified and either reaches the inner service with a
/// [`VerifiedAgent`](passport_core::VerifiedAgent) in its extensions, or is answered with a
/// problem+json rejection without reaching it.
#[derive(Clone)]
pub struct PassportLayer {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for PassportLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassportLayer")
            .field("enabled", &self.shared.verifier.is_some())
            .field("mode", &self.shared.mode)
            .finish_non_exhaustive()
    }
}

/// Builds a [`PassportLayer`].
pub struct PassportLayerBuilder {
    config: Config,
    clock: Arc<dyn Clock>,
    binding: Option<Binding>,
    principals: Option<Arc<PrincipalAllowlist>>,
    attribution: Option<AttributionSender>,
    record_refusals: bool,
    inference_id_header: Option<HeaderName>,
    metrics: Option<Metrics>,
    replay_store: Option<Arc<dyn ReplayStore>>,
    replay_fail_open: bool,
    replay_release: ReleasePolicy,
    replay_issued_after: Option<passport_core::time::Timestamp>,
    revocations: Option<Arc<RevocationList>>,
    limits: Option<Arc<crate::limits::Limiter>>,
}

impl PassportLayer {
    /// Holds all but `free` bytes of the body budget for the layer's lifetime, as other
    /// requests' bodies would: the conformance runner's `body_budget_free` setting.
    #[doc(hidden)]
    pub fn hold_body_budget(&self, free: u64) -> Result<(), String> {
        let budget = &self.shared.body_budget;
        let held = budget.available_permits().saturating_sub(free as usize);
        let held = u32::try_from(held).map_err(|_| "body_budget_free is too small")?;
        budget
            .try_acquire_many(held)
            .map_err(|e| format!("body_budget_free: {e}"))?
            .forget();
        Ok(())
    }

    /// Starts a builder from `config`.
    pub fn builder(config: Config) -> PassportLayerBuilder {
        PassportLayerBuilder {
            config,
            clock: Arc::new(SystemClock),
            binding: None,
            principals: None,
            attribution: None,
            record_refusals: false,
            inference_id_header: None,
            metrics: None,
            replay_store: None,
            replay_fail_open: false,
            replay_release: ReleasePolicy::default(),
            replay_issued_after: None,
            revocations: None,
            limits: None,
        }
    }

    /// A layer for `config` with no binding, attribution or registered metrics.
    pub fn new(config: Config) -> Result<PassportLayer, Vec<ConfigError>> {
        PassportLayer::builder(config).build()
    }

    /// A layer that forwards everything untouched.
    pub fn disabled() -> PassportLayer {
        PassportLayer {
            shared: Arc::new(Shared {
                mode: Mode::Optional,
                forwarding: Arc::default(),
                body_read_timeout: std::time::Duration::from_millis(
                    Config::default().body_read_timeout_ms,
                ),
                body_budget: Arc::new(tokio::sync::Semaphore::new(0)),
                replay: None,
                revocations: None,
                verifier: None,
                binding: None,
                principals: None,
                attribution: None,
                record_refusals: false,
                inference_id_header: None,
                metrics: Metrics::new(),
                limits: None,
            }),
        }
    }

    /// The verifier, when the layer is enabled.
    pub fn verifier(&self) -> Option<&Verifier> {
        self.shared.verifier.as_ref()
    }

    /// The layer's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Accepted requests whose call to the inner service is still running in its own
    /// task (with attribution on), each with its event still to come.
    pub fn forwarded_in_flight(&self) -> usize {
        self.shared
            .forwarding
            .running
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Queues the event of every forwarded call still running, marked
    /// `cut_at_shutdown` (status 0 when no response head came; `usage_missing` when no
    /// usage was recorded), and returns how many. A gateway calls this once its grace
    /// period ended, before it drains the attribution queue: the answers are cut when
    /// the process exits, and each request still gets exactly one event (a call that
    /// ends later finds its event taken).
    pub fn cut_forwarded(&self) -> usize {
        let Some(sender) = &self.shared.attribution else {
            return 0;
        };
        let pending: Vec<_> = self
            .shared
            .forwarding
            .pending_calls()
            .values()
            .cloned()
            .collect();
        let mut cut = 0;
        for (started, event) in pending {
            let Some(mut event) = event.take() else {
                continue;
            };
            event.cut_at_shutdown = true;
            if event.status == 0 {
                event.latency_ms = started.elapsed().as_millis() as u64;
            }
            if !event.has_usage() {
                event.usage_missing = Some(crate::attribution::UsageMissing::CutAtShutdown);
            }
            sender.emit(event);
            cut += 1;
        }
        cut
    }

    /// Completes once no forwarded call is running (their events are queued). A
    /// gateway's shutdown waits on this, within its grace period, after the
    /// connections closed: a client that hung up does not hold a connection open, but
    /// its forwarded request still owes an event.
    pub async fn forwarded_done(&self) {
        loop {
            let idle = self.shared.forwarding.idle.notified();
            if self.forwarded_in_flight() == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl PassportLayerBuilder {
    /// Reads "now" from `clock` instead of the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Enables requester binding.
    pub fn binding(mut self, binding: Binding) -> Self {
        self.binding = Some(binding);
        self
    }

    /// Refuses principals not on `list` with `principal_not_allowed`.
    pub fn principals(mut self, list: Arc<PrincipalAllowlist>) -> Self {
        self.principals = Some(list);
        self
    }

    /// Sends an attribution event for every accepted request.
    pub fn attribution(mut self, sender: AttributionSender) -> Self {
        self.attribution = Some(sender);
        self
    }

    /// Also queues a refusal event (outcome, code, status, method, path, time and the
    /// claimed, unverified identity) for every refused request, for the sinks that take
    /// them (the audit file). Needs [`attribution`](Self::attribution). Refusals are
    /// queued only while the queue is less than half full, so that a flood of forged
    /// requests cannot crowd out the events of accepted ones.
    pub fn record_refusals(mut self, on: bool) -> Self {
        self.record_refusals = on;
        self
    }

    /// Takes the attribution event's `inference_id` from this response header.
    pub fn inference_id_header(mut self, name: HeaderName) -> Self {
        self.inference_id_header = Some(name);
        self
    }

    /// Records metrics on `metrics` (with the `prometheus` feature, register them with `Metrics::register`).
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Keeps replay records in `store` (for example Redis, shared by every replica)
    /// instead of the in-process store. Used only with `replay_protection = true`.
    pub fn replay_store(mut self, store: Arc<dyn ReplayStore>) -> Self {
        self.replay_store = Some(store);
        self
    }

    /// When the replay store is unreachable, accept (true) instead of answering 503
    /// `replay_store_unavailable` (false, the default). Either way a metric counts it.
    pub fn replay_fail_open(mut self, fail_open: bool) -> Self {
        self.replay_fail_open = fail_open;
        self
    }

    /// Which answers release a request's replay record so that the same signed request
    /// may be retried (spec section 7.1). The default releases none.
    pub fn replay_release(mut self, policy: ReleasePolicy) -> Self {
        self.replay_release = policy;
        self
    }

    /// Refuses, with `passport_predates_start`, every passport issued at or before `t`.
    /// For a replay store that forgot the records of a previous run (the in-process
    /// store after a restart): a request accepted then could otherwise be accepted once
    /// more. Give the start instant plus `clock_skew_seconds` (a passport may be issued
    /// up to the skew ahead of the clock that accepted it).
    pub fn replay_refuse_issued_until(mut self, t: passport_core::time::Timestamp) -> Self {
        self.replay_issued_after = Some(t);
        self
    }

    /// Refuses passports on this revocation list with `passport_revoked`.
    pub fn revocations(mut self, list: Arc<RevocationList>) -> Self {
        self.revocations = Some(list);
        self
    }

    /// Applies `limiter` to every accepted request, after the last passport check
    /// (replay included): over a limit the request is answered 429 (or 400 for a
    /// `max_tokens` over the cap) and never reaches the inner service; admitted, its
    /// answer carries the `x-ratelimit-*` headers and its token reservation is settled
    /// to the usage its answer carries when it ends.
    pub fn limits(mut self, limiter: Arc<crate::limits::Limiter>) -> Self {
        self.limits = Some(limiter);
        self
    }

    /// Validates the configuration and builds the layer.
    pub fn build(self) -> Result<PassportLayer, Vec<ConfigError>> {
        self.config.validate()?;
        let metrics = self.metrics.unwrap_or_default();
        let verifier = if self.config.enabled {
            let mut v = Verifier::with_clock(&self.config, self.clock)?;
            v.count_cache_on(std::sync::Arc::clone(&metrics.envelope_cache));
            Some(v)
        } else {
            None
        };
        let replay = self.config.replay_protection.then(|| ReplayGuard {
            store: self.replay_store.unwrap_or_else(|| {
                Arc::new(MemoryReplayStore::new(
                    self.config.replay_cache_capacity as usize,
                    self.config.replay_records_per_principal,
                ))
            }),
            fail_open: self.replay_fail_open,
            release: self.replay_release,
            issued_after: self.replay_issued_after,
            clock_skew_seconds: self.config.clock_skew_seconds as i64,
        });
        Ok(PassportLayer {
            shared: Arc::new(Shared {
                mode: self.config.mode,
                forwarding: Arc::default(),
                body_read_timeout: std::time::Duration::from_millis(
                    self.config.body_read_timeout_ms,
                ),
                body_budget: Arc::new(tokio::sync::Semaphore::new(
                    usize::try_from(self.config.max_buffered_body_bytes)
                        .unwrap_or(usize::MAX)
                        .min(tokio::sync::Semaphore::MAX_PERMITS),
                )),
                replay,
                revocations: self.revocations,
                verifier,
                binding: self.binding,
                principals: self.principals,
                attribution: self.attribution,
                record_refusals: self.record_refusals,
                inference_id_header: self.inference_id_header,
                metrics,
                limits: self.limits,
            }),
        })
    }
}

impl<S> Layer<S> for PassportLayer {
    type Service = PassportService<S>;

    fn layer(&self, inner: S) -> PassportService<S> {
        PassportService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}
