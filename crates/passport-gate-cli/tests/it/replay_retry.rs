//! Spec section 7.1, retries and replays, over HTTP through the real binary: the replay
//! record is reserved when a request is accepted; by default no answer releases it (a
//! released record goes to whoever sends the request first), and with
//! `[replay] release_on_retryable` only answers showing the request was not processed
//! do, never the gateway's own `upstream_busy` unless `release_on_upstream_busy` says so.
//! A copy sent meanwhile is always refused.

use crate::support;

use std::sync::atomic::Ordering;
use std::time::Duration;
use support::serve::{config, replay_disk, scripted_upstream, send, start};

const URI: &str = "/v1/chat/completions";
const BODY: &[u8] = br#"{"model":"echo-1","messages":[{"role":"user","content":"retry me"}]}"#;

/// Replay protection with records released after answers showing the request was not
/// processed (`release_on_retryable`).
fn releasing(name: &str) -> String {
    format!(
        "replay_protection = true\n{}",
        replay_disk(name, "release_on_retryable = true\n")
    )
}

fn code(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text).map_or_else(
        |_| String::new(),
        |v| v["code"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_sent_while_the_first_is_forwarded_is_refused_and_a_retry_after_503_is_accepted() {
    let up = scripted_upstream(vec![(503, Duration::from_millis(600))]).await;
    let gw = start("retry-503", &config(up.addr, &releasing("retry-503")));
    let f = support::live("urn:aps:agent:retry");
    let headers = f.headers(URI, BODY);
    // The copy arrives while the first is held by the upstream: the record is reserved.
    let (first, copy) = tokio::join!(support::post(gw.listen, URI, &headers, BODY), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        support::post(gw.listen, URI, &headers, BODY).await
    });
    assert_eq!(first.0, 503, "{first:?}");
    assert_eq!((copy.0, code(&copy.1).as_str()), (401, "request_replayed"));
    // The upstream refused it before processing: the retry is accepted, once.
    assert_eq!(support::post(gw.listen, URI, &headers, BODY).await.0, 200);
    let again = support::post(gw.listen, URI, &headers, BODY).await;
    assert_eq!(
        (again.0, code(&again.1).as_str()),
        (401, "request_replayed")
    );
    assert_eq!(up.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_429_is_accepted_and_after_500_or_504_it_is_a_replay() {
    let up = scripted_upstream(vec![
        (429, Duration::ZERO),
        (200, Duration::ZERO),
        (500, Duration::ZERO),
        (200, Duration::from_millis(1500)),
    ])
    .await;
    let gw = start(
        "retry-statuses",
        &config(up.addr, &releasing("retry-statuses"))
            .replace("response_timeout_ms = 3000", "response_timeout_ms = 500"),
    );
    let f = support::live("urn:aps:agent:retry");
    let body =
        |n: u8| format!(r#"{{"model":"echo-1","messages":[{{"role":"user","content":"{n}"}}]}}"#);
    let (b1, b2, b3) = (body(1), body(2), body(3));
    let h1 = f.headers(URI, b1.as_bytes());
    assert_eq!(
        support::post(gw.listen, URI, &h1, b1.as_bytes()).await.0,
        429
    );
    assert_eq!(
        support::post(gw.listen, URI, &h1, b1.as_bytes()).await.0,
        200
    );
    // A 500 may follow processing: the record stays.
    let h2 = f.headers(URI, b2.as_bytes());
    assert_eq!(
        support::post(gw.listen, URI, &h2, b2.as_bytes()).await.0,
        500
    );
    let replay = support::post(gw.listen, URI, &h2, b2.as_bytes()).await;
    assert_eq!(
        (replay.0, code(&replay.1).as_str()),
        (401, "request_replayed")
    );
    // So may a timeout (the upstream got the request and is still at work).
    let h3 = f.headers(URI, b3.as_bytes());
    assert_eq!(
        support::post(gw.listen, URI, &h3, b3.as_bytes()).await.0,
        504
    );
    let replay = support::post(gw.listen, URI, &h3, b3.as_bytes()).await;
    assert_eq!(
        (replay.0, code(&replay.1).as_str()),
        (401, "request_replayed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_the_upstream_was_unreachable_is_accepted() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let gw = start(
        "retry-unreachable",
        &config(addr, &releasing("retry-unreachable")),
    );
    let f = support::live("urn:aps:agent:retry");
    let headers = f.headers(URI, BODY);
    let refused = support::post(gw.listen, URI, &headers, BODY).await;
    assert_eq!(
        (refused.0, code(&refused.1).as_str()),
        (502, "upstream_unavailable")
    );
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        let app = axum::Router::new().fallback(|| async { "{}" });
        axum::serve(listener, app).await.unwrap()
    });
    assert_eq!(support::post(gw.listen, URI, &headers, BODY).await.0, 200);
    let replay = support::post(gw.listen, URI, &headers, BODY).await;
    assert_eq!(
        (replay.0, code(&replay.1).as_str()),
        (401, "request_replayed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_many_concurrent_copies_exactly_one_is_accepted() {
    let up = scripted_upstream(vec![(200, Duration::from_millis(300))]).await;
    let gw = start(
        "retry-concurrent",
        &config(
            up.addr,
            &format!(
                "replay_protection = true\n{}",
                replay_disk("retry-concurrent", "")
            ),
        ),
    );
    let f = support::live("urn:aps:agent:retry");
    let headers = f.headers(URI, BODY);
    let copies: Vec<_> = (0..8)
        .map(|_| {
            let headers = headers.clone();
            let addr = gw.listen;
            tokio::spawn(async move { support::post(addr, URI, &headers, BODY).await.0 })
        })
        .collect();
    let mut statuses = Vec::new();
    for c in copies {
        statuses.push(c.await.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 401, 401, 401, 401, 401, 401, 401]);
    assert_eq!(up.calls.load(Ordering::SeqCst), 1);
}

/// The default: no answer releases the record. A captured request whose first sending
/// got an upstream 503 or 429 (load can cause both) cannot be replayed by whoever sends
/// it next; the client signs a new request instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_an_upstream_503_or_429_keeps_the_record_and_the_copy_is_refused() {
    let up = scripted_upstream(vec![(503, Duration::ZERO), (429, Duration::ZERO)]).await;
    let gw = start(
        "retry-strict",
        &config(
            up.addr,
            &format!(
                "replay_protection = true\n{}",
                replay_disk("retry-strict", "")
            ),
        ),
    );
    let f = support::live("urn:aps:agent:victim");
    for (n, status) in [(1u8, 503), (2, 429)] {
        let body =
            format!(r#"{{"model":"echo-1","messages":[{{"role":"user","content":"{n}"}}]}}"#);
        let headers = f.headers(URI, body.as_bytes());
        let first = support::post(gw.listen, URI, &headers, body.as_bytes()).await;
        assert_eq!(first.0, status, "{first:?}");
        let copy = support::post(gw.listen, URI, &headers, body.as_bytes()).await;
        assert_eq!(
            (copy.0, code(&copy.1).as_str()),
            (401, "request_replayed"),
            "after {status}"
        );
    }
    assert_eq!(up.calls.load(Ordering::SeqCst), 2);
}

/// The gateway's own 503 `upstream_busy` is caused by whoever fills
/// `max_upstream_requests`: it never releases the record, even with
/// `release_on_retryable`, unless `release_on_upstream_busy` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_busy_releases_the_record_only_where_the_mode_says_so() {
    for (name, extra, replay_status) in [
        ("busy-retryable", "release_on_retryable = true\n", 401),
        (
            "busy-released",
            "release_on_retryable = true\nrelease_on_upstream_busy = true\n",
            200,
        ),
    ] {
        // The first request holds the only upstream slot for 800 ms.
        let up = scripted_upstream(vec![(200, Duration::from_millis(800))]).await;
        let toml = config(
            up.addr,
            &format!("replay_protection = true\n{}", replay_disk(name, extra)),
        )
        .replace(
            "[agent_envelope]",
            "max_upstream_requests = 1\n\n[agent_envelope]",
        );
        let gw = start(name, &toml);
        let listen = gw.listen;
        let holder = tokio::spawn(async move { send(listen, "GET", "/v1/models", &[], b"").await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let f = support::live("urn:aps:agent:victim");
        let headers = f.headers(URI, BODY);
        let shed = support::post(gw.listen, URI, &headers, BODY).await;
        assert_eq!(
            (shed.0, code(&shed.1).as_str()),
            (503, "upstream_busy"),
            "{name}"
        );
        assert_eq!(holder.await.unwrap().status(), 200);
        // The slot is free again: whoever captured the request now sends it.
        let replay = support::post(gw.listen, URI, &headers, BODY).await;
        assert_eq!(replay.0, replay_status, "{name}: {replay:?}");
    }
}
