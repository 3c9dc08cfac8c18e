//! `server.max_auth_failures_per_connection`: after that many consecutive
//! authentication failures on one connection, the answer to the last one closes it
//! (HTTP/1.1 `Connection: close`, HTTP/2 `GOAWAY`); an accepted request resets the
//! count; 0 never closes. Over real HTTP/1.1 and h2c, from outside.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

use crate::support;
use support::serve::{config, start, upstream, Gateway};

const PATH: &str = "/v1/chat/completions";
const BODY: &[u8] = br#"{"model":"m","messages":[]}"#;

fn gateway(name: &str, up: SocketAddr, max: u32) -> Gateway {
    let toml = config(up, "").replacen(
        "[server]\n",
        &format!("[server]\nmax_auth_failures_per_connection = {max}\n"),
        1,
    );
    start(name, &toml)
}

/// A request with a passport that cannot be decoded (400 `header_malformed`).
fn forged(uri: &str) -> http::Request<Full<Bytes>> {
    http::Request::post(uri)
        .header("host", "gw.local")
        .header("x-agent-passport", "!!not-base64!!")
        .header("x-agent-sig", "AAAA")
        .body(Full::new(Bytes::from_static(BODY)))
        .unwrap()
}

fn accepted(uri: &str, f: &support::Fixture) -> http::Request<Full<Bytes>> {
    http::Request::post(uri)
        .header("host", "gw.local")
        .header("content-type", "application/json")
        .header("x-agent-passport", f.passport.clone())
        .header("x-agent-sig", f.sign(PATH, BODY))
        .body(Full::new(Bytes::from_static(BODY)))
        .unwrap()
}

/// Sends one request and reads its whole answer: the status, and whether it says
/// `Connection: close`.
async fn exchange<S>(tx: &mut S, req: http::Request<Full<Bytes>>) -> (u16, bool)
where
    S: Sender,
{
    let resp = tx.send(req).await;
    let close = resp
        .headers()
        .get("connection")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let status = resp.status().as_u16();
    resp.into_body().collect().await.unwrap();
    (status, close)
}

type Connection = tokio::task::JoinHandle<Result<(), hyper::Error>>;

/// An HTTP/1.1 client on `tcp`, its connection driven in a task.
async fn h1(
    tcp: TcpStream,
) -> (
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    Connection,
) {
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    (tx, tokio::spawn(conn))
}

/// An h2c client on `tcp`, its connection driven in a task.
async fn h2(
    tcp: TcpStream,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    Connection,
) {
    let (tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    (tx, tokio::spawn(conn))
}

/// Waits (at most 5 s) for the gateway to end `conn` cleanly.
async fn closed_by_gateway(conn: Connection, expect: &str) {
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect(expect)
        .unwrap()
        .unwrap();
}

/// Either HTTP version's request sender.
trait Sender {
    async fn send(&mut self, req: http::Request<Full<Bytes>>) -> http::Response<Incoming>;
}

impl Sender for hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    async fn send(&mut self, req: http::Request<Full<Bytes>>) -> http::Response<Incoming> {
        self.ready().await.unwrap();
        self.send_request(req).await.unwrap()
    }
}

