//! `cargo bench --bench load`: requests per second and p50/p99 latency through the real
//! `passport-gate serve` binary, in one run, with the layer disabled, enabled without
//! passports, enabled with passports (cycling through many pre-signed requests), and,
//! for comparison, a naive configuration that verifies the secp256k1 signature on every
//! request (`envelope_cache_capacity = 0`), all in front of `passport-gate echo`, run as its own process.
//! Also reports the gateway's resident memory after a 5 s warm-up at full concurrency and
//! at the end of each phase, and counts every answer that is not 200 as an error.
//!
//! Two replay phases follow (replay protection on, every request new, signed by the
//! client as it goes): the in-process store, then the disk store, whose accepted requests
//! each wait for their group's commit (an fsync); it prints the database size per record.
//!
//! Two phases run with `[limits]` on (issue 20), with passports, every limit configured
//! and wide enough never to refuse: limits in the process, then in a `redis-server`
//! started on loopback (skipped with a message when it is not installed). Each prints
//! its req/s as a share of "enabled, with passports" from the same run.
//!
//! A last, separate phase runs with TLS both ways (client to gateway over TLS, gateway to
//! an `https://` upstream: the echo upstream behind a TLS front), certificates made at
//! start with rcgen.
//!
//! Then the forgery flood (default configuration): a client sends cached passports at a
//! fixed rate (`LOAD_FLOOD_RATE_PERCENT` of the throughput measured with passports,
//! default 90), alone and then while a second client sends distinct forged passports
//! (valid shape, wrong principal signature, small bodies) as fast as it can. Each
//! client runs on its own one-thread runtime, and the forger writes pre-serialized
//! requests on raw keep-alive sockets, so the measuring process costs the gateway as little CPU as it
//! can. It prints one line `under flood: cached throughput R of unloaded, p99 Q x
//! unloaded, forged accepted N`, after a line with the forger's rate and answers.
//!
//! Settings (environment): `LOAD_SECONDS` per phase (default 10), `LOAD_CONNECTIONS`
//! (default 32), `LOAD_PASSPORTS` distinct passports (default 64), `LOAD_REQUESTS`
//! distinct signed requests (default 1024), `LOAD_FORGED` distinct forged passports
//! (default 4096), `LOAD_FORGER_CONNECTIONS` (default 32), `LOAD_FLOOD_RATE_PERCENT`,
//! `LOAD_SERVER_EXTRA` (TOML lines added to `[server]`), `LOAD_PHASES` (a comma-separated
//! list of the phases to run, default all: `disabled`, `no-passport`, `passports`,
//! `naive`, `replay`, `limits` (both), `limits-memory`, `limits-redis`, `tls`, `flood`;
//! e.g. `LOAD_PHASES=passports,limits-redis` measures the Redis limits beside "with
//! passports" alone).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::Connect;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use passport_core::crypto::{AgentSecret, PrincipalSecret};
use passport_core::mint::{AgentSigner, PassportSpec};
use passport_core::time::Timestamp;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHAIN: &str = "gonka-mainnet";
const PATH: &str = "/v1/chat/completions";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Gateway {
    child: Child,
    listen: SocketAddr,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn start_gateway(upstream: SocketAddr, enabled: bool, cache: u64, extra: &str) -> Gateway {
    // `LOAD_SERVER_EXTRA`: TOML lines added to `[server]` of every plain phase, e.g.
    // `max_auth_failures_per_connection = 0` to compare the flood with and without it.
    let server_extra = std::env::var("LOAD_SERVER_EXTRA").unwrap_or_default();
    let dir =
        std::env::temp_dir().join(format!("pg-load-{}-{enabled}-{cache}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nupstream = \"http://{upstream}\"\n{server_extra}\n\n[agent_envelope]\nenabled = {enabled}\nchain_id = \"{CHAIN}\"\nenvelope_cache_capacity = {cache}\n{extra}"
        ),
    )
    .unwrap();
    spawn_gateway(&config)
}

/// `passport-gate echo` in its own process: the upstream every phase forwards to.
struct EchoProcess {
    child: Child,
    addr: SocketAddr,
}

impl EchoProcess {
    /// Starts `passport-gate echo --listen 127.0.0.1:0` and reads the address it prints.
    fn start() -> EchoProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_passport-gate"))
            .args(["echo", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the passport-gate binary runs");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout is piped");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("echo prints its address");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("echo printed {line:?}"));
        EchoProcess { child, addr }
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `serve` with the configuration file `config` and waits for its listening line.
fn spawn_gateway(config: &std::path::Path) -> Gateway {
    let mut child = Command::new(env!("CARGO_BIN_EXE_passport-gate"))
        .args(["serve", "--config"])
        .arg(config)
        .env("PASSPORT_GATE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let listen = loop {
        let line = lines
            .next()
            .expect("the gateway printed its listening line")
            .unwrap();
        if let Some(rest) = line
            .strip_prefix("passport-gate listening on http://")
            .or_else(|| line.strip_prefix("passport-gate listening on https://"))
        {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Gateway { child, listen }
}

/// Another process whose CPU time the phases report (the limits phase's `redis-server`),
/// 0 for none.
static WATCHED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// User plus system CPU time of `pid` in milliseconds (0 when unknown).
fn cpu_ms(pid: u32) -> u64 {
    if pid == 0 {
        return 0;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // The fields after the command name (which may hold spaces) in parentheses.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            // USER_HZ is 100 on Linux.
            Some(ticks * 10)
        })
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// One prepared request: body and headers.
struct Prepared {
    body: Bytes,
    headers: Vec<(&'static str, String)>,
}

fn prepare(signed: bool, passports: usize, requests: usize) -> Vec<Prepared> {
    let signers = signers_of(passports, [0x91, 0x92], "load", Some(vec!["echo-1".into()]));
    (0..requests)
        .map(|i| {
            let body = Bytes::from(format!(
                r#"{{"model":"echo-1","messages":[{{"role":"user","content":"request number {i}: say something short"}}]}}"#
            ));
            let mut headers = vec![("content-type", "application/json".to_owned())];
            if signed {
                let s = &signers[i % signers.len()];
                headers.push(("x-agent-passport", s.passport().to_owned()));
                headers.push(("x-agent-sig", s.sign("POST", PATH, &body).unwrap()));
            }
            Prepared { body, headers }
        })
        .collect()
}

/// `count` distinct forged passports: each a fresh passport whose `principal_sig` is
/// another passport's (valid shape, does not verify), with a valid agent signature over
/// a small body.
fn forged(count: usize) -> Vec<Prepared> {
    let principal = PrincipalSecret::from_bytes(&[0x93; 32]).unwrap();
    let agent = AgentSecret::from_bytes(&[0x94; 32]);
    let now = Timestamp::from_unix_seconds(Timestamp::now().unix_seconds());
    let mint = |i: usize| {
        PassportSpec {
            chain_id: CHAIN.into(),
            agent_id: format!("urn:aps:agent:forged-{i}"),
            agent_key: agent.public_key(),
            principal_key: principal.public_key(),
            address_prefix: "gonka".into(),
            issued_at: now,
            expires_at: now.plus_seconds(3600),
            not_before: None,
            allowed_models: None,
            beneficiary: None,
        }
        .mint(&principal, 3600)
        .unwrap()
    };
    let json = |p: &str| -> serde_json::Value {
        serde_json::from_slice(&passport_core::crypto::decode_base64(p).unwrap()).unwrap()
    };
    let donor_sig = json(&mint(usize::MAX))["principal_sig"].clone();
    let body = Bytes::from_static(br#"{"model":"echo-1","messages":[]}"#);
    (0..count)
        .map(|i| {
            let mut envelope = json(&mint(i));
            envelope["principal_sig"] = donor_sig.clone();
            let passport =
                passport_core::crypto::encode_base64(&serde_json::to_vec(&envelope).unwrap());
            let signer = AgentSigner::new(agent.clone(), &passport, CHAIN).unwrap();
            let sig = signer.sign("POST", PATH, &body).unwrap();
            Prepared {
                body: body.clone(),
                headers: vec![
                    ("content-type", "application/json".to_owned()),
                    ("x-agent-passport", passport),
                    ("x-agent-sig", sig),
                ],
            }
        })
        .collect()
}

struct Figures {
    /// CPU time (ms) over the measured run: the gateway's, and [`WATCHED`]'s.
    cpu_ms: [u64; 2],
    requests: usize,
    errors: usize,
    seconds: f64,
    p50_us: u128,
    p99_us: u128,
    rss_start_kib: u64,
    rss_end_kib: u64,
}

/// Runs `connections` client loops for `seconds`, returning the latencies of 200s and
/// the count of anything else.
async fn run_for<C: Connect + Clone + Send + Sync + 'static>(
    client: &Client<C, Full<Bytes>>,
    url: &http::Uri,
    prepared: &Arc<Vec<Prepared>>,
    connections: usize,
    seconds: f64,
) -> (Vec<u128>, usize) {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let client = client.clone();
            let prepared = Arc::clone(prepared);
            let url = url.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0usize;
                let mut i = c;
                while Instant::now() < deadline {
                    let p = &prepared[i % prepared.len()];
                    i += connections;
                    let mut req = http::Request::post(url.clone());
                    for (n, v) in &p.headers {
                        req = req.header(*n, v);
                    }
                    let t = Instant::now();
                    match client
                        .request(req.body(Full::new(p.body.clone())).unwrap())
                        .await
                    {
                        Ok(resp) => {
                            let ok = resp.status() == 200;
                            let body = resp.into_body().collect().await;
                            if ok && body.is_ok() {
                                latencies.push(t.elapsed().as_micros());
                            } else {
                                errors += 1;
                            }
                        }
                        Err(_) => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    (all, errors)
}

async fn drive(
    gateway: &Gateway,
    prepared: Arc<Vec<Prepared>>,
    connections: usize,
    seconds: u64,
) -> Figures {
    let url: http::Uri = format!("http://{}{PATH}", gateway.listen).parse().unwrap();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .build_http();
    drive_with(gateway, &client, &url, prepared, connections, seconds).await
}

/// [`drive`] with a given client and URL (the TLS phase).
async fn drive_with<C: Connect + Clone + Send + Sync + 'static>(
    gateway: &Gateway,
    client: &Client<C, Full<Bytes>>,
    url: &http::Uri,
    prepared: Arc<Vec<Prepared>>,
    connections: usize,
    seconds: u64,
) -> Figures {
    // Warm-up at full concurrency (not measured): connections, buffers and the
    // envelope cache reach their working size before memory is first read.
    let (_, warmup_errors) = run_for(client, url, &prepared, connections, 5.0).await;
    assert_eq!(warmup_errors, 0, "errors during warm-up");
    let rss_start_kib = rss_kib(gateway.child.id());
    let watched = WATCHED.load(std::sync::atomic::Ordering::Relaxed);
    let cpu_start = [cpu_ms(gateway.child.id()), cpu_ms(watched)];
    let started = Instant::now();
    let (mut all, errors) = run_for(client, url, &prepared, connections, seconds as f64).await;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_end = [cpu_ms(gateway.child.id()), cpu_ms(watched)];
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Figures {
        cpu_ms: [cpu_end[0] - cpu_start[0], cpu_end[1] - cpu_start[1]],
        requests: all.len(),
        errors,
        seconds,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        rss_start_kib,
        rss_end_kib: rss_kib(gateway.child.id()),
    }
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn http_client(connections: usize) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .build_http()
}

/// Runs `f` on a fresh one-thread runtime on its own OS thread.
fn on_own_thread<F, T>(f: impl FnOnce() -> F + Send + 'static) -> std::thread::JoinHandle<T>
where
    F: std::future::Future<Output = T>,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
}

/// Sends `prepared` (cycling) at `rate` requests per second over `connections`, for
/// `seconds`; a connection that falls behind its schedule skips the missed slots rather
/// than bursting. Returns the latencies of 200s and the count of anything else.
async fn paced(
    url: http::Uri,
    prepared: Arc<Vec<Prepared>>,
    connections: usize,
    rate: f64,
    seconds: f64,
) -> (Vec<u128>, usize) {
    let client = http_client(connections);
    let interval = Duration::from_secs_f64(connections as f64 / rate);
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let client = client.clone();
            let prepared = Arc::clone(&prepared);
            let url = url.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0usize;
                let mut next = started + interval.mul_f64(c as f64 / connections as f64);
                let mut i = c;
                while next < deadline {
                    tokio::time::sleep_until(next).await;
                    let p = &prepared[i % prepared.len()];
                    i += connections;
                    let mut req = http::Request::post(url.clone());
                    for (n, v) in &p.headers {
                        req = req.header(*n, v);
                    }
                    let t = Instant::now();
                    match client
                        .request(req.body(Full::new(p.body.clone())).unwrap())
                        .await
                    {
                        Ok(resp) => {
                            let ok = resp.status() == 200;
                            if ok && resp.into_body().collect().await.is_ok() {
                                latencies.push(t.elapsed().as_micros());
                            } else {
                                errors += 1;
                            }
                        }
                        Err(_) => errors += 1,
                    }
                    next += interval;
                    let now = tokio::time::Instant::now();
                    if next < now {
                        next = now;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    (all, errors)
}

/// What the forger got back.
#[derive(Default)]
struct Forged {
    sent: usize,
    accepted: usize,
    refused_401: usize,
    shed_503: usize,
    shed_without_retry_after: usize,
    other: usize,
}

/// Sends the forged requests (cycling; none is ever cached, so each one is cold) over
/// `connections` keep-alive sockets as fast as the gateway answers, for `seconds`. The
/// requests are pre-serialized bytes and the answers are read with a minimal parser, so
/// the forger costs the shared CPU as little as it can.
async fn forge(
    addr: SocketAddr,
    forged: Arc<Vec<Bytes>>,
    connections: usize,
    seconds: f64,
) -> Forged {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let forged = Arc::clone(&forged);
            tokio::spawn(async move {
                let mut f = Forged::default();
                let mut buf = Vec::with_capacity(4096);
                let mut stream = None;
                let mut i = c;
                while Instant::now() < deadline {
                    let socket = match &mut stream {
                        Some(s) => s,
                        None => match tokio::net::TcpStream::connect(addr).await {
                            Ok(s) => {
                                let _ = s.set_nodelay(true);
                                stream.insert(s)
                            }
                            Err(_) => {
                                f.other += 1;
                                continue;
                            }
                        },
                    };
                    let request = &forged[i % forged.len()];
                    i += connections;
                    match exchange(socket, request, &mut buf).await {
                        None => stream = None,
                        Some(answer) => {
                            f.sent += 1;
                            match answer.status {
                                200 => f.accepted += 1,
                                401 => f.refused_401 += 1,
                                503 => {
                                    f.shed_503 += 1;
                                    if !answer.retry_after {
                                        f.shed_without_retry_after += 1;
                                    }
                                }
                                _ => f.other += 1,
                            }
                            if !answer.keep_alive {
                                stream = None;
                            }
                        }
                    }
                }
                f
            })
        })
        .collect();
    let mut total = Forged::default();
    for t in tasks {
        let f = t.await.unwrap();
        total.sent += f.sent;
        total.accepted += f.accepted;
        total.refused_401 += f.refused_401;
        total.shed_503 += f.shed_503;
        total.shed_without_retry_after += f.shed_without_retry_after;
        total.other += f.other;
    }
    total
}

struct Answer {
    status: u16,
    retry_after: bool,
    keep_alive: bool,
}

/// Writes one request and reads its answer (head and `Content-Length` body); `None`
/// when the connection closed or the answer cannot be read this way.
async fn exchange(
    socket: &mut tokio::net::TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Option<Answer> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    socket.write_all(request).await.ok()?;
    buf.clear();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).ok()?.to_ascii_lowercase();
            let status = head.get(9..12)?.parse().ok()?;
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())?;
            while buf.len() < end + 4 + length {
                if socket.read_buf(buf).await.ok()? == 0 {
                    return None;
                }
            }
            return Some(Answer {
                status,
                retry_after: head.contains("\r\nretry-after:"),
                keep_alive: !head.contains("\r\nconnection: close"),
            });
        }
        if socket.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

fn p99(latencies: &mut [u128]) -> u128 {
    latencies.sort_unstable();
    latencies
        .get(((latencies.len() as f64 * 0.99) as usize).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
}

/// The forgery flood against the default configuration: the cached client alone at
/// `rate`, then with the forger. Prints the forger's line and the `under flood` line.
#[allow(clippy::too_many_arguments)]
fn flood_phase(
    upstream: SocketAddr,
    passports: usize,
    requests: usize,
    connections: usize,
    rate: f64,
    seconds: u64,
    naive_rps: f64,
) {
    let prepared = Arc::new(prepare(true, passports, requests));
    let forger_connections = env_num("LOAD_FORGER_CONNECTIONS", 32) as usize;
    let gateway = start_gateway(upstream, true, 100_000, "");
    let forged: Arc<Vec<Bytes>> = Arc::new(
        forged(env_num("LOAD_FORGED", 4096) as usize)
            .into_iter()
            .map(|p| {
                let mut raw = format!("POST {PATH} HTTP/1.1\r\nhost: {}\r\n", gateway.listen);
                for (n, v) in &p.headers {
                    raw.push_str(&format!("{n}: {v}\r\n"));
                }
                raw.push_str(&format!("content-length: {}\r\n\r\n", p.body.len()));
                let mut raw = raw.into_bytes();
                raw.extend_from_slice(&p.body);
                Bytes::from(raw)
            })
            .collect(),
    );
    let url: http::Uri = format!("http://{}{PATH}", gateway.listen).parse().unwrap();
    let seconds = seconds as f64;
    // Warm-up: every cached passport verified once, connections open.
    let (u, p) = (url.clone(), Arc::clone(&prepared));
    let (_, warmup_errors) = on_own_thread(move || paced(u, p, connections, rate, 5.0))
        .join()
        .unwrap();
    assert_eq!(warmup_errors, 0, "errors during warm-up");
    let (u, p) = (url.clone(), Arc::clone(&prepared));
    let (mut alone, alone_errors) = on_own_thread(move || paced(u, p, connections, rate, seconds))
        .join()
        .unwrap();
    let rss_before = rss_kib(gateway.child.id());
    let (addr, f) = (gateway.listen, Arc::clone(&forged));
    let forger = on_own_thread(move || forge(addr, f, forger_connections, seconds));
    let (u, p) = (url.clone(), Arc::clone(&prepared));
    let (mut flooded, flooded_errors) =
        on_own_thread(move || paced(u, p, connections, rate, seconds))
            .join()
            .unwrap();
    let forged = forger.join().unwrap();
    let rss_after = rss_kib(gateway.child.id());
    println!(
        "flood: cached at {rate:.0}/s: alone {:.0} req/s p99 {:.2} ms ({alone_errors} errors), flooded {:.0} req/s p99 {:.2} ms ({flooded_errors} errors); forger {:.0} req/s = {:.1} x naive ({naive_rps:.0} req/s): {} x 401, {} x 503 ({} without Retry-After), {} other; RSS {rss_before} -> {rss_after} KiB",
        alone.len() as f64 / seconds,
        p99(&mut alone) as f64 / 1000.0,
        flooded.len() as f64 / seconds,
        p99(&mut flooded) as f64 / 1000.0,
        forged.sent as f64 / seconds,
        forged.sent as f64 / seconds / naive_rps,
        forged.refused_401,
        forged.shed_503,
        forged.shed_without_retry_after,
        forged.other,
    );
    println!(
        "under flood: cached throughput {:.2} of unloaded, p99 {:.2} x unloaded, forged accepted {}",
        flooded.len() as f64 / alone.len().max(1) as f64,
        p99(&mut flooded) as f64 / p99(&mut alone).max(1) as f64,
        forged.accepted
    );
}

/// Whether `LOAD_PHASES` (default: every phase) names any of `names`.
fn phase_on(names: &[&str]) -> bool {
    match std::env::var("LOAD_PHASES") {
        Ok(list) if !list.trim().is_empty() => list.split(',').any(|p| names.contains(&p.trim())),
        _ => true,
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing useful.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let seconds = env_num("LOAD_SECONDS", 10);
    let connections = env_num("LOAD_CONNECTIONS", 32) as usize;
    let passports = env_num("LOAD_PASSPORTS", 64) as usize;
    let requests = env_num("LOAD_REQUESTS", 1024) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let upstream = EchoProcess::start();
    let upstream_addr = upstream.addr;
    let figures = rt.block_on(async {
        println!(
            "load: {seconds} s per phase, {connections} connections, {requests} distinct requests, {passports} passports, echo upstream at {}",
            upstream.addr
        );
        println!("{:<28} {:>10} {:>9} {:>9} {:>7} {:>11} {:>11}", "phase", "req/s", "p50 ms", "p99 ms", "errors", "RSS start", "RSS end");
        let mut with_passports = 0.0;
        let mut naive = 0.0;
        for (phase, name, enabled, signed, cache) in [
            ("disabled", "layer disabled", false, false, 100_000),
            ("no-passport", "enabled, no passport", true, false, 100_000),
            ("passports", "enabled, with passports", true, true, 100_000),
            ("naive", "naive: no envelope cache", true, true, 0),
        ] {
            if !phase_on(&[phase]) {
                continue;
            }
            let prepared = Arc::new(prepare(signed, passports, requests));
            // The naive configuration verifies every request in full: unbounded.
            let extra = if cache == 0 { "cold_verifications_per_second = 0\n" } else { "" };
            let gateway = start_gateway(upstream.addr, enabled, cache, extra);
            let f = drive(&gateway, prepared, connections, seconds).await;
            print_row(name, &f);
            let rps = f.requests as f64 / f.seconds;
            if cache == 0 {
                naive = rps;
            } else if signed {
                with_passports = rps;
                println!(
                    "  {name}: CPU per request: gateway {:.1} µs",
                    f.cpu_ms[0] as f64 * 1000.0 / f.requests.max(1) as f64
                );
            }
        }
        if phase_on(&["replay"]) {
            for store in [ReplayPhase::Memory, ReplayPhase::Disk] {
                replay_phase(upstream.addr, store, passports, connections, seconds).await;
            }
        }
        let stores = [
            phase_on(&["limits", "limits-memory"]),
            phase_on(&["limits", "limits-redis"]),
        ];
        limits_phases(
            upstream.addr,
            [passports, requests, connections],
            seconds,
            with_passports,
            stores,
        )
        .await;
        if phase_on(&["tls"]) {
            tls_phase(upstream.addr, passports, requests, connections, seconds).await;
        }
        (with_passports, naive)
    });
    let (with_passports, naive) = figures;
    if !phase_on(&["flood"]) {
        return;
    }
    let rate = with_passports * env_num("LOAD_FLOOD_RATE_PERCENT", 90) as f64 / 100.0;
    flood_phase(
        upstream_addr,
        passports,
        requests,
        connections,
        rate,
        seconds,
        naive,
    );
}

fn print_row(name: &str, f: &Figures) {
    println!(
        "{:<28} {:>10.0} {:>9.2} {:>9.2} {:>7} {:>8} KiB {:>7} KiB",
        name,
        f.requests as f64 / f.seconds,
        f.p50_us as f64 / 1000.0,
        f.p99_us as f64 / 1000.0,
        f.errors,
        f.rss_start_kib,
        f.rss_end_kib
    );
}

// The replay phases (issue 22 item 3): what each accepted request costs the replay store.

/// Where the replay phase keeps its records.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReplayPhase {
    /// `[replay] store = "memory"`.
    Memory,
    /// `[replay] store = "disk"`: every accepted request waits for its group's commit.
    Disk,
}

/// Replay protection on, every request new (a counter in the query, signed by the client
/// as it goes, the same for both stores), against the in-process store and then the disk
/// store: the difference is what durability costs an accepted request. The disk phase
/// also prints the database's size per record written.
async fn replay_phase(
    upstream: SocketAddr,
    store: ReplayPhase,
    passports: usize,
    connections: usize,
    seconds: u64,
) {
    let dir = std::env::temp_dir().join(format!("pg-load-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let table = match store {
        ReplayPhase::Memory => "[replay]\nstore = \"memory\"\n".to_owned(),
        ReplayPhase::Disk => format!("[replay]\ndata_dir = {:?}\n", dir.display().to_string()),
    };
    // Skew 0, and passports minted a second after the start: the memory store refuses
    // every passport issued before it started.
    let gateway = start_gateway(
        upstream,
        true,
        100_000,
        &format!("clock_skew_seconds = 0\nreplay_protection = true\nreplay_cache_capacity = 10000000\nreplay_records_per_principal = 100000000\n{table}"),
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let signers = Arc::new(signers_of(passports, [0x95, 0x96], "replay", None));
    let url = format!("http://{}", gateway.listen);
    let client = http_client(connections);
    let run = |tag: &'static str, seconds: f64| {
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let tasks: Vec<_> = (0..connections)
            .map(|c| {
                let (client, signers, url) = (client.clone(), Arc::clone(&signers), url.clone());
                tokio::spawn(async move {
                    let body = Bytes::from_static(
                        br#"{"model":"echo-1","messages":[{"role":"user","content":"say something short"}]}"#,
                    );
                    let (mut latencies, mut errors, mut n) = (Vec::new(), 0usize, 0usize);
                    while Instant::now() < deadline {
                        let signer = &signers[(c + n) % signers.len()];
                        let target = format!("{PATH}?n={tag}-{c}-{n}");
                        n += 1;
                        let sig = signer.sign("POST", &target, &body).unwrap();
                        let req = http::Request::post(format!("{url}{target}"))
                            .header("content-type", "application/json")
                            .header("x-agent-passport", signer.passport())
                            .header("x-agent-sig", sig)
                            .body(Full::new(body.clone()))
                            .unwrap();
                        let t = Instant::now();
                        match client.request(req).await {
                            Ok(resp) if resp.status() == 200 => {
                                if resp.into_body().collect().await.is_ok() {
                                    latencies.push(t.elapsed().as_micros());
                                } else {
                                    errors += 1;
                                }
                            }
                            _ => errors += 1,
                        }
                    }
                    (latencies, errors)
                })
            })
            .collect::<Vec<_>>();
        async move {
            let (mut all, mut errors) = (Vec::new(), 0);
            for t in tasks {
                let (l, e) = t.await.unwrap();
                all.extend(l);
                errors += e;
            }
            (all, errors)
        }
    };
    let (warmup, warmup_errors) = run("warm", 5.0).await;
    assert_eq!(warmup_errors, 0, "errors during warm-up");
    let rss_start_kib = rss_kib(gateway.child.id());
    let started = Instant::now();
    let (mut all, errors) = run("run", seconds as f64).await;
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let figures = Figures {
        cpu_ms: [0, 0],
        requests: all.len(),
        errors,
        seconds: elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        rss_start_kib,
        rss_end_kib: rss_kib(gateway.child.id()),
    };
    match store {
        ReplayPhase::Memory => print_row("replay on, memory store", &figures),
        ReplayPhase::Disk => {
            print_row("replay on, disk store", &figures);
            // Every request of the warm-up and the run wrote a record (the failures too,
            // when they failed after their record was written).
            let records = warmup.len() + all.len() + errors;
            let size = std::fs::metadata(dir.join("replay.redb")).map_or(0, |m| m.len());
            println!(
                "  disk store: replay.redb {size} bytes after {records} records, warm-up included ({} bytes per record)",
                size / records.max(1) as u64
            );
        }
    }
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `count` agent signers (agent ids `urn:aps:agent:<tag>-<i>`), each with a passport
/// issued now (valid an hour, for `models`) by one principal; `seeds` are the first byte
/// of the principal's secret and of every agent's.
fn signers_of(
    count: usize,
    [principal_seed, agent_seed]: [u8; 2],
    tag: &str,
    models: Option<Vec<String>>,
) -> Vec<AgentSigner> {
    let principal = PrincipalSecret::from_bytes(&[principal_seed; 32]).unwrap();
    let now = Timestamp::from_unix_seconds(Timestamp::now().unix_seconds());
    (0..count)
        .map(|i| {
            let mut seed = [agent_seed; 32];
            seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let agent = AgentSecret::from_bytes(&seed);
            let passport = PassportSpec {
                chain_id: CHAIN.into(),
                agent_id: format!("urn:aps:agent:{tag}-{i}"),
                agent_key: agent.public_key(),
                principal_key: principal.public_key(),
                address_prefix: "gonka".into(),
                issued_at: now,
                expires_at: now.plus_seconds(3600),
                not_before: None,
                allowed_models: models.clone(),
                beneficiary: None,
            }
            .mint(&principal, 3600)
            .unwrap();
            AgentSigner::new(agent, &passport, CHAIN).unwrap()
        })
        .collect()
}

// The limits phases (issue 20).

/// Every limit on, none ever reached at these rates: the cost of judging and settling.
const WIDE_LIMITS: &str = "[limits]\n[limits.principal]\nrequests_per_minute = 1000000000\nconcurrent_requests = 1000000\ntokens_per_minute = 1000000000000\ntokens_per_hour = 1000000000000\ntokens_per_day = 1000000000000\n[limits.agent]\nrequests_per_minute = 1000000000\nconcurrent_requests = 1000000\ntokens_per_day = 1000000000000\n";

/// A `redis-server` on a free loopback port, killed when dropped.
struct RedisProcess(Child, u16);

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> Option<RedisProcess> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let redis = RedisProcess(child, port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(redis)
}

/// The limits phases: in the process, then on Redis (`stores` says which of the two run).
async fn limits_phases(
    upstream: SocketAddr,
    [passports, requests, connections]: [usize; 3],
    seconds: u64,
    with_passports: f64,
    stores: [bool; 2],
) {
    let share = |name: &str, f: &Figures| {
        let rps = f.requests as f64 / f.seconds;
        println!(
            "  {name}: {rps:.0} req/s, {:.1} % of \"enabled, with passports\" ({with_passports:.0} req/s)",
            100.0 * rps / with_passports
        );
        let per = |ms: u64| ms as f64 * 1000.0 / f.requests.max(1) as f64;
        println!(
            "  {name}: CPU per request: gateway {:.1} µs, redis-server {:.1} µs",
            per(f.cpu_ms[0]),
            per(f.cpu_ms[1])
        );
    };
    let prepared = Arc::new(prepare(true, passports, requests));
    if stores[0] {
        let gateway = start_gateway(upstream, true, 100_000, WIDE_LIMITS);
        let f = drive(&gateway, Arc::clone(&prepared), connections, seconds).await;
        drop(gateway);
        print_row("limits, in process", &f);
        share("limits, in process", &f);
    }
    if !stores[1] {
        return;
    }
    let Some(redis) = start_redis() else {
        println!("limits, Redis: skipped (redis-server is not installed)");
        return;
    };
    let toml = WIDE_LIMITS.replacen(
        "[limits]\n",
        "[limits]\nstore = \"redis\"\naccept_forgetful_redis = true\n",
        1,
    ) + &format!("[redis]\nurl = \"redis://127.0.0.1:{}\"\n", redis.1);
    let gateway = start_gateway(upstream, true, 100_000, &toml);
    WATCHED.store(redis.0.id(), std::sync::atomic::Ordering::Relaxed);
    let f = drive(&gateway, prepared, connections, seconds).await;
    WATCHED.store(0, std::sync::atomic::Ordering::Relaxed);
    drop(gateway);
    print_row("limits, Redis (loopback)", &f);
    share("limits, Redis (loopback)", &f);
    // The scripts' calls, warm-up included (`redis-cli` when installed).
    if let Ok(out) = Command::new("redis-cli")
        .args(["-p", &redis.1.to_string(), "info", "commandstats"])
        .output()
    {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.starts_with("cmdstat_eval") {
                println!("  limits, Redis (loopback): {line}");
            }
        }
    }
}

// The TLS phase (issue 11).

/// A CA and a `localhost` certificate signed by it, as PEM (CA, certificate, key).
fn tls_certificates() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS front for the echo upstream: terminates TLS and copies bytes both ways.
async fn tls_front(echo: SocketAddr, cert: &str, key: &str) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let (Ok(mut tls), Ok(mut plain)) = (
                    acceptor.accept(tcp).await,
                    tokio::net::TcpStream::connect(echo).await,
                ) else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

/// Client to gateway over TLS (HTTP/1.1 by ALPN, as the plain phases), gateway to the
/// upstream over TLS, passports on: the figures next to "enabled, with passports".
async fn tls_phase(
    echo: SocketAddr,
    passports: usize,
    requests: usize,
    connections: usize,
    seconds: u64,
) {
    let (ca, cert, key) = tls_certificates();
    let front = tls_front(echo, &cert, &key).await;
    let dir = std::env::temp_dir().join(format!("pg-load-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in [("ca.pem", &ca), ("cert.pem", &cert), ("key.pem", &key)] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nupstream = \"https://localhost:{}\"\nupstream_ca_file = {:?}\n\n[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n\n[agent_envelope]\nenabled = true\nchain_id = \"{CHAIN}\"\n",
            front.port(),
            dir.join("ca.pem").display().to_string(),
            dir.join("cert.pem").display().to_string(),
            dir.join("key.pem").display().to_string(),
        ),
    )
    .unwrap();
    let gateway = spawn_gateway(&config);
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .build(connector);
    let url: http::Uri = format!("https://localhost:{}{PATH}", gateway.listen.port())
        .parse()
        .unwrap();
    let prepared = Arc::new(prepare(true, passports, requests));
    let f = drive_with(&gateway, &client, &url, prepared, connections, seconds).await;
    print_row("TLS both ways, passports", &f);
}
