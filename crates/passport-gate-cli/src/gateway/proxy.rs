//! Forwarding to the upstream: the normal path, hop-by-hop headers dropped, passport
//! headers only with an accepted passport, client-sent identity headers dropped and the
//! verified identity set (section [`super::identity`]), client copies of the upstream
//! credential dropped and the gateway's own added (section [`super::upstream_auth`]),
//! `X-Forwarded-For` and `Forwarded` added, `X-Real-IP` and `True-Client-IP` set to the
//! peer, request trailers dropped; an HTTP/2 upstream's own stream limit enforced like
//! `max_upstream_requests`;
//! the response streamed back as it arrives, with redirects to the upstream's own
//! address turned into paths on the gateway.

use super::access_log::AcceptedAgent;
use super::error::GatewayError;
use super::identity::IdentityHeaders;
use super::otel;
use super::settings::Upstream;
use super::upstream_auth::UpstreamCredential;
use crate::transport::h2_settings::{PeerStreamLimit, ReadSettings};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body::Body;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use passport_core::verifier::{VerifiedAgent, PASSPORT_HEADER, SIGNATURE_HEADER};
use passport_gate::layer::PassportBody;
use passport_gate::RequestPath;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::Service;

/// Headers that describe one connection, not the message (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in &named {
        headers.remove(name);
    }
    remove_named(headers, &HOP_BY_HOP);
}

/// Removes every header named in `names`. A message carries a few headers (at most
/// hyper's 100), so one pass comparing names, which hashes nothing, finds whether any
/// is there; a removal hashes its name even when it finds nothing.
fn remove_named(headers: &mut HeaderMap, names: &[HeaderName]) {
    if !headers.keys().any(|k| names.contains(k)) {
        return;
    }
    for name in names {
        headers.remove(name);
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Removes every header whose name contains `_`, as nginx does by default. WSGI and CGI
/// servers read `x_aps_agent_id` and `x-aps-agent-id` as one variable
/// (`HTTP_X_APS_AGENT_ID`), so a `_` spelling would add a client's value to a header the
/// gateway sets or judges (an identity, `Accept-Encoding`, a forwarding header).
fn strip_underscore_names(headers: &mut HeaderMap) {
    let underscored: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().contains('_'))
        .cloned()
        .collect();
    for name in underscored {
        headers.remove(name);
    }
}

/// Removes the passport headers from a request forwarded without an accepted passport
/// (unguarded or public route, layer disabled): an upstream that reads them must never
/// take an unverified passport for a verified one. An accepted request keeps them, so
/// the upstream may verify again.
fn strip_unverified_passport(parts: &mut http::request::Parts) {
    if parts.extensions.get::<VerifiedAgent>().is_none() {
        parts.headers.remove(PASSPORT_HEADER);
        parts.headers.remove(SIGNATURE_HEADER);
    }
}

/// A `Location` or `Content-Location` value that points at the upstream's origin (an
/// absolute or scheme-relative URL with its host and port), as a path-absolute reference
/// on the gateway, without the upstream's base path. `None` leaves the value as it is
/// (another origin, or a relative reference outside the base path).
fn as_gateway_reference(value: &str, upstream: &Upstream) -> Option<String> {
    let (reference, fragment) = match value.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (value, None),
    };
    let path_and_query = if let Some(rest) = reference.strip_prefix("//") {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        if !same_origin(&rest[..end], upstream) {
            return None;
        }
        &rest[end..]
    } else if reference.starts_with('/') {
        if upstream.base_path.is_empty() {
            return None;
        }
        reference
    } else {
        let uri: Uri = reference.parse().ok()?;
        let authority = uri.authority()?;
        if !matches!(uri.scheme_str(), Some("http" | "https"))
            || !same_origin(authority.as_str(), upstream)
        {
            return None;
        }
        let start = reference.find(authority.as_str())? + authority.as_str().len();
        &reference[start..]
    };
    let base = upstream.base_path.as_str();
    let mut out = match path_and_query.strip_prefix(base) {
        Some(rest) if !base.is_empty() && (rest.is_empty() || rest.starts_with(['/', '?'])) => {
            rest.to_owned()
        }
        _ => path_and_query.to_owned(),
    };
    if !out.starts_with('/') {
        out.insert(0, '/');
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    Some(out)
}

/// Whether `authority` (`host[:port]`, no user info) names the upstream.
fn same_origin(authority: &str, upstream: &Upstream) -> bool {
    let Ok(a) = authority.parse::<http::uri::Authority>() else {
        return false;
    };
    let default_port = if upstream.scheme == http::uri::Scheme::HTTPS {
        443
    } else {
        80
    };
    a.host().eq_ignore_ascii_case(upstream.authority.host())
        && a.port_u16().unwrap_or(default_port)
            == upstream.authority.port_u16().unwrap_or(default_port)
}

/// Rewrites the response's `Location` and `Content-Location` so that the upstream's
/// address never reaches the client (and a followed redirect comes back through the
/// gateway, where it is judged again).
fn hide_upstream_origin(headers: &mut HeaderMap, upstream: &Upstream) {
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let rewritten = headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| as_gateway_reference(v, upstream))
            .and_then(|v| HeaderValue::from_str(&v).ok());
        if let Some(v) = rewritten {
            headers.insert(name, v);
        }
    }
}

