//! The proxy's transport against a hostile client or a limited upstream (issue 22):
//! an HTTP/2 upstream's own stream limit, a partial HTTP/2 preface, request trailers,
//! client-chosen `Host` and client-address headers, and clients that stop reading.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support;
use support::serve::{config, send, start, upstream, Gateway};

const BODY: &[u8] =
    br#"{"model":"qwen/qwen3-32b","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
const URI: &str = "/v1/chat/completions";

/// What the test upstream received of one request, trailers included.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: http::HeaderMap,
    body: Bytes,
    trailers: Option<http::HeaderMap>,
}

/// 64 KiB of answer, sent again and again.
static CHUNK: [u8; 65_536] = [b'x'; 65_536];

/// An answer of `left` bytes, produced as it is read.
struct Big {
    left: usize,
}

impl http_body::Body for Big {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(CHUNK.len());
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..n])))))
    }
}

type Answer = http::Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>;

/// A cleartext upstream speaking HTTP/1.1 and HTTP/2 (prior knowledge), announcing
/// `max_streams` concurrent streams. `/slow` answers after 2.5 s; `/big` streams
/// 256 MiB; every other path answers `ok`. Every request is recorded, trailers too.
async fn limited_upstream(max_streams: u32) -> (SocketAddr, Arc<Mutex<Vec<Received>>>) {
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let seen = Arc::clone(&seen);
                    async move {
                        let (parts, body) = req.into_parts();
                        let collected = body.collect().await;
                        let (body, trailers) = match collected {
                            Ok(c) => {
                                let trailers = c.trailers().cloned();
                                (c.to_bytes(), trailers)
                            }
                            Err(_) => (Bytes::new(), None),
                        };
                        let path = parts.uri.path().to_owned();
                        seen.lock().unwrap().push(Received {
                            path: path.clone(),
                            headers: parts.headers,
                            body,
                            trailers,
                        });
                        let answer: Answer = match path.as_str() {
                            "/slow" => {
                                tokio::time::sleep(Duration::from_millis(2_500)).await;
                                http::Response::new(Full::new(Bytes::from_static(b"slow")).boxed())
                            }
                            "/big" | URI => http::Response::builder()
                                .header("content-type", "application/octet-stream")
                                .body(Big { left: 256 << 20 }.boxed())
                                .unwrap(),
                            _ => http::Response::new(Full::new(Bytes::from_static(b"ok")).boxed()),
                        };
                        Ok::<_, Infallible>(answer)
                    }
                });
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder.http2().max_concurrent_streams(max_streams);
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, received)
}

/// A gateway with passports off in front of `up`, plus `extra` `[server]` keys.
fn plain_gateway(name: &str, up: SocketAddr, extra: &str) -> Gateway {
    start(
        name,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nupstream = \"http://{up}\"\nresponse_timeout_ms = 10000\n{extra}"
        ),
    )
}

/// A cleartext HTTP/2 (prior knowledge) client.
fn h2c_client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

fn get(addr: SocketAddr, path: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Item 4: behind `upstream_http2 = true`, the upstream's SETTINGS_MAX_CONCURRENT_STREAMS
/// is a bound like `max_upstream_requests`: the request past it gets a 503
/// `upstream_busy` with `Retry-After` at once (its replay record released), not a wait
/// ending in a 504. Before, hyper queued it on the one upstream connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_upstreams_stream_limit_answers_503_upstream_busy_at_once() {
    let (up, received) = limited_upstream(2).await;
    let gw = plain_gateway(
        "h2-up-streams",
        up,
        "upstream_http2 = true\nmax_upstream_requests = 10\n",
    );
    let client = h2c_client();
    // The upstream connection is open (and its SETTINGS read) after a first answer.
    let first = client.request(get(gw.listen, "/fast")).await.unwrap();
    assert_eq!(first.status(), 200);
    let slow: Vec<_> = (0..2)
        .map(|_| tokio::spawn(client.request(get(gw.listen, "/slow"))))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = Instant::now();
    let extra = client.request(get(gw.listen, "/fast")).await.unwrap();
    let waited = asked.elapsed();
    let status = extra.status();
    let retry = extra.headers().get("retry-after").cloned();
    let body = String::from_utf8(extra.collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"upstream_busy\""), "{body}");
    assert_eq!(retry.as_ref().map(|v| v.to_str().unwrap()), Some("1"));
    eprintln!("503 upstream_busy past the upstream's stream limit after {waited:?}");
    assert!(waited < Duration::from_millis(1_000), "waited {waited:?}");
    for s in slow {
        assert_eq!(s.await.unwrap().unwrap().status(), 200);
    }
    // The refused request never reached the upstream, and the streams came back.
    let paths: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(paths, ["/fast", "/slow", "/slow"]);
    let again = client.request(get(gw.listen, "/fast")).await.unwrap();
    assert_eq!(again.status(), 200);
}

