//! `cargo bench --bench load`: requests per second and p50/p99 latency through the real
//! `passport-gate serve` binary, in one run, with the layer disabled, enabled without
//! passports, enabled with passports (cycling through many pre-signed requests), and,
//! for comparison, a naive configuration that verifies the secp256k1 signature on every
//! request (`envelope_cache_capacity = 0`), all in front of the embedded echo upstream.
//! Also reports the gateway's resident memory after a 5 s warm-up at full concurrency and
//! at the end of each phase, and counts every answer that is not 200 as an error.
//!
//! A last, separate phase runs with TLS both ways (client to gateway over TLS, gateway to
//! an `https://` upstream: the echo upstream behind a TLS front), certificates made at
//! start with rcgen.
//!
//! Settings (environment): `LOAD_SECONDS` per phase (default 10), `LOAD_CONNECTIONS`
//! (default 32), `LOAD_PASSPORTS` distinct passports (default 64), `LOAD_REQUESTS`
//! distinct signed requests (default 1024).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::Connect;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use passport_gate::crypto::{AgentSecret, PrincipalSecret};
use passport_gate::echo::EchoUpstream;
use passport_gate::mint::{AgentSigner, PassportSpec};
use passport_gate::time::Timestamp;
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

fn start_gateway(upstream: SocketAddr, enabled: bool, cache: u64) -> Gateway {
    let dir =
        std::env::temp_dir().join(format!("pg-load-{}-{enabled}-{cache}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nupstream = \"http://{upstream}\"\n\n[agent_envelope]\nenabled = {enabled}\nchain_id = \"{CHAIN}\"\nenvelope_cache_capacity = {cache}\n"
        ),
    )
    .unwrap();
    spawn_gateway(&config)
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
        if let Some(rest) = line.strip_prefix("passport-gate listening on http://") {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Gateway { child, listen }
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
    let principal = PrincipalSecret::from_bytes(&[0x91; 32]).unwrap();
    let now = Timestamp::from_unix_seconds(Timestamp::now().unix_seconds());
    let signers: Vec<AgentSigner> = (0..passports)
        .map(|i| {
            let mut seed = [0x92u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let agent = AgentSecret::from_bytes(&seed);
            let passport = PassportSpec {
                chain_id: CHAIN.into(),
                agent_id: format!("urn:aps:agent:load-{i}"),
                agent_key: agent.public_key(),
                principal_key: principal.public_key(),
                address_prefix: "gonka".into(),
                issued_at: now,
                expires_at: now.plus_seconds(3600),
                not_before: None,
                allowed_models: Some(vec!["echo-1".into()]),
                beneficiary: None,
            }
            .mint(&principal, 3600)
            .unwrap();
            AgentSigner::new(agent, &passport, CHAIN).unwrap()
        })
        .collect();
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

struct Figures {
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
    let started = Instant::now();
    let (mut all, errors) = run_for(client, url, &prepared, connections, seconds as f64).await;
    let seconds = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Figures {
        requests: all.len(),
        errors,
        seconds,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        rss_start_kib,
        rss_end_kib: rss_kib(gateway.child.id()),
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
    rt.block_on(async {
        let upstream = EchoUpstream::start("127.0.0.1:0".parse().unwrap(), Duration::from_millis(1)).await.unwrap();
        println!(
            "load: {seconds} s per phase, {connections} connections, {requests} distinct requests, {passports} passports, echo upstream at {}",
            upstream.addr()
        );
        println!("{:<28} {:>10} {:>9} {:>9} {:>7} {:>11} {:>11}", "phase", "req/s", "p50 ms", "p99 ms", "errors", "RSS start", "RSS end");
        for (name, enabled, signed, cache) in [
            ("layer disabled", false, false, 100_000),
            ("enabled, no passport", true, false, 100_000),
            ("enabled, with passports", true, true, 100_000),
            ("naive: no envelope cache", true, true, 0),
        ] {
            let prepared = Arc::new(prepare(signed, passports, requests));
            let gateway = start_gateway(upstream.addr(), enabled, cache);
            let f = drive(&gateway, prepared, connections, seconds).await;
            print_row(name, &f);
        }
        tls_phase(upstream.addr(), passports, requests, connections, seconds).await;
    });
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
