//! `passport-gate wallet`: a page on loopback where a principal whose key lives in a
//! browser wallet (Keplr, Leap) mints a scoped passport for an agent, and decodes any
//! passport.
//!
//! The page is one HTML file, one script and one stylesheet embedded in the binary (no
//! CDN: it works offline). Everything that touches the envelope goes through the JSON
//! API in [`api`], which calls the library: [`passport_core::mint::PassportSpec::unsigned`] for
//! the envelope and the ADR-036 `data`, [`passport_core::mint::attach_signature`] for the
//! wallet's signature and [`passport_core::verifier::Verifier::check_passport`] for the verdict,
//! the same code as `mint --unsigned`, `mint --attach-sig` and the gateway.
//!
//! ```no_run
//! # async fn f() -> Result<(), String> {
//! use crate::wallet::{run, WalletConfig};
//! let config = WalletConfig::new("127.0.0.1:8787".parse().unwrap(), "gonka-mainnet", "gonka");
//! run(config, std::future::pending::<()>(), |addr| println!("open http://{addr}/")).await
//! # }
//! ```
//!
//! The server is a local tool, but it is still bounded: [`MAX_CONNECTIONS`] open at
//! once, [`HEADER_READ_TIMEOUT`] for a request head (also the keep-alive idle time),
//! [`MAX_HEADER_BYTES`] of head, [`MAX_REQUEST_BYTES`] of body read within
//! [`REQUEST_READ_TIMEOUT`]. It refuses a `Host` that is not a loopback name (DNS
//! rebinding) and a POST that is not `application/json` (cross-site forms), unless
//! started with `--public`.

pub mod api;
mod error;

pub use error::WalletError;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use passport_core::config::Config;
use passport_core::time::SystemClock;
use passport_core::verifier::Verifier;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Largest API request body, in bytes (a form or a passport is a few KiB).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Time to receive a whole API request body.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to receive a request head, and the keep-alive idle time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head, in bytes.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Connections open at once; a connection beyond it is closed at once.
pub const MAX_CONNECTIONS: usize = 32;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// What the page serves and for which chain.
#[derive(Clone, Debug)]
pub struct WalletConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Allow a non-loopback address and any `Host`.
    pub public: bool,
    /// The chain passports are minted for (and the wallet is asked to enable).
    pub chain_id: String,
    /// The bech32 prefix of principal addresses.
    pub prefix: String,
    /// The target gateway's `max_ttl_seconds`.
    pub max_ttl_seconds: u64,
    /// The chain's RPC URL, offered to a wallet that does not know the chain.
    pub rpc: String,
    /// The chain's REST URL, offered to a wallet that does not know the chain.
    pub rest: String,
    /// The chain's base denomination, offered to a wallet that does not know the chain.
    pub denom: String,
}

impl WalletConfig {
    /// The defaults (a gateway's default `max_ttl_seconds`, a local node) for `chain_id`.
    pub fn new(listen: SocketAddr, chain_id: &str, prefix: &str) -> WalletConfig {
        WalletConfig {
            listen,
            public: false,
            chain_id: chain_id.to_owned(),
            prefix: prefix.to_owned(),
            max_ttl_seconds: Config::default().max_ttl_seconds,
            rpc: "http://127.0.0.1:26657".into(),
            rest: "http://127.0.0.1:1317".into(),
            denom: "ngonka".into(),
        }
    }

    /// The one currency offered with the chain: the base denomination shown as itself
    /// (decimals 0), so a wallet never displays an amount scaled by a guessed exponent.
    fn currency(&self) -> serde_json::Value {
        serde_json::json!({
            "coinDenom": self.denom,
            "coinMinimalDenom": self.denom,
            "coinDecimals": 0,
        })
    }

    /// Refuses a non-loopback listen address unless `public` is set: the page mints
    /// nothing without the wallet, but it is meant for the principal's own browser.
    pub fn check_listen(&self) -> Result<(), String> {
        if !self.listen.ip().is_loopback() && !self.public {
            return Err(format!(
                "{} is not a loopback address: the wallet page is for this machine's browser; add --public to serve it to the network anyway",
                self.listen
            ));
        }
        Ok(())
    }
}

struct State {
    config: WalletConfig,
    verifier: Verifier,
}

