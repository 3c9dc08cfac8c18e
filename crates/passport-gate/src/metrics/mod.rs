//! The layer's counters. Label values come from fixed sets (outcomes, rejection codes,
//! sink names chosen by the operator), never from agent ids, addresses or paths, so the
//! number of series is bounded whatever clients send.
//!
//! The counters count in every build. With the `prometheus` feature they are Prometheus
//! series (`Metrics::register`, `render`); without it they are plain atomics read
//! through the accessors. The gateway's own series (connections, admission refusals) are
//! the gateway's.

mod counter;

pub use counter::{Histogram, IntCounter, IntGauge, BUCKETS};
use passport_core::verifier::{CacheCounters, Rejection};
use std::sync::Arc;

/// Every metric passport-gate exports. Cheap to clone (each handle is an `Arc`).
#[derive(Clone, Debug)]
pub struct Metrics {
    passthrough: IntCounter,
    accepted: IntCounter,
    /// One counter per code, in the order of [`Rejection::ALL`].
    rejected: Arc<[IntCounter]>,
    /// Seconds spent verifying a passport (body read excluded).
    pub verify_seconds: Histogram,
    /// Envelope cache hits and misses, counted by the verifier.
    pub envelope_cache: Arc<CacheCounters>,
    /// Grant cache hits.
    pub grant_cache_hits: IntCounter,
    /// Grant cache misses.
    pub grant_cache_misses: IntCounter,
    /// Grant queries that failed or timed out.
    pub chain_query_errors: IntCounter,
    /// Seconds spent on grant lookups that missed the cache.
    pub chain_query_seconds: Histogram,
    /// Attribution events queued.
    pub attribution_emitted: IntCounter,
    /// Attribution events dropped because the queue was full.
    pub attribution_dropped: IntCounter,
    /// Attribution sink writes that failed.
    pub attribution_failed: IntCounter,
    /// Attribution events waiting in the queue.
    pub attribution_queue_depth: IntGauge,
    /// Accepted requests that produced no attribution event because the inner service
    /// failed without a response.
    pub attribution_lost: IntCounter,
    /// Accepted requests whose client hung up before the response head (each still has
    /// its event, marked `client_disconnected`).
    pub client_disconnects: IntCounter,
    /// Requests judged while the replay store was unreachable: failed closed, failed open.
    replay_store_failures: [IntCounter; 2],
    /// Requests refused as replays.
    pub replays_refused: IntCounter,
    /// Connections the replay store made to a Redis that can silently forget records,
    /// used because `replay.accept_forgetful_redis = true`.
    pub replay_store_forgetful: IntCounter,
    /// Revocation file lines (or Redis set members) that did not parse, at each load.
    pub revocation_bad_lines: IntCounter,
    /// Polls that found the shared revocation set empty after it held entries.
    pub revocation_set_emptied: IntCounter,
    /// Connections the revocation poller made to a Redis that can silently forget the
    /// set, used because `revocation.accept_forgetful_redis = true`.
    pub revocation_store_forgetful: IntCounter,
    /// Commands Redis refused at `maxmemory`: the replay store's, the event stream's.
    pub redis_out_of_memory_replay: IntCounter,
    /// See `redis_out_of_memory_replay`.
    pub redis_out_of_memory_stream: IntCounter,
    /// Changed principal allowlist files that were not taken whole.
    pub principals_reload_failures: IntCounter,
    /// Requests limited, one counter per reason, in the order of `LimitReason::ALL`.
    limited: [IntCounter; 5],
    /// Tokens reserved at admission.
    pub limit_tokens_reserved: IntCounter,
    /// Tokens charged when answers ended (their usage, or the whole reservation).
    pub limit_tokens_settled: IntCounter,
    /// Answers settled without a readable usage, charged their whole reservation.
    pub limit_usage_missing: IntCounter,
    /// Requests judged while the limit store was unreachable: failed closed, failed open.
    limit_store_failures: [IntCounter; 2],
    /// Bad lines of the limits policy file, counted at each reload.
    pub limits_policy_bad_lines: IntCounter,
    /// Limit store connections to a Redis that can silently forget counters, used because
    /// `limits.accept_forgetful_redis = true`.
    pub limit_store_forgetful: IntCounter,
    /// Settlements the shared limit store could not write after its retries: their
    /// reservation stays charged, their in-flight slots come back at the lease's end.
    pub limit_settlements_failed: IntCounter,
}

