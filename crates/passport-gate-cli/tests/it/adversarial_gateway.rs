//! Attacks on the real `passport-gate serve` binary over loopback: route guard bypass,
//! connection exhaustion, `Connection`-nominated headers and request framing. Each test
//! is one rule; raw bytes are used wherever a client library would normalize them.

use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

use crate::support;

use support::serve::{
    closed_within, config, half_sent, open_fds, raw, send, spawn, start, status_of, text, upstream,
    Gateway,
};

const BODY: &str = r#"{"model":"qwen/qwen3-32b","messages":[{"role":"user","content":"hi"}]}"#;

/// A complete HTTP/1.1 request with `Connection: close`, as raw bytes.
fn request(start_line: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut out = format!("{start_line} HTTP/1.1\r\nHost: gw.test\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    out.into_bytes()
}

/// Sends `bytes` on a fresh connection; returns the status and the problem `code`.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> (u16, String) {
    let answer = raw(addr, bytes, Duration::from_secs(5));
    let code = answer
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(body).ok())
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status_of(&answer), code)
}

fn required(upstream: SocketAddr, extra: &str) -> String {
    config(upstream, &format!("mode = \"required\"\n{extra}"))
}

const PROXY_CONNECTIONS: &str = "passport_gate_open_connections{listener=\"proxy\"}";
const PROXY_REFUSED: &str = "passport_gate_connections_refused_total{listener=\"proxy\"}";