/// The client's `Host` as the gateway repeats it in `X-Forwarded-Host` and in the
/// `host=` of `Forwarded`: only a plain `host[:port]` (a name of letters, digits, `-`,
/// `.`, `_` and `~`, or a bracketed IPv6 literal, and a port of digits). Anything else
/// (`,` or `;` that would start another element or parameter, spaces, quotes, user
/// info, percent-escapes) is not repeated at all: the upstream then sees no
/// client-chosen host.
fn forwardable_host(host: &HeaderValue) -> Option<&str> {
    let h = host.to_str().ok()?;
    let port = if let Some(rest) = h.strip_prefix('[') {
        let (literal, after) = rest.split_once(']')?;
        let ipv6 = |b: u8| b.is_ascii_hexdigit() || b == b':' || b == b'.';
        if literal.is_empty() || !literal.bytes().all(ipv6) {
            return None;
        }
        match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        }
    } else {
        let (name, port) = match h.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (h, None),
        };
        let reg_name = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        if name.is_empty() || !name.bytes().all(reg_name) {
            return None;
        }
        port
    };
    let digits = |p: &str| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    port.is_none_or(digits).then_some(h)
}

/// Headers through which proxies and CDNs name the client's address. The gateway sets
/// them to the peer's address, as it appends the peer to `X-Forwarded-For`: a client's
/// own value never reaches the upstream, which may read them as the truth.
const CLIENT_IP_HEADERS: [HeaderName; 2] = [
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("true-client-ip"),
];

/// Appends the client to `X-Forwarded-For` and `Forwarded` (RFC 7239), and sets
/// `X-Real-IP` and `True-Client-IP` to it. `host` goes into `Forwarded` only when
/// [`forwardable_host`] accepts it.
fn add_forwarded(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    proto: &str,
    host: Option<&HeaderValue>,
) {
    let ip = peer.ip().to_string();
    let xff = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip.clone(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    remove_named(headers, &CLIENT_IP_HEADERS);
    if let Ok(v) = HeaderValue::from_str(&ip) {
        for name in CLIENT_IP_HEADERS {
            headers.insert(name, v.clone());
        }
    }
    let node = if peer.is_ipv6() {
        format!("\"[{ip}]\"")
    } else {
        ip
    };
    let mut element = format!("for={node};proto={proto}");
    if let Some(h) = host.and_then(forwardable_host) {
        element.push_str(&format!(";host=\"{h}\""));
    }
    let forwarded = match headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {element}"),
        None => element,
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        headers.insert(header::FORWARDED, v);
    }
}

/// Adds the upstream credential. With `gonka` the signature covers the exact body
/// forwarded, so the body is held whole: an accepted passport request's body already is
/// (the layer read it), a public route's is read here, within the credential's body limit
/// and `timeout`.
async fn with_credential<B>(
    auth: &UpstreamCredential,
    headers: &mut HeaderMap,
    body: PassportBody<B>,
    timeout: Duration,
) -> Result<PassportBody<B>, GatewayError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::{BodyExt, Full, Limited};
    let Some(limit) = auth.signs_body() else {
        auth.add(headers, &[]);
        return Ok(body);
    };
    let (bytes, body) = match body {
        PassportBody::Held { body, budget } => {
            let bytes = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let held = PassportBody::Held {
                body: Full::new(bytes.clone()),
                budget,
            };
            (bytes, held)
        }
        other => {
            let read = tokio::time::timeout(timeout, Limited::new(other, limit).collect()).await;
            let Ok(Ok(collected)) = read else {
                return Err(GatewayError::BodyTooLarge);
            };
            let bytes = collected.to_bytes();
            (bytes.clone(), PassportBody::held(bytes))
        }
    };
    auth.add(headers, &bytes);
    Ok(body)
}

