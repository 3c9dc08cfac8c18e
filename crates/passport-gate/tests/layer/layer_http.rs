//! The layer over real TCP: an axum server on loopback, a hyper client.

use axum::body::Body as AxumBody;
use axum::routing::{any, post};
use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use passport_conformance::{generate, layer_for, Step};
use passport_core::crypto::{decode_base64, PrincipalSecret};
use passport_core::time::{FixedClock, Timestamp};
use passport_gate::attribution::{AttributionEvent, AttributionQueue, Sink};
use passport_gate::grants::{
    GrantCache, GrantCacheSettings, LcdGrantSource, StaticGrants, START_INFERENCE_MSG,
};
use passport_gate::metrics::{render, Metrics};
use passport_gate::{Binding, Config, Mode, PassportLayer, VerifiedAgent};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

use crate::support;

type HttpClient<B> = Client<hyper_util::client::legacy::connect::HttpConnector, B>;

fn client<B>() -> HttpClient<B>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Client::builder(TokioExecutor::new()).build_http()
}

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

/// Handler: answers with the verified agent id (or "-") and the body's SHA-256.
async fn echo(agent: Option<VerifiedAgent>, body: Bytes) -> String {
    use sha2::Digest;
    format!(
        "{} {}",
        agent.map_or("-".to_owned(), |a| a.agent_id().to_owned()),
        hex::encode(sha2::Sha256::digest(&body))
    )
}

fn app(layer: PassportLayer) -> Router {
    Router::new()
        .route("/v1/chat/completions", any(echo))
        .route("/v1/completions", any(echo))
        // Conformance vectors also sign unusual paths (characters Go re-escapes).
        .fallback(echo)
        .route(
            "/strict",
            post(|a: VerifiedAgent| async move { a.principal_address().to_owned() }),
        )
        .layer(layer)
}

