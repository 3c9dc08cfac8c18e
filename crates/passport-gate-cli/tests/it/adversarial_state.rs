//! State and output hardening, attacked from outside: the real `passport-gate serve`
//! over loopback (replay quotas, a stalled Redis, revocation values, the requester
//! header) and the real CLI (terminal injection, a closed stdout).

use crate::support;

use passport_core::crypto::{AgentSecret, PrincipalSecret};
use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::serve::{config, replay_disk, send, start, text, upstream, Gateway, CHAIN};

const URI: &str = "/v1/completions";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_passport-gate"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn body(n: usize) -> Vec<u8> {
    format!(r#"{{"model":"qwen/qwen3-32b","prompt":"request {n}"}}"#).into_bytes()
}

/// POSTs `body` with `headers` (plus `extra`); returns the status, the problem code and
/// the `Retry-After` value.
async fn post(
    gw: &Gateway,
    headers: &[(String, String)],
    extra: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Option<String>) {
    post_to(gw.listen, headers, extra, body).await
}

async fn post_to(
    addr: SocketAddr,
    headers: &[(String, String)],
    extra: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Option<String>) {
    let mut all: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    all.extend_from_slice(extra);
    let resp = send(addr, "POST", URI, &all, body).await;
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = text(resp).await;
    let code = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, code, retry)
}

// ---- item 7: one passport holder cannot fill the replay store ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_over_its_replay_quota_is_refused_and_others_are_served() {
    let up = upstream().await;
    let gw = start(
        "quota",
        &config(
            up.addr,
            &format!(
                "replay_protection = true\nreplay_records_per_principal = 3\n{}",
                replay_disk("quota", "")
            ),
        ),
    );
    let hog = support::live_of(0x61, "urn:aps:agent:hog");
    for n in 0..3 {
        let b = body(n);
        assert_eq!(post(&gw, &hog.headers(URI, &b), &[], &b).await.0, 200);
    }
    let b = body(3);
    let (status, code, retry) = post(&gw, &hog.headers(URI, &b), &[], &b).await;
    assert_eq!((status, code.as_str()), (429, "replay_quota_exceeded"));
    assert!(retry.is_some_and(|s| s.parse::<u64>().unwrap() > 0));
    // A replay of an accepted request is still named a replay.
    let b = body(0);
    let (status, code, _) = post(&gw, &hog.headers(URI, &b), &[], &b).await;
    assert_eq!((status, code.as_str()), (401, "request_replayed"));
    // Everyone else is served.
    let other = support::live_of(0x71, "urn:aps:agent:other");
    let b = body(0);
    assert_eq!(post(&gw, &other.headers(URI, &b), &[], &b).await.0, 200);
    assert_eq!(
        gw.metric(
            r#"passport_gate_requests_total{code="replay_quota_exceeded",outcome="rejected"}"#
        )
        .await,
        1.0
    );
}

// ---- item 8: a stalled Redis delays no request beyond the timeout ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_answers_every_request_within_the_timeout() {
    // A "Redis" that accepts connections and never answers.
    let stall = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stall_addr = stall.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = stall.accept().await {
            if held.len() < 1000 {
                held.push(s);
            }
        }
    });
    let up = upstream().await;
    let gw = start(
        "stalled-redis",
        &config(
            up.addr,
            &format!(
                "replay_protection = true\n[replay]\nstore = \"redis\"\n[redis]\nurl = \"redis://{stall_addr}\"\ntimeout_ms = 500\n"
            ),
        ),
    );
    let h = support::live_of(0x61, "urn:aps:agent:stall");
    let started = Instant::now();
    let tasks: Vec<_> = (0..12)
        .map(|n| {
            let b = body(n);
            let headers = h.headers(URI, &b);
            let addr = gw.listen;
            tokio::spawn(async move {
                let r = post_to(addr, &headers, &[], &b).await;
                (r, started.elapsed())
            })
        })
        .collect();
    for t in tasks {
        let ((status, code, _), took) = t.await.unwrap();
        assert_eq!((status, code.as_str()), (503, "replay_store_unavailable"));
        // 500 ms of Redis timeout plus a debug build's work on a loaded 2-core machine;
        // twelve requests waiting one after another on the stalled store would take 6 s.
        assert!(
            took < Duration::from_millis(2_500),
            "a request waited {took:?} with a 500 ms Redis timeout"
        );
    }
}

