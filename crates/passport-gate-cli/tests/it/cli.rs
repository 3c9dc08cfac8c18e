//! The agent-builder CLI end to end: keygen, mint, sign, verify, inspect and the wallet
//! flow, through the real binary.

use passport_core::crypto::PrincipalSecret;
use passport_core::keyfile::load_principal_secret;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_passport-gate"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone())
        .unwrap()
        .trim()
        .to_owned()
}

fn workdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pg-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn keys(dir: &Path) -> (String, String) {
    let p = dir.join("principal.json");
    let a = dir.join("agent.json");
    run(&["keygen", "--principal", "--out", p.to_str().unwrap()]);
    run(&["keygen", "--agent", "--out", a.to_str().unwrap()]);
    (p.to_str().unwrap().into(), a.to_str().unwrap().into())
}

const BODY: &str = r#"{"model":"qwen/qwen3-32b","messages":[]}"#;

#[test]
fn keygen_mint_sign_verify_round_trip() {
    let dir = workdir("round");
    let (p, a) = keys(&dir);
    let passport = stdout(&run(&[
        "mint",
        "--principal-key",
        &p,
        "--agent-key",
        &a,
        "--agent-id",
        "urn:aps:agent:cli",
        "--chain-id",
        "gonka-mainnet",
        "--ttl",
        "30m",
        "--model",
        "qwen/qwen3-32b",
        "--beneficiary",
        "team-a",
    ]));
    let sig = stdout(&run(&[
        "sign",
        "--agent-key",
        &a,
        "--passport",
        &passport,
        "--chain-id",
        "gonka-mainnet",
        "--method",
        "POST",
        "--uri",
        "/v1/chat/completions",
        "--body",
        BODY,
    ]));
    let verdict = run(&[
        "verify",
        "--chain-id",
        "gonka-mainnet",
        "--method",
        "POST",
        "--uri",
        "/v1/chat/completions",
        "--passport",
        &passport,
        "--sig",
        &sig,
        "--body",
        BODY,
    ]);
    assert_eq!(verdict.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&verdict.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["agent_id"], "urn:aps:agent:cli");
    assert_eq!(v["beneficiary"], "team-a");
    let principal = load_principal_secret(Path::new(&p)).unwrap();
    assert_eq!(
        v["principal_address"],
        principal.public_key().address("gonka").unwrap()
    );

    let tampered = run(&[
        "verify",
        "--chain-id",
        "gonka-mainnet",
        "--method",
        "POST",
        "--uri",
        "/v1/chat/completions",
        "--passport",
        &passport,
        "--sig",
        &sig,
        "--body",
        r#"{"model":"qwen/qwen3-32b","messages":[1]}"#,
    ]);
    assert_eq!(tampered.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&tampered.stdout).unwrap();
    assert_eq!(v["code"], "agent_sig_invalid");
    assert_eq!(v["status"], 401);

    let headers = stdout(&run(&[
        "sign",
        "--agent-key",
        &a,
        "--passport",
        &passport,
        "--chain-id",
        "gonka-mainnet",
        "--method",
        "POST",
        "--uri",
        "/v1/chat/completions",
        "--body",
        BODY,
        "--headers",
    ]));
    assert!(headers.starts_with("X-Agent-Passport: "));
    assert!(headers.contains(&format!("X-Agent-Sig: {sig}")));
}