async fn send(
    addr: SocketAddr,
    method: &str,
    uri: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> (StatusCode, HeaderMap, Bytes) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{uri}"));
    for (n, v) in headers {
        req = req.header(n, v);
    }
    let resp = client::<Full<Bytes>>()
        .request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

/// A request body whose chunks come from a channel, as a slow client sends them.
#[derive(Debug)]
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl ChannelBody {
    fn new(rx: tokio::sync::mpsc::Receiver<Bytes>) -> ChannelBody {
        ChannelBody(rx)
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

/// The TLS settings of an LCD grant source whose node is plain `http://` on loopback: no
/// handshake happens, so no root is trusted.
fn plain_http_node() -> rustls::ClientConfig {
    let _ = rustls::crypto::ring::default_provider().install_default();
    rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

const NOW: &str = "2026-05-21T12:00:00Z";

fn fixture(models: Option<Vec<String>>) -> support::Fixture {
    support::fixture("urn:aps:agent:http", models, None)
}

fn fixed_clock() -> Arc<FixedClock> {
    Arc::new(FixedClock::new(Timestamp::parse(NOW).unwrap()))
}

fn enabled() -> passport_gate::layer::PassportLayerBuilder {
    PassportLayer::builder(Config::for_chain("gonka-mainnet")).clock(fixed_clock())
}

const BODY: &[u8] = br#"{"model":"qwen/qwen3-32b","messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test]
async fn every_conformance_step_behaves_the_same_over_http() {
    let mut codes = std::collections::BTreeSet::new();
    for vector in generate() {
        let clock = FixedClock::new(Timestamp::parse(&vector.config.now).unwrap());
        let layer = layer_for(&vector, clock.clone()).unwrap();
        let addr = serve(app(layer)).await;
        for (
            i,
            Step {
                now,
                request,
                expect,
            },
        ) in vector.steps.iter().enumerate()
        {
            if request.body_behaviour.is_some() {
                // A body that breaks off or stalls is not something this client sends;
                // the runner and faults.rs drive those.
                continue;
            }
            clock.set(Timestamp::parse(now.as_deref().unwrap_or(&vector.config.now)).unwrap());
            let body = decode_base64(&request.body_base64).unwrap();
            let (status, headers, resp) = send(
                addr,
                &request.method,
                &request.uri,
                &request.headers,
                body.clone(),
            )
            .await;
            let ctx = format!("{} step {}", vector.name, i + 1);
            assert_eq!(status.as_u16(), expect.status, "{ctx}: {resp:?}");
            if let Some(code) = &expect.code {
                codes.insert(code.clone());
                assert_eq!(headers["content-type"], "application/problem+json", "{ctx}");
                let problem: serde_json::Value = serde_json::from_slice(&resp).unwrap();
                assert_eq!(problem["code"], code.as_str(), "{ctx}");
                assert_eq!(problem["error"]["code"], code.as_str(), "{ctx}");
                assert_eq!(problem["status"], expect.status, "{ctx}");
                assert!(
                    problem["title"].is_string() && problem["detail"].is_string(),
                    "{ctx}"
                );
                assert!(
                    problem["type"].as_str().unwrap().ends_with(code.as_str()),
                    "{ctx}"
                );
                assert_eq!(
                    headers.contains_key("www-authenticate"),
                    status == 401,
                    "{ctx}"
                );
            } else {
                use sha2::Digest;
                let text = String::from_utf8(resp.to_vec()).unwrap();
                let want_agent = expect
                    .verified
                    .as_ref()
                    .map_or("-", |v| v.agent_id.as_str());
                assert_eq!(
                    text,
                    format!("{want_agent} {}", hex::encode(sha2::Sha256::digest(&body))),
                    "{ctx}"
                );
            }
        }
    }
    assert!(codes.len() >= 21, "{codes:?}");
}

/// A server whose handler reports each body chunk as it arrives.
async fn chunk_reporting_server(
    layer: PassportLayer,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Bytes>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(move |req: Request<AxumBody>| {
                let tx = tx.clone();
                async move {
                    let mut body = req.into_body();
                    let mut all = Vec::new();
                    while let Some(frame) = body.frame().await {
                        if let Ok(data) = frame.unwrap().into_data() {
                            all.extend_from_slice(&data);
                            let _ = tx.send(data);
                        }
                    }
                    all
                }
            }),
        )
        .layer(layer);
    (serve(app).await, rx)
}

async fn streams_chunk_by_chunk(layer: PassportLayer) {
    let (addr, mut seen) = chunk_reporting_server(layer).await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let req = Request::post(format!("http://{addr}/v1/chat/completions"))
        .body(ChannelBody::new(rx))
        .unwrap();
    let response = tokio::spawn(client::<ChannelBody>().request(req));
    let chunks: Vec<Bytes> = (0..5)
        .map(|i| Bytes::from(format!("chunk-{i};").repeat(100)))
        .collect();
    for chunk in &chunks {
        tx.send(chunk.clone()).await.unwrap();
        // The next chunk is sent only once the handler has seen this one: a layer that
        // buffered the body would never let this complete.
        let got = tokio::time::timeout(Duration::from_secs(5), seen.recv())
            .await
            .expect("the handler saw the chunk before the body ended")
            .unwrap();
        assert_eq!(&got, chunk);
    }
    drop(tx);
    let resp = response.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let echoed = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(echoed, chunks.concat());
}

#[tokio::test]
async fn disabled_layer_passes_a_streamed_body_through_chunk_by_chunk() {
    streams_chunk_by_chunk(PassportLayer::new(Config::default()).unwrap()).await;
}

#[tokio::test]
async fn enabled_layer_without_passport_passes_a_streamed_body_through_chunk_by_chunk() {
    let layer = enabled().build().unwrap();
    let metrics = layer.metrics().clone();
    streams_chunk_by_chunk(layer).await;
    assert_eq!(metrics.passthrough_count(), 1);
}

#[tokio::test]
async fn verified_agent_reaches_the_handler_and_is_required_by_the_extractor() {
    let f = fixture(None);
    let addr = serve(app(enabled().build().unwrap())).await;
    let (status, _, body) = send(
        addr,
        "POST",
        "/strict",
        &f.headers("/strict", BODY),
        BODY.to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, f.principal_address.as_bytes());
    let (status, headers, body) = send(addr, "POST", "/strict", &[], BODY.to_vec()).await;
    assert_eq!(status, 401);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert!(String::from_utf8_lossy(&body).contains("passport_required"));
}

#[tokio::test]
async fn required_mode_refuses_requests_without_a_passport() {
    let mut config = Config::for_chain("gonka-mainnet");
    config.mode = Mode::Required;
    let layer = PassportLayer::builder(config)
        .clock(fixed_clock())
        .build()
        .unwrap();
    let metrics = layer.metrics().clone();
    let addr = serve(app(layer)).await;
    let (status, headers, body) =
        send(addr, "POST", "/v1/chat/completions", &[], BODY.to_vec()).await;
    assert_eq!(status, 401);
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("passport_required"));
    assert!(String::from_utf8_lossy(&body).contains("\"code\":\"passport_required\""));
    assert_eq!(
        metrics.rejected_count(passport_gate::Rejection::PassportRequired),
        1
    );
    let f = fixture(None);
    let uri = "/v1/chat/completions";
    let (status, _, _) = send(addr, "POST", uri, &f.headers(uri, BODY), BODY.to_vec()).await;
    assert_eq!(status, 200);
}

/// A layer that accepts bodies up to 1 KiB.
fn small_body_layer() -> PassportLayer {
    let config = Config {
        max_body_size: 1024,
        ..Config::for_chain("gonka-mainnet")
    };
    PassportLayer::builder(config)
        .clock(fixed_clock())
        .build()
        .unwrap()
}

/// A request with valid passport headers (signed for `BODY`) whose body is fed by `rx`.
fn passport_request(
    addr: SocketAddr,
    content_length: Option<&str>,
    rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> Request<ChannelBody> {
    let mut req = Request::post(format!("http://{addr}/v1/chat/completions"));
    if let Some(len) = content_length {
        req = req.header("content-length", len);
    }
    for (n, v) in fixture(None).headers("/v1/chat/completions", BODY) {
        req = req.header(n, v);
    }
    req.body(ChannelBody::new(rx)).unwrap()
}

#[tokio::test]
async fn an_oversized_declared_body_is_refused_before_it_is_sent() {
    let addr = serve(app(small_body_layer())).await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let req = passport_request(addr, Some("104857600"), rx);
    tx.send(Bytes::from_static(b"{\"model\":")).await.unwrap();
    // The rest of the 100 MiB is never sent; the answer must come anyway.
    let resp = tokio::time::timeout(Duration::from_secs(5), client::<ChannelBody>().request(req))
        .await
        .expect("answered without the body")
        .unwrap();
    assert_eq!(resp.status(), 413);
    drop(tx);
}

#[tokio::test]
async fn an_oversized_streamed_body_is_refused_once_the_limit_is_crossed() {
    let addr = serve(app(small_body_layer())).await;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let req = passport_request(addr, None, rx);
    let pending = tokio::spawn(client::<ChannelBody>().request(req));
    for _ in 0..3 {
        tx.send(Bytes::from(vec![b' '; 512])).await.unwrap();
    }
    // 1536 bytes sent, the body still open: the 413 must not wait for its end.
    let resp = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("answered while the body was still open")
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 413);
    drop(tx);
}

/// A Cosmos REST node: what it answers is switched by the test.
#[derive(Clone)]
struct MockNode {
    mode: Arc<AtomicU8>,
    calls: Arc<AtomicUsize>,
    granter: String,
    grantee: String,
}

const NODE_GRANTS: u8 = 0;
const NODE_NOT_FOUND: u8 = 1;
const NODE_GARBAGE: u8 = 2;
const NODE_HANG: u8 = 3;
const NODE_PAGED: u8 = 4;

async fn mock_node(node: MockNode) -> SocketAddr {
    let app = Router::new().route(
        "/cosmos/authz/v1beta1/grants",
        axum::routing::get(move |q: axum::extract::RawQuery| {
            let node = node.clone();
            async move {
                node.calls.fetch_add(1, Ordering::SeqCst);
                let q = q.0.unwrap_or_default();
                let expected = format!(
                    "granter={}&grantee={}&msg_type_url=%2Finference.inference.MsgStartInference",
                    node.granter, node.grantee
                );
                let grant = r#"{"authorization":{"@type":"/cosmos.authz.v1beta1.GenericAuthorization","msg":"/inference.inference.MsgStartInference"},"expiration":"2027-01-01T00:00:00Z"}"#;
                let json = |status: u16, body: String| {
                    http::Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(AxumBody::from(body))
                        .unwrap()
                };
                let not_found = || json(404, r#"{"code":5,"message":"rpc error: code = NotFound desc = authorization not found for /inference.inference.MsgStartInference type: key not found","details":[]}"#.into());
                if !q.starts_with(&expected) {
                    return not_found();
                }
                match node.mode.load(Ordering::SeqCst) {
                    NODE_GRANTS => json(200, format!(r#"{{"grants":[{grant}],"pagination":{{"next_key":null,"total":"1"}}}}"#)),
                    NODE_PAGED if !q.contains("pagination.key=") => {
                        json(200, r#"{"grants":[],"pagination":{"next_key":"AQID","total":"1"}}"#.into())
                    }
                    NODE_PAGED if q.ends_with("pagination.key=AQID") => {
                        json(200, format!(r#"{{"grants":[{grant}],"pagination":{{"next_key":null,"total":"1"}}}}"#))
                    }
                    NODE_NOT_FOUND => not_found(),
                    NODE_GARBAGE => json(200, "<html>502 Bad Gateway</html>".into()),
                    NODE_HANG => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        json(500, String::new())
                    }
                    _ => json(500, r#"{"code":13,"message":"internal","details":[]}"#.into()),
                }
            }
        }),
    );
    serve(app).await
}

#[tokio::test]
async fn binding_through_a_chain_node_grants_refuses_and_fails_closed() {
    let f = fixture(None);
    let requester = PrincipalSecret::from_bytes(&[0x63; 32])
        .unwrap()
        .public_key()
        .address("gonka")
        .unwrap();
    let node = MockNode {
        mode: Arc::new(AtomicU8::new(NODE_GRANTS)),
        calls: Arc::new(AtomicUsize::new(0)),
        granter: f.principal_address.clone(),
        grantee: requester.clone(),
    };
    let node_addr = mock_node(node.clone()).await;
    let settings = GrantCacheSettings {
        query_timeout: Duration::from_millis(300),
        negative_ttl: Duration::from_millis(1),
        failure_ttl: Duration::from_millis(100),
        ..GrantCacheSettings::default()
    };
    let registry = prometheus::Registry::new();
    let metrics = Metrics::register(&registry).unwrap();
    let make_layer = |base: String| {
        let source = Arc::new(LcdGrantSource::with_tls(&base, plain_http_node()).unwrap());
        enabled()
            .binding(Binding::new(
                http::HeaderName::from_static("x-requester-address"),
                GrantCache::new(source, settings),
            ))
            .metrics(metrics.clone())
            .build()
            .unwrap()
    };
    let uri = "/v1/chat/completions";
    let mut headers = f.headers(uri, BODY);
    headers.push(("x-requester-address".into(), requester.clone()));

    // A granted requester is accepted, and the answer is cached.
    let addr = serve(app(make_layer(format!("http://{node_addr}")))).await;
    assert_eq!(
        send(addr, "POST", uri, &headers, BODY.to_vec()).await.0,
        200
    );
    assert_eq!(
        send(addr, "POST", uri, &headers, BODY.to_vec()).await.0,
        200
    );
    assert_eq!(node.calls.load(Ordering::SeqCst), 1);
    assert_eq!(metrics.grant_cache_hits.get(), 1);

    // Fresh layers for each node behaviour, so no cached answer hides it.
    node.mode.store(NODE_PAGED, Ordering::SeqCst);
    let addr = serve(app(make_layer(format!("http://{node_addr}")))).await;
    assert_eq!(
        send(addr, "POST", uri, &headers, BODY.to_vec()).await.0,
        200,
        "grant on the second page"
    );

    node.mode.store(NODE_NOT_FOUND, Ordering::SeqCst);
    let addr = serve(app(make_layer(format!("http://{node_addr}")))).await;
    let (status, _, body) = send(addr, "POST", uri, &headers, BODY.to_vec()).await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("principal_mismatch"));

    for mode in [NODE_GARBAGE, NODE_HANG, 9] {
        node.mode.store(mode, Ordering::SeqCst);
        let addr = serve(app(make_layer(format!("http://{node_addr}")))).await;
        let started = Instant::now();
        let (status, headers_out, body) = send(addr, "POST", uri, &headers, BODY.to_vec()).await;
        assert_eq!(status, 503, "mode {mode}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "mode {mode} took {:?}",
            started.elapsed()
        );
        assert_eq!(headers_out["retry-after"], "5");
        assert!(String::from_utf8_lossy(&body).contains("chain_query_failed"));
        // Remembered as a failure only briefly: once the node recovers and the failure
        // TTL has passed, the same layer accepts.
        node.mode.store(NODE_GRANTS, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            send(addr, "POST", uri, &headers, BODY.to_vec()).await.0,
            200,
            "mode {mode} recovery"
        );
    }

    // A node that is down.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let addr = serve(app(make_layer(format!("http://{closed}")))).await;
    let (status, _, _) = send(addr, "POST", uri, &headers, BODY.to_vec()).await;
    assert_eq!(status, 503);
    assert!(metrics.chain_query_errors.get() >= 4);
}

#[tokio::test]
async fn static_grants_bind_and_a_missing_requester_is_refused() {
    let f = fixture(None);
    let grants = GrantCache::new(
        Arc::new(StaticGrants(vec![])),
        GrantCacheSettings::default(),
    );
    let layer = enabled()
        .binding(Binding::new(
            http::HeaderName::from_static("x-requester-address"),
            grants,
        ))
        .build()
        .unwrap();
    let addr = serve(app(layer)).await;
    let uri = "/v1/chat/completions";
    let mut headers = f.headers(uri, BODY);
    let (status, _, _) = send(addr, "POST", uri, &headers, BODY.to_vec()).await;
    assert_eq!(status, 403);
    headers.push(("x-requester-address".into(), f.principal_address.clone()));
    let (status, _, _) = send(addr, "POST", uri, &headers, BODY.to_vec()).await;
    assert_eq!(status, 200);
    assert_eq!(
        START_INFERENCE_MSG,
        "/inference.inference.MsgStartInference"
    );
}

/// A sink that blocks every write until the test releases it.
struct BlockedSink {
    release: Arc<Mutex<std::sync::mpsc::Receiver<()>>>,
    written: Arc<Mutex<Vec<AttributionEvent>>>,
}

impl Sink for BlockedSink {
    fn name(&self) -> &str {
        "blocked"
    }
    fn write(&mut self, e: &AttributionEvent) -> std::io::Result<()> {
        let _ = self.release.lock().unwrap().recv();
        self.written.lock().unwrap().push(e.clone());
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_blocked_sink_drops_exactly_the_overflow_and_delays_no_response() {
    let f = fixture(None);
    let (release, rx) = std::sync::mpsc::channel();
    let written = Arc::new(Mutex::new(Vec::new()));
    let registry = prometheus::Registry::new();
    let metrics = Metrics::register(&registry).unwrap();
    let queue = AttributionQueue::start(
        2,
        vec![Box::new(BlockedSink {
            release: Arc::new(Mutex::new(rx)),
            written: written.clone(),
        })],
        metrics.clone(),
    )
    .unwrap();
    let layer = enabled()
        .attribution(queue.sender())
        .inference_id_header(http::HeaderName::from_static("x-inference-id"))
        .metrics(metrics.clone())
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(|| async { ([("x-inference-id", "inf-42")], "done") }),
        )
        .layer(layer);
    let addr = serve(app).await;
    let uri = "/v1/chat/completions";
    for i in 0..6 {
        let started = Instant::now();
        let (status, _, _) = send(addr, "POST", uri, &f.headers(uri, BODY), BODY.to_vec()).await;
        assert_eq!(status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "request {i} waited for logging"
        );
        if i == 0 {
            // Let the drain take the first event into the blocked sink.
            let t = Instant::now();
            while queue.depth() > 0 && t.elapsed() < Duration::from_secs(5) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    // One event inside the sink, two queued, three dropped.
    assert_eq!(metrics.attribution_emitted.get(), 3);
    assert_eq!(metrics.attribution_dropped.get(), 3);
    for _ in 0..3 {
        release.send(()).unwrap();
    }
    let report = queue.shutdown(Duration::from_secs(5));
    assert_eq!(
        (report.written, report.dropped, report.lost_at_shutdown),
        (3, 3, 0)
    );
    let events = written.lock().unwrap();
    let e = &events[0];
    assert_eq!(e.v, "aps-attribution-v1");
    assert_eq!(e.inference_id, "inf-42");
    assert_eq!(e.agent_id, "urn:aps:agent:http");
    assert_eq!(e.principal_address, f.principal_address);
    assert_eq!(e.model, "qwen/qwen3-32b");
    assert_eq!(e.status, 200);
    assert_eq!(e.path, uri);
    assert_eq!(e.method, "POST");
    assert_eq!(e.passport_expires_at, "2026-05-21T12:29:00Z");
    assert_eq!(e.verified_at, NOW);
    use sha2::Digest;
    assert_eq!(
        e.request_body_sha256,
        hex::encode(sha2::Sha256::digest(BODY))
    );
    assert_eq!(
        e.envelope_sha256,
        hex::encode(sha2::Sha256::digest(decode_base64(&f.passport).unwrap()))
    );
    assert_eq!(e.event_id.len(), 32);
    let text = render(&registry);
    for name in [
        "passport_gate_requests_total{code=\"\",outcome=\"accepted\"} 6",
        "passport_gate_attribution_events_dropped_total 3",
        "passport_gate_attribution_events_emitted_total 3",
        "passport_gate_envelope_cache_hits_total 5",
        "passport_gate_envelope_cache_misses_total 1",
        "passport_gate_verify_duration_seconds_count 6",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
}

#[tokio::test]
async fn a_body_that_breaks_off_is_refused_and_never_forwarded() {
    struct Broken(bool);
    impl Body for Broken {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            if self.0 {
                Poll::Ready(Some(Err(std::io::Error::other("connection reset"))))
            } else {
                self.0 = true;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"{\"model\":")))))
            }
        }
    }
    use tower::{Layer, Service};
    let f = fixture(None);
    let reached = Arc::new(AtomicUsize::new(0));
    let counter = reached.clone();
    let inner = tower::service_fn(
        move |_: Request<passport_gate::layer::PassportBody<Broken>>| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new()))) }
        },
    );
    let mut svc = enabled().build().unwrap().layer(inner);
    let mut req = Request::post("/v1/chat/completions")
        .body(Broken(false))
        .unwrap();
    for (n, v) in f.headers("/v1/chat/completions", BODY) {
        req.headers_mut()
            .insert(http::HeaderName::try_from(n).unwrap(), v.parse().unwrap());
    }
    let resp = svc.call(req).await.unwrap();
    assert_eq!(resp.status(), 400);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("body_read_failed"));
    assert_eq!(reached.load(Ordering::SeqCst), 0);
}
