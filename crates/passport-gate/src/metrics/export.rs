//! The layer's counters as Prometheus series (the `prometheus` feature): one collector
//! that reads the atomics at each scrape, under the documented names.

use super::counter::{HistogramCells, BUCKETS};
use super::{IntCounter, Metrics};
use passport_core::verifier::Rejection;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::Registry;
use std::sync::atomic::Ordering;

/// The name and help of every family the collector exports, in order.
const FAMILIES: [(&str, &str); 30] = [
    ("passport_gate_requests_total", "Requests seen by the passport layer, by outcome and rejection code"),
    ("passport_gate_verify_duration_seconds", "Time to verify a passport, body read excluded"),
    ("passport_gate_envelope_cache_hits_total", "Passports found already verified in the envelope cache"),
    ("passport_gate_envelope_cache_misses_total", "Passports parsed and checked in full"),
    ("passport_gate_grant_cache_hits_total", "Requester binding answers found in the grant cache"),
    ("passport_gate_grant_cache_misses_total", "Requester binding answers that needed a chain query"),
    ("passport_gate_chain_query_errors_total", "Grant queries that failed or timed out"),
    ("passport_gate_chain_query_duration_seconds", "Time of grant lookups that missed the cache"),
    ("passport_gate_attribution_events_emitted_total", "Attribution events queued"),
    ("passport_gate_attribution_events_dropped_total", "Attribution events dropped because the queue was full"),
    ("passport_gate_attribution_events_failed_total", "Attribution sink writes that failed"),
    ("passport_gate_attribution_events_lost_total", "Accepted requests whose inner service failed without a response, so no event was made"),
    ("passport_gate_client_disconnects_total", "Accepted requests whose client hung up before the response head"),
    ("passport_gate_attribution_queue_depth", "Attribution events waiting to be written"),
    ("passport_gate_replay_store_failures_total", "Requests judged while the replay store was unreachable, by action (fail_closed or fail_open)"),
    ("passport_gate_replays_refused_total", "Requests refused because the same signed request was accepted before"),
    ("passport_gate_replay_store_forgetful_connections_total", "Replay store connections to a Redis that can silently forget records, used because replay.accept_forgetful_redis = true"),
    ("passport_gate_revocation_bad_lines_total", "Revocation entries that did not parse, counted at each load of the file or the Redis set"),
    ("passport_gate_principals_reload_failures_total", "Changed principal allowlist files that were not taken (unreadable, too large or with a bad line); the last good list stays in force."),
    ("passport_gate_revocation_set_emptied_total", "Polls that found the shared revocation set empty after it held entries (a Redis that lost its data, or the last entry removed)"),
    ("passport_gate_revocation_store_forgetful_connections_total", "Revocation poller connections to a Redis that can silently forget the set, used because revocation.accept_forgetful_redis = true"),
    ("passport_gate_redis_out_of_memory_total", "Redis commands refused at maxmemory, by store (replay: answered 503 replay_store_full; stream: the event is dropped and counted as failed)"),
    ("passport_gate_limited_requests_total", "Requests refused by the limits, by reason"),
    ("passport_gate_limit_tokens_reserved_total", "Tokens reserved by admitted requests"),
    ("passport_gate_limit_tokens_settled_total", "Tokens charged when answers ended: their usage, or the whole reservation when none was readable"),
    ("passport_gate_limit_usage_missing_total", "Answers without a readable usage, charged their whole reservation"),
    ("passport_gate_limit_store_failures_total", "Requests judged while the limit store was unreachable, by action (fail_closed or fail_open)"),
    ("passport_gate_limits_policy_bad_lines_total", "Bad lines of the limits policy file (or unreadable files), counted at each reload"),
    ("passport_gate_limit_store_forgetful_connections_total", "Limit store connections to a Redis that can silently forget counters, used because limits.accept_forgetful_redis = true"),
    ("passport_gate_limit_settlements_failed_total", "Settlements the shared limit store could not write after retries: the reservation stays charged, the in-flight slots return at the end of their lease"),
];