/// CPU time (user + system) of process `pid` so far, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): state is field 3, utime
    // and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Item 5: a client that sends the first byte of the HTTP/2 preface and waits. The
/// listener used to peek every 5 ms until the header-read timeout; 1,000 such
/// connections must now cost the gateway next to no CPU, and a request whose first
/// byte came alone is still served whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_h2_preface_costs_no_cpu_while_the_gateway_waits_for_the_rest() {
    let up = upstream().await;
    let gw = plain_gateway(
        "preface-prefix",
        up.addr,
        "header_read_timeout_ms = 30000\n",
    );
    let pid = gw.child.id();
    let addr = gw.listen;
    let waiting = tokio::task::spawn_blocking(move || {
        (0..1_000)
            .map(|_| {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.write_all(b"P").unwrap();
                s
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_ticks(pid);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_ticks(pid) - before;
    let share = used as f64 / (started.elapsed().as_secs_f64() * 100.0);
    eprintln!(
        "gateway CPU with 1000 one-byte prefaces waiting: {used} ticks, {share:.3} of a core"
    );
    assert!(share < 0.05, "{share:.3} of a core ({used} ticks in 3 s)");

    // One of them goes on as HTTP/1 ("P" + "UT ..."), another as HTTP/2.
    let mut conns = waiting.into_iter();
    let mut h1 = conns.next().unwrap();
    h1.write_all(
        b"UT /v1/models HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    h1.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    let _ = h1.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"method\":\"PUT\""), "{answer}");
    let h2 = conns.next().unwrap();
    h2.set_nonblocking(true).unwrap();
    let mut h2 = tokio::net::TcpStream::from_std(h2).unwrap();
    h2.write_all(b"RI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    // An empty SETTINGS frame; the gateway answers with its own SETTINGS.
    h2.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), h2.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        head[3], 4,
        "the gateway's first frame is SETTINGS: {head:?}"
    );
}

/// A request body: `data`, then `trailers`.
struct WithTrailers {
    data: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl http_body::Body for WithTrailers {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

/// Item 11: trailers sent by an HTTP/2 client carry any field name, including the
/// passport, identity and forwarding headers the gateway removes from the head. They
/// never reach an HTTP/2 upstream (spec section 7.4: request trailers are dropped);
/// the body does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_trailers_never_reach_an_h2_upstream() {
    let (up, received) = limited_upstream(100).await;
    let gw = start(
        "trailers",
        &config(up, "").replacen(
            "[agent_envelope]",
            "upstream_http2 = true\n\n[agent_envelope]",
            1,
        ),
    );
    let mut trailers = http::HeaderMap::new();
    for (n, v) in [
        ("x-agent-passport", "e30="),
        ("x-agent-sig", "forged"),
        ("x-aps-agent-id", "urn:aps:agent:victim"),
        ("x-aps-principal-address", "gonka1victim"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-checksum", "abc"),
    ] {
        trailers.insert(n, v.parse().unwrap());
    }
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<WithTrailers>();
    let req = http::Request::post(format!("http://{}/v1/files", gw.listen))
        .header("te", "trailers")
        .body(WithTrailers {
            data: Some(Bytes::from_static(b"file bytes")),
            trailers: Some(trailers),
        })
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].body, Bytes::from_static(b"file bytes"));
    assert!(
        got[0].trailers.as_ref().is_none_or(|t| t.is_empty()),
        "trailers reached the upstream: {:?}",
        got[0].trailers
    );
    assert!(!got[0].headers.contains_key("x-aps-agent-id"));
}

/// Sends raw HTTP/1.1 `head` (with `Connection: close`) and returns the answer.
fn raw_get(addr: SocketAddr, head: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Item 16: a client `Host` that is not a plain `host[:port]` (`,` or `;` that would
/// start another `Forwarded` element or parameter, spaces, quotes) is not repeated in
/// `X-Forwarded-Host` or `Forwarded`; a plain one is. `X-Real-IP` and `True-Client-IP`
/// are set to the peer's address whatever the client sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_host_and_client_address_headers_never_reach_the_upstream_as_sent() {
    let up = upstream().await;
    let gw = plain_gateway("forwarded-host", up.addr, "");
    for host in [
        "evil.example, for=6.6.6.6",
        "evil.example;proto=https",
        "evil.example;host=other",
        "evil example",
        "evil.example:80 x",
        "user@evil.example",
        "evil%2eexample",
        "[::1",
    ] {
        let answer = raw_get(
            gw.listen,
            &format!("GET /v1/models HTTP/1.1\r\nHost: {host}\r\nX-Real-IP: 6.6.6.6\r\nTrue-Client-IP: 6.6.6.6\r\nConnection: close\r\n\r\n"),
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
        let seen = up.seen().pop().unwrap();
        assert!(
            !seen.headers.contains_key("x-forwarded-host"),
            "{host}: {:?}",
            seen.headers
        );
        assert_eq!(
            seen.headers["forwarded"], "for=127.0.0.1;proto=http",
            "{host}"
        );
        assert_eq!(seen.headers["x-real-ip"], "127.0.0.1", "{host}");
        assert_eq!(seen.headers["true-client-ip"], "127.0.0.1", "{host}");
        assert_eq!(seen.headers.get_all("x-real-ip").iter().count(), 1);
    }
    for host in [
        "gw.example:8443",
        "gw-1.example",
        "127.0.0.1:8080",
        "[::1]:8080",
    ] {
        let answer = raw_get(
            gw.listen,
            &format!("GET /v1/models HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
        let seen = up.seen().pop().unwrap();
        assert_eq!(seen.headers["x-forwarded-host"], host);
        assert_eq!(
            seen.headers["forwarded"],
            format!("for=127.0.0.1;proto=http;host=\"{host}\"").as_str()
        );
    }
}

/// A passport gateway in front of `up` with one upstream request at a time, a 1 s
/// client stall timeout and events written to a file; returns it and the file.
fn stall_gateway(name: &str, up: SocketAddr) -> (Gateway, std::path::PathBuf) {
    let dir = support::serve::workdir(&format!("{name}-events"));
    let events = dir.join("events.jsonl");
    let toml = config(up, &format!("\n[attribution]\nfile = {events:?}\n")).replacen(
        "[agent_envelope]",
        "max_upstream_requests = 1\nclient_stall_timeout_ms = 1000\n\n[agent_envelope]",
        1,
    );
    (start(name, &toml), events)
}

/// Whether a request gets through the gateway (its one upstream slot is free) within
/// `wait`; prints how long it took.
async fn slot_frees_within(gw: &Gateway, wait: Duration) -> bool {
    let started = Instant::now();
    let deadline = started + wait;
    while Instant::now() < deadline {
        let resp = send(gw.listen, "GET", "/v1/models", &[], b"").await;
        if resp.status() == 200 {
            eprintln!(
                "upstream slot free {:?} after the client stopped reading",
                started.elapsed()
            );
            return true;
        }
        assert_eq!(resp.status(), 503);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// The events in `path` (JSON lines), waiting up to 10 s for `n`.
fn events(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Item 18, HTTP/1.1: a client with a small receive buffer asks for a large streamed
/// answer and stops reading after the head. Its answer is cut after
/// `client_stall_timeout_ms` without progress, its upstream slot freed (another request
/// gets through with `max_upstream_requests = 1`), and its event is `client_stalled`.
/// A slow upstream is not a stalled client: a reading client whose answer pauses for
/// longer than the timeout gets it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_client_that_stops_reading_is_cut_and_frees_its_upstream_slot() {
    // The slow upstream first: its last SSE chunk comes only when released.
    let sse = upstream().await;
    let (gw, _) = stall_gateway("stall-slow-upstream", sse.addr);
    let f = support::live("urn:aps:agent:stall");
    let headers = f.headers(URI, BODY);
    let listen = gw.listen;
    let posted = tokio::spawn(async move { support::post(listen, URI, &headers, BODY).await });
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    sse.release_last_chunk.send(()).unwrap();
    let (status, body) = posted.await.unwrap();
    assert_eq!(status, 200);
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    drop(gw);

    let (up, _) = limited_upstream(100).await;
    let (gw, events_file) = stall_gateway("stall-h1", up);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4_096).unwrap();
    let mut stalled = socket.connect(gw.listen).await.unwrap();
    let mut head = format!(
        "POST {URI} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        BODY.len()
    );
    for (n, v) in f.headers(URI, BODY) {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(BODY).await.unwrap();
    let mut first = [0u8; 12];
    stalled.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    // From here on the client reads nothing; the slot is taken.
    assert_eq!(
        send(gw.listen, "GET", "/v1/models", &[], b"")
            .await
            .status(),
        503
    );
    assert!(
        slot_frees_within(&gw, Duration::from_secs(15)).await,
        "the stalled client kept the only upstream slot"
    );
    let events = events(&events_file, 1);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["client_stalled"], true, "{:?}", events[0]);
    assert_eq!(events[0]["status"], 200);
    assert!(gw.metric("passport_gate_client_stalls_total").await >= 1.0);
    drop(stalled);
}

/// Item 18, HTTP/2: a client that gives its stream no window (initial window 0, never
/// raised) gets the answer's head and nothing more. The stream is reset after the
/// stall timeout and its upstream slot freed; the event is `client_stalled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_stream_with_no_window_is_reset_and_frees_its_upstream_slot() {
    let (up, _) = limited_upstream(100).await;
    let (gw, events_file) = stall_gateway("stall-h2", up);
    let f = support::live("urn:aps:agent:stall-h2");
    // One connection, so that a later request on it proves the connection survived.
    let tcp = tokio::net::TcpStream::connect(gw.listen).await.unwrap();
    let (mut client, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(0)
        .handshake::<_, Full<Bytes>>(TokioIo::new(tcp))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let mut req = http::Request::post(format!("http://{}{URI}", gw.listen));
    for (n, v) in f.headers(URI, BODY) {
        req = req.header(n, v);
    }
    let resp = client
        .send_request(req.body(Full::new(Bytes::from_static(BODY))).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(
        send(gw.listen, "GET", "/v1/models", &[], b"")
            .await
            .status(),
        503
    );
    assert!(
        slot_frees_within(&gw, Duration::from_secs(15)).await,
        "the zero-window stream kept the only upstream slot"
    );
    let events = events(&events_file, 1);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["client_stalled"], true, "{:?}", events[0]);
    assert!(gw.metric("passport_gate_client_stalls_total").await >= 1.0);
    // Only the stream was reset: the connection serves another (bodiless) answer.
    let head = http::Request::head(format!("http://{}/fast", gw.listen))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let again = tokio::time::timeout(Duration::from_secs(5), client.send_request(head))
        .await
        .expect("the connection still answers")
        .unwrap();
    assert_eq!(again.status(), 200);
    assert!(!conn.is_finished());
    drop(resp);
}
