//! `[limits]` against the real binary over loopback: a limited request is never
//! processed, so its replay record is released and the same signed request is accepted
//! once it fits; the in-flight slot is held until the answer ends; a limit refusal is
//! an audit line with the verified identity, within the refusal lines' rate; bad limits
//! and bad policy lines stop startup, naming their key, file and line. (The openai SDK tests of
//! the limits are in tests/external/openai_sdk.rs, the Redis ones in
//! tests/external/redis.rs.)

use crate::support;

use support::serve::{config, refused_config, send, start, text, upstream};

const URI: &str = "/v1/chat/completions";

fn body(n: u32) -> Vec<u8> {
    format!(r#"{{"model":"m","max_tokens":5,"messages":[{{"role":"user","content":"{n}"}}]}}"#)
        .into_bytes()
}

fn headers(h: &[(String, String)]) -> Vec<(&str, &str)> {
    h.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_request_is_not_a_replay_when_sent_again_and_in_flight_lasts_until_the_answer_ends(
) {
    let up = upstream().await;
    let gw = start(
        "limits-replay",
        &config(
            up.addr,
            &format!(
                "replay_protection = true\n{}[limits]\n[limits.agent]\nconcurrent_requests = 1\n",
                support::serve::replay_disk("limits-replay", "")
            ),
        ),
    );
    let agent = support::live("urn:aps:agent:limits");
    let (first, second) = (body(1), body(2));
    let first_headers = agent.headers(URI, &first);
    let held = send(gw.listen, "POST", URI, &headers(&first_headers), &first).await;
    assert_eq!(held.status(), 200);
    // The first answer is still streaming: its slot is taken.
    let second_headers = agent.headers(URI, &second);
    let refused = send(gw.listen, "POST", URI, &headers(&second_headers), &second).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let refused_text = text(refused).await;
    assert!(
        refused_text.contains("\"code\":\"rate_limit_exceeded\""),
        "{refused_text}"
    );
    assert_eq!(up.seen().len(), 1, "a limited request reached the upstream");
    // The first answer ends: the slot is free, and the refused request, sent again with
    // the same signature, is accepted (it was never processed, so it is no replay).
    let _ = up.release_last_chunk.send(());
    let _ = text(held).await;
    let again = send(gw.listen, "POST", URI, &headers(&second_headers), &second).await;
    assert_eq!(again.status(), 200);
    assert!(again.headers().get("x-ratelimit-limit-requests").is_none());
    let _ = up.release_last_chunk.send(());
    let _ = text(again).await;
    assert_eq!(
        gw.metric("passport_gate_limited_requests_total{reason=\"concurrent_requests\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_names_a_limited_request_and_its_code() {
    let up = upstream().await;
    let log = support::serve::workdir("limits-access-log-file").join("access.log");
    let gw = start(
        "limits-access-log",
        &config(
            up.addr,
            "[limits]\nmax_tokens_cap = 4\ndefault_max_tokens = 2\n",
        )
        .replace(
            "[agent_envelope]",
            &format!("access_log = \"{}\"\n\n[agent_envelope]", log.display()),
        ),
    );
    let agent = support::live("urn:aps:agent:limits-log");
    let over = body(9);
    let h = agent.headers(URI, &over);
    let resp = send(gw.listen, "POST", URI, &headers(&h), &over).await;
    assert_eq!(resp.status(), 400);
    assert!(text(resp).await.contains("max_tokens_over_cap"));
    assert!(up.seen().is_empty());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let lines = std::fs::read_to_string(&log).unwrap_or_default();
        if lines.contains(r#""code":"max_tokens_over_cap""#)
            && lines.contains(r#""outcome":"limited""#)
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{lines}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[test]
fn bad_limits_stop_startup_naming_the_key_the_file_and_the_line() {
    let dir = support::serve::workdir("limits-policy-files");
    let policy = dir.join("limits.toml");
    std::fs::write(
        &policy,
        "[principal.\"gonka1x\"]\nrequests_per_minute = 10\ntokens_per_dya = 5\n",
    )
    .unwrap();
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let toml = config(
        up,
        &format!(
            "[limits]\nstore = \"redis\"\nmax_tokens_cap = 100\ndefault_max_tokens = 200\npolicy_file = \"{}\"\n[limits.principal]\nrequests_per_minute = 2000000000\n[limits.agent]\ntokens_per_hour = 1000000000001\n",
            policy.display()
        ),
    );
    let (code, stderr) = refused_config("limits-bad", &toml);
    assert_ne!(code, Some(0));
    for needle in [
        "limits.store",
        "limits.default_max_tokens",
        "limits.principal.requests_per_minute",
        "limits.agent.tokens_per_hour",
        "limits.toml: line 3: unknown key \"tokens_per_dya\"",
    ] {
        assert!(stderr.contains(needle), "{needle} missing: {stderr}");
    }
}

/// The events of the audit file at `path` once it holds `n` lines (within 10 s).
fn audit_events(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let events: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].clone())
            .collect();
        if events.len() >= n || std::time::Instant::now() > deadline {
            assert_eq!(events.len(), n, "{text}");
            return events;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Runs the binary with `args`; its exit status and standard output.
fn cli(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_passport-gate"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A completion body asking `max_tokens`, made distinct by `n`.
fn completion(n: u32, max_tokens: u32) -> Vec<u8> {
    format!(r#"{{"model":"m","max_tokens":{max_tokens},"prompt":"{n}"}}"#).into_bytes()
}

/// A request the limits refuse (429 `insufficient_quota` and `rate_limit_exceeded`, 400
/// `max_tokens_over_cap`) is an audit line like every refusal, with its code and status;
/// the limits run after every passport check, so the line names the verified principal
/// and agent (not a claimed identity). The chain verifies; `audit report` counts the
/// refusals under their codes and not as calls, and `usage` counts them apart, with no
/// tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_refusals_are_audited_with_the_verified_identity_and_counted_apart_from_usage() {
    let up = upstream().await;
    let audit = support::serve::workdir("limits-audit-file").join("audit.jsonl");
    let gw = start(
        "limits-audit",
        &config(
            up.addr,
            &format!(
                "[limits]\nmax_tokens_cap = 100\ndefault_max_tokens = 10\n[limits.principal]\ntokens_per_day = 100\n[limits.agent]\nrequests_per_minute = 2\n\n[attribution]\naudit_file = {audit:?}\n"
            ),
        ),
    );
    let agent = support::live_of(0x74, "urn:aps:agent:limits-audit");
    let uri = "/v1/completions";
    // Each small request reserves a quarter of its body plus 5 tokens; the echo answer
    // has no usage, so each keeps its reservation.
    let mut codes = Vec::new();
    for (n, max_tokens) in [(1, 5), (2, 100), (3, 101), (4, 5), (5, 5)] {
        let b = completion(n, max_tokens);
        let h = agent.headers(uri, &b);
        let resp = send(gw.listen, "POST", uri, &headers(&h), &b).await;
        let status = resp.status().as_u16();
        let retry_after = resp.headers().contains_key("retry-after");
        let text = text(resp).await;
        codes.push((status, retry_after, text));
    }
    let expected = [
        (200, None),
        (429, Some("insufficient_quota")),
        (400, Some("max_tokens_over_cap")),
        (200, None),
        (429, Some("rate_limit_exceeded")),
    ];
    for ((status, retry_after, text), (want, code)) in codes.iter().zip(expected) {
        assert_eq!(*status, want, "{text}");
        if let Some(code) = code {
            assert!(text.contains(&format!("\"code\":\"{code}\"")), "{text}");
            assert_eq!(*retry_after, want == 429, "{text}");
        }
    }
    assert_eq!(up.seen().len(), 2, "a limited request reached the upstream");

    let events = audit_events(&audit, 5);
    for (event, (status, code)) in events.iter().zip(expected) {
        assert_eq!(event["status"], status, "{event}");
        // Verified identity in every line, accepted or limited.
        assert_eq!(
            event["principal_address"],
            agent.principal_address.as_str(),
            "{event}"
        );
        assert_eq!(event["agent_id"], "urn:aps:agent:limits-audit", "{event}");
        assert_eq!(event["model"], "m", "{event}");
        for field in ["verified_at", "passport_id", "request_body_sha256"] {
            assert_eq!(
                event[field].as_str().map(str::is_empty),
                Some(false),
                "{event}"
            );
        }
        match code {
            None => assert!(event.get("outcome").is_none(), "{event}"),
            Some(code) => {
                assert_eq!(event["outcome"], "refused", "{event}");
                assert_eq!(event["code"], code, "{event}");
                assert!(event["refused_at"].as_str().unwrap().ends_with('Z'));
                assert_eq!(event["path"], uri);
                for field in [
                    "claimed_agent_id_unverified",
                    "claimed_principal_address_unverified",
                    "inference_id",
                    "total_tokens",
                    "usage_missing",
                ] {
                    assert!(event.get(field).is_none(), "{field}: {event}");
                }
            }
        }
    }
    let file = audit.to_str().unwrap();
    let (ok, out) = cli(&["audit", "verify", file]);
    assert!(ok, "{out}");
    let (ok, report) = cli(&["audit", "report", file]);
    assert!(ok, "{report}");
    for line in [
        "refused (insufficient_quota): 1",
        "refused (max_tokens_over_cap): 1",
        "refused (rate_limit_exceeded): 1",
        "2 call(s)",
    ] {
        assert!(report.contains(line), "{line}: {report}");
    }
    let (ok, usage) = cli(&[
        "usage",
        "--audit-file",
        file,
        "--period",
        "all",
        "--format",
        "json",
    ]);
    assert!(ok, "{usage}");
    let rows: serde_json::Value = serde_json::from_str(&usage).unwrap();
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    let row = &rows[0];
    assert_eq!(
        (
            &row["requests"],
            &row["requests_limited"],
            &row["total_tokens"]
        ),
        (&2.into(), &3.into(), &0.into()),
        "{row}"
    );
}

/// With the limit store unreachable and failing closed, each 503 `limits_unavailable`
/// is an audit line with the verified identity, and these lines are bounded like every
/// refusal line (`audit_refusals_per_second`): an authenticated agent sending as fast as
/// it signs writes at most that many a second, the rest counted as dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_unavailable_refusals_are_audited_within_the_refusal_rate() {
    let up = upstream().await;
    let audit = support::serve::workdir("limits-audit-503-file").join("audit.jsonl");
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = start(
        "limits-audit-503",
        &config(
            up.addr,
            &format!(
                "[limits]\nstore = \"redis\"\n[limits.principal]\nrequests_per_minute = 10\n\n[redis]\nurl = \"redis://127.0.0.1:{dead}\"\ntimeout_ms = 100\n\n[attribution]\naudit_file = {audit:?}\naudit_refusals_per_second = 3\n"
            ),
        ),
    );
    let agent = support::live_of(0x75, "urn:aps:agent:limits-503");
    let uri = "/v1/completions";
    const SENT: usize = 12;
    let started = std::time::Instant::now();
    let sent: Vec<_> = (0..SENT as u32)
        .map(|n| {
            let b = completion(n, 5);
            let h = agent.headers(uri, &b);
            let addr = gw.listen;
            tokio::spawn(async move { support::post(addr, uri, &h, &b).await })
        })
        .collect();
    for s in sent {
        let (status, text) = s.await.unwrap();
        assert_eq!(status, 503, "{text}");
        assert!(text.contains("\"code\":\"limits_unavailable\""), "{text}");
    }
    let seconds = started.elapsed().as_secs() as usize + 1;
    assert!(up.seen().is_empty());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].clone())
            .collect();
        let dropped = gw
            .metric("passport_gate_attribution_events_dropped_total")
            .await as usize;
        if lines.len() + dropped == SENT {
            assert!(
                (1..=3 * (seconds + 1)).contains(&lines.len()),
                "{} lines in about {seconds} s",
                lines.len()
            );
            for e in &lines {
                assert_eq!(
                    (&e["outcome"], &e["code"], &e["status"]),
                    (&"refused".into(), &"limits_unavailable".into(), &503.into()),
                    "{e}"
                );
                assert_eq!(e["principal_address"], agent.principal_address.as_str());
                assert_eq!(e["agent_id"], "urn:aps:agent:limits-503");
            }
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} lines, {dropped} dropped",
            lines.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (ok, out) = cli(&["audit", "verify", audit.to_str().unwrap()]);
    assert!(ok, "{out}");
}

/// A limit refusal line carries the verified identity, so it is bounded like an accepted
/// event's line, not like a verifier refusal's: the longest a client can make one, with
/// an `agent_id` and a `model` of 256 control characters (each escaped to six bytes), a
/// beneficiary of 255 bytes of bidi controls (escaped) and a 50,000-byte path (cut to
/// 1024), is measured here (SECURITY.md's figure, printed with `--nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_limit_refusal_line_is_bounded() {
    let up = upstream().await;
    let audit = support::serve::workdir("limits-audit-longest-file").join("audit.jsonl");
    let gw = start(
        "limits-audit-longest",
        &config(
            up.addr,
            &format!(
                "[limits]\nmax_tokens_cap = 1\ndefault_max_tokens = 1\n\n[attribution]\naudit_file = {audit:?}\n"
            ),
        )
        // Every path is judged (a path of 50,000 bytes is no configured route).
        .replace(
            "max_ttl_seconds = 604800\n",
            "max_ttl_seconds = 604800\nmode = \"required\"\n",
        ),
    );
    let controls = "\u{1}".repeat(256);
    let beneficiary = "\u{202e}".repeat(85);
    let agent = support::fixture_of(
        0x77,
        &controls,
        None,
        Some(&beneficiary),
        passport_core::time::Timestamp::from_unix_seconds(
            passport_core::time::Timestamp::now().unix_seconds(),
        ),
    );
    let uri = format!("/v1/{}", "a".repeat(50_000));
    let body = format!(
        r#"{{"model":"{}","max_tokens":2,"prompt":"x"}}"#,
        "\\u0001".repeat(256)
    )
    .into_bytes();
    let (status, text) = support::post(gw.listen, &uri, &agent.headers(&uri, &body), &body).await;
    assert_eq!(status, 400, "{}", &text[..text.len().min(300)]);
    assert!(text.contains("max_tokens_over_cap"));
    let events = audit_events(&audit, 1);
    let e = &events[0];
    assert_eq!(e["code"], "max_tokens_over_cap", "{e}");
    assert_eq!(e["agent_id"].as_str(), Some(controls.as_str()));
    assert_eq!(e["model"].as_str(), Some(controls.as_str()));
    assert_eq!(e["beneficiary"].as_str(), Some(beneficiary.as_str()));
    assert_eq!(e["path_cut_bytes"], uri.len() - 1024);
    let line = std::fs::read_to_string(&audit).unwrap();
    let bytes = line.trim_end().len();
    eprintln!("longest limit refusal line: {bytes} bytes");
    // 2 x 1,536 escaped bytes, 510 for the beneficiary, the 1,024-byte path, the hashes
    // and the rest.
    assert!(bytes <= 6_000, "a limit refusal line of {bytes} bytes");
    let (ok, out) = cli(&["audit", "verify", audit.to_str().unwrap()]);
    assert!(ok, "{out}");
}
