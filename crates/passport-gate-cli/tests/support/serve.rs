//! The real `passport-gate serve` binary, a recording upstream, raw-socket requests and
//! process measurements, for tests that attack the gateway from outside.
#![allow(dead_code)]

use axum::body::Body as AxumBody;
use axum::extract::Request as AxumRequest;
use axum::routing::{any, post};
use axum::Router;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

pub const CHAIN: &str = "gonka-mainnet";

/// What the upstream saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// The test upstream: `/v1/chat/completions` streams two SSE chunks, the second only
/// once the test says so; every other route echoes what it received as JSON. Every
/// request is recorded.
pub struct Upstream {
    pub addr: SocketAddr,
    pub calls: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub release_last_chunk: tokio::sync::mpsc::UnboundedSender<()>,
}

impl Upstream {
    /// Every request the upstream received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

pub async fn upstream() -> Upstream {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let (release_tx, release_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let release_rx = Arc::new(tokio::sync::Mutex::new(release_rx));
    let (c1, c2) = (calls.clone(), calls.clone());
    let (s1, s2) = (seen.clone(), seen.clone());
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(move |req: AxumRequest| {
                let release = release_rx.clone();
                c1.fetch_add(1, Ordering::SeqCst);
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                    s1.lock().unwrap().push(Seen {
                        method: parts.method.to_string(),
                        uri: parts.uri.to_string(),
                        headers: parts.headers.clone(),
                        body: body.clone(),
                    });
                    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
                    tokio::spawn(async move {
                        let first = format!("data: {{\"received_bytes\":{}}}\n\n", body.len());
                        let _ = tx.send(Ok(Bytes::from(first))).await;
                        let _ = tokio::time::timeout(Duration::from_secs(10), release.lock().await.recv()).await;
                        let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
                    });
                    http::Response::builder()
                        .header("content-type", "text/event-stream")
                        .header("x-inference-id", "up-1")
                        .body(AxumBody::from_stream(ReceiverStream(rx)))
                        .unwrap()
                }
            }),
        )
        .fallback(any(move |req: AxumRequest| {
            c2.fetch_add(1, Ordering::SeqCst);
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                s2.lock().unwrap().push(Seen {
                    method: parts.method.to_string(),
                    uri: parts.uri.to_string(),
                    headers: parts.headers.clone(),
                    body: body.clone(),
                });
                let headers: serde_json::Map<String, serde_json::Value> = parts
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                    .collect();
                serde_json::json!({"uri": parts.uri.to_string(), "method": parts.method.to_string(), "headers": headers, "body": String::from_utf8_lossy(&body)})
                    .to_string()
            }
        }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Upstream {
        addr,
        calls,
        seen,
        release_last_chunk: release_tx,
    }
}

pub struct ReceiverStream(pub tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl futures_core::Stream for ReceiverStream {
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// A running `passport-gate serve` and the lines it printed on stderr.
pub struct Gateway {
    pub child: Child,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub lines: mpsc::Receiver<String>,
    pub dir: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// The process's resident set size, in KiB (Linux `/proc`).
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }

    /// The value of one Prometheus sample (`name` with its labels, as printed), or 0.
    pub async fn metric(&self, sample: &str) -> f64 {
        let resp = send(self.admin, "GET", "/metrics", &[], b"").await;
        let text = text(resp).await;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                (name == sample).then(|| value.parse().ok())?
            })
            .unwrap_or(0.0)
    }

    /// Everything the gateway printed on stderr so far.
    pub fn drain_lines(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// Everything the gateway printed on stderr until it closed, for a gateway that has
    /// exited: the thread reading stderr may still be passing on the last lines when
    /// `wait()` returns.
    pub fn lines_until_closed(&self) -> Vec<String> {
        lines_until_closed(&self.lines)
    }
}

/// Every line `lines` yields until its sender is gone (the process's stderr reached its
/// end), waiting 10 s at most.
pub fn lines_until_closed(lines: &mpsc::Receiver<String>) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        out.push(line);
    }
    out
}

/// The resident set size of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

pub fn workdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pg-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Starts `serve` with `toml` written to a fresh directory; does not wait for it.
pub fn spawn(name: &str, toml: &str, extra: &[&str]) -> (Child, mpsc::Receiver<String>, PathBuf) {
    let dir = workdir(name);
    let config = dir.join("gateway.toml");
    std::fs::write(&config, toml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_passport-gate"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx, dir)
}

/// Starts `serve` and waits for its listening line.
pub fn start(name: &str, toml: &str) -> Gateway {
    let (child, lines, dir) = spawn(name, toml, &[]);
    listening(child, lines, dir)
}

/// Waits for the gateway's listening line and reads both addresses from it.
fn listening(child: Child, lines: mpsc::Receiver<String>, dir: PathBuf) -> Gateway {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the gateway printed its listening line");
        if let Some(rest) = line
            .strip_prefix("passport-gate listening on http://")
            .or_else(|| line.strip_prefix("passport-gate listening on https://"))
        {
            let listen = rest.split_whitespace().next().unwrap().parse().unwrap();
            let admin = rest
                .split("(admin http://")
                .nth(1)
                .unwrap()
                .split(')')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            return Gateway {
                child,
                listen,
                admin,
                lines,
                dir,
            };
        }
    }
}

/// A configuration with passports enabled in front of `upstream`, plus `extra` TOML
/// (which may continue the `[agent_envelope]` table or open new ones).
pub fn config(upstream: SocketAddr, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nupstream = \"http://{upstream}\"\nresponse_timeout_ms = 3000\nshutdown_grace_seconds = 10\ninference_id_header = \"x-inference-id\"\n\n[agent_envelope]\nenabled = true\nchain_id = \"{CHAIN}\"\nclock_skew_seconds = 300\nmax_ttl_seconds = 604800\n{extra}"
    )
}

