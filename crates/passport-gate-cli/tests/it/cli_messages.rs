//! Messages that must name what to fix (issue 23): each test runs the real binary on the
//! mistake a user made and checks that the message leads to the fix, and that nothing
//! false is printed beside it.

use crate::support;

use std::path::Path;
use std::process::{Command, Output};
use support::serve::{config, refused_config, start, upstream, workdir, CHAIN};

const URI: &str = "/v1/chat/completions";
const BODY: &str = r#"{"model":"qwen/qwen3-32b","messages":[]}"#;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_passport-gate"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An agent key file and a passport file for `CHAIN` in `dir`, made with the CLI:
/// (agent key path, passport file path, principal key path).
pub fn credentials(dir: &Path) -> (String, String, String) {
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let (agent, principal, passport) = (
        path("agent.json"),
        path("principal.json"),
        path("passport.txt"),
    );
    ok(&["keygen", "--agent", "--out", &agent]);
    ok(&["keygen", "--principal", "--out", &principal]);
    let minted = ok(&[
        "mint",
        "--principal-key",
        &principal,
        "--agent-key",
        &agent,
        "--agent-id",
        "urn:aps:agent:messages",
        "--chain-id",
        CHAIN,
        "--ttl",
        "10m",
        "--model",
        "qwen/qwen3-32b",
    ]);
    std::fs::write(&passport, minted).unwrap();
    (agent, passport, principal)
}

/// Text that is not TOML is one line with the parser's position, and nothing else: the
/// settings were not read, so no line about one of them (it used to add
/// `server.upstream: must be set` to every syntax error).
#[test]
fn a_toml_syntax_error_is_the_only_problem_reported() {
    let toml = "[server]\nupstream = \"http://127.0.0.1:9\"\nlisten = \"127.0.0.1:0\n";
    let (code, stderr) = refused_config("messages-toml-syntax", toml);
    assert_eq!(code, Some(2), "{stderr}");
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    assert_eq!(problems.len(), 1, "{stderr}");
    assert!(problems[0].contains("line 3"), "{stderr}");
    assert!(!stderr.contains("must be set"), "{stderr}");
    assert!(
        stderr.contains("1 configuration problem(s); nothing was started"),
        "{stderr}"
    );
}

/// A request signed for another chain id than the passport's: the CLI warns before
/// sending and names the flag value to use, and the gateway's refusal (still
/// `agent_sig_invalid`: the code is interface) says to sign with the passport's
/// chain_id, which the client already has, so the hint discloses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_signed_for_another_chain_id_is_refused_with_a_hint_to_the_chain_id() {
    let dir = workdir("messages-chain-id-files");
    let (agent, passport_file, _) = credentials(&dir);
    let up = upstream().await;
    let gw = start("messages-chain-id", &config(up.addr, ""));
    let url = format!("http://{}{URI}", gw.listen);
    let out = tokio::task::spawn_blocking(move || {
        run(&[
            "request",
            &url,
            "--agent-key",
            &agent,
            "--passport-file",
            &passport_file,
            "--chain-id",
            "gonka-testnet",
            "--body",
            BODY,
        ])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "warning: --chain-id \"gonka-testnet\" is not the passport's chain_id \"{CHAIN}\""
        )) && err.contains(&format!("sign with --chain-id \"{CHAIN}\"")),
        "{err}"
    );
    let problem: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(problem["code"], "agent_sig_invalid", "{problem}");
    let message = problem["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("with the passport's chain_id as the chain id"),
        "{message}"
    );
    assert!(up.seen().is_empty(), "nothing reached the upstream");

    // `sign` warns the same way, and the right chain id is silent.
    let dir2 = dir.clone();
    let sign = |chain: &str| {
        run(&[
            "sign",
            "--agent-key",
            dir2.join("agent.json").to_str().unwrap(),
            "--passport-file",
            dir2.join("passport.txt").to_str().unwrap(),
            "--chain-id",
            chain,
            "--method",
            "POST",
            "--uri",
            URI,
            "--body",
            BODY,
        ])
    };
    let wrong = sign("gonka-testnet");
    assert!(wrong.status.success(), "{wrong:?}");
    assert!(stderr(&wrong).contains("is not the passport's chain_id"));
    let right = sign(CHAIN);
    assert!(right.status.success(), "{right:?}");
    assert_eq!(stderr(&right), "");
}