struct LayerCollector {
    metrics: Metrics,
    descs: Vec<Desc>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let metrics = Metrics::default();
        let descs = FAMILIES
            .iter()
            .map(|(name, help)| {
                Desc::new(
                    (*name).into(),
                    (*help).into(),
                    Vec::new(),
                    Default::default(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        registry.register(Box::new(LayerCollector {
            metrics: metrics.clone(),
            descs,
        }))?;
        Ok(metrics)
    }
}

fn family(index: usize, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let (name, help) = FAMILIES[index];
    let mut f = MetricFamily::default();
    f.set_name(name.into());
    f.set_help(help.into());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn labels(pairs: &[(&str, &str)]) -> Vec<proto::LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut p = proto::LabelPair::default();
            p.set_name((*k).into());
            p.set_value((*v).into());
            p
        })
        .collect()
}

fn counter(value: u64, pairs: &[(&str, &str)]) -> proto::Metric {
    let mut c = proto::Counter::default();
    c.set_value(value as f64);
    let mut m = proto::Metric::default();
    m.set_label(labels(pairs));
    m.set_counter(c);
    m
}

fn gauge(value: i64) -> proto::Metric {
    let mut g = proto::Gauge::default();
    g.set_value(value as f64);
    proto::Metric::from_gauge(g)
}

fn histogram(cells: &HistogramCells) -> proto::Metric {
    let mut buckets = Vec::with_capacity(BUCKETS);
    let mut cumulative = 0;
    let mut bound = cells.start;
    for cell in &cells.buckets[..BUCKETS] {
        cumulative += cell.load(Ordering::Relaxed);
        let mut b = proto::Bucket::default();
        b.set_upper_bound(bound);
        b.set_cumulative_count(cumulative);
        buckets.push(b);
        bound *= 2.0;
    }
    cumulative += cells.buckets[BUCKETS].load(Ordering::Relaxed);
    let mut h = proto::Histogram::default();
    h.set_sample_count(cumulative);
    h.set_sample_sum(cells.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9);
    h.set_bucket(buckets);
    let mut m = proto::Metric::default();
    m.set_histogram(h);
    m
}

impl Collector for LayerCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let m = &self.metrics;
        let plain = |c: &IntCounter| vec![counter(c.get(), &[])];
        let mut requests = vec![
            counter(
                m.passthrough.get(),
                &[("code", ""), ("outcome", "passthrough")],
            ),
            counter(m.accepted.get(), &[("code", ""), ("outcome", "accepted")]),
        ];
        for (r, c) in Rejection::ALL.iter().zip(m.rejected.iter()) {
            requests.push(counter(
                c.get(),
                &[("code", r.code()), ("outcome", "rejected")],
            ));
        }
        let cache = m.envelope_cache.stats();
        use MetricType::{COUNTER, GAUGE, HISTOGRAM};
        vec![
            family(0, COUNTER, requests),
            family(1, HISTOGRAM, vec![histogram(m.verify_seconds.cells())]),
            family(2, COUNTER, vec![counter(cache.hits, &[])]),
            family(3, COUNTER, vec![counter(cache.misses, &[])]),
            family(4, COUNTER, plain(&m.grant_cache_hits)),
            family(5, COUNTER, plain(&m.grant_cache_misses)),
            family(6, COUNTER, plain(&m.chain_query_errors)),
            family(7, HISTOGRAM, vec![histogram(m.chain_query_seconds.cells())]),
            family(8, COUNTER, plain(&m.attribution_emitted)),
            family(9, COUNTER, plain(&m.attribution_dropped)),
            family(10, COUNTER, plain(&m.attribution_failed)),
            family(11, COUNTER, plain(&m.attribution_lost)),
            family(12, COUNTER, plain(&m.client_disconnects)),
            family(13, GAUGE, vec![gauge(m.attribution_queue_depth.get())]),
            family(
                14,
                COUNTER,
                vec![
                    counter(
                        m.replay_store_failures[0].get(),
                        &[("action", "fail_closed")],
                    ),
                    counter(m.replay_store_failures[1].get(), &[("action", "fail_open")]),
                ],
            ),
            family(15, COUNTER, plain(&m.replays_refused)),
            family(16, COUNTER, plain(&m.replay_store_forgetful)),
            family(17, COUNTER, plain(&m.revocation_bad_lines)),
            family(18, COUNTER, plain(&m.principals_reload_failures)),
            family(19, COUNTER, plain(&m.revocation_set_emptied)),
            family(20, COUNTER, plain(&m.revocation_store_forgetful)),
            family(
                21,
                COUNTER,
                vec![
                    counter(m.redis_out_of_memory_replay.get(), &[("store", "replay")]),
                    counter(m.redis_out_of_memory_stream.get(), &[("store", "stream")]),
                ],
            ),
            family(
                22,
                COUNTER,
                crate::limits::LimitReason::ALL
                    .iter()
                    .zip(m.limited.iter())
                    .map(|(r, c)| counter(c.get(), &[("reason", r.label())]))
                    .collect(),
            ),
            family(23, COUNTER, plain(&m.limit_tokens_reserved)),
            family(24, COUNTER, plain(&m.limit_tokens_settled)),
            family(25, COUNTER, plain(&m.limit_usage_missing)),
            family(
                26,
                COUNTER,
                vec![
                    counter(
                        m.limit_store_failures[0].get(),
                        &[("action", "fail_closed")],
                    ),
                    counter(m.limit_store_failures[1].get(), &[("action", "fail_open")]),
                ],
            ),
            family(27, COUNTER, plain(&m.limits_policy_bad_lines)),
            family(28, COUNTER, plain(&m.limit_store_forgetful)),
            family(29, COUNTER, plain(&m.limit_settlements_failed)),
        ]
    }
}

/// The Prometheus text exposition of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut out = String::default();
    let encoder = prometheus::TextEncoder;
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
        let registry = Registry::default();
        let m = Metrics::register(&registry).unwrap();
        m.passthrough();
        m.rejected(Rejection::AgentSigInvalid);
        m.verify_seconds.observe(0.001);
        let text = render(&registry);
        assert!(text.contains(r#"passport_gate_requests_total{code="",outcome="passthrough"} 1"#));
        assert!(text.contains(
            r#"passport_gate_requests_total{code="agent_sig_invalid",outcome="rejected"} 1"#
        ));
        assert!(text.contains("passport_gate_verify_duration_seconds_count 1"));
        for (name, _) in FAMILIES {
            assert!(text.contains(name), "{name} missing");
        }
    }
}
