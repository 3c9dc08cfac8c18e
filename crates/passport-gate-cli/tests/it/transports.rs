//! Real transports on loopback: `https://` upstreams (private CA, another name, mTLS),
//! the TLS listener (HTTP/1.1 and HTTP/2 by ALPN, client certificates, a certificate
//! swapped on disk), h2c prior knowledge, and the passport semantics under HTTP/2.
//! Certificates are generated at test time with rcgen.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

use crate::support;

use support::serve::{config, send, start, text, upstream, workdir, Gateway};

const BODY: &[u8] =
    br#"{"model":"qwen/qwen3-32b","messages":[{"role":"user","content":"hi"}],"stream":true}"#;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate authority made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A leaf for `names`, as (certificate PEM, key PEM).
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn roots(pem: &str) -> rustls::RootCertStore {
    let mut r = rustls::RootCertStore::empty();
    for c in certs(pem) {
        r.add(c).unwrap();
    }
    r
}

/// A TLS server config for `leaf`, offering h2 and http/1.1, requiring client
/// certificates from `client_ca` when given.
fn server_tls(leaf: &(String, String), client_ca: Option<&str>) -> rustls::ServerConfig {
    let b = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let b = match client_ca {
        Some(ca) => b.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)),
                provider(),
            )
            .build()
            .unwrap(),
        ),
        None => b.with_no_client_auth(),
    };
    let mut c = b
        .with_single_cert(
            certs(&leaf.0),
            PrivateKeyDer::from_pem_slice(leaf.1.as_bytes()).unwrap(),
        )
        .unwrap();
    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    c
}

/// An `https://` upstream on loopback that answers as [`describing`].
async fn tls_upstream(leaf: &(String, String), client_ca: Option<&str>) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_tls(leaf, client_ca)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let client_cert = tls.get_ref().1.peer_certificates().is_some();
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), describing(client_cert))
                    .await;
            });
        }
    });
    addr
}

/// A service that answers every request with JSON: the protocol version, method, URI
/// and whether the client showed a certificate.
fn describing(
    client_cert: bool,
) -> impl hyper::service::Service<
    http::Request<Incoming>,
    Response = http::Response<Full<Bytes>>,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<
        Output = Result<http::Response<Full<Bytes>>, std::convert::Infallible>,
    > + Send,
> + Clone {
    hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let answer = serde_json::json!({
            "version": format!("{:?}", req.version()),
            "method": req.method().as_str(),
            "uri": req.uri().to_string(),
            "client_cert": client_cert,
            "te": req.headers().get("te").and_then(|v| v.to_str().ok()).map(str::to_owned),
        });
        async move {
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                answer.to_string(),
            ))))
        }
    })
}

/// A cleartext upstream that speaks HTTP/1.1 and HTTP/2 with prior knowledge.
async fn h2c_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), describing(false))
                    .await;
            });
        }
    });
    addr
}

/// A gateway with passports off in front of `upstream_url`, plus `extra` `[server]` keys.
fn plain_gateway(name: &str, upstream_url: &str, extra: &str) -> Gateway {
    start(
        name,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nupstream = \"{upstream_url}\"\nresponse_timeout_ms = 3000\nheader_read_timeout_ms = 1000\n{extra}"
        ),
    )
}

fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// A hyper client that trusts `ca_pem`, speaking h2 (ALPN) or HTTP/1.1.
fn tls_client(ca_pem: &str, h2: bool) -> Client<HttpsConnector<HttpConnector>, Full<Bytes>> {
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(ca_pem))
        .with_no_client_auth();
    let b = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only();
    let connector = if h2 {
        b.enable_http2().build()
    } else {
        b.enable_http1().build()
    };
    Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build(connector)
}