/// Waits (bounded) until `sample` reaches at least `value`.
async fn metric_reaches(gw: &Gateway, sample: &str, value: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = gw.metric(sample).await;
        if v >= value || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_decides_on_the_normal_path_and_refuses_ambiguous_spellings() {
    let up = upstream().await;
    let gw = start("adv-spellings", &required(up.addr, ""));
    for (target, status, code) in [
        ("POST /v1/chat%2Fcompletions", 400, "path_ambiguous"),
        ("POST /v1%2Fchat%2Fcompletions", 400, "path_ambiguous"),
        ("POST /v1/chat%2fcompletions", 400, "path_ambiguous"),
        ("POST /v1/chat%5Ccompletions", 400, "path_ambiguous"),
        ("POST /v1/chat%252Fcompletions", 400, "path_ambiguous"),
        ("POST /v1/chat/completions;x=1", 400, "path_ambiguous"),
        ("POST /v1/chat/completions%00", 400, "path_ambiguous"),
        ("POST /v1/chat/complet%ions", 400, "path_ambiguous"),
        ("POST /../v1/chat/completions", 400, "path_ambiguous"),
        ("POST /v1/chat/%63ompletions", 401, "passport_required"),
        ("POST /v1/chat/completions/", 401, "passport_required"),
        ("POST //v1//chat///completions", 401, "passport_required"),
        ("POST /v1/./chat/completions", 401, "passport_required"),
        ("POST /v1/x/../chat/completions", 401, "passport_required"),
        (
            "POST /v1/chat/%2e%2E/chat/completions",
            401,
            "passport_required",
        ),
        (
            "POST /v1/chat/completions?stream=true",
            401,
            "passport_required",
        ),
    ] {
        let got = exchange(gw.listen, &request(target, &[], BODY));
        assert_eq!(got, (status, code.to_owned()), "{target}");
    }
    assert_eq!(up.calls.load(Ordering::SeqCst), 0, "{:?}", up.seen());
    assert_eq!(
        gw.metric("passport_gate_gateway_refusals_total{code=\"path_ambiguous\"}")
            .await,
        9.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_request_is_verified_as_sent_and_forwarded_on_its_normal_path() {
    let up = upstream().await;
    let gw = start("adv-signed", &required(up.addr, ""));
    let f = support::live("urn:aps:agent:adversarial");
    let target = "/v1//embeddings/./?dims=8";
    let sig = f.sign(target, BODY.as_bytes());
    let (status, _) = exchange(
        gw.listen,
        &request(
            &format!("POST {target}"),
            &[("X-Agent-Passport", &f.passport), ("X-Agent-Sig", &sig)],
            BODY,
        ),
    );
    assert_eq!(status, 200);
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/v1/embeddings/?dims=8");
    // The layer accepted it: the upstream may verify the passport again.
    assert_eq!(seen[0].headers["x-agent-passport"], f.passport.as_str());
    assert_eq!(seen[0].headers["x-agent-sig"], sig.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_proxied_methods_reach_the_upstream() {
    let up = upstream().await;
    let gw = start("adv-methods", &config(up.addr, ""));
    for target in [
        "post /v1/chat/completions",
        "Post /v1/chat/completions",
        "TRACE /v1/models",
        "PROPFIND /v1/models",
        "CONNECT 127.0.0.1:9",
    ] {
        let answer = raw(gw.listen, &request(target, &[], ""), Duration::from_secs(5));
        assert_eq!(status_of(&answer), 405, "{target}: {answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("allow: get, head, post, put, patch, delete, options"),
            "{target}: {answer}"
        );
        assert!(answer.contains("method_not_allowed"), "{target}: {answer}");
    }
    assert_eq!(up.calls.load(Ordering::SeqCst), 0, "{:?}", up.seen());
    for method in ["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let resp = send(gw.listen, method, "/v1/models", &[], b"").await;
        assert_eq!(resp.status(), 200, "{method}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_mode_guards_every_route_except_the_public_ones() {
    let up = upstream().await;
    let extra = "\n[routes]\npublic = [\"GET /v1/models\"]\n";
    let gw = start("adv-required", &required(up.addr, extra));
    for (target, status) in [
        ("POST /v1/responses", 401),
        ("POST /v1/embeddings", 401),
        ("GET /v1/files", 401),
        ("DELETE /v1/models", 401),
        ("GET /v1/models", 200),
        ("GET /v1/models/", 200),
        ("GET /v1//models", 200),
    ] {
        let (got, _) = exchange(gw.listen, &request(target, &[], ""));
        assert_eq!(got, status, "{target}");
    }
    let uris: Vec<String> = up.seen().into_iter().map(|s| s.uri).collect();
    assert_eq!(uris, ["/v1/models", "/v1/models/", "/v1/models"]);

    // The new defaults guard /v1/responses and /v1/embeddings in optional mode too.
    let optional = start("adv-optional-defaults", &config(up.addr, ""));
    for target in ["POST /v1/responses", "POST /v1/embeddings"] {
        let (got, code) = exchange(
            optional.listen,
            &request(target, &[("X-Agent-Passport", "e30=")], BODY),
        );
        assert_eq!(
            (got, code.as_str()),
            (400, "sig_header_mismatch"),
            "{target}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passport_headers_never_reach_the_upstream_unverified() {
    let up = upstream().await;
    let extra = "\n[routes]\npublic = [\"GET /v1/models\"]\n";
    let optional = start("adv-strip-optional", &config(up.addr, extra));
    let disabled = start(
        "adv-strip-disabled",
        &config(up.addr, "").replace("enabled = true", "enabled = false"),
    );
    let f = support::live("urn:aps:agent:adversarial");
    let headers = [
        ("X-Agent-Passport", f.passport.as_str()),
        ("X-Agent-Sig", "c2lnbmF0dXJl"),
    ];
    for (gw, target) in [
        (&optional, "POST /v1/other"),
        (&optional, "GET /v1/models"),
        (&disabled, "POST /v1/completions?stream=false"),
    ] {
        let (status, _) = exchange(gw.listen, &request(target, &headers, "{}"));
        assert_eq!(status, 200, "{target}");
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 3);
    for s in seen {
        assert!(
            !s.headers.contains_key("x-agent-passport") && !s.headers.contains_key("x-agent-sig"),
            "{} {}: {:?}",
            s.method,
            s.uri,
            s.headers
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unguarded_traffic_is_counted() {
    let up = upstream().await;
    let extra = "\n[routes]\npublic = [\"GET /v1/models\"]\n";
    let forward = start("adv-count-forward", &config(up.addr, extra));
    let refuse = start(
        "adv-count-refuse",
        &config(up.addr, "\n[routes]\nunguarded = \"refuse\"\n"),
    );
    for _ in 0..2 {
        send(forward.listen, "GET", "/v1/files", &[], b"").await;
    }
    send(forward.listen, "GET", "/v1/models", &[], b"").await;
    let resp = send(refuse.listen, "GET", "/v1/files", &[], b"").await;
    assert_eq!(resp.status(), 404);
    let sample = |a: &str| format!("passport_gate_unguarded_requests_total{{action=\"{a}\"}}");
    assert_eq!(forward.metric(&sample("forwarded")).await, 2.0);
    assert_eq!(forward.metric(&sample("public")).await, 1.0);
    assert_eq!(refuse.metric(&sample("refused")).await, 1.0);
    assert_eq!(refuse.metric(&sample("forwarded")).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_redirects_do_not_reveal_its_address() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route(
            "/api/v1/old",
            get(move || async move {
                http::Response::builder()
                    .status(307)
                    .header("location", format!("http://{addr}/api/v1/models?x=1"))
                    .header("content-location", format!("http://{addr}/api/v1/old"))
                    .body(axum::body::Body::empty())
                    .unwrap()
            }),
        )
        .route(
            "/api/v1/elsewhere",
            get(|| async {
                http::Response::builder()
                    .status(302)
                    .header("location", "https://example.org/v1/models")
                    .body(axum::body::Body::empty())
                    .unwrap()
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let toml = config(addr, "").replace(
        &format!("upstream = \"http://{addr}\""),
        &format!("upstream = \"http://{addr}/api\""),
    );
    let gw = start("adv-redirect", &toml);
    let resp = send(gw.listen, "GET", "/v1/old", &[], b"").await;
    assert_eq!(resp.status(), 307);
    assert_eq!(resp.headers()["location"], "/v1/models?x=1");
    assert_eq!(resp.headers()["content-location"], "/v1/old");
    let resp = send(gw.listen, "GET", "/v1/elsewhere", &[], b"").await;
    assert_eq!(resp.headers()["location"], "https://example.org/v1/models");
}

#[test]
fn route_entries_not_in_normal_form_stop_the_gateway() {
    for (i, (entry, expected)) in [
        ("post /v1/chat/completions", "routes.guarded"),
        ("POST /v1/chat/%63ompletions", "routes.guarded"),
        ("POST /v1/chat/completions/", "routes.guarded"),
    ]
    .iter()
    .enumerate()
    {
        let toml = format!(
            "[server]\nupstream = \"http://127.0.0.1:1\"\n[routes]\nguarded = [{entry:?}]\n"
        );
        let (mut child, lines, _dir) = spawn(&format!("adv-route{i}"), &toml, &[]);
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr: Vec<String> = lines.iter().collect();
        assert_eq!(status.code(), Some(2), "{entry}: {stderr:?}");
        assert!(
            stderr.iter().any(|l| l.contains(expected)),
            "{entry}: {stderr:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_heads_beyond_max_connections_are_closed_at_once_and_counted() {
    let up = upstream().await;
    let toml = config(up.addr, "").replace(
        "[server]\n",
        "[server]\nmax_connections = 20\nheader_read_timeout_ms = 3000\n",
    );
    let gw = start("adv-slowloris", &toml);
    let pid = gw.child.id();
    let baseline = open_fds(pid);
    let head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw.test\r\nX-Slow: ";
    let started = Instant::now();
    let mut held: Vec<_> = (0..300)
        .filter_map(|_| half_sent(gw.listen, head))
        .collect();
    assert_eq!(held.len(), 300);
    let refused = metric_reaches(&gw, PROXY_REFUSED, 280.0).await;
    assert_eq!(refused, 280.0);
    assert_eq!(gw.metric(PROXY_CONNECTIONS).await, 20.0);
    let fds = open_fds(pid);
    assert!(
        fds <= baseline + 20 + 4,
        "{fds} descriptors open, {baseline} at start"
    );
    // A real request while every slot is held: answered or refused at once, never hung.
    let t = Instant::now();
    let answer = raw(
        gw.listen,
        &request("GET /v1/models", &[], ""),
        Duration::from_secs(5),
    );
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(answer, "", "refused by closing the connection");
    // Once the held heads time out, real requests are served again.
    for s in &mut held {
        assert!(closed_within(s, Duration::from_secs(6)));
    }
    assert!(started.elapsed() >= Duration::from_millis(2900));
    let resp = send(gw.listen, "GET", "/v1/models", &[], b"").await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_head_is_closed_after_the_header_read_timeout() {
    let up = upstream().await;
    let toml =
        config(up.addr, "").replace("[server]\n", "[server]\nheader_read_timeout_ms = 1000\n");
    let gw = start("adv-head-timeout", &toml);
    for head in [
        &b""[..],
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n",
    ] {
        let started = Instant::now();
        let mut s = half_sent(gw.listen, head).unwrap();
        assert!(closed_within(&mut s, Duration::from_secs(4)), "{head:?}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(3),
            "{took:?}"
        );
    }
    assert_eq!(up.calls.load(Ordering::SeqCst), 0);
    assert_eq!(gw.metric(PROXY_CONNECTIONS).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_read_timeout() {
    let up = upstream().await;
    let toml =
        config(up.addr, "").replace("[server]\n", "[server]\nheader_read_timeout_ms = 1000\n");
    let gw = start("adv-idle", &toml);
    let started = Instant::now();
    let answer = raw(
        gw.listen,
        b"GET /v1/models HTTP/1.1\r\nHost: gw.test\r\n\r\n",
        Duration::from_secs(6),
    );
    let took = started.elapsed();
    assert_eq!(status_of(&answer), 200);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_over_max_header_bytes_is_refused() {
    let up = upstream().await;
    let toml = config(up.addr, "").replace("[server]\n", "[server]\nmax_header_bytes = 8192\n");
    let gw = start("adv-head-size", &toml);
    let big = "a".repeat(9_000);
    let answer = raw(
        gw.listen,
        &request("GET /v1/models", &[("X-Filler", &big)], ""),
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&answer), 431, "{answer}");
    let fits = "a".repeat(7_000);
    let (status, _) = exchange(
        gw.listen,
        &request("GET /v1/models", &[("X-Filler", &fits)], ""),
    );
    assert_eq!(status, 200);
    assert_eq!(up.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_has_its_own_connection_cap_and_timeout() {
    let up = upstream().await;
    let toml = config(up.addr, "").replace(
        "[server]\n",
        "[server]\nadmin_max_connections = 2\nheader_read_timeout_ms = 1000\n",
    );
    let gw = start("adv-admin", &toml);
    let mut held: Vec<_> = (0..10)
        .filter_map(|_| half_sent(gw.admin, b"GET /metrics HTTP/1.1\r\n"))
        .collect();
    assert_eq!(held.len(), 10);
    for s in &mut held {
        assert!(closed_within(s, Duration::from_secs(4)));
    }
    let refused = gw
        .metric("passport_gate_connections_refused_total{listener=\"admin\"}")
        .await;
    assert_eq!(refused, 8.0);
    // The proxy listener is not affected by the admin cap.
    assert_eq!(
        send(gw.listen, "GET", "/v1/models", &[], b"")
            .await
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_accepts_back_off_and_log_a_counted_line_not_a_flood() {
    let up = upstream().await;
    let toml =
        config(up.addr, "").replace("[server]\n", "[server]\nheader_read_timeout_ms = 1000\n");
    let gw = start("adv-emfile", &toml);
    let pid = gw.child.id();
    let limit = open_fds(pid) + 5;
    let status = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .unwrap();
    assert!(status.success());
    let head = b"GET /v1/models HTTP/1.1\r\n";
    let held: Vec<_> = (0..40).filter_map(|_| half_sent(gw.listen, head)).collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(held);
    let errors = metric_reaches(
        &gw,
        "passport_gate_accept_errors_total{listener=\"proxy\"}",
        1.0,
    )
    .await;
    assert!(errors >= 1.0);
    let resp = send(gw.listen, "GET", "/v1/models", &[], b"").await;
    assert_eq!(resp.status(), 200);
    let lines: Vec<String> = gw
        .drain_lines()
        .into_iter()
        .filter(|l| l.contains("accept failed"))
        .collect();
    assert!(
        !lines.is_empty() && lines.len() <= 2,
        "{} accept errors logged as {lines:#?}",
        errors
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_nominate_a_header_the_gateway_judges() {
    let up = upstream().await;
    let extra = "\n[binding]\nrequester_header = \"X-Requester-Address\"\ngrants = []\n";
    let gw = start("adv-connection", &config(up.addr, extra));
    let f = support::live("urn:aps:agent:adversarial");
    let sig = f.sign("/v1/chat/completions", BODY.as_bytes());
    for nominated in [
        "x-requester-address",
        "X-Agent-Passport",
        "keep-alive, x-agent-sig",
        "host",
        "content-length",
        "content-type",
        "x-forwarded-for",
        "x-forwarded-host",
        "forwarded",
        "x-aps-principal",
    ] {
        let headers = [
            ("Connection", nominated),
            ("X-Agent-Passport", f.passport.as_str()),
            ("X-Agent-Sig", sig.as_str()),
            ("X-Requester-Address", f.principal_address.as_str()),
        ];
        for target in ["POST /v1/chat/completions", "GET /v1/models"] {
            let got = exchange(gw.listen, &request(target, &headers, BODY));
            assert_eq!(
                got,
                (400, "connection_header_invalid".to_owned()),
                "{target} with Connection: {nominated}"
            );
        }
    }
    assert_eq!(up.calls.load(Ordering::SeqCst), 0, "{:?}", up.seen());
    // Other hop-by-hop nominations still work.
    let resp = send(
        gw.listen,
        "GET",
        "/v1/models",
        &[("connection", "x-hop"), ("x-hop", "1")],
        b"",
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(!text(resp).await.contains("x-hop"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_encoding_other_than_chunked_is_refused() {
    let up = upstream().await;
    let gw = start("adv-te", &config(up.addr, ""));
    let chunked_body = "4\r\n{}{}\r\n0\r\n\r\n";
    for (te_lines, expected) in [
        // hyper lets these through; the gateway refuses them.
        (
            "Transfer-Encoding: gzip, chunked\r\n",
            "transfer_encoding_unsupported",
        ),
        (
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            "transfer_encoding_unsupported",
        ),
        (
            "Transfer-Encoding: chunked, chunked\r\n",
            "transfer_encoding_unsupported",
        ),
        // hyper refuses these itself (its 400 has no body).
        ("Transfer-Encoding: chunked, gzip\r\n", ""),
        ("Transfer-Encoding: identity\r\n", ""),
    ] {
        let bytes = format!(
            "POST /v1/other HTTP/1.1\r\nHost: gw.test\r\n{te_lines}Connection: close\r\n\r\n{chunked_body}"
        );
        let got = exchange(gw.listen, bytes.as_bytes());
        assert_eq!(got, (400, expected.to_owned()), "{te_lines:?}");
    }
    assert_eq!(up.calls.load(Ordering::SeqCst), 0, "{:?}", up.seen());
    let bytes = format!(
        "POST /v1/other HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n{chunked_body}"
    );
    assert_eq!(exchange(gw.listen, bytes.as_bytes()).0, 200);
    assert_eq!(up.seen()[0].body.as_ref(), b"{}{}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_framed_by_chunked_and_closes() {
    let up = upstream().await;
    let gw = start("adv-cl-te", &config(up.addr, ""));
    // RFC 9112 section 6.3: Transfer-Encoding wins and the connection is closed after
    // the response, so bytes after the chunked body can never become a second request.
    for order in [
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
    ] {
        let bytes = format!(
            "POST /v1/other HTTP/1.1\r\nHost: gw.test\r\n{order}\r\n5\r\nhello\r\n0\r\n\r\nGET /v1/smuggled HTTP/1.1\r\nHost: gw.test\r\n\r\n"
        );
        let answer = raw(gw.listen, bytes.as_bytes(), Duration::from_secs(5));
        assert_eq!(status_of(&answer), 200, "{order:?}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for s in seen {
        assert_eq!(
            (s.uri.as_str(), s.body.as_ref()),
            ("/v1/other", &b"hello"[..])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_content_lengths_are_refused() {
    let up = upstream().await;
    let gw = start("adv-two-cl", &config(up.addr, ""));
    let two = |a: u32, b: u32| {
        format!(
            "POST /v1/other HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {a}\r\nContent-Length: {b}\r\nConnection: close\r\n\r\n{{}}{{}}"
        )
    };
    assert_eq!(
        status_of(&raw(
            gw.listen,
            two(2, 4).as_bytes(),
            Duration::from_secs(5)
        )),
        400
    );
    assert_eq!(up.calls.load(Ordering::SeqCst), 0);
    // Equal values are one length (RFC 9112 section 6.3 allows folding them).
    assert_eq!(
        status_of(&raw(
            gw.listen,
            two(4, 4).as_bytes(),
            Duration::from_secs(5)
        )),
        200
    );
    assert_eq!(up.seen()[0].body.as_ref(), b"{}{}");
}
