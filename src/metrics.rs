//! Prometheus metrics. Label values come from fixed sets (outcomes, rejection codes,
//! sink names chosen by the operator), never from agent ids, addresses or paths, so the
//! number of series is bounded whatever clients send.

use crate::gateway::GatewayError;
use crate::verifier::Rejection;
use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// Every metric passport-gate exports. Cheap to clone (each handle is an `Arc`).
#[derive(Clone, Debug)]
pub struct Metrics {
    requests: IntCounterVec,
    passthrough: IntCounter,
    accepted: IntCounter,
    /// Seconds spent verifying a passport (body read excluded).
    pub verify_seconds: Histogram,
    /// Envelope cache hits.
    pub envelope_cache_hits: IntCounter,
    /// Envelope cache misses.
    pub envelope_cache_misses: IntCounter,
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
    /// Requests judged while the replay store was unreachable, by what was done.
    replay_store_failures: IntCounterVec,
    /// Requests refused as replays.
    pub replays_refused: IntCounter,
    /// Connections the replay store made to a Redis that can silently forget records,
    /// used because `replay.accept_forgetful_redis = true`.
    pub replay_store_forgetful: IntCounter,
    /// Revocation file lines (or Redis set members) that did not parse, at each load.
    pub revocation_bad_lines: IntCounter,
    /// Requests forwarded without a passport check or refused, by action.
    unguarded_requests: IntCounterVec,
    /// Requests the gateway answered itself before any route or passport check, by code.
    gateway_refusals: IntCounterVec,
    /// Open connections, by listener.
    open_connections: IntGaugeVec,
    /// Connections closed at once because the listener was full, by listener.
    connections_refused: IntCounterVec,
    /// Failed accepts (for example EMFILE), by listener.
    accept_errors: IntCounterVec,
}

/// The `action` labels of `passport_gate_unguarded_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unguarded {
    /// Forwarded without a passport check (`routes.unguarded = "forward"`).
    Forwarded,
    /// Forwarded without a passport check because the route is in `routes.public`.
    Public,
    /// Answered 404 `route_not_allowed` (`routes.unguarded = "refuse"`).
    Refused,
}

impl Unguarded {
    const ALL: [Unguarded; 3] = [Unguarded::Forwarded, Unguarded::Public, Unguarded::Refused];

    const fn label(self) -> &'static str {
        match self {
            Unguarded::Forwarded => "forwarded",
            Unguarded::Public => "public",
            Unguarded::Refused => "refused",
        }
    }
}

/// The `listener` labels of the connection metrics.
pub const LISTENERS: [&str; 2] = ["proxy", "admin"];

/// The connection metrics of one listener.
#[derive(Clone, Debug)]
pub struct ConnectionMetrics {
    /// Connections open now.
    pub open: IntGauge,
    /// Connections closed at once because the listener was full.
    pub refused: IntCounter,
    /// Failed accepts.
    pub accept_errors: IntCounter,
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect(BUILT_IN)
}

// Metric names and help texts are constants that satisfy Prometheus' naming rules, so
// constructing them cannot fail at run time.
const BUILT_IN: &str = "built-in metric definitions are valid";

