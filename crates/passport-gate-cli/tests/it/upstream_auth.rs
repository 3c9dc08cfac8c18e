//! `[upstream_auth]`: the gateway's own credential towards the upstream, over real HTTP
//! against the real binary. It reaches the upstream only with an accepted passport (or on a
//! public route with `public_routes = true`), a client's copy never does on any route or
//! protocol, a rotated token file is picked up, and the secret never shows in the logs, the
//! metrics, `/readyz` or the access log.

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use passport_core::crypto::PrincipalSecret;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support;

use support::serve::{config, refused_config, send, start, text, upstream, Upstream};

const BODY: &[u8] = br#"{"model":"qwen/qwen3-32b","messages":[{"role":"user","content":"hi"}]}"#;
const GUARDED: &str = "/v1/echo";
const TOKEN: &str = "sk-upstream-7f3a9c1e";

/// The routes of these tests: `POST /v1/echo` guarded, `GET /v1/models` public, anything
/// else forwarded unguarded (optional mode).
fn routes() -> &'static str {
    "\n[routes]\nguarded = [\"POST /v1/echo\"]\npublic = [\"GET /v1/models\", \"POST /v1/public\"]\n"
}

fn write_token(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn token_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("pg-upauth-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A cleartext HTTP/2 (prior knowledge) client.
fn h2c_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Sends one request over HTTP/1.1 or h2c; returns the status.
async fn send_on(
    h2: bool,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> u16 {
    if !h2 {
        let resp = send(addr, method, path, headers, body).await;
        let status = resp.status().as_u16();
        let _ = text(resp).await;
        return status;
    }
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let resp = h2c_client()
        .request(req.body(Full::new(Bytes::copy_from_slice(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let _ = text(resp).await;
    status
}

/// The values of `name` the upstream saw on its last request.
fn last_values(up: &Upstream, name: &str) -> Vec<String> {
    let seen = up.seen();
    let last = seen.last().expect("the upstream saw a request");
    last.headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_reaches_the_upstream_only_with_an_accepted_passport_and_client_copies_never() {
    let up = upstream().await;
    let dir = token_dir("bearer");
    let token = write_token(&dir, "token", &format!("{TOKEN}\n"));
    let gw = start(
        "upauth-bearer",
        &config(
            up.addr,
            &format!(
                "{}\n[upstream_auth]\nkind = \"bearer\"\ntoken_file = {:?}\n",
                routes(),
                token.display().to_string()
            ),
        ),
    );
    let f = support::live("urn:aps:agent:upauth");
    let sig = f.sign(GUARDED, BODY);
    let forged = [("authorization", "Bearer client-forged")];
    for h2 in [false, true] {
        // Accepted: the gateway's token replaces the client's.
        let status = send_on(
            h2,
            gw.listen,
            "POST",
            GUARDED,
            &[
                ("x-agent-passport", &f.passport),
                ("x-agent-sig", &sig),
                forged[0],
            ],
            BODY,
        )
        .await;
        assert_eq!(status, 200, "h2={h2}");
        assert_eq!(
            last_values(&up, "authorization"),
            [format!("Bearer {TOKEN}")]
        );

        // Refused: the upstream never sees it.
        let calls = up.seen().len();
        let bad = f.sign(GUARDED, b"{}");
        let status = send_on(
            h2,
            gw.listen,
            "POST",
            GUARDED,
            &[("x-agent-passport", &f.passport), ("x-agent-sig", &bad)],
            BODY,
        )
        .await;
        assert_eq!(status, 401, "h2={h2}");
        assert_eq!(up.seen().len(), calls);

        // Guarded without a passport (optional mode), public, unguarded-forward: no
        // credential, and the client's copy is gone.
        for (method, path) in [
            ("POST", GUARDED),
            ("GET", "/v1/models"),
            ("GET", "/v1/other"),
        ] {
            let status = send_on(h2, gw.listen, method, path, &forged, b"").await;
            assert_eq!(status, 200, "{method} {path} h2={h2}");
            assert!(
                last_values(&up, "authorization").is_empty(),
                "{method} {path} h2={h2}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_routes_get_the_credential_only_when_the_operator_says_so() {
    let up = upstream().await;
    let dir = token_dir("public");
    let cfg = dir.join("gateway.toml");
    std::fs::write(
        &cfg,
        config(
            up.addr,
            &format!(
                "{}\n[upstream_auth]\nkind = \"bearer\"\ntoken_env = \"PG_UPAUTH_PUBLIC\"\npublic_routes = true\n",
                routes()
            ),
        ),
    )
    .unwrap();
    let gw = support::serve::start_file(
        "upauth-public-env",
        &cfg,
        &[("PG_UPAUTH_PUBLIC", TOKEN)],
        std::process::Stdio::null(),
    );
    let forged = [("authorization", "Bearer client-forged")];
    assert_eq!(
        send_on(false, gw.listen, "GET", "/v1/models", &forged, b"").await,
        200
    );
    assert_eq!(
        last_values(&up, "authorization"),
        [format!("Bearer {TOKEN}")]
    );
    assert_eq!(
        send_on(true, gw.listen, "GET", "/v1/other", &forged, b"").await,
        200
    );
    assert!(last_values(&up, "authorization").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_kind_sends_the_token_in_the_named_header_and_drops_client_spellings() {
    let up = upstream().await;
    let dir = token_dir("header");
    let token = write_token(&dir, "api-key", TOKEN);
    let gw = start(
        "upauth-header",
        &config(
            up.addr,
            &format!(
                "{}\n[upstream_auth]\nkind = \"header\"\nname = \"api-key\"\ntoken_file = {:?}\n",
                routes(),
                token.display().to_string()
            ),
        ),
    );
    let f = support::live("urn:aps:agent:upauth");
    let sig = f.sign(GUARDED, BODY);
    let forged = [("api-key", "forged"), ("api_key", "forged-underscore")];
    for h2 in [false, true] {
        let mut headers = vec![
            ("x-agent-passport", f.passport.as_str()),
            ("x-agent-sig", &sig),
        ];
        headers.extend(forged);
        assert_eq!(
            send_on(h2, gw.listen, "POST", GUARDED, &headers, BODY).await,
            200
        );
        assert_eq!(last_values(&up, "api-key"), [TOKEN]);
        assert!(last_values(&up, "api_key").is_empty());
        for (method, path) in [("GET", "/v1/models"), ("GET", "/v1/other")] {
            assert_eq!(
                send_on(h2, gw.listen, method, path, &forged, b"").await,
                200
            );
            assert!(last_values(&up, "api-key").is_empty(), "{path} h2={h2}");
            assert!(last_values(&up, "api_key").is_empty(), "{path} h2={h2}");
        }
    }
}

/// Sends accepted requests until the upstream sees `expected` (or 10 s pass).
async fn until_upstream_sees(gw: SocketAddr, up: &Upstream, expected: &str) -> bool {
    let f = support::live("urn:aps:agent:upauth");
    let sig = f.sign(GUARDED, BODY);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let status = send_on(
            false,
            gw,
            "POST",
            GUARDED,
            &[("x-agent-passport", &f.passport), ("x-agent-sig", &sig)],
            BODY,
        )
        .await;
        assert_eq!(status, 200);
        if last_values(up, "authorization") == [expected] {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_file_is_picked_up_and_an_empty_one_keeps_the_last_good_token() {
    let up = upstream().await;
    let dir = token_dir("rotate");
    let token = write_token(&dir, "token", "sk-first\n");
    let gw = start(
        "upauth-rotate",
        &config(
            up.addr,
            &format!(
                "{}\n[upstream_auth]\nkind = \"bearer\"\ntoken_file = {:?}\nreload_ms = 50\n",
                routes(),
                token.display().to_string()
            ),
        ),
    );
    assert!(until_upstream_sees(gw.listen, &up, "Bearer sk-first").await);
    // Renamed over the file, as a secret manager writes it.
    let next = write_token(&dir, "token.new", "sk-second\n");
    std::fs::rename(&next, &token).unwrap();
    assert!(until_upstream_sees(gw.listen, &up, "Bearer sk-second").await);
    // Emptied: not taken, counted; the last good token stays in force.
    let empty = write_token(&dir, "token.empty", "");
    std::fs::rename(&empty, &token).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw
        .metric("passport_gate_upstream_auth_reload_failures_total")
        .await
        < 1.0
    {
        assert!(Instant::now() < deadline, "the empty file was counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(until_upstream_sees(gw.listen, &up, "Bearer sk-second").await);
    let lines = gw.drain_lines().join("\n");
    assert!(lines.contains("last good token stays in force"), "{lines}");
    assert!(
        !lines.contains("sk-first") && !lines.contains("sk-second"),
        "{lines}"
    );
}

#[test]
fn a_missing_or_empty_token_and_a_missing_variable_stop_startup_naming_the_key() {
    let dir = token_dir("refused");
    let empty = write_token(&dir, "empty", " \n");
    let up: SocketAddr = "127.0.0.1:9".parse().unwrap();
    for (name, section, key) in [
        (
            "upauth-missing",
            format!(
                "token_file = {:?}",
                dir.join("absent").display().to_string()
            ),
            "upstream_auth.token_file",
        ),
        (
            "upauth-empty",
            format!("token_file = {:?}", empty.display().to_string()),
            "upstream_auth.token_file",
        ),
        (
            "upauth-noenv",
            "token_env = \"PG_UPAUTH_SURELY_UNSET\"".to_owned(),
            "upstream_auth.token_env",
        ),
        ("upauth-nosource", String::new(), "upstream_auth.token_file"),
    ] {
        let toml = config(
            up,
            &format!("\n[upstream_auth]\nkind = \"bearer\"\n{section}\n"),
        );
        let (code, stderr) = refused_config(name, &toml);
        assert_ne!(code, Some(0), "{name}: {stderr}");
        assert!(stderr.contains(key), "{name}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_appears_in_logs_metrics_readyz_or_the_access_log() {
    let up = upstream().await;
    let dir = token_dir("leak");
    let token = write_token(&dir, "token", TOKEN);
    let access_log = dir.join("access.log");
    let toml = config(
        up.addr,
        &format!(
            "{}\n[upstream_auth]\nkind = \"bearer\"\ntoken_file = {:?}\nreload_ms = 50\npublic_routes = true\n",
            routes(),
            token.display().to_string()
        ),
    )
    .replace(
        "[server]\n",
        &format!(
            "[server]\naccess_log = {:?}\n",
            access_log.display().to_string()
        ),
    );
    let gw = start("upauth-leak", &toml);
    assert!(until_upstream_sees(gw.listen, &up, &format!("Bearer {TOKEN}")).await);
    assert_eq!(
        send_on(false, gw.listen, "GET", "/v1/models", &[], b"").await,
        200
    );
    // A reload that fails is logged too, without the token.
    std::fs::write(&token, "bad token with spaces").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = text(send(gw.admin, "GET", "/metrics", &[], b"").await).await;
    let readyz = text(send(gw.admin, "GET", "/readyz", &[], b"").await).await;
    let lines = gw.drain_lines().join("\n");
    let logged = std::fs::read_to_string(&access_log).unwrap_or_default();
    assert!(!logged.is_empty(), "the access log was written");
    assert!(lines.contains("not reloaded"), "{lines}");
    for (what, text) in [
        ("stderr", &lines),
        ("metrics", &metrics),
        ("readyz", &readyz),
        ("access log", &logged),
    ] {
        assert!(!text.contains(TOKEN), "{what} shows the token");
        assert!(!text.contains("spaces"), "{what} shows the rejected token");
    }
}

/// The operator's Gonka key, written as `keygen --principal` writes it, with `mode`.
fn operator_key(dir: &Path, mode: u32) -> (std::path::PathBuf, PrincipalSecret) {
    use std::os::unix::fs::PermissionsExt;
    let secret = PrincipalSecret::from_bytes(&[7u8; 32]).unwrap();
    let file = passport_core::keyfile::KeyFile::principal(&secret, "gonka").unwrap();
    let path = dir.join(format!("operator-{mode:o}.json"));
    let _ = std::fs::remove_file(&path);
    passport_core::keyfile::write_key_file(&path, &file).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    (path, secret)
}

fn node_address() -> String {
    PrincipalSecret::from_bytes(&[9u8; 32])
        .unwrap()
        .public_key()
        .address("gonka")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gonka_signs_the_exact_forwarded_body_as_the_operator_for_the_node() {
    let up = upstream().await;
    let dir = token_dir("gonka");
    let (key, secret) = operator_key(&dir, 0o600);
    let node = node_address();
    let gw = start(
        "upauth-gonka",
        &config(
            up.addr,
            &format!(
                "{}\n[upstream_auth]\nkind = \"gonka\"\nkey_file = {:?}\ntransfer_address = {node:?}\npublic_routes = true\n",
                routes(),
                key.display().to_string()
            ),
        ),
    );
    let operator = secret.public_key();
    let f = support::live("urn:aps:agent:upauth");
    let sig = f.sign(GUARDED, BODY);
    let client_native = [
        ("authorization", "Y2xpZW50"),
        ("x-requester-address", "gonka1client"),
        ("x-timestamp", "1"),
        ("x-transfer-address", "gonka1elsewhere"),
    ];
    let check = |what: &str| {
        let seen = up.seen();
        let last = seen.last().unwrap();
        let native = passport_core::gonka::NativeHeaders::from_headers(&last.headers)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            native.transfer_address.as_deref(),
            Some(node.as_str()),
            "{what}"
        );
        passport_core::gonka::verify_native(&operator, &native, &last.body, "gonka", &node)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        for (name, _) in client_native {
            assert_eq!(
                last.headers.get_all(name).iter().count(),
                1,
                "{what}: {name}"
            );
        }
        native.timestamp
    };
    let mut timestamps = Vec::new();
    for h2 in [false, true] {
        let mut headers = vec![
            ("x-agent-passport", f.passport.as_str()),
            ("x-agent-sig", &sig),
        ];
        headers.extend(client_native);
        assert_eq!(
            send_on(h2, gw.listen, "POST", GUARDED, &headers, BODY).await,
            200
        );
        assert_eq!(up.seen().last().unwrap().body, BODY);
        timestamps.push(check(&format!("accepted h2={h2}")));
        // A public route's streamed body is held and signed too (public_routes = true).
        assert_eq!(
            send_on(
                h2,
                gw.listen,
                "POST",
                "/v1/public",
                &client_native,
                b"{\"x\":1}"
            )
            .await,
            200
        );
        timestamps.push(check(&format!("public h2={h2}")));
        // Unguarded: none of the four native headers reaches the upstream.
        assert_eq!(
            send_on(h2, gw.listen, "GET", "/v1/other", &client_native, b"").await,
            200
        );
        for (name, _) in client_native {
            assert!(
                last_values(&up, name).is_empty(),
                "unguarded h2={h2}: {name}"
            );
        }
    }
    // Nanosecond timestamps, never repeated.
    assert!(timestamps.windows(2).all(|w| w[0] < w[1]), "{timestamps:?}");
    assert!(timestamps[0] > 1_000_000_000_000_000_000);
}

#[test]
fn a_gonka_key_file_others_can_read_is_refused_naming_the_key() {
    let dir = token_dir("gonka-mode");
    let (key, _) = operator_key(&dir, 0o644);
    let toml = config(
        "127.0.0.1:9".parse().unwrap(),
        &format!(
            "\n[upstream_auth]\nkind = \"gonka\"\nkey_file = {:?}\ntransfer_address = {:?}\n",
            key.display().to_string(),
            node_address()
        ),
    );
    let (code, stderr) = refused_config("upauth-gonka-mode", &toml);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("upstream_auth.key_file"), "{stderr}");
    assert!(stderr.contains("0644"), "{stderr}");
    assert!(!stderr.contains(&hex::encode([7u8; 32])), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gonka_on_a_public_route_holds_no_body_beyond_max_body_size() {
    let up = upstream().await;
    let dir = token_dir("gonka-large");
    let (key, _) = operator_key(&dir, 0o600);
    let gw = start(
        "upauth-gonka-large",
        &config(
            up.addr,
            &format!(
                "max_body_size = 1024\n{}\n[upstream_auth]\nkind = \"gonka\"\nkey_file = {:?}\ntransfer_address = {:?}\npublic_routes = true\n",
                routes(),
                key.display().to_string(),
                node_address()
            ),
        ),
    );
    for h2 in [false, true] {
        let calls = up.seen().len();
        let big = vec![b'x'; 4096];
        assert_eq!(
            send_on(h2, gw.listen, "POST", "/v1/public", &[], &big).await,
            413,
            "h2={h2}"
        );
        assert_eq!(up.seen().len(), calls, "h2={h2}");
        assert_eq!(
            send_on(h2, gw.listen, "POST", "/v1/public", &[], &big[..512]).await,
            200,
            "h2={h2}"
        );
    }
}