/// A `[replay]` table with the disk store in a fresh directory named after `name`, plus
/// `extra` keys of that table; append it after the `[agent_envelope]` keys.
pub fn replay_disk(name: &str, extra: &str) -> String {
    let dir = replay_dir(name);
    format!(
        "[replay]\ndata_dir = {:?}\n{extra}",
        dir.display().to_string()
    )
}

/// A fresh, empty directory for the disk replay store of test `name`.
pub fn replay_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pg-replay-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Sends one request through hyper's client.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> http::Response<hyper::body::Incoming> {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>()
        .request(req.body(Full::new(Bytes::copy_from_slice(body))).unwrap())
        .await
        .unwrap()
}

pub async fn text(resp: http::Response<hyper::body::Incoming>) -> String {
    String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned()
}

/// Writes `bytes` on a fresh connection and reads until the peer closes or `wait`
/// passes; returns what was read (for framing attacks the client must control).
pub fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in `raw` output, or 0.
pub fn status_of(raw: &str) -> u16 {
    raw.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// How many file descriptors process `pid` has open (Linux `/proc`).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Connects to `addr` and writes `bytes` without finishing the request: a half-sent
/// head the client keeps open. `None` when the connection could not be made.
pub fn half_sent(addr: SocketAddr, bytes: &[u8]) -> Option<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    let _ = s.write_all(bytes);
    Some(s)
}

/// Whether the peer closed `stream` (EOF or reset) within `wait`; any bytes it sent
/// first are skipped.
pub fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = stream.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Starts `serve --config config` in the fresh directory `workdir(name)` (relative paths
/// in the file land there), with `envs` set and stdout going to `stdout`; waits for the
/// listening line. A piped stdout is never read (a sink that does not keep up).
pub fn start_file(
    name: &str,
    config: &std::path::Path,
    envs: &[(&str, &str)],
    stdout: Stdio,
) -> Gateway {
    let (child, lines, dir) = spawn_file(name, config, envs, stdout);
    listening(child, lines, dir)
}

/// Starts `serve --config config` as [`start_file`] does; does not wait for it.
pub fn spawn_file(
    name: &str,
    config: &std::path::Path,
    envs: &[(&str, &str)],
    stdout: Stdio,
) -> (Child, mpsc::Receiver<String>, PathBuf) {
    let dir = workdir(name);
    let mut child = Command::new(env!("CARGO_BIN_EXE_passport-gate"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .envs(envs.iter().copied())
        .current_dir(&dir)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, lines, dir)
}

/// Runs `serve --config` on `toml` expecting it to refuse to start; returns its exit
/// code and everything it printed on stderr.
pub fn refused_config(name: &str, toml: &str) -> (Option<i32>, String) {
    let dir = workdir(name);
    let config = dir.join("gateway.toml");
    std::fs::write(&config, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_passport-gate"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `passport-gate echo`; killed when dropped.
pub struct Echo {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `passport-gate echo --listen 127.0.0.1:0` and reads the address it prints.
pub fn echo() -> Echo {
    // Held by `Echo` at once, so a failure below still kills and reaps it.
    let mut echo = Echo {
        child: Command::new(env!("CARGO_BIN_EXE_passport-gate"))
            .args(["echo", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let mut out = BufReader::new(echo.child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    echo.addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("echo printed {line:?}"))
        .parse()
        .unwrap();
    echo
}

/// An upstream that answers each request with the next `(status, delay)` of `script`
/// (then 200 at once), a JSON body, and counts requests: for retry and replay tests.
pub struct ScriptedUpstream {
    pub addr: SocketAddr,
    pub calls: Arc<AtomicUsize>,
}

pub async fn scripted_upstream(script: Vec<(u16, Duration)>) -> ScriptedUpstream {
    let calls = Arc::new(AtomicUsize::new(0));
    let script = Arc::new(Mutex::new(std::collections::VecDeque::from(script)));
    let counted = calls.clone();
    let app = Router::new().fallback(any(move |req: AxumRequest| {
        let script = script.clone();
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            let _ = req.into_body().collect().await;
            let (status, delay) = script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or((200, Duration::ZERO));
            tokio::time::sleep(delay).await;
            http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(AxumBody::from(format!("{{\"status\":{status}}}")))
                .unwrap()
        }
    }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    ScriptedUpstream { addr, calls }
}

/// A running `passport-gate wallet` page; killed when dropped.
pub struct WalletPage {
    pub child: Child,
    pub addr: SocketAddr,
    /// Its stderr lines after the one naming its address.
    pub lines: mpsc::Receiver<String>,
}

impl Drop for WalletPage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl WalletPage {
    /// `http://ADDR/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

/// Starts `passport-gate wallet --listen 127.0.0.1:0 --chain-id CHAIN` with `extra`
/// arguments and waits for the line naming its address.
pub fn start_wallet(extra: &[&str]) -> WalletPage {
    let child = Command::new(env!("CARGO_BIN_EXE_passport-gate"))
        .args(["wallet", "--listen", "127.0.0.1:0", "--chain-id", CHAIN])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    // Owned at once, so that a panic below still kills and reaps the process.
    let mut page = WalletPage {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        lines: rx,
    };
    let stderr = page.child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = page
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the wallet page printed its address");
        if let Some(rest) = line.strip_prefix("passport-gate wallet page on http://") {
            page.addr = rest.split('/').next().unwrap().parse().unwrap();
            return page;
        }
    }
}
