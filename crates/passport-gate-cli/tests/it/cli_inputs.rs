//! The CLI's inputs and failures: `--body-file -` reads standard input, `sign`, `verify`
//! and `inspect` take `--passport-file`, and `request` names the URL and the cause of a
//! failure.

use crate::support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const CHAIN: &str = "gonka-mainnet";
const URI: &str = "/v1/chat/completions";
const BODY: &str = r#"{"model":"echo-1","messages":[]}"#;

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_passport-gate"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str], stdin: Option<&[u8]>) -> String {
    let out = run(args, stdin);
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// An agent key file and a passport file (written as `mint > file`, newline included).
fn credentials(dir: &Path) -> (String, String, String) {
    let agent = dir.join("agent.json");
    let principal = dir.join("principal.json");
    let passport_file = dir.join("passport.txt");
    ok(
        &["keygen", "--agent", "--out", agent.to_str().unwrap()],
        None,
    );
    ok(
        &[
            "keygen",
            "--principal",
            "--out",
            principal.to_str().unwrap(),
        ],
        None,
    );
    let passport = ok(
        &[
            "mint",
            "--principal-key",
            principal.to_str().unwrap(),
            "--agent-key",
            agent.to_str().unwrap(),
            "--agent-id",
            "urn:aps:agent:cli",
            "--chain-id",
            CHAIN,
            "--ttl",
            "10m",
        ],
        None,
    );
    std::fs::write(&passport_file, &passport).unwrap();
    (
        agent.to_str().unwrap().to_owned(),
        passport_file.to_str().unwrap().to_owned(),
        passport.trim().to_owned(),
    )
}

#[test]
fn body_file_dash_reads_the_body_from_standard_input() {
    let dir = support::serve::workdir("cli-stdin");
    let (agent, _, passport) = credentials(&dir);
    let sign = |body: &[&str], stdin: Option<&[u8]>| {
        let mut args = vec![
            "sign",
            "--agent-key",
            &agent,
            "--passport",
            &passport,
            "--chain-id",
            CHAIN,
            "--method",
            "POST",
            "--uri",
            URI,
        ];
        args.extend_from_slice(body);
        ok(&args, stdin)
    };
    let from_arg = sign(&["--body", BODY], None);
    let from_stdin = sign(&["--body-file", "-"], Some(BODY.as_bytes()));
    assert_eq!(from_arg, from_stdin);
    assert_ne!(from_stdin, sign(&["--body-file", "-"], Some(b"{}")));
}