async fn get(
    client: &Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: &str,
) -> http::Response<Incoming> {
    client
        .request(
            http::Request::get(url)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap()
}

async fn json(resp: http::Response<Incoming>) -> serde_json::Value {
    serde_json::from_str(&text(resp).await).unwrap()
}

/// Waits until `cond` holds, at most `wait`.
async fn eventually(wait: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Whether the gateway logs a line with `needle` within a few seconds; the lines
/// seen are printed when it does not.
fn lines_contain(gw: &Gateway, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        seen.extend(gw.drain_lines());
        if seen.iter().any(|l| l.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("{seen:#?}");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_signed_by_the_private_ca_is_reached() {
    let ca = Ca::new("private ca");
    let up = tls_upstream(&ca.leaf(&["localhost"]), None).await;
    let dir = workdir("tls-private-ca-files");
    let ca_file = write(&dir, "ca.pem", &ca.pem());
    let gw = plain_gateway(
        "tls-private-ca",
        &format!("https://localhost:{}", up.port()),
        &format!("upstream_ca_file = {}\n", toml_path(&ca_file)),
    );
    let resp = send(gw.listen, "GET", "/v1/models?x=1", &[], b"").await;
    assert_eq!(resp.status(), 200);
    let seen = json(resp).await;
    assert_eq!(seen["uri"], "/v1/models?x=1");
    assert_eq!(seen["version"], "HTTP/1.1");
    assert_eq!(seen["client_cert"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_with_a_certificate_for_another_name_is_refused_with_502() {
    let ca = Ca::new("private ca");
    let up = tls_upstream(&ca.leaf(&["other.example"]), None).await;
    let dir = workdir("tls-other-name-files");
    let ca_file = write(&dir, "ca.pem", &ca.pem());
    let gw = plain_gateway(
        "tls-other-name",
        &format!("https://localhost:{}", up.port()),
        &format!("upstream_ca_file = {}\n", toml_path(&ca_file)),
    );
    let resp = send(gw.listen, "GET", "/v1/models", &[], b"").await;
    assert_eq!(resp.status(), 502);
    assert!(text(resp).await.contains("upstream_unavailable"));
    assert!(lines_contain(
        &gw,
        "certificate not valid for name \"localhost\""
    ));
    assert_eq!(
        gw.metric("passport_gate_upstream_errors_total{reason=\"tls\"}")
            .await,
        1.0
    );
    assert_eq!(
        gw.metric("passport_gate_tls_handshake_failures_total{peer=\"upstream\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_verified_against_the_webpki_roots_by_default() {
    let ca = Ca::new("private ca");
    let up = tls_upstream(&ca.leaf(&["localhost"]), None).await;
    let gw = plain_gateway(
        "tls-webpki",
        &format!("https://localhost:{}", up.port()),
        "",
    );
    let resp = send(gw.listen, "GET", "/v1/models", &[], b"").await;
    assert_eq!(resp.status(), 502);
    assert!(lines_contain(
        &gw,
        "invalid peer certificate: UnknownIssuer"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_to_the_upstream_presents_the_configured_client_certificate() {
    let ca = Ca::new("private ca");
    let client_ca = Ca::new("client ca");
    let up = tls_upstream(&ca.leaf(&["localhost"]), Some(&client_ca.pem())).await;
    let dir = workdir("tls-mtls-up-files");
    let ca_file = write(&dir, "ca.pem", &ca.pem());
    let (cert, key) = client_ca.leaf(&["gateway.local"]);
    let cert_file = write(&dir, "client.pem", &cert);
    let key_file = write(&dir, "client.key", &key);
    let url = format!("https://localhost:{}", up.port());

    let without = plain_gateway(
        "tls-mtls-without",
        &url,
        &format!("upstream_ca_file = {}\n", toml_path(&ca_file)),
    );
    let resp = send(without.listen, "GET", "/v1/models", &[], b"").await;
    assert_eq!(resp.status(), 502);

    let with = plain_gateway(
        "tls-mtls-with",
        &url,
        &format!(
            "upstream_ca_file = {}\nupstream_client_cert_file = {}\nupstream_client_key_file = {}\n",
            toml_path(&ca_file),
            toml_path(&cert_file),
            toml_path(&key_file)
        ),
    );
    let resp = send(with.listen, "GET", "/v1/models", &[], b"").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(json(resp).await["client_cert"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_http2_speaks_h2_to_an_https_upstream() {
    let ca = Ca::new("private ca");
    let up = tls_upstream(&ca.leaf(&["localhost"]), None).await;
    let dir = workdir("tls-up-h2-files");
    let ca_file = write(&dir, "ca.pem", &ca.pem());
    let gw = plain_gateway(
        "tls-up-h2",
        &format!("https://localhost:{}", up.port()),
        &format!(
            "upstream_ca_file = {}\nupstream_http2 = true\n",
            toml_path(&ca_file)
        ),
    );
    let resp = send(gw.listen, "GET", "/v1/models", &[], b"").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(json(resp).await["version"], "HTTP/2.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_http2_speaks_h2_with_prior_knowledge_to_a_cleartext_upstream() {
    let up = h2c_upstream().await;
    for (http2, version) in [("false", "HTTP/1.1"), ("true", "HTTP/2.0")] {
        let gw = plain_gateway(
            &format!("h2c-up-{http2}"),
            &format!("http://{up}"),
            &format!("upstream_http2 = {http2}\n"),
        );
        let resp = send(gw.listen, "GET", "/v1/models", &[("te", "trailers")], b"").await;
        assert_eq!(resp.status(), 200);
        let answer = json(resp).await;
        assert_eq!(answer["version"], version);
        // gRPC needs `te: trailers` end to end: kept towards an HTTP/2 upstream, dropped
        // as hop-by-hop towards HTTP/1.1.
        let te = if http2 == "true" {
            serde_json::json!("trailers")
        } else {
            serde_json::Value::Null
        };
        assert_eq!(answer["te"], te, "{version}");
    }
}

/// A TLS listener config block for `leaf` written into `dir`.
fn listener_tls(dir: &Path, leaf: &(String, String), extra: &str) -> String {
    let cert = write(dir, "server.pem", &leaf.0);
    let key = write(dir, "server.key", &leaf.1);
    format!(
        "[server.tls]\ncert_file = {}\nkey_file = {}\nreload_ms = 100\n{extra}",
        toml_path(&cert),
        toml_path(&key)
    )
}

/// The `[server]` table with passports on, in front of `up`, with `tls` appended to
/// `[server]` and `[agent_envelope]` after it.
fn passport_gateway(name: &str, up: SocketAddr, server_extra: &str) -> Gateway {
    let base = config(up, "");
    let (server, envelope) = base.split_once("\n[agent_envelope]").unwrap();
    start(
        name,
        &format!("{server}\n{server_extra}\n[agent_envelope]{envelope}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_listener_serves_http1_and_h2_chosen_by_alpn() {
    let ca = Ca::new("listener ca");
    let up = upstream().await;
    let dir = workdir("tls-listener-alpn-files");
    let gw = passport_gateway(
        "tls-listener-alpn",
        up.addr,
        &listener_tls(&dir, &ca.leaf(&["localhost"]), ""),
    );
    let url = format!("https://localhost:{}/v1/models", gw.listen.port());
    for (h2, version) in [(false, "HTTP/1.1"), (true, "HTTP/2.0")] {
        let resp = get(&tls_client(&ca.pem(), h2), &url).await;
        assert_eq!(format!("{:?}", resp.version()), version);
        assert_eq!(resp.status(), 200);
        assert_eq!(json(resp).await["uri"], "/v1/models");
        // The upstream learns that the client came over TLS, and the host it asked for,
        // whether that was in `Host` (HTTP/1.1) or in `:authority` (HTTP/2).
        let seen = up.seen().pop().unwrap();
        let forwarded = seen.headers["forwarded"].to_str().unwrap().to_owned();
        assert!(forwarded.contains(";proto=https"), "{version}: {forwarded}");
        let host = format!("localhost:{}", gw.listen.port());
        assert!(
            forwarded.ends_with(&format!(";host=\"{host}\"")),
            "{version}: {forwarded}"
        );
        assert_eq!(seen.headers["x-forwarded-host"], host.as_str(), "{version}");
        assert_eq!(seen.headers["x-forwarded-proto"], "https", "{version}");
    }
    // curl, a client the gateway did not write.
    let ca_file = write(&dir, "ca.pem", &ca.pem());
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&ca_file)
            .args([
                flag,
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
            ])
            .arg(&url)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{version} 200"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_the_tls_handshake_is_cut_and_counted() {
    let ca = Ca::new("listener ca");
    let up = upstream().await;
    let dir = workdir("tls-handshake-timeout-files");
    let gw = passport_gateway(
        "tls-handshake-timeout",
        up.addr,
        &format!(
            "header_read_timeout_ms = 300\n{}",
            listener_tls(&dir, &ca.leaf(&["localhost"]), "")
        ),
    );
    let mut silent = support::serve::half_sent(gw.listen, b"").unwrap();
    assert!(support::serve::closed_within(
        &mut silent,
        Duration::from_secs(3)
    ));
    // Plain HTTP on the TLS port is not a handshake either.
    let answer = support::serve::raw(
        gw.listen,
        b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(3),
    );
    assert!(!answer.contains("200"));
    assert!(
        eventually(Duration::from_secs(3), async || gw
            .metric("passport_gate_tls_handshake_failures_total{peer=\"client\"}")
            .await
            == 2.0)
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_when_client_ca_file_is_set() {
    let ca = Ca::new("listener ca");
    let client_ca = Ca::new("client ca");
    let up = upstream().await;
    let dir = workdir("tls-client-ca-files");
    let client_ca_file = write(&dir, "client-ca.pem", &client_ca.pem());
    let gw = passport_gateway(
        "tls-client-ca",
        up.addr,
        &listener_tls(
            &dir,
            &ca.leaf(&["localhost"]),
            &format!("client_ca_file = {}\n", toml_path(&client_ca_file)),
        ),
    );
    let url = format!("https://localhost:{}/v1/models", gw.listen.port());
    let anonymous = tls_client(&ca.pem(), false)
        .request(
            http::Request::get(&url)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert!(anonymous.is_err());

    let (cert, key) = client_ca.leaf(&["agent.local"]);
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(&ca.pem()))
        .with_client_auth_cert(
            certs(&cert),
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build(),
    );
    assert_eq!(get(&client, &url).await.status(), 200);
}

/// Opens a TLS connection to `addr` trusting `ca_pem`; returns the certificate the
/// server presented and an HTTP/1.1 sender on that connection.
async fn connect_tls(
    addr: SocketAddr,
    ca_pem: &str,
) -> (
    CertificateDer<'static>,
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
) {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(ca_pem))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let presented = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    (presented, sender)
}

async fn get_on(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
) -> http::StatusCode {
    sender.ready().await.unwrap();
    let resp = sender
        .send_request(
            http::Request::get("/v1/models")
                .header("host", "localhost")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_swapped_on_disk_serves_new_handshakes_and_open_connections_keep_working() {
    let ca = Ca::new("listener ca");
    let up = upstream().await;
    let dir = workdir("tls-reload-files");
    let first = ca.leaf(&["localhost"]);
    let gw = passport_gateway(
        "tls-reload",
        up.addr,
        &format!(
            "header_read_timeout_ms = 30000\n{}",
            listener_tls(&dir, &first, "")
        ),
    );
    let (presented, mut open) = connect_tls(gw.listen, &ca.pem()).await;
    assert_eq!(presented, certs(&first.0)[0]);
    assert_eq!(get_on(&mut open).await, 200);

    let second = ca.leaf(&["localhost"]);
    // Written to temporary names and renamed, as certificate managers do.
    std::fs::write(dir.join("server.key.new"), &second.1).unwrap();
    std::fs::write(dir.join("server.pem.new"), &second.0).unwrap();
    std::fs::rename(dir.join("server.key.new"), dir.join("server.key")).unwrap();
    std::fs::rename(dir.join("server.pem.new"), dir.join("server.pem")).unwrap();
    assert!(
        eventually(Duration::from_secs(5), async || gw
            .metric("passport_gate_tls_certificate_reloads_total{result=\"ok\"}")
            .await
            >= 1.0)
        .await
    );

    let (presented, mut fresh) = connect_tls(gw.listen, &ca.pem()).await;
    assert_eq!(presented, certs(&second.0)[0]);
    assert_eq!(get_on(&mut fresh).await, 200);
    assert_eq!(
        get_on(&mut open).await,
        200,
        "the open connection still works"
    );
}

/// Writes `text` to `<name>.new` in `dir`, gives it the modification time of `name`,
/// and renames it over `name`: a rotation that a watcher of modification times alone
/// does not see.
fn rename_over_with_the_same_mtime(dir: &Path, name: &str, text: &str) {
    let target = dir.join(name);
    let mtime = std::fs::metadata(&target).unwrap().modified().unwrap();
    let staged = dir.join(format!("{name}.new"));
    std::fs::write(&staged, text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&staged)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::fs::rename(&staged, &target).unwrap();
    assert_eq!(
        std::fs::metadata(&target).unwrap().modified().unwrap(),
        mtime
    );
}

/// A leaf for a client, with serial number `serial`, as (certificate PEM, key PEM).
fn client_leaf(ca: &Ca, serial: u8) -> (String, String) {
    let mut p = CertificateParams::new(vec!["agent.local".to_owned()]).unwrap();
    p.serial_number = Some(rcgen::SerialNumber::from(vec![serial]));
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A CRL of `ca` revoking `serials`, as PEM.
fn crl(ca: &Ca, serials: &[u8]) -> String {
    rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2026, 1, 1),
        next_update: rcgen::date_time_ymd(2036, 1, 1),
        crl_number: rcgen::SerialNumber::from(vec![1]),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from(vec![*s]),
                revocation_time: rcgen::date_time_ymd(2026, 1, 2),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&ca.cert, &ca.key)
    .unwrap()
    .pem()
    .unwrap()
}

/// The status of `GET url` on a new connection presenting `client` (trusting
/// `server_ca`), or `None` when the handshake or the request fails.
async fn status_as(server_ca: &str, client: &(String, String), url: &str) -> Option<u16> {
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(server_ca))
        .with_client_auth_cert(
            certs(&client.0),
            PrivateKeyDer::from_pem_slice(client.1.as_bytes()).unwrap(),
        )
        .unwrap();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build(),
    );
    let req = http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    client.request(req).await.ok().map(|r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_renamed_over_with_the_same_mtime_is_reloaded() {
    let ca = Ca::new("listener ca");
    let up = upstream().await;
    let dir = workdir("tls-rename-same-mtime-files");
    let first = ca.leaf(&["localhost"]);
    let gw = passport_gateway(
        "tls-rename-same-mtime",
        up.addr,
        &listener_tls(&dir, &first, ""),
    );
    let (presented, _) = connect_tls(gw.listen, &ca.pem()).await;
    assert_eq!(presented, certs(&first.0)[0]);

    let second = ca.leaf(&["localhost"]);
    rename_over_with_the_same_mtime(&dir, "server.key", &second.1);
    rename_over_with_the_same_mtime(&dir, "server.pem", &second.0);
    assert!(
        eventually(Duration::from_secs(5), async || connect_tls(
            gw.listen,
            &ca.pem()
        )
        .await
        .0 == certs(&second.0)[0])
        .await,
        "the renamed certificate was never served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_ca_file_is_reloaded_when_it_changes() {
    let ca = Ca::new("listener ca");
    let old_ca = Ca::new("old client ca");
    let new_ca = Ca::new("new client ca");
    let up = upstream().await;
    let dir = workdir("tls-client-ca-reload-files");
    let client_ca_file = write(&dir, "client-ca.pem", &old_ca.pem());
    let gw = passport_gateway(
        "tls-client-ca-reload",
        up.addr,
        &listener_tls(
            &dir,
            &ca.leaf(&["localhost"]),
            &format!("client_ca_file = {}\n", toml_path(&client_ca_file)),
        ),
    );
    let url = format!("https://localhost:{}/v1/models", gw.listen.port());
    let old_client = old_ca.leaf(&["agent.local"]);
    let new_client = new_ca.leaf(&["agent.local"]);
    assert_eq!(status_as(&ca.pem(), &old_client, &url).await, Some(200));
    assert_eq!(status_as(&ca.pem(), &new_client, &url).await, None);

    rename_over_with_the_same_mtime(&dir, "client-ca.pem", &new_ca.pem());
    assert!(
        eventually(Duration::from_secs(5), async || status_as(
            &ca.pem(),
            &new_client,
            &url
        )
        .await
            == Some(200))
        .await,
        "the new client CA was never used"
    );
    assert_eq!(status_as(&ca.pem(), &old_client, &url).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_listed_in_the_crl_file_is_refused_and_the_crl_is_reloaded() {
    let ca = Ca::new("listener ca");
    let client_ca = Ca::new("client ca");
    let up = upstream().await;
    let dir = workdir("tls-client-crl-files");
    let client_ca_file = write(&dir, "client-ca.pem", &client_ca.pem());
    let crl_file = write(&dir, "client.crl", &crl(&client_ca, &[9]));
    let gw = passport_gateway(
        "tls-client-crl",
        up.addr,
        &listener_tls(
            &dir,
            &ca.leaf(&["localhost"]),
            &format!(
                "client_ca_file = {}\nclient_crl_file = {}\n",
                toml_path(&client_ca_file),
                toml_path(&crl_file)
            ),
        ),
    );
    let url = format!("https://localhost:{}/v1/models", gw.listen.port());
    let seven = client_leaf(&client_ca, 7);
    let eight = client_leaf(&client_ca, 8);
    let nine = client_leaf(&client_ca, 9);
    assert_eq!(status_as(&ca.pem(), &seven, &url).await, Some(200));
    assert_eq!(
        status_as(&ca.pem(), &nine, &url).await,
        None,
        "listed in the CRL"
    );

    // A new CRL also lists 7.
    rename_over_with_the_same_mtime(&dir, "client.crl", &crl(&client_ca, &[7, 9]));
    assert!(
        eventually(Duration::from_secs(5), async || status_as(
            &ca.pem(),
            &seven,
            &url
        )
        .await
        .is_none())
        .await,
        "the new CRL was never used"
    );
    assert_eq!(status_as(&ca.pem(), &eight, &url).await, Some(200));
}

#[test]
fn a_crl_file_without_a_client_ca_or_without_a_crl_is_a_configuration_error() {
    let ca = Ca::new("listener ca");
    let dir = workdir("tls-crl-config-files");
    let not_a_crl = write(&dir, "not-a.crl", &ca.pem());
    for (extra, key, problem) in [
        (
            format!("client_crl_file = {}\n", toml_path(&not_a_crl)),
            "server.tls.client_crl_file",
            "needs server.tls.client_ca_file",
        ),
        (
            format!(
                "client_ca_file = {}\nclient_crl_file = {}\n",
                toml_path(&write(&dir, "ca.pem", &ca.pem())),
                toml_path(&not_a_crl)
            ),
            "server.tls.client_crl_file",
            "no PEM X509 CRL",
        ),
    ] {
        let tls = listener_tls(&dir, &ca.leaf(&["localhost"]), &extra);
        let base = config("127.0.0.1:9".parse().unwrap(), "");
        let (server, envelope) = base.split_once("\n[agent_envelope]").unwrap();
        let (code, stderr) = support::serve::refused_config(
            "tls-crl-config",
            &format!("{server}\n{tls}\n[agent_envelope]{envelope}"),
        );
        assert_ne!(code, Some(0));
        assert!(stderr.contains(key) && stderr.contains(problem), "{stderr}");
    }
}

/// A cleartext HTTP/2 (prior knowledge) client.
fn h2c_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_is_served_on_the_cleartext_listener() {
    let up = upstream().await;
    let gw = start("h2c", &config(up.addr, ""));
    let resp = h2c_client()
        .request(
            http::Request::get(format!("http://{}/v1/models", gw.listen))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .arg(format!("http://{}/v1/models", gw.listen))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200");
    // HTTP/1.1 still works on the same listener.
    assert_eq!(
        send(gw.listen, "GET", "/v1/models", &[], b"")
            .await
            .status(),
        200
    );
}

async fn h2_post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> http::Response<Incoming> {
    let mut req = http::Request::post(format!("http://{addr}{path}"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    h2c_client()
        .request(req.body(Full::new(Bytes::copy_from_slice(body))).unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_h2_the_signed_method_and_uri_are_the_method_and_path_pseudo_headers() {
    let up = upstream().await;
    let routes = "\n[routes]\nguarded = [\"POST /v1/embeddings\", \"PUT /v1/embeddings\"]\n";
    let gw = start("h2-signed", &config(up.addr, routes));
    let f = support::live("urn:aps:agent:h2");
    let path = "/v1/embeddings?dims=8";
    let headers = |sig: &str| {
        [
            ("x-agent-passport", f.passport.clone()),
            ("x-agent-sig", sig.to_owned()),
        ]
    };

    let good = headers(&f.sign(path, BODY));
    let good: Vec<(&str, &str)> = good.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let resp = h2_post(gw.listen, path, &good, BODY).await;
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(json(resp).await["uri"], path);

    // Signed for another :path.
    let other = headers(&f.sign("/v1/embeddings?dims=9", BODY));
    let other: Vec<(&str, &str)> = other.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let resp = h2_post(gw.listen, path, &other, BODY).await;
    assert_eq!(resp.status(), 401);
    assert!(text(resp).await.contains("agent_sig_invalid"));

    // Signed for POST, sent as :method PUT.
    let req = http::Request::put(format!("http://{}{path}", gw.listen))
        .header("x-agent-passport", &f.passport)
        .header("x-agent-sig", f.sign(path, BODY))
        .body(Full::new(Bytes::from_static(BODY)))
        .unwrap();
    let resp = h2c_client().request(req).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        up.seen().len(),
        1,
        "only the correctly signed request went up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_over_h2_as_over_http1() {
    let up = upstream().await;
    let ca = Ca::new("listener ca");
    let dir = workdir("h2-sse-files");
    let gw = passport_gateway(
        "h2-sse",
        up.addr,
        &listener_tls(&dir, &ca.leaf(&["localhost"]), ""),
    );
    let f = support::live("urn:aps:agent:h2-sse");
    let path = "/v1/chat/completions";
    let req = http::Request::post(format!("https://localhost:{}{path}", gw.listen.port()))
        .header("x-agent-passport", &f.passport)
        .header("x-agent-sig", f.sign(path, BODY))
        .body(Full::new(Bytes::from_static(BODY)))
        .unwrap();
    let resp = tls_client(&ca.pem(), true).request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("the first chunk arrived while the upstream holds back the last")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(
        first,
        format!("data: {{\"received_bytes\":{}}}\n\n", BODY.len())
    );
    up.release_last_chunk.send(()).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, Bytes::from_static(b"data: [DONE]\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_header_list_larger_than_max_header_bytes_is_refused() {
    let up = upstream().await;
    let gw = start(
        "h2-header-list",
        &config(up.addr, "").replacen(
            "[agent_envelope]",
            "max_header_bytes = 16384\n\n[agent_envelope]",
            1,
        ),
    );
    let big = "a".repeat(20_000);
    let req = http::Request::get(format!("http://{}/v1/models", gw.listen))
        .header("x-big", big.as_str())
        .body(Full::new(Bytes::new()))
        .unwrap();
    // hyper answers 431 or resets the stream; either way nothing goes up.
    if let Ok(resp) = h2c_client().request(req).await {
        assert_eq!(resp.status(), 431);
    }
    assert!(up.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_h2_connection_is_closed_after_the_header_read_timeout_but_a_long_stream_is_not() {
    let up = upstream().await;
    let gw = start(
        "h2-idle",
        &config(up.addr, "").replacen(
            "[agent_envelope]",
            "header_read_timeout_ms = 500\n\n[agent_envelope]",
            1,
        ),
    );
    // The connection preface and an empty SETTINGS frame, then nothing.
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let started = Instant::now();
    let mut idle = support::serve::half_sent(gw.listen, &preface).unwrap();
    assert!(support::serve::closed_within(
        &mut idle,
        Duration::from_secs(5)
    ));
    assert!(started.elapsed() >= Duration::from_millis(400));

    // A stream that lasts longer than the timeout keeps its connection.
    let resp = h2_post(gw.listen, "/v1/chat/completions", &[], BODY).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    up.release_last_chunk.send(()).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, Bytes::from_static(b"data: [DONE]\n\n"));
}

/// A gateway in front of `up` whose binding asks the chain node at `node_url`, trusting
/// `ca_file` for both.
fn gateway_with_chain_node(name: &str, up: SocketAddr, node_url: &str, ca_file: &Path) -> Gateway {
    let toml = config(up, &format!("\n[binding]\nchain_node = \"{node_url}\"\n")).replacen(
        "\n[agent_envelope]",
        &format!(
            "upstream_ca_file = {}\n\n[agent_envelope]",
            toml_path(ca_file)
        ),
        1,
    );
    start(name, &toml)
}

async fn ready(gw: &Gateway) -> bool {
    send(gw.admin, "GET", "/readyz", &[], b"").await.status() == 200
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_chain_node_is_verified_against_the_private_ca_and_its_name() {
    let up = upstream().await;
    let ca = Ca::new("node ca");
    let dir = workdir("tls-chain-node-files");
    let ca_file = write(&dir, "ca.pem", &ca.pem());
    let good = tls_upstream(&ca.leaf(&["localhost"]), None).await;
    let gw = gateway_with_chain_node(
        "tls-chain-node",
        up.addr,
        &format!("https://localhost:{}", good.port()),
        &ca_file,
    );
    assert!(eventually(Duration::from_secs(10), async || ready(&gw).await).await);

    let other_name = tls_upstream(&ca.leaf(&["other.example"]), None).await;
    let gw = gateway_with_chain_node(
        "tls-chain-node-other-name",
        up.addr,
        &format!("https://localhost:{}", other_name.port()),
        &ca_file,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !ready(&gw).await,
        "a node with another name's certificate never answers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_are_counted_by_reason() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = plain_gateway("upstream-connect-error", &format!("http://{closed}"), "");
    let resp = send(gw.listen, "GET", "/v1/models", &[], b"").await;
    assert_eq!(resp.status(), 502);
    assert_eq!(
        gw.metric("passport_gate_upstream_errors_total{reason=\"connect\"}")
            .await,
        1.0
    );
    assert_eq!(
        gw.metric("passport_gate_upstream_errors_total{reason=\"tls\"}")
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_h2_upload_flows_through_the_bounded_windows() {
    let up = upstream().await;
    let gw = start("h2-upload", &config(up.addr, ""));
    let body = vec![b'x'; 1 << 20];
    let resp = h2_post(gw.listen, "/v1/files", &[], &body).await;
    assert_eq!(resp.status(), 200);
    let _ = text(resp).await;
    assert_eq!(up.seen()[0].body.len(), 1 << 20);
}

/// A cleartext upstream that counts the connections it accepted.
async fn counting_upstream() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), describing(false))
                    .await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_pool_max_idle_bounds_the_reused_upstream_connections() {
    for (max_idle, connections) in [(4096, 1), (0, 3)] {
        let (up, accepted) = counting_upstream().await;
        let gw = plain_gateway(
            &format!("pool-{max_idle}"),
            &format!("http://{up}"),
            &format!("upstream_pool_max_idle = {max_idle}\n"),
        );
        for _ in 0..3 {
            let resp = send(gw.listen, "GET", "/v1/models", &[], b"").await;
            assert_eq!(resp.status(), 200);
            let _ = text(resp).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            connections,
            "upstream_pool_max_idle = {max_idle}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_max_concurrent_streams_bounds_the_streams_of_one_connection() {
    let up = upstream().await;
    let gw = start(
        "h2-streams",
        &config(up.addr, "").replacen(
            "[agent_envelope]",
            "http2_max_concurrent_streams = 1\n\n[agent_envelope]",
            1,
        ),
    );
    let client = h2c_client();
    let post = |path: &str| {
        http::Request::post(format!("http://{}{path}", gw.listen))
            .body(Full::new(Bytes::from_static(BODY)))
            .unwrap()
    };
    // The first stream stays open: the upstream holds back its last SSE chunk.
    let first = client.request(post("/v1/chat/completions")).await.unwrap();
    assert_eq!(first.version(), http::Version::HTTP_2);
    let mut first = first.into_body();
    assert!(first.frame().await.unwrap().unwrap().is_data());
    // A second stream on the same connection waits for it.
    let second = tokio::spawn(client.request(post("/v1/models")));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!second.is_finished(), "a second stream was opened");
    up.release_last_chunk.send(()).unwrap();
    let _ = first.collect().await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("the second stream ran once the first ended")
        .unwrap()
        .unwrap();
    assert_eq!(second.status(), 200);
}

/// One HTTP/2 connection carries many streams, and each stream the gateway forwards
/// holds an upstream connection: `max_upstream_requests` bounds them for all clients
/// together (the descriptors `max_connections` does not count), and the excess is a 503
/// with `Retry-After` that never reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_the_upstream_are_bounded_across_the_streams_of_one_h2_connection() {
    let slow = Duration::from_millis(800);
    let up = support::serve::scripted_upstream(vec![(200, slow); 3]).await;
    let gw = plain_gateway(
        "upstream-in-flight",
        &format!("http://{}", up.addr),
        "max_upstream_requests = 3\n",
    );
    let client = h2c_client();
    let url = format!("http://{}/v1/models", gw.listen);
    let streams: Vec<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let resp = client
                    .request(
                        http::Request::get(url)
                            .body(Full::new(Bytes::new()))
                            .unwrap(),
                    )
                    .await
                    .unwrap();
                assert_eq!(resp.version(), http::Version::HTTP_2);
                let status = resp.status().as_u16();
                let retry = resp.headers().get("retry-after").cloned();
                let body =
                    String::from_utf8(resp.collect().await.unwrap().to_bytes().to_vec()).unwrap();
                (status, retry, body)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for s in streams {
        answers.push(s.await.unwrap());
    }
    let served = answers.iter().filter(|a| a.0 == 200).count();
    let busy: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    assert_eq!((served, busy.len()), (3, 7), "{answers:?}");
    for (_, retry, body) in &busy {
        assert_eq!(retry.as_ref().map(|v| v.to_str().unwrap()), Some("1"));
        assert!(body.contains("\"upstream_busy\""), "{body}");
    }
    assert_eq!(up.calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    // Each answer gave its place back when it ended.
    let resp = send(gw.listen, "GET", "/v1/models", &[], b"").await;
    assert_eq!(resp.status(), 200);
}
