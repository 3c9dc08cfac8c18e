//! Several replicas on one real `redis-server` (started here on loopback; `.ci/run`
//! installs it): shared replay records, fail-closed when Redis dies, revocation by file
//! and by shared set, one attribution stream, and an audit file that survives `kill -9`.

use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use passport_core::time::{FixedClock, Timestamp};
use passport_gate::attribution::{AttributionQueue, RedisStreamSink, StreamBounds};
use passport_gate::metrics::Metrics;
use passport_gate::redis_client::{Redis, RedisConfig, RedisTlsFiles, Reply};
use passport_gate::replay::RedisReplayStore;
use passport_gate::revocation::RevocationList;
use passport_gate::{Config, PassportLayer};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

use crate::support;

const BODY: &[u8] = br#"{"model":"qwen/qwen3-32b","messages":[{"role":"user","content":"hi"}]}"#;
const URI: &str = "/v1/chat/completions";

struct RedisServer {
    child: Child,
    port: u16,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `redis-server` can be run. Without it these tests are skipped and named in the
/// run's last line on a developer's machine, and fail under CI (see skip.rs).
pub(crate) fn redis_available() -> bool {
    crate::skip::requires(|| {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        (!found).then(|| "redis-server (apt-get install redis-server redis-tools)".to_owned())
    })
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    fn start() -> RedisServer {
        RedisServer::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// A server with `settings` (command-line `--name value` pairs) added; its files go
    /// to a fresh temporary directory.
    fn start_with(settings: &[&str]) -> RedisServer {
        let port = free_port();
        RedisServer::start_on(port, &["--port", &port.to_string()], settings)
    }

    /// A server that listens (TCP or TLS, as `listen` says) on `port`.
    /// A server reached only over TLS on `port`, with the certificates `tls_files` wrote
    /// into `dir` (`ca` signs them); `client_certs` requires client certificates.
    fn start_tls(
        port: u16,
        dir: &std::path::Path,
        ca: &std::path::Path,
        client_certs: bool,
        settings: &[&str],
    ) -> RedisServer {
        let port_text = port.to_string();
        let cert = dir.join("server.pem");
        let key = dir.join("server.key");
        RedisServer::start_on(
            port,
            &[
                "--port",
                "0",
                "--tls-port",
                &port_text,
                "--tls-cert-file",
                cert.to_str().unwrap(),
                "--tls-key-file",
                key.to_str().unwrap(),
                "--tls-ca-cert-file",
                ca.to_str().unwrap(),
                "--tls-auth-clients",
                if client_certs { "yes" } else { "no" },
            ],
            settings,
        )
    }

    fn start_on(port: u16, listen: &[&str], settings: &[&str]) -> RedisServer {
        let child = Command::new("redis-server")
            .args(listen)
            .args([
                "--bind",
                "127.0.0.1",
                "--dir",
                support::serve::workdir(&format!("redis-{port}"))
                    .to_str()
                    .unwrap(),
            ])
            .args(settings)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server; .ci/run does it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer { child, port }
    }

    fn config(&self) -> RedisConfig {
        RedisConfig::from_url(&self.url(), Duration::from_millis(500)).unwrap()
    }

    fn client(&self) -> Arc<Redis> {
        Arc::new(Redis::new(self.config()))
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// The ways operators run Redis; the replay and revocation tests run against each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// One server, no password.
    Plain,
    /// One server with `requirepass` (as managed Redis has).
    Password,
    /// One server reached over TLS only (`--port 0 --tls-port`), its certificate
    /// signed by a private CA made here.
    Tls,
    /// A three-node Redis Cluster.
    Cluster,
}

/// A running deployment and the client settings that reach it.
pub(crate) struct Deployment {
    _servers: Vec<RedisServer>,
    config: RedisConfig,
    /// A URL the `revoke --redis` CLI can use (one server, no private CA), if any.
    cli_url: Option<String>,
    /// The gateway's `[redis]` keys that reach it (one server, or the cluster), if any.
    pub(crate) redis_toml: Option<String>,
}

const PASSWORD: &str = "s3cret-for-tests";

/// Whether `redis` refuses a command.
async fn refuses(redis: &Redis) -> bool {
    redis.sadd("probe", "x").await.is_err()
}

impl Deployment {
    pub(crate) async fn start(kind: Kind) -> Deployment {
        let timeout = Duration::from_millis(500);
        let plain = ["--save", "", "--appendonly", "no"];
        match kind {
            Kind::Plain => {
                let s = RedisServer::start();
                Deployment {
                    config: s.config(),
                    cli_url: Some(s.url()),
                    redis_toml: Some(format!("url = \"{}\"\n", s.url())),
                    _servers: vec![s],
                }
            }
            Kind::Password => {
                let mut settings = plain.to_vec();
                settings.extend(["--requirepass", PASSWORD]);
                let s = RedisServer::start_with(&settings);
                assert!(refuses(&Redis::new(s.config())).await, "no password");
                let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/0", s.port);
                Deployment {
                    config: RedisConfig::from_url(&url, timeout).unwrap(),
                    cli_url: Some(url),
                    redis_toml: None,
                    _servers: vec![s],
                }
            }
            Kind::Tls => {
                let port = free_port();
                let dir = support::serve::workdir(&format!("redis-tls-files-{port}"));
                let ca = tls_files(&dir);
                let s = RedisServer::start_tls(port, &dir, &ca, false, &plain);
                let url = format!("rediss://localhost:{port}");
                let untrusted = Redis::new(RedisConfig::from_url(&url, timeout).unwrap());
                assert!(
                    refuses(&untrusted).await,
                    "the private CA is not trusted by default"
                );
                let tls = RedisTlsFiles {
                    ca_file: Some(&ca),
                    client_cert: None,
                };
                Deployment {
                    config: RedisConfig::new(&[&url], false, tls, timeout).unwrap(),
                    cli_url: None,
                    redis_toml: None,
                    _servers: vec![s],
                }
            }
            Kind::Cluster => {
                let servers: Vec<RedisServer> = (0..3)
                    .map(|_| {
                        let port = free_port();
                        let bus = free_port().to_string();
                        let mut settings = plain.to_vec();
                        settings.extend([
                            "--cluster-enabled",
                            "yes",
                            "--cluster-port",
                            &bus,
                            "--cluster-node-timeout",
                            "2000",
                        ]);
                        RedisServer::start_on(port, &["--port", &port.to_string()], &settings)
                    })
                    .collect();
                let nodes: Vec<String> = servers
                    .iter()
                    .map(|s| format!("127.0.0.1:{}", s.port))
                    .collect();
                let out = Command::new("redis-cli")
                    .arg("--cluster")
                    .arg("create")
                    .args(&nodes)
                    .arg("--cluster-yes")
                    .output()
                    .expect("redis-cli is installed (it comes with redis-server)");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stdout)
                );
                let deadline = Instant::now() + Duration::from_secs(20);
                for s in &servers {
                    loop {
                        let info = Command::new("redis-cli")
                            .args(["-p", &s.port.to_string(), "cluster", "info"])
                            .output()
                            .unwrap();
                        if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                            break;
                        }
                        assert!(Instant::now() < deadline, "the cluster did not form");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                let urls: Vec<String> = nodes.iter().map(|n| format!("redis://{n}")).collect();
                let redis_toml = format!(
                    "url = \"{}\"\ncluster = true\ncluster_nodes = [{}]\n",
                    urls[0],
                    urls[1..]
                        .iter()
                        .map(|u| format!("\"{u}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
                Deployment {
                    config: RedisConfig::new(&urls, true, RedisTlsFiles::default(), timeout)
                        .unwrap(),
                    cli_url: None,
                    redis_toml: Some(redis_toml),
                    _servers: servers,
                }
            }
        }
    }

    fn client(&self) -> Arc<Redis> {
        Arc::new(Redis::new(self.config.clone()))
    }
}

/// A CA, and a server certificate for `localhost` and 127.0.0.1 signed by it, written
/// to `dir` (`ca.pem`, `server.pem`, `server.key`); returns the CA file.
fn tls_files(dir: &std::path::Path) -> std::path::PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "redis test ca");
    let ca_key = KeyPair::generate().unwrap();
    let ca = p.self_signed(&ca_key).unwrap();
    let leaf =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    let client = CertificateParams::new(vec!["gateway.local".to_owned()]).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = client.signed_by(&client_key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("client.pem"), client.pem()).unwrap();
    std::fs::write(dir.join("client.key"), client_key.serialize_pem()).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    ca_file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_requires_client_certificates_is_reached_with_client_cert_file() {
    if !redis_available() {
        return;
    }
    let port = free_port();
    let dir = support::serve::workdir(&format!("redis-mtls-files-{port}"));
    let ca = tls_files(&dir);
    let _server =
        RedisServer::start_tls(port, &dir, &ca, true, &["--save", "", "--appendonly", "no"]);
    let url = format!("rediss://localhost:{port}");
    let timeout = Duration::from_millis(500);
    let connect = |client_cert| {
        Redis::new(
            RedisConfig::new(
                &[&url],
                false,
                RedisTlsFiles {
                    ca_file: Some(&ca),
                    client_cert,
                },
                timeout,
            )
            .unwrap(),
        )
    };
    assert!(refuses(&connect(None)).await, "no client certificate");
    let (cert, key) = (dir.join("client.pem"), dir.join("client.key"));
    let with = connect(Some((&cert, &key)));
    with.sadd("aps:revoked", "agent_id x").await.unwrap();
    assert_eq!(with.smembers("aps:revoked").await.unwrap(), ["agent_id x"]);
}

fn clock() -> Arc<FixedClock> {
    Arc::new(FixedClock::new(
        Timestamp::parse("2026-05-21T12:00:00Z").unwrap(),
    ))
}

fn replaying() -> Config {
    Config {
        replay_protection: true,
        ..Config::for_chain("gonka-mainnet")
    }
}

async fn serve(layer: PassportLayer) -> SocketAddr {
    let app = Router::new()
        .route(URI, post(|| async { "ok" }))
        .layer(layer);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn send(addr: SocketAddr, headers: &[(String, String)], body: &[u8]) -> (u16, String) {
    support::post(addr, URI, headers, body).await
}

fn code(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A replay is refused whichever replica sees it second, and the record lives as long
/// as the passport (plus the skew).
async fn a_replay_is_refused_across_two_replicas(kind: Kind) {
    if !redis_available() {
        return;
    }
    let redis = Deployment::start(kind).await;
    let replica = |redis: Arc<Redis>| {
        PassportLayer::builder(replaying())
            .clock(clock())
            .replay_store(Arc::new(RedisReplayStore::new(redis, "test:")))
            .build()
            .unwrap()
    };
    let a = serve(replica(redis.client())).await;
    let b = serve(replica(redis.client())).await;
    let f = support::fixture("urn:aps:agent:replay", None, None);
    let headers = f.headers(URI, BODY);
    assert_eq!(send(a, &headers, BODY).await.0, 200);
    let (status, text) = send(b, &headers, BODY).await;
    assert_eq!((status, code(&text).as_str()), (401, "request_replayed"));
    let (status, text) = send(a, &headers, BODY).await;
    assert_eq!((status, code(&text).as_str()), (401, "request_replayed"));
    // The same passport with another body is another request.
    let other = br#"{"model":"qwen/qwen3-32b","messages":[{"role":"user","content":"again"}]}"#;
    assert_eq!(send(b, &f.headers(URI, other), other).await.0, 200);
    // The record expires with the passport (plus the skew), not before.
    let keys = redis
        .client()
        .command(&[b"KEYS", b"test:replay:*"])
        .await
        .unwrap();
    let Reply::Array(Some(keys)) = keys else {
        panic!("{keys:?}")
    };
    assert_eq!(keys.len(), 2);
    let Reply::Bulk(Some(key)) = &keys[0] else {
        panic!()
    };
    let Reply::Integer(ttl_ms) = redis.client().command(&[b"PTTL", key]).await.unwrap() else {
        panic!()
    };
    // Passport expires 12:29:00, clock 12:00:00, skew 30 s: 1770 s.
    assert!((1_769_000..=1_770_000).contains(&ttl_ms), "{ttl_ms}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_is_refused_across_two_replicas_sharing_redis() {
    a_replay_is_refused_across_two_replicas(Kind::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_is_refused_across_two_replicas_sharing_a_redis_with_a_password() {
    a_replay_is_refused_across_two_replicas(Kind::Password).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_is_refused_across_two_replicas_sharing_a_redis_over_tls() {
    a_replay_is_refused_across_two_replicas(Kind::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_is_refused_across_two_replicas_sharing_a_redis_cluster() {
    a_replay_is_refused_across_two_replicas(Kind::Cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dying_mid_run_fails_closed_unless_told_to_fail_open() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start();
    let registry = prometheus::Registry::new();
    let metrics = Metrics::register(&registry).unwrap();
    let closed = PassportLayer::builder(replaying())
        .clock(clock())
        .metrics(metrics.clone())
        .replay_store(Arc::new(RedisReplayStore::new(redis.client(), "t:")))
        .build()
        .unwrap();
    let open_metrics = Metrics::new();
    let open = PassportLayer::builder(replaying())
        .clock(clock())
        .metrics(open_metrics.clone())
        .replay_fail_open(true)
        .replay_store(Arc::new(RedisReplayStore::new(redis.client(), "t:")))
        .build()
        .unwrap();
    let closed_addr = serve(closed).await;
    let open_addr = serve(open).await;
    let f = support::fixture("urn:aps:agent:down", None, None);
    assert_eq!(send(closed_addr, &f.headers(URI, BODY), BODY).await.0, 200);

    drop(redis);
    let body2 = br#"{"model":"qwen/qwen3-32b","messages":[{"role":"user","content":"2"}]}"#;
    let started = Instant::now();
    let (status, text) = send(closed_addr, &f.headers(URI, body2), body2).await;
    assert_eq!(
        (status, code(&text).as_str()),
        (503, "replay_store_unavailable")
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(metrics.replay_store_failure_count(false), 1);
    assert!(passport_gate::metrics::render(&registry)
        .contains("passport_gate_replay_store_failures_total{action=\"fail_closed\"} 1"));

    let body3 = br#"{"model":"qwen/qwen3-32b","messages":[{"role":"user","content":"3"}]}"#;
    assert_eq!(send(open_addr, &f.headers(URI, body3), body3).await.0, 200);
    assert_eq!(open_metrics.replay_store_failure_count(true), 1);
}

/// Runs `passport-gate revoke ARGS`.
fn revoke_cli(args: &[&std::ffi::OsStr]) {
    let out = Command::new(env!("CARGO_BIN_EXE_passport-gate"))
        .arg("revoke")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends the request until it is refused as revoked (within 5 s).
async fn until_revoked(addr: SocketAddr, headers: &[(String, String)], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, text) = send(addr, headers, BODY).await;
        if status == 401 {
            assert_eq!(code(&text), "passport_revoked");
            return;
        }
        assert!(Instant::now() < deadline, "{what} never took effect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A file entry reaches the replica watching the file; a shared entry in Redis reaches
/// every replica, and editing the file does not undo it.
async fn revocation_takes_effect_on_file_change_and_across_replicas_on(kind: Kind) {
    if !redis_available() {
        return;
    }
    let redis = Deployment::start(kind).await;
    let f = support::fixture("urn:aps:agent:revoke", None, None);
    let dir = std::env::temp_dir().join(format!("pg-revoke-{kind:?}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("revoked.txt");
    std::fs::write(&file, "# nothing yet\n").unwrap();

    let replica = |with_file: bool| {
        let list = Arc::new(RevocationList::default());
        if with_file {
            list.watch_file(file.clone(), Duration::from_millis(20))
                .unwrap();
        }
        list.watch_redis(
            redis.client(),
            "aps:revoked".into(),
            Duration::from_millis(50),
        );
        let layer = PassportLayer::builder(Config::for_chain("gonka-mainnet"))
            .clock(clock())
            .revocations(Arc::clone(&list))
            .build()
            .unwrap();
        (layer, list)
    };
    let (layer_a, list_a) = replica(true);
    let (layer_b, list_b) = replica(false);
    let a = serve(layer_a).await;
    let b = serve(layer_b).await;
    // Nothing is judged before the shared set has been read once (spec 7.2).
    assert!(
        eventually(Duration::from_secs(5), async || list_a.ready()
            && list_b.ready())
        .await
    );
    let headers = f.headers(URI, BODY);
    assert_eq!(send(a, &headers, BODY).await.0, 200);
    assert_eq!(send(b, &headers, BODY).await.0, 200);

    // A file entry, added with the CLI, reaches replica A without a restart.
    revoke_cli(&[
        "--agent-id".as_ref(),
        "urn:aps:agent:revoke".as_ref(),
        "--file".as_ref(),
        file.as_os_str(),
    ]);
    until_revoked(a, &headers, "the file change").await;
    assert_eq!(
        send(b, &headers, BODY).await.0,
        200,
        "replica B does not watch the file"
    );

    // A shared entry, added to Redis with the CLI (or, where the CLI cannot reach
    // the deployment, with the client the CLI uses), reaches both replicas.
    match &redis.cli_url {
        Some(url) => revoke_cli(&[
            "--principal".as_ref(),
            f.principal_address.as_ref(),
            "--redis".as_ref(),
            url.as_ref(),
        ]),
        None => redis
            .client()
            .sadd("aps:revoked", &format!("principal {}", f.principal_address))
            .await
            .unwrap(),
    }
    until_revoked(b, &headers, "the shared revocation").await;
    // Editing the file back does not undo the shared entry.
    std::fs::write(&file, "").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(send(a, &headers, BODY).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_takes_effect_on_file_change_and_across_replicas() {
    revocation_takes_effect_on_file_change_and_across_replicas_on(Kind::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_takes_effect_across_replicas_sharing_a_redis_with_a_password() {
    revocation_takes_effect_on_file_change_and_across_replicas_on(Kind::Password).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_takes_effect_across_replicas_sharing_a_redis_over_tls() {
    revocation_takes_effect_on_file_change_and_across_replicas_on(Kind::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_takes_effect_across_replicas_sharing_a_redis_cluster() {
    revocation_takes_effect_on_file_change_and_across_replicas_on(Kind::Cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_two_replicas_land_in_one_stream() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start();
    let replica = |agent: &'static str| {
        let queue = AttributionQueue::start(
            64,
            vec![Box::new(
                RedisStreamSink::new(
                    redis.config(),
                    "aps:attribution",
                    StreamBounds {
                        max_entries: 1000,
                        max_bytes: 1 << 30,
                        max_event_bytes: 4096,
                    },
                    passport_gate::metrics::IntCounter::unregistered(),
                )
                .unwrap(),
            )],
            Metrics::new(),
        )
        .unwrap();
        let layer = PassportLayer::builder(Config::for_chain("gonka-mainnet"))
            .clock(clock())
            .attribution(queue.sender())
            .build()
            .unwrap();
        (queue, layer, support::fixture(agent, None, None))
    };
    let (qa, la, fa) = replica("urn:aps:agent:replica-a");
    let (qb, lb, fb) = replica("urn:aps:agent:replica-b");
    let a = serve(la).await;
    let b = serve(lb).await;
    for i in 0..3 {
        let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{i}"}}]}}"#);
        assert_eq!(
            send(a, &fa.headers(URI, body.as_bytes()), body.as_bytes())
                .await
                .0,
            200
        );
        assert_eq!(
            send(b, &fb.headers(URI, body.as_bytes()), body.as_bytes())
                .await
                .0,
            200
        );
    }
    let ra = qa.shutdown(Duration::from_secs(5));
    let rb = qb.shutdown(Duration::from_secs(5));
    assert_eq!(
        (ra.written, ra.sink_failures, rb.written, rb.sink_failures),
        (3, 0, 3, 0)
    );
    let client = redis.client();
    assert_eq!(
        client
            .command(&[b"XLEN", b"aps:attribution"])
            .await
            .unwrap(),
        Reply::Integer(6)
    );
    let Reply::Array(Some(entries)) = client
        .command(&[b"XRANGE", b"aps:attribution", b"-", b"+"])
        .await
        .unwrap()
    else {
        panic!("XRANGE")
    };
    let mut agents: Vec<String> = entries
        .iter()
        .map(|entry| {
            let Reply::Array(Some(parts)) = entry else {
                panic!()
            };
            let Reply::Array(Some(fields)) = &parts[1] else {
                panic!()
            };
            let Reply::Bulk(Some(json)) = &fields[1] else {
                panic!()
            };
            let e: passport_gate::attribution::AttributionEvent =
                serde_json::from_slice(json).unwrap();
            e.agent_id
        })
        .collect();
    agents.sort();
    agents.dedup();
    assert_eq!(
        agents,
        ["urn:aps:agent:replica-a", "urn:aps:agent:replica-b"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_file_written_during_kill_9_verifies_up_to_its_last_complete_line() {
    // The demo's echo upstream, run by the binary (`passport-gate echo`).
    let upstream = support::serve::echo();
    let dir = std::env::temp_dir().join(format!("pg-kill9-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let audit = dir.join("audit.jsonl");
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nupstream = \"http://{}\"\n[agent_envelope]\nenabled = true\nchain_id = \"gonka-mainnet\"\n[attribution]\naudit_file = {:?}\naudit_fsync = \"never\"\n",
            upstream.addr,
            audit.display().to_string()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_passport-gate"))
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let listen: SocketAddr = {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stderr).lines();
        loop {
            let line = lines.next().unwrap().unwrap();
            if let Some(rest) = line
                .strip_prefix("passport-gate listening on http://")
                .or_else(|| line.strip_prefix("passport-gate listening on https://"))
            {
                std::thread::spawn(move || for _ in lines {});
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        }
    };
    // A passport valid now, and a stream of accepted requests while the gateway is killed.
    let f = support::live("urn:aps:agent:kill9");
    let accepted = std::cell::Cell::new(0u64);
    let load = async {
        for i in 0.. {
            let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{i}"}}]}}"#);
            let headers = vec![
                ("x-agent-passport".to_owned(), f.passport.clone()),
                ("x-agent-sig".to_owned(), f.sign(URI, body.as_bytes())),
            ];
            let mut req = Request::post(format!("http://{listen}{URI}"));
            for (n, v) in &headers {
                req = req.header(n, v);
            }
            match Client::builder(TokioExecutor::new())
                .build_http::<Full<Bytes>>()
                .request(req.body(Full::new(Bytes::from(body))).unwrap())
                .await
            {
                Ok(r) if r.status() == 200 => accepted.set(accepted.get() + 1),
                _ => break,
            }
        }
    };
    // Killed mid-stream once a few dozen requests went through (however loaded the
    // machine is), or after 20 s.
    let killer = async {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while accepted.get() < 40 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Command::new("kill")
            .arg("-9")
            .arg(child.id().to_string())
            .status()
            .unwrap();
    };
    tokio::join!(load, killer);
    let _ = child.wait();
    let accepted = accepted.get();
    assert!(accepted > 10, "only {accepted} requests before the kill");

    let out = Command::new(env!("CARGO_BIN_EXE_passport-gate"))
        .args(["audit", "verify"])
        .arg(&audit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let verified: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("ok: ")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap();
    assert!(
        verified > 0 && verified <= accepted,
        "{verified} of {accepted}: {text}"
    );
}

/// The gateway's TOML for a Redis replay store at `url`, plus `replay` keys.
fn gateway_with_redis_replay(upstream: SocketAddr, url: &str, replay: &str) -> String {
    support::serve::config(
        upstream,
        &format!(
            "replay_protection = true\n[replay]\nstore = \"redis\"\n{replay}\n[redis]\nurl = \"{url}\"\ntimeout_ms = 500\n"
        ),
    )
}

/// Runs `serve` with `toml` until it exits (within 20 s); returns its exit code and
/// stderr lines.
fn serve_until_exit(name: &str, toml: &str) -> (Option<i32>, Vec<String>) {
    let (mut child, lines, _dir) = support::serve::spawn(name, toml, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the gateway did not exit: {:?}",
                lines.try_iter().collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), support::serve::lines_until_closed(&lines))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_can_forget_records_is_refused_at_startup_unless_accepted() {
    if !redis_available() {
        return;
    }
    let up = support::serve::upstream().await;
    for (settings, named) in [
        (
            vec!["--maxmemory-policy", "allkeys-lru"],
            "maxmemory-policy is allkeys-lru",
        ),
        (
            vec!["--maxmemory-policy", "volatile-ttl"],
            "maxmemory-policy is volatile-ttl",
        ),
        (vec!["--save", "", "--appendonly", "no"], "no persistence"),
        (
            vec!["--save", "3600 1", "--appendonly", "no"],
            "only RDB snapshots",
        ),
        // Managed Redis often forbids CONFIG: the settings are unknown, hence refused.
        (
            vec![
                "--appendonly",
                "yes",
                "--user",
                "default",
                "on",
                "nopass",
                "~*",
                "&*",
                "+@all",
                "-config",
            ],
            "eviction policy unknown",
        ),
    ] {
        let redis = RedisServer::start_with(&settings);
        let (code, lines) = serve_until_exit(
            "forgetful",
            &gateway_with_redis_replay(up.addr, &redis.url(), ""),
        );
        assert_ne!(code, Some(0));
        assert!(
            lines
                .iter()
                .any(|l| l.contains(named) && l.contains("noeviction")),
            "{named}: {lines:?}"
        );
    }
    // Explicitly accepted: it serves, says so loudly and counts it.
    let redis = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let gw = support::serve::start(
        "forgetful-accepted",
        &gateway_with_redis_replay(up.addr, &redis.url(), "accept_forgetful_redis = true"),
    );
    let f = support::live("urn:aps:agent:accepted");
    let uri = "/v1/completions";
    assert_eq!(
        support::post(gw.listen, uri, &f.headers(uri, BODY), BODY)
            .await
            .0,
        200
    );
    assert!(
        gw.metric("passport_gate_replay_store_forgetful_connections_total")
            .await
            >= 1.0
    );
    // The warning comes before the listening line.
    let (mut child, lines, _dir) = support::serve::spawn(
        "forgetful-warned",
        &gateway_with_redis_replay(up.addr, &redis.url(), "accept_forgetful_redis = true"),
        &[],
    );
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let done = line.contains("listening on");
        seen.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter()
            .any(|l| l.contains("CAN SILENTLY FORGET") && l.contains("allkeys-lru")),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_starts_evicting_is_refused_on_reconnect_even_when_failing_open() {
    if !redis_available() {
        return;
    }
    let up = support::serve::upstream().await;
    let redis = RedisServer::start_with(&["--appendonly", "yes"]);
    let gw = support::serve::start(
        "evicting-later",
        &gateway_with_redis_replay(up.addr, &redis.url(), "fail_open = true"),
    );
    let f = support::live("urn:aps:agent:reconnect");
    let uri = "/v1/completions";
    let body = |n: usize| format!(r#"{{"model":"m","prompt":"{n}"}}"#).into_bytes();
    let b = body(0);
    assert_eq!(
        support::post(gw.listen, uri, &f.headers(uri, &b), &b)
            .await
            .0,
        200
    );

    let admin = redis.client();
    admin
        .command(&[b"CONFIG", b"SET", b"maxmemory-policy", b"allkeys-lru"])
        .await
        .unwrap();
    admin
        .command(&[b"CLIENT", b"KILL", b"TYPE", b"normal"])
        .await
        .unwrap();
    // The next connection reads the new policy and is refused, fail-open or not.
    let mut refused = None;
    for n in 1..=5 {
        let b = body(n);
        let (status, text) = support::post(gw.listen, uri, &f.headers(uri, &b), &b).await;
        if status == 503 {
            refused = Some(code(&text));
            break;
        }
    }
    assert_eq!(refused.as_deref(), Some("replay_store_unavailable"));
    let b = body(9);
    assert_eq!(
        support::post(gw.listen, uri, &f.headers(uri, &b), &b)
            .await
            .0,
        503
    );
    assert!(gw
        .drain_lines()
        .iter()
        .any(|l| l.contains("maxmemory-policy is allkeys-lru")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_redis_one_request_is_accepted_once_and_each_principal_has_a_quota() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start();
    let replica = || {
        PassportLayer::builder(replaying())
            .clock(clock())
            .replay_store(Arc::new(
                RedisReplayStore::new(redis.client(), "q:").records_per_principal(2),
            ))
            .build()
            .unwrap()
    };
    let a = serve(replica()).await;
    let b = serve(replica()).await;
    let f = support::fixture("urn:aps:agent:quota", None, None);
    // Two replicas, one request at once: exactly one acceptance.
    let headers = f.headers(URI, BODY);
    let (ra, rb) = tokio::join!(send(a, &headers, BODY), send(b, &headers, BODY));
    let mut statuses = [ra.0, rb.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 401]);
    let other = br#"{"model":"qwen/qwen3-32b","messages":[{"role":"user","content":"2"}]}"#;
    assert_eq!(send(b, &f.headers(URI, other), other).await.0, 200);
    let third = br#"{"model":"qwen/qwen3-32b","messages":[{"role":"user","content":"3"}]}"#;
    let (status, text) = send(a, &f.headers(URI, third), third).await;
    assert_eq!(
        (status, code(&text).as_str()),
        (429, "replay_quota_exceeded")
    );
    // The quota is per principal: the holder of another principal key is served.
    let other = support::fixture_of(
        0x71,
        "urn:aps:agent:quota",
        None,
        None,
        Timestamp::parse("2026-05-21T11:59:00Z").unwrap(),
    );
    let headers = other.headers(URI, third);
    assert_eq!(send(a, &headers, third).await.0, 200);
}

/// Spec section 7.1 with a Redis store shared by two replicas of the real binary: a copy
/// sent to the other replica while the first is forwarded is refused, and a 503 releases the record and its place in the
/// principal's quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_redis_a_503_releases_the_record_and_its_quota_and_a_copy_meanwhile_is_refused() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start();
    let up = support::serve::scripted_upstream(vec![(503, Duration::from_millis(600))]).await;
    let toml = gateway_with_redis_replay(
        up.addr,
        &redis.url(),
        "accept_forgetful_redis = true\nrelease_on_retryable = true",
    )
    .replace(
        "replay_protection = true\n",
        "replay_protection = true\nreplay_records_per_principal = 1\n",
    );
    let gw = support::serve::start("redis-retry", &toml);
    let replica = support::serve::start("redis-retry-2", &toml);
    let f = support::live("urn:aps:agent:redis-retry");
    let headers = f.headers(URI, BODY);
    // The copy goes to another replica while the first is held by the upstream.
    let (first, copy) = tokio::join!(send(gw.listen, &headers, BODY), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        send(replica.listen, &headers, BODY).await
    });
    assert_eq!(first.0, 503, "{first:?}");
    assert_eq!((copy.0, code(&copy.1).as_str()), (401, "request_replayed"));
    // The released record gave its place in the quota of one back: another request fits.
    let other = br#"{"model":"qwen/qwen3-32b","messages":[{"role":"user","content":"2"}]}"#;
    assert_eq!(
        send(replica.listen, &f.headers(URI, other), other).await.0,
        200
    );
    // And the first is no longer recorded: it is judged by the quota, not as a replay.
    let (status, text) = send(replica.listen, &headers, BODY).await;
    assert_eq!(
        (status, code(&text).as_str()),
        (429, "replay_quota_exceeded")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_keeps_replay_records_in_a_redis_over_tls_with_a_private_ca() {
    if !redis_available() {
        return;
    }
    let port = free_port();
    let dir = support::serve::workdir(&format!("redis-gw-tls-files-{port}"));
    let ca = tls_files(&dir);
    let _server = RedisServer::start_tls(
        port,
        &dir,
        &ca,
        false,
        &["--appendonly", "yes", "--requirepass", PASSWORD],
    );
    let up = support::serve::upstream().await;
    let toml = gateway_with_redis_replay(
        up.addr,
        &format!("rediss://:{PASSWORD}@localhost:{port}/0"),
        "",
    ) + &format!("ca_file = {:?}\n", ca.display().to_string());
    let gw = support::serve::start("redis-gw-tls", &toml);
    let f = support::live("urn:aps:agent:gw-tls");
    let uri = "/v1/completions";
    let headers = f.headers(uri, BODY);
    assert_eq!(support::post(gw.listen, uri, &headers, BODY).await.0, 200);
    let (status, text) = support::post(gw.listen, uri, &headers, BODY).await;
    assert_eq!((status, code(&text).as_str()), (401, "request_replayed"));
}

// Stores the gateway fails closed on (issue 22 items 8 and 10, issue 23 readiness).

/// `/readyz`: its status and body.
async fn readyz(gw: &support::serve::Gateway) -> (u16, String) {
    let resp = support::serve::send(gw.admin, "GET", "/readyz", &[], b"").await;
    let status = resp.status().as_u16();
    (status, support::serve::text(resp).await)
}

/// Waits up to `wait` for `cond`.
async fn eventually(wait: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A gateway polling the shared revocation set of the Redis at `port` every 200 ms,
/// plus `revocation` keys.
fn gateway_with_redis_revocations(upstream: SocketAddr, port: u16, revocation: &str) -> String {
    support::serve::config(
        upstream,
        &format!(
            "[revocation]\nredis = true\nredis_poll_ms = 200\n{revocation}\n[redis]\nurl = \"redis://127.0.0.1:{port}\"\ntimeout_ms = 300\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_in_redis_fail_closed_until_read_and_survive_a_restart_without_persistence() {
    if !redis_available() {
        return;
    }
    let port = free_port();
    let up = support::serve::upstream().await;
    // Started while Redis is down: nothing can be judged yet.
    let gw = support::serve::start(
        "revocations-redis-down",
        &gateway_with_redis_revocations(up.addr, port, ""),
    );
    let f = support::live("urn:aps:agent:revoked-while-down");
    let uri = "/v1/completions";
    let (status, text) = support::post(gw.listen, uri, &f.headers(uri, BODY), BODY).await;
    assert_eq!(
        (status, code(&text).as_str()),
        (503, "revocations_unavailable"),
        "{text}"
    );
    let (status, body) = readyz(&gw).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("revocations: the shared set has not been read"),
        "{body}"
    );

    // Redis comes up with AOF and the principal revoked.
    let redis = RedisServer::start_on(
        port,
        &["--port", &port.to_string()],
        &["--appendonly", "yes"],
    );
    redis
        .client()
        .sadd("aps:revoked", &format!("principal {}", f.principal_address))
        .await
        .unwrap();
    let revoked = async || {
        let (status, text) = support::post(gw.listen, uri, &f.headers(uri, BODY), BODY).await;
        (status, code(&text))
    };
    assert!(
        eventually(Duration::from_secs(5), async || revoked().await
            == (401, "passport_revoked".to_owned()))
        .await
    );
    assert!(eventually(Duration::from_secs(5), async || readyz(&gw).await.0 == 200).await);
    // A second gateway that accepts a forgetful Redis for its revocations.
    let accepting = support::serve::start(
        "revocations-accepting",
        &gateway_with_redis_revocations(up.addr, port, "accept_forgetful_redis = true"),
    );
    assert!(
        eventually(Duration::from_secs(5), async || support::post(
            accepting.listen,
            uri,
            &f.headers(uri, BODY),
            BODY
        )
        .await
        .0 == 401)
        .await
    );

    // Restarted without persistence: the set is gone. The gateway refuses the server,
    // keeps the revocations it read, and is not ready.
    drop(redis);
    let _redis = RedisServer::start_on(
        port,
        &["--port", &port.to_string()],
        &["--save", "", "--appendonly", "no"],
    );
    assert!(
        eventually(Duration::from_secs(5), async || {
            let (status, body) = readyz(&gw).await;
            status == 503 && body.contains("appendonly yes")
        })
        .await,
        "{:?}",
        readyz(&gw).await
    );
    assert_eq!(revoked().await, (401, "passport_revoked".to_owned()));
    // The refusal is logged with its cause (a changed cause within a second of the
    // last line waits for the second to pass).
    let mut seen = Vec::new();
    assert!(
        eventually(Duration::from_secs(5), async || {
            seen.extend(gw.drain_lines());
            seen.iter().any(|l| {
                l.contains("can silently forget revocations")
                    && l.contains("revocation.accept_forgetful_redis")
            })
        })
        .await,
        "{seen:#?}"
    );
    // The gateway that accepts such a Redis takes the empty set, and says so.
    assert!(
        eventually(Duration::from_secs(5), async || accepting
            .metric("passport_gate_revocation_set_emptied_total")
            .await
            == 1.0)
        .await
    );
    assert!(accepting
        .drain_lines()
        .iter()
        .any(|l| l.contains("shared revocation set is now empty")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_redis_that_can_forget_the_set_is_refused_at_startup() {
    if !redis_available() {
        return;
    }
    let up = support::serve::upstream().await;
    let redis = RedisServer::start_with(&["--save", "", "--appendonly", "no"]);
    let (code, lines) = serve_until_exit(
        "revocations-forgetful",
        &gateway_with_redis_revocations(up.addr, redis.port, ""),
    );
    assert_ne!(code, Some(0));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("revocation.redis: Redis at")
                && l.contains("no persistence")
                && l.contains("appendonly yes")
                && !l.contains("AOF or RDB")),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_not_ready_while_the_replay_redis_is_down_and_ready_when_it_is_back() {
    if !redis_available() {
        return;
    }
    let up = support::serve::upstream().await;
    let redis = RedisServer::start_with(&["--appendonly", "yes"]);
    let port = redis.port;
    let gw = support::serve::start(
        "readyz-replay-redis",
        &gateway_with_redis_replay(up.addr, &redis.url(), ""),
    );
    assert!(eventually(Duration::from_secs(5), async || readyz(&gw).await.0 == 200).await);
    // /livez never looks at a store.
    let live = support::serve::send(gw.admin, "GET", "/livez", &[], b"").await;
    assert_eq!(live.status(), 200);

    drop(redis);
    assert!(
        eventually(Duration::from_secs(5), async || {
            let (status, body) = readyz(&gw).await;
            status == 503 && body.contains("replay store: failing")
        })
        .await,
        "{:?}",
        readyz(&gw).await
    );
    let live = support::serve::send(gw.admin, "GET", "/livez", &[], b"").await;
    assert_eq!(live.status(), 200);
    // The failed probe is logged at WARN with its cause.
    assert!(gw.drain_lines().iter().any(|l| l.contains("WARN")
        && l.contains("readiness probe failed")
        && l.contains(&port.to_string())),);

    let _redis = RedisServer::start_on(
        port,
        &["--port", &port.to_string()],
        &["--appendonly", "yes"],
    );
    assert!(eventually(Duration::from_secs(5), async || readyz(&gw).await.0 == 200).await);
}

/// The limit store's Redis is watched by `/readyz` like the replay store's: while it is
/// down and limits fail closed (every limited request is refused 503
/// `limits_unavailable`), the gateway is not ready and says which store; once it is back,
/// ready again. With `limits.fail_open = true` requests are admitted while it is down,
/// so the gateway stays ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_not_ready_while_the_limit_store_redis_is_down_unless_limits_fail_open() {
    if !redis_available() {
        return;
    }
    let up = support::serve::upstream().await;
    let redis = RedisServer::start_with(&["--appendonly", "yes"]);
    let port = redis.port;
    let toml = |fail_open: bool| {
        support::serve::config(
            up.addr,
            &format!(
                "\n[limits]\nstore = \"redis\"\nfail_open = {fail_open}\n[limits.principal]\nrequests_per_minute = 100\n[redis]\nurl = \"{}\"\ntimeout_ms = 300\n",
                redis.url()
            ),
        )
    };
    let closed = support::serve::start("readyz-limit-redis", &toml(false));
    let open = support::serve::start("readyz-limit-redis-open", &toml(true));
    for gw in [&closed, &open] {
        assert!(
            eventually(Duration::from_secs(5), async || readyz(gw).await.0 == 200).await,
            "{:?}",
            readyz(gw).await
        );
    }
    assert!(readyz(&closed).await.1.contains("limit store: ok"));
    // fail_open: nothing to wait for, so no check.
    assert!(!readyz(&open).await.1.contains("limit store"));

    drop(redis);
    assert!(
        eventually(Duration::from_secs(5), async || {
            let (status, body) = readyz(&closed).await;
            status == 503 && body.contains("limit store: failing")
        })
        .await,
        "{:?}",
        readyz(&closed).await
    );
    let agent = support::live_of(0x76, "urn:aps:agent:readyz-limits");
    let body = limited_body(0, 5);
    let uri = "/v1/completions";
    let (status, text) = support::post(closed.listen, uri, &agent.headers(uri, &body), &body).await;
    assert_eq!((status, code(&text).as_str()), (503, "limits_unavailable"));
    // The gateway that fails open stays ready, and admits.
    assert_eq!(readyz(&open).await.0, 200);
    let (status, text) = support::post(open.listen, uri, &agent.headers(uri, &body), &body).await;
    assert_eq!(status, 200, "{text}");
    assert!(closed.drain_lines().iter().any(|l| l.contains("WARN")
        && l.contains("readiness probe failed")
        && l.contains("limit store")));

    let _redis = RedisServer::start_on(
        port,
        &["--port", &port.to_string()],
        &["--appendonly", "yes"],
    );
    assert!(
        eventually(Duration::from_secs(5), async || readyz(&closed).await.0
            == 200)
        .await,
        "{:?}",
        readyz(&closed).await
    );
}

/// A passport of the fixture principal and agent, issued now and valid `seconds`.
fn short_lived(agent_id: &str, seconds: i64) -> support::Fixture {
    use passport_core::crypto::{AgentSecret, PrincipalSecret};
    let principal = PrincipalSecret::from_bytes(&[0x61; 32]).unwrap();
    let agent = AgentSecret::from_bytes(&[0x62; 32]);
    let now = Timestamp::from_unix_seconds(Timestamp::now().unix_seconds());
    let spec = passport_core::mint::PassportSpec {
        chain_id: support::CHAIN.into(),
        agent_id: agent_id.into(),
        agent_key: agent.public_key(),
        principal_key: principal.public_key(),
        address_prefix: "gonka".into(),
        issued_at: now,
        expires_at: now.plus_seconds(seconds),
        not_before: None,
        allowed_models: None,
        beneficiary: None,
    };
    support::Fixture {
        passport: spec.mint(&principal, 3600).unwrap(),
        agent,
        principal_address: principal.public_key().address("gonka").unwrap(),
    }
}

/// Fills `redis` with 16 KiB values until it refuses a write at `maxmemory`, then
/// lowers `maxmemory` to 1 MiB, well below the data, so that the state holds once the
/// refused command's query buffer and other transient buffers are freed (`used_memory`
/// counts the AOF buffer, which the `maxmemory` check leaves out). Returns how many
/// values were written.
async fn fill_to_maxmemory(redis: &Redis) -> usize {
    let value = vec![b'x'; 16 * 1024];
    let mut written = 0;
    loop {
        let key = format!("filler:{written}");
        match redis.command(&[b"SET", key.as_bytes(), &value]).await {
            Ok(_) => written += 1,
            Err(passport_gate::redis_client::RedisError::OutOfMemory(_)) => break,
            Err(e) => panic!("{e}"),
        }
    }
    redis
        .command(&[b"CONFIG", b"SET", b"maxmemory", b"1mb"])
        .await
        .unwrap();
    written
}

async fn integer(redis: &Redis, args: &[&[u8]]) -> i64 {
    match redis.command(args).await.unwrap() {
        Reply::Integer(n) => n,
        other => panic!("{other:?}"),
    }
}

/// Issue 22 item 10: Redis lets a script's writes through once one of them changed
/// something, so the replay script's first write must be one Redis refuses at
/// `maxmemory`. Here the principal's quota set holds an expired member, which the old
/// script pruned first (a write), letting the record through a full Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_maxmemory_the_replay_store_refuses_with_503_and_writes_nothing() {
    if !redis_available() {
        return;
    }
    let up = support::serve::upstream().await;
    let redis = RedisServer::start_with(&[
        "--appendonly",
        "yes",
        "--maxmemory",
        "4mb",
        "--maxmemory-policy",
        "noeviction",
    ]);
    // A generous timeout: a slow answer under a loaded machine must not pass for a full
    // Redis (503 replay_store_unavailable).
    let toml = gateway_with_redis_replay(up.addr, &redis.url(), "")
        .replace("clock_skew_seconds = 300", "clock_skew_seconds = 1")
        .replace("timeout_ms = 500", "timeout_ms = 3000");
    let gw = support::serve::start("replay-maxmemory", &toml);
    let uri = "/v1/completions";
    let body = |n: usize| format!(r#"{{"model":"m","prompt":"{n}"}}"#).into_bytes();
    // One record that expires in 3 s, one that lives 30 minutes (and keeps the
    // principal's quota set alive).
    let brief = short_lived("urn:aps:agent:maxmemory", 2);
    let b = body(0);
    assert_eq!(
        support::post(gw.listen, uri, &brief.headers(uri, &b), &b)
            .await
            .0,
        200
    );
    let f = support::live("urn:aps:agent:maxmemory");
    let b = body(1);
    assert_eq!(
        support::post(gw.listen, uri, &f.headers(uri, &b), &b)
            .await
            .0,
        200
    );
    tokio::time::sleep(Duration::from_secs(4)).await;

    let admin = redis.client();
    let filled = fill_to_maxmemory(&admin).await;
    assert!(filled > 0);
    let quota_set = format!("aps:replay-quota:{{{}}}", f.principal_address);
    let keys_before = integer(&admin, &[b"DBSIZE"]).await;
    let members_before = integer(&admin, &[b"ZCARD", quota_set.as_bytes()]).await;
    assert_eq!(members_before, 2);
    for n in 2..6 {
        let b = body(n);
        let (status, text) = support::post(gw.listen, uri, &f.headers(uri, &b), &b).await;
        assert_eq!(
            (status, code(&text).as_str()),
            (503, "replay_store_full"),
            "{text}"
        );
    }
    assert_eq!(integer(&admin, &[b"DBSIZE"]).await, keys_before);
    assert_eq!(
        integer(&admin, &[b"ZCARD", quota_set.as_bytes()]).await,
        members_before
    );
    assert!(
        gw.metric("passport_gate_redis_out_of_memory_total{store=\"replay\"}")
            .await
            >= 4.0
    );
    // Room again: served.
    admin
        .command(&[b"CONFIG", b"SET", b"maxmemory", b"64mb"])
        .await
        .unwrap();
    let b = body(9);
    assert_eq!(
        support::post(gw.listen, uri, &f.headers(uri, &b), &b)
            .await
            .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_entries_are_bounded_in_size_and_the_stream_in_bytes() {
    if !redis_available() {
        return;
    }
    let up = support::serve::upstream().await;
    let redis = RedisServer::start();
    let toml = support::serve::config(
        up.addr,
        &format!(
            "mode = \"required\"\n[attribution]\nredis_stream = \"aps:events\"\nredis_stream_max_event_bytes = 1024\nredis_stream_max_bytes = 65536\n[redis]\nurl = \"{}\"\n",
            redis.url()
        ),
    );
    let gw = support::serve::start("stream-bounds", &toml);
    let f = support::live("urn:aps:agent:stream-bounds");
    // Accepted requests to 8 KB paths: each event would be over 8 KB.
    let long = "a".repeat(8_000);
    let mut sent = 0;
    for n in 0..200 {
        let uri = format!("/v1/{long}{n}");
        let b = format!(r#"{{"model":"m","prompt":"{n}"}}"#).into_bytes();
        let (status, text) = support::post(gw.listen, &uri, &f.headers(&uri, &b), &b).await;
        assert_eq!(status, 200, "{text}");
        sent += 1;
    }
    let admin = redis.client();
    assert!(
        eventually(Duration::from_secs(10), async || gw
            .metric("passport_gate_attribution_events_emitted_total")
            .await
            >= f64::from(sent))
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let entries = match admin
        .command(&[b"XRANGE", b"aps:events", b"-", b"+"])
        .await
        .unwrap()
    {
        Reply::Array(Some(entries)) => entries,
        other => panic!("{other:?}"),
    };
    // maxlen = 65536 / (2 * 1024 + 256) = 28, trimmed in whole nodes.
    assert!(
        !entries.is_empty() && entries.len() < 100,
        "{}",
        entries.len()
    );
    for entry in &entries {
        let Reply::Array(Some(parts)) = entry else {
            panic!("{entry:?}")
        };
        let Reply::Array(Some(fields)) = &parts[1] else {
            panic!("{entry:?}")
        };
        let Reply::Bulk(Some(json)) = &fields[1] else {
            panic!("{entry:?}")
        };
        assert!(json.len() <= 1024, "{}", json.len());
        let event: serde_json::Value = serde_json::from_slice(json).unwrap();
        assert_eq!(event["cut"], true);
        assert!(event["path"].as_str().unwrap().ends_with('…'));
    }
    let bytes = integer(
        &admin,
        &[b"MEMORY", b"USAGE", b"aps:events", b"SAMPLES", b"0"],
    )
    .await;
    assert!(bytes <= 65_536, "{bytes} bytes");
}

/// Two `serve` replicas with `[limits]` on the shared Redis of `redis` in front of
/// `upstream`, with `limits` added to the `[limits]` table.
fn limited_replicas(
    name: &str,
    upstream: SocketAddr,
    redis: &Deployment,
    limits: &str,
) -> [support::serve::Gateway; 2] {
    let redis_toml = redis.redis_toml.as_deref().expect("a [redis] section");
    let toml = support::serve::config(
        upstream,
        &format!(
            "\n[limits]\nstore = \"redis\"\naccept_forgetful_redis = true\n{limits}\n[redis]\n{redis_toml}timeout_ms = 2000\n"
        ),
    );
    [
        support::serve::start(&format!("{name}-a"), &toml),
        support::serve::start(&format!("{name}-b"), &toml),
    ]
}

/// A chat body asking `max_tokens`, made distinct by `n`.
fn limited_body(n: usize, max_tokens: u64) -> Vec<u8> {
    format!(
        r#"{{"model":"qwen/qwen3-32b","max_tokens":{max_tokens},"messages":[{{"role":"user","content":"request {n:04}"}}]}}"#
    )
    .into_bytes()
}

/// One token budget and one request rate across two replicas: requests sent in turn to
/// each, and twenty at once across both, never take more than the principal's budget.
/// The upstream's answers carry no usage, so each keeps its whole reservation.
async fn one_budget_across_two_gateway_replicas(kind: Kind) {
    if !redis_available() {
        return;
    }
    let redis = Deployment::start(kind).await;
    let up = support::serve::upstream().await;
    let uri = "/v1/completions";
    let replicas = limited_replicas(
        &format!("limits-{kind:?}"),
        up.addr,
        &redis,
        "[limits.principal]\ntokens_per_day = 1000\n[limits.agent]\nrequests_per_minute = 30\n",
    );
    let addrs = [replicas[0].listen, replicas[1].listen];
    // The agent's rate: thirty requests per minute, whichever replica they reach.
    let rated = support::live_of(0x71, "urn:aps:agent:rated");
    let mut statuses = Vec::new();
    for n in 0..32 {
        let body = limited_body(n, 1);
        let (status, text) =
            support::post(addrs[n % 2], uri, &rated.headers(uri, &body), &body).await;
        statuses.push((status, code(&text)));
    }
    let ok = statuses.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(ok, 30, "{statuses:?}");
    assert!(statuses[30..]
        .iter()
        .all(|(s, c)| *s == 429 && c == "rate_limit_exceeded"));
    // The principal's tokens: each request reserves a quarter of its body plus 200.
    let spender = support::live_of(0x72, "urn:aps:agent:spender");
    let each = (limited_body(0, 200).len() as u64).div_ceil(4) + 200;
    let calls_before = up.calls.load(std::sync::atomic::Ordering::SeqCst);
    let sent: Vec<_> = (0..20)
        .map(|n| {
            let body = limited_body(n, 200);
            let headers = spender.headers(uri, &body);
            let addr = addrs[n % 2];
            tokio::spawn(async move { support::post(addr, uri, &headers, &body).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for s in sent {
        let (status, text) = s.await.unwrap();
        outcomes.push((status, code(&text)));
    }
    let ok = outcomes.iter().filter(|(s, _)| *s == 200).count() as u64;
    assert_eq!(ok, 1000 / each, "{each} each: {outcomes:?}");
    assert!(outcomes
        .iter()
        .all(|(s, c)| *s == 200 || (*s == 429 && c == "insufficient_quota")));
    assert_eq!(
        up.calls.load(std::sync::atomic::Ordering::SeqCst) - calls_before,
        ok as usize,
        "a refused request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_budget_across_two_gateway_replicas_sharing_redis() {
    one_budget_across_two_gateway_replicas(Kind::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_budget_across_two_gateway_replicas_sharing_a_redis_cluster() {
    one_budget_across_two_gateway_replicas(Kind::Cluster).await;
}

/// With the limit store unreachable, a limited request is refused with 503
/// `limits_unavailable` (never forwarded), unless `limits.fail_open`; both are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_limit_store_fails_closed_unless_told_to_fail_open() {
    let up = support::serve::upstream().await;
    let uri = "/v1/completions";
    let dead = free_port();
    let agent = support::live_of(0x73, "urn:aps:agent:store");
    for (fail_open, status, action) in [(false, 503, "fail_closed"), (true, 200, "fail_open")] {
        let toml = support::serve::config(
            up.addr,
            &format!(
                "\n[limits]\nstore = \"redis\"\nfail_open = {fail_open}\n[limits.principal]\nrequests_per_minute = 10\n[redis]\nurl = \"redis://127.0.0.1:{dead}\"\ntimeout_ms = 200\n"
            ),
        );
        let gw = support::serve::start(&format!("limits-dead-{fail_open}"), &toml);
        let body = limited_body(usize::from(fail_open), 10);
        let calls = up.calls.load(std::sync::atomic::Ordering::SeqCst);
        let (got, text) = support::post(gw.listen, uri, &agent.headers(uri, &body), &body).await;
        assert_eq!(got, status, "{text}");
        if !fail_open {
            assert_eq!(code(&text), "limits_unavailable");
            assert_eq!(up.calls.load(std::sync::atomic::Ordering::SeqCst), calls);
        }
        let sample = format!("passport_gate_limit_store_failures_total{{action=\"{action}\"}}");
        assert_eq!(gw.metric(&sample).await, 1.0, "{sample}");
    }
}

/// The limit store's Redis gets the replay store's durability check: one that can
/// forget counters refuses startup, naming `limits.store`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgetful_redis_is_refused_for_limits_at_startup() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start();
    let toml = support::serve::config(
        "127.0.0.1:9".parse().unwrap(),
        &format!(
            "\n[limits]\nstore = \"redis\"\n[limits.principal]\nrequests_per_minute = 10\n[redis]\nurl = \"{}\"\n",
            redis.url()
        ),
    );
    let (code, lines) = serve_until_exit("limits-forgetful", &toml);
    assert_ne!(code, Some(0));
    assert!(
        lines.iter().any(|l| l.contains("limits.store")
            && l.contains("limit counters")
            && l.contains("limits.accept_forgetful_redis")),
        "{lines:?}"
    );
}

/// In Redis, settlement returns the unused part of a reservation and gives the in-flight
/// slot back, in one server and in a cluster.
async fn in_redis_settlement_returns_the_unused_part(kind: Kind) {
    use passport_gate::limits::{Ask, LimitStore, Quota, RedisLimitStore, Verdict};
    if !redis_available() {
        return;
    }
    let redis = Deployment::start(kind).await;
    let store = RedisLimitStore::new(redis.client(), "test:");
    let quota = Quota {
        concurrent_requests: 1,
        tokens_per_day: 1000,
        ..Quota::default()
    };
    let ask = |id| Ask {
        principal: ("gonka1settle", quota),
        agent: ("gonka1settle/agent", Quota::default()),
        tokens: 600,
        request_id: id,
    };
    let Verdict::Admitted(ticket, standing) = store.admit(ask(1)).await.unwrap() else {
        panic!("refused")
    };
    assert_eq!(standing.tokens.map(|g| g.remaining), Some(400));
    let Verdict::Refused(l) = store.admit(ask(2)).await.unwrap() else {
        panic!("admitted beyond one in flight")
    };
    assert_eq!(l.reason.code(), "rate_limit_exceeded");
    // Settlements leave the request path: the ticket is queued, then written.
    assert!(store.settle(ticket, 100).is_none());
    store.flush(Duration::from_secs(5)).await;
    let Verdict::Admitted(_, standing) = store.admit(ask(3)).await.unwrap() else {
        panic!("refused after settlement")
    };
    assert_eq!(standing.tokens.map(|g| g.remaining), Some(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_redis_settlement_returns_the_unused_part_of_a_reservation() {
    in_redis_settlement_returns_the_unused_part(Kind::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_redis_cluster_settlement_returns_the_unused_part_of_a_reservation() {
    in_redis_settlement_returns_the_unused_part(Kind::Cluster).await;
}

/// A settlement written twice (a retry after its reply was lost) counts once, and a
/// ticket released after another request of the same principal was judged in the same
/// script call still gives everything back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_sent_twice_counts_once() {
    use passport_gate::limits::{Ask, LimitStore, Quota, RedisLimitStore, Verdict};
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start();
    let store = RedisLimitStore::new(redis.client(), "twice:");
    let quota = Quota {
        tokens_per_day: 1000,
        ..Quota::default()
    };
    let ask = |id| Ask {
        principal: ("gonka1twice", quota),
        agent: ("gonka1twice/agent", Quota::default()),
        tokens: 600,
        request_id: id,
    };
    let Verdict::Admitted(ticket, _) = store.admit(ask(1)).await.unwrap() else {
        panic!("refused")
    };
    // Used 100 of 600: 500 come back, once.
    assert!(store.settle(ticket.clone(), 100).is_none());
    assert!(store.settle(ticket, 100).is_none());
    store.flush(Duration::from_secs(5)).await;
    let Verdict::Admitted(_, standing) = store.admit(ask(2)).await.unwrap() else {
        panic!("refused after settlement")
    };
    assert_eq!(standing.tokens.map(|g| g.remaining), Some(300));
}

/// Twenty admissions of one principal at once, through one replica's lane (one script
/// call judging several of them), never take more than the budget, and give it all back
/// when released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admissions_judged_in_one_call_never_take_more_than_the_budget() {
    use passport_gate::limits::{Ask, LimitStore, Quota, RedisLimitStore, Verdict};
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start();
    let store = Arc::new(RedisLimitStore::new(redis.client(), "lane:"));
    let quota = Quota {
        concurrent_requests: 5,
        tokens_per_day: 1000,
        ..Quota::default()
    };
    let agents: Vec<String> = (0..20).map(|n| format!("gonka1lane/agent-{n}")).collect();
    let run = |round: u64| {
        let tasks: Vec<_> = (0..20u64)
            .map(|n| {
                let (store, agent) = (Arc::clone(&store), agents[n as usize].clone());
                tokio::spawn(async move {
                    store
                        .admit(Ask {
                            principal: ("gonka1lane", quota),
                            agent: (&agent, Quota::default()),
                            tokens: 150,
                            request_id: round * 100 + n,
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        async move {
            let mut tickets = Vec::new();
            for t in tasks {
                if let Verdict::Admitted(ticket, _) = t.await.unwrap() {
                    tickets.push(ticket);
                }
            }
            tickets
        }
    };
    // Five in flight at most, and 6 x 150 tokens fit 1000: five are admitted.
    let tickets = run(1).await;
    assert_eq!(tickets.len(), 5, "{tickets:?}");
    for t in tickets {
        assert!(store.settle(t, 0).is_none());
    }
    store.flush(Duration::from_secs(5)).await;
    // Released: the slots and the tokens are back.
    assert_eq!(run(2).await.len(), 5);
}

/// A settlement that cannot be written (Redis gone) is retried, then counted, never
/// dropped silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_that_cannot_be_written_is_counted() {
    use passport_gate::limits::{Ask, LimitStore, Quota, RedisLimitStore, Verdict};
    use passport_gate::metrics::IntCounter;
    if !redis_available() {
        return;
    }
    let mut redis = RedisServer::start();
    let failed = IntCounter::unregistered();
    let store =
        RedisLimitStore::new(redis.client(), "gone:").count_failed_settlements_on(failed.clone());
    let Verdict::Admitted(ticket, _) = store
        .admit(Ask {
            principal: (
                "gonka1gone",
                Quota {
                    requests_per_minute: 10,
                    ..Quota::default()
                },
            ),
            agent: ("gonka1gone/agent", Quota::default()),
            tokens: 10,
            request_id: 1,
        })
        .await
        .unwrap()
    else {
        panic!("refused")
    };
    let _ = redis.child.kill();
    let _ = redis.child.wait();
    assert!(store.settle(ticket, 5).is_none());
    store.flush(Duration::from_secs(15)).await;
    assert_eq!(failed.get(), 1);
}
