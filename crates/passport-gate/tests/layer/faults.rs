//! Fault tests: clients that send slowly, stop halfway, or flood the gateway with
//! invalid passports. The gateway keeps serving everyone else, memory stays bounded,
//! and nothing is accepted that should not be. (A hanging chain node, a Redis that
//! disappears and a blocked sink are in `layer_http.rs` and in
//! passport-gate-cli's tests/external/redis.rs.)

use axum::routing::post;
use axum::Router;
use passport_core::crypto::{encode_base64, PrincipalSecret};
use passport_core::time::{FixedClock, Timestamp};
use passport_gate::{Config, PassportLayer, Rejection};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support;

const URI: &str = "/v1/chat/completions";
const BODY: &[u8] = br#"{"model":"qwen/qwen3-32b","messages":[{"role":"user","content":"hi"}]}"#;

async fn serve(layer: PassportLayer, reached: Arc<AtomicUsize>) -> SocketAddr {
    let app = Router::new()
        .route(
            URI,
            post(move || {
                reached.fetch_add(1, Ordering::SeqCst);
                async { "ok" }
            }),
        )
        .layer(layer);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn layer(config: Config) -> PassportLayer {
    PassportLayer::builder(config)
        .clock(Arc::new(FixedClock::new(
            Timestamp::parse("2026-05-21T12:00:00Z").unwrap(),
        )))
        .build()
        .unwrap()
}

async fn send(addr: SocketAddr, headers: &[(String, String)], body: &[u8]) -> u16 {
    support::post(addr, URI, headers, body).await.0
}

/// Writes a request head with passport headers and part of its body, then stalls.
async fn stalled_request(addr: SocketAddr, f: &support::Fixture) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let sig = f.sign(URI, BODY);
    let head = format!(
        "POST {URI} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-agent-passport: {}\r\nx-agent-sig: {sig}\r\n\r\n",
        BODY.len(),
        f.passport
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&BODY[..10]).await.unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_mid_body_gets_408_while_others_are_served() {
    let config = Config {
        body_read_timeout_ms: 400,
        ..Config::for_chain("gonka-mainnet")
    };
    let reached = Arc::new(AtomicUsize::new(0));
    let addr = serve(layer(config), reached.clone()).await;
    let f = support::fixture("urn:aps:agent:slow", None, None);
    let started = Instant::now();
    let mut stalled = stalled_request(addr, &f).await;
    // While it stalls, other clients are answered at once.
    for _ in 0..5 {
        let t = Instant::now();
        let body = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"{:?}"}}]}}"#,
            t
        );
        assert_eq!(
            send(addr, &f.headers(URI, body.as_bytes()), body.as_bytes()).await,
            200
        );
        assert!(t.elapsed() < Duration::from_millis(300));
    }
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_read_timeout"), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(
        reached.load(Ordering::SeqCst),
        5,
        "the stalled request never reached the handler"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_halfway_is_never_forwarded() {
    let reached = Arc::new(AtomicUsize::new(0));
    let layer = layer(Config::for_chain("gonka-mainnet"));
    let metrics = layer.metrics().clone();
    let addr = serve(layer, reached.clone()).await;
    let f = support::fixture("urn:aps:agent:halfway", None, None);
    for _ in 0..20 {
        let s = stalled_request(addr, &f).await;
        drop(s);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while metrics.rejected_count(Rejection::BodyReadFailed) < 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metrics.rejected_count(Rejection::BodyReadFailed), 20);
    assert_eq!(reached.load(Ordering::SeqCst), 0);
    assert_eq!(send(addr, &f.headers(URI, BODY), BODY).await, 200);
    assert_eq!(reached.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_invalid_passports_is_refused_and_never_cached() {
    let reached = Arc::new(AtomicUsize::new(0));
    let layer = layer(Config::for_chain("gonka-mainnet"));
    let verifier_cache = layer.clone();
    let addr = serve(layer, reached.clone()).await;
    let f = support::fixture("urn:aps:agent:flood", None, None);

    // Distinct forged passports: the fixture's envelope, each with a principal signature
    // by a different impostor key, so each one costs a full secp256k1 verification.
    let raw = passport_core::crypto::decode_base64(&f.passport).unwrap();
    let mut value: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let forged: Vec<Vec<(String, String)>> = (0..200u32)
        .map(|i| {
            let mut seed = [0x5a; 32];
            seed[..4].copy_from_slice(&i.to_be_bytes());
            let impostor = PrincipalSecret::from_bytes(&seed).unwrap();
            value["principal_sig"] = encode_base64(&impostor.sign_adr036("x", &seed)).into();
            let passport = encode_base64(value.to_string().as_bytes());
            let signer = passport_core::mint::AgentSigner::new(
                passport_core::crypto::AgentSecret::from_bytes(&[0x62; 32]),
                &passport,
                "gonka-mainnet",
            )
            .unwrap();
            vec![
                ("x-agent-passport".into(), passport),
                (
                    "x-agent-sig".into(),
                    signer.sign("POST", URI, BODY).unwrap(),
                ),
            ]
        })
        .collect();
    let flood = {
        let forged = forged.clone();
        tokio::spawn(async move {
            let mut refused = 0;
            for headers in &forged {
                if send(addr, headers, BODY).await == 401 {
                    refused += 1;
                }
            }
            refused
        })
    };
    // Genuine traffic during the flood is served.
    let mut ok = 0;
    for i in 0..20 {
        let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{i}"}}]}}"#);
        if send(addr, &f.headers(URI, body.as_bytes()), body.as_bytes()).await == 200 {
            ok += 1;
        }
    }
    assert_eq!(flood.await.unwrap(), forged.len());
    assert_eq!(ok, 20);
    assert_eq!(reached.load(Ordering::SeqCst), 20);
    // Only the one genuine passport is cached: forged envelopes never are.
    assert_eq!(verifier_cache.verifier().unwrap().cache().len(), 1);
    // And every forged passport is still refused a second time.
    for headers in forged.iter().take(10) {
        assert_eq!(send(addr, headers, BODY).await, 401);
    }
}