pin_project_lite::pin_project! {
    /// A request body forwarded without its trailers. A trailer field can carry any
    /// name, including the passport, identity and forwarding headers the gateway
    /// removes from the head (section [`super::identity`]), so none is forwarded (spec
    /// section 7.4); the data frames pass as they are.
    struct WithoutTrailers<B> {
        #[pin]
        body: B,
    }
}

impl<B: Body> Body for WithoutTrailers<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let mut body = self.project().body;
        loop {
            match std::task::ready!(body.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) if frame.is_trailers() => {
                    tracing::debug!("request trailers dropped");
                }
                other => return Poll::Ready(other),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The upstream connector: TLS or not, each HTTP/2 connection followed for the
/// upstream's stream limit.
type Connector = ReadSettings<HttpsConnector<HttpConnector>>;

struct Shared<B> {
    client: Client<Connector, WithoutTrailers<PassportBody<B>>>,
    upstream: Upstream,
    response_timeout: Duration,
    identity: IdentityHeaders,
    listener_tls: bool,
    /// Requests with the upstream, at most `server.max_upstream_requests`.
    in_flight: Arc<Semaphore>,
    /// `server.max_upstream_requests`.
    max_requests: usize,
    /// With an HTTP/2 upstream, the streams it accepts at once: hyper sends every
    /// request on one connection and would queue the excess until the response timeout.
    upstream_streams: Option<PeerStreamLimit>,
    version: http::Version,
    errors: crate::transport::tls::UpstreamErrors,
    upstream_auth: Option<UpstreamCredential>,
}

/// How the proxy connects to the upstream.
pub struct UpstreamClient {
    /// Time allowed to connect (TCP; the TLS handshake is within the response timeout).
    pub connect_timeout: Duration,
    /// Time allowed until the response head.
    pub response_timeout: Duration,
    /// Trust anchors and client certificate for an `https://` upstream.
    pub tls: rustls::ClientConfig,
    /// HTTP/2 (ALPN `h2`, or prior knowledge over cleartext) instead of HTTP/1.1.
    pub http2: bool,
    /// Idle connections kept for reuse, at most.
    pub pool_max_idle: usize,
    /// Idle connections are closed after this long.
    pub pool_idle_timeout: Duration,
    /// Where connection failures are counted.
    pub errors: crate::transport::tls::UpstreamErrors,
    /// Requests with the upstream at once (each holds an upstream connection until its
    /// answer ends); beyond, 503 `upstream_busy`.
    pub max_requests: usize,
}

/// Forwards requests to the upstream. One per connection (it knows the peer); clones
/// share the connection pool.
pub struct Proxy<B> {
    shared: Arc<Shared<B>>,
    peer: SocketAddr,
}

impl<B> Clone for Proxy<B> {
    fn clone(&self) -> Self {
        Proxy {
            shared: Arc::clone(&self.shared),
            peer: self.peer,
        }
    }
}

impl<B> Proxy<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// A proxy to `upstream` with a pooled client, setting the `identity` headers and
    /// the `upstream_auth` credential; `listener_tls` says whether clients reach the
    /// gateway over TLS (the `proto` of `Forwarded`).
    pub fn new(
        upstream: Upstream,
        settings: UpstreamClient,
        identity: IdentityHeaders,
        listener_tls: bool,
        upstream_auth: Option<UpstreamCredential>,
    ) -> Proxy<B> {
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(settings.connect_timeout));
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(settings.tls)
            .https_or_http();
        let (connector, version) = if settings.http2 {
            (
                tls.enable_http2().wrap_connector(tcp),
                http::Version::HTTP_2,
            )
        } else {
            (
                tls.enable_http1().wrap_connector(tcp),
                http::Version::HTTP_11,
            )
        };
        let upstream_streams = settings.http2.then(PeerStreamLimit::default);
        let connector = ReadSettings {
            inner: connector,
            limit: upstream_streams.clone(),
        };
        let mut client = Client::builder(TokioExecutor::new());
        // The read buffer of each upstream connection is bounded: a client that never
        // reads a large answer must hold little more than this (hyper's default lets the
        // buffer grow to about 400 KiB).
        client
            .http1_max_buf_size(UPSTREAM_READ_BUFFER)
            .http2_only(settings.http2)
            .pool_max_idle_per_host(settings.pool_max_idle)
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_timer(hyper_util::rt::TokioTimer::new());
        Proxy {
            shared: Arc::new(Shared {
                client: client.build(connector),
                upstream,
                response_timeout: settings.response_timeout,
                identity,
                listener_tls,
                in_flight: Arc::new(Semaphore::new(settings.max_requests)),
                max_requests: settings.max_requests,
                upstream_streams,
                version,
                errors: settings.errors,
                upstream_auth,
            }),
            peer: SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }

    /// This proxy, for a connection from `peer`.
    pub fn for_peer(&self, peer: SocketAddr) -> Proxy<B> {
        Proxy {
            shared: Arc::clone(&self.shared),
            peer,
        }
    }
}

