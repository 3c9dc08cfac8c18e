//! The audit trail through the real binary: refused requests are recorded with the
//! identity they claimed marked unverified, accepted ones with the token usage of the
//! upstream's answer (JSON, or the final chunk of a stream that is not held back), and
//! `audit report` verifies the chain before it sums calls and tokens.

use crate::support;

use axum::body::Body as AxumBody;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::serve::{config, start, ReceiverStream};

const URI: &str = "/v1/chat/completions";
const BODY: &[u8] = br#"{"model":"echo-1","messages":[{"role":"user","content":"hi"}]}"#;
const USAGE_CHUNK: &str = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":11,\"total_tokens\":18}}\n\n";

/// An OpenAI-like upstream: JSON with usage on `/v1/completions`; on `/v1/chat/completions` an
/// event stream whose first chunk comes at once and whose usage chunk and `[DONE]` come
/// only when the test sends on the returned channel.
async fn openai_upstream() -> (std::net::SocketAddr, tokio::sync::mpsc::UnboundedSender<()>) {
    let (go_tx, go_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let go_rx = std::sync::Arc::new(tokio::sync::Mutex::new(go_rx));
    let app = Router::new()
        .route(
            "/v1/completions",
            post(|| async {
                http::Response::builder()
                    .header("content-type", "application/json")
                    .body(AxumBody::from(
                        r#"{"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#,
                    ))
                    .unwrap()
            }),
        )
        .route(
            URI,
            post(move || {
                let go = go_rx.clone();
                async move {
                    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
                    tokio::spawn(async move {
                        let first = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n";
                        let _ = tx.send(Ok(Bytes::from_static(first.as_bytes()))).await;
                        let _ = tokio::time::timeout(Duration::from_secs(10), go.lock().await.recv()).await;
                        let _ = tx.send(Ok(Bytes::from_static(USAGE_CHUNK.as_bytes()))).await;
                        let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
                    });
                    http::Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(AxumBody::from_stream(ReceiverStream(rx)))
                        .unwrap()
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, go_tx)
}

/// The events of the audit file at `path` once it holds `n` lines (within 10 s).
fn audit_events(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].clone())
            .collect();
        if lines.len() >= n || Instant::now() > deadline {
            assert_eq!(lines.len(), n, "{text}");
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn audit_toml(upstream: std::net::SocketAddr, dir: &Path, extra: &str) -> (String, PathBuf) {
    let audit = dir.join("audit.jsonl");
    let toml = config(
        upstream,
        &format!("\n[attribution]\naudit_file = {audit:?}\n{extra}"),
    );
    (toml, audit)
}

/// A passport header claiming `agent_id` and the fixture's principal, signed by no one.
fn forged_passport(agent_id: &str, principal: &str) -> String {
    use base64::Engine;
    let f = support::live("urn:aps:agent:x");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&f.passport)
        .unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    v["agent_id"] = agent_id.into();
    v["principal_address"] = principal.into();
    base64::engine::general_purpose::STANDARD.encode(v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_is_audited_with_its_claimed_identity_marked_unverified() {
    let (up, _go) = openai_upstream().await;
    let dir = support::serve::workdir("audit-refusals");
    let plain = dir.join("events.jsonl");
    let (toml, audit) = audit_toml(up, &dir, &format!("file = {plain:?}\n"));
    let gw = start("audit-refusals", &toml);
    let f = support::live("urn:aps:agent:honest");
    // A real passport with a signature over another body: agent_sig_invalid.
    let mut headers = f.headers(URI, b"{\"model\":\"other\"}");
    assert_eq!(support::post(gw.listen, URI, &headers, BODY).await.0, 401);
    // A forged passport naming someone else's principal and a huge agent id.
    headers[0].1 = forged_passport(&"a".repeat(5000), "gonka1victim");
    assert_eq!(support::post(gw.listen, URI, &headers, BODY).await.0, 400);
    let events = audit_events(&audit, 2);
    let first = &events[0];
    assert_eq!(first["outcome"], "refused");
    assert_eq!(first["code"], "agent_sig_invalid");
    assert_eq!(first["status"], 401);
    assert_eq!(first["method"], "POST");
    assert_eq!(first["path"], URI);
    assert!(first["refused_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(first["claimed_agent_id_unverified"], "urn:aps:agent:honest");
    assert_eq!(
        first["claimed_principal_address_unverified"],
        f.principal_address.as_str()
    );
    // No verified identity field at all: a reader of agent_id or principal_address
    // can never take a claim for a verified identity.
    for field in [
        "agent_id",
        "principal_address",
        "model",
        "verified_at",
        "passport_id",
    ] {
        assert!(first.get(field).is_none(), "{field}: {first}");
    }
    let forged = &events[1];
    assert_eq!(forged["code"], "agent_id_too_long");
    assert_eq!(
        forged["claimed_agent_id_unverified"]
            .as_str()
            .unwrap()
            .len(),
        256
    );
    assert_eq!(
        forged["claimed_principal_address_unverified"],
        "gonka1victim"
    );
    // The chain verifies with refusals in it; the plain JSON-lines sink has none.
    let verify = cli(&["audit", "verify", audit.to_str().unwrap()]);
    assert!(verify.status.success(), "{verify:?}");
    assert_eq!(std::fs::read_to_string(&plain).unwrap_or_default(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidi_controls_in_an_agent_id_are_escaped_in_the_audit_and_event_files() {
    let (up, _go) = openai_upstream().await;
    let dir = support::serve::workdir("audit-bidi");
    let plain = dir.join("events.jsonl");
    let (toml, audit) = audit_toml(up, &dir, &format!("file = {plain:?}\n"));
    let gw = start("audit-bidi", &toml);
    let agent_id = "urn:aps:agent:\u{202e}gpj.exe\u{2066}\u{85}";
    let f = support::live(agent_id);
    let (status, text) = support::post(gw.listen, URI, &f.headers(URI, BODY), BODY).await;
    assert_eq!(status, 200, "{text}");
    let events = audit_events(&audit, 1);
    assert_eq!(events[0]["agent_id"], agent_id);
    for file in [&audit, &plain] {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut text = String::new();
        while !text.contains('\n') && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            text = std::fs::read_to_string(file).unwrap_or_default();
        }
        assert!(
            !text.contains(['\u{202e}', '\u{2066}', '\u{85}']),
            "raw bidi or C1 control in {text:?}"
        );
        assert!(
            text.contains(r"urn:aps:agent:\u202egpj.exe\u2066\u0085"),
            "{text:?}"
        );
    }
    // The chain still verifies: the hash is over the event, not its spelling.
    let verify = cli(&["audit", "verify", audit.to_str().unwrap()]);
    assert!(verify.status.success(), "{verify:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_refusals_false_keeps_refusals_out_of_the_audit_file() {
    let (up, _go) = openai_upstream().await;
    let dir = support::serve::workdir("audit-no-refusals");
    let (toml, audit) = audit_toml(up, &dir, "audit_refusals = false\n");
    let gw = start("audit-no-refusals", &toml);
    let f = support::live("urn:aps:agent:honest");
    let bad = f.headers(URI, b"{}");
    assert_eq!(
        support::post(gw.listen, "/v1/completions", &bad, BODY)
            .await
            .0,
        401
    );
    let good = f.headers("/v1/completions", BODY);
    assert_eq!(
        support::post(gw.listen, "/v1/completions", &good, BODY)
            .await
            .0,
        200
    );
    let events = audit_events(&audit, 1);
    assert!(events[0].get("outcome").is_none(), "{}", events[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_usage_is_recorded_from_a_json_answer_and_from_the_last_chunk_of_a_stream() {
    let (up, go) = openai_upstream().await;
    let dir = support::serve::workdir("audit-usage");
    let (toml, audit) = audit_toml(up, &dir, "");
    let gw = start("audit-usage", &toml);
    let f = support::live("urn:aps:agent:tokens");
    let json = support::post(
        gw.listen,
        "/v1/completions",
        &f.headers("/v1/completions", BODY),
        BODY,
    )
    .await;
    assert_eq!(json.0, 200);

    // The stream reaches the client chunk by chunk: the first arrives while the upstream
    // still holds the usage chunk back.
    let resp = support::serve::send(
        gw.listen,
        "POST",
        URI,
        &f.headers(URI, BODY)
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
        BODY,
    )
    .await;
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("the first chunk is not held back")
        .unwrap()
        .unwrap();
    assert!(first.data_ref().unwrap().starts_with(b"data: "));
    go.send(()).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert!(rest.ends_with(b"data: [DONE]\n\n"));

    let events = audit_events(&audit, 2);
    assert_eq!(
        (
            &events[0]["prompt_tokens"],
            &events[0]["completion_tokens"],
            &events[0]["total_tokens"]
        ),
        (&3.into(), &5.into(), &8.into())
    );
    assert_eq!(
        (
            &events[1]["prompt_tokens"],
            &events[1]["completion_tokens"],
            &events[1]["total_tokens"]
        ),
        (&7.into(), &11.into(), &18.into())
    );

    // The report verifies the chain, then sums tokens per principal, agent, model and day.
    let report = cli(&["audit", "report", audit.to_str().unwrap(), "--json"]);
    assert!(report.status.success(), "{report:?}");
    assert!(String::from_utf8_lossy(&report.stderr).contains("chain verified: 2 line(s)"));
    let rows: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows[0]["principal_address"], f.principal_address.as_str());
    assert_eq!(rows[0]["agent_id"], "urn:aps:agent:tokens");
    assert_eq!(rows[0]["model"], "echo-1");
    assert_eq!(
        (
            &rows[0]["calls"],
            &rows[0]["prompt_tokens"],
            &rows[0]["completion_tokens"],
            &rows[0]["total_tokens"]
        ),
        (&2.into(), &10.into(), &16.into(), &26.into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_stream_still_gets_its_event() {
    let (up, go) = openai_upstream().await;
    let dir = support::serve::workdir("audit-hangup");
    let (toml, audit) = audit_toml(up, &dir, "");
    let gw = start("audit-hangup", &toml);
    let f = support::live("urn:aps:agent:hangup");
    let headers = f.headers(URI, BODY);
    let mut head = format!(
        "POST {URI} HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        BODY.len()
    );
    for (n, v) in &headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(BODY);
    // Reads the head and the first chunk, then closes the connection.
    let got = support::serve::raw(gw.listen, &request, Duration::from_millis(500));
    assert_eq!(support::serve::status_of(&got), 200, "{got}");
    let events = audit_events(&audit, 1);
    assert_eq!(events[0]["agent_id"], "urn:aps:agent:hangup");
    assert!(events[0].get("total_tokens").is_none());
    assert_eq!(events[0]["usage_missing"], "client_disconnected");
    drop(go);
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_passport-gate"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn audit_report_refuses_a_broken_chain_unless_no_verify_and_names_a_bad_line() {
    use passport_gate::attribution::{AttributionEvent, AuditFileSink, FsyncPolicy, Sink};
    let dir = support::serve::workdir("audit-report");
    let path = dir.join("audit.jsonl");
    let mut sink = AuditFileSink::open(&path, FsyncPolicy::Always, None).unwrap();
    for n in 0..3u64 {
        sink.write(&AttributionEvent {
            v: "aps-attribution-v1".into(),
            event_id: format!("{n:032x}"),
            inference_id: format!("inf-{n}"),
            chain_id: "gonka-mainnet".into(),
            model: "echo-1".into(),
            agent_id: "urn:aps:agent:a".into(),
            principal_address: "gonka1alice".into(),
            request_body_sha256: "00".repeat(32),
            envelope_sha256: "11".repeat(32),
            passport_expires_at: "2026-05-21T13:00:00Z".into(),
            verified_at: "2026-05-21T12:00:00Z".into(),
            method: "POST".into(),
            path: URI.into(),
            status: 200,
            total_tokens: Some(10),
            ..Default::default()
        })
        .unwrap();
    }
    drop(sink);
    let p = path.to_str().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen("\"total_tokens\":10", "\"total_tokens\":1000", 1),
    )
    .unwrap();
    let refused = cli(&["audit", "report", p]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("BROKEN") && err.contains("audit.jsonl:1"),
        "{err}"
    );
    assert!(refused.stdout.is_empty());

    let unverified = cli(&["audit", "report", p, "--no-verify", "--json"]);
    assert!(unverified.status.success());
    assert!(String::from_utf8_lossy(&unverified.stderr).contains("WARNING: --no-verify"));
    let rows: serde_json::Value = serde_json::from_slice(&unverified.stdout).unwrap();
    assert_eq!(rows[0]["total_tokens"], 1020);

    // A line that is no event is named, never skipped.
    std::fs::write(&path, text.clone() + "not json\n" + &text).unwrap();
    let bad = cli(&["audit", "report", p, "--no-verify"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("audit.jsonl:4"),
        "{bad:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_forged_requests_is_bounded_and_does_not_crowd_out_accepted_events() {
    let (up, _go) = openai_upstream().await;
    let dir = support::serve::workdir("audit-flood");
    let (toml, audit) = audit_toml(up, &dir, "");
    let toml = toml.replace(
        "max_ttl_seconds = 604800\n",
        "max_ttl_seconds = 604800\nattribution_queue_cap = 8\n",
    );
    let gw = start("audit-flood", &toml);
    let f = support::live("urn:aps:agent:flood");
    let forged = f.headers(URI, b"{\"model\":\"forged\"}");
    let honest = f.headers("/v1/completions", BODY);
    const FORGED: usize = 400;
    let started = Instant::now();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    // Twenty at a time: the gateway's own connection limits are not what is tested.
    for batch in 0..FORGED / 20 {
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (addr, headers) = (gw.listen, forged.clone());
            tasks.push(tokio::spawn(async move {
                support::post(addr, URI, &headers, BODY).await.0
            }));
        }
        if batch % 5 == 2 {
            let (addr, headers) = (gw.listen, honest.clone());
            tasks.push(tokio::spawn(async move {
                support::post(addr, "/v1/completions", &headers, BODY)
                    .await
                    .0
            }));
        }
        for t in tasks {
            *statuses.entry(t.await.unwrap()).or_default() += 1;
        }
    }
    assert_eq!(statuses.get(&401), Some(&FORGED), "{statuses:?}");
    assert_eq!(statuses.get(&200), Some(&4), "{statuses:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // Every refusal is written or counted as dropped; every accepted event is written.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        let accepted = text
            .lines()
            .filter(|l| !l.contains("\"outcome\":\"refused\""))
            .count();
        let refused = text.lines().count() - accepted;
        let dropped = gw
            .metric("passport_gate_attribution_events_dropped_total")
            .await as usize;
        if accepted == 4 && refused + dropped == FORGED {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "accepted {accepted}, refused {refused}, dropped {dropped}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An upstream answering `/v1/chat/completions` with `chunks` SSE chunks of 64 KiB and
/// `/v1/completions` with a JSON body of `chunks` times 64 KiB, usage at its end.
async fn large_upstream(chunks: usize) -> std::net::SocketAddr {
    let chunk = || {
        let mut c = b"data: {\"choices\":[{\"delta\":{\"content\":\"".to_vec();
        c.resize(64 * 1024 - 16, b'x');
        c.extend_from_slice(b"\"}}]}\n\n");
        Bytes::from(c)
    };
    let stream = move |last: &'static [u8], json: bool| {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
        tokio::spawn(async move {
            if json {
                let _ = tx.send(Ok(Bytes::from_static(b"{\"pad\":\""))).await;
            }
            for _ in 0..chunks {
                let c = if json {
                    Bytes::from(vec![b'x'; 64 * 1024])
                } else {
                    chunk()
                };
                if tx.send(Ok(c)).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(Ok(Bytes::from_static(last))).await;
        });
        AxumBody::from_stream(ReceiverStream(rx))
    };
    let app = Router::new()
        .route(
            URI,
            post(move || async move {
                http::Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(stream(USAGE_CHUNK.as_bytes(), false))
                    .unwrap()
            }),
        )
        .route(
            "/v1/completions",
            post(move || async move {
                http::Response::builder()
                    .header("content-type", "application/json")
                    .body(stream(
                        b"\",\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}",
                        true,
                    ))
                    .unwrap()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looking_for_usage_holds_bounded_memory_for_long_streams_and_large_answers() {
    const CHUNKS: usize = 1024; // 64 MiB each way
    let up = large_upstream(CHUNKS).await;
    let dir = support::serve::workdir("audit-usage-memory");
    let (toml, audit) = audit_toml(up, &dir, "");
    let gw = start("audit-usage-memory", &toml);
    let f = support::live("urn:aps:agent:big");
    // Warm up (allocator, connection pools), then measure.
    for path in [URI, "/v1/completions"] {
        let (status, _) = support::post(gw.listen, path, &f.headers(path, BODY), BODY).await;
        assert_eq!(status, 200);
    }
    let before = gw.rss_kib();
    let mut peak = before;
    for (i, path) in [URI, "/v1/completions", URI, "/v1/completions"]
        .iter()
        .enumerate()
    {
        let body = format!(r#"{{"model":"echo-1","messages":[],"n":{i}}}"#);
        let headers: Vec<(String, String)> = f.headers(path, body.as_bytes());
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let resp = support::serve::send(gw.listen, "POST", path, &headers, body.as_bytes()).await;
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut received = 0usize;
        while let Some(frame) = body.frame().await {
            received += frame.unwrap().data_ref().map_or(0, |d| d.len());
            if received % (8 << 20) < 64 * 1024 {
                peak = peak.max(gw.rss_kib());
            }
        }
        assert!(received >= CHUNKS * 64_000, "{path}: {received}");
    }
    peak = peak.max(gw.rss_kib());
    let grown = peak.saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "RSS grew by {grown} KiB while 256 MiB passed (before {before} KiB, peak {peak} KiB)"
    );
    let events = audit_events(&audit, 6);
    // The streams' usage came from their last chunk; the JSON answers were too large
    // to be searched, so they record none.
    assert_eq!(events[2]["total_tokens"], 18);
    assert!(events[3].get("total_tokens").is_none(), "{}", events[3]);
    assert_eq!(events[3]["usage_missing"], "too_large", "{}", events[3]);
    assert_eq!(events[4]["total_tokens"], 18);
    assert!(events[4].get("usage_missing").is_none(), "{}", events[4]);
    assert_eq!(events[5]["usage_missing"], "too_large", "{}", events[5]);
}

/// Anyone can send forged requests and each refusal is an audit line: at most
/// `audit_refusals_per_second` of them are written in a second, and the rest are counted
/// as dropped, so the audit file grows by a bounded number of lines a second however
/// fast the flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_events_are_written_at_most_at_their_rate_and_the_rest_counted() {
    let (up, _go) = openai_upstream().await;
    let dir = support::serve::workdir("audit-refusal-rate");
    let (toml, audit) = audit_toml(up, &dir, "audit_refusals_per_second = 10\n");
    let gw = start("audit-refusal-rate", &toml);
    let f = support::live("urn:aps:agent:refusal-rate");
    let forged = f.headers(URI, b"{\"model\":\"forged\"}");
    const FORGED: usize = 200;
    let started = Instant::now();
    for _ in 0..FORGED / 20 {
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (addr, headers) = (gw.listen, forged.clone());
                tokio::spawn(async move { support::post(addr, URI, &headers, BODY).await.0 })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 401);
        }
    }
    let seconds = started.elapsed().as_secs() as usize + 1;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let refused = std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"outcome\":\"refused\""))
            .count();
        let dropped = gw
            .metric("passport_gate_attribution_events_dropped_total")
            .await as usize;
        if refused + dropped == FORGED {
            assert!(
                (1..=10 * (seconds + 1)).contains(&refused),
                "{refused} refusal lines in about {seconds} s"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "refused {refused}, dropped {dropped}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The events of an echo upstream's answers: a JSON answer whose usage has no
/// `total_tokens` (the report sums prompt and completion), and a stream without a usage
/// chunk (the event says `not_in_stream`, and the report counts the call apart instead
/// of adding zero tokens silently).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_says_why_usage_is_missing_and_the_report_counts_those_calls_apart() {
    let echo = support::serve::echo();
    let dir = support::serve::workdir("audit-usage-missing");
    let (toml, audit) = audit_toml(echo.addr, &dir, "");
    let gw = start("audit-usage-missing", &toml);
    let f = support::live("urn:aps:agent:usage-missing");
    let (status, text) = support::post(gw.listen, URI, &f.headers(URI, BODY), BODY).await;
    assert_eq!(status, 200, "{text}");
    let stream = br#"{"model":"echo-1","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let (status, text) = support::post(gw.listen, URI, &f.headers(URI, stream), stream).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let events = audit_events(&audit, 2);
    // "hi" and "echo: hi": one prompt word, two completion words, no total.
    assert_eq!(
        (&events[0]["prompt_tokens"], &events[0]["completion_tokens"]),
        (&1.into(), &2.into())
    );
    assert!(events[0].get("total_tokens").is_none(), "{}", events[0]);
    assert!(events[0].get("usage_missing").is_none(), "{}", events[0]);
    assert_eq!(events[1]["usage_missing"], "not_in_stream", "{}", events[1]);

    let report = cli(&["audit", "report", audit.to_str().unwrap(), "--json"]);
    assert!(report.status.success(), "{report:?}");
    let rows: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let row = &rows[0];
    assert_eq!(row["calls"], 2, "{rows}");
    assert_eq!(row["total_tokens"], 3, "{rows}");
    assert_eq!(
        (&row["calls_with_usage"], &row["calls_without_usage"]),
        (&1.into(), &1.into()),
        "{rows}"
    );
    assert_eq!(row["usage_missing"]["not_in_stream"], 1, "{rows}");
    let table = cli(&["audit", "report", audit.to_str().unwrap()]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("calls without usage (not_in_stream): 1"),
        "{table}"
    );
}

/// A passport header claiming 300 control characters as both agent id and principal
/// (JSON escapes each to six bytes: the longest lines a claim can make).
fn forged_with_controls() -> String {
    let claim = "\u{1}".repeat(300);
    forged_passport(&claim, &claim)
}

/// Every string in an event is bounded, whatever the client sends: a 50,000-byte path
/// is cut to 1024 bytes in accepted and refused events alike (`path_cut_bytes` says
/// how much was cut). A flood of refused requests with such paths writes at most
/// `audit_refusals_per_second` lines a second (100), each bounded: the byte rate is
/// printed with `--nocapture` (SECURITY.md's figure; run alone, the flood outpaces the
/// rate; that the rest is dropped and counted is
/// `refusal_events_are_written_at_most_at_their_rate_and_the_rest_counted`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lines_are_bounded_whatever_the_path_and_the_refusal_byte_rate_with_them() {
    let (up, _go) = openai_upstream().await;
    let dir = support::serve::workdir("audit-line-bounds");
    let (toml, audit) = audit_toml(up, &dir, "");
    let toml = toml.replace(
        "max_ttl_seconds = 604800\n",
        "max_ttl_seconds = 604800\nmode = \"required\"\n",
    );
    let gw = start("audit-line-bounds", &toml);
    let f = support::live("urn:aps:agent:long-path");
    // Long enough, with the forged passport, to nearly fill the 64 KiB request head.
    let long = format!("/v1/{}", "a".repeat(50_000));
    // Accepted: signed over the long path (the upstream has no such route: 404).
    let (status, _) = support::post(gw.listen, &long, &f.headers(&long, BODY), BODY).await;
    assert_eq!(status, 404);
    let accepted = audit_events(&audit, 1);
    assert_eq!(accepted[0]["agent_id"], "urn:aps:agent:long-path");
    assert_eq!(accepted[0]["path"].as_str().unwrap(), &long[..1024]);
    assert_eq!(accepted[0]["path_cut_bytes"], long.len() - 1024);

    // Refused, for 3 seconds, from 32 clients each sending one request per connection
    // as fast as the gateway answers (raw bytes: the debug HTTP client is too slow to
    // outpace the rate).
    let mut forged = f.headers(&long, BODY);
    forged[0].1 = forged_with_controls();
    let mut wire = format!(
        "POST {long} HTTP/1.1\r\nhost: gw\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        BODY.len()
    );
    for (n, v) in &forged {
        wire.push_str(&format!("{n}: {v}\r\n"));
    }
    wire.push_str("\r\n");
    let wire = std::sync::Arc::new([wire.as_bytes(), BODY].concat());
    let before = std::fs::metadata(&audit).unwrap().len();
    let started = Instant::now();
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let (addr, wire) = (gw.listen, wire.clone());
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut sent = 0usize;
                while started.elapsed() < Duration::from_secs(3) {
                    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
                    c.write_all(&wire).await.unwrap();
                    let mut answer = Vec::new();
                    c.read_to_end(&mut answer).await.unwrap();
                    assert!(
                        answer.starts_with(b"HTTP/1.1 400 "),
                        "{}",
                        String::from_utf8_lossy(&answer)
                    );
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    let mut sent = 0usize;
    for c in clients {
        sent += c.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&audit).unwrap();
        let refused = text.lines().count() - 1;
        let dropped = gw
            .metric("passport_gate_attribution_events_dropped_total")
            .await as usize;
        if refused + dropped == sent || Instant::now() > deadline {
            assert_eq!(refused + dropped, sent);
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let refusal_lines: Vec<&str> = text.lines().skip(1).collect();
    let longest = refusal_lines.iter().map(|l| l.len()).max().unwrap();
    let bytes = std::fs::metadata(&audit).unwrap().len() - before;
    let rate = bytes as f64 / elapsed;
    eprintln!(
        "refusal lines: {} of {sent} requests ({:.0} a second) in {elapsed:.1} s, {bytes} bytes, {:.0} KB/s, longest line {longest} bytes",
        refusal_lines.len(),
        sent as f64 / elapsed,
        rate / 1000.0
    );
    for line in &refusal_lines {
        let e: serde_json::Value =
            serde_json::from_str::<serde_json::Value>(line).unwrap()["event"].clone();
        assert_eq!(e["code"], "agent_id_too_long", "{e}");
        assert_eq!(e["path"].as_str().unwrap().len(), 1024);
        assert_eq!(e["path_cut_bytes"], long.len() - 1024);
        assert_eq!(
            e["claimed_agent_id_unverified"].as_str().unwrap().len(),
            256
        );
    }
    // 256 control characters are 1,536 bytes once escaped, twice, plus a 1,024-byte
    // path and the rest of the line.
    assert!(longest <= 4_800, "a refusal line of {longest} bytes");
    assert!(
        refusal_lines.len() as f64 <= 100.0 * (elapsed + 2.0),
        "{} lines in {elapsed:.1} s",
        refusal_lines.len()
    );
    let verify = cli(&["audit", "verify", audit.to_str().unwrap()]);
    assert!(verify.status.success(), "{verify:?}");
}

/// SIGTERM while an answer still streams and the upstream outlives the grace period:
/// the audit file gets the request's event, marked `cut_at_shutdown` with the status
/// the head carried, and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_at_shutdown_gets_an_audit_event_marked_cut() {
    let (up, _go) = openai_upstream().await;
    let dir = support::serve::workdir("audit-shutdown-cut");
    let (toml, audit) = audit_toml(up, &dir, "");
    let toml = toml.replace("shutdown_grace_seconds = 10", "shutdown_grace_seconds = 1");
    let gw = start("audit-shutdown-cut", &toml);
    let f = support::live("urn:aps:agent:cut-stream");
    let resp = support::serve::send(
        gw.listen,
        "POST",
        URI,
        &f.headers(URI, BODY)
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
        BODY,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    // The first chunk arrived; the upstream holds the rest back (10 s) past the grace.
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().unwrap().starts_with(b"data: "));
    let pid = gw.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let events = audit_events(&audit, 1);
    let e = &events[0];
    assert_eq!(e["agent_id"], "urn:aps:agent:cut-stream");
    assert_eq!(e["cut_at_shutdown"], true, "{e}");
    assert_eq!(e["status"], 200, "{e}");
    assert_eq!(e["usage_missing"], "cut_at_shutdown", "{e}");
    drop(body);
    let verify = cli(&["audit", "verify", audit.to_str().unwrap()]);
    assert!(verify.status.success(), "{verify:?}");
}

#[test]
fn audit_verify_report_and_usage_name_a_missing_file() {
    let dir = support::serve::workdir("audit-missing-file");
    let missing = dir.join("nope.jsonl");
    let m = missing.to_str().unwrap();
    for args in [
        vec!["audit", "verify", m],
        vec!["audit", "report", m],
        vec!["usage", "--audit-file", m],
    ] {
        let out = cli(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{m}: No such file or directory")),
            "{args:?}: {err}"
        );
    }
}

/// `passport-gate usage` over an audit file the gateway wrote: requests and tokens per
/// principal, agent and day, the calls without usage counted apart by reason, refusals
/// not counted, as a table, CSV and JSON, and nothing over a broken chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_counts_requests_and_tokens_per_principal_agent_and_period() {
    let (up, go) = openai_upstream().await;
    let dir = support::serve::workdir("audit-usage-command");
    let (toml, audit) = audit_toml(up, &dir, "");
    let gw = start("audit-usage-command", &toml);
    let alice = support::live_of(0x61, "urn:aps:agent:alice");
    let bob = support::live_of(0x62, "urn:aps:agent:bob");
    let json = "/v1/completions";
    for f in [&alice, &alice, &bob] {
        let (status, _) = support::post(gw.listen, json, &f.headers(json, BODY), BODY).await;
        assert_eq!(status, 200);
    }
    // Alice's stream whose client hangs up before the usage chunk.
    let mut head = format!(
        "POST {URI} HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        BODY.len()
    );
    for (n, v) in alice.headers(URI, BODY) {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(BODY);
    let got = support::serve::raw(gw.listen, &request, Duration::from_millis(500));
    assert_eq!(support::serve::status_of(&got), 200, "{got}");
    // A refusal: no verified identity, never counted.
    let bad = bob.headers(json, b"{}");
    assert_eq!(support::post(gw.listen, json, &bad, BODY).await.0, 401);
    audit_events(&audit, 5);
    drop(go);
    let a = audit.to_str().unwrap();

    let out = cli(&[
        "usage",
        "--audit-file",
        a,
        "--by",
        "principal,agent",
        "--period",
        "day",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("chain verified: 5 line(s)"));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let today = &passport_core::time::Timestamp::now().to_rfc3339()[..10];
    let row = |agent: &str| {
        rows.iter()
            .find(|r| r["agent_id"] == agent)
            .unwrap_or_else(|| panic!("{agent}: {rows:?}"))
    };
    let a_row = row("urn:aps:agent:alice");
    assert_eq!(a_row["period"], today);
    assert_eq!(a_row["principal_address"], alice.principal_address.as_str());
    assert_eq!(
        (
            &a_row["requests"],
            &a_row["requests_with_usage"],
            &a_row["requests_without_usage"]
        ),
        (&3.into(), &2.into(), &1.into()),
        "{a_row}"
    );
    assert_eq!(a_row["usage_missing"]["client_disconnected"], 1, "{a_row}");
    assert_eq!(a_row["total_tokens"], 16, "{a_row}");
    assert!(a_row.get("model").is_none(), "{a_row}");
    let b_row = row("urn:aps:agent:bob");
    assert_eq!(
        (&b_row["requests"], &b_row["total_tokens"]),
        (&1.into(), &8.into())
    );

    let csv = cli(&[
        "usage",
        "--audit-file",
        a,
        "--by",
        "agent",
        "--period",
        "all",
        "--format",
        "csv",
    ]);
    assert!(csv.status.success(), "{csv:?}");
    let csv = String::from_utf8_lossy(&csv.stdout).into_owned();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "period,agent_id,requests,requests_with_usage,requests_without_usage,prompt_tokens,completion_tokens,total_tokens,missing_too_large,missing_not_in_stream,missing_not_in_answer,missing_not_scanned,missing_client_disconnected,missing_upstream_failed,missing_cut_at_shutdown,missing_unrecorded,requests_limited"
    );
    assert_eq!(
        lines[1],
        "all,urn:aps:agent:alice,3,2,1,6,10,16,0,0,0,0,1,0,0,0,0"
    );
    assert_eq!(
        lines[2],
        "all,urn:aps:agent:bob,1,1,0,3,5,8,0,0,0,0,0,0,0,0,0"
    );

    let table = cli(&["usage", "--audit-file", a]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.contains("requests without usage (client_disconnected): 1"),
        "{table}"
    );

    let bad_by = cli(&["usage", "--audit-file", a, "--by", "tenant"]);
    assert_eq!(bad_by.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_by.stderr).contains("--by: unknown `tenant`"));

    // An edited line: nothing is counted.
    let text = std::fs::read_to_string(&audit).unwrap();
    std::fs::write(
        &audit,
        text.replacen("\"total_tokens\":8", "\"total_tokens\":1", 1),
    )
    .unwrap();
    let broken = cli(&["usage", "--audit-file", a]);
    assert_eq!(broken.status.code(), Some(1), "{broken:?}");
    assert!(
        String::from_utf8_lossy(&broken.stderr).contains("BROKEN at"),
        "{broken:?}"
    );
    assert!(broken.stdout.is_empty());
}
