//! OpenTelemetry traces against a real OTLP receiver (tests/python/otlp_receiver.py,
//! which decodes every export with the `opentelemetry-proto` package): one server span
//! per request with the verified identity, the verdict, the upstream's timing and the
//! token usage; the upstream continues the trace through `traceparent`.
//!
//! The interpreter is `$PG_PYTHON`, else `target/python-venv/bin/python` (what `.ci/run`
//! installs), else `python3`. Without the `opentelemetry-proto` package the test is
//! skipped and says so (skip.rs), except under CI, where it fails.

use crate::support;

use axum::routing::post;
use axum::Router;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use support::serve::{config, start};

const URI: &str = "/v1/chat/completions";
const BODY: &[u8] = br#"{"model":"echo-1","messages":[{"role":"user","content":"hi"}]}"#;
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn python() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/python-venv/bin/python");
    let candidates = [
        std::env::var_os("PG_PYTHON").map(PathBuf::from),
        Some(venv),
        Some(PathBuf::from("python3")),
    ];
    let mut found = None;
    let runs = crate::skip::requires(|| {
        found = candidates.into_iter().flatten().find(|p| {
            Command::new(p)
                .args([
                    "-c",
                    "import opentelemetry.proto.collector.trace.v1.trace_service_pb2",
                ])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        found.is_none().then(|| {
            "a Python with the opentelemetry-proto package (target/python-venv, made as .ci/run does)"
                .to_owned()
        })
    });
    found.filter(|_| runs)
}

/// The receiver process and the JSON lines it printed (one per span).
struct Receiver {
    child: Child,
    port: u16,
    lines: mpsc::Receiver<serde_json::Value>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    fn start(python: &Path) -> Receiver {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/otlp_receiver.py");
        let mut child = Command::new(python)
            .arg(script)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let first = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("the receiver started");
        let port = first["listening"].as_u64().unwrap() as u16;
        Receiver { child, port, lines }
    }

    /// The next `n` spans, within 15 s.
    fn spans(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut out = Vec::new();
        while out.len() < n {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("{n} spans arrived; got {out:#?}"));
            assert!(line.get("decode_error").is_none(), "{line}");
            out.push(line);
        }
        out
    }
}

