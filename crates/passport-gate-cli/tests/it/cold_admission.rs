//! Spec section 6.3 over real HTTP: passports not in the envelope cache are verified
//! within `max_concurrent_cold_verifications` and `cold_verifications_per_second`;
//! beyond, 503 `verification_busy` with `Retry-After`, while cached passports pass.

use crate::support;

use passport_core::crypto::{decode_base64, encode_base64};
use passport_core::mint::sign_request;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::serve::{config, start, upstream, CHAIN};

const PATH: &str = "/v1/chat/completions";
const BODY: &[u8] = br#"{"model":"m","messages":[]}"#;

/// `count` distinct passports of valid shape whose principal signature is another
/// passport's (so it does not verify), each with a valid agent signature over `BODY`.
fn forged(count: usize) -> Vec<Vec<(String, String)>> {
    let donor = support::live("urn:aps:agent:donor");
    let donor_json: serde_json::Value =
        serde_json::from_slice(&decode_base64(&donor.passport).unwrap()).unwrap();
    (0..count)
        .map(|i| {
            let f = support::live(&format!("urn:aps:agent:forged-{i}"));
            let mut json: serde_json::Value =
                serde_json::from_slice(&decode_base64(&f.passport).unwrap()).unwrap();
            json["principal_sig"] = donor_json["principal_sig"].clone();
            let passport = encode_base64(&serde_json::to_vec(&json).unwrap());
            let sig = sign_request(&f.agent, &passport, CHAIN, "POST", PATH, BODY).unwrap();
            vec![
                ("x-agent-passport".to_owned(), passport),
                ("x-agent-sig".to_owned(), sig),
            ]
        })
        .collect()
}

