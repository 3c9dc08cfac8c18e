//! `[limits]` against the real binary over loopback: a limited request is never
//! processed, so its replay record is released and the same signed request is accepted
//! once it fits; the in-flight slot is held until the answer ends; bad limits and bad
//! policy lines stop startup, naming their key, file and line. (The openai SDK tests of
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
