//! Spec section 7.1, retries are not replays, over HTTP through the real binary: the
//! replay record is reserved when a request is accepted and released only when the
//! answer shows the request was not processed; a copy sent meanwhile is refused.

use crate::support;

use std::sync::atomic::Ordering;
use std::time::Duration;
use support::serve::{config, scripted_upstream, start};

const URI: &str = "/v1/chat/completions";
const BODY: &[u8] = br#"{"model":"echo-1","messages":[{"role":"user","content":"retry me"}]}"#;

fn code(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text).map_or_else(
        |_| String::new(),
        |v| v["code"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_sent_while_the_first_is_forwarded_is_refused_and_a_retry_after_503_is_accepted() {
    let up = scripted_upstream(vec![(503, Duration::from_millis(600))]).await;
    let gw = start("retry-503", &config(up.addr, "replay_protection = true\n"));
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
        &config(up.addr, "replay_protection = true\n")
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
        &config(addr, "replay_protection = true\n"),
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
        &config(up.addr, "replay_protection = true\n"),
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
