//! `passport-gate request`: sign and send one request.

use crate::cli::input::{passport_value, BodyArg};
use crate::cli::output::{runtime, Failure};
use clap::Args;
use passport_core::keyfile::load_agent_secret;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct RequestArgs {
    /// The URL, e.g. http://127.0.0.1:8080/v1/chat/completions.
    url: String,
    /// The agent's key file.
    #[arg(long)]
    agent_key: PathBuf,
    /// The X-Agent-Passport value.
    #[arg(long, required_unless_present = "passport_file")]
    passport: Option<String>,
    /// A file holding the X-Agent-Passport value.
    #[arg(long, conflicts_with = "passport")]
    passport_file: Option<PathBuf>,
    /// The gateway's chain id.
    #[arg(long)]
    chain_id: String,
    /// The HTTP method.
    #[arg(long, default_value = "POST")]
    method: String,
    /// Extra header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    #[command(flatten)]
    body: BodyArg,
    /// Give up when the response head has not arrived within this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout_seconds: u64,
}

pub fn run(a: &RequestArgs) -> Result<u8, Failure> {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use passport_core::mint::AgentSigner;
    use passport_gate::client::SignerLayer;
    use std::io::Write;
    use tower::{Layer, ServiceExt};

    let agent = load_agent_secret(&a.agent_key).map_err(|e| e.to_string())?;
    let passport = passport_value(a.passport.as_deref(), a.passport_file.as_deref())?;
    let signer = AgentSigner::new(agent, &passport, &a.chain_id).map_err(|e| e.to_string())?;
    let body = a.body.read()?;
    let mut req = http::Request::builder()
        .method(a.method.as_str())
        .uri(a.url.as_str());
    let mut has_content_type = false;
    for h in &a.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("-H {h:?}: expected `Name: value`"))?;
        has_content_type |= name.trim().eq_ignore_ascii_case("content-type");
        req = req.header(name.trim(), value.trim());
    }
    if !has_content_type {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("bad request: {e}"))?;
    runtime()?.block_on(async move {
        let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let sent = SignerLayer::new(signer).layer(client).oneshot(req);
        let resp = tokio::time::timeout(std::time::Duration::from_secs(a.timeout_seconds), sent)
            .await
            .map_err(|_| {
                Failure(
                    format!(
                        "request to {} failed: timeout: no response within {} s",
                        a.url, a.timeout_seconds
                    ),
                    1,
                )
            })?
            .map_err(|e| Failure(request_failure(&a.url, &e), 1))?;
        eprintln!("{:?} {}", resp.version(), resp.status());
        for (name, value) in resp.headers() {
            eprintln!("{name}: {}", value.to_str().unwrap_or("<binary>"));
        }
        eprintln!();
        let ok = resp.status().is_success();
        let mut body = resp.into_body();
        let mut out = std::io::stdout();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Failure(format!("reading the response: {e}"), 1))?;
            if let Some(data) = frame.data_ref() {
                match out.write_all(data).and_then(|()| out.flush()) {
                    Ok(()) => {}
                    // The reader went away (`| head`): stop quietly.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
                    Err(e) => return Err(Failure(e.to_string(), 1)),
                }
            }
        }
        Ok(if ok { 0 } else { 1 })
    })
}

/// "request to URL failed: CAUSE (detail)", with the cause named from the error chain
/// (connection refused, DNS lookup, TLS, timeout), so that the user knows what to fix.
pub(crate) fn request_failure(url: &str, e: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = Vec::new();
    let mut cause = None;
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if cause.is_none() {
            cause = match err
                .downcast_ref::<std::io::Error>()
                .map(std::io::Error::kind)
            {
                Some(std::io::ErrorKind::ConnectionRefused) => Some("connection refused"),
                Some(std::io::ErrorKind::TimedOut) => Some("timeout"),
                Some(std::io::ErrorKind::ConnectionReset) => Some("connection reset"),
                _ if text.contains("dns error") => Some("DNS lookup failed"),
                _ if text.contains("scheme is not http") => {
                    Some("TLS: https is not supported by this command; use http")
                }
                _ if text.to_ascii_lowercase().contains("tls") => Some("TLS handshake failed"),
                _ if text.contains("timed out") => Some("timeout"),
                _ => None,
            };
        }
        chain.push(text);
        next = err.source();
    }
    chain.dedup();
    format!(
        "request to {url} failed: {}: {}",
        cause.unwrap_or("error"),
        chain.join(": ")
    )
}