#[test]
fn sign_verify_and_inspect_take_a_passport_file() {
    let dir = support::serve::workdir("cli-passport-file");
    let (agent, passport_file, passport) = credentials(&dir);
    let sig = ok(
        &[
            "sign",
            "--agent-key",
            &agent,
            "--passport-file",
            &passport_file,
            "--chain-id",
            CHAIN,
            "--method",
            "POST",
            "--uri",
            URI,
            "--body",
            BODY,
        ],
        None,
    );
    let by_value = ok(
        &[
            "sign",
            "--agent-key",
            &agent,
            "--passport",
            &passport,
            "--chain-id",
            CHAIN,
            "--method",
            "POST",
            "--uri",
            URI,
            "--body",
            BODY,
        ],
        None,
    );
    assert_eq!(sig, by_value);
    let verdict = ok(
        &[
            "verify",
            "--chain-id",
            CHAIN,
            "--method",
            "POST",
            "--uri",
            URI,
            "--passport-file",
            &passport_file,
            "--sig",
            sig.trim(),
            "--body",
            BODY,
        ],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(&verdict).unwrap();
    assert_eq!(v["ok"], true, "{verdict}");
    let shown = ok(&["inspect", "--passport-file", &passport_file], None);
    assert!(
        shown.contains("urn:aps:agent:cli") && shown.contains("passport id:"),
        "{shown}"
    );
    // One of the two, not both.
    let both = run(
        &["inspect", &passport, "--passport-file", &passport_file],
        None,
    );
    assert_eq!(both.status.code(), Some(2));
}

fn request_error(url: &str, extra: &[&str]) -> String {
    let dir = support::serve::workdir("cli-request-errors");
    let (agent, passport_file, _) = credentials(&dir);
    let mut args = vec![
        "request",
        url,
        "--agent-key",
        &agent,
        "--passport-file",
        &passport_file,
        "--chain-id",
        CHAIN,
        "--body",
        BODY,
    ];
    args.extend_from_slice(extra);
    let out = run(&args, None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn request_names_the_url_and_the_cause_of_a_failure() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let url = format!("http://{addr}{URI}");
    let err = request_error(&url, &[]);
    assert!(
        err.contains(&format!("request to {url} failed: connection refused")),
        "{err}"
    );

    let url = "http://no-such-host.invalid/v1/chat/completions";
    let err = request_error(url, &[]);
    assert!(
        err.contains(&format!("request to {url} failed: DNS lookup failed")),
        "{err}"
    );

    // https too (the TLS failures are in request_tls.rs).
    let url = format!("https://{addr}{URI}");
    let err = request_error(&url, &[]);
    assert!(
        err.contains(&format!("request to {url} failed: connection refused")),
        "{err}"
    );

    // A server that accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}{URI}", silent.local_addr().unwrap());
    let started = std::time::Instant::now();
    let err = request_error(&url, &["--timeout-seconds", "1"]);
    assert!(
        err.contains(&format!("request to {url} failed: timeout")),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    drop(silent);
}

/// `request --gonka-key` sends the native headers beside the passport headers, both over
/// the bytes the server received: the native signature verifies with the key's public
/// half for the given transfer address, and the agent signature with the passport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_with_a_gonka_key_sends_both_signatures_over_the_body_sent() {
    let dir = support::serve::workdir("cli-request-gonka");
    let (agent, passport_file, _) = credentials(&dir);
    let principal = dir.join("principal.json").to_str().unwrap().to_owned();
    let up = support::serve::upstream().await;
    let node = passport_core::crypto::PrincipalSecret::from_bytes(&[9u8; 32])
        .unwrap()
        .public_key()
        .address("gonka")
        .unwrap();
    let url = format!("http://{}/v1/completions", up.addr);
    let out = tokio::task::spawn_blocking({
        let (url, node, principal) = (url.clone(), node.clone(), principal.clone());
        move || {
            run(
                &[
                    "request",
                    &url,
                    "--agent-key",
                    &agent,
                    "--passport-file",
                    &passport_file,
                    "--chain-id",
                    CHAIN,
                    "--body",
                    BODY,
                    "--gonka-key",
                    &principal,
                    "--transfer-address",
                    &node,
                ],
                None,
            )
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let seen = up.seen();
    let last = seen.last().expect("the upstream got the request");
    assert_eq!(&last.body[..], BODY.as_bytes());
    let native = passport_core::gonka::NativeHeaders::from_headers(&last.headers).unwrap();
    assert_eq!(native.transfer_address.as_deref(), Some(node.as_str()));
    let key = passport_core::keyfile::load_principal_secret(Path::new(&principal))
        .unwrap()
        .public_key();
    passport_core::gonka::verify_native(&key, &native, &last.body, "gonka", &node).unwrap();
    assert!(last.headers.contains_key("x-agent-passport"));
    assert!(last.headers.contains_key("x-agent-sig"));
    // A transfer address that is not an address with the prefix is refused, naming the
    // flag, before anything is sent (exit 2: a usage error).
    let calls = up.seen().len();
    let key = format!("{}01", "00".repeat(31));
    let refused = run(
        &[
            "request",
            &url,
            "--agent-key",
            dir.join("agent.json").to_str().unwrap(),
            "--passport-file",
            dir.join("passport.txt").to_str().unwrap(),
            "--chain-id",
            CHAIN,
            "--body",
            BODY,
            "--gonka-key",
            &key,
            "--transfer-address",
            "cosmos1xyz",
        ],
        None,
    );
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("--transfer-address"), "{err}");
    assert_eq!(up.seen().len(), calls);
}

/// Redis URLs holding a password that the configuration refuses: `#insecure`, a URL
/// that does not parse, another scheme.
const REDIS_URLS_WITH_A_PASSWORD: [(&str, &str); 3] = [
    (
        "rediss://admin:hunter2-s3cret@127.0.0.1:1/#insecure",
        "rediss://admin:***@127.0.0.1:1/#insecure",
    ),
    (
        "redis://admin:hunter2-s3cret@127.0.0.1:notaport",
        "redis://admin:***@127.0.0.1:notaport",
    ),
    (
        "http://:hunter2-s3cret@127.0.0.1:1",
        "http://:***@127.0.0.1:1",
    ),
];

#[test]
fn a_redis_password_never_appears_in_a_configuration_error() {
    for (i, (url, shown)) in REDIS_URLS_WITH_A_PASSWORD.iter().enumerate() {
        let toml =
            format!("[server]\nupstream = \"http://127.0.0.1:1\"\n[redis]\nurl = \"{url}\"\n");
        let (code, stderr) = support::serve::refused_config(&format!("redis-password-{i}"), &toml);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
        assert!(stderr.contains(shown), "{shown} missing from {stderr}");
    }
}

#[test]
fn a_redis_password_never_appears_in_a_revoke_error() {
    for (url, shown) in REDIS_URLS_WITH_A_PASSWORD {
        let out = run(
            &["revoke", "--agent-id", "urn:aps:agent:x", "--redis", url],
            None,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
        assert!(stderr.contains(shown), "{shown} missing from {stderr}");
    }
}

#[test]
fn mint_refuses_an_expiry_no_passport_can_spell() {
    let dir = support::serve::workdir("cli-mint-latest");
    credentials(&dir);
    let principal = dir.join("principal.json");
    let agent = dir.join("agent.json");
    let mint = |issued_at: &str, ttl: &str| {
        run(
            &[
                "mint",
                "--principal-key",
                principal.to_str().unwrap(),
                "--agent-key",
                agent.to_str().unwrap(),
                "--agent-id",
                "urn:aps:agent:cli",
                "--chain-id",
                CHAIN,
                "--issued-at",
                issued_at,
                "--ttl",
                ttl,
                "--max-ttl-seconds",
                "18446744073709551615",
            ],
            None,
        )
    };
    // The last hour that can be written is still minted.
    let last = mint("9999-12-31T22:59:59Z", "1h");
    assert!(last.status.success(), "{:?}", last);
    // An hour later would need a five-digit year; a ttl near i64::MAX seconds wrapped to
    // a negative year.
    for (issued_at, ttl) in [
        ("9999-12-31T23:30:00Z", "1h"),
        ("2026-01-01T00:00:00Z", "9223372036854775807"),
    ] {
        let out = mint(issued_at, ttl);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(out.stdout.is_empty(), "a passport was written");
        assert!(
            stderr.contains("ttl") && stderr.contains("9999-12-31T23:59:59"),
            "{stderr}"
        );
    }
}

#[test]
fn a_secret_key_file_others_can_read_is_loaded_with_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = support::serve::workdir("cli-key-mode");
    let (agent, passport_file, _) = credentials(&dir);
    let principal = dir.join("principal.json");
    let principal = principal.to_str().unwrap();
    let mint = || {
        run(
            &[
                "mint",
                "--principal-key",
                principal,
                "--agent-key",
                &agent,
                "--agent-id",
                "urn:aps:agent:cli",
                "--chain-id",
                CHAIN,
                "--ttl",
                "10m",
            ],
            None,
        )
    };
    let sign = || {
        run(
            &[
                "sign",
                "--agent-key",
                &agent,
                "--passport-file",
                &passport_file,
                "--chain-id",
                CHAIN,
                "--method",
                "POST",
                "--uri",
                URI,
                "--body",
                BODY,
            ],
            None,
        )
    };
    let out = mint();
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(principal, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = mint();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for (file, mode) in [(principal, "644"), (agent.as_str(), "640")] {
        assert!(
            stderr.contains(&format!("{file} has mode {mode}"))
                && stderr.contains(&format!("chmod 600 {file}")),
            "{stderr}"
        );
    }
    let out = sign();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{agent} has mode 640")),
        "{stderr}"
    );
}