impl Metrics {
    /// Creates the metrics without registering them.
    pub fn new() -> Metrics {
        let requests = IntCounterVec::new(
            Opts::new(
                "passport_gate_requests_total",
                "Requests seen by the passport layer, by outcome and rejection code",
            ),
            &["outcome", "code"],
        )
        .expect(BUILT_IN);
        let passthrough = requests.with_label_values(&["passthrough", ""]);
        let accepted = requests.with_label_values(&["accepted", ""]);
        for r in Rejection::ALL {
            requests.with_label_values(&["rejected", r.code()]);
        }
        let histogram = |name: &str, help: &str, start: f64| {
            Histogram::with_opts(
                HistogramOpts::new(name, help)
                    .buckets(exponential_buckets(start, 2.0, 16).unwrap_or_default()),
            )
            .expect(BUILT_IN)
        };
        let replay_store_failures = IntCounterVec::new(
            Opts::new(
                "passport_gate_replay_store_failures_total",
                "Requests judged while the replay store was unreachable, by action (fail_closed or fail_open)",
            ),
            &["action"],
        )
        .expect(BUILT_IN);
        for action in ["fail_closed", "fail_open"] {
            replay_store_failures.with_label_values(&[action]);
        }
        let unguarded_requests = IntCounterVec::new(
            Opts::new(
                "passport_gate_unguarded_requests_total",
                "Requests forwarded without a passport check (forwarded, public) or refused on an unguarded route",
            ),
            &["action"],
        )
        .expect(BUILT_IN);
        for a in Unguarded::ALL {
            unguarded_requests.with_label_values(&[a.label()]);
        }
        let gateway_refusals = IntCounterVec::new(
            Opts::new(
                "passport_gate_gateway_refusals_total",
                "Requests the gateway answered itself before any route or passport check, by code",
            ),
            &["code"],
        )
        .expect(BUILT_IN);
        for e in GatewayError::ADMISSION {
            gateway_refusals.with_label_values(&[e.code()]);
        }
        let per_listener = |name: &str, help: &str| {
            let v = IntCounterVec::new(Opts::new(name, help), &["listener"]).expect(BUILT_IN);
            for l in LISTENERS {
                v.with_label_values(&[l]);
            }
            v
        };
        let open_connections = IntGaugeVec::new(
            Opts::new(
                "passport_gate_open_connections",
                "Open client connections, by listener",
            ),
            &["listener"],
        )
        .expect(BUILT_IN);
        for l in LISTENERS {
            open_connections.with_label_values(&[l]);
        }
        Metrics {
            unguarded_requests,
            gateway_refusals,
            open_connections,
            connections_refused: per_listener(
                "passport_gate_connections_refused_total",
                "Connections closed at once because the listener had max_connections open",
            ),
            accept_errors: per_listener(
                "passport_gate_accept_errors_total",
                "Failed accepts (for example EMFILE: no file descriptor left)",
            ),
            replay_store_failures,
            replays_refused: counter(
                "passport_gate_replays_refused_total",
                "Requests refused because the same signed request was accepted before",
            ),
            replay_store_forgetful: counter(
                "passport_gate_replay_store_forgetful_connections_total",
                "Replay store connections to a Redis that can silently forget records, used because replay.accept_forgetful_redis = true",
            ),
            revocation_bad_lines: counter(
                "passport_gate_revocation_bad_lines_total",
                "Revocation entries that did not parse, counted at each load of the file or the Redis set",
            ),
            requests,
            passthrough,
            accepted,
            verify_seconds: histogram(
                "passport_gate_verify_duration_seconds",
                "Time to verify a passport, body read excluded",
                0.000_005,
            ),
            envelope_cache_hits: counter(
                "passport_gate_envelope_cache_hits_total",
                "Passports found already verified in the envelope cache",
            ),
            envelope_cache_misses: counter(
                "passport_gate_envelope_cache_misses_total",
                "Passports parsed and checked in full",
            ),
            grant_cache_hits: counter(
                "passport_gate_grant_cache_hits_total",
                "Requester binding answers found in the grant cache",
            ),
            grant_cache_misses: counter(
                "passport_gate_grant_cache_misses_total",
                "Requester binding answers that needed a chain query",
            ),
            chain_query_errors: counter(
                "passport_gate_chain_query_errors_total",
                "Grant queries that failed or timed out",
            ),
            chain_query_seconds: histogram(
                "passport_gate_chain_query_duration_seconds",
                "Time of grant lookups that missed the cache",
                0.000_1,
            ),
            attribution_emitted: counter(
                "passport_gate_attribution_events_emitted_total",
                "Attribution events queued",
            ),
            attribution_dropped: counter(
                "passport_gate_attribution_events_dropped_total",
                "Attribution events dropped because the queue was full",
            ),
            attribution_failed: counter(
                "passport_gate_attribution_events_failed_total",
                "Attribution sink writes that failed",
            ),
            attribution_lost: counter(
                "passport_gate_attribution_events_lost_total",
                "Accepted requests whose inner service failed without a response, so no event was made",
            ),
            client_disconnects: counter(
                "passport_gate_client_disconnects_total",
                "Accepted requests whose client hung up before the response head",
            ),
            attribution_queue_depth: IntGauge::new(
                "passport_gate_attribution_queue_depth",
                "Attribution events waiting to be written",
            )
            .expect(BUILT_IN),
        }
    }

    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let m = Metrics::new();
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.verify_seconds.clone()))?;
        for c in [
            &m.envelope_cache_hits,
            &m.envelope_cache_misses,
            &m.grant_cache_hits,
            &m.grant_cache_misses,
            &m.chain_query_errors,
            &m.attribution_emitted,
            &m.attribution_dropped,
            &m.attribution_failed,
            &m.attribution_lost,
            &m.client_disconnects,
            &m.replay_store_forgetful,
            &m.revocation_bad_lines,
        ] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(m.chain_query_seconds.clone()))?;
        registry.register(Box::new(m.attribution_queue_depth.clone()))?;
        registry.register(Box::new(m.replay_store_failures.clone()))?;
        registry.register(Box::new(m.replays_refused.clone()))?;
        registry.register(Box::new(m.unguarded_requests.clone()))?;
        registry.register(Box::new(m.gateway_refusals.clone()))?;
        registry.register(Box::new(m.open_connections.clone()))?;
        registry.register(Box::new(m.connections_refused.clone()))?;
        registry.register(Box::new(m.accept_errors.clone()))?;
        Ok(m)
    }

    /// Counts a request that carried no passport and passed untouched.
    pub fn passthrough(&self) {
        self.passthrough.inc();
    }

    /// Counts a request whose passport was accepted.
    pub fn accepted(&self) {
        self.accepted.inc();
    }

    /// Counts a rejected request under its code.
    pub fn rejected(&self, r: Rejection) {
        self.requests
            .with_label_values(&["rejected", r.code()])
            .inc();
    }

    /// How many requests were rejected with `r` so far.
    pub fn rejected_count(&self, r: Rejection) -> u64 {
        self.requests
            .with_label_values(&["rejected", r.code()])
            .get()
    }

    /// Counts a request judged while the replay store was unreachable.
    pub fn replay_store_failure(&self, failed_open: bool) {
        self.replay_store_failures
            .with_label_values(&[action(failed_open)])
            .inc();
    }

    /// How many requests were judged with the replay store unreachable, by action.
    pub fn replay_store_failure_count(&self, failed_open: bool) -> u64 {
        self.replay_store_failures
            .with_label_values(&[action(failed_open)])
            .get()
    }

    /// Counts a request on a route without a passport check.
    pub fn unguarded(&self, action: Unguarded) {
        self.unguarded_requests
            .with_label_values(&[action.label()])
            .inc();
    }

    /// Counts a request refused at admission, under its code (one of
    /// [`GatewayError::ADMISSION`]).
    pub fn gateway_refusal(&self, e: GatewayError) {
        self.gateway_refusals.with_label_values(&[e.code()]).inc();
    }

    /// The connection metrics of `listener` (one of [`LISTENERS`]).
    pub fn connections(&self, listener: &'static str) -> ConnectionMetrics {
        ConnectionMetrics {
            open: self.open_connections.with_label_values(&[listener]),
            refused: self.connections_refused.with_label_values(&[listener]),
            accept_errors: self.accept_errors.with_label_values(&[listener]),
        }
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

/// The `action` label of a replay store failure.
fn action(failed_open: bool) -> &'static str {
    if failed_open {
        "fail_open"
    } else {
        "fail_closed"
    }
}