impl Metrics {
    /// Creates the metrics without registering them.
    pub fn new() -> Metrics {
        let c = IntCounter::unregistered;
        Metrics {
            passthrough: c(),
            accepted: c(),
            rejected: Rejection::ALL.iter().map(|_| c()).collect(),
            verify_seconds: Histogram::starting_at(0.000_005),
            envelope_cache: Arc::default(),
            grant_cache_hits: c(),
            grant_cache_misses: c(),
            chain_query_errors: c(),
            chain_query_seconds: Histogram::starting_at(0.000_1),
            attribution_emitted: c(),
            attribution_dropped: c(),
            attribution_failed: c(),
            attribution_queue_depth: IntGauge::unregistered(),
            attribution_lost: c(),
            client_disconnects: c(),
            replay_store_failures: [c(), c()],
            replays_refused: c(),
            replay_store_forgetful: c(),
            revocation_bad_lines: c(),
            revocation_set_emptied: c(),
            revocation_store_forgetful: c(),
            redis_out_of_memory_replay: c(),
            redis_out_of_memory_stream: c(),
            principals_reload_failures: c(),
            limited: [c(), c(), c(), c(), c()],
            limit_tokens_reserved: c(),
            limit_tokens_settled: c(),
            limit_usage_missing: c(),
            limit_store_failures: [c(), c()],
            limits_policy_bad_lines: c(),
            limit_store_forgetful: c(),
            limit_settlements_failed: c(),
        }
    }

    /// Counts a request that carried no passport and passed untouched.
    pub fn passthrough(&self) {
        self.passthrough.inc();
    }

    /// Counts a request whose passport was accepted.
    pub fn accepted(&self) {
        self.accepted.inc();
    }

    /// The counter of rejections with `r`.
    fn rejected_counter(&self, r: Rejection) -> &IntCounter {
        let i = Rejection::ALL.iter().position(|x| *x == r);
        // Every rejection is in `Rejection::ALL` (a unit test says so), so `i` is found.
        &self.rejected[i.unwrap_or(0)]
    }

    /// Counts a rejected request under its code.
    pub fn rejected(&self, r: Rejection) {
        self.rejected_counter(r).inc();
    }

    /// How many requests were rejected with `r` so far.
    pub fn rejected_count(&self, r: Rejection) -> u64 {
        self.rejected_counter(r).get()
    }

    /// Counts a request judged while the replay store was unreachable.
    pub fn replay_store_failure(&self, failed_open: bool) {
        self.replay_store_failures[usize::from(failed_open)].inc();
    }

    /// How many requests were judged with the replay store unreachable, by action.
    pub fn replay_store_failure_count(&self, failed_open: bool) -> u64 {
        self.replay_store_failures[usize::from(failed_open)].get()
    }

    /// Counts a request limited for `reason`.
    pub fn limited(&self, reason: crate::limits::LimitReason) {
        self.limited_counter(reason).inc();
    }

    /// How many requests were limited for `reason` so far.
    pub fn limited_count(&self, reason: crate::limits::LimitReason) -> u64 {
        self.limited_counter(reason).get()
    }

    fn limited_counter(&self, reason: crate::limits::LimitReason) -> &IntCounter {
        let i = crate::limits::LimitReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        &self.limited[i]
    }

    /// Counts a request judged while the limit store was unreachable.
    pub fn limit_store_failure(&self, failed_open: bool) {
        self.limit_store_failures[usize::from(failed_open)].inc();
    }

    /// How many requests were judged with the limit store unreachable, by action.
    pub fn limit_store_failure_count(&self, failed_open: bool) -> u64 {
        self.limit_store_failures[usize::from(failed_open)].get()
    }

    /// How many requests passed through without a passport so far.
    pub fn passthrough_count(&self) -> u64 {
        self.passthrough.get()
    }

    /// How many passports were accepted so far.
    pub fn accepted_count(&self) -> u64 {
        self.accepted.get()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(feature = "prometheus")]
mod export;
#[cfg(feature = "prometheus")]
pub use export::render;
