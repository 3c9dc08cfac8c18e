//! `passport-gate request`: sign and send one request, over http or https (the gateway's
//! TLS listener; a private CA with `--ca-file`, a client certificate with
//! `--client-cert` and `--client-key`).

use crate::cli::input::{passport_value, BodyArg};
use crate::cli::output::{runtime, Failure};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct RequestArgs {
    /// The URL, e.g. http://127.0.0.1:8080/v1/chat/completions (https:// for a TLS
    /// listener).
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
    /// For https: a PEM file of the CA that signed the server's certificate (a private
    /// CA); without it the webpki roots (Mozilla's list, built in). There is no way to
    /// skip verification.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// For https to a listener that requires client certificates: the PEM certificate
    /// chain to present.
    #[arg(long, requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The PEM private key of --client-cert.
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Give up when the response head has not arrived within this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout_seconds: u64,
    /// Also sign natively for a Gonka API node with this secp256k1 key (a `keygen
    /// --principal` key file or 64 hex digits): Authorization, X-Requester-Address,
    /// X-Timestamp and X-Transfer-Address over the same body as the passport signature.
    #[arg(long)]
    gonka_key: Option<String>,
    /// With --gonka-key: the address of the node the request goes to.
    #[arg(long, requires = "gonka_key")]
    transfer_address: Option<String>,
    /// With --gonka-key: the bech32 prefix of the requester address.
    #[arg(long, default_value = "gonka", requires = "gonka_key")]
    prefix: String,
}

pub fn run(a: &RequestArgs) -> Result<u8, Failure> {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use passport_gate::client::SignerLayer;
    use std::io::Write;
    use tower::{Layer, ServiceExt};

    let uri = target(&a.url)?;
    let tls = crate::transport::tls::client_config(&crate::transport::tls::ClientTls {
        ca_file: a.ca_file.as_deref(),
        client_cert: a.client_cert.as_deref().zip(a.client_key.as_deref()),
    })
    .map_err(|e| e.to_string())?;
    let agent = crate::cli::input::agent_secret_file(&a.agent_key)?;
    let passport = passport_value(a.passport.as_deref(), a.passport_file.as_deref())?;
    let signer = crate::cli::input::agent_signer(agent, &passport, &a.chain_id)?;
    let body = a.body.read()?;
    let mut req = http::Request::builder().method(a.method.as_str()).uri(uri);
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
    let layer = match &a.gonka_key {
        None => SignerLayer::new(signer),
        Some(key) => {
            let secret =
                passport_core::keyfile::principal_secret_from_hex_or_path(key, "--gonka-key")
                    .map_err(|e| e.to_string())?;
            let native = passport_core::gonka::NativeSigner::new(&secret, &a.prefix)
                .map_err(|e| format!("--prefix {:?}: {e}", a.prefix))?;
            let transfer = passport_core::gonka::TransferAddresses::one(
                a.transfer_address.as_deref(),
                &a.prefix,
            )
            .map_err(|e| format!("--transfer-address: {e}"))?;
            SignerLayer::new(signer).with_native(native, transfer)
        }
    };
    runtime()?.block_on(async move {
        let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new_with_resolver(
            Resolver(hyper_util::client::legacy::connect::dns::GaiResolver::new()),
        );
        tcp.enforce_http(false);
        // HTTP/1.1 or HTTP/2 over TLS as the server picks by ALPN; plain HTTP/1.1.
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(tcp);
        let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector);
        let sent = layer.layer(client).oneshot(req);
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
            .map_err(|e| Failure(failure_message(&a.url, Reason::of(&e), &e), 1))?;
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

/// Why a request got no response, named so that the user knows what to fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    /// Nothing listens at the address.
    ConnectionRefused,
    /// The connection or the exchange timed out.
    Timeout,
    /// The server cut the connection.
    ConnectionReset,
    /// The host name did not resolve.
    Dns,
    /// The TLS handshake failed: most often a server certificate signed by a private CA
    /// that was not given with --ca-file, or issued for another name.
    Tls,
    /// Anything else.
    Other,
}

impl Reason {
    /// The reason from the error's types: the first error in the chain that names one.
    fn of(e: &(dyn std::error::Error + 'static)) -> Reason {
        if crate::transport::tls::is_tls_error(e) {
            return Reason::Tls;
        }
        let mut next = Some(e);
        while let Some(err) = next {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => return Reason::ConnectionRefused,
                    std::io::ErrorKind::TimedOut => return Reason::Timeout,
                    std::io::ErrorKind::ConnectionReset => return Reason::ConnectionReset,
                    _ => {}
                }
                // An io::Error hides the error it wraps from `source()`.
                if io.get_ref().is_some_and(|inner| inner.is::<DnsFailure>()) {
                    return Reason::Dns;
                }
            }
            if err.downcast_ref::<DnsFailure>().is_some() {
                return Reason::Dns;
            }
            if err
                .downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_timeout)
            {
                return Reason::Timeout;
            }
            next = err.source();
        }
        Reason::Other
    }

    fn message(self) -> &'static str {
        match self {
            Reason::ConnectionRefused => "connection refused",
            Reason::Timeout => "timeout",
            Reason::ConnectionReset => "connection reset",
            Reason::Dns => "DNS lookup failed",
            Reason::Tls => {
                "TLS handshake failed (a server certificate from a private CA needs --ca-file; the certificate must name the URL's host)"
            }
            Reason::Other => "error",
        }
    }
}