/// An OpenAI-like upstream answering JSON with usage; records each `traceparent` it got
/// (an empty string for none).
async fn upstream() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    let app = Router::new().route(
        URI,
        post(move |headers: http::HeaderMap| {
            let record = record.clone();
            async move {
                let tp = headers
                    .get_all("traceparent")
                    .iter()
                    .map(|v| v.to_str().unwrap_or("?").to_owned())
                    .collect::<Vec<_>>()
                    .join(",");
                record.lock().unwrap().push(tp);
                http::Response::builder()
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(
                        r#"{"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#,
                    ))
                    .unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

fn with(headers: &[(String, String)], extra: (&str, &str)) -> Vec<(String, String)> {
    let mut h = headers.to_vec();
    h.push((extra.0.to_owned(), extra.1.to_owned()));
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_real_otlp_receiver_with_the_identity_the_verdict_and_the_upstreams_trace() {
    let Some(python) = python() else {
        return;
    };
    let receiver = Receiver::start(&python);
    let (up, traceparents) = upstream().await;
    let gw = start(
        "otel-receiver",
        &config(
            up,
            &format!(
                "\n[routes]\nguarded = [\"POST {URI}\"]\n\n[tracing]\notlp_endpoint = \"http://127.0.0.1:{}\"\nservice_name = \"gw-under-test\"\nexport_interval_ms = 100\n",
                receiver.port
            ),
        ),
    );
    let f = support::live("urn:aps:agent:traced");

    // Accepted, continuing the client's trace.
    let client_tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let accepted = support::post(
        gw.listen,
        URI,
        &with(&f.headers(URI, BODY), ("traceparent", &client_tp)),
        BODY,
    )
    .await;
    assert_eq!(accepted.0, 200, "{}", accepted.1);

    // Refused: signed for another body. The upstream never sees it.
    let refused = support::post(gw.listen, URI, &f.headers(URI, b"{}"), BODY).await;
    assert_eq!(refused.0, 401, "{}", refused.1);
    let refused_code = serde_json::from_str::<serde_json::Value>(&refused.1).unwrap()["code"]
        .as_str()
        .unwrap()
        .to_owned();

    // Accepted with a malformed traceparent (uppercase hex): a new trace is started.
    let malformed = format!("00-{}-{CLIENT_SPAN}-01", CLIENT_TRACE.to_uppercase());
    let fresh = support::post(
        gw.listen,
        URI,
        &with(&f.headers(URI, BODY), ("traceparent", &malformed)),
        BODY,
    )
    .await;
    assert_eq!(fresh.0, 200, "{}", fresh.1);

    let sent = traceparents.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "{sent:?}");
    // The upstream continues the client's trace, as the child of the gateway's span.
    let parts: Vec<&str> = sent[0].split('-').collect();
    assert_eq!(parts.len(), 4, "{sent:?}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", CLIENT_TRACE, "01"));
    assert_ne!(parts[2], CLIENT_SPAN);
    let gateway_span = parts[2].to_owned();
    // The malformed value never reaches the upstream; a new trace id does.
    let fresh_parts: Vec<&str> = sent[1].split('-').collect();
    assert_eq!(fresh_parts.len(), 4, "{sent:?}");
    assert_ne!(fresh_parts[1].to_uppercase(), CLIENT_TRACE.to_uppercase());

    let spans = receiver.spans(3);
    let by_trace = |t: &str| {
        spans
            .iter()
            .find(|s| s["trace_id"] == t)
            .unwrap_or_else(|| panic!("a span of trace {t} in {spans:#?}"))
    };
    let a = by_trace(CLIENT_TRACE);
    assert_eq!(a["path"], "/v1/traces");
    assert_eq!(a["content_type"], "application/x-protobuf");
    assert_eq!(a["resource"]["service.name"], "gw-under-test");
    assert_eq!(a["kind"], "SPAN_KIND_SERVER");
    assert_eq!(a["name"], format!("POST {URI}"));
    assert_eq!(a["span_id"], gateway_span.as_str());
    assert_eq!(a["parent_span_id"], CLIENT_SPAN);
    assert!(a["end"].as_u64().unwrap() >= a["start"].as_u64().unwrap());
    let attrs = &a["attributes"];
    assert_eq!(attrs["passport_gate.agent_id"], "urn:aps:agent:traced");
    assert_eq!(
        attrs["passport_gate.principal_address"],
        f.principal_address.as_str()
    );
    assert_eq!(
        attrs["passport_gate.passport_id"].as_str().unwrap().len(),
        64
    );
    assert_eq!(attrs["gen_ai.request.model"], "echo-1");
    assert_eq!(attrs["passport_gate.outcome"], "accepted");
    assert_eq!(attrs["http.response.status_code"], 200);
    assert_eq!(attrs["http.request.method"], "POST");
    assert_eq!(attrs["http.route"], URI);
    assert_eq!(
        (
            &attrs["gen_ai.usage.input_tokens"],
            &attrs["gen_ai.usage.output_tokens"],
            &attrs["passport_gate.usage.total_tokens"]
        ),
        (&3.into(), &5.into(), &8.into())
    );
    assert!(
        attrs["passport_gate.upstream.duration_ms"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    // Never a secret: neither the passport nor the signature is in any attribute.
    let every_value = spans
        .iter()
        .flat_map(|s| s["attributes"].as_object().unwrap().values())
        .map(|v| v.to_string())
        .collect::<String>();
    assert!(!every_value.contains(&f.passport[..40]));

    let b = spans
        .iter()
        .find(|s| s["attributes"]["passport_gate.outcome"] == "rejected")
        .unwrap_or_else(|| panic!("a rejected span in {spans:#?}"));
    assert_eq!(b["attributes"]["passport_gate.code"], refused_code.as_str());
    assert_eq!(b["attributes"]["http.response.status_code"], 401);
    assert!(
        b["attributes"].get("passport_gate.agent_id").is_none(),
        "{b}"
    );
    assert_eq!(b["parent_span_id"], "");

    let c = by_trace(fresh_parts[1]);
    assert_eq!(
        c["parent_span_id"], "",
        "a malformed parent is not a parent"
    );
    assert_eq!(c["span_id"], fresh_parts[2]);

    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.metric("passport_gate_trace_spans_exported_total").await < 3.0 {
        assert!(Instant::now() < deadline, "the exported spans are counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