/// The largest read buffer of one upstream connection, in bytes.
const UPSTREAM_READ_BUFFER: usize = 16 * 1024;

/// The upstream's response body, or the gateway's own answer.
pub type ProxyBody = PassportBody<UpstreamBody>;

pin_project_lite::pin_project! {
    /// The upstream's answer. It holds its place among `server.max_upstream_requests`
    /// (its upstream connection is busy) until it ends, fails or is dropped.
    pub struct UpstreamBody {
        #[pin]
        body: hyper::body::Incoming,
        permit: Option<OwnedSemaphorePermit>,
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            *this.permit = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl<B> Service<Request<PassportBody<B>>> for Proxy<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<PassportBody<B>>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        let peer = self.peer;
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let path = parts
                .extensions
                .get::<RequestPath>()
                .map_or(parts.uri.path(), |p| p.0.as_str());
            let target = match parts.uri.query() {
                Some(q) => format!("{}{path}?{q}", shared.upstream.base_path),
                None => format!("{}{path}", shared.upstream.base_path),
            };
            let uri = Uri::builder()
                .scheme(shared.upstream.scheme.clone())
                .authority(shared.upstream.authority.clone())
                .path_and_query(target)
                .build();
            let Ok(uri) = uri else {
                return Ok(GatewayError::UpstreamUnavailable.http_response());
            };
            // `te: trailers` is the one TE value HTTP/2 allows, and gRPC needs it end to
            // end (the upstream answers with trailers only to clients that accept them):
            // it is kept towards an HTTP/2 upstream, as Envoy does.
            let te_trailers = shared.version == http::Version::HTTP_2
                && parts
                    .headers
                    .get_all(header::TE)
                    .iter()
                    .any(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
            strip_hop_by_hop(&mut parts.headers);
            strip_underscore_names(&mut parts.headers);
            if te_trailers {
                parts
                    .headers
                    .insert(header::TE, HeaderValue::from_static("trailers"));
            }
            strip_unverified_passport(&mut parts);
            shared.identity.apply(&mut parts.headers, &parts.extensions);
            let credential = shared.upstream_auth.as_ref().and_then(|auth| {
                auth.strip(&mut parts.headers);
                auth.applies_to(&parts.extensions).then_some(auth)
            });
            // An accepted request's answer is read for its token usage (spec section 9),
            // which a compressed answer would hide: the client may not choose that.
            if parts.extensions.get::<VerifiedAgent>().is_some() {
                parts.headers.insert(
                    header::ACCEPT_ENCODING,
                    HeaderValue::from_static("identity"),
                );
            }
            // HTTP/2 clients name the host in `:authority` (the URI), not in `Host`.
            let host = parts.headers.remove(header::HOST).or_else(|| {
                parts
                    .uri
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            });
            let proto = if shared.listener_tls { "https" } else { "http" };
            add_forwarded(&mut parts.headers, peer, proto, host.as_ref());
            // Only the gateway says how and where the client connected: a client's own
            // `X-Forwarded-Host` (kept when it sent no `Host`) or `X-Forwarded-Proto`
            // never reaches the upstream.
            parts.headers.remove(X_FORWARDED_HOST);
            parts
                .headers
                .insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
            if let Some(h) = host.filter(|h| forwardable_host(h).is_some()) {
                parts.headers.insert(X_FORWARDED_HOST, h);
            }
            parts.uri = uri;
            parts.version = shared.version;
            // With tracing on, the upstream continues the gateway's span; off, a client's
            // own `traceparent` passes through untouched, as any other header.
            let trace = parts.extensions.get::<otel::TraceContext>().copied();
            if let Some(value) = trace.and_then(|t| HeaderValue::from_str(&t.traceparent()).ok()) {
                parts.headers.insert(otel::TRACEPARENT, value);
            }
            let recorded = trace.is_some_and(|t| t.sampled);
            let accepted = parts
                .extensions
                .get::<VerifiedAgent>()
                .map(|a| AcceptedAgent(a.agent_id().to_owned()));
            let identity = recorded
                .then(|| parts.extensions.get::<VerifiedAgent>())
                .flatten()
                .map(|a| otel::SpanIdentity {
                    agent_id: a.agent_id().to_owned(),
                    principal_address: a.principal_address().to_owned(),
                    passport_id: hex::encode(a.passport_id()),
                    model: a.model().to_owned(),
                });
            // One HTTP/2 client connection carries many streams, each needing its own
            // upstream connection: the descriptors and memory they hold are bounded here,
            // not by `max_connections`.
            // Anyone can fill these slots on purpose: the refusal is marked as shed for
            // capacity, which releases the replay record only where the operator chose
            // so (`[replay] release_on_upstream_busy`, spec section 7.1).
            let busy = || {
                let mut resp = GatewayError::UpstreamBusy.http_response();
                resp.extensions_mut()
                    .insert(passport_gate::replay::ShedForCapacity);
                Ok(resp)
            };
            let Ok(permit) = Arc::clone(&shared.in_flight).try_acquire_owned() else {
                return busy();
            };
            // An HTTP/2 upstream's own stream limit is the bound when it is the smaller:
            // beyond it the request is refused now (its replay record kept unless the
            // operator chose otherwise, as above), not queued towards a 504. Concurrent callers may both count each other and
            // refuse; none is admitted past the limit.
            if let Some(limit) = &shared.upstream_streams {
                let with_upstream = shared
                    .max_requests
                    .saturating_sub(shared.in_flight.available_permits());
                if with_upstream > limit.get() {
                    drop(permit);
                    return busy();
                }
            }
            let body = match credential {
                Some(auth) => {
                    match with_credential(auth, &mut parts.headers, body, shared.response_timeout)
                        .await
                    {
                        Ok(body) => body,
                        Err(e) => {
                            let mut resp = e.http_response();
                            resp.extensions_mut()
                                .insert(passport_gate::replay::NotForwarded);
                            return Ok(resp);
                        }
                    }
                }
                None => body,
            };
            let body = WithoutTrailers { body };
            let sent = shared.client.request(Request::from_parts(parts, body));
            let sending = recorded.then(std::time::Instant::now);
            let mut response = match tokio::time::timeout(shared.response_timeout, sent).await {
                Ok(Ok(resp)) => {
                    let (mut parts, body) = resp.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    hide_upstream_origin(&mut parts.headers, &shared.upstream);
                    let body = UpstreamBody {
                        body,
                        permit: Some(permit),
                    };
                    Response::from_parts(parts, PassportBody::original(body))
                }
                Ok(Err(e)) => {
                    let reason = shared.errors.count(&e);
                    tracing::warn!(
                        error = %passport_gate::error_chain(&e),
                        reason = reason.label(),
                        "upstream request failed"
                    );
                    let mut resp = GatewayError::UpstreamUnavailable.http_response();
                    // No connection (TCP or TLS): the upstream never saw the request, so its
                    // replay record is released and the client's retry is not a replay.
                    if e.is_connect() {
                        resp.extensions_mut()
                            .insert(passport_gate::replay::NotForwarded);
                    }
                    resp
                }
                Err(_) => {
                    tracing::warn!("upstream response timed out");
                    GatewayError::UpstreamTimeout.http_response()
                }
            };
            if let Some(a) = accepted {
                response.extensions_mut().insert(a);
            }
            if let Some(sending) = sending {
                response
                    .extensions_mut()
                    .insert(otel::UpstreamTiming(sending.elapsed()));
            }
            if let Some(identity) = identity {
                response.extensions_mut().insert(identity);
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn redirects_to_the_upstream_origin_become_gateway_paths() {
        let up = |base: &str| Upstream {
            scheme: http::uri::Scheme::HTTP,
            authority: "10.0.0.5:8000".parse().unwrap(),
            base_path: base.to_owned(),
        };
        for (base, location, expected) in [
            ("", "http://10.0.0.5:8000/v1/x?a=1", Some("/v1/x?a=1")),
            ("", "HTTP://10.0.0.5:8000", Some("/")),
            ("", "https://10.0.0.5:8000/v1/x#f", Some("/v1/x#f")),
            ("", "//10.0.0.5:8000/v1/x", Some("/v1/x")),
            ("/api", "http://10.0.0.5:8000/api/v1/x", Some("/v1/x")),
            ("/api", "http://10.0.0.5:8000/api?q", Some("/?q")),
            ("/api", "http://10.0.0.5:8000/apix", Some("/apix")),
            ("/api", "/api/v1/x", Some("/v1/x")),
            ("", "/v1/x", None),
            ("", "http://10.0.0.5:9000/v1/x", None),
            ("", "http://example.com/v1/x", None),
            ("", "v1/x", None),
        ] {
            assert_eq!(
                as_gateway_reference(location, &up(base)).as_deref(),
                expected,
                "{base} {location}"
            );
        }
        let default_port = Upstream {
            scheme: http::uri::Scheme::HTTP,
            authority: "up.local".parse().unwrap(),
            base_path: String::new(),
        };
        assert_eq!(
            as_gateway_reference("http://UP.local:80/x", &default_port).as_deref(),
            Some("/x")
        );
    }

    #[test]
    fn only_a_plain_host_and_port_is_forwarded() {
        for ok in [
            "gw.local",
            "gw.local:8080",
            "GW-1.example_x~",
            "127.0.0.1:1",
            "[::1]",
            "[2001:db8::1]:443",
        ] {
            assert_eq!(
                forwardable_host(&HeaderValue::from_static(ok)),
                Some(ok),
                "{ok}"
            );
        }
        for bad in [
            "",
            "a,b",
            "a;proto=https",
            "a b",
            "\"a\"",
            "a\\b",
            "u@a",
            "a%2e",
            "a:",
            "a:123456",
            "a:8x",
            ":80",
            "[::1",
            "[]",
            "[::1]x",
            "[::1]:",
            "[g::1]",
            "a:1:2",
        ] {
            assert_eq!(
                forwardable_host(&HeaderValue::from_str(bad).unwrap()),
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn forwarded_headers_are_appended() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        add_forwarded(
            &mut h,
            "127.0.0.2:5000".parse().unwrap(),
            "http",
            Some(&HeaderValue::from_static("gw.local")),
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.2");
        assert_eq!(
            h[header::FORWARDED],
            "for=127.0.0.2;proto=http;host=\"gw.local\""
        );
        assert_eq!(h["x-real-ip"], "127.0.0.2");
        assert_eq!(h["true-client-ip"], "127.0.0.2");
        let mut h = HeaderMap::new();
        h.append("x-real-ip", HeaderValue::from_static("6.6.6.6"));
        h.append("x-real-ip", HeaderValue::from_static("7.7.7.7"));
        h.insert("true-client-ip", HeaderValue::from_static("6.6.6.6"));
        add_forwarded(
            &mut h,
            "127.0.0.2:5000".parse().unwrap(),
            "http",
            Some(&HeaderValue::from_static("gw.local, for=6.6.6.6")),
        );
        assert_eq!(
            h.get_all("x-real-ip").iter().collect::<Vec<_>>(),
            ["127.0.0.2"]
        );
        assert_eq!(h["true-client-ip"], "127.0.0.2");
        assert_eq!(h[header::FORWARDED], "for=127.0.0.2;proto=http");
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, "[::1]:5000".parse().unwrap(), "https", None);
        assert_eq!(h[header::FORWARDED], "for=\"[::1]\";proto=https");
    }
}
