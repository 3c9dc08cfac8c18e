//! The real `passport-gate serve` binary against a local upstream.

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;

use crate::support;

use support::serve::{config, echo, send, spawn, start, text, upstream, workdir, CHAIN};

const BODY: &[u8] =
    br#"{"model":"qwen/qwen3-32b","messages":[{"role":"user","content":"hi"}],"stream":true}"#;

/// POSTs `BODY` to `path` with the given passport and signature headers.
async fn post_with(
    addr: SocketAddr,
    path: &str,
    passport: &str,
    sig: &str,
) -> http::Response<hyper::body::Incoming> {
    send(
        addr,
        "POST",
        path,
        &[("x-agent-passport", passport), ("x-agent-sig", sig)],
        BODY,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_drops_hop_by_hop_headers_and_adds_forwarded() {
    let up = upstream().await;
    let gw = start("forward", &config(up.addr, ""));
    let resp = send(
        gw.listen,
        "GET",
        "/v1/models?limit=5&after=x",
        &[
            ("connection", "x-hop-secret"),
            ("x-hop-secret", "1"),
            ("proxy-authorization", "Basic Zm9v"),
            ("authorization", "Bearer upstream-token"),
            ("x-forwarded-for", "192.0.2.7"),
        ],
        b"",
    )
    .await;
    assert_eq!(resp.status(), 200);
    let seen: serde_json::Value = serde_json::from_str(&text(resp).await).unwrap();
    assert_eq!(seen["uri"], "/v1/models?limit=5&after=x");
    assert_eq!(seen["method"], "GET");
    let h = &seen["headers"];
    assert!(h.get("x-hop-secret").is_none(), "{h}");
    assert!(h.get("proxy-authorization").is_none(), "{h}");
    assert_eq!(h["authorization"], "Bearer upstream-token");
    assert_eq!(h["x-forwarded-for"], "192.0.2.7, 127.0.0.1");
    assert!(
        h["forwarded"]
            .as_str()
            .unwrap()
            .starts_with("for=127.0.0.1;proto=http"),
        "{h}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_routes_verify_before_forwarding_and_stream_the_answer() {
    let up = upstream().await;
    let gw = start("guarded", &config(up.addr, ""));
    let f = support::live("urn:aps:agent:e2e");
    let path = "/v1/chat/completions";

    // A tampered body never reaches the upstream.
    let sig = f.sign(path, b"{\"model\":\"qwen/qwen3-32b\"}");
    let resp = post_with(gw.listen, path, &f.passport, &sig).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert!(text(resp).await.contains("agent_sig_invalid"));
    assert_eq!(up.calls.load(Ordering::SeqCst), 0);

    // An accepted streaming call: the first SSE chunk arrives while the upstream still
    // holds back its last one.
    let sig = f.sign(path, BODY);
    let resp = post_with(gw.listen, path, &f.passport, &sig).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-inference-id"], "up-1");
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("the first chunk arrived before the stream ended")
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
    assert_eq!(up.calls.load(Ordering::SeqCst), 1);

    // No passport on a guarded route: passes (optional mode), unbuffered.
    up.release_last_chunk.send(()).unwrap();
    let resp = send(gw.listen, "POST", path, &[], BODY).await;
    assert_eq!(resp.status(), 200);
    let _ = text(resp).await;

    let metrics = text(send(gw.admin, "GET", "/metrics", &[], b"").await).await;
    assert!(
        metrics.contains(
            "passport_gate_requests_total{code=\"agent_sig_invalid\",outcome=\"rejected\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("passport_gate_requests_total{code=\"\",outcome=\"accepted\"} 1"));
    assert!(metrics.contains("passport_gate_requests_total{code=\"\",outcome=\"passthrough\"} 1"));
    assert_eq!(
        text(send(gw.admin, "GET", "/healthz", &[], b"").await).await,
        "ok\n"
    );
    assert_eq!(
        send(gw.admin, "GET", "/readyz", &[], b"").await.status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_rules_guard_forward_or_refuse() {
    let up = upstream().await;
    let extra = "\n[routes]\nguarded = [\"POST /v1/embeddings\"]\nunguarded = \"refuse\"\n";
    let gw = start("routes", &config(up.addr, extra));
    // Not guarded and refused.
    let resp = send(gw.listen, "POST", "/v1/chat/completions", &[], BODY).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(text(resp).await.contains("route_not_allowed"));
    // Guarded: a malformed passport is judged, a request without one passes.
    let resp = send(
        gw.listen,
        "POST",
        "/v1/embeddings",
        &[("x-agent-passport", "e30=")],
        BODY,
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert!(text(resp).await.contains("sig_header_mismatch"));
    let resp = send(gw.listen, "POST", "/v1/embeddings", &[], b"{}").await;
    assert_eq!(resp.status(), 200);
    // Another method on a guarded path is a different route: refused here.
    let resp = send(gw.listen, "GET", "/v1/embeddings", &[], b"").await;
    assert_eq!(resp.status(), 404);

    let forward = start(
        "routes-forward",
        &config(up.addr, "\n[routes]\nguarded = [\"POST /v1/embeddings\"]\n"),
    );
    // Not guarded and forwarded: passport headers are not even looked at.
    let resp = send(
        forward.listen,
        "POST",
        "/v1/other",
        &[("x-agent-passport", "e30=")],
        b"{}",
    )
    .await;
    assert_eq!(resp.status(), 200);
    let seen: serde_json::Value = serde_json::from_str(&text(resp).await).unwrap();
    assert_eq!(seen["uri"], "/v1/other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_is_a_502_problem() {
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = start("dead", &config(dead, ""));
    let resp = send(gw.listen, "GET", "/v1/models", &[], b"").await;
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert!(text(resp).await.contains("upstream_unavailable"));
}

#[test]
fn each_bad_setting_is_a_clear_startup_error() {
    let cases = [
        ("[server]\nupstream = \"ftp://x\"\n", "server.upstream"),
        (
            "[server]\nupstream = \"http://127.0.0.1:1\"\nlisten = \"here\"\n",
            "server.listen",
        ),
        (
            "[server]\nupstream = \"http://127.0.0.1:1\"\n[agent_envelope]\nenabled = true\n",
            "agent_envelope.chain_id",
        ),
        (
            "[server]\nupstream = \"http://127.0.0.1:1\"\n[agent_envelope]\nmax_body_size = 0\n",
            "agent_envelope.max_body_size",
        ),
        (
            "[server]\nupstream = \"http://127.0.0.1:1\"\n[routes]\nguarded = [\"/v1\"]\n",
            "routes.guarded",
        ),
        (
            "[server]\nupstream = \"http://127.0.0.1:1\"\n[binding]\nchain_node = \"node:1317\"\n",
            "binding.chain_node",
        ),
        (
            "[server]\nupstream = \"http://127.0.0.1:1\"\ntypo = 1\n",
            "unknown field `typo`",
        ),
        ("[server]\n", "server.upstream"),
    ];
    for (i, (toml, expected)) in cases.iter().enumerate() {
        let (mut child, lines, _dir) = spawn(&format!("bad{i}"), toml, &[]);
        let status = child.wait().unwrap();
        let stderr: Vec<String> = lines.iter().collect();
        assert_eq!(status.code(), Some(2), "case {i}: {stderr:?}");
        assert!(
            stderr.iter().any(|l| l.contains(expected)),
            "case {i}: expected {expected:?} in {stderr:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_and_loses_no_event() {
    let up = upstream().await;
    let dir = workdir("shutdown-events");
    let events = dir.join("events.jsonl");
    let extra = format!(
        "\n[attribution]\nfile = {:?}\n",
        events.display().to_string()
    );
    let mut gw = start("shutdown", &config(up.addr, &extra));
    let f = support::live("urn:aps:agent:e2e");
    let path = "/v1/chat/completions";
    let sig = f.sign(path, BODY);
    for _ in 0..20 {
        up.release_last_chunk.send(()).unwrap();
        let resp = post_with(gw.listen, path, &f.passport, &sig).await;
        assert_eq!(resp.status(), 200);
        let _ = text(resp).await;
    }
    // One more, held open by the upstream while the gateway is told to stop.
    let resp = post_with(gw.listen, path, &f.passport, &sig).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let _first = body.frame().await.unwrap().unwrap();
    let kill = Command::new("kill")
        .arg("-TERM")
        .arg(gw.child.id().to_string())
        .status()
        .unwrap();
    assert!(kill.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    up.release_last_chunk.send(()).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(
        rest,
        Bytes::from_static(b"data: [DONE]\n\n"),
        "the in-flight stream finished"
    );
    let status = gw.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let stderr = gw.lines_until_closed();
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("21 written, 0 dropped (queue full), 0 lost at shutdown")),
        "{stderr:?}"
    );
    let written = std::fs::read_to_string(&events).unwrap();
    assert_eq!(written.lines().count(), 21);
    for line in written.lines() {
        let e: passport_gate::attribution::AttributionEvent = serde_json::from_str(line).unwrap();
        assert_eq!(e.inference_id, "up-1");
        assert_eq!(e.agent_id, "urn:aps:agent:e2e");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_command_signs_sends_and_streams_through_the_gateway() {
    // The demo's echo upstream, run by the binary (`passport-gate echo`).
    let upstream = echo();
    let gw = start("request-cli", &config(upstream.addr, ""));
    let dir = workdir("request-cli-keys");
    let principal = dir.join("principal.json");
    let agent = dir.join("agent.json");
    let pg = env!("CARGO_BIN_EXE_passport-gate");
    for (flag, path) in [("--principal", &principal), ("--agent", &agent)] {
        assert!(Command::new(pg)
            .args(["keygen", flag, "--out"])
            .arg(path)
            .status()
            .unwrap()
            .success());
    }
    let minted = Command::new(pg)
        .args(["mint", "--principal-key"])
        .arg(&principal)
        .arg("--agent-key")
        .arg(&agent)
        .args([
            "--agent-id",
            "urn:aps:agent:cli-request",
            "--chain-id",
            CHAIN,
            "--ttl",
            "10m",
        ])
        .output()
        .unwrap();
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let passport_file = dir.join("passport.txt");
    std::fs::write(&passport_file, &minted.stdout).unwrap();
    let url = format!("http://{}/v1/chat/completions", gw.listen);
    let request = |chain: &str, body: &str| {
        Command::new(pg)
            .arg("request")
            .arg(&url)
            .arg("--agent-key")
            .arg(&agent)
            .arg("--passport-file")
            .arg(&passport_file)
            .args(["--chain-id", chain, "--body", body])
            .output()
            .unwrap()
    };
    let plain = request(
        CHAIN,
        r#"{"model":"echo-1","messages":[{"role":"user","content":"hello there"}]}"#,
    );
    assert_eq!(
        plain.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&plain.stdout).unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "echo: hello there"
    );
    assert!(String::from_utf8_lossy(&plain.stderr).contains("200 OK"));

    let streamed = request(
        CHAIN,
        r#"{"model":"echo-1","stream":true,"messages":[{"role":"user","content":"a b c"}]}"#,
    );
    assert_eq!(streamed.status.code(), Some(0));
    let text = String::from_utf8_lossy(&streamed.stdout);
    // "echo: a b c" in four word chunks, then [DONE].
    assert_eq!(text.matches("data: ").count(), 5, "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");

    // A passport for another chain is refused by the gateway; the command says so.
    let wrong = request("gonka-testnet", r#"{"model":"echo-1"}"#);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stdout).contains("agent_sig_invalid"));
}