/// The Prometheus text exposition of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    let encoder = prometheus::TextEncoder::new();
    if encoder.encode_utf8(&registry.gather(), &mut out).is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_metrics_render_with_documented_names() {
        let registry = Registry::new();
        let m = Metrics::register(&registry).unwrap();
        m.passthrough();
        m.rejected(Rejection::AgentSigInvalid);
        let text = render(&registry);
        assert!(text.contains(r#"passport_gate_requests_total{code="",outcome="passthrough"} 1"#));
        assert!(text.contains(
            r#"passport_gate_requests_total{code="agent_sig_invalid",outcome="rejected"} 1"#
        ));
        for name in [
            "passport_gate_verify_duration_seconds",
            "passport_gate_envelope_cache_hits_total",
            "passport_gate_grant_cache_misses_total",
            "passport_gate_chain_query_errors_total",
            "passport_gate_attribution_events_dropped_total",
            "passport_gate_attribution_queue_depth",
            "passport_gate_replay_store_forgetful_connections_total",
            "passport_gate_revocation_bad_lines_total",
            "passport_gate_unguarded_requests_total{action=\"public\"}",
            "passport_gate_open_connections{listener=\"admin\"}",
            "passport_gate_connections_refused_total{listener=\"proxy\"}",
            "passport_gate_accept_errors_total{listener=\"proxy\"}",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
    }
}