#[test]
fn verify_usage_errors_exit_2() {
    let o = run(&["verify", "--chain-id", "gonka-mainnet"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn mint_refuses_what_a_default_verifier_rejects() {
    let dir = workdir("refuse");
    let (p, a) = keys(&dir);
    let base = [
        "mint",
        "--principal-key",
        &p,
        "--agent-key",
        &a,
        "--agent-id",
        "x",
        "--chain-id",
        "c",
    ];
    let too_long = run(&[&base[..], &["--ttl", "2h"]].concat());
    assert_eq!(too_long.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&too_long.stderr).contains("3600"));
    let raised = run(&[&base[..], &["--ttl", "2h", "--max-ttl-seconds", "7200"]].concat());
    assert!(raised.status.success());
    let bad_beneficiary = run(&[&base[..], &["--ttl", "1h", "--beneficiary", "a\tb"]].concat());
    assert_eq!(bad_beneficiary.status.code(), Some(2));
    let backwards = run(&[
        &base[..],
        &[
            "--issued-at",
            "2026-05-21T12:00:00Z",
            "--expires-at",
            "2026-05-21T11:00:00Z",
        ],
    ]
    .concat());
    assert_eq!(backwards.status.code(), Some(2));
}

#[test]
fn no_models_writes_an_empty_list_and_inspect_shows_it() {
    let dir = workdir("inspect");
    let (p, a) = keys(&dir);
    let passport = stdout(&run(&[
        "mint",
        "--principal-key",
        &p,
        "--agent-key",
        &a,
        "--agent-id",
        "x",
        "--chain-id",
        "c",
        "--ttl",
        "10m",
        "--no-models",
    ]));
    let shown = stdout(&run(&["inspect", &passport]));
    assert!(shown.contains("\"allowed_models\": []"), "{shown}");
    assert!(shown.contains("(matches)"), "{shown}");
    assert!(shown.contains("inside its validity window"), "{shown}");
}

#[test]
fn bare_hex_secrets_are_accepted_as_key_files() {
    let dir = workdir("hex");
    let secret = dir.join("p.hex");
    std::fs::write(&secret, format!("{}\n", "11".repeat(32))).unwrap();
    let (_, a) = keys(&dir);
    let o = run(&[
        "mint",
        "--principal-key",
        secret.to_str().unwrap(),
        "--agent-key",
        &a,
        "--agent-id",
        "x",
        "--chain-id",
        "c",
        "--ttl",
        "60",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn wallet_flow_unsigned_then_attach() {
    let dir = workdir("wallet");
    let (p, a) = keys(&dir);
    let principal = load_principal_secret(Path::new(&p)).unwrap();
    let pubkey = principal.public_key().to_base64();
    let out = stdout(&run(&[
        "mint",
        "--unsigned",
        "--principal-pubkey",
        &pubkey,
        "--agent-key",
        &a,
        "--agent-id",
        "x",
        "--chain-id",
        "gonka-mainnet",
        "--ttl",
        "5m",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let envelope_file = dir.join("unsigned.json");
    std::fs::write(&envelope_file, v["envelope"].to_string()).unwrap();
    // The wallet signs the printed data as the printed signer (ADR-036 signArbitrary).
    let signer = v["sign_arbitrary"]["signer"].as_str().unwrap();
    let data = v["sign_arbitrary"]["data"].as_str().unwrap();
    let sig = passport_core::crypto::encode_base64(&principal.sign_adr036(signer, data.as_bytes()));
    let passport = stdout(&run(&[
        "mint",
        "--attach-sig",
        &sig,
        "--envelope",
        envelope_file.to_str().unwrap(),
    ]));
    let shown = stdout(&run(&["inspect", &passport]));
    assert!(shown.contains("(matches)"));

    let wrong = PrincipalSecret::from_bytes(&[9u8; 32]).unwrap();
    let bad = passport_core::crypto::encode_base64(&wrong.sign_adr036(signer, data.as_bytes()));
    let o = run(&[
        "mint",
        "--attach-sig",
        &bad,
        "--envelope",
        envelope_file.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not verify"));
}

#[test]
fn conformance_command_reports_and_exits_by_outcome() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../conformance/vectors");
    let o = run(&["conformance", dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(text.trim_end().ends_with(" passed, 0 failed"), "{text}");

    let bad = workdir("conf").join("bad.json");
    std::fs::write(&bad, "{}").unwrap();
    let o = run(&["conformance", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stdout).contains("INVALID"));
}

fn audit_event(
    n: u64,
    principal: &str,
    model: &str,
) -> passport_gate::attribution::AttributionEvent {
    passport_gate::attribution::AttributionEvent {
        v: "aps-attribution-v1".into(),
        event_id: format!("{n:032x}"),
        inference_id: format!("inf-{n}"),
        chain_id: "gonka-mainnet".into(),
        model: model.into(),
        agent_id: "urn:aps:agent:a".into(),
        principal_address: principal.into(),
        beneficiary: None,
        requester_address: None,
        request_body_sha256: "00".repeat(32),
        envelope_sha256: "11".repeat(32),
        passport_expires_at: "2026-05-21T13:00:00Z".into(),
        verified_at: "2026-05-21T12:00:00Z".into(),
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        status: 200,
        latency_ms: 1,
        passport_id: String::new(),
        client_disconnected: false,
        ..Default::default()
    }
}

#[test]
fn audit_verify_names_tampering_and_report_summarises() {
    use passport_gate::attribution::{AuditFileSink, FsyncPolicy, Sink};
    let dir = workdir("audit");
    let path = dir.join("audit.jsonl");
    let mut sink = AuditFileSink::open(&path, FsyncPolicy::Always, None).unwrap();
    for n in 0..5 {
        let principal = if n < 3 { "gonka1alice" } else { "gonka1bob" };
        sink.write(&audit_event(n, principal, "qwen/qwen3-32b"))
            .unwrap();
    }
    let head = hex::encode(sink.head());
    drop(sink);
    let p = path.to_str().unwrap();

    let ok = run(&["audit", "verify", p, "--head", &head]);
    let text = String::from_utf8_lossy(&ok.stdout).into_owned();
    assert_eq!(ok.status.code(), Some(0), "{text}");
    assert!(text.contains("ok: 5 line(s) verified"), "{text}");
    assert!(text.contains(&format!("head hash: {head}")), "{text}");
    assert!(text.contains("head matches the expected hash"), "{text}");
    let unanchored = stdout(&run(&["audit", "verify", p]));
    assert!(
        unanchored.contains("lines removed from the end cannot be detected"),
        "{unanchored}"
    );

    let report = run(&["audit", "report", p, "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2);
    assert_eq!(rows[0]["principal_address"], "gonka1alice");
    assert_eq!(rows[0]["calls"], 3);
    assert_eq!(rows[1]["calls"], 2);
    let table = stdout(&run(&["audit", "report", p]));
    assert!(
        table.contains("2026-05-21") && table.contains("gonka1bob"),
        "{table}"
    );
    assert!(table.ends_with("5 call(s) in 1 event file(s)"), "{table}");

    // Drop the last line: the chain still verifies, but not against the kept head.
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&path, lines[..4].join("\n") + "\n").unwrap();
    let cut = run(&["audit", "verify", p, "--head", &head]);
    assert_eq!(cut.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&cut.stdout).contains("HEAD MISMATCH"));

    // Edit a line: named by number.
    let edited = lines[..4]
        .join("\n")
        .replacen("gonka1alice", "gonka1mallory", 1)
        + "\n";
    std::fs::write(&path, edited).unwrap();
    let broken = run(&["audit", "verify", p]);
    assert_eq!(broken.status.code(), Some(1));
    let text = String::from_utf8_lossy(&broken.stdout).into_owned();
    assert!(
        text.contains("BROKEN at") && text.contains("audit.jsonl:1:"),
        "{text}"
    );
}

/// The first request of a generated conformance vector, as `verify` arguments.
fn vector_request(name: &str) -> (String, String, String, String) {
    let v = passport_conformance::generate()
        .into_iter()
        .find(|v| v.name == name)
        .unwrap();
    let r = &v.steps[0].request;
    let header = |n: &str| r.headers.iter().find(|(k, _)| k == n).unwrap().1.clone();
    let body = passport_core::crypto::decode_base64(&r.body_base64).unwrap();
    (
        header("X-Agent-Passport"),
        header("X-Agent-Sig"),
        String::from_utf8(body).unwrap(),
        r.uri.clone(),
    )
}

fn verify_at(now: &str, uri: &str, passport: &str, sig: &str, body: &str) -> Output {
    run(&[
        "verify",
        "--chain-id",
        "gonka-mainnet",
        "--now",
        now,
        "--method",
        "POST",
        "--uri",
        uri,
        "--passport",
        passport,
        "--sig",
        sig,
        "--body",
        body,
    ])
}

fn verdict_code(o: &Output) -> String {
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["code"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn verify_now_keeps_sub_second_precision() {
    // accept-models-omitted expires at 12:29:00Z.
    let (passport, sig, body, uri) = vector_request("accept-models-omitted");
    let at_expiry = verify_at("2026-05-21T12:29:00Z", &uri, &passport, &sig, &body);
    assert_eq!(at_expiry.status.code(), Some(0));
    let after = verify_at("2026-05-21T12:29:00.5Z", &uri, &passport, &sig, &body);
    assert_eq!(after.status.code(), Some(1));
    assert_eq!(verdict_code(&after), "envelope_expired");
}

#[test]
fn verify_reads_header_values_as_the_layer_does() {
    let (passport, sig, body, uri) = vector_request("accept-models-omitted");
    let now = "2026-05-21T12:00:00Z";
    // The layer refuses a value with surrounding spaces: so does verify.
    let mut vector = passport_conformance::generate()
        .into_iter()
        .find(|v| v.name == "accept-models-omitted")
        .unwrap();
    vector.steps[0].request.headers[0].1 = format!(" {passport} ");
    vector.steps[0].expect = passport_conformance::Expect {
        status: 400,
        code: Some("header_malformed".into()),
        verified: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(
        rt.block_on(passport_conformance::run_vector(&vector))
            .unwrap(),
        passport_conformance::VectorOutcome::Passed
    );
    let spaced = verify_at(now, &uri, &format!(" {passport} "), &sig, &body);
    assert_eq!(spaced.status.code(), Some(1));
    assert_eq!(verdict_code(&spaced), "header_malformed");
    // A signature of the wrong length fails at the agent signature step, as in the layer.
    let short = verify_at(now, &uri, &passport, &"AQ".repeat(42), &body);
    assert_eq!(verdict_code(&short), "agent_sig_invalid");
    // One empty value is a mismatch; two empty values are no passport at all.
    assert_eq!(
        verdict_code(&verify_at(now, &uri, "", &sig, &body)),
        "sig_header_mismatch"
    );
    let none = verify_at(now, &uri, "", "", &body);
    assert_eq!(none.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&none.stdout).unwrap();
    assert_eq!(v["passthrough"], true);
    // A value longer than any strict base64 of 16 KiB is too large before it is decoded,
    // even when it is not base64 at all (the conformance vector passport-too-large is
    // the layer's side).
    let huge = verify_at(now, &uri, &"!".repeat(22_000), &sig, &body);
    assert_eq!(verdict_code(&huge), "passport_too_large");
}

#[test]
fn verify_refuses_targets_no_request_line_carries() {
    let (passport, sig, body, uri) = vector_request("accept-models-omitted");
    let now = "2026-05-21T12:00:00Z";
    assert_eq!(
        verify_at(now, &uri, &passport, &sig, &body).status.code(),
        Some(0)
    );
    for target in [
        format!("http://gateway.example{uri}"),
        format!("{uri}#section"),
        "v1/chat/completions".to_owned(),
    ] {
        let o = verify_at(now, &target, &passport, &sig, &body);
        assert_eq!(o.status.code(), Some(2), "{target}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("origin-form"));
    }
}

/// `gonka-sign` prints the native signature headers of every `gonka_native` fixture in
/// conformance/sdk-fixtures.json byte for byte (the three public fixtures among them),
/// with `X-Transfer-Address` only when it is not empty; the key may be a bare secret or a
/// `keygen --principal` key file.
#[test]
fn gonka_sign_reproduces_the_native_fixtures_byte_for_byte() {
    use base64::Engine;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance/sdk-fixtures.json");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let fixtures = doc["gonka_native"].as_array().unwrap();
    assert!(fixtures.len() >= 3);
    let dir = workdir("gonka-sign");
    for f in fixtures {
        let name = f["name"].as_str().unwrap();
        let body = base64::engine::general_purpose::STANDARD
            .decode(f["body_base64"].as_str().unwrap())
            .unwrap();
        let body_file = dir.join(format!("{name}.body"));
        std::fs::write(&body_file, &body).unwrap();
        let transfer = f["transfer_address"].as_str().unwrap();
        let out = stdout(&run(&[
            "gonka-sign",
            "--key",
            f["secret_hex"].as_str().unwrap(),
            "--body-file",
            body_file.to_str().unwrap(),
            "--timestamp-ns",
            f["timestamp_ns"].as_str().unwrap(),
            "--transfer-address",
            transfer,
            "--prefix",
            f["prefix"].as_str().unwrap(),
        ]));
        let mut expected = vec![
            format!("Authorization: {}", f["authorization"].as_str().unwrap()),
            format!("X-Requester-Address: {}", f["address"].as_str().unwrap()),
            format!("X-Timestamp: {}", f["timestamp_ns"].as_str().unwrap()),
        ];
        if !transfer.is_empty() {
            expected.push(format!("X-Transfer-Address: {transfer}"));
        }
        assert_eq!(out, expected.join("\n"), "fixture {name}");
    }
    // The same key as a key file: the first fixture's headers again.
    let f = &fixtures[0];
    let secret: [u8; 32] = hex::decode(f["secret_hex"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let key_file = dir.join("principal.json");
    let principal = PrincipalSecret::from_bytes(&secret).unwrap();
    let file = passport_core::keyfile::KeyFile::principal(&principal, "gonka").unwrap();
    passport_core::keyfile::write_key_file(&key_file, &file).unwrap();
    let body_file = dir.join(format!("{}.body", f["name"].as_str().unwrap()));
    let out = stdout(&run(&[
        "gonka-sign",
        "--key",
        key_file.to_str().unwrap(),
        "--body-file",
        body_file.to_str().unwrap(),
        "--timestamp-ns",
        f["timestamp_ns"].as_str().unwrap(),
        "--transfer-address",
        f["transfer_address"].as_str().unwrap(),
        "--prefix",
        f["prefix"].as_str().unwrap(),
    ]));
    let first = format!("Authorization: {}", f["authorization"].as_str().unwrap());
    assert_eq!(out.lines().next(), Some(first.as_str()));
}

/// A `--key` that is neither 64 hex digits nor a file is refused, naming the flag and not
/// echoing the value (it may be a mistyped secret).
#[test]
fn gonka_sign_refuses_a_key_that_is_neither_hex_nor_a_file() {
    let o = run(&["gonka-sign", "--key", "not-a-secret-xyz", "--body", "hello"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--key"), "{err}");
    assert!(!err.contains("not-a-secret-xyz"), "{err}");
}

#[test]
fn a_bad_passport_gate_enabled_variable_is_refused_naming_it() {
    let o = bin()
        .args(["serve", "--upstream", "http://127.0.0.1:9"])
        .env("PASSPORT_GATE_ENABLED", "yes")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("PASSPORT_GATE_ENABLED: \"yes\" is not true or false"),
        "{stderr}"
    );
}