/// The URL to send to: absolute, `http` or `https`, with a host. A URL without a scheme
/// (`127.0.0.1:8080/v1/...`) is the usual slip; the message shows it written out.
fn target(url: &str) -> Result<http::Uri, Failure> {
    let shown = crate::terminal::escape_controls(url);
    if !url.contains("://") {
        return Err(Failure(
            format!("the URL \"{shown}\" has no scheme: write http://{shown} (or https://{shown} for a TLS listener)"),
            2,
        ));
    }
    let uri: http::Uri = url.parse().map_err(|e| {
        Failure(
            format!("the URL \"{shown}\" is not a valid URL ({e}); for example http://127.0.0.1:8080/v1/chat/completions"),
            2,
        )
    })?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        (Some("http" | "https"), None) => Err(Failure(
            format!("the URL \"{shown}\" has no host; for example http://127.0.0.1:8080/v1/chat/completions"),
            2,
        )),
        (scheme, _) => Err(Failure(
            format!(
                "the URL \"{shown}\" has the scheme \"{}\"; this command speaks http:// and https://",
                crate::terminal::escape_controls(scheme.unwrap_or_default())
            ),
            2,
        )),
    }
}

/// "request to URL failed: REASON: detail", the detail being the error chain.
fn failure_message(url: &str, reason: Reason, e: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        chain.push(err.to_string());
        next = err.source();
    }
    chain.dedup();
    format!(
        "request to {url} failed: {}: {}",
        reason.message(),
        chain.join(": ")
    )
}

/// A failed host name lookup: the system resolver's error, typed so that
/// [`Reason::of`] finds it in the chain.
#[derive(Debug)]
struct DnsFailure(std::io::Error);

impl std::fmt::Display for DnsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DnsFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// The system resolver, with its failures marked as [`DnsFailure`].
#[derive(Clone)]
struct Resolver(hyper_util::client::legacy::connect::dns::GaiResolver);

impl tower::Service<hyper_util::client::legacy::connect::dns::Name> for Resolver {
    type Response = hyper_util::client::legacy::connect::dns::GaiAddrs;
    type Error = DnsFailure;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, DnsFailure>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), DnsFailure>> {
        self.0.poll_ready(cx).map_err(DnsFailure)
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let lookup = self.0.call(name);
        Box::pin(async move { lookup.await.map_err(DnsFailure) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_comes_from_the_error_types_in_the_chain() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(Reason::of(&refused), Reason::ConnectionRefused);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(Reason::of(&reset), Reason::ConnectionReset);
        let dns = DnsFailure(std::io::Error::other(
            "failed to lookup address information",
        ));
        assert_eq!(Reason::of(&dns), Reason::Dns);
        let wrapped = std::io::Error::other(DnsFailure(std::io::Error::other("no such host")));
        assert_eq!(Reason::of(&wrapped), Reason::Dns);
        let other = std::io::Error::other("something else");
        assert_eq!(Reason::of(&other), Reason::Other);
        let tls = std::io::Error::other(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        assert_eq!(Reason::of(&tls), Reason::Tls);
    }

    #[test]
    fn the_message_names_the_reason_then_the_chain() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let text = failure_message("http://h/", Reason::ConnectionRefused, &refused);
        assert_eq!(
            text,
            "request to http://h/ failed: connection refused: connection refused"
        );
    }
}
