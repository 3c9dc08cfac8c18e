//! OpenTelemetry traces without a collector to decode them (the decoding receiver is in
//! tests/external/otel.rs): a collector that never answers costs bounded memory and never a request,
//! every span it loses is counted; an unsampled trace is still propagated; with tracing
//! off a client's `traceparent` passes through as any header.

use crate::support;

use std::time::{Duration, Instant};
use support::serve::{config, send, start, upstream};

const CLIENT_TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn dropped(reason: &str) -> String {
    format!("passport_gate_trace_spans_dropped_total{{reason=\"{reason}\"}}")
}

/// A loopback port nothing listens on.
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_costs_a_bounded_queue_and_every_lost_span_is_counted() {
    let up = upstream().await;
    // Takes connections (the kernel's backlog) and never answers: each export waits
    // for its whole timeout while requests keep coming.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gw = start(
        "otel-dead-collector",
        &config(
            up.addr,
            &format!(
                "\n[tracing]\notlp_endpoint = \"http://{}/v1/traces\"\nexport_interval_ms = 100\nexport_timeout_ms = 200\nmax_queue_spans = 8\nmax_export_batch_spans = 4\n",
                silent.local_addr().unwrap()
            ),
        ),
    );
    let n = 2_000;
    let before = gw.rss_kib();
    for _ in 0..n {
        let resp = send(gw.listen, "GET", "/v1/models", &[], b"").await;
        assert_eq!(resp.status(), 200);
    }
    let after = gw.rss_kib();
    println!("RSS before {before} KiB, after {n} requests with a silent collector {after} KiB");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let full = gw.metric(&dropped("queue_full")).await;
        let failed = gw.metric(&dropped("export_failed")).await;
        if full + failed == f64::from(n) {
            assert!(full > 0.0, "a queue of 8 overflows under {n} requests");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "every span is counted: queue_full {full} + export_failed {failed} != {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        gw.metric("passport_gate_trace_spans_exported_total").await,
        0.0
    );
    // Logged, at most once a minute, naming the endpoint.
    let warnings = gw
        .drain_lines()
        .into_iter()
        .filter(|l| l.contains("trace export failed"))
        .count();
    assert_eq!(warnings, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsampled_trace_is_still_propagated_and_a_malformed_traceparent_never_forwarded() {
    let up = upstream().await;
    let gw = start(
        "otel-unsampled",
        &config(
            up.addr,
            &format!(
                "\n[tracing]\notlp_endpoint = \"http://127.0.0.1:{}\"\nsample_ratio = 0.0\n",
                dead_port()
            ),
        ),
    );
    let client = send(
        gw.listen,
        "GET",
        "/v1/models",
        &[("traceparent", CLIENT_TP), ("tracestate", "vendor=1")],
        b"",
    )
    .await;
    assert_eq!(client.status(), 200);
    let malformed = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1";
    let resp = send(
        gw.listen,
        "GET",
        "/v1/models",
        &[("traceparent", malformed), ("tracestate", "vendor=2")],
        b"",
    )
    .await;
    assert_eq!(resp.status(), 200);
    let seen = up.seen();
    let tp = |i: usize| seen[i].headers["traceparent"].to_str().unwrap().to_owned();
    // The client's sampled flag does not make the gateway record: the upstream continues
    // the same trace, from the gateway's span, unsampled.
    let first = tp(0);
    assert!(
        first.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{first}"
    );
    assert!(first.ends_with("-00"), "{first}");
    assert!(!first.contains("00f067aa0ba902b7"), "{first}");
    assert_eq!(seen[0].headers["tracestate"], "vendor=1");
    // A malformed one starts a new trace, and its tracestate goes with it.
    let second = tp(1);
    assert_eq!(second.len(), 55, "{second}");
    assert!(
        !second.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
        "{second}"
    );
    assert!(!seen[1].headers.contains_key("tracestate"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for reason in ["queue_full", "export_failed"] {
        assert_eq!(gw.metric(&dropped(reason)).await, 0.0, "nothing recorded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tracing_off_a_clients_traceparent_passes_through_untouched() {
    let up = upstream().await;
    let gw = start("otel-off", &config(up.addr, ""));
    let resp = send(
        gw.listen,
        "GET",
        "/v1/models",
        &[("traceparent", CLIENT_TP)],
        b"",
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(up.seen()[0].headers["traceparent"], CLIENT_TP);
    assert_eq!(gw.metric(&dropped("queue_full")).await, 0.0);
}