impl Sender for hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    async fn send(&mut self, req: http::Request<Full<Bytes>>) -> http::Response<Incoming> {
        self.ready().await.unwrap();
        self.send_request(req).await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_the_fourth_consecutive_failure_closes_the_connection_and_a_success_resets() {
    let up = upstream().await;
    let gw = gateway("authfail-h1", up.addr, 4);
    let f = support::live("urn:aps:agent:authfail");
    let tcp = TcpStream::connect(gw.listen).await.unwrap();
    let (mut tx, conn) = h1(tcp).await;
    for _ in 0..3 {
        assert_eq!(exchange(&mut tx, forged(PATH)).await, (400, false));
    }
    assert_eq!(
        exchange(&mut tx, accepted(PATH, &f)).await,
        (200, false),
        "an accepted request on the same connection"
    );
    for _ in 0..3 {
        assert_eq!(
            exchange(&mut tx, forged(PATH)).await,
            (400, false),
            "the count restarted after the accepted request"
        );
    }
    assert_eq!(
        exchange(&mut tx, forged(PATH)).await,
        (400, true),
        "the fourth consecutive failure: Connection: close"
    );
    closed_by_gateway(conn, "the gateway closed the connection").await;
    assert_eq!(
        gw.metric("passport_gate_auth_failure_closes_total").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_the_fourth_consecutive_failure_sends_goaway() {
    let up = upstream().await;
    let gw = gateway("authfail-h2", up.addr, 4);
    let uri = format!("http://{}{PATH}", gw.listen);
    let tcp = TcpStream::connect(gw.listen).await.unwrap();
    let (mut tx, conn) = h2(tcp).await;
    for _ in 0..4 {
        assert_eq!(exchange(&mut tx, forged(&uri)).await, (400, false));
    }
    // GOAWAY, then the gateway ends the connection once no stream is open.
    closed_by_gateway(conn, "the gateway closed the HTTP/2 connection").await;
    assert!(
        tx.send_request(forged(&uri)).await.is_err(),
        "no new stream on a closed connection"
    );
    assert_eq!(
        gw.metric("passport_gate_auth_failure_closes_total").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_never_closes_a_connection_for_failures() {
    let up = upstream().await;
    let gw = gateway("authfail-off", up.addr, 0);
    let uri = format!("http://{}{PATH}", gw.listen);
    let tcp = TcpStream::connect(gw.listen).await.unwrap();
    let (mut h1, _) = h1(tcp).await;
    let tcp = TcpStream::connect(gw.listen).await.unwrap();
    let (mut h2, _) = h2(tcp).await;
    for _ in 0..40 {
        assert_eq!(exchange(&mut h1, forged(PATH)).await, (400, false));
        assert_eq!(exchange(&mut h2, forged(&uri)).await, (400, false));
    }
    assert_eq!(
        gw.metric("passport_gate_auth_failure_closes_total").await,
        0.0
    );
}

/// Connects from `source` (any loopback address) to `to`.
async fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Whether the gateway closes `tcp` without answering a request written on it.
async fn closed_unanswered(mut tcp: TcpStream) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nhost: gw.local\r\ncontent-length: {}\r\n\r\n",
        BODY.len()
    );
    // The write may fail on a connection already closed: that is a refusal too.
    let _ = tcp.write_all(head.as_bytes()).await;
    let _ = tcp.write_all(BODY).await;
    let mut answer = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await {
        Ok(Ok(_)) | Ok(Err(_)) => answer.is_empty(),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_under_the_penalty_is_closed_unread_until_the_penalty_ends() {
    let up = upstream().await;
    let toml = config(up.addr, "").replacen(
        "[server]\n",
        "[server]\nmax_auth_failures_per_connection = 2\nauth_failure_penalty_seconds = 3\n",
        1,
    );
    let gw = start("authfail-penalty", &toml);
    let f = support::live("urn:aps:agent:penalty");

    // Before any failure, 127.0.0.1 is served.
    let tcp = connect_from("127.0.0.1", gw.listen).await;
    let (mut tx, conn) = h1(tcp).await;
    assert_eq!(exchange(&mut tx, forged(PATH)).await, (400, false));
    assert_eq!(exchange(&mut tx, forged(PATH)).await, (400, true));
    closed_by_gateway(conn, "the gateway closed the connection").await;
    let closed_at = std::time::Instant::now();

    // Now a new connection from the same address is closed unread, even one that
    // would be accepted; another address is served.
    assert!(
        closed_unanswered(connect_from("127.0.0.1", gw.listen).await).await,
        "a new connection from the penalised address is closed without an answer"
    );
    let tcp = connect_from("127.0.0.2", gw.listen).await;
    let (mut other, _) = h1(tcp).await;
    assert_eq!(exchange(&mut other, accepted(PATH, &f)).await, (200, false));
    assert!(
        gw.metric("passport_gate_auth_failure_penalty_refusals_total")
            .await
            >= 1.0
    );

    // After the penalty, the address is served again.
    tokio::time::sleep(Duration::from_millis(3_100).saturating_sub(closed_at.elapsed())).await;
    let tcp = connect_from("127.0.0.1", gw.listen).await;
    let (mut again, _) = h1(tcp).await;
    assert_eq!(exchange(&mut again, accepted(PATH, &f)).await, (200, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_penalty_a_closed_clients_next_connection_is_served() {
    let up = upstream().await;
    let gw = gateway("authfail-nopenalty", up.addr, 2);
    let f = support::live("urn:aps:agent:nopenalty");
    let tcp = TcpStream::connect(gw.listen).await.unwrap();
    let (mut tx, conn) = h1(tcp).await;
    assert_eq!(exchange(&mut tx, forged(PATH)).await, (400, false));
    assert_eq!(exchange(&mut tx, forged(PATH)).await, (400, true));
    closed_by_gateway(conn, "the gateway closed the connection").await;
    let tcp = TcpStream::connect(gw.listen).await.unwrap();
    let (mut again, _) = h1(tcp).await;
    assert_eq!(exchange(&mut again, accepted(PATH, &f)).await, (200, false));
    assert_eq!(
        gw.metric("passport_gate_auth_failure_penalty_refusals_total")
            .await,
        0.0
    );
}

/// HTTP/2 streams sent at once all reach the gateway before the close is decided: once
/// the connection reached its limit, the rest are answered 429 `auth_failures_exceeded`
/// without a passport check, not each given a check of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_streams_sent_at_once_get_no_passport_check_after_the_limit() {
    let up = upstream().await;
    let gw = gateway("authfail-h2-burst", up.addr, 4);
    let uri = format!("http://{}{PATH}", gw.listen);
    let tcp = TcpStream::connect(gw.listen).await.unwrap();
    let (tx, _) = h2(tcp).await;
    let sends: Vec<_> = (0..100)
        .map(|_| {
            let mut tx = tx.clone();
            let req = forged(&uri);
            tokio::spawn(async move {
                let resp = tx.send_request(req).await.ok()?;
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await.ok()?.to_bytes();
                Some((status, body))
            })
        })
        .collect();
    let (mut checked, mut cut, mut other) = (0, 0, 0);
    for send in sends {
        match send.await.unwrap() {
            Some((400, _)) => checked += 1,
            Some((429, body)) => {
                assert!(
                    String::from_utf8_lossy(&body).contains("auth_failures_exceeded"),
                    "{body:?}"
                );
                cut += 1;
            }
            // A stream the client had not sent yet when GOAWAY arrived.
            None => other += 1,
            Some((status, body)) => panic!("unexpected {status}: {body:?}"),
        }
    }
    assert!(
        checked < 20,
        "{checked} streams got a passport check (400), {cut} were cut (429), {other} not sent"
    );
    assert!(
        cut + other >= 80,
        "{checked} checked, {cut} cut, {other} not sent"
    );
    assert_eq!(
        gw.metric("passport_gate_auth_failure_closes_total").await,
        1.0
    );
}
