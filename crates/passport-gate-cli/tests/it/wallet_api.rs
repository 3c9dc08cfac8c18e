//! The wallet page's server over loopback: the real `passport-gate wallet` binary, its
//! bounds and its refusals (the browser flow is tests/external/wallet_browser.rs).

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support;

use support::serve::{closed_within, half_sent, raw, start_wallet, status_of};

/// The wallet server's bounds, restated: they are private to the binary, in
/// crates/passport-gate-cli/src/wallet/mod.rs (a change there must be made here too).
mod wallet {
    use std::time::Duration;

    /// `MAX_REQUEST_BYTES`: largest API request body.
    pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
    /// `REQUEST_READ_TIMEOUT`: time to receive a whole API request body.
    pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// `HEADER_READ_TIMEOUT`: time to receive a request head.
    pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// `MAX_HEADER_BYTES`: largest request head.
    pub const MAX_HEADER_BYTES: usize = 16 * 1024;
    /// `MAX_CONNECTIONS`: connections open at once.
    pub const MAX_CONNECTIONS: usize = 32;
}

fn post(path: &str, host: &str, content_type: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn the_page_and_its_assets_are_served_from_the_binary() {
    let page = start_wallet(&[]);
    for path in ["/", "/app.js", "/app.css", "/api/config"] {
        let answer = raw(
            page.addr,
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
            Duration::from_secs(5),
        );
        assert_eq!(status_of(&answer), 200, "{path}: {answer}");
        assert!(
            answer.contains("content-security-policy: default-src 'none'"),
            "{answer}"
        );
    }
}

#[test]
fn a_non_loopback_address_is_refused_without_public() {
    let out = Command::new(env!("CARGO_BIN_EXE_passport-gate"))
        .args(["wallet", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("add --public"));
}

#[test]
fn a_public_page_answers_any_host() {
    let page = start_wallet(&["--public"]);
    let answer = raw(
        page.addr,
        b"GET /api/config HTTP/1.1\r\nHost: wallet.example\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&answer), 200, "{answer}");
}

#[test]
fn a_foreign_host_is_refused() {
    let page = start_wallet(&[]);
    let answer = raw(
        page.addr,
        post(
            "/api/decode",
            "rebound.example:8787",
            "application/json",
            r#"{"passport":""}"#,
        )
        .as_bytes(),
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&answer), 421, "{answer}");
    assert!(answer.contains("\"code\":\"foreign_host\""), "{answer}");
}

#[test]
fn a_post_that_is_not_json_is_refused() {
    let page = start_wallet(&[]);
    let answer = raw(
        page.addr,
        post(
            "/api/decode",
            "127.0.0.1",
            "text/plain",
            r#"{"passport":""}"#,
        )
        .as_bytes(),
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&answer), 415, "{answer}");
}

#[test]
fn a_request_body_over_the_bound_is_refused() {
    let page = start_wallet(&[]);
    let body = format!(
        r#"{{"passport":"{}"}}"#,
        "A".repeat(wallet::MAX_REQUEST_BYTES)
    );
    let answer = raw(
        page.addr,
        post("/api/decode", "127.0.0.1", "application/json", &body).as_bytes(),
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&answer), 413, "{answer}");
}

#[test]
fn a_request_body_that_never_arrives_is_given_up() {
    let page = start_wallet(&[]);
    let mut s = TcpStream::connect(page.addr).unwrap();
    s.write_all(b"POST /api/decode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert!(started.elapsed() < wallet::REQUEST_READ_TIMEOUT + Duration::from_secs(5));
}

#[test]
fn connections_beyond_the_bound_are_closed_at_once_and_logged() {
    let page = start_wallet(&[]);
    let held: Vec<TcpStream> = (0..wallet::MAX_CONNECTIONS)
        .map(|_| half_sent(page.addr, b"GET / HTTP/1.1\r\n").unwrap())
        .collect();
    // Give the server time to accept them all before the one too many.
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = half_sent(page.addr, b"GET / HTTP/1.1\r\n").unwrap();
    assert!(closed_within(&mut extra, Duration::from_secs(2)));
    // More refusals within the second are counted in the next line, not logged each.
    for _ in 0..20 {
        let mut more = half_sent(page.addr, b"GET / HTTP/1.1\r\n").unwrap();
        assert!(closed_within(&mut more, Duration::from_secs(2)));
    }
    let mut refusals = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Ok(line) = page
        .lines
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        if line.contains("connection refused: max_connections open") {
            refusals.push(line);
        }
    }
    assert_eq!(refusals.len(), 1, "{refusals:#?}");
    assert!(refusals[0].contains("listener=\"wallet\""), "{refusals:#?}");
    drop(held);
}

#[test]
fn a_request_head_that_never_completes_is_closed() {
    let page = start_wallet(&[]);
    let mut s = half_sent(page.addr, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n").unwrap();
    let bound = wallet::HEADER_READ_TIMEOUT;
    assert!(closed_within(&mut s, bound + Duration::from_secs(5)));
}

#[test]
fn a_request_head_over_the_bound_is_refused() {
    let page = start_wallet(&[]);
    let big = "a".repeat(wallet::MAX_HEADER_BYTES);
    let answer = raw(
        page.addr,
        format!("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {big}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&answer), 431, "{answer}");
}
