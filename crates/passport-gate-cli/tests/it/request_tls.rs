//! `passport-gate request` over https to the gateway's own TLS listener (issue 23): a
//! private CA given with `--ca-file`, a client certificate for a listener that requires
//! one, and failures that name the fix. Certificates are made at test time with rcgen.

use crate::cli_messages::credentials;
use crate::support;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::serve::{config, start, upstream, workdir, CHAIN};

const URI: &str = "/v1/chat/completions";
const BODY: &str = r#"{"model":"qwen/qwen3-32b","messages":[]}"#;

/// A CA made for one test, and leaves it signs.
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

    /// A leaf for `names` written to `dir` as `{stem}.pem` and `{stem}.key`.
    fn leaf(&self, dir: &Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let (c, k) = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.cert.pem()).unwrap();
        path
    }
}

/// `passport-gate request` to `url` with valid credentials and `extra` flags.
fn request(dir: &Path, url: &str, extra: &[&str]) -> Output {
    let (agent, passport_file) = (dir.join("agent.json"), dir.join("passport.txt"));
    Command::new(env!("CARGO_BIN_EXE_passport-gate"))
        .arg("request")
        .arg(url)
        .arg("--agent-key")
        .arg(agent)
        .arg("--passport-file")
        .arg(passport_file)
        .args([
            "--chain-id",
            CHAIN,
            "--body",
            BODY,
            "--timeout-seconds",
            "20",
        ])
        .args(extra)
        .output()
        .unwrap()
}

/// A `[server.tls]` table for the leaf at `cert`, `key`, with `extra` lines.
fn listener_tls(cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "\n[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n{extra}",
        cert.display().to_string(),
        key.display().to_string()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reaches_the_tls_listener_with_a_private_ca() {
    let dir = workdir("request-tls-ca-files");
    credentials(&dir);
    let ca = Ca::new("request tls ca");
    let (cert, key) = ca.leaf(&dir, "server", &["localhost"]);
    let ca_file = ca.write(&dir, "ca.pem");
    let up = upstream().await;
    let gw = start(
        "request-tls-ca",
        &config(up.addr, &listener_tls(&cert, &key, "")),
    );
    let url = format!("https://localhost:{}{URI}", gw.listen.port());
    let ca_arg = ca_file.to_str().unwrap().to_owned();
    let (d, u) = (dir.clone(), url.clone());
    let out = tokio::task::spawn_blocking(move || request(&d, &u, &["--ca-file", &ca_arg]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // The listener offers h2 by ALPN, and the command takes it.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("HTTP/2.0 200 OK"), "{err}");
    let seen = up.seen();
    let last = seen.last().expect("the upstream got the request");
    assert_eq!(&last.body[..], BODY.as_bytes());
    assert_eq!(last.headers["x-forwarded-proto"], "https");

    // Without --ca-file the webpki roots do not know the private CA: the failure says
    // TLS and names the flag.
    let (d, u) = (dir.clone(), url.clone());
    let out = tokio::task::spawn_blocking(move || request(&d, &u, &[]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("request to {url} failed: TLS handshake failed"))
            && err.contains("--ca-file")
            && err.contains("UnknownIssuer"),
        "{err}"
    );

    // A certificate for another name is refused even with the right CA.
    let by_ip = format!("https://127.0.0.1:{}{URI}", gw.listen.port());
    let ca_arg = ca_file.to_str().unwrap().to_owned();
    let (d, u) = (dir.clone(), by_ip.clone());
    let out = tokio::task::spawn_blocking(move || request(&d, &u, &["--ca-file", &ca_arg]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("failed: TLS handshake failed") && err.contains("not valid for name"),
        "{err}"
    );
    assert_eq!(
        up.seen().len(),
        1,
        "only the verified request was forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_presents_a_client_certificate_to_a_listener_that_requires_one() {
    let dir = workdir("request-tls-mtls-files");
    credentials(&dir);
    let ca = Ca::new("request mtls server ca");
    let clients = Ca::new("request mtls client ca");
    let (cert, key) = ca.leaf(&dir, "server", &["localhost"]);
    let (client_cert, client_key) = clients.leaf(&dir, "client", &["agent.example"]);
    let ca_file = ca.write(&dir, "ca.pem");
    let clients_file = clients.write(&dir, "clients.pem");
    let up = upstream().await;
    let gw = start(
        "request-tls-mtls",
        &config(
            up.addr,
            &listener_tls(
                &cert,
                &key,
                &format!(
                    "client_ca_file = {:?}\n",
                    clients_file.display().to_string()
                ),
            ),
        ),
    );
    let url = format!("https://localhost:{}{URI}", gw.listen.port());
    let with = [
        "--ca-file".to_owned(),
        ca_file.to_str().unwrap().to_owned(),
        "--client-cert".to_owned(),
        client_cert.to_str().unwrap().to_owned(),
        "--client-key".to_owned(),
        client_key.to_str().unwrap().to_owned(),
    ];
    let (d, u) = (dir.clone(), url.clone());
    let out = tokio::task::spawn_blocking(move || {
        let with: Vec<&str> = with.iter().map(String::as_str).collect();
        (request(&d, &u, &with), request(&d, &u, &with[..2]))
    })
    .await
    .unwrap();
    let (presented, without) = out;
    assert_eq!(presented.status.code(), Some(0), "{presented:?}");
    assert_eq!(without.status.code(), Some(1), "{without:?}");
    let err = String::from_utf8_lossy(&without.stderr);
    assert!(err.contains(&format!("request to {url} failed")), "{err}");
    assert_eq!(up.seen().len(), 1);
}
