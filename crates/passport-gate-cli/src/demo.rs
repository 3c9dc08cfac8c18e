//! `passport-gate demo`: one process on loopback with an echo upstream, the gateway with
//! passports enabled, and a fresh principal and agent; then real HTTP requests that show
//! each behaviour, a table of what happened, and the attribution events written.

use crate::config::{GatewayConfig, Overrides};
use crate::echo::EchoUpstream;
use crate::gateway::{self, Bound};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use passport_core::crypto::{encode_base64, AgentSecret, PrincipalSecret};
use passport_core::mint::{AgentSigner, PassportSpec};
use passport_core::time::Timestamp;
use passport_gate::client::SignerLayer;
use std::time::Duration;
use tower::{Layer, ServiceExt};

const CHAIN: &str = "gonka-demo";
const MODEL: &str = "qwen/qwen3-32b";
const PATH: &str = "/v1/chat/completions";

struct Scenario {
    name: &'static str,
    expect_status: u16,
    expect_code: &'static str,
    status: u16,
    code: String,
    agent: String,
    note: String,
}

fn chat(content: &str, model: &str, stream: bool) -> Vec<u8> {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": content}], "stream": stream})
        .to_string()
        .into_bytes()
}

/// Runs the demo; returns the process exit code (0 only if every scenario behaved).
pub async fn run() -> Result<u8, String> {
    let principal = PrincipalSecret::generate().map_err(|e| format!("no randomness: {e}"))?;
    let agent = AgentSecret::generate().map_err(|e| format!("no randomness: {e}"))?;
    let address = principal
        .public_key()
        .address("gonka")
        .map_err(|e| e.to_string())?;
    println!("principal  {address}");
    println!(
        "agent      urn:aps:agent:demo  (ed25519 {})",
        agent.public_key().to_base64()
    );

    let upstream = EchoUpstream::start(
        "127.0.0.1:0".parse().map_err(|_| "address")?,
        Duration::from_millis(40),
    )
    .await
    .map_err(|e| format!("cannot start the echo upstream: {e}"))?;
    let events =
        std::env::temp_dir().join(format!("passport-gate-demo-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&events);
    // The replay records of this run only (the disk store, in a fresh directory).
    let records =
        std::env::temp_dir().join(format!("passport-gate-demo-{}-replay", std::process::id()));
    let _ = std::fs::remove_dir_all(&records);
    std::fs::create_dir_all(&records)
        .map_err(|e| format!("cannot create {}: {e}", records.display()))?;
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nupstream = \"http://{}\"\ninference_id_header = \"x-inference-id\"\nshutdown_grace_seconds = 5\n\n[agent_envelope]\nenabled = true\nchain_id = \"{CHAIN}\"\nreplay_protection = true\n\n[attribution]\nfile = {:?}\n\n[replay]\ndata_dir = {:?}\n",
        upstream.addr(),
        events.display().to_string(),
        records.display().to_string()
    );
    let mut config = GatewayConfig::from_toml(&toml)?;
    config.apply(Overrides::default());
    let validated = config.validate().map_err(|e| {
        e.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel::<Bound>();
    let gateway = tokio::spawn(gateway::run(
        validated,
        async {
            let _ = stop_rx.await;
        },
        move |b| {
            let _ = bound_tx.send(b);
        },
    ));
    let bound = bound_rx.await.map_err(|_| "the gateway did not start")?;
    println!(
        "gateway    http://{}  (upstream echo model at http://{})",
        bound.listen,
        upstream.addr()
    );
    println!(
        "metrics    http://{}/metrics  (live while the demo runs; it stops with it)\n",
        bound.admin
    );

    let now = Timestamp::from_unix_seconds(Timestamp::now().unix_seconds());
    let spec = |issued_at: Timestamp, ttl: i64| PassportSpec {
        chain_id: CHAIN.into(),
        agent_id: "urn:aps:agent:demo".into(),
        agent_key: agent.public_key(),
        principal_key: principal.public_key(),
        address_prefix: "gonka".into(),
        issued_at,
        expires_at: issued_at.plus_seconds(ttl),
        not_before: None,
        allowed_models: Some(vec![MODEL.into()]),
        beneficiary: Some("demo-team".into()),
    };
    let valid = spec(now, 900)
        .mint(&principal, 3600)
        .map_err(|e| e.to_string())?;
    let expired = spec(now.plus_seconds(-3600), 1800)
        .mint(&principal, 3600)
        .map_err(|e| e.to_string())?;
    let forged = {
        // Claims the principal's address and key, but the signature is an impostor's.
        let impostor = PrincipalSecret::generate().map_err(|e| format!("no randomness: {e}"))?;
        let unsigned = spec(now, 900).unsigned(3600).map_err(|e| e.to_string())?;
        let mut v: serde_json::Value =
            serde_json::from_slice(&unsigned.envelope_json).map_err(|e| e.to_string())?;
        v["principal_sig"] =
            encode_base64(&impostor.sign_adr036(&unsigned.signer, &unsigned.data)).into();
        encode_base64(v.to_string().as_bytes())
    };

    let base = format!("http://{}{PATH}", bound.listen);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let signer = |passport: &str| {
        AgentSigner::new(agent.clone(), passport, CHAIN)
            .map(|s| SignerLayer::new(s).layer(client.clone()))
    };
    let mut results = Vec::new();
    let mut record =
        |name, expect_status, expect_code, resp: (u16, String, String), note: String| {
            let (status, code, agent) = resp;
            results.push(Scenario {
                name,
                expect_status,
                expect_code,
                status,
                code,
                agent,
                note,
            });
        };

    let send_signed = |passport: String, body: Vec<u8>| {
        let base = base.clone();
        let svc = signer(&passport);
        async move {
            let svc = svc.map_err(|e| e.to_string())?;
            let req = Request::post(base)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)));
            let resp = svc
                .oneshot(req.map_err(|e| e.to_string())?)
                .await
                .map_err(|e| e.to_string())?;
            read(resp).await
        }
    };

    let r = send_signed(valid.clone(), chat("hello", MODEL, false)).await?;
    let reply = serde_json::from_str::<serde_json::Value>(&r.3)
        .ok()
        .and_then(|v| {
            v["choices"][0]["message"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let note = format!("reply {reply:?}");
    record("accepted call", 200, "", (r.0, r.1, r.2), note);

    // The exact request of the accepted call, sent again.
    let hello = chat("hello", MODEL, false);
    let sig = AgentSigner::new(agent.clone(), &valid, CHAIN)
        .and_then(|s| s.sign("POST", PATH, &hello))
        .map_err(|e| e.to_string())?;
    let r = send_raw(&client, &base, Some((&valid, &sig)), hello).await?;
    record(
        "replayed request",
        401,
        "request_replayed",
        (r.0, r.1, r.2),
        "the accepted call, sent again".into(),
    );

    let r = send_signed(valid.clone(), chat("stream three words", MODEL, true)).await?;
    let chunks = r.3.matches("data: ").count();
    record(
        "streamed call",
        200,
        "",
        (r.0, r.1, r.2),
        format!("{chunks} SSE chunks"),
    );

    // Signed over one body, sent with another.
    let sig = AgentSigner::new(agent.clone(), &valid, CHAIN)
        .and_then(|s| s.sign("POST", PATH, &chat("pay 1 token", MODEL, false)))
        .map_err(|e| e.to_string())?;
    let r = send_raw(
        &client,
        &base,
        Some((&valid, &sig)),
        chat("pay 1000 tokens", MODEL, false),
    )
    .await?;
    record(
        "tampered body",
        401,
        "agent_sig_invalid",
        (r.0, r.1, r.2),
        "body changed after signing".into(),
    );

    let r = send_signed(valid.clone(), chat("hello", "llama-3.1-70b", false)).await?;
    record(
        "model out of scope",
        403,
        "model_not_allowed",
        (r.0, r.1, r.2),
        format!("passport allows only {MODEL}"),
    );

    let r = send_signed(expired, chat("hello", MODEL, false)).await?;
    record(
        "expired passport",
        403,
        "envelope_expired",
        (r.0, r.1, r.2),
        "expired 30 minutes ago".into(),
    );

    let r = send_signed(forged, chat("hello", MODEL, false)).await?;
    record(
        "forged principal",
        401,
        "principal_sig_invalid",
        (r.0, r.1, r.2),
        "signed by an impostor key".into(),
    );

    let r = send_raw(&client, &base, None, chat("hello", MODEL, false)).await?;
    record(
        "no passport",
        200,
        "",
        (r.0, r.1, r.2),
        "passed through untouched".into(),
    );

    println!(
        "{:<20} {:>6}  {:<24} {:<20} note",
        "scenario", "status", "code", "agent"
    );
    println!("{}", "-".repeat(96));
    let mut all_ok = true;
    for s in &results {
        let ok = s.status == s.expect_status && s.code == s.expect_code;
        all_ok &= ok;
        println!(
            "{:<20} {:>6}  {:<24} {:<20} {}{}",
            s.name,
            s.status,
            if s.code.is_empty() { "-" } else { &s.code },
            s.agent,
            s.note,
            if ok {
                String::new()
            } else {
                format!("  <-- expected {} {}", s.expect_status, s.expect_code)
            }
        );
    }

    let _ = stop_tx.send(());
    let report = gateway
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let written = std::fs::read_to_string(&events).unwrap_or_default();
    println!(
        "\nattribution events written to {} ({} lines):",
        events.display(),
        written.lines().count()
    );
    for line in written.lines() {
        println!("  {line}");
    }
    if let Some(a) = report.attribution {
        println!(
            "attribution: {} written, {} dropped, {} lost at shutdown",
            a.written, a.dropped, a.lost_at_shutdown
        );
    }
    let expected_events = 2;
    if written.lines().count() != expected_events {
        println!("expected {expected_events} attribution events (the two accepted calls)");
        all_ok = false;
    }
    println!(
        "\n{}",
        if all_ok {
            "every scenario behaved as expected"
        } else {
            "SOME SCENARIOS DID NOT BEHAVE AS EXPECTED"
        }
    );
    Ok(if all_ok { 0 } else { 1 })
}

/// Status, rejection code, agent (from the echo's answer or "-") and the body text.
async fn read(
    resp: http::Response<hyper::body::Incoming>,
) -> Result<(u16, String, String, String), String> {
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    let code = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let agent = if status == 200 && code.is_empty() {
        "urn:aps:agent:demo"
    } else {
        "-"
    };
    Ok((status, code, agent.to_owned(), text))
}

async fn send_raw(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: &str,
    headers: Option<(&str, &str)>,
    body: Vec<u8>,
) -> Result<(u16, String, String, String), String> {
    let mut req = Request::post(url).header("content-type", "application/json");
    if let Some((passport, sig)) = headers {
        req = req
            .header("x-agent-passport", passport)
            .header("x-agent-sig", sig);
    }
    let resp = client
        .request(
            req.body(Full::new(Bytes::from(body)))
                .map_err(|e| e.to_string())?,
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut r = read(resp).await?;
    if headers.is_none() {
        r.2 = "-".into();
    }
    Ok(r)
}