/// Sends every forged request from `senders` concurrent tasks; returns each answer's
/// status, `Retry-After` and body.
async fn flood(
    addr: SocketAddr,
    requests: Vec<Vec<(String, String)>>,
    senders: usize,
) -> Vec<(u16, Option<String>, String)> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let requests = std::sync::Arc::new(requests);
    let tasks: Vec<_> = (0..senders)
        .map(|s| {
            let client = client.clone();
            let requests = std::sync::Arc::clone(&requests);
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for headers in requests.iter().skip(s).step_by(senders) {
                    let mut req = http::Request::post(format!("http://{addr}{PATH}"));
                    for (n, v) in headers {
                        req = req.header(n, v);
                    }
                    let body = http_body_util::Full::new(bytes::Bytes::from_static(BODY));
                    let resp = client.request(req.body(body).unwrap()).await.unwrap();
                    let status = resp.status().as_u16();
                    let retry = resp
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_owned());
                    let text = resp.into_body().collect().await.unwrap().to_bytes();
                    answers.push((status, retry, String::from_utf8_lossy(&text).into_owned()));
                }
                answers
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(
            tokio::time::timeout(Duration::from_secs(120), t)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    all
}

/// Checks what a flood got back: only 401 `principal_sig_invalid` and 503
/// `verification_busy` with `Retry-After: 1`; returns how many were shed.
fn shed_count(answers: &[(u16, Option<String>, String)]) -> usize {
    let mut shed = 0;
    for (status, retry, body) in answers {
        match status {
            401 => assert!(body.contains("principal_sig_invalid"), "{body}"),
            503 => {
                assert!(body.contains("verification_busy"), "{body}");
                assert_eq!(retry.as_deref(), Some("1"));
                shed += 1;
            }
            other => panic!("a forged passport was answered {other}: {body}"),
        }
    }
    shed
}

const BUSY: &str = r#"passport_gate_requests_total{code="verification_busy",outcome="rejected"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgery_flood_is_refused_never_accepted_and_cached_passports_still_pass() {
    let up = upstream().await;
    // The upstream holds each answer's last chunk until released: release them all.
    for _ in 0..100 {
        up.release_last_chunk.send(()).unwrap();
    }
    let gw = start(
        "cold-flood",
        &config(
            up.addr,
            "max_concurrent_cold_verifications = 1\ncold_verifications_per_second = 20\n",
        ),
    );
    let agent = support::live("urn:aps:agent:cached");
    let (status, body) = support::post(gw.listen, PATH, &agent.headers(PATH, BODY), BODY).await;
    assert_eq!(status, 200, "{body}");
    let forged = forged(300);
    let rss_before = gw.rss_kib();
    let addr = gw.listen;
    let flooding = tokio::spawn(flood(addr, forged, 16));
    // Cached requests during the flood (distinct bodies: distinct signed requests).
    let mut cached_ok = 1;
    let started = Instant::now();
    for i in 0..20 {
        let body = format!(r#"{{"model":"m","n":{i}}}"#);
        let headers = agent.headers(PATH, body.as_bytes());
        let (status, text) = support::post(addr, PATH, &headers, body.as_bytes()).await;
        assert_eq!(
            status, 200,
            "a cached passport was refused during the flood: {text}"
        );
        cached_ok += 1;
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    let answers = flooding.await.unwrap();
    assert_eq!(answers.len(), 300);
    let shed = shed_count(&answers);
    assert!(
        shed > 0,
        "300 forged passports at 20 per second: some must be shed"
    );
    assert_eq!(gw.metric(BUSY).await as usize, shed);
    // Nothing forged reached the upstream; every cached request did.
    assert_eq!(up.seen().len(), cached_ok);
    // Forged passports leave nothing behind.
    let grown = gw.rss_kib().saturating_sub(rss_before);
    assert!(grown < 16 * 1024, "RSS grew {grown} KiB over the flood");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_verifications_beyond_the_concurrency_bound_are_shed() {
    let up = upstream().await;
    let gw = start(
        "cold-concurrency",
        &config(
            up.addr,
            "max_concurrent_cold_verifications = 1\ncold_verifications_per_second = 0\n",
        ),
    );
    let answers = flood(gw.listen, forged(200), 16).await;
    let shed = shed_count(&answers);
    assert!(
        shed > 0,
        "16 senders against a bound of 1: some must be shed"
    );
    assert!(
        shed < answers.len(),
        "the one admitted verification must run"
    );
    assert_eq!(gw.metric(BUSY).await as usize, shed);
    assert!(up.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_turns_the_cold_verification_bounds_off() {
    let up = upstream().await;
    let gw = start(
        "cold-unbounded",
        &config(
            up.addr,
            "max_concurrent_cold_verifications = 0\ncold_verifications_per_second = 0\n",
        ),
    );
    let answers = flood(gw.listen, forged(100), 16).await;
    assert_eq!(shed_count(&answers), 0);
    assert!(answers.iter().all(|(s, _, _)| *s == 401));
}

/// Sends junk `X-Agent-Passport` values from one task over one keep-alive connection
/// until `stop` is set, for at most `limit` and `max` requests: `e30=` (`{}`) and
/// distinct 12-byte values, none of which can be a passport. Returns how many it sent.
async fn junk_flood(
    addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    limit: Duration,
    max: usize,
) -> usize {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let sig = encode_base64(&[0u8; 64]);
    let started = Instant::now();
    let mut sent = 0;
    while sent < max
        && started.elapsed() < limit
        && !stop.load(std::sync::atomic::Ordering::Relaxed)
    {
        let passport = if sent % 2 == 0 {
            "e30=".to_owned()
        } else {
            let mut junk = [0x5au8; 12];
            junk[..8].copy_from_slice(
                &(sent as u64)
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    .to_le_bytes(),
            );
            encode_base64(&junk)
        };
        let req = http::Request::post(format!("http://{addr}{PATH}"))
            .header("x-agent-passport", passport)
            .header("x-agent-sig", &sig)
            .body(http_body_util::Full::new(bytes::Bytes::from_static(BODY)))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        let status = resp.status().as_u16();
        let _ = resp.into_body().collect().await;
        assert!(
            status == 400 || status == 503,
            "a junk passport was answered {status}"
        );
        sent += 1;
    }
    sent
}

/// The first request of each new agent (`firsts`, minted beforehand), one every
/// `every`; returns how many were admitted (200).
async fn first_requests(
    addr: SocketAddr,
    firsts: &[Vec<(String, String)>],
    every: Duration,
) -> usize {
    let mut admitted = 0;
    for headers in firsts {
        let (status, text) = support::post(addr, PATH, headers, BODY).await;
        match status {
            200 => admitted += 1,
            503 => assert!(text.contains("verification_busy"), "{text}"),
            other => panic!("a new agent's first request was answered {other}: {text}"),
        }
        tokio::time::sleep(every).await;
    }
    admitted
}

/// Runs `flood` while `count` new agents (`agent(i)`) send their first requests to
/// `addr`; returns (admitted, flood requests sent, flood requests per second).
async fn admitted_during_a_flood<F>(
    addr: SocketAddr,
    count: usize,
    agent: impl Fn(usize) -> support::Fixture,
    flood: impl FnOnce(std::sync::Arc<std::sync::atomic::AtomicBool>) -> F,
) -> (usize, usize, f64)
where
    F: std::future::Future<Output = usize> + Send + 'static,
{
    let firsts: Vec<_> = (0..count).map(|i| agent(i).headers(PATH, BODY)).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let flooding = tokio::spawn(flood(std::sync::Arc::clone(&stop)));
    // Let the flood empty the burst first.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let admitted = first_requests(addr, &firsts, Duration::from_millis(50)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = tokio::time::timeout(Duration::from_secs(30), flooding)
        .await
        .unwrap()
        .unwrap();
    let rate = sent as f64 / started.elapsed().as_secs_f64();
    (admitted, sent, rate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_that_cannot_be_a_passport_never_costs_a_cold_verification_token() {
    let up = upstream().await;
    for _ in 0..100 {
        up.release_last_chunk.send(()).unwrap();
    }
    let gw = start(
        "cold-junk",
        &config(up.addr, "cold_verifications_per_second = 20\n"),
    );
    let addr = gw.listen;
    let count = 20;
    let (admitted, sent, rate) = admitted_during_a_flood(
        addr,
        count,
        |i| support::live(&format!("urn:aps:agent:new-during-junk-{i}")),
        move |stop| junk_flood(addr, stop, Duration::from_secs(20), 200_000),
    )
    .await;
    let ratio = admitted as f64 / count as f64;
    println!(
        "junk flood: {sent} junk requests at {rate:.0}/s from one sender; \
         {admitted} of {count} new agents' first requests admitted ({:.0} %)",
        ratio * 100.0
    );
    assert!(sent > 100, "the flood sent only {sent}");
    assert!(
        ratio >= 0.9,
        "junk took the cold-verification tokens: {admitted} of {count} admitted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowlisted_principal_is_never_shed_for_traffic_off_the_allowlist() {
    let up = upstream().await;
    for _ in 0..100 {
        up.release_last_chunk.send(()).unwrap();
    }
    let allowed = support::live_of(0x61, "urn:aps:agent:allowed");
    let other = support::live_of(0x63, "urn:aps:agent:off-the-list");
    let extra = format!(
        "cold_verifications_per_second = 20\n\n[principals]\nallow = [\"{}\"]\n",
        allowed.principal_address
    );
    let gw = start("cold-allowlist", &config(up.addr, &extra));
    let addr = gw.listen;
    let count = 20;
    let off_list = other.headers(PATH, BODY);
    let (admitted, sent, rate) = admitted_during_a_flood(
        addr,
        count,
        |i| support::live_of(0x61, &format!("urn:aps:agent:allowed-{i}")),
        move |stop| async move {
            // A validly signed passport of a principal off the allowlist, again and
            // again: a refusal is never cached, so each one is a cold verification today.
            let started = Instant::now();
            let mut sent = 0;
            while sent < 100_000
                && started.elapsed() < Duration::from_secs(20)
                && !stop.load(std::sync::atomic::Ordering::Relaxed)
            {
                let (status, text) = support::post(addr, PATH, &off_list, BODY).await;
                assert!(
                    (status == 403 && text.contains("principal_not_allowed")) || status == 503,
                    "{status} {text}"
                );
                sent += 1;
            }
            sent
        },
    )
    .await;
    let ratio = admitted as f64 / count as f64;
    println!(
        "off-allowlist flood: {sent} requests at {rate:.0}/s from one sender; \
         {admitted} of {count} allowlisted new agents' first requests admitted ({:.0} %)",
        ratio * 100.0
    );
    assert!(sent > 100, "the flood sent only {sent}");
    assert!(
        ratio >= 0.9,
        "principals off the allowlist took the tokens: {admitted} of {count} admitted"
    );
}