// ---- item 10: revocation values are kept exactly ----

fn revoke(file: &std::path::Path, args: &[&str]) -> Output {
    let mut all = vec!["revoke", "--file", file.to_str().unwrap()];
    all.extend_from_slice(args);
    run(&all)
}

async fn until_status(gw: &Gateway, h: &support::Fixture, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 1000;
    loop {
        n += 1;
        let b = body(n);
        let (status, _, _) = post(gw, &h.headers(URI, &b), &[], &b).await;
        if status == want {
            return;
        }
        assert!(Instant::now() < deadline, "still {status}, want {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn revocation_gateway(name: &str, file: &std::path::Path, up: SocketAddr) -> Gateway {
    start(
        name,
        &config(
            up,
            &format!(
                "[revocation]\nfile = \"{}\"\nreload_ms = 50\n",
                file.display()
            ),
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_agent_id_with_a_hash_revokes_exactly_that_id() {
    let dir = support::serve::workdir("revoke-hash-files");
    let file = dir.join("revoked.txt");
    for id in ["urn:aps:agent:bot#7", " urn:aps:agent:spaced "] {
        let o = revoke(&file, &["--agent-id", id]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let up = upstream().await;
    let gw = revocation_gateway("revoke-hash", &file, up.addr);
    let b = body(0);
    for id in ["urn:aps:agent:bot#7", " urn:aps:agent:spaced "] {
        let (status, code, _) =
            post(&gw, &support::live_of(0x61, id).headers(URI, &b), &[], &b).await;
        assert_eq!((status, code.as_str()), (401, "passport_revoked"), "{id:?}");
    }
    for id in ["urn:aps:agent:bot", "urn:aps:agent:spaced"] {
        let (status, _, _) = post(&gw, &support::live_of(0x61, id).headers(URI, &b), &[], &b).await;
        assert_eq!(status, 200, "{id:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserialized_passport_is_still_revoked_by_its_passport_id() {
    let dir = support::serve::workdir("revoke-passport-files");
    let file = dir.join("revoked.txt");
    let h = support::live_of(0x61, "urn:aps:agent:one-passport");
    let o = revoke(&file, &["--passport", &h.passport]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The same passport, spelled with other white space and member order.
    let raw = passport_core::crypto::decode_base64(&h.passport).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let pretty = serde_json::to_string_pretty(&value).unwrap();
    assert_ne!(pretty.as_bytes(), raw.as_slice());
    let respelled = support::Fixture {
        passport: passport_core::crypto::encode_base64(pretty.as_bytes()),
        agent: h.agent.clone(),
        principal_address: h.principal_address.clone(),
    };
    let up = upstream().await;
    let gw = revocation_gateway("revoke-passport", &file, up.addr);
    let b = body(0);
    for p in [&h, &respelled] {
        let (status, code, _) = post(&gw, &p.headers(URI, &b), &[], &b).await;
        assert_eq!((status, code.as_str()), (401, "passport_revoked"));
    }
    // Another passport of the same holder is not revoked.
    let b = body(1);
    let other = support::live_of(0x61, "urn:aps:agent:another-passport");
    assert_eq!(post(&gw, &other.headers(URI, &b), &[], &b).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typo_in_the_revocation_file_never_lifts_a_revocation() {
    let dir = support::serve::workdir("revoke-typo-files");
    let file = dir.join("revoked.txt");
    std::fs::write(&file, "agent_id urn:aps:agent:first\n").unwrap();
    let up = upstream().await;
    let gw = revocation_gateway("revoke-typo", &file, up.addr);
    let first = support::live_of(0x61, "urn:aps:agent:first");
    let second = support::live_of(0x61, "urn:aps:agent:second");
    until_status(&gw, &first, 401).await;
    until_status(&gw, &second, 200).await;
    // The operator drops `first`, adds `second`, and makes a typo on another line.
    std::fs::write(
        &file,
        "# edited\nagent_id urn:aps:agent:second\nagentid urn:aps:agent:third\n",
    )
    .unwrap();
    until_status(&gw, &second, 401).await;
    until_status(&gw, &first, 401).await;
    assert!(gw.metric("passport_gate_revocation_bad_lines_total").await >= 1.0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut lines = Vec::new();
    while Instant::now() < deadline && !lines.iter().any(|l: &String| l.contains("line=3")) {
        lines.extend(gw.drain_lines());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        lines.iter().any(|l| l.contains("line=3")),
        "bad line reported by number: {lines:?}"
    );
    // Once the file is clean again it is taken as written.
    std::fs::write(&file, "agent_id urn:aps:agent:second\n").unwrap();
    until_status(&gw, &first, 200).await;
}

#[test]
fn revoke_refuses_entries_that_could_never_match() {
    let dir = support::serve::workdir("revoke-validate");
    let file = dir.join("revoked.txt");
    let key = AgentSecret::from_bytes(&[0x62; 32])
        .public_key()
        .to_base64();
    let address = PrincipalSecret::from_bytes(&[0x61; 32])
        .unwrap()
        .public_key()
        .address("gonka")
        .unwrap();
    let refused: Vec<Vec<String>> = vec![
        vec!["--agent-pubkey".into(), key.trim_end_matches('=').into()],
        vec![
            "--agent-pubkey".into(),
            passport_core::crypto::encode_base64(&[0; 32]),
        ],
        vec!["--principal".into(), address.replacen('q', "p", 1)],
        vec![
            "--principal".into(),
            PrincipalSecret::from_bytes(&[0x61; 32])
                .unwrap()
                .public_key()
                .address("cosmos")
                .unwrap(),
        ],
        vec!["--passport-id".into(), "ab".repeat(31)],
        vec!["--envelope".into(), "zz".repeat(32)],
        vec!["--agent-id".into(), String::new()],
        vec!["--agent-id".into(), "x".repeat(257)],
        vec!["--passport".into(), "bm90IGpzb24=".into()],
    ];
    for args in &refused {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = revoke(&file, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?} was accepted");
    }
    assert!(!file.exists() || std::fs::read_to_string(&file).unwrap().is_empty());
    // Normalized: an uppercase address and uppercase hex are the same entries.
    let upper = address.to_ascii_uppercase();
    let id = "AB".repeat(32);
    for args in [
        vec!["--principal", upper.as_str()],
        vec!["--envelope", id.as_str()],
        vec!["--agent-pubkey", key.as_str()],
    ] {
        let o = revoke(&file, &args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        text,
        format!(
            "principal {address}\npassport {}\nagent_pubkey {key}\n",
            "ab".repeat(32)
        )
    );
}

// ---- item 13: the unsigned requester header drives no cache and no chain query ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_requester_is_refused_before_any_lookup_and_costs_no_memory() {
    let up = upstream().await;
    let node = upstream().await;
    let gw = start(
        "requester",
        &config(
            up.addr,
            &format!("[binding]\nchain_node = \"http://{}\"\n", node.addr),
        ),
    );
    let h = support::live_of(0x61, "urn:aps:agent:requester");
    let b = body(0);
    let headers = h.headers(URI, &b);
    let chain_queries = || {
        node.seen()
            .iter()
            .filter(|s| s.uri.starts_with("/cosmos/authz"))
            .count()
    };
    // Refused as principal_mismatch whatever is wrong with the value.
    let valid_other = PrincipalSecret::from_bytes(&[0x72; 32])
        .unwrap()
        .public_key()
        .address("gonka")
        .unwrap();
    for bad in [
        valid_other.to_ascii_uppercase(),
        valid_other.replacen("gonka", "cosmos", 1),
        format!("{valid_other}x"),
        "gonka1".to_owned() + &"q".repeat(200),
    ] {
        let (status, code, _) = post(&gw, &headers, &[("x-requester-address", &bad)], &b).await;
        assert_eq!(
            (status, code.as_str()),
            (403, "principal_mismatch"),
            "{bad}"
        );
    }
    assert_eq!(chain_queries(), 0);
    // Thousands of distinct large values: flat memory, no query.
    let before = gw.rss_kib();
    let started = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let headers = headers.clone();
            let b = b.clone();
            let addr = gw.listen;
            tokio::spawn(async move {
                for i in 0..750 {
                    let value = format!("gonka1{w}{i:06}{}", "x".repeat(16 * 1024));
                    let (status, _, _) =
                        post_to(addr, &headers, &[("x-requester-address", &value)], &b).await;
                    assert_eq!(status, 403);
                    assert!(started.elapsed() < Duration::from_secs(120));
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let after = gw.rss_kib();
    assert_eq!(chain_queries(), 0);
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB over 3,000 x 16 KiB requester values"
    );
    // A well-formed requester is still looked up (and has no grant here).
    let (status, code, _) = post(&gw, &headers, &[("x-requester-address", &valid_other)], &b).await;
    assert_eq!((status, code.as_str()), (403, "principal_mismatch"));
    assert_eq!(chain_queries(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_queries_in_flight_are_capped_and_the_excess_is_refused_at_once() {
    // A chain node that takes 3 s per answer, counting the queries it receives.
    use std::sync::atomic::{AtomicUsize, Ordering};
    let asked = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let app = axum::Router::new().fallback(axum::routing::any(move |uri: http::Uri| {
        let counter = counter.clone();
        async move {
            // Grant queries only (the readiness probe asks the node too).
            if uri.path().starts_with("/cosmos/authz") {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
            r#"{"grants":[],"pagination":{"next_key":null}}"#
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let up = upstream().await;
    let gw = start(
        "grant-cap",
        &config(
            up.addr,
            &format!("[binding]\nchain_node = \"http://{node}\"\nmax_concurrent_queries = 2\n"),
        ),
    );
    // One self-minted passport, a garbage agent signature, and a new canonical
    // requester per request: every request is a grant-cache miss.
    let h = support::live_of(0x61, "urn:aps:agent:asker");
    let b = body(0);
    let headers = vec![
        ("x-agent-passport".to_owned(), h.passport.clone()),
        (
            "x-agent-sig".to_owned(),
            passport_core::crypto::encode_base64(&[3u8; 64]),
        ),
    ];
    let started = Instant::now();
    let requests: Vec<_> = (0..8u8)
        .map(|i| {
            let requester = PrincipalSecret::from_bytes(&[0x30 + i; 32])
                .unwrap()
                .public_key()
                .address("gonka")
                .unwrap();
            let headers = headers.clone();
            let b = b.clone();
            let addr = gw.listen;
            tokio::spawn(async move {
                let (status, code, _) =
                    post_to(addr, &headers, &[("x-requester-address", &requester)], &b).await;
                (status, code, started.elapsed())
            })
        })
        .collect();
    let mut shed = 0;
    for r in requests {
        let (status, code, took) = r.await.unwrap();
        if (status, code.as_str()) == (503, "chain_query_failed") && took < Duration::from_secs(2) {
            shed += 1;
        }
    }
    assert_eq!(
        asked.load(Ordering::SeqCst),
        2,
        "queries reached the chain node"
    );
    assert_eq!(shed, 6, "requests beyond the cap answered at once");
}

// ---- item 12: terminal injection ----

const NASTY: &str = "urn:aps:agent:\u{1b}[2J\u{1b}[H\u{9b}31m\u{202e}evil\u{7f}";

fn assert_no_raw_controls(what: &str, out: &[u8]) {
    let text = String::from_utf8_lossy(out);
    for c in ['\u{1b}', '\u{9b}', '\u{202e}', '\u{7f}'] {
        assert!(!text.contains(c), "{what} printed {c:?} raw: {text:?}");
    }
    assert!(text.contains("\\u001b"), "{what}: {text:?}");
    assert!(text.contains("\\u202e"), "{what}: {text:?}");
}

#[test]
fn inspect_and_verify_escape_control_and_bidi_characters() {
    let h = support::live_of(0x61, NASTY);
    let o = run(&["inspect", &h.passport]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_no_raw_controls("inspect", &o.stdout);

    let b = body(0);
    let sig = h.sign(URI, &b);
    let o = run(&[
        "verify",
        "--chain-id",
        CHAIN,
        "--method",
        "POST",
        "--uri",
        URI,
        "--passport",
        &h.passport,
        "--sig",
        &sig,
        "--body",
        std::str::from_utf8(&b).unwrap(),
    ]);
    assert_no_raw_controls("verify", &o.stdout);
    // Still JSON, and the value survives the escaping.
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["agent_id"], NASTY);
}

#[test]
fn audit_report_escapes_agent_chosen_strings() {
    let dir = support::serve::workdir("audit-escape");
    let path = dir.join("events.jsonl");
    let event = passport_gate::attribution::AttributionEvent {
        v: "aps-attribution-v1".into(),
        event_id: "0".repeat(32),
        inference_id: "inf-1".into(),
        chain_id: CHAIN.into(),
        model: "m\u{1b}[2K\u{202e}".into(),
        agent_id: NASTY.into(),
        principal_address: "gonka1alice".into(),
        beneficiary: None,
        requester_address: None,
        request_body_sha256: "00".repeat(32),
        envelope_sha256: "11".repeat(32),
        passport_expires_at: "2026-05-21T13:00:00Z".into(),
        verified_at: "2026-05-21T12:00:00Z".into(),
        method: "POST".into(),
        path: URI.into(),
        status: 200,
        latency_ms: 1,
        passport_id: String::new(),
        client_disconnected: false,
        ..Default::default()
    };
    std::fs::write(&path, serde_json::to_string(&event).unwrap() + "\n").unwrap();
    let p = path.to_str().unwrap();
    let table = run(&["audit", "report", p]);
    assert!(table.status.success());
    assert_no_raw_controls("audit report", &table.stdout);
    assert_eq!(
        String::from_utf8_lossy(&table.stdout).lines().count(),
        4,
        "one header, one row, one line of calls without usage, one total"
    );
    let json = run(&["audit", "report", p, "--json"]);
    assert_no_raw_controls("audit report --json", &json.stdout);
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(rows[0]["agent_id"], NASTY);
}

#[test]
fn revoke_echoes_the_entry_escaped() {
    let dir = support::serve::workdir("revoke-echo");
    let file = dir.join("revoked.txt");
    let o = revoke(&file, &["--agent-id", NASTY]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_no_raw_controls("revoke", &o.stderr);
    let (r, bad) =
        passport_gate::revocation::Revoked::parse_lines(&std::fs::read_to_string(&file).unwrap());
    assert!(bad.is_empty());
    assert!(r.agent_ids.contains(NASTY));
}

// ---- CLI: a closed stdout ends the output quietly ----

fn with_closed_stdout(args: &[&str]) -> (Option<i32>, String) {
    let mut child = bin()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (child.wait().unwrap().code(), stderr)
}

#[test]
fn a_closed_stdout_is_not_a_panic() {
    let h = support::live_of(0x61, "urn:aps:agent:pipe");
    let vectors = concat!(env!("CARGO_MANIFEST_DIR"), "/../../conformance/vectors");
    for args in [
        vec!["inspect", h.passport.as_str()],
        vec!["conformance", vectors],
    ] {
        let (code, stderr) = with_closed_stdout(&args);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        assert_ne!(code, Some(101), "{args:?}: {stderr}");
    }
    // `verify` keeps its verdict as the exit status.
    let b = body(0);
    let sig = h.sign(URI, &b);
    let body_text = String::from_utf8(b).unwrap();
    let verify = |sig: &str| {
        with_closed_stdout(&[
            "verify",
            "--chain-id",
            CHAIN,
            "--method",
            "POST",
            "--uri",
            URI,
            "--passport",
            &h.passport,
            "--sig",
            sig,
            "--body",
            &body_text,
        ])
        .0
    };
    assert_eq!(verify(&sig), Some(0));
    let forged = passport_core::crypto::encode_base64(&[1; 64]);
    assert_eq!(verify(&forged), Some(1));
}