/// `request 127.0.0.1:8080/v1/...` (no scheme) is refused before anything is sent,
/// with the URL written out as it should be (it was "bad request: invalid format").
#[test]
fn a_url_without_a_scheme_is_refused_with_the_url_written_out() {
    let dir = workdir("messages-url-scheme");
    let (agent, passport_file, _) = credentials(&dir);
    let request = |url: &str| {
        run(&[
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
        ])
    };
    let out = request("127.0.0.1:8080/v1/chat/completions");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains("has no scheme: write http://127.0.0.1:8080/v1/chat/completions (or https://127.0.0.1:8080/v1/chat/completions for a TLS listener)"),
        "{err}"
    );
    assert!(!err.contains("invalid format"), "{err}");
    let out = request("ftp://127.0.0.1:8080/v1/chat/completions");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr(&out).contains("this command speaks http:// and https://"),
        "{out:?}"
    );
}

/// `audit verify --head zz`: a head hash is 64 hex digits; anything else is refused
/// before the files are read (it was accepted, and compared). A head that does not
/// match is the verdict: no "ok" line before it.
#[test]
fn audit_verify_refuses_a_malformed_head_and_never_says_ok_before_a_mismatch() {
    use passport_gate::attribution::{AttributionEvent, AuditFileSink, FsyncPolicy, Sink};
    let dir = workdir("messages-audit-head");
    let path = dir.join("audit.jsonl");
    let mut sink = AuditFileSink::open(&path, FsyncPolicy::Always, None).unwrap();
    for n in 0..3 {
        sink.write(&AttributionEvent {
            v: "aps-attribution-v1".into(),
            event_id: format!("{n:032x}"),
            inference_id: format!("inf-{n}"),
            chain_id: CHAIN.into(),
            model: "qwen/qwen3-32b".into(),
            agent_id: "urn:aps:agent:a".into(),
            principal_address: "gonka1alice".into(),
            request_body_sha256: "00".repeat(32),
            envelope_sha256: "11".repeat(32),
            passport_expires_at: "2026-05-21T13:00:00Z".into(),
            verified_at: "2026-05-21T12:00:00Z".into(),
            method: "POST".into(),
            path: URI.into(),
            status: 200,
            ..Default::default()
        })
        .unwrap();
    }
    let head = hex::encode(sink.head());
    drop(sink);
    let p = path.to_str().unwrap();

    let typo = run(&["audit", "verify", p, "--head", "zz"]);
    assert_eq!(typo.status.code(), Some(2), "{typo:?}");
    assert!(
        stderr(&typo).contains("--head \"zz\": expected the 64 hex digits of a head hash"),
        "{typo:?}"
    );
    assert!(typo.stdout.is_empty(), "{typo:?}");

    let other = "ab".repeat(32);
    let mismatch = run(&["audit", "verify", p, "--head", &other]);
    assert_eq!(mismatch.status.code(), Some(1), "{mismatch:?}");
    let text = String::from_utf8_lossy(&mismatch.stdout);
    assert!(
        text.starts_with(&format!(
            "HEAD MISMATCH: the files end at head hash {head}, not at {other}"
        )),
        "{text}"
    );
    assert!(!text.contains("ok"), "{text}");

    let matching = ok(&["audit", "verify", p, "--head", &head.to_uppercase()]);
    assert!(
        matching.starts_with("ok: 3 line(s) verified") && matching.contains("head matches"),
        "{matching}"
    );
}

/// A key file of the other kind names both kinds and the file to give instead, in
/// English ("holds a Agent key" before).
#[test]
fn a_key_file_of_the_wrong_kind_names_both_kinds() {
    let dir = workdir("messages-key-kind");
    let (_, passport_file, principal) = credentials(&dir);
    let out = run(&[
        "sign",
        "--agent-key",
        &principal,
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
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{principal} holds a principal key (secp256k1), where an agent key (Ed25519) is needed: give the agent key file"
        )),
        "{err}"
    );
}