/// Serves the page until `shutdown` completes. `on_bound` receives the bound address
/// (useful with port 0).
pub async fn run(
    config: WalletConfig,
    shutdown: impl Future<Output = ()>,
    on_bound: impl FnOnce(SocketAddr),
) -> Result<(), String> {
    config.check_listen()?;
    let verifier = Verifier::with_clock(
        &Config {
            max_ttl_seconds: config.max_ttl_seconds,
            address_prefix: config.prefix.clone(),
            ..Config::for_chain(config.chain_id.clone())
        },
        Arc::new(SystemClock),
    )
    .map_err(|errs| {
        errs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    on_bound(addr);
    let state = Arc::new(State { config, verifier });
    // The gateway's accept loop: a slot per connection, refusals and accept errors
    // counted and logged at a bounded rate, a backoff on errors.
    let metrics = crate::gateway::metrics::GatewayMetrics::register(&prometheus::Registry::new())
        .map_err(|e| format!("metrics: {e}"))?;
    let mut acceptor = crate::gateway::listener::Acceptor::new(
        listener,
        MAX_CONNECTIONS,
        metrics.connections("wallet"),
        "wallet",
    );
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(MAX_HEADER_BYTES);
    tokio::pin!(shutdown);
    loop {
        let (stream, _, slot) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = acceptor.next() => accepted,
        };
        let state = Arc::clone(&state);
        let conn = builder.serve_connection(
            TokioIo::new(stream),
            hyper::service::service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(answer(&state, req).await) }
            }),
        );
        tokio::spawn(async move {
            let _ = conn.await;
            drop(slot);
        });
    }
}

/// Whether `host` (a `Host` header value) names this machine: `localhost` or a loopback
/// IP, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // `[v6]` or `[v6]:port`, nothing else after the bracket.
        match rest.split_once(']') {
            Some((ip, "")) => ip,
            Some((ip, port)) if port.strip_prefix(':').is_some_and(is_port) => ip,
            _ => return false,
        }
    } else if let Some((h, port)) = host.rsplit_once(':') {
        if !is_port(port) {
            return false;
        }
        h
    } else {
        host
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

async fn read_json(req: Request<Incoming>) -> Result<Bytes, WalletError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(WalletError::NotJson);
    }
    let body = Limited::new(req.into_body(), MAX_REQUEST_BYTES);
    match tokio::time::timeout(REQUEST_READ_TIMEOUT, body.collect()).await {
        Err(_) => Err(WalletError::RequestTimeout),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(WalletError::RequestTooLarge),
        Ok(Err(e)) => Err(WalletError::RequestMalformed(format!(
            "the body could not be read: {e}"
        ))),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

fn asset(content_type: &'static str, text: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn json_response(value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(value.to_string())));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

async fn route(
    state: &State,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, WalletError> {
    if !state.config.public {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !is_loopback_host(host) {
            return Err(WalletError::ForeignHost);
        }
    }
    let c = &state.config;
    let method = req.method().clone();
    match (req.uri().path(), method) {
        ("/", Method::GET) => Ok(asset("text/html; charset=utf-8", INDEX_HTML)),
        ("/app.js", Method::GET) => Ok(asset("text/javascript; charset=utf-8", APP_JS)),
        ("/app.css", Method::GET) => Ok(asset("text/css; charset=utf-8", APP_CSS)),
        ("/api/config", Method::GET) => Ok(json_response(&api::config(c))),
        // Browsers ask for it unprompted; an empty answer keeps their console quiet.
        ("/favicon.ico", Method::GET) => {
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::NO_CONTENT;
            Ok(resp)
        }
        ("/api/unsigned", Method::POST) => {
            let body = read_json(req).await?;
            api::unsigned(c, &body, state.verifier.now()).map(|v| json_response(&v))
        }
        ("/api/attach", Method::POST) => {
            let body = read_json(req).await?;
            api::attach(c, &state.verifier, &body).map(|v| json_response(&v))
        }
        ("/api/decode", Method::POST) => {
            let body = read_json(req).await?;
            api::decode(c, &state.verifier, &body).map(|v| json_response(&v))
        }
        (
            "/" | "/app.js" | "/app.css" | "/api/config" | "/api/unsigned" | "/api/attach"
            | "/api/decode",
            _,
        ) => Err(WalletError::MethodNotAllowed),
        _ => Err(WalletError::NotFound),
    }
}

async fn answer(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let mut resp = route(state, req).await.unwrap_or_else(|e| e.response());
    let refused_method = resp.status() == StatusCode::METHOD_NOT_ALLOWED;
    let h = resp.headers_mut();
    // The page loads only its own script and style and talks only to this server.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if refused_method {
        h.insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_are_served() {
        for ok in [
            "127.0.0.1:8787",
            "localhost",
            "LOCALHOST:1",
            "[::1]:8787",
            "127.1.2.3",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example:8787",
            "10.0.0.1:8787",
            "localhost.evil.example",
            "[::2]:1",
            "[::1]evil.example",
            "[::1]:80evil",
            "localhost:x",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("app.js", APP_JS),
            ("app.css", APP_CSS),
        ] {
            for remote in ["http:", "https:", "//", "@import"] {
                let hits: Vec<&str> = text
                    .lines()
                    .filter(|l| l.contains(remote) && !l.trim_start().starts_with("//"))
                    .collect();
                assert!(hits.is_empty(), "{name} refers to {remote}: {hits:?}");
            }
        }
    }

    #[test]
    fn a_non_loopback_listen_address_needs_public() {
        let mut c = WalletConfig::new("0.0.0.0:8787".parse().unwrap(), "c", "gonka");
        assert!(c.check_listen().is_err());
        c.public = true;
        assert!(c.check_listen().is_ok());
    }
}
