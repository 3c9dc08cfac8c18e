//! Reference-parity rules (spec sections 2 and 6) through the real `passport-gate serve`
//! binary: what reaches the upstream is what the reference would let through.

use std::sync::atomic::Ordering;

use crate::support;

use support::serve::{config, send, start, text, upstream};

const PATH: &str = "/v1/chat/completions";

/// A chat body whose `x` member nests arrays `depth - 1` levels below the top object.
fn nested(depth: usize) -> Vec<u8> {
    let mut body = br#"{"model":"qwen/qwen3-32b","x":"#.to_vec();
    body.extend(std::iter::repeat_n(b'[', depth - 1));
    body.extend(std::iter::repeat_n(b']', depth - 1));
    body.push(b'}');
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_nested_past_ten_thousand_levels_never_reaches_the_upstream() {
    let up = upstream().await;
    let gw = start("parity-depth", &config(up.addr, ""));
    let f = support::live("urn:aps:agent:parity");

    let deep = nested(10_001);
    let sig = f.sign(PATH, &deep);
    let headers = [
        ("x-agent-passport", f.passport.as_str()),
        ("x-agent-sig", &sig),
    ];
    let resp = send(gw.listen, "POST", PATH, &headers, &deep).await;
    assert_eq!(resp.status(), 400);
    assert!(text(resp).await.contains("envelope_malformed"));
    assert_eq!(up.calls.load(Ordering::SeqCst), 0);

    let limit = nested(10_000);
    let sig = f.sign(PATH, &limit);
    let headers = [
        ("x-agent-passport", f.passport.as_str()),
        ("x-agent-sig", &sig),
    ];
    up.release_last_chunk.send(()).unwrap();
    let resp = send(gw.listen, "POST", PATH, &headers, &limit).await;
    assert_eq!(resp.status(), 200);
    let _ = text(resp).await;
    assert_eq!(up.calls.load(Ordering::SeqCst), 1);
    assert_eq!(up.seen()[0].body, limit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_header_values_count_as_absent() {
    let up = upstream().await;
    let gw = start("parity-empty", &config(up.addr, ""));
    let body = br#"{"model":"qwen/qwen3-32b"}"#;

    up.release_last_chunk.send(()).unwrap();
    let both_empty = [("x-agent-passport", ""), ("x-agent-sig", "")];
    let resp = send(gw.listen, "POST", PATH, &both_empty, body).await;
    assert_eq!(resp.status(), 200);
    let _ = text(resp).await;
    assert_eq!(up.calls.load(Ordering::SeqCst), 1);

    let f = support::live("urn:aps:agent:parity");
    let one_empty = [
        ("x-agent-passport", f.passport.as_str()),
        ("x-agent-sig", ""),
    ];
    let resp = send(gw.listen, "POST", PATH, &one_empty, body).await;
    assert_eq!(resp.status(), 400);
    assert!(text(resp).await.contains("sig_header_mismatch"));
    assert_eq!(up.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_of_the_wrong_length_fails_at_the_agent_signature() {
    let up = upstream().await;
    let gw = start("parity-siglen", &config(up.addr, ""));
    let f = support::live("urn:aps:agent:parity");
    let body = br#"{"model":"qwen/qwen3-32b"}"#;
    let short = passport_core::crypto::encode_base64(&[7u8; 63]);
    let headers = [
        ("x-agent-passport", f.passport.as_str()),
        ("x-agent-sig", &short),
    ];
    let resp = send(gw.listen, "POST", PATH, &headers, body).await;
    assert_eq!(resp.status(), 401);
    assert!(text(resp).await.contains("agent_sig_invalid"));
    assert_eq!(up.calls.load(Ordering::SeqCst), 0);
}
